"""Smoke tests of the real mains as separate processes, with tiny budgets.

Marked `slow`: each starts several TensorFlow processes.
"""

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import reverb

from actor import evaluate
from common import constants
from common import ownership
from launcher import processes
from replay_server import checkpoints as checkpoints_lib
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import GIN_DIR
from tests.conftest import REPO
from tests.conftest import start_role
from tests.conftest import wait_until

IMPALA_GIN = os.path.join(GIN_DIR, 'impala_cartpole.gin')

pytestmark = pytest.mark.slow

GIN = dict(gin_files=[CARTPOLE_GIN], gin_bindings=FAST_BINDINGS)


def _log(path):
  with open(path) as f:
    return f.read()


def _start(role, root_dir, port, tmp_path):
  log = str(tmp_path / f'{role}.log')
  if role == 'server':
    return start_role('replay_server', port=port, root_dir=root_dir, log_path=log,
                      extra=['--checkpoint_interval_s=0'], **GIN)
  client = dict(GIN, root_dir=root_dir, address=f'localhost:{port}', log_path=log)
  if role == 'learner':
    return start_role('learner', extra=['--max_train_steps=100'], **client)
  if role == 'actor':
    return start_role('actor', task=0, extra=['--max_env_steps=100000'], **client)
  return start_role('eval', extra=['--max_evals=2'], **client)


@pytest.mark.parametrize('order', [('server', 'learner', 'actor', 'eval'),
                                   ('learner', 'actor', 'eval', 'server')],
                         ids=['server_first', 'server_last'])
def test_three_kinds_of_process_train_in_any_start_order(order, root_dir, port, tmp_path):
  processes = {}
  try:
    for role in order:
      if role == 'server' and order[-1] == 'server':
        # The others are up and waiting (bounded, logged) before the server exists.
        for waiting in ('learner', 'actor', 'eval'):
          wait_until(lambda w=waiting: 'waiting for the replay server' in _log(
              tmp_path / f'{w}.log'), 240, f'{waiting} to wait for the server')
      processes[role] = _start(role, root_dir, port, tmp_path)
    # The learner reaches its budget and exits 0 on its own.
    assert processes['learner'].wait(600) == 0, _log(tmp_path / 'learner.log')
    assert processes['eval'].wait(300) == 0, _log(tmp_path / 'eval.log')
    learner_log = _log(tmp_path / 'learner.log')
    assert 'learner stopped at train step 100' in learner_log
    rows = evaluate.read_csv(os.path.join(root_dir, constants.EVAL_CSV))
    assert len(rows) == 2 and rows[-1]['train_step'] > 0
    info = reverb.Client(f'localhost:{port}').server_info()
    assert info[constants.REPLAY_TABLE].current_size >= 64
    assert 'weights_step=' in wait_until(
        lambda: 'weights_step=1' in _log(tmp_path / 'actor.log') and _log(tmp_path / 'actor.log'),
        120, 'the actor to log pulled weights')
  finally:
    codes = {role: p.stop() for role, p in processes.items()}
  # SIGTERM: the actor and the server stop cleanly; the server writes a final checkpoint.
  assert codes['actor'] == 0, _log(tmp_path / 'actor.log')
  assert codes['server'] == 0, _log(tmp_path / 'server.log')
  assert 'replay_server stopped' in _log(tmp_path / 'server.log')
  assert checkpoints_lib.complete_checkpoints(
      os.path.join(root_dir, constants.REPLAY_CHECKPOINT_DIR))
  for name in ('greedy_policy', 'collect_policy'):
    assert os.path.isfile(os.path.join(root_dir, constants.POLICY_DIR, name, 'saved_model.pb'))
  for role_dir in ('learner', 'actor/0', 'eval', 'replay_server'):
    operative = os.path.join(root_dir, role_dir, 'operative_config.gin')
    with open(operative) as f:
      assert "env_name = 'CartPole-v0'" in f.read(), operative
    assert os.path.isfile(os.path.join(root_dir, role_dir, 'flags.json'))


def test_local_launcher_runs_every_role_and_stops_at_the_train_budget(root_dir, port):
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
          '--num_actors=2', '--max_train_steps=60', '--budget_s=400',
          f'--gin_file={CARTPOLE_GIN}', '--gin_bindings=EvalConfig.target_return = None']
  args += [f'--gin_bindings={b}' for b in FAST_BINDINGS]
  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  output = result.stdout
  assert result.returncode == 0, output[-4000:] + result.stderr[-2000:]
  for prefix in ('[replay_server] ', '[learner] ', '[actor/0] ', '[actor/1] ', '[eval] '):
    assert prefix in output, prefix
  assert 'learner finished its 60 train steps' in output
  assert '[learner] ' in output and 'learner stopped at train step 60' in output
  # The server knows the grace the launcher gives it (its checkpoints are checked against it).
  with open(os.path.join(root_dir, constants.REPLAY_DIR, 'flags.json')) as f:
    assert json.load(f)['stop_grace_s'] == processes.stop_of('replay_server')[1]


def test_local_launcher_stops_the_servers_clients_before_the_server(root_dir, port):
  # Stopped at its target while the learner samples its queue: the learner still makes its
  # final saves, the actor still reaches the server, and the server stops last.
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
          '--num_actors=1', '--budget_s=300', f'--gin_file={IMPALA_GIN}']
  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  output = result.stdout
  assert result.returncode == 0, output[-4000:] + result.stderr[-2000:]
  assert '[local] stopping: eval return' in output, output[-3000:]
  learner_stopped = output.index(f'{constants.LEARNER_STOPPED_LINE} at train step')
  assert 'exiting without flushing' not in output, output[-3000:]
  assert 'the replay server is not answering' not in output, output[-3000:]
  assert 'stopping without its last unconfirmed items' not in output, output[-3000:]  # None lost.
  assert learner_stopped < output.index(constants.SERVER_STOPPED_LINE)
  assert output.index(constants.ACTOR_STOPPED_LINE) < output.index(constants.SERVER_STOPPED_LINE)


def _child_environments(launcher_pid):
  """{child name: CUDA_VISIBLE_DEVICES or None} of a local launcher's four kinds of child."""
  names = {}
  for child in psutil.Process(launcher_pid).children():
    try:
      command = ' '.join(child.cmdline())
    except psutil.NoSuchProcess:
      continue
    name = next((n for n, m in (('replay_server', 'replay_server.main'),
                                ('learner', 'learner.main'), ('eval', '--mode=eval'),
                                ('actor', '--mode=collect')) if m in command), None)
    if name:
      try:
        names[name] = child.environ().get('CUDA_VISIBLE_DEVICES')
      except psutil.NoSuchProcess:
        pass
  return names


@pytest.mark.parametrize('flag,learner_sees', [('all', None), ('2', '0,1'), ('none', '')])
def test_local_launcher_gives_gpus_to_the_learner_only(flag, learner_sees, root_dir, port):
  # The launcher's environment has no CUDA_VISIBLE_DEVICES: 'all' leaves the learner's unset
  # (every GPU), a count N gives it the first N, and every other child gets ''.
  env = {k: v for k, v in os.environ.items() if k != 'CUDA_VISIBLE_DEVICES'}
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
          '--num_actors=1', '--budget_s=120', f'--learner_gpus={flag}',
          f'--gin_file={CARTPOLE_GIN}'] + [f'--gin_bindings={b}' for b in FAST_BINDINGS]
  launcher = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  try:
    seen = wait_until(lambda: (lambda e: e if len(e) == 4 else None)(
        _child_environments(launcher.pid)), 120, 'the four kinds of child')
    # The children passed their checks and the launcher claimed the run: its lines are out.
    wait_until(lambda: os.path.exists(os.path.join(root_dir, ownership.LOCK_FILE)), 120,
               'the launcher\'s go')
  finally:
    launcher.send_signal(signal.SIGINT)
    output, _ = launcher.communicate(timeout=300)
  assert seen == {'replay_server': '', 'learner': learner_sees, 'actor': '', 'eval': ''}, seen
  line = {'all': 'learner: every GPU (CUDA_VISIBLE_DEVICES unset)', '2': 'learner: GPUs 0,1',
          'none': 'learner: no GPU'}[flag]
  assert line in output, output[-3000:]


def test_a_child_that_refuses_at_its_start_is_the_launchers_one_error_line(root_dir, port):
  # Another process holds the port: the launcher's replay server refuses it at its start,
  # before the launcher's go, so nothing is written and its line and status are the run's.
  # (On the host's network: a closed fleet has a network, and so ports, of its own.)
  holder = reverb.Server([reverb.Table.queue('q', 1)], port=port)
  try:
    result = subprocess.run(
        [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
         '--num_actors=1', '--budget_s=300', '--server_timeout_s=60', '--network=host',
         f'--gin_file={CARTPOLE_GIN}'],
        cwd=REPO, capture_output=True, text=True, timeout=400,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  finally:
    holder.stop()
  tail = result.stdout[-3000:] + result.stderr[-1000:]
  assert result.returncode == 2, tail
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and f'port {port} is already in use' in errors[0], tail
  assert result.stdout == '', tail  # The children's held lines were dropped.
  assert not os.path.exists(root_dir) or not os.listdir(root_dir), os.listdir(root_dir)


def test_local_launcher_exits_non_zero_when_a_child_fails(root_dir, port):
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
          '--num_actors=1', '--budget_s=300', f'--gin_file={CARTPOLE_GIN}']
  launcher = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  try:
    wait_until(lambda: os.path.exists(os.path.join(root_dir, ownership.LOCK_FILE)), 120,
               'the launcher\'s go')
    learner = wait_until(lambda: next((c for c in psutil.Process(launcher.pid).children()
                                       if 'learner.main' in ' '.join(c.cmdline())), None),
                         60, 'the learner')
    learner.kill()
    output, _ = launcher.communicate(timeout=400)
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.communicate()
  assert launcher.returncode == 1, output[-3000:]
  assert 'learner exited with status -9' in output, output[-3000:]


def _children(pid: int):
  """The pids of `pid`'s child processes (from /proc)."""
  found = []
  for name in os.listdir('/proc'):
    if name.isdigit():
      try:
        with open(f'/proc/{name}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid and fields[0] != 'Z':
        found.append(int(name))
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def test_killed_launcher_leaves_no_children_and_a_second_one_is_refused(root_dir, port,
                                                                       tmp_path):
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', '--num_actors=1',
          '--budget_s=600', f'--gin_file={CARTPOLE_GIN}']
  args += [f'--gin_bindings={b}' for b in FAST_BINDINGS]
  log_path = tmp_path / 'launcher.log'
  env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
  with open(log_path, 'w') as log:
    launcher = subprocess.Popen(args + [f'--port={port}'], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
  try:
    wait_until(lambda: 'train_step=' in _log(log_path), 300, 'the launched learner to train',
               detail=lambda: _log(log_path)[-2000:])
    children = _children(launcher.pid)
    commands = [open(f'/proc/{pid}/cmdline').read().replace('\0', ' ') for pid in children]
    for module in ('replay_server.main', 'learner.main', 'actor.main --mode=eval',
                   'actor.main --mode=collect'):
      assert any(module in c for c in commands), (module, commands)

    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=env)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        f'error: {root_dir} is in use by another local launcher (pid {launcher.pid} on ')

    launcher.kill()  # kill -9: the launcher cannot stop its children itself.
    launcher.wait(30)
    wait_until(lambda: not any(_alive(pid) for pid in children), 60,
               'every child of the killed launcher to exit',
               detail=lambda: f'alive: {[p for p in children if _alive(p)]}')
  finally:
    if launcher.poll() is None:
      launcher.kill()


@pytest.mark.parametrize('role, name', [('learner', 'learner'), ('actor', 'actor 0'),
                                        ('eval', 'eval')])
def test_sigterm_while_waiting_for_the_server_exits_zero_with_the_stop_line(role, name, root_dir,
                                                                           port, tmp_path):
  log = str(tmp_path / f'{role}.log')
  flags = dict(GIN, root_dir=root_dir, address=f'localhost:{port}', log_path=log)
  process = start_role(role, task=0, **flags) if role == 'actor' else start_role(role, **flags)
  try:
    wait_until(lambda: 'waiting for the replay server' in _log(log), 120,
               f'the {role} to wait for the (absent) server', detail=lambda: _log(log)[-2000:])
    process.terminate()
    assert process.wait(30) == 0, _log(log)[-2000:]
  finally:
    process.kill()
  assert (f'{name}: stopped while waiting for the replay server at localhost:{port}, before it '
          'answered') in _log(log)
  assert 'error:' not in _log(log) and 'Traceback' not in _log(log)
