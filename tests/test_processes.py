"""launcher/processes.py and launcher/status.py: every role's command line, bounded stops of
real child processes, the parent-death signal, and when a run is over."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from common.errors import UserError
from launcher import local
from launcher import processes
from launcher import status
from tests.conftest import wait_until


def test_role_argv_spells_each_roles_flags_once():
  shared = dict(gin_files=['g.gin'], gin_bindings=['A.b = 1'], root_dir='/r')
  assert processes.role_argv('replay_server', port=9, **shared) == [
      sys.executable, '-m', 'replay_server.main', '--gin_file=g.gin', '--gin_bindings=A.b = 1',
      '--root_dir=/r', '--port=9']
  assert processes.role_argv('actor', task=3, address='10.0.0.1:9', server_timeout_s=30,
                             **shared)[2:] == [
      'actor.main', '--mode=collect', '--gin_file=g.gin', '--gin_bindings=A.b = 1',
      '--root_dir=/r', '--replay_server_address=10.0.0.1:9', '--server_timeout_s=30',
      '--task=3']
  assert processes.role_argv('eval', address='h:1', extra=['--max_evals=2'])[2:] == [
      'actor.main', '--mode=eval', '--replay_server_address=h:1', '--max_evals=2']
  assert processes.module_argv('learner') == ['-m', 'learner.main']


@pytest.mark.parametrize('role, flags, message', [
    ('trainer', {}, "unknown role 'trainer'"),
    ('replay_server', {'address': 'h:1'}, 'takes --port'),
    ('learner', {'port': 9}, "--port is the replay server's flag"),
    ('learner', {'task': 1}, "--task is an actor's flag"),
])
def test_role_flags_refuse_flags_the_role_does_not_have(role, flags, message):
  with pytest.raises(processes.RoleError, match=message):
    processes.role_flags(role, **flags)


_IGNORES_SIGTERM = ('import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
                    'print("ready", flush=True); time.sleep(600)')


def test_stop_kills_a_child_that_ignores_sigterm_within_the_grace(tmp_path):
  lines = []
  child = processes.Process([sys.executable, '-c', _IGNORES_SIGTERM], 'stubborn',
                            log_path=str(tmp_path / 'out.log'), on_line=lines.append)
  wait_until(lambda: 'ready' in lines, 60, 'the child to start')
  start = time.monotonic()
  code = child.stop(grace_s=1.0)
  assert code == -signal.SIGKILL
  assert time.monotonic() - start < 20
  assert 'ready' in child.log_text()  # The log file got the same lines as the callback.


def test_stop_all_signals_everyone_before_waiting():
  children = [processes.Process([sys.executable, '-c', 'import time; time.sleep(600)'],
                                f'sleeper{i}') for i in range(3)]
  start = time.monotonic()
  codes = processes.stop_all(children, grace_s=30)
  assert codes == {f'sleeper{i}': -signal.SIGTERM for i in range(3)}
  assert time.monotonic() - start < 20


def test_a_main_started_with_die_with_parent_stops_when_its_parent_is_killed(tmp_path):
  # The parent is a real process that starts the child through Process and then waits; the
  # child blocks the stop signals and asks for the parent-death signal as every main does.
  child_code = ('import common.main_utils as m, signal, time; m.block_stop_signals(); '
                'print("child ready", flush=True); '
                'signal.sigwait({signal.SIGTERM}); print("child got SIGTERM", flush=True)')
  parent_code = ('import sys; from launcher import processes; '
                 f'p = processes.Process([sys.executable, "-c", {child_code!r}], "child", '
                 f'log_path={str(tmp_path / "child.log")!r}, die_with_parent=True); '
                 'print(p.pid, flush=True); p.wait()')
  parent = processes.Process([sys.executable, '-c', parent_code], 'parent',
                             log_path=str(tmp_path / 'parent.log'))
  child_log = tmp_path / 'child.log'
  wait_until(lambda: child_log.exists() and 'child ready' in child_log.read_text(), 60,
             'the child to start')
  child_pid = int(parent.log_text().split()[0])
  parent.kill()  # kill -9: the parent gets no chance to stop its child.
  wait_until(lambda: 'child got SIGTERM' in child_log.read_text(), 30,
             'the child to get SIGTERM from the kernel')
  wait_until(lambda: not _alive(child_pid), 30, 'the child to exit')


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:
    return f.read().split()[2] != 'Z'


@pytest.mark.parametrize('args, expected', [
    # target, last eval, elapsed, budget, max steps, learner finished, failure
    ((195.0, None, 10, 100, 0, False, None), None),
    ((195.0, {'average_return': 200.0, 'train_step': 5, 'env_steps': 9}, 10, 100, 0, False,
      None), 0),
    ((195.0, None, 100, 100, 0, False, None), 1),
    ((None, None, 100, 100, 0, False, None), 0),
    ((None, None, 10, 0, 60, True, None), 0),
    ((195.0, None, 10, 0, 60, True, None), 1),
    ((None, None, 10, 0, 0, False, 'learner exited with status 1'), 1),
])
def test_outcome_rules(args, expected):
  result = status.outcome(*args)
  assert (result and result[0]) == expected if expected is not None else result is None


@pytest.mark.parametrize('flag,inherited,devices', [
    ('all', None, None), ('all', '2,3', None), ('none', '1', ''), ('0', None, ''),
    ('2', None, '0,1'), ('1', '3, 5', '3'), ('2', '3,5', '3,5')])
def test_learner_gpus_give_the_learner_the_first_n_visible_gpus(flag, inherited, devices):
  assert local.learner_devices(flag, inherited) == devices


@pytest.mark.parametrize('flag,inherited,problem', [
    ('0,1', None, 'must be all, none or a number'), ('gpu', None, 'must be all'),
    ('1.5', None, 'must be all'), ('3', '0,1', 'names 2 GPU(s)'), ('1', '', 'names 0 GPU(s)')])
def test_learner_gpus_that_cannot_work_are_refused_in_one_line(flag, inherited, problem):
  with pytest.raises(UserError, match=re.escape(problem)):
    local.learner_devices(flag, inherited)


_RECORDS_SIGTERM = ('import signal, sys, time\n'
                    'def stop(*_):\n'
                    '  time.sleep(0.5)  # Final saves.\n'
                    '  open(sys.argv[1], "a").write(f"{sys.argv[2]} {time.monotonic()}\\n")\n'
                    '  sys.exit(0)\n'
                    'signal.signal(signal.SIGTERM, stop)\n'
                    'print("ready", flush=True)\n'
                    'time.sleep(600)\n')


def test_stop_in_stages_stops_the_servers_clients_before_the_server(tmp_path):
  record = str(tmp_path / 'stops')
  children, ready = [], []
  for name in ('replay_server', 'learner', 'actor/0', 'eval'):
    lines = []
    ready.append(lines)
    children.append(processes.Process([sys.executable, '-c', _RECORDS_SIGTERM, record, name],
                                      name, on_line=lines.append))
  wait_until(lambda: all('ready' in lines for lines in ready), 60, 'the children to start')
  assert processes.stop_in_stages(children) == {name: 0 for name in
                                                 ('replay_server', 'learner', 'actor/0', 'eval')}
  with open(record) as f:
    stopped = {name: float(at) for name, at in (line.split() for line in f)}
  assert max(stopped[n] for n in ('learner', 'actor/0', 'eval')) < stopped['replay_server']


def test_docker_compose_stops_each_service_as_the_table_says():
  with open(os.path.join(processes.REPO, 'docker-compose.yml')) as f:
    compose = yaml.safe_load(f)
  default = compose['x-fleet']['stop_grace_period']
  for service, spec in compose['services'].items():
    stage, grace = processes.STOPS[service]
    assert spec.get('stop_grace_period', default) == f'{grace:g}s', service
    if stage == 0 and service != 'tensorboard':  # Compose stops a service before its deps.
      assert 'replay_server' in spec['depends_on'], service
  assert compose['services']['tensorboard']['depends_on'] == ['learner']
  server_flags = compose['services']['replay_server']['command']
  assert f'--stop_grace_s={processes.STOPS["replay_server"][1]:g}' in server_flags


_GATED = '''
import sys, types
from common import errors, main_utils
main_utils.block_stop_signals()
if sys.argv[1] == 'refuse':
  print('error: ReplayConfig.min_size = -1 is negative: fix the gin file', file=sys.stderr,
        flush=True)
  sys.exit(2)
print('checked', flush=True)
try:
  main_utils.wait_for_start_gate(
      types.SimpleNamespace(eval=types.SimpleNamespace(target_return=195.0)))
except errors.StopRequested as e:
  print('stopped:', e, flush=True)
  sys.exit(0)
print('through', flush=True)
'''


def _gated_children(gate, kinds):
  shown = {}
  children = []
  for i, kind in enumerate(kinds):
    name = f'child/{i}'
    shown[name] = []
    children.append(processes.Process(
        [sys.executable, '-c', _GATED, kind], name, die_with_parent=True,
        on_line=gate.hold(name, shown[name].append),
        env={local.START_GATE_ENV: gate.dir}))
  return children, shown


def test_children_report_their_checks_and_wait_for_the_go_with_their_lines_held():
  gate = local._Gate()  # pylint: disable=protected-access
  children, shown = _gated_children(gate, ['pass'] * 3)
  try:
    assert gate.wait_for_checks(children, threading.Event(), timeout_s=60) == {
        'target_return': 195.0}
    time.sleep(0.5)  # Nothing may pass the gate while it is closed.
    assert all(child.alive() for child in children)
    assert shown == {name: [] for name in shown}  # Held, not shown.
    gate.open()
    for child in children:
      assert child.wait(30) == 0
      child.close()
    assert all(lines == ['checked', 'through'] for lines in shown.values()), shown
  finally:
    for child in children:
      if child.alive():
        child.kill()
    gate.remove()
  assert not os.path.exists(gate.dir)


def test_a_child_that_refuses_the_config_ends_the_wait_with_its_line_and_status():
  gate = local._Gate()  # pylint: disable=protected-access
  children, shown = _gated_children(gate, ['pass', 'refuse', 'pass'])
  try:
    with pytest.raises(local._ChildRefused,  # pylint: disable=protected-access
                       match=r'^ReplayConfig.min_size = -1 is negative') as refused:
      gate.wait_for_checks(children, threading.Event(), timeout_s=60)
    assert refused.value.exit_status == 2
    assert not any(shown.values())  # The caller kills the others; nothing was shown.
  finally:
    for child in children:
      if child.alive():
        child.kill()
    gate.remove()


def test_a_stop_signal_ends_a_childs_wait_at_the_gate():
  gate = local._Gate()  # pylint: disable=protected-access
  children, shown = _gated_children(gate, ['pass'])
  try:
    wait_until(lambda: gate.reports(), 60, 'the child\'s report')
    children[0].terminate()  # Blocked, as in every main: seen by the gate's wait.
    assert children[0].wait(30) == 0
    children[0].close()
    gate.open()
    assert shown['child/0'] == ['checked', 'stopped: stopped before the launcher started the run']
  finally:
    gate.remove()


def test_the_local_launcher_imports_no_tensorflow():
  # Its children check the config; a TensorFlow import here would take a core from them.
  code = ('import sys, launcher.main, launcher.local\n'
          'assert not {"tensorflow", "reverb", "tf_agents"} & set(sys.modules), "imported"')
  subprocess.run([sys.executable, '-c', code], cwd=processes.REPO, check=True, timeout=60)


def test_a_gate_left_by_a_killed_launcher_is_removed_by_the_next_one(tmp_path, monkeypatch):
  monkeypatch.setattr(local.tempfile, 'tempdir', str(tmp_path))
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  stale = tmp_path / f'reverb_fleet_gate_{dead.pid}_abc'
  stale.mkdir()
  live = tmp_path / f'reverb_fleet_gate_{os.getpid()}_def'
  live.mkdir()
  gate = local._Gate()  # pylint: disable=protected-access
  try:
    assert not stale.exists() and live.exists()
    assert gate.dir.startswith(str(tmp_path / f'reverb_fleet_gate_{os.getpid()}_'))
  finally:
    gate.remove()
