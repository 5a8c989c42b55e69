"""What every `main.py` shares: the common flags, clean stops and one-line errors."""

import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from absl import flags
from absl import logging

from common import constants
from common import errors
from common.errors import StopRequested


def define_common_flags(server_address: bool = True) -> None:
  """Defines --gin_file, --gin_bindings, --root_dir (and the replay-server flags)."""
  flags.DEFINE_multi_string('gin_file', None, 'Gin files with the experiment (see gin/).')
  flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, applied after the files.')
  flags.DEFINE_string('root_dir', None, 'Run directory; each role writes under its own '
                      'sub-directory.')
  flags.mark_flag_as_required('root_dir')
  if server_address:
    flags.DEFINE_string('replay_server_address', f'localhost:{constants.DEFAULT_PORT}',
                        'host:port of the replay server.')
    flags.DEFINE_float('server_timeout_s', 300.0,
                       'Seconds to wait for the replay server, at start and after it goes '
                       'away, before exiting with an error (0: wait for ever).', lower_bound=0.0)
    flags.DEFINE_string('weights_key_file', None,
                        'The run\'s weights key (default: <root_dir>/weights.key), which signs '
                        'the learner\'s weight pushes; the learner makes it when missing, '
                        'actors and eval on another disk need a copy. '
                        '$REVERB_FLEET_WEIGHTS_KEY, when set, is the key instead.')


def parse_flags(argv):
  """absl's flag parser (`app.run(main, flags_parser=main_utils.parse_flags)`), with a bad or
  unknown flag as one line and exit status 2, like every other bad input."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}: fix the flag (--helpfull lists them)', file=sys.stderr, flush=True)
    sys.exit(2)


def preflight(port: int = 0) -> None:
  """The checks that need no TensorFlow, run before the heavy imports; writes nothing.

  Resolves --gin_file (`gin_config.resolve_gin_files`), checks the gin files' syntax, that
  --root_dir can be written, that `port` is free (the replay server), and the form of
  --replay_server_address and the weights key, where there is one (the others).

  Raises:
    UserError: naming the problem and the fix.
  """
  # pylint: disable=g-import-not-at-top
  from common import files
  from common import gin_config
  from common import preflight as checks
  values = flags.FLAGS
  if values.gin_file:
    values.gin_file = gin_config.resolve_gin_files(values.gin_file)
  checks.check_gin_syntax(values.gin_file or (), values.gin_bindings)
  files.check_writable_dir(values.root_dir)
  if port:
    checks.check_port_free(port)
  if 'replay_server_address' in values:
    checks.check_address(values.replay_server_address)
  if 'weights_key_file' in values:
    from common import weights_key
    weights_key.check(values.weights_key_file or weights_key.default_path(values.root_dir))


def load_and_check_config(gate: bool = True):
  """Parses the gin config (after the heavy imports registered every configurable), stops
  TensorFlow's per-tensor leak (`eager_tensors.install`), and checks its numbers and its
  environment (made, reset and stepped once: `check_environment`), before
  anything is written; then, with `gate`, waits at the launcher's start gate
  (`wait_for_start_gate`; a main with checks of its own calls that itself).

  Returns:
    The validated `config.Configs`, which the main passes down to its role.

  Raises:
    UserError: naming the problem and the fix.
  """
  # pylint: disable=g-import-not-at-top
  from common import config
  from common import eager_tensors
  from common import environments
  from common import gin_config
  values = flags.FLAGS
  gin_config.load_gin(values.gin_file, values.gin_bindings)
  eager_tensors.install()  # TensorFlow is loaded now; a long-lived role must not leak.
  configs = config.validated_configs()
  environments.check_environment()
  if gate:
    wait_for_start_gate(configs)
  return configs


# The local launcher starts its children at once and names a directory here: each child reports
# there that its checks passed, then waits for the launcher's go before it writes anything
# (`wait_for_start_gate`).
START_GATE_ENV = 'REVERB_FLEET_START_GATE'
GATE_OPEN = 'open'  # The launcher's go: a file in the gate directory.
GATE_CHECKED = 'checked.'  # A child's report: 'checked.<pid>', its target return as JSON.


def wait_for_start_gate(configs, report: Optional[dict] = None, timeout_s: float = 600.0,
                        poll_s: float = 0.02) -> None:
  """Under a launcher's start gate ($REVERB_FLEET_START_GATE, a directory), reports this
  process's checks passed and waits for the launcher's go; without one, returns at once.

  The report is JSON: the task's target return, and `report`'s entries (what only this role
  knows, for the launcher's status line).

  The local launcher imports no TensorFlow: its children check the config while they start,
  and it claims the run directory and opens the gate once every child has reported, or kills
  them all at the first one that refused the config, before anything was written. A stop
  signal, or the launcher's end, ends the wait.

  Raises:
    StopRequested: SIGTERM or SIGINT came (they are blocked until `stop_event_on_signals`), or
      the launcher is gone.
    UserError: the launcher did not open the gate within `timeout_s`.
  """
  from common import files  # pylint: disable=g-import-not-at-top
  gate_dir = os.environ.get(START_GATE_ENV)
  if not gate_dir:
    return
  files.atomic_write(os.path.join(gate_dir, f'{GATE_CHECKED}{os.getpid()}'),
                     json.dumps(dict(report or {}, target_return=configs.eval.target_return)))
  parent = os.environ.get(_PARENT_PID_ENV)
  deadline = time.monotonic() + timeout_s
  while not os.path.exists(os.path.join(gate_dir, GATE_OPEN)):
    if signal.sigpending() & _STOP_SIGNALS:
      raise StopRequested('stopped before the launcher started the run')
    if parent and str(os.getppid()) != parent:
      raise StopRequested(f'the launcher (pid {parent}) is gone: stopping')
    if time.monotonic() >= deadline:
      raise errors.UserError(
          f'the launcher did not start the run within {timeout_s:g} s (nothing in {gate_dir}): '
          f'unset {START_GATE_ENV} when starting a process by hand')
    time.sleep(poll_s)


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


_PARENT_PID_ENV = 'REVERB_FLEET_PARENT_PID'  # Set by launcher.processes (die_with_parent).
_PR_SET_PDEATHSIG = 1


def start_process(uses_gpu: bool = False) -> None:
  """What every role's main does first, before TensorFlow or Reverb start threads.

  Applies --verbosity to the console (`console.start`: quiet by default, stderr through the
  noise filter), then blocks the stop signals (`block_stop_signals`). A role that does not
  compute on a GPU (`uses_gpu` False: the replay server, the actors, eval) hides every GPU from
  itself however it was started: TensorFlow takes most of a GPU's memory in each process that
  touches it, and the learner is the one that needs it.
  """
  from common import console  # pylint: disable=g-import-not-at-top
  if not uses_gpu:
    hide_gpus()
  console.start(flags.FLAGS['verbosity'].present)
  block_stop_signals()


def hide_gpus() -> None:
  """Hides every GPU from this process: `CUDA_VISIBLE_DEVICES=''` before TensorFlow loads, or
  TensorFlow's own device list where it already has (the GPUs it found stay unused)."""
  if 'tensorflow' in sys.modules:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  else:
    os.environ['CUDA_VISIBLE_DEVICES'] = ''


def block_stop_signals() -> None:
  """Blocks SIGTERM and SIGINT in this thread and every thread started after it.

  Call first in `main()`, before TensorFlow or Reverb start threads. `stop_event_on_signals`
  then receives them on a thread of its own: a Python signal handler runs only when the main
  thread returns to the interpreter, which it never does while blocked inside a Reverb call
  on a dead server, so a stop request would go unseen.

  A process started with $REVERB_FLEET_PARENT_PID (a launcher's child) also asks the kernel for
  SIGTERM when that parent dies, by any signal, so that no child outlives its launcher.
  """
  signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
  stop_with_parent()


def stop_with_parent() -> None:
  """SIGTERM to this process when the parent named by $REVERB_FLEET_PARENT_PID dies.

  Linux only (prctl PR_SET_PDEATHSIG); elsewhere, and without the variable, nothing happens.
  If the parent is already gone (it died before this call), the signal is sent at once.
  """
  import os  # pylint: disable=g-import-not-at-top
  parent = os.environ.get(_PARENT_PID_ENV)
  if not parent or not sys.platform.startswith('linux'):
    return
  import ctypes  # pylint: disable=g-import-not-at-top
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
  except (OSError, AttributeError) as e:
    logging.warning('cannot ask to stop with the parent process %s: %s', parent, e)
    return
  if str(os.getppid()) != parent:
    logging.warning('the launcher (pid %s) is gone: stopping', parent)
    os.kill(os.getpid(), signal.SIGTERM)


def stop_event_on_signals() -> threading.Event:
  """An event set by SIGTERM or SIGINT, so loops stop, checkpoint and exit on their own."""
  event = threading.Event()

  def _handler(signum, _):
    if not event.is_set():  # A launcher's stop repeats SIGTERM while it waits: say it once.
      logging.info('Received %s: stopping after the current step',
                   signal.Signals(signum).name)
    event.set()

  if _STOP_SIGNALS <= signal.pthread_sigmask(signal.SIG_BLOCK, []):
    def _wait():
      while True:
        _handler(signal.sigwait(_STOP_SIGNALS), None)

    threading.Thread(target=_wait, name='stop signals', daemon=True).start()
  else:
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
  return event


def exit_now(status: int = 0) -> None:
  """Flushes the logs and standard streams, then ends the process without tearing it down.

  For a role whose work is done and saved: freeing some TensorFlow and Reverb objects at
  interpreter exit joins threads that may never end (see `learner.train.RETIRED_ITERATORS`).
  """
  logging.flush()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(status)  # pylint: disable=protected-access


def exit_on_error(fn: Callable[[], None]) -> None:
  """Runs `fn`; an `errors.FleetError` becomes one line on stderr and its exit status
  (the contract in `errors`: 2 bad input, 3 unavailable, 4 diverged).

  A stop requested while waiting for the replay server (`StopRequested`) is not an error: its
  line goes to stderr, and the exit status is 0.
  """
  try:
    fn()
  except StopRequested as e:
    logging.flush()
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(0)
  except errors.FleetError as e:
    logging.flush()
    print(f'error: {errors.one_line(e)}', file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
