"""A stall watchdog: calls that block inside Reverb or TensorFlow still get a log line and a deadline.

Reverb's writers and datasets retry on their own while the server is away, and a rate limiter
may hold an insert or a sample for as long as the other side is idle. Both look like a silent
hang from outside. The main loop calls `beat()` whenever it makes progress; when it has not for
`quiet_s`, the watchdog logs what it is waiting for: the server not answering, or the replay
table's state. It logs again when that changes (the server stops or starts answering), and
otherwise every `repeat_s`, so a stall is one line, not one every few seconds. Once the replay
server has been unreachable for `deadline_s` it ends the process with an error, so a supervisor
can restart it. A stop request (SIGTERM) that the loop cannot act on for `stop_grace_s`,
because it is blocked inside such a call, ends the process too, with status 0.

Whether the server answers is asked on a connection of the watchdog's own
(`connection.answers`), never through the process's Reverb clients: after a network partition
heals, their shared connection stays dead until TCP retransmits on it (up to 2 minutes), and a
deadline counted through it would restart a process whose server answers.
"""

import os
import threading
import time
from typing import Callable, Optional

from absl import logging

from common import connection
from common import constants
from common import errors
from common import replay


def describe_server(address: str) -> Optional[str]:
  """The replay table's state, or None when the server does not answer now."""
  info = connection.answers(address)
  if info is None:
    return None
  table = info.get(constants.REPLAY_TABLE)
  return replay.table_state(table) if table is not None else 'no replay table'


class Watchdog:
  """Logs stalls of the caller's loop and exits after `deadline_s` without a server."""

  def __init__(self, role: str, server_address: str, quiet_s: float = 10.0,
               deadline_s: float = 0.0, exit_fn: Callable[[int], None] = os._exit,
               stop_event: Optional[threading.Event] = None, stop_grace_s: float = 10.0,
               stop_waits_while_server_answers: bool = False, repeat_s: float = 60.0):
    """
    Args:
      role: Prefix of the log lines.
      server_address: Probed to tell a blocked rate limiter from a missing server.
      quiet_s: Seconds without `beat()` before the first stall line.
      deadline_s: Seconds of stall with an unreachable server before
        `exit_fn(errors.EXIT_UNAVAILABLE)` (3: restarted); 0: never.
      exit_fn: Called with the exit status at the deadline (tests pass a recorder).
      stop_event: The caller's stop request; if it stays unanswered (no `beat()` and no
        `stop()`) for `stop_grace_s`, `exit_fn(0)` ends the process.
      stop_grace_s: Seconds a stop request may wait for the blocked loop.
      stop_waits_while_server_answers: Count `stop_grace_s` only while the server does not
        answer: for a loop whose every wait on a live server is bounded (the learner's
        samples time out), so that a long step (a first trace, an export) still ends in the
        saves on stop.
      repeat_s: Seconds between the lines of one stall while what it waits for stays the
        same (at least `quiet_s`).
    """
    self._role = role
    self._address = server_address
    self._quiet_s = quiet_s
    self._repeat_s = max(repeat_s, quiet_s)
    self._logged_at = None  # When the current stall was last logged (None: not yet).
    self._told_unreachable = False  # Whether the last line said the server does not answer.
    self._deadline_s = deadline_s
    self._exit_fn = exit_fn
    self._last_beat = time.monotonic()
    self._unreachable_since = None
    self._stop_event = stop_event
    self._stop_grace_s = stop_grace_s
    self._stop_waits = stop_waits_while_server_answers
    self._stop_wait_logged = False
    self._stop_seen = None
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, name=f'{role} watchdog', daemon=True)
    self._thread.start()

  def beat(self) -> None:
    self._last_beat = time.monotonic()
    self._unreachable_since = None
    self._logged_at = None
    self._told_unreachable = False

  def stop(self) -> None:
    self._done.set()
    self._thread.join(timeout=5)

  def _stop_unanswered(self) -> bool:
    """True once a stop request has waited `stop_grace_s` without the loop ending."""
    if self._stop_event is None or not self._stop_event.is_set():
      return False
    self._stop_seen = self._stop_seen or time.monotonic()
    if time.monotonic() - self._stop_seen < self._stop_grace_s:
      return False
    if self._stop_waits and connection.answers(self._address) is not None:
      if not self._stop_wait_logged:
        logging.warning('%s: stop requested %.0f s ago; finishing the current step first',
                     self._role, time.monotonic() - self._stop_seen)
        self._stop_wait_logged = True
      self._stop_seen = time.monotonic()  # The grace counts from the server's last answer.
      return False
    logging.warning('%s: stop requested %.0f s ago, but blocked waiting on the replay server %s; '
                    'exiting without flushing', self._role, time.monotonic() - self._stop_seen,
                    self._address)
    logging.flush()
    self._exit_fn(0)
    return True

  def _run(self) -> None:
    while not self._done.wait(min(1.0, self._quiet_s)):
      if self._stop_unanswered():
        return
      if time.monotonic() - self._last_beat < self._quiet_s:
        continue
      state = describe_server(self._address)
      now = time.monotonic()
      stalled = now - self._last_beat
      if stalled < self._quiet_s:  # A beat came while the probe ran.
        continue
      due = self._logged_at is None or now - self._logged_at >= self._repeat_s
      since = self._unreachable_since or now  # Read once: `beat()` may reset it meanwhile.
      if state is None:
        self._unreachable_since = since
        unreachable = now - since
        # A server busy for a probe or two (a replay checkpoint) is not news: only an outage
        # of quiet_s, or the stall's first line, says "not answering".
        if due or (not self._told_unreachable and unreachable >= self._quiet_s):
          logging.warning('%s: no progress for %.0f s; replay server %s not answering for %.0f s '
                          '(deadline %s)', self._role, stalled, self._address, unreachable,
                          f'{self._deadline_s:g} s' if self._deadline_s else 'none')
          self._logged_at = now
          self._told_unreachable = True
        if self._deadline_s and unreachable >= self._deadline_s:
          logging.error('%s: replay server %s unreachable for %.0f s; exiting', self._role,
                        self._address, unreachable)
          logging.flush()
          self._exit_fn(errors.EXIT_UNAVAILABLE)
          return
      else:
        if self._told_unreachable:
          logging.warning('%s: replay server %s answers again after %.0f s; still no progress '
                          'for %.0f s (a connection that lived through a network fault resumes '
                          'when TCP retransmits on it, within 2 minutes); %s', self._role,
                          self._address, now - since, stalled, state)
          self._told_unreachable = False
          self._logged_at = now
        elif due:
          logging.warning('%s: no progress for %.0f s; waiting on the replay table (%s)',
                          self._role, stalled, state)
          self._logged_at = now
        self._unreachable_since = None
