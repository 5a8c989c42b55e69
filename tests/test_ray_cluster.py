"""The fleet on a real multi-node Ray cluster: placement, training, faults, scaling, clean stop.

The cluster (`bench.netns_cluster`) is a Ray head in this network namespace and three worker
nodes, each in a network namespace of its own with its own IP address and its own private disk
at the same path. `node1` offers the `reverb_server` resource and `node2` the `reverb_learner`
resource; actors and eval spread over node1 and node3, which offer `reverb_actor` (node2 stands
for a GPU node, whose CPUs the actors must leave to the learner). One fleet (`python -m
launcher.ray`, DQN on the worked example's Catch, a user's own Gymnasium environment, tiny
budgets) is shared by the tests of this module, in file order: each breaks one thing, checks
that Ray put it back and that the run carried on, and leaves the run whole for the next (node3,
once lost, stays lost: the later tests run on node1 and node2, their actors on node1). The
network faults are node3 cut off from the server's node for `PARTITION_S` (a partition,
`NetnsCluster.partition`), and the server frozen for longer than the clients'
`--server_timeout_s`. Every wait is a bounded poll; each recovery time is printed.

The example's package exists only on the launch machine: a copy in a temporary directory on the
launch command's PYTHONPATH, which no node has (they started without it, and the project
directory they run in does not hold it). Every role imports it, so the run trains only if the
package travelled with the run (Ray's runtime environment, `launcher.cluster.user_modules`).

Marked `slow` and `cluster`; skipped with the reason where network namespaces cannot be made.
"""

import os
import re
import shutil
import signal
import sys
import tempfile
import time

import psutil
import pytest

from bench import netns_cluster
from launcher import processes
from tests.conftest import FAST_BINDINGS
from tests.conftest import REPO
from tests.conftest import wait_until

# The shared fixtures (cluster start, eight TensorFlow processes) count towards the first test.
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1800)]

REASON = netns_cluster.available()
if REASON:
  pytestmark.append(pytest.mark.skip(reason=f'no multi-node cluster here: {REASON}'))

# Ray reads its authentication settings when it is imported: set them first.
TOKEN_PATH = os.path.join(tempfile.gettempdir(), f'rf-ray-token-{os.getpid()}')
os.environ.update(netns_cluster.client_env(TOKEN_PATH))
ray = pytest.importorskip('ray')

FLEET = 'citest'
CATCH_PACKAGE = os.path.join(REPO, 'examples', 'catch')
CATCH_GIN = os.path.join(CATCH_PACKAGE, 'catch.gin')
NUM_ACTORS = 4
TRAIN_TO = 200  # The stated train step the fleet must reach.
BINDINGS = list(FAST_BINDINGS) + [
    'ReplayConfig.samples_per_insert = None',  # Actors run free of the learner.
    'ActorConfig.num_envs = 2',
    'LearnerConfig.max_checkpoints_to_keep = 2',
    'LearnerConfig.policy_export_interval = 100000',
    'EvalConfig.target_return = None',
    'EvalConfig.interval = 200',
]
START_S = 420  # Eight TensorFlow processes starting on two cores.
RECOVER_S = 300
SERVER_TIMEOUT_S = 75  # Each client role's --server_timeout_s: longer than PARTITION_S.
PARTITION_S = 60


class Fleet:
  """The launch command's process, its output, and the controller seen through Ray."""

  def __init__(self, cluster, tmp):
    self.cluster = cluster
    self.root_dir = os.path.join(cluster.disk, 'run')
    self.log_path = os.path.join(tmp, 'launcher.log')
    # The user's package, on the launch machine only.
    self.package_dir = os.path.join(tmp, 'launch_machine_only')
    shutil.copytree(os.path.join(CATCH_PACKAGE, 'catch_env'),
                    os.path.join(self.package_dir, 'catch_env'))
    self.started_at = time.monotonic()
    argv = [sys.executable, '-m', 'launcher.ray', f'--address={cluster.address}',
            f'--name={FLEET}', f'--gin_file={CATCH_GIN}', f'--root_dir={self.root_dir}',
            f'--num_actors={NUM_ACTORS}', '--server_resource=reverb_server',
            '--learner_resource=reverb_learner', '--actor_resource=reverb_actor',
            '--budget_s=2400', f'--server_timeout_s={SERVER_TIMEOUT_S}',
            '--checkpoint_interval_s=5'] + [f'--gin_bindings={b}' for b in BINDINGS]
    self.launcher = processes.Process(argv, 'launcher.ray', log_path=self.log_path,
                                      new_session=False,
                                      env={'PYTHONPATH': self.package_dir})
    self._controller = None

  def output(self) -> str:
    return self.launcher.log_text()

  def controller(self):
    if self._controller is None:
      from launcher import cluster  # pylint: disable=g-import-not-at-top
      self._controller = wait_until(lambda: _try(lambda: cluster.controller(FLEET)), START_S,
                                    'the fleet controller', detail=self.tail)
    return self._controller

  def snapshot(self):
    return ray.get(self.controller().snapshot.remote(1 << 62), timeout=60)

  def roles(self):
    return self.snapshot()['roles']

  def train_step(self) -> int:
    steps = re.findall(r'\[learner\] .*(?:train_step=|resumed at train step )(\d+)',
                       self.output())
    return int(steps[-1]) if steps else 0

  def inserted(self) -> int:
    return self.snapshot()['inserted'] or 0

  def tail(self) -> str:
    return self.output()[-4000:]

  def env_steps(self, name: str, since: int = 0) -> int:
    """The newest env-step count `name` (an actor) logged in the output after offset `since`."""
    steps = re.findall(rf'\[{re.escape(name)}\] .*env_steps=(\d+) env_steps/s',
                       self.output()[since:])
    return int(steps[-1]) if steps else -1


def _try(fn):
  try:
    return fn()
  except Exception:  # pylint: disable=broad-except  (not there yet)
    return None


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('cluster')
  the_cluster = netns_cluster.NetnsCluster(
      [(8, {'reverb_server': 1, 'reverb_actor': 1}), (4, {'reverb_learner': 1}),
       (4, {'reverb_actor': 1})],
      disk=f'/tmp/rf-node-disk-{os.getpid()}', log_dir=str(tmp / 'ray'), subnet=7,
      token_path=TOKEN_PATH)
  try:
    the_cluster.start()
    yield the_cluster
  finally:
    the_cluster.stop()
    if os.path.exists(TOKEN_PATH):
      os.remove(TOKEN_PATH)


@pytest.fixture(scope='module')
def fleet(cluster, tmp_path_factory):
  the_fleet = Fleet(cluster, str(tmp_path_factory.mktemp('fleet')))
  ray.init(address=cluster.address, namespace='reverb-fleet', log_to_driver=False)
  try:
    wait_until(lambda: the_fleet.train_step() > 0, START_S, 'the first train step',
               detail=the_fleet.tail)
    print(f'\nLAUNCH -> first train step on the 3-worker cluster: '
          f'{time.monotonic() - the_fleet.started_at:.1f} s')
    yield the_fleet
  finally:
    if the_fleet.launcher.alive():
      subprocess_stop = processes.Process(
          [sys.executable, '-m', 'launcher.ray', 'stop', f'--address={cluster.address}',
           f'--name={FLEET}'], 'stop', new_session=False)
      subprocess_stop.wait(400)
      the_fleet.launcher.stop(60)
    ray.shutdown()


def _node_of(roles, name):
  return roles[name]['node_ip']


def test_roles_run_on_their_nodes_and_reach_the_server_by_node_ip(fleet, cluster):
  node1, node2, node3 = (n.ip for n in cluster.workers)
  roles = wait_until(lambda: (r := fleet.roles()) and len(r) == NUM_ACTORS + 3 and all(
      s['up'] for s in r.values()) and r, START_S, 'every role up', detail=fleet.tail)
  assert _node_of(roles, 'replay_server') == node1
  assert _node_of(roles, 'learner') == node2
  actor_nodes = {_node_of(roles, f'actor/{t}') for t in range(NUM_ACTORS)}
  assert actor_nodes == {node1, node3}, roles  # Never on the learner's node.
  assert _node_of(roles, 'eval') in (node1, node3)
  recorded = wait_until(lambda: (f := ray.get(fleet.controller().recorded_flags.remote(),
                                              timeout=60)) and all(f.values()) and f,
                        START_S, 'every role to record its flags')
  address = recorded['learner']['replay_server_address']
  assert address.startswith(f'{node1}:'), address
  for name, flags in recorded.items():
    assert flags['root_dir'] == fleet.root_dir
    if name != 'replay_server':
      assert flags['replay_server_address'] == address, (name, flags)
    if name.startswith('actor/'):
      assert flags['task'] == int(name.split('/')[1])
  # The server knows the grace its controller gives it (its checkpoints are checked against it).
  assert recorded['replay_server']['stop_grace_s'] == processes.stop_of('replay_server')[1]
  # Each node wrote to its own disk: nothing of the run is on this namespace's disk, and the
  # learner's directory exists on node2 only.
  assert not os.path.exists(os.path.join(fleet.root_dir, 'learner'))
  assert 'train' in cluster.list_node_dir(cluster.workers[1], f'{fleet.root_dir}/learner')
  assert not cluster.list_node_dir(cluster.workers[2], f'{fleet.root_dir}/learner')


def test_the_users_package_travels_to_nodes_that_lack_it(fleet, cluster):
  # No node can import it on its own: not from the project directory the roles run in, nor
  # from the nodes' environment.
  assert not os.path.exists(os.path.join(REPO, 'catch_env'))
  assert fleet.package_dir not in cluster.client_env.get('PYTHONPATH', '')
  assert 'PYTHONPATH' not in os.environ or fleet.package_dir not in os.environ['PYTHONPATH']
  assert re.search(r'the user module .*launch_machine_only/catch_env travels with the run',
                   fleet.output()), fleet.tail()
  # Every role made the environment: the actors on all three nodes collect Catch episodes.
  wait_until(lambda: len(set(re.findall(r'\[(actor/\d+)\] .*episodes=\d+', fleet.output()))) >=
             NUM_ACTORS, START_S, 'every actor to collect Catch episodes', detail=fleet.tail)


def test_fleet_trains_to_the_stated_step(fleet):
  wait_until(lambda: fleet.train_step() >= TRAIN_TO, START_S, f'train step {TRAIN_TO}',
             detail=fleet.tail)
  assert re.search(r'\[status\] train_step=\d+ env_steps/s=\d+', fleet.output()) or \
      fleet.launcher.alive()


def test_partitioned_actor_node_waits_and_writes_again_after_the_heal(fleet, cluster):
  node1, node3 = cluster.workers[0], cluster.workers[2]
  roles = fleet.roles()
  cut = sorted(n for n, s in roles.items() if s['node_ip'] == node3.ip)
  actors = [n for n in cut if n.startswith('actor/')]
  assert actors, roles  # The placement test saw actors on node3.
  restarts = {n: s['restarts'] for n, s in roles.items()}
  mark = len(fleet.output())
  step_at_cut = fleet.train_step()
  cluster.partition(node1, node3)  # node3's roles lose the server; node3 still reaches the head.
  cut_at = time.monotonic()

  def _held():
    now = fleet.roles()
    # Nothing stops: neither the roles on node3, whose deadline is longer than the partition,
    # nor the rest of the fleet.
    assert all(now[n]['up'] and now[n]['restarts'] == restarts[n] for n in restarts), now
    return time.monotonic() - cut_at >= PARTITION_S
  try:
    wait_until(_held, PARTITION_S + 60, f'a {PARTITION_S} s partition', interval_s=2.0)
  finally:
    cluster.heal(node1, node3)
  healed_at = time.monotonic()
  during = fleet.output()[mark:]
  # The learner trained on through the partition, on what node1's actors wrote.
  assert fleet.train_step() > step_at_cut, fleet.tail()
  for name in actors:  # Each cut actor said what it waits for.
    assert re.search(rf'\[{re.escape(name)}\] .*replay server {node1.ip}:\d+ not answering',
                     during), during[-4000:]
  at_heal = {n: fleet.env_steps(n) for n in actors}
  heal_mark = len(fleet.output())
  wait_until(lambda: all(fleet.env_steps(n, heal_mark) > at_heal[n] for n in actors),
             RECOVER_S, f'{actors} to collect again after the heal', detail=fleet.tail)
  now = fleet.roles()
  assert all(now[n]['restarts'] == restarts[n] for n in restarts), now
  print(f'\nRECOVERY {PARTITION_S} s partition of node3 from the server node -> {actors} '
        f'collecting again {time.monotonic() - healed_at:.1f} s after the heal')


def test_lost_worker_node_moves_its_actors_and_inserts_recover(fleet, cluster):
  node3 = cluster.workers[2]
  roles = fleet.roles()
  moved = [n for n, s in roles.items() if s['node_ip'] == node3.ip]
  # Right after the placement test (which saw actors on node3) nothing has moved them yet.
  assert any(n.startswith('actor/') for n in moved), roles
  cluster.kill_raylet(node3)
  lost_at = time.monotonic()

  def _back():
    now = fleet.roles()
    return all(now[n]['up'] and now[n]['node_ip'] != node3.ip for n in moved)
  wait_until(_back, RECOVER_S, f'{moved} to run on the other nodes', detail=fleet.tail)
  placed_at = time.monotonic()
  inserted = fleet.inserted()
  wait_until(lambda: fleet.inserted() > inserted + 500, RECOVER_S,
             'the server\'s insert count to grow again')
  print(f'\nRECOVERY node3 lost -> {moved} placed elsewhere in {placed_at - lost_at:.1f} s, '
        f'inserting again after {time.monotonic() - lost_at:.1f} s')


def test_killed_actor_comes_back_with_its_task_id(fleet):
  before = fleet.roles()['actor/1']
  os.kill(before['pid'], signal.SIGKILL)
  killed_at = time.monotonic()
  after = wait_until(lambda: (r := fleet.roles()['actor/1'])['up'] and r['pid'] != before['pid']
                     and r, RECOVER_S, 'actor/1 to come back', detail=fleet.tail)
  assert after['restarts'] == before['restarts'] + 1
  wait_until(lambda: len(re.findall(r'\[actor/1\] .*actor 1: collecting', fleet.output())) >= 2,
             RECOVER_S, 'the restarted actor 1 to collect', detail=fleet.tail)
  print(f'\nRECOVERY kill -9 actor 1 -> collecting again: {time.monotonic() - killed_at:.1f} s')


def test_killed_learner_resumes_from_its_checkpoint(fleet, cluster):
  learner = fleet.roles()['learner']
  node2 = cluster.workers[1]
  checkpoints_dir = f'{fleet.root_dir}/learner/train/checkpoints'
  steps = wait_until(lambda: sorted(int(m.group(1)) for n in cluster.list_node_dir(
      node2, checkpoints_dir) if (m := re.fullmatch(r'ckpt-(\d+)\.index', n))), RECOVER_S,
                     'a learner checkpoint on node2')
  os.kill(learner['pid'], signal.SIGKILL)
  killed_at = time.monotonic()
  resumed = wait_until(lambda: [int(s) for s in re.findall(
      r'\[learner\] .*learner: resumed at train step (\d+)', fleet.output())], START_S,
                       'the learner to resume', detail=fleet.tail)[-1]
  assert resumed >= steps[-1] > 0
  assert fleet.roles()['learner']['node_ip'] == node2.ip
  wait_until(lambda: fleet.train_step() > resumed, RECOVER_S, 'the learner to train again')
  print(f'\nRECOVERY kill -9 learner -> resumed at {resumed} (newest checkpoint before the kill '
        f'{steps[-1]}) and training: {time.monotonic() - killed_at:.1f} s')


def test_server_held_away_past_the_deadline_then_back_trains_again(fleet):
  roles = fleet.roles()
  server_pid = roles['replay_server']['pid']
  restarts = {n: s['restarts'] for n, s in roles.items()}
  step = fleet.train_step()
  os.kill(server_pid, signal.SIGSTOP)  # Accepts connections, answers nothing.
  stopped_at = time.monotonic()
  try:
    # Past --server_timeout_s the clients exit with the restartable status, and Ray restarts
    # them: the learner included, whichever of its clocks (reconnect or watchdog) fires first.
    wait_until(lambda: fleet.roles()['learner']['restarts'] > restarts['learner'],
               SERVER_TIMEOUT_S + RECOVER_S, 'the learner to give up and be restarted',
               detail=fleet.tail)

    def _held():
      assert fleet.launcher.alive(), fleet.tail()
      return time.monotonic() - stopped_at >= SERVER_TIMEOUT_S + 30
    wait_until(_held, SERVER_TIMEOUT_S + 60, 'the outage to outlast the deadline', interval_s=2.0)
  finally:
    os.kill(server_pid, signal.SIGCONT)
  back_at = time.monotonic()
  wait_until(lambda: fleet.train_step() > step, START_S, 'the learner to train past its step '
             'before the outage', detail=fleet.tail)
  inserted = fleet.inserted()
  wait_until(lambda: fleet.inserted() > inserted + 200, RECOVER_S,
             'the server\'s insert count to grow again', detail=fleet.tail)
  now = wait_until(lambda: (r := fleet.roles()) and all(r[n]['up'] for n in restarts) and r,
                   RECOVER_S, 'every role up again', detail=fleet.tail)
  assert now['replay_server']['pid'] == server_pid  # Frozen, never restarted.
  assert not [n for n, s in now.items() if s.get('fatal')], now  # Nothing ended as bad input.
  assert fleet.launcher.alive()
  print(f'\nRECOVERY replay server frozen {back_at - stopped_at:.0f} s (deadline '
        f'{SERVER_TIMEOUT_S} s) -> training again {time.monotonic() - back_at:.1f} s later; '
        'restarts: ' + ', '.join(f'{n} +{now[n]["restarts"] - restarts[n]}' for n in restarts))


def test_scale_adds_and_removes_actors_while_it_runs(fleet, cluster):
  learner_pid, server_pid = fleet.roles()['learner']['pid'], fleet.roles()['replay_server']['pid']
  command = [sys.executable, '-m', 'launcher.ray', 'scale', f'--address={cluster.address}',
             f'--name={FLEET}']
  up = processes.Process(command + [f'--num_actors={NUM_ACTORS + 1}'], 'scale', new_session=False)
  assert up.wait(120) == 0
  wait_until(lambda: re.search(rf'\[actor/{NUM_ACTORS}\] .*actor {NUM_ACTORS}: collecting',
                               fleet.output()), START_S, 'the added actor to collect',
             detail=fleet.tail)
  down = processes.Process(command + [f'--num_actors={NUM_ACTORS}'], 'scale', new_session=False)
  assert down.wait(200) == 0
  roles = wait_until(lambda: (r := fleet.roles()) and f'actor/{NUM_ACTORS}' not in r and r,
                     60, 'the removed actor to be gone')
  assert roles['learner']['pid'] == learner_pid and roles['replay_server']['pid'] == server_pid


def test_clean_stop_leaves_no_processes(fleet, cluster):
  stop = processes.Process([sys.executable, '-m', 'launcher.ray', 'stop',
                            f'--address={cluster.address}', f'--name={FLEET}'], 'stop',
                           log_path=os.path.join(os.path.dirname(fleet.log_path), 'stop.log'),
                           new_session=False)
  assert stop.wait(400) == 0, stop.log_text()
  assert fleet.launcher.wait(120) is not None
  assert 'stopped by `launcher.ray stop`' in fleet.output()

  def _ours():
    found = []
    for proc in psutil.process_iter(['cmdline']):
      cmdline = ' '.join(proc.info['cmdline'] or [])
      if fleet.root_dir in cmdline and 'launcher.ray' not in cmdline:
        found.append(cmdline)
    return found
  wait_until(lambda: not _ours(), 60, 'no process of the fleet left', detail=lambda: _ours())
  wait_until(lambda: not [a for a in ray.util.list_named_actors() if a.startswith(FLEET)], 60,
             'no named actor of the fleet left')
