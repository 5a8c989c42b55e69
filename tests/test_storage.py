"""`common.storage`: a failed save is logged and retried with backoff, never raised mid-run;
the save on stop gives up with one line (pure logic, a fake clock and real OSErrors)."""

import errno

import pytest

from common import storage


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class _FlakySave:
  """Fails with `error` while `broken`; counts tries."""

  def __init__(self, error=None):
    self.error = error or OSError(errno.ENOSPC, 'No space left on device')
    self.broken = True
    self.tries = 0

  def __call__(self):
    self.tries += 1
    if self.broken:
      raise self.error
    return 'saved'


def test_failures_back_off_exponentially_and_recover(caplog):
  clock, save = _Clock(), _FlakySave()
  retrying = storage.RetryingSave('replay checkpoint', '/run/ckpt', save, first_retry_s=5,
                                  max_retry_s=30, clock=clock)
  with caplog.at_level('INFO'):
    assert retrying() is None
    assert retrying.pending and not retrying.retry_due()
    waits = []
    for _ in range(5):
      start = clock.now
      while not retrying.retry_due():
        clock.now += 1
      waits.append(clock.now - start)
      assert retrying() is None
    assert waits == [5, 10, 20, 30, 30]
    assert retrying() is None and save.tries == 6  # In backoff: not tried.
    save.broken = False
    clock.now += 30
    assert retrying() == 'saved'
  assert not retrying.pending
  warnings = [r.getMessage() for r in caplog.records if 'failed (' in r.getMessage()]
  assert len(warnings) == 6
  assert warnings[0] == ('replay checkpoint to /run/ckpt failed (No space left on device): still '
                         'running with it in memory; next try in 5 s (free space or fix the '
                         'directory)')
  assert 'replay checkpoint written to /run/ckpt again, after 6 failed tries' in caplog.text


@pytest.mark.parametrize('error, reason', [
    (OSError(errno.EROFS, 'Read-only file system'), 'Read-only file system'),
    (IndexError('/run/x/chunks.tfrecord; No space left on device'), 'No space left on device'),
    (RuntimeError('write failed: Input/output error'), 'Input/output error'),
])
def test_storage_errors_are_named_by_their_reason(error, reason):
  assert storage.is_storage_error(error)
  assert storage.reason(error) == reason


def test_other_errors_are_raised_not_retried():
  retrying = storage.RetryingSave('x', '/d', _FlakySave(KeyError('bug')), clock=_Clock())
  with pytest.raises(KeyError):
    retrying()


def test_final_tries_then_raises_one_line():
  save, slept = _FlakySave(), []
  retrying = storage.RetryingSave('learner checkpoint', '/run/learner', save, clock=_Clock())
  with pytest.raises(storage.StorageError) as e:
    retrying.final(tries=3, wait_s=2, sleep=slept.append)
  assert save.tries == 3 and slept == [2, 2]
  assert str(e.value) == (
      'could not write the learner checkpoint to /run/learner (No space left on device, '
      '3 tries): free space or fix the directory, then restart; the run resumes from its last '
      'complete save')
  save.broken = False
  assert retrying.final(sleep=slept.append) == 'saved'


def test_interval_save_retries_between_intervals_and_guards():
  clock, save = _Clock(), _FlakySave()
  checked = []
  trigger = storage.IntervalSave(100, storage.RetryingSave('x', '/d', save, first_retry_s=5,
                                                           clock=clock),
                                 start=0, guard=checked.append)
  trigger(50)
  assert save.tries == 0
  trigger(100)
  assert save.tries == 1 and checked == [100]
  trigger(120)  # Failed, in backoff.
  assert save.tries == 1
  clock.now = 5
  save.broken = False
  trigger(130)  # The retry, before the next interval.
  assert save.tries == 2 and checked == [100, 130]
  trigger(200)
  assert save.tries == 2  # The interval counts from the last save.
  trigger(230)
  assert save.tries == 3
  trigger(231, force_trigger=True)
  assert save.tries == 4


def test_interval_zero_saves_only_when_forced():
  save = _FlakySave()
  save.broken = False
  trigger = storage.IntervalSave(0, storage.RetryingSave('x', '/d', save, clock=_Clock()))
  for step in range(5):
    trigger(step)
  assert save.tries == 0
  trigger(5, force_trigger=True)
  assert save.tries == 1
