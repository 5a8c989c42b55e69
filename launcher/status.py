"""What every launcher shows and decides: the live status line and when a run is over.

Light on purpose: nothing here imports TensorFlow at module level, so the Ray launcher's
per-role actors can import it without loading TensorFlow into every Ray worker.
"""

import re
import shutil
import threading
import time
from typing import Callable, Optional, TextIO, Tuple

from common import constants
from common import reverb_rpc

_STEP_PATTERNS = (re.compile(r'train_step=(\d+)'), re.compile(r'Step: (\d+),'))


def outcome(target: Optional[float], last_eval: Optional[dict], elapsed_s: float,
            budget_s: float, max_train_steps: int, learner_finished: bool,
            failure: Optional[str]) -> Optional[Tuple[int, str]]:
  """Whether a run is over, as (exit status, reason), or None while it goes on.

  The rules every launcher applies: a failed process ends the run with 1; reaching the target
  return ends it with 0; the time budget, or the learner finishing its train steps, ends it with
  0 when the task has no target and 1 when it has one (the target was missed).
  """
  if failure:
    return 1, failure
  if target is not None and last_eval and last_eval['average_return'] >= target:
    return 0, (f'eval return {last_eval["average_return"]:.1f} >= target {target:g} at train '
               f'step {int(last_eval["train_step"])}, {int(last_eval["env_steps"])} env steps, '
               f'{elapsed_s:.0f} s')
  if budget_s and elapsed_s >= budget_s:
    return (1 if target is not None else 0), f'time budget of {budget_s:g} s used up'
  if learner_finished:
    return (1 if target is not None else 0), f'learner finished its {max_train_steps} train steps'
  return None


class StatusLine:
  """Progress of a local run: one live line on a terminal, plain `[status]` lines otherwise.

  The line shows the train step (from the learner's log lines), env steps/s (replay inserts per
  second over the last `window_s`), the replay size, the last eval return and the train step it
  was measured at, the elapsed time (against the budget, when there is one), the time left in
  the budget (`budget_left`), and, only where one can be made, an estimate: with
  `max_train_steps`, the time to reach it at the train-step rate measured since this run first
  logged a step (`eta_max_train_steps`, also `~` before the first rate).

  On a terminal (`out.isatty()`) `refresh()` redraws the line in place. A child's output line
  clears it, is printed, and the line is drawn again below it, so the live line stays last. It
  is cut to the terminal's width, because a wrapped line cannot be redrawn in place. Elsewhere
  (a pipe, a log file, CI) `refresh()` prints `[status] <line>` every `plain_interval_s`.
  `close()` prints the final state as a permanent line in both modes.
  """

  def __init__(self, out: TextIO, address: str, eval_csv: str, budget_s: float,
               max_train_steps: int, plain_interval_s: float = 30.0, window_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic, width: Optional[int] = None,
               sampler: Optional[Callable[[], Tuple]] = None, started_s_ago: float = 0.0):
    """Args: `clock` (seconds) and `width` (columns; None asks the terminal) are for tests.

    `sampler`, when given, replaces the local reads of the server and the eval CSV: it returns
    (replay size or None, items inserted or None, newest eval row or None), as the Ray launcher
    gets them from inside the cluster. `started_s_ago` is how long the run has been going when
    the line starts (a launch command attaching to a running fleet). The local reads count
    `env_steps_per_item` env steps per replay insert (`replay.env_steps_per_item`; the local
    launcher sets it from the replay server's start-up report).
    """
    self._sampler = sampler
    self._out = out
    isatty = getattr(out, 'isatty', None)
    self._tty = bool(isatty and isatty())
    self._address = address
    self._eval_csv = eval_csv
    self._budget_s = budget_s
    self._max_train_steps = max_train_steps
    self._plain_interval_s = plain_interval_s
    self._window_s = window_s
    self._clock = clock
    self._width = width
    self._start = clock() - started_s_ago
    self._last_plain = self._start
    self._lock = threading.Lock()
    self._live = ''  # The live line now on the terminal ('' when none is drawn).
    self._closed = False
    self._first_step = None  # (time, train step) when a train step was first seen.
    self._inserts = []  # (time, items inserted) samples within the rate window.
    self._size = None  # Replay table size at the last sample (None: server not answering).
    self.train_step = 0
    self.last_eval = None
    self.env_steps_per_item = 1

  @property
  def is_tty(self) -> bool:
    return self._tty

  def observe_line(self, role: str, line: str) -> None:
    """Takes the train step from a learner log line."""
    if role != 'learner':
      return
    for pattern in _STEP_PATTERNS:
      match = pattern.search(line)
      if match:
        step = int(match.group(1))
        with self._lock:
          if self._first_step is None:
            self._first_step = (self._clock(), step)
          self.train_step = max(self.train_step, step)

  def print_child_line(self, text: str) -> None:
    """Prints one line of output, keeping the live status line (if any) below it."""
    with self._lock:
      if self._live:
        self._out.write('\r\x1b[K')
      self._out.write(text + '\n')
      if self._live:
        self._out.write(self._live)
      self._out.flush()

  def sample(self) -> None:
    """Reads the replay table's size and insert count and the newest eval row."""
    if self._sampler is not None:
      size, inserted, last_eval = self._sampler()
    else:
      from common import eval_log  # pylint: disable=g-import-not-at-top
      try:  # Over plain gRPC: TensorFlow would take a core from the run for seconds.
        table = reverb_rpc.server_info(self._address, timeout_s=1).get(constants.REPLAY_TABLE)
      except reverb_rpc.RpcError:
        table = None
      size = table.current_size if table is not None else None
      inserted = (table.rate_limiter.inserts * self.env_steps_per_item
                  if table is not None else None)
      rows = eval_log.read_csv(self._eval_csv)
      last_eval = rows[-1] if rows else None
    now = self._clock()
    with self._lock:
      self._size = size
      if inserted is not None:
        self._inserts.append((now, inserted))
      self._inserts = [p for p in self._inserts if now - p[0] <= self._window_s]
    if last_eval:
      self.last_eval = last_eval

  def env_steps_per_s(self) -> Optional[float]:
    """Replay inserts per second over the window; None until two samples span time."""
    if len(self._inserts) < 2 or self._inserts[-1][0] <= self._inserts[0][0]:
      return None
    (t0, n0), (t1, n1) = self._inserts[0], self._inserts[-1]
    return max(n1 - n0, 0) / (t1 - t0)

  def budget_left_s(self) -> Optional[float]:
    """Seconds left in the wall-clock budget; None without one."""
    if not self._budget_s:
      return None
    return max(self._budget_s - (self._clock() - self._start), 0.0)

  def eta_s(self) -> Optional[float]:
    """Estimated seconds until the learner reaches `max_train_steps`; None if it cannot be said.

    The rate is measured since this run first logged a train step, so a resumed run is not
    flattered by the steps of its earlier life. None without `max_train_steps` or before two
    distinct steps were seen.
    """
    if not self._max_train_steps or self._first_step is None:
      return None
    if self.train_step >= self._max_train_steps:
      return 0.0
    now = self._clock()
    t0, step0 = self._first_step
    if self.train_step <= step0 or now <= t0:
      return None
    rate = (self.train_step - step0) / (now - t0)
    return (self._max_train_steps - self.train_step) / rate

  def text(self) -> str:
    """The status line, from the last `sample()`."""
    elapsed = self._clock() - self._start
    rate = self.env_steps_per_s()
    size = self._size
    last = self.last_eval
    eval_text = (f'{last["average_return"]:.1f}@{int(last["train_step"])}' if last else '-')
    parts = [f'train_step={self.train_step}',
             f'env_steps/s={rate:.0f}' if rate is not None else 'env_steps/s=?',
             f'replay_size={size if size is not None else "?"}',
             f'eval_return={eval_text}',
             f'elapsed={_duration(elapsed)}'
             + (f'/{_duration(self._budget_s)}' if self._budget_s else '')]
    left = self.budget_left_s()
    if left is not None:
      parts.append(f'budget_left={_duration(left)}')
    if self._max_train_steps:
      eta = self.eta_s()
      parts.append(f'eta_max_train_steps={_duration(eta) if eta is not None else "~"}')
    return ' '.join(parts)

  def refresh(self) -> None:
    """Samples and shows the line (on a terminal: always; otherwise: when a line is due)."""
    if self._closed:
      return
    self.sample()
    text = self.text()
    with self._lock:
      if self._tty:
        width = self._width or shutil.get_terminal_size((120, 24)).columns
        self._live = text[:max(width - 1, 1)]
        self._out.write('\r\x1b[K' + self._live)
        self._out.flush()
      elif self._clock() - self._last_plain >= self._plain_interval_s:
        self._out.write(f'[status] {text}\n')
        self._out.flush()
        self._last_plain = self._clock()

  def close(self) -> None:
    """Prints the final state as a permanent `[status]` line and stops the live line."""
    if self._closed:
      return
    self.sample()
    text = self.text()
    with self._lock:
      if self._live:
        self._out.write('\r\x1b[K')
      self._live = ''
      self._closed = True
      self._out.write(f'[status] {text}\n')
      self._out.flush()


def _duration(seconds: float) -> str:
  """4m05s, or 1h02m03s from an hour on."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m{seconds:02d}s'
  return f'{minutes}m{seconds:02d}s'


