"""The error contract: which errors end a role, with what exit status, and what follows.

Every error a role stops on carries one line that names the problem and the fix. Every `main.py`
turns it into that line on stderr and the class's exit status (`main_utils.exit_on_error`), and
every launcher reads the status the same way (`restarted`):

| class              | what happened                                   | exit | restarted |
|--------------------|-------------------------------------------------|------|-----------|
| `UserError`        | bad input: flags, gin files, addresses, dirs    | 2    | never     |
| `UnavailableError` | the replay server or the storage is away        | 3    | yes, from the last complete save |
| `DivergedError`    | the loss or a weight became inf or NaN          | 4    | never     |
| `StopRequested`    | a stop came while waiting for the server        | 0    | -         |

A bad input is refused before anything is written under `--root_dir`. The watchdog's exit at
its deadline without a server is `EXIT_UNAVAILABLE` too.
"""

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_DIVERGED = 4


def restarted(exit_status: int) -> bool:
  """Whether a launcher restarts a role that exited with `exit_status` (0: it finished)."""
  return exit_status not in (0, EXIT_BAD_INPUT, EXIT_DIVERGED)


class FleetError(Exception):
  """An error a role stops on, with one line; `exit_status` says what follows."""
  exit_status = 1


class UserError(FleetError):
  """Bad input (flags, gin files, addresses, directories, the user's environment): exit 2, never
  restarted."""
  exit_status = EXIT_BAD_INPUT


class UnavailableError(FleetError):
  """Something the role needs is away (the replay server, the storage): exit 3, restarted."""
  exit_status = EXIT_UNAVAILABLE


class DivergedError(FleetError):
  """The loss or a weight became inf or NaN: exit 4, not restarted (a restart would resume from
  the same weights)."""
  exit_status = EXIT_DIVERGED


def one_line(error: Exception) -> str:
  """The error's own line. Gin appends a second line ("In call to configurable ...") to an
  exception raised inside a configurable; the one line that names the problem and the fix is
  the first."""
  lines = str(error).splitlines()
  return lines[0] if lines else type(error).__name__


class ServerUnavailableError(UnavailableError):
  """The replay server did not answer before the deadline."""


class NotReplayServerError(UserError):
  """The address answers, but not as a gRPC server: it is another service's port."""


class ItemRejectedError(UserError):
  """This process made an item the replay table cannot take (its columns or its priority)."""


class SignatureMismatchError(UserError):
  """A process was built for another environment or agent than the replay server."""


class StopRequested(FleetError):
  """A stop (SIGTERM, SIGINT) came while the process waited for the replay server.

  Not a failure: every `main.py` logs it as the process's stop line and exits 0.
  """
  exit_status = 0
