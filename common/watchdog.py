"""A stall watchdog: calls that block inside Reverb or TensorFlow still get a log line and a deadline.

Reverb's writers and datasets retry on their own while the server is away, and a rate limiter
may hold an insert or a sample for as long as the other side is idle. Both look like a silent
hang from outside. The main loop calls `beat()` whenever it makes progress; when it has not for
`quiet_s`, the watchdog logs what it is waiting for (`describe()`) every `quiet_s`, and once the
replay server has been unreachable for `deadline_s` it ends the process with an error, so a
supervisor can restart it.
"""

import os
import threading
import time
from typing import Callable, Optional

from absl import logging

from common import connection
from common import constants
from common import replay


def describe_server(address: str) -> Optional[str]:
  """The replay table's state, or None when the server does not answer."""
  info = connection.probe(address)
  if info is None:
    return None
  return replay.table_state(info[constants.REPLAY_TABLE])


class Watchdog:
  """Logs stalls of the caller's loop and exits after `deadline_s` without a server."""

  def __init__(self, role: str, server_address: str, quiet_s: float = 10.0,
               deadline_s: float = 0.0, exit_fn: Callable[[int], None] = os._exit):
    """
    Args:
      role: Prefix of the log lines.
      server_address: Probed to tell a blocked rate limiter from a missing server.
      quiet_s: Seconds without `beat()` before the first stall line, and between lines.
      deadline_s: Seconds of stall with an unreachable server before `exit_fn(3)`; 0: never.
      exit_fn: Called with the exit status at the deadline (tests pass a recorder).
    """
    self._role = role
    self._address = server_address
    self._quiet_s = quiet_s
    self._deadline_s = deadline_s
    self._exit_fn = exit_fn
    self._last_beat = time.monotonic()
    self._unreachable_since = None
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, name=f'{role} watchdog', daemon=True)
    self._thread.start()

  def beat(self) -> None:
    self._last_beat = time.monotonic()
    self._unreachable_since = None

  def stop(self) -> None:
    self._done.set()
    self._thread.join(timeout=5)

  def _run(self) -> None:
    while not self._done.wait(min(1.0, self._quiet_s)):
      stalled = time.monotonic() - self._last_beat
      if stalled < self._quiet_s:
        continue
      state = describe_server(self._address)
      now = time.monotonic()
      if state is None:
        self._unreachable_since = self._unreachable_since or now
        unreachable = now - self._unreachable_since
        logging.warning('%s: no progress for %.0f s; replay server %s not answering for %.0f s '
                        '(deadline %s)', self._role, stalled, self._address, unreachable,
                        f'{self._deadline_s:g} s' if self._deadline_s else 'none')
        if self._deadline_s and unreachable >= self._deadline_s:
          logging.error('%s: replay server %s unreachable for %.0f s; exiting', self._role,
                        self._address, unreachable)
          logging.flush()
          self._exit_fn(3)
          return
      else:
        self._unreachable_since = None
        logging.warning('%s: no progress for %.0f s; waiting on the replay table (%s)',
                        self._role, stalled, state)
      self._last_beat = now  # Log again after another quiet_s, not every second.
