"""What a process prints: the project's own lines, and library lines only when they matter.

Quiet by default. Every process that imports `common` (each role, the launchers, the tools)
gets, from `configure()`:
- TensorFlow's C++ log level 2 (errors only), unless $TF_CPP_MIN_LOG_LEVEL is set;
- no gym "unmaintained" banner and no pygame greeting;
- Python log records (absl, TensorFlow, TF-Agents, ...) from library files only at ERROR and
  above; the project's own records at every level;
- Python warnings only from the project's files.

Each main calls `start()` before TensorFlow loads; in a quiet process that calls
`filter_stderr()`: the process's stderr (fd 2, where C++ code writes too) then goes through a
small forwarding process that drops the lines in `NOISE` (library chatter known to need nothing
from the user, such as Reverb's "Started replay server" and TensorFlow's cuDNN-registration
messages) and passes every other line at once. The forwarder outlives a crash of the process it
serves, so a fatal message is never lost with it. That is why it is a process and not one of the
libraries that capture C-level output (wurlitzer, or a thread draining a pipe): those read the
pipe from a thread of the same process, and an abort (a C++ CHECK failure, a heap corruption)
ends that thread with the lines it has not yet written.
`tests/test_console.py::test_stderr_filter_drops_noise_and_keeps_errors_of_a_process_that_aborts`
checks that an aborting process's last line still reaches the console.

Nothing that is not known to be noise is dropped: library errors, tracebacks and every line of
unknown form still reach the console.

`--verbosity` (absl's flag, at any level, also spelled `-v`) on a main's command line, or
$REVERB_FLEET_VERBOSE=1, turns all of this off; the main sets $REVERB_FLEET_VERBOSE, so a
launcher's children are verbose too. Tools that load TensorFlow before their flags are parsed
(plots, videos) keep TensorFlow's C++ level at 2 even then.

This module imports only the standard library: the forwarder runs it as a script.
"""

import logging
import os
import re
import subprocess
import sys
import warnings
from typing import Optional

VERBOSE_ENV = 'REVERB_FLEET_VERBOSE'
_FILTERED_ENV = 'REVERB_FLEET_STDERR_FILTERED'  # Set in a process whose fd 2 is filtered.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_PACKAGES = ('actor', 'learner', 'replay_server', 'common', 'launcher', 'results',
                    'bench', 'tests')
_PROJECT_DIRS = tuple(os.path.join(REPO, p) + os.sep for p in PROJECT_PACKAGES)

# Lines that libraries write straight to stderr and that never need the user. Each pattern is
# one known message; anything else passes.
NOISE = tuple(re.compile(p) for p in (
    # TensorFlow 2.15 registers its CUDA plugins twice at import, on every machine.
    r'E external/local_xla/xla/stream_executor/cuda/cuda_(dnn|fft|blas)\.cc:\d+\] Unable to '
    r'register cu(DNN|FFT|BLAS) factory',
    # Reverb's C++ INFO lines; the server logs its own ready, checkpoint and stop lines.
    r'^\[reverb/cc/platform/tfrecord_checkpointer\.cc:\d+\]\s+(Initializing TFRecordCheckpointer'
    r'|Loading latest checkpoint|Loading checkpoint|Saving fallback checkpoint|No checkpoint)',
    r'^\[reverb/cc/platform/default/server\.cc:\d+\] (Started|Shutting down) replay server',
    r'^\[reverb/cc/reverb_service_impl\.cc:\d+\] Stored checkpoint to ',
    # A writer heuristic: items wait for their last step; the actor flushes at episode ends.
    r'^\[reverb/cc/trajectory_writer\.cc:\d+\] The number of pending items is alarmingly high',
))


def verbose_requested(environ: Optional[dict] = None) -> bool:
  """Whether `environ` (the process's environment by default) sets VERBOSE_ENV."""
  environ = os.environ if environ is None else environ
  return environ.get(VERBOSE_ENV, '') not in ('', '0')


def is_project_file(path: str) -> bool:
  """Whether `path` is one of the project's own source files (not a library's)."""
  return os.path.abspath(path).startswith(_PROJECT_DIRS)


def is_noise(line: str) -> bool:
  """Whether one line of stderr output is known library chatter (see NOISE)."""
  return any(pattern.search(line) for pattern in NOISE)


class LibraryRecordFilter(logging.Filter):
  """Passes the project's log records, and library records at ERROR and above."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or is_project_file(record.pathname)


_RECORD_FILTER = LibraryRecordFilter()
_quiet = {}  # What configure() changed, so that start(verbose=True) can undo it.


def _handlers():
  out = list(logging.getLogger().handlers)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    out.append(absl_logging.get_absl_handler())
  except ImportError:
    pass
  return out


def configure() -> None:
  """Sets the process up quiet (see the module docstring), unless VERBOSE_ENV is set.

  Runs when `common` is imported, before any flag is parsed; `start()` then applies the
  process's own --verbosity. Safe to call more than once.
  """
  if verbose_requested() or _quiet:
    return
  if 'TF_CPP_MIN_LOG_LEVEL' not in os.environ:
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    _quiet['tf_cpp_level'] = True
  os.environ.setdefault('PYGAME_HIDE_SUPPORT_PROMPT', '1')
  try:  # gym 0.23 prints the banner that gym-notices holds for its version at import.
    import gym_notices.notices  # pylint: disable=g-import-not-at-top
    _quiet['gym_notices'] = dict(gym_notices.notices.notices)
    gym_notices.notices.notices.clear()
  except ImportError:
    pass
  for handler in _handlers():
    handler.addFilter(_RECORD_FILTER)
  show_warning = _quiet['show_warning'] = warnings.showwarning

  def _project_warnings_only(message, category, filename, lineno, file=None, line=None):
    if is_project_file(filename):
      show_warning(message, category, filename, lineno, file, line)

  warnings.showwarning = _project_warnings_only


def start(verbose: bool) -> bool:
  """Applies a main's verbosity: call first in `main()`, before TensorFlow is imported.

  Args:
    verbose: Whether the command line passed absl's --verbosity (`FLAGS['verbosity'].present`).

  Verbose (the flag, or VERBOSE_ENV): undoes `configure()` and sets VERBOSE_ENV for the
  process's children. Quiet: `filter_stderr()`. Returns whether the process is verbose.
  """
  if not (verbose or verbose_requested()):
    filter_stderr()
    return False
  os.environ[VERBOSE_ENV] = '1'
  if _quiet.pop('tf_cpp_level', False):
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '0'
  notices = _quiet.pop('gym_notices', None)
  if notices is not None:
    import gym_notices.notices  # pylint: disable=g-import-not-at-top
    gym_notices.notices.notices.update(notices)
  for handler in _handlers():
    handler.removeFilter(_RECORD_FILTER)
  if 'show_warning' in _quiet:
    warnings.showwarning = _quiet.pop('show_warning')
  return True


def filter_stderr() -> bool:
  """Routes this process's fd 2 through a forwarder that drops the NOISE lines.

  Call at the start of a main, before TensorFlow or Reverb is imported (their C++ code keeps
  writing to fd 2); `start()` calls it in a quiet process. Does nothing when already filtered,
  or off Linux. Returns whether a forwarder was started.
  """
  if os.environ.get(_FILTERED_ENV) == str(os.getpid()):
    return False
  if not sys.platform.startswith('linux'):
    return False
  try:
    sys.stderr.flush()
    original = os.dup(2)
    try:
      forwarder = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, '-S', os.path.abspath(__file__)], stdin=subprocess.PIPE,
          stdout=original, stderr=subprocess.DEVNULL, close_fds=True)
    finally:
      os.close(original)
  except OSError:
    return False
  os.dup2(forwarder.stdin.fileno(), 2)
  forwarder.stdin.close()
  os.environ[_FILTERED_ENV] = str(os.getpid())
  return True


def _forward() -> None:
  """The forwarder: copies stdin to stdout line by line, without NOISE, until end of input.

  It ignores SIGINT and SIGTERM, so that a Ctrl-C to the terminal's process group does not end
  it before the process it serves has written its last lines; it ends when they all closed it.
  """
  import signal  # pylint: disable=g-import-not-at-top
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  out = sys.stdout.buffer
  for raw in sys.stdin.buffer:
    if is_noise(raw.decode('utf-8', 'replace')):
      continue
    try:
      out.write(raw)
      out.flush()
    except (BrokenPipeError, OSError):
      return


if __name__ == '__main__':
  _forward()
