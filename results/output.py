"""Writing output files whole: to a temporary file beside the target, then a rename."""

import os
import tempfile
from typing import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> str:
  """Calls `write(tmp_path)` and renames the result to `path`; on failure nothing is left.

  The temporary file keeps `path`'s extension (writers pick the format from it) and the file
  gets the usual permissions (0666 less the umask), not mkstemp's 0600.

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
