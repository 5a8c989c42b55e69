"""Writes that survive storage faults: checkpoints, exports and eval records.

A full disk, a read-only mount or an I/O error while a process saves must not end it: what it
holds in memory (the replay items, the learner's weights, an eval's results) is still good,
and the fault is often fixed while it keeps running (space freed, a mount remounted). A
`RetryingSave` wraps one kind of save: a failure is logged in one line, with its reason and
when the next try is, and retried with exponential backoff; `final` is the save on stop, tried
a few times before it gives up with a `StorageError` that names the directory and the fix.
"""

import errno
import os
import shutil
import time
from typing import Callable, Optional

from absl import logging

from common.errors import UnavailableError

# What a save raises on a storage fault: Python's OSError; Reverb's checkpoint raises
# IndexError (RESOURCE_EXHAUSTED) or RuntimeError; TensorFlow raises tf.errors.OpError, which
# this module matches by name so that it needs no TensorFlow import.
_STORAGE_EXCEPTIONS = (OSError, IndexError, RuntimeError)
_TF_ERROR_MODULE = 'tensorflow.python.framework.errors_impl'


class StorageError(UnavailableError):
  """A save failed on every try before its deadline; the message names where and why."""


def is_storage_error(e: BaseException) -> bool:
  """Whether `e` is what a failed write raises (see `_STORAGE_EXCEPTIONS`)."""
  return isinstance(e, _STORAGE_EXCEPTIONS) or type(e).__module__ == _TF_ERROR_MODULE


_KNOWN_REASONS = ('No space left on device', 'Read-only file system', 'Permission denied',
                  'Input/output error', 'Disk quota exceeded', 'File too large')


def is_disk_error(e: BaseException) -> bool:
  """A storage error whose message names a disk fault (`_KNOWN_REASONS`): what a write inside
  a TensorFlow graph (a summary) raises, told apart from the graph's other errors."""
  return is_storage_error(e) and reason(e) in _KNOWN_REASONS


def reason(e: BaseException) -> str:
  """The short reason of a storage error: 'No space left on device', 'Read-only file system'."""
  if isinstance(e, OSError) and e.errno in errno.errorcode and e.strerror:
    return e.strerror
  text = ' '.join(str(getattr(e, 'message', None) or e).split())
  for known in _KNOWN_REASONS:
    if known.lower() in text.lower():
      return known
  return text[:200] or type(e).__name__


def remove(path: str) -> None:
  """Deletes a file or a directory tree, if it can: what a failed write left behind."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)
  except OSError:
    pass  # A read-only directory: the next try will find it and remove it again.


class RetryingSave:
  """One kind of save that logs and retries storage faults instead of raising them.

  Calling it runs `save_fn` unless a failed try's backoff has not passed yet. The first retry
  comes `first_retry_s` after a failure, each later one twice as long after, up to
  `max_retry_s`. Errors that are not storage errors (`is_storage_error`) are raised.

  Attributes:
    failures: Failed tries since the last success.
  """

  def __init__(self, what: str, where: str, save_fn: Callable[[], object],
               first_retry_s: float = 5.0, max_retry_s: float = 300.0,
               clock: Callable[[], float] = time.monotonic):
    """
    Args:
      what: What is saved, for the log ('replay checkpoint', 'learner checkpoint').
      where: The directory written, for the log and the error.
      save_fn: Writes it; raises on a storage fault. Its return value is passed on.
      first_retry_s: Seconds from the first failure to the first retry.
      max_retry_s: Longest wait between tries.
      clock: Monotonic seconds (tests pass a fake).
    """
    self._what, self._where, self._save = what, where, save_fn
    self._first, self._max, self._clock = first_retry_s, max_retry_s, clock
    self.failures = 0
    self._retry_at: Optional[float] = None
    self.last_error: Optional[str] = None

  @property
  def pending(self) -> bool:
    """A try failed and the save has not succeeded since."""
    return self.failures > 0

  def retry_due(self) -> bool:
    """A try failed and its backoff has passed."""
    return self.pending and self._clock() >= self._retry_at

  def __call__(self):
    """Tries the save unless in backoff; returns save_fn's result, or None if it did not save."""
    if self.pending and not self.retry_due():
      return None
    try:
      result = self._save()
    except Exception as e:  # pylint: disable=broad-except
      if not is_storage_error(e):
        raise
      self._failed(e)
      return None
    if self.failures:
      logging.warning('%s written to %s again, after %d failed tr%s', self._what, self._where,
                   self.failures, 'y' if self.failures == 1 else 'ies')
    self.failures, self._retry_at, self.last_error = 0, None, None
    return result

  def _failed(self, e: BaseException) -> None:
    self.failures += 1
    self.last_error = reason(e)
    wait = min(self._max, self._first * 2 ** (self.failures - 1))
    self._retry_at = self._clock() + wait
    logging.warning('%s to %s failed (%s): still running with it in memory; next try in %.0f s '
                    '(free space or fix the directory)', self._what, self._where,
                    self.last_error, wait)

  def final(self, tries: int = 3, wait_s: float = 2.0,
            sleep: Callable[[float], None] = time.sleep):
    """The save on stop: up to `tries` tries, `wait_s` apart, whatever the backoff.

    Returns:
      save_fn's result.

    Raises:
      StorageError: every try failed.
    """
    for i in range(tries):
      if i:
        sleep(wait_s)
      self._retry_at = self._clock()
      result = self()
      if not self.pending:
        return result
    raise StorageError(f'could not write the {self._what} to {self._where} '
                       f'({self.last_error}, {tries} tries): free space or fix the directory, '
                       'then restart; the run resumes from its last complete save')


class IntervalSave:
  """A TF-Agents trigger (`trigger(step, force_trigger=False)`) around a `RetryingSave`.

  Saves every `interval` train steps; after a failed try, retries when its backoff has passed,
  whatever the step. `force_trigger` (the save on stop) is `RetryingSave.final`, which raises
  `StorageError` when every try fails.
  """

  def __init__(self, interval: int, save: RetryingSave, start: int = 0,
               guard: Optional[Callable[[int], None]] = None):
    """
    Args:
      interval: Train steps between saves (0: only when forced).
      save: The save.
      start: The train step of the last save (the resume step).
      guard: Called with the step before each try; raises to stop what would be saved
        (the learner's check for non-finite weights).
    """
    self._interval, self._save, self._last, self._guard = interval, save, start, guard

  def __call__(self, step: int, force_trigger: bool = False) -> None:
    if force_trigger:
      self._check(step)
      self._save.final()
    elif self._save.retry_due() or (self._interval > 0 and not self._save.pending
                                    and step - self._last >= self._interval):
      self._check(step)
      self._save()
    else:
      return
    self._last = step

  def _check(self, step: int) -> None:
    if self._guard is not None:
      self._guard(step)


class SummaryFaults:
  """TensorBoard summaries lost to a storage fault: logged once per fault, never raised.

  A summary writer flushes when its queue fills, from inside the op that writes a summary
  (in a train step's graph, too), and when its `as_default()` block ends. On a full or
  read-only disk each of those raises. `wrap` makes a writer's flush log instead; `handle`
  tells the caller of a summary write whether its error was such a fault (and logs it).
  """

  def __init__(self, role: str, where: str):
    self._role, self._where = role, where
    self._failing = False

  def wrap(self, writer):
    """Makes `writer.flush()` (also called by `as_default()`) log storage faults; returns it."""
    flush = writer.flush

    def _flush():
      try:
        flush()
      except Exception as e:  # pylint: disable=broad-except
        if not self.handle(e):
          raise
        return
      self.written()

    writer.flush = _flush
    return writer

  def handle(self, e: BaseException) -> bool:
    """True, after one log line per fault, if `e` is a disk fault (`is_disk_error`)."""
    if not is_disk_error(e):
      return False
    if not self._failing:
      logging.warning('%s: TensorBoard summaries to %s not written (%s); going on without them '
                      'until the disk is writable', self._role, self._where, reason(e))
      self._failing = True
    return True

  def written(self) -> None:
    """Call after a write that succeeded: ends a fault, in one line."""
    if self._failing:
      logging.warning('%s: TensorBoard summaries to %s written again', self._role, self._where)
      self._failing = False
