"""Storage faults with real processes: the run's directory goes read-only, then fills up.

A replay server, a learner, an actor and eval run CartPole DQN on a small tmpfs of their own.
While it is read-only, and again while it is full, every process keeps running and logs each
failed save with its reason; once it is writable again each save succeeds on its next try. None
of it is reported as a lost replay server. A server whose final checkpoint cannot be written
exits with one line and status 2, its last complete checkpoint untouched.

Needs root (it mounts a tmpfs), as CI has; marked `slow`.
"""

import os
import subprocess
import threading

import portpicker
import pytest

from common import errors
from launcher import processes as processes_lib
from replay_server import checkpoints as checkpoints_lib
from tests.conftest import wait_until
from tests.test_faults import BINDINGS
from tests.test_faults import Run
from tests.test_faults import START_S

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason='mounts a tmpfs, which needs root'),
]

ROLES = ('server', 'learner', 'actor0', 'eval')
# What each role logs when a save fails and when it succeeds again (common/storage.py).
SAVES = {'server': 'replay checkpoint', 'learner': 'learner checkpoint', 'eval': 'eval results'}
# On a full disk an eval row still fits in the last page of its file: only the checkpoints fail.
FULL_DISK_SAVES = {'server': 'replay checkpoint', 'learner': 'learner checkpoint'}
FAULT_S = 120  # From the fault to every role's failed try; from the fix to its next save.


def _mount(path: str, *options: str) -> None:
  subprocess.run(['mount', '-t', 'tmpfs', '-o', ','.join(options), 'tmpfs', path], check=True)


def _read_only(path: str) -> None:
  """Makes `path` read-only, by a read-only bind mount over it (a remount of the whole tmpfs
  would be refused while files on it are open for writing)."""
  subprocess.run(['mount', '--bind', path, path], check=True)
  subprocess.run(['mount', '-o', 'remount,ro,bind', path], check=True)


def _writable(path: str) -> None:
  subprocess.run(['umount', path], check=True)


class _Filler:
  """Keeps the filesystem of `path` full: writes to it whenever space appears (as a process
  filling the disk would), until `stop`, which deletes the file."""

  def __init__(self, path: str):
    self._path, self._stop = path, threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._full = threading.Event()
    self._thread.start()
    assert self._full.wait(30), 'could not fill the disk'

  def _fill(self) -> None:
    block = b'\0' * (1 << 16)
    with open(self._path, 'ab', buffering=0) as f:
      while not self._stop.is_set():
        try:
          f.write(block)
        except OSError:
          self._full.set()
          self._stop.wait(0.05)

  def stop(self) -> None:
    self._stop.set()
    self._thread.join(10)
    os.remove(self._path)


def _count(run: Run, role: str, text: str) -> int:
  return run.log(role).count(text)


@pytest.fixture
def disk(tmp_path):
  path = str(tmp_path / 'disk')
  os.makedirs(path)
  _mount(path, 'size=64m')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', os.path.join(path, 'run')], check=False,
                   stderr=subprocess.DEVNULL)
    subprocess.run(['umount', '-l', path], check=False)


def test_read_only_and_full_disk_are_survived_and_reported(disk, tmp_path):
  run = Run(os.path.join(disk, 'run'), str(tmp_path), portpicker.pick_unused_port(),
            bindings=list(BINDINGS) + ['LearnerConfig.policy_export_interval = 300',
                                       'EvalConfig.interval = 20'])
  try:
    for role in ROLES:
      run.start(role)
    wait_until(lambda: (run.train_step() or 0) >= 100 and 'eval: train_step=' in run.log('eval')
               and 'Exported' in run.log('learner'), START_S,
               'the run to train, export and evaluate')

    filler = None
    for fault, reason, saves in (('read-only', 'Read-only file system', SAVES),
                                 ('full', 'No space left on device', FULL_DISK_SAVES)):
      recovered = {role: _count(run, role, f'{what} written to') for role, what in saves.items()}
      failed = {role: _count(run, role, f'{what} to') for role, what in saves.items()}
      if fault == 'read-only':
        _read_only(run.root_dir)
      else:
        filler = _Filler(os.path.join(disk, 'filler'))
      step = run.train_step()
      wait_until(lambda: all(
          f'({reason}): still running with it in memory' in run.log(role)
          and _count(run, role, f'{what} to') > failed[role] for role, what in saves.items()),
                 FAULT_S, f'every role to log its failed save on the {fault} disk',
                 detail=lambda: {r: run.log(r)[-600:] for r in saves})
      wait_until(lambda: run.train_step() >= step + 100, FAULT_S,
                 f'the learner to train on while the disk is {fault}')
      assert run.alive(*ROLES), f'a process ended on the {fault} disk'
      if fault == 'read-only':
        _writable(run.root_dir)
      else:
        filler.stop()
      wait_until(lambda: all(_count(run, role, f'{what} written to') > recovered[role]
                             for role, what in saves.items()), FAULT_S,
                 f'every role to save again once the disk is no longer {fault}',
                 detail=lambda: {r: run.log(r)[-600:] for r in saves})
    for role in ROLES:
      for wrong in ('lost the replay server', 'not answering', 'Traceback'):
        assert wrong not in run.log(role), f'{role} logged {wrong!r}'

    # The final replay checkpoint cannot be written: one line, status 2, the last one kept.
    clients = {role: run.processes[role] for role in ROLES if role != 'server'}
    assert set(processes_lib.stop_all(clients.values(), grace_s=60).values()) == {0}
    checkpoint_dir = os.path.join(run.root_dir, 'replay_server', 'checkpoints')
    kept = checkpoints_lib.complete_checkpoints(checkpoint_dir)
    assert kept
    filler = _Filler(os.path.join(disk, 'filler'))
    server = run.processes['server']
    server.terminate()
    # The storage stayed away: the error contract's "unavailable" (restarted, resuming from the
    # last complete save).
    assert server.wait(timeout_s=90) == errors.EXIT_UNAVAILABLE
    lines = [l for l in run.log('server').splitlines() if l.startswith('error: ')]
    assert lines == [
        f'error: could not write the replay checkpoint to {checkpoint_dir} (No space left on '
        'device, 3 tries): free space or fix the directory, then restart; the run resumes from '
        'its last complete save']
    assert checkpoints_lib.complete_checkpoints(checkpoint_dir)[-1] == kept[-1]
    filler.stop()
  finally:
    run.stop_all()
