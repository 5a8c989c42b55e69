"""Files written whole, and the writable-directory check: the project's one atomic writer."""

import os
import tempfile
from typing import Callable

from common.errors import UserError


def write_atomically(path: str, write: Callable[[str], None]) -> str:
  """Calls `write(tmp_path)` and renames the result to `path`; on failure nothing is left.

  The temporary file lies beside `path` (so the rename is atomic), keeps `path`'s extension
  (writers pick the format from it), and the file gets the usual permissions (0666 less the
  umask), not mkstemp's 0600.

  Returns:
    `path`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                             suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return path


def atomic_write(path: str, text: str) -> str:
  """Writes `text` to `path` whole (`write_atomically`); returns `path`."""

  def write(tmp: str) -> None:
    with open(tmp, 'w') as f:
      f.write(text)

  return write_atomically(path, write)


def check_writable_dir(path: str, flag: str = '--root_dir') -> None:
  """Checks that `path` is, or can be created as, a writable directory; writes nothing.

  If `path` exists, a temporary probe file is created and removed in it. If it does not, the
  nearest existing ancestor must be a writable directory.

  Raises:
    UserError: naming the path (given as `flag`) and the reason.
  """
  path = os.path.abspath(path)
  probe_dir = path
  while not os.path.exists(probe_dir):
    parent = os.path.dirname(probe_dir)
    if parent == probe_dir:
      break
    probe_dir = parent
  if not os.path.isdir(probe_dir):
    raise UserError(f'cannot create {flag} {path!r}: {probe_dir!r} is not a directory; pass '
                    f'a writable {flag}')
  try:
    with tempfile.NamedTemporaryFile(dir=probe_dir, prefix='.write_probe'):
      pass
  except OSError as e:
    raise UserError(f'cannot write to {flag} {path!r} ({probe_dir}: {e.strerror}): pass a '
                    f'writable {flag}') from None
