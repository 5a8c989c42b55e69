"""One owner per run directory: a lock each process holds on its own sub-directory.

Two learners on one `--root_dir` would write one checkpoint directory, two replay servers one
replay checkpoint, two evals one CSV. Each role takes an exclusive `flock` on a `LOCK` file in
the directory it writes (`own`), after its checks and before its first write, and holds it
for the rest of its life; the kernel releases it however the process ends, kill -9 included,
so a crashed owner never blocks its restart. The file holds the owner's pid and host, for the
error of a second one. The local launcher holds one on the run directory.
"""

import fcntl
import os
import socket

from common.errors import UserError

LOCK_FILE = 'LOCK'
_held = {}  # Directory -> its open lock file; closing one (or exiting) releases its lock.


class DirectoryOwnedError(UserError):
  """Another live process owns the directory."""


def own(directory: str, role: str) -> None:
  """Takes the lock on `directory` (created if need be) for the rest of this process.

  A process that holds it already keeps it (a role run twice in one process, as tests do).

  Raises:
    DirectoryOwnedError: another process holds it; names that process and the fix.
  """
  directory = os.path.abspath(directory)
  if directory in _held:
    return
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
    os.close(fd)
    raise DirectoryOwnedError(
        f'{directory} is in use by another {role} ({holder}): stop that one, or pass another '
        '--root_dir') from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
  _held[directory] = fd

