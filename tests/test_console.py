"""The quiet console and the `reverb-fleet` command.

The default run's console must hold only the project's own lines; --verbosity must bring the
libraries' lines back; the filter must never swallow a real error, even from a process that
crashes; `reverb-fleet` must run every subcommand.
"""

import logging
import os
import re
import subprocess
import sys

import pytest

from common import console
from launcher import cli
from launcher import processes
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import REPO
from tests.conftest import start_role
from tests.conftest import wait_until

_PROJECT_FILES = frozenset(
    name for package in console.PROJECT_PACKAGES
    for _, _, names in os.walk(os.path.join(REPO, package)) for name in names
    if name.endswith('.py'))
_ABSL_LINE = re.compile(r'^[IWEF]\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\] ')
_ROLE_PREFIX = re.compile(r'^\[([\w/]+)\] (.*)$')
_REVERB_FLEET = os.path.join(os.path.dirname(sys.executable), 'reverb-fleet')


def foreign_lines(text: str):
  """The lines of a launcher's console that the project did not write.

  Project lines are the launcher's own (`[status] ...`, `[local] ...`) and, after a child's
  `[role] ` prefix, absl log lines from one of the project's source files.
  """
  out = []
  for line in text.splitlines():
    if line.startswith(('[status] ', '[local] ')):
      continue
    match = _ROLE_PREFIX.match(line)
    body = match.group(2) if match else line
    absl_line = _ABSL_LINE.match(body)
    if absl_line and absl_line.group(1) in _PROJECT_FILES:
      continue
    out.append(line)
  return out


def test_foreign_lines_tells_project_lines_from_library_lines():
  text = '\n'.join([
      '[local] root_dir=/tmp/x port=1 actors=2',
      '[status] train_step=0 env_steps/s=? replay_size=0',
      '[learner] I1202 03:37:18.707020 140591625407360 train.py:120] learner: starting',
      '[learner] I1202 03:37:19.994842 140698236373888 builder_impl.py:801] Assets written to: x',
      '[replay_server] [reverb/cc/platform/default/server.cc:71] Started replay server on port 1',
      'Gym has been unmaintained since 2022',
  ])
  assert foreign_lines(text) == text.splitlines()[3:]


@pytest.mark.parametrize('line', [
    '2026-12-02 03:32:31.728845: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] '
    'Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one '
    'has already been registered',
    '[reverb/cc/platform/tfrecord_checkpointer.cc:162]  Initializing TFRecordCheckpointer in /x.',
    '[reverb/cc/platform/tfrecord_checkpointer.cc:565] Loading latest checkpoint from /x',
    '[reverb/cc/platform/default/server.cc:71] Started replay server on port 42067',
    '[reverb/cc/platform/default/server.cc:84] Shutting down replay server',
    '[reverb/cc/reverb_service_impl.cc:168] Stored checkpoint to /x/2026-12-02T03:33:57',
    '[reverb/cc/trajectory_writer.cc:655] The number of pending items is alarmingly high, did '
    'you forget to call Flush?',
])
def test_known_library_chatter_is_noise(line):
  assert console.is_noise(line)


@pytest.mark.parametrize('line', [
    '2026-12-02 03:32:31.728845: E tensorflow/core/framework/op_kernel.cc:1839] OP_REQUIRES '
    'failed at save_restore_v2_ops.cc:160 : RESOURCE_EXHAUSTED: No space left on device',
    '2026-12-02 03:32:31.728845: F tensorflow/core/platform/cpu_feature_guard.cc:37] The '
    'TensorFlow library was compiled to use AVX instructions',
    '[reverb/cc/platform/tfrecord_checkpointer.cc:300] Failed to write checkpoint: disk full',
    '[reverb/cc/writer.cc:395] Error when stopping the confirmation worker: DATA_LOSS',
    'Traceback (most recent call last):',
    'error: gin file \'x.gin\' does not exist',
])
def test_errors_and_unknown_lines_are_not_noise(line):
  assert not console.is_noise(line)


def _record(path: str, level: int) -> logging.LogRecord:
  return logging.LogRecord('x', level, path, 1, 'message', (), None)


def test_library_records_pass_from_error_up_and_project_records_always():
  keep = console.LibraryRecordFilter().filter
  library = os.path.join(os.path.dirname(logging.__file__), 'site-packages', 'tensorflow',
                         'python', 'saved_model', 'save.py')
  assert not keep(_record(library, logging.INFO))
  assert not keep(_record(library, logging.WARNING))
  assert keep(_record(library, logging.ERROR))
  assert keep(_record(library, logging.CRITICAL))
  project = os.path.join(REPO, 'learner', 'train.py')
  assert keep(_record(project, logging.DEBUG))
  assert keep(_record(project, logging.INFO))
  # The virtual environment inside the checkout is not the project.
  assert not keep(_record(os.path.join(REPO, '.venv', 'lib', 'absl', 'x.py'), logging.INFO))


def test_verbosity_comes_from_the_environment_variable():
  assert not console.verbose_requested({})
  assert not console.verbose_requested({console.VERBOSE_ENV: '0'})
  assert console.verbose_requested({console.VERBOSE_ENV: '1'})


_CRASH = r'''
import os, sys
sys.path.insert(0, {repo!r})
import common
from common import console
console.start(False)
os.write(2, b'2026-12-02 03:32:31.728845: E external/local_xla/xla/stream_executor/cuda/'
            b'cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting to register\n')
os.write(2, b'E tensorflow/core/framework/op_kernel.cc:1839] a real library error\n')
sys.stderr.write('a Python line\n')
sys.stderr.flush()
os.abort()
'''


def test_stderr_filter_drops_noise_and_keeps_errors_of_a_process_that_aborts():
  result = subprocess.run([sys.executable, '-c', _CRASH.format(repo=REPO)], capture_output=True,
                          text=True, timeout=60, env=processes.child_env())
  assert result.returncode < 0  # SIGABRT: the process died before any cleanup.
  assert 'a real library error' in result.stderr
  assert 'a Python line' in result.stderr
  assert 'cuDNN' not in result.stderr


def test_verbose_process_does_not_filter_stderr():
  env = processes.child_env(extra={console.VERBOSE_ENV: '1'})
  result = subprocess.run([sys.executable, '-c', _CRASH.format(repo=REPO)], capture_output=True,
                          text=True, timeout=60, env=env)
  assert 'Unable to register cuDNN factory' in result.stderr
  assert 'a real library error' in result.stderr


def test_reverb_fleet_help_lists_every_subcommand():
  result = subprocess.run([_REVERB_FLEET, '--help'], capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith('  ')]
  assert listed == list(cli.COMMANDS)
  assert all(len(line) < 120 for line in result.stdout.splitlines())


@pytest.mark.parametrize('command,flag', [
    ('run', '--num_actors'), ('server', '--port'), ('actor', '--task'),
    ('learner', '--max_train_steps'), ('eval', '--max_evals'), ('status', '--watch'),
    ('plot', '--run_dir'), ('video', '--num_episodes'), ('cluster', '--address'),
])
def test_each_subcommand_runs_its_module(command, flag):
  result = subprocess.run([_REVERB_FLEET, command, '--help'], capture_output=True, text=True,
                          timeout=120, cwd='/')
  assert result.returncode == 0, result.stdout + result.stderr
  assert flag in result.stdout


def test_unknown_subcommand_is_one_line_and_status_2():
  result = subprocess.run([_REVERB_FLEET, 'trian'], capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert result.stderr.strip().count('\n') == 0
  assert "unknown command 'trian'" in result.stderr and 'run' in result.stderr


def test_role_subcommands_take_the_role_flags():
  for command, role in (('server', 'replay_server'), ('actor', 'actor'),
                        ('learner', 'learner'), ('eval', 'eval')):
    module, argv = cli.argv_for(command, ['--root_dir=/x'])
    assert [sys.executable, '-m', module, *argv[1:]] == [sys.executable, *processes.module_argv(
        role), '--root_dir=/x']


@pytest.mark.slow
def test_default_run_prints_only_project_lines(root_dir):
  """A short run of the README's first command (fewer train steps) through `reverb-fleet run`."""
  log_path = os.path.join(root_dir, 'console.log')
  bindings = [f'--gin_bindings={b}' for b in FAST_BINDINGS]
  run = processes.Process(
      [_REVERB_FLEET, 'run', f'--root_dir={os.path.join(root_dir, "run")}',
       '--max_train_steps=150', '--budget_s=400', *bindings], 'run', log_path=log_path,
      new_session=False)
  code = run.wait(480)
  if code is None:
    run.stop()
  output = run.log_text()
  assert code is not None, output[-3000:]
  assert '[local] done' in output
  assert 'Exported greedy_policy' in output  # The export, the noisiest step, ran.
  assert 'eval: train_step=' in output
  assert foreign_lines(output) == []


@pytest.mark.slow
def test_verbosity_brings_library_lines_back(root_dir, port):
  def serve(name, extra):
    log_path = os.path.join(root_dir, f'{name}.log')
    server = start_role('replay_server', log_path=log_path, gin_files=[CARTPOLE_GIN],
                        root_dir=os.path.join(root_dir, name), port=port, extra=extra)
    wait_until(lambda: 'replay_server ready' in server.log_text(), 120, f'{name} server ready',
               detail=lambda: server.log_text()[-2000:])
    assert server.stop() == 0
    return server.log_text()

  quiet = serve('quiet', [])
  assert 'Started replay server' not in quiet and 'Gym has been unmaintained' not in quiet
  verbose = serve('verbose', ['--verbosity=0'])
  assert 'Started replay server' in verbose  # Reverb's C++ line.
