"""Faults with real processes: kill -9 an actor, the learner or the replay server, SIGTERM, stalls.

One CartPole DQN run (a replay server, a learner and two collect actors, tiny budgets) is shared
by the tests of this module, in file order: each test breaks one process, checks that the rest
carry on and that the restarted one picks up where the run was, and leaves the run whole for
the next. Every wait is a bounded poll; each test prints its time to recover.

Marked `slow`.
"""

import os
import re
import shutil
import socket
import time

import portpicker
import pytest
import reverb

from common import constants
from common.config import validated_configs
from learner import agent_record
from replay_server import checkpoints as checkpoints_lib
from replay_server import server as server_lib
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import parse_gin
from launcher import processes as processes_lib
from tests.conftest import start_role
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

KEEP = 2  # Learner checkpoints kept.
BINDINGS = list(FAST_BINDINGS) + [
    # Pinned here, whatever the gin file says: actors and learner run free of each other
    # (a ratio limiter would rightly hold the actors while the learner is down).
    'ReplayConfig.samples_per_insert = None',
    'ReplayConfig.max_size = 100000',
    'ActorConfig.num_envs = 2',
    f'LearnerConfig.max_checkpoints_to_keep = {KEEP}',
    'LearnerConfig.policy_export_interval = 100000',  # SavedModel exports are slow, not tested.
]
# Process start-up on a loaded 2-core machine (TensorFlow import, tracing) can take a minute.
START_S = 240
RECOVER_S = 240


def _read(path) -> str:
  try:
    with open(path) as f:
      return f.read()
  except FileNotFoundError:
    return ''


def _last_int(pattern: str, text: str):
  found = re.findall(pattern, text)
  return int(found[-1]) if found else None


class Run:
  """The processes of one run, their logs and restarts."""

  def __init__(self, root_dir: str, log_dir: str, port: int, bindings=BINDINGS):
    self.root_dir = root_dir
    self.log_dir = log_dir
    self.port = port
    self.address = f'localhost:{port}'
    self.bindings = list(bindings)
    self.processes = {}
    self.starts = {}

  def log_path(self, role: str) -> str:
    return os.path.join(self.log_dir, f'{role}.{self.starts[role]}.log')

  def log(self, role: str) -> str:
    """The log of the current incarnation of `role`."""
    return _read(self.log_path(role))

  def start(self, role: str, *extra: str):
    self.starts[role] = self.starts.get(role, -1) + 1
    flags = dict(gin_files=[CARTPOLE_GIN], gin_bindings=self.bindings, root_dir=self.root_dir,
                 log_path=self.log_path(role), name=role)
    if role == 'server':
      process = start_role('replay_server', port=self.port,
                           extra=['--checkpoint_interval_s=4', *extra], **flags)
    else:
      client = dict(flags, address=self.address, server_timeout_s=300, extra=extra)
      if role.startswith('actor'):
        process = start_role('actor', task=int(role[len('actor'):]), **client)
      else:
        process = start_role(role, **client)
    self.processes[role] = process
    return process

  def kill(self, role: str) -> None:
    self.processes[role].kill()

  def alive(self, *roles) -> bool:
    return all(self.processes[r].poll() is None for r in roles)

  def info(self):
    return reverb.Client(self.address).server_info(timeout=5)

  def inserts(self) -> int:
    try:
      return int(self.info()[constants.REPLAY_TABLE].rate_limiter_info.insert_stats.completed)
    except Exception:  # pylint: disable=broad-except  (server down)
      return -1

  def train_step(self):
    """The learner's latest logged train step (its resume step before its first log line)."""
    return _last_int(r'(?:train_step=|resumed at train step )(\d+)', self.log('learner'))

  def env_steps(self, role: str):
    return _last_int(r'env_steps=(\d+)', self.log(role))

  def weights_step(self, role: str):
    return _last_int(r'weights_step=(\d+)', self.log(role))

  def learner_checkpoints(self):
    directory = os.path.join(self.root_dir, constants.LEARNER_DIR,
                             agent_record.CHECKPOINT_SUBDIR)
    if not os.path.isdir(directory):
      return []
    return sorted(int(m.group(1)) for n in os.listdir(directory)
                  if (m := re.fullmatch(r'ckpt-(\d+)\.index', n)))

  def stop_all(self):
    """SIGTERM to all at once, then a bounded wait for each; returns the exit statuses."""
    return processes_lib.stop_all(self.processes.values(), grace_s=60)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp('faults')
  the_run = Run(str(base / 'run'), str(base), portpicker.pick_unused_port())
  try:
    for role in ('server', 'learner', 'actor0', 'actor1'):
      the_run.start(role)
    wait_until(lambda: (the_run.weights_step('actor0') or 0) > 0
               and (the_run.weights_step('actor1') or 0) > 0
               and (the_run.train_step() or 0) >= 100, START_S,
               'the run to train and both actors to use learned weights')
    yield the_run
  finally:
    stopped_at = time.monotonic()
    codes = the_run.stop_all()
    print(f'\nstopped the run in {time.monotonic() - stopped_at:.1f} s: {codes}')


def _recovered(start: float, what: str) -> float:
  seconds = time.monotonic() - start
  print(f'\nRECOVERY {what}: {seconds:.1f} s')
  return seconds


def test_kill_actor(run):
  run.kill('actor1')
  killed_at = time.monotonic()
  step, inserts, env0 = run.train_step(), run.inserts(), run.env_steps('actor0')
  # The learner trains and actor 0 inserts without actor 1.
  wait_until(lambda: run.train_step() >= step + 50 and run.inserts() > inserts + 200
             and run.env_steps('actor0') > env0, RECOVER_S,
             'the learner and actor 0 to carry on without actor 1')
  assert run.alive('server', 'learner', 'actor0')
  run.start('actor1')
  wait_until(lambda: (run.weights_step('actor1') or 0) > 0 and run.env_steps('actor1'),
             RECOVER_S, 'the restarted actor 1 to collect with learned weights')
  _recovered(killed_at, 'kill -9 actor 1 -> restarted actor collecting with weights')
  log = run.log('actor1')
  assert 'actor 1: collecting' in log and '(seed=1000' in log  # Its task id and its seeds.
  assert os.path.isdir(os.path.join(run.root_dir, constants.ACTOR_DIR, '1'))


def test_kill_learner(run):
  wait_until(lambda: len(run.learner_checkpoints()) >= KEEP, RECOVER_S,
             f'{KEEP} learner checkpoints')
  run.kill('learner')
  killed_at = time.monotonic()
  checkpoints = run.learner_checkpoints()
  # The learner keeps its last KEEP checkpoints; one more if the kill fell between writing the
  # newest and deleting the oldest (TensorFlow records the new state first, then prunes).
  assert KEEP <= len(checkpoints) <= KEEP + 1, checkpoints
  latest = checkpoints[-1]
  weights = {a: run.weights_step(a) for a in ('actor0', 'actor1')}
  env = {a: run.env_steps(a) for a in ('actor0', 'actor1')}
  # During the outage the actors keep collecting with the weights they have.
  wait_until(lambda: all(run.env_steps(a) > env[a] + 100 for a in env), RECOVER_S,
             'the actors to collect without the learner')
  for actor in env:
    assert run.weights_step(actor) >= weights[actor] > 0
    assert run.weights_step(actor) <= latest + 100  # No push came from anywhere else.
  run.start('learner')
  wait_until(lambda: 'learner: resumed at train step' in run.log('learner'), START_S,
             'the learner to resume')
  resumed = _last_int(r'resumed at train step (\d+)', run.log('learner'))
  # The newest checkpoint, or the one before it when the kill fell while the newest was being
  # written (its index listed, its data incomplete: the learner skips an unreadable one).
  assert resumed in checkpoints[-2:] and resumed > 0, (resumed, checkpoints)
  # Past every push of the killed learner (at most `latest + 100`, asserted above).
  wait_until(lambda: all((run.weights_step(a) or 0) > latest + 100 for a in env), RECOVER_S,
             'the actors to pick up weights from the restarted learner')
  _recovered(killed_at, f'kill -9 learner -> resumed at step {resumed}, actors on new weights')
  assert run.alive('server', 'actor0', 'actor1')
  # Its next checkpoint prunes back to KEEP, left-overs of the kill included.
  wait_until(lambda: max(run.learner_checkpoints()) > latest, RECOVER_S,
             'a checkpoint from the restarted learner')
  wait_until(lambda: len(run.learner_checkpoints()) == KEEP, RECOVER_S,
             f'the restarted learner to prune to {KEEP} checkpoints',
             detail=lambda: str(run.learner_checkpoints()))


def test_kill_replay_server(run):
  server_log = run.log('server')
  wait_until(lambda: re.search(r'Replay checkpoint .* \((\d+) items\)', run.log('server'))
             and len(re.findall(r'Replay checkpoint', run.log('server'))) >
             len(re.findall(r'Replay checkpoint', server_log)), RECOVER_S,
             'a fresh replay checkpoint')
  checkpoint_items = _last_int(r'Replay checkpoint .* \((\d+) items\)', run.log('server'))
  run.kill('server')
  killed_at = time.monotonic()
  # Nobody crashes; each logs that it lost the server and waits for it.
  for role in ('learner', 'actor0', 'actor1'):
    wait_until(lambda r=role: re.search(r'lost the replay server|waiting for the replay server|'
                                        r'not answering', run.log(r)),
               RECOVER_S, f'{role} to log the lost server')
  assert run.alive('learner', 'actor0', 'actor1')
  step = run.train_step()
  run.start('server')
  wait_until(lambda: constants.SERVER_READY_LINE in run.log('server'), START_S,
             'the restarted server')
  restored = _last_int(r'Restored replay checkpoint .*size=(\d+)/', run.log('server'))
  assert restored is not None and restored >= checkpoint_items > 0, run.log('server')[-3000:]
  # The learner's next push refills the variable table; actors and learner carry on.
  wait_until(lambda: run.info()[constants.VARIABLE_TABLE].current_size == 1, RECOVER_S,
             'the learner to refill the variable table')
  # Inserts, not the size: a table that was full at the kill comes back full.
  inserts = run.inserts()
  wait_until(lambda: run.inserts() > inserts + 200 and run.train_step() > step + 50, RECOVER_S,
             'the actors to insert and the learner to train again',
             detail=lambda: (f'inserts {run.inserts()} (after the restart {inserts}), train step '
                             f'{run.train_step()} (was {step})'
                             + ''.join(f'\n--- {r}:\n' + run.log(r)[-1500:]
                                       for r in ('learner', 'actor0', 'server'))))
  _recovered(killed_at, f'kill -9 replay server -> restored {restored} items '
             f'(checkpoint had {checkpoint_items}), inserting and training')
  assert run.alive('learner', 'actor0', 'actor1')


@pytest.mark.parametrize('role, directory, owner', [
    ('server', 'replay_server', 'replay server'),
    ('learner', 'learner', 'learner'),
    ('actor0', 'actor/0', 'actor with --task=0'),
])
def test_a_second_process_on_a_role_directory_is_refused(run, role, directory, owner):
  log_path = os.path.join(run.log_dir, f'second_{role}.log')
  flags = dict(gin_files=[CARTPOLE_GIN], gin_bindings=run.bindings, root_dir=run.root_dir,
               log_path=log_path, name=f'second {role}')
  if role == 'server':
    second = start_role('replay_server', port=portpicker.pick_unused_port(), **flags)
  elif role == 'learner':
    second = start_role('learner', address=run.address, **flags)
  else:
    second = start_role('actor', task=0, address=run.address, **flags)
  assert second.wait(120) == 2, _read(log_path)[-2000:]
  errors = [l for l in _read(log_path).splitlines() if l.startswith('error: ')]
  pid = run.processes[role].pid
  assert errors == [f'error: {os.path.join(run.root_dir, directory)} is in use by another '
                    f'{owner} (pid {pid} on {socket.gethostname()}): stop that one, or pass '
                    'another --root_dir'], _read(log_path)[-2000:]
  assert run.alive('server', 'learner', 'actor0', 'actor1')


def test_a_second_learner_on_the_same_server_is_reported_and_ends_nothing(run, tmp_path):
  # Another run's learner on this run's server: its pushes are foreign inserts to this one's
  # learner, and carry another run's key. Reported, not obeyed; no role of either run exits
  # (an exit would hand anyone who reaches the port a way to end the run).
  log_path = os.path.join(run.log_dir, 'other_learner.log')
  other = start_role('learner', gin_files=[CARTPOLE_GIN], gin_bindings=run.bindings,
                     root_dir=str(tmp_path / 'other_run'), address=run.address,
                     log_path=log_path, name='other learner')
  try:
    wait_until(lambda: "that are not this learner's" in run.log('learner'), 120,
               "the run's learner to report the other learner's pushes",
               detail=lambda: run.log('learner')[-2000:] + _read(log_path)[-2000:])
    wait_until(lambda: "that are not this learner's" in _read(log_path), 120,
               "the other learner to report this run's pushes",
               detail=lambda: _read(log_path)[-2000:])
    assert other.poll() is None, _read(log_path)[-2000:]
    assert run.alive('server', 'learner', 'actor0', 'actor1')
    assert 'stop it, or give each run its own replay server' in run.log('learner')
  finally:
    other.stop()
  assert other.returncode == 0, _read(log_path)[-2000:]
  assert run.alive('server', 'learner', 'actor0', 'actor1')


def test_sigterm_learner_and_server_write_a_checkpoint(run):
  run.processes['learner'].stop()
  assert run.processes['learner'].returncode == 0, run.log('learner')[-3000:]
  final = _last_int(r'learner stopped at train step (\d+)', run.log('learner'))
  assert final is not None and final in run.learner_checkpoints()
  checkpoints_dir = os.path.join(run.root_dir, constants.REPLAY_CHECKPOINT_DIR)
  before = set(checkpoints_lib.complete_checkpoints(checkpoints_dir))
  run.processes['server'].stop()
  assert run.processes['server'].returncode == 0, run.log('server')[-3000:]
  final_path = re.findall(r'replay_server stopped: final checkpoint (\S+)', run.log('server'))
  assert final_path and final_path[-1] in set(
      checkpoints_lib.complete_checkpoints(checkpoints_dir)) - before


def test_actors_blocked_on_a_dead_server_still_stop_on_sigterm(run):
  # The server is gone (previous test); the actors are blocked inside Reverb calls.
  wait_until(lambda: all('not answering' in run.log(a) for a in ('actor0', 'actor1')),
             RECOVER_S, 'the actors to notice the server is gone')
  start = time.monotonic()
  for actor in ('actor0', 'actor1'):
    run.processes[actor].terminate()
  for actor in ('actor0', 'actor1'):
    assert run.processes[actor].wait(60) == 0
    assert 'Received SIGTERM' in run.log(actor)
  print(f'\nSIGTERM to blocked actors -> exited in {time.monotonic() - start:.1f} s')


def test_incomplete_replay_checkpoint_is_never_loaded_or_counted(tmp_path):
  """A checkpoint directory without Reverb's DONE marker (a write cut short) is ignored."""
  parse_gin(CARTPOLE_GIN, BINDINGS)
  root = str(tmp_path / 'run')
  port = portpicker.pick_unused_port()
  server = server_lib.ReplayServer(root, port, validated_configs(), keep_checkpoints=1)
  try:
    client = reverb.Client(f'localhost:{port}')
    _insert_cartpole_items(client, 10)
    complete = server.checkpoint()
    # Reverb deletes all but its newest checkpoint on the next one: keep this one aside.
    shutil.copytree(complete, str(tmp_path / 'kept'))
    _insert_cartpole_items(client, 10)
    newer = client.checkpoint()  # 20 items; its DONE marker goes below.
  finally:
    server.stop()
  if not os.path.isdir(complete):
    shutil.copytree(str(tmp_path / 'kept'), complete)
  directory = os.path.dirname(complete)
  assert sorted(checkpoints_lib.complete_checkpoints(directory)) == [complete, newer]
  os.remove(os.path.join(newer, 'DONE'))  # As a write killed before its end leaves it.
  assert checkpoints_lib.complete_checkpoints(directory) == [complete]
  checkpoints_lib.prune_checkpoints(directory, keep=1)
  assert os.path.isdir(complete)  # The incomplete one did not count towards `keep`.
  server = server_lib.ReplayServer(root, port, validated_configs(), keep_checkpoints=1)
  try:
    # The 10 items of the complete checkpoint, not the 20 of the newer, incomplete one.
    assert server.info()[constants.REPLAY_TABLE].current_size == 10
  finally:
    server.stop()


def _insert_cartpole_items(client, count: int) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  signature = client.server_info()[constants.REPLAY_TABLE].signature
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flat = tf.nest.flatten(signature)
  with client.trajectory_writer(num_keep_alive_refs=2) as writer:
    for _ in range(count + 1):
      writer.append([np.zeros(s.shape[1:], s.dtype.as_numpy_dtype) for s in flat])
      if writer.episode_steps >= 2:
        writer.create_item(constants.REPLAY_TABLE, 1.0,
                           [column[-2:] for column in writer.history])
    writer.flush()


def test_stalls_are_logged_with_the_table_and_rate_limiter_state(tmp_path):
  """No actors: the learner says why it waits. A back-pressured actor says so too."""
  bindings = BINDINGS + ['ReplayConfig.samples_per_insert = 1.0',
                         'ReplayConfig.min_size = 64']
  stall = Run(str(tmp_path / 'run'), str(tmp_path), portpicker.pick_unused_port(), bindings)
  try:
    stall.start('server')
    stall.start('learner')
    line = wait_until(lambda: re.search(r'learner: no replay sample for .*', stall.log('learner')),
                      START_S, 'the learner to log its stall').group(0)
    assert 'table replay_table: size=0/' in line and 'min_size_to_sample=64' in line
    assert 'samples_per_insert=1' in line
    # The learner repeats it rather than going quiet.
    wait_until(lambda: len(re.findall('no replay sample for', stall.log('learner'))) >= 3, 60,
               'repeated stall lines')
    stall.processes['learner'].stop()
    # With no learner sampling, the ratio limiter blocks the actor's inserts past
    # min_size + error buffer.
    stall.start('actor0')
    line = wait_until(lambda: re.search(r'actor 0: no progress for .*waiting on the replay '
                                        r'table.*', stall.log('actor0')), START_S,
                      'the blocked actor to log its stall').group(0)
    assert 'samples=0' in line and 'samples_per_insert=1' in line
    size = stall.info()[constants.REPLAY_TABLE].current_size
    assert 64 <= size < 100, size
  finally:
    stall.stop_all()
