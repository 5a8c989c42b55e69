"""User-facing errors.

A `UserError` carries one line that names the problem and the fix. Every `main.py` turns it into
that line on stderr and exit status 2, before anything is written under `--root_dir`.
"""


class UserError(Exception):
  """A problem with the user's input (flags, gin files, addresses, directories)."""


def one_line(error: Exception) -> str:
  """The error's own line. Gin appends a second line ("In call to configurable ...") to an
  exception raised inside a configurable; the one line that names the problem and the fix is
  the first."""
  lines = str(error).splitlines()
  return lines[0] if lines else type(error).__name__


class ServerUnavailableError(UserError):
  """The replay server did not answer before the deadline."""


class NotReplayServerError(UserError):
  """The address answers, but not as a gRPC server: it is another service's port."""


class ItemRejectedError(UserError):
  """This process made an item the replay table cannot take (its columns or its priority)."""


class SignatureMismatchError(UserError):
  """A process was built for another environment or agent than the replay server."""


class StopRequested(ServerUnavailableError):
  """A stop (SIGTERM, SIGINT) came while the process waited for the replay server.

  Not a failure: every `main.py` logs it as the process's stop line and exits 0.
  """
