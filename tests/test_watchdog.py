"""The stall watchdog, against a real (or a missing) Reverb server."""

import logging
import threading
import time

import reverb

from common import constants
from common import watchdog as watchdog_lib
from tests.conftest import wait_until


def test_logs_stalls_and_exits_at_the_deadline_without_a_server(port, caplog):
  exits = []
  with caplog.at_level(logging.WARNING):
    dog = watchdog_lib.Watchdog('tester', f'localhost:{port}', quiet_s=0.5, deadline_s=2.0,
                                exit_fn=exits.append)
    try:
      wait_until(lambda: exits, 30, 'the watchdog to give up on the missing server')
    finally:
      dog.stop()
  assert exits == [3]
  messages = [r.getMessage() for r in caplog.records]
  assert any('no progress for' in m and 'not answering' in m for m in messages)
  assert any('unreachable' in m and 'exiting' in m for m in messages)


def test_names_the_table_state_when_the_server_answers(cartpole_server, caplog):
  exits = []
  with caplog.at_level(logging.WARNING):
    dog = watchdog_lib.Watchdog('tester', cartpole_server, quiet_s=0.5, deadline_s=1.0,
                                exit_fn=exits.append)
    try:
      wait_until(lambda: any('waiting on the replay table' in r.getMessage()
                             for r in caplog.records), 30, 'a stall line with the table state')
    finally:
      dog.stop()
  assert not exits  # The server answers: a blocked rate limiter is not a reason to exit.
  line = next(r.getMessage() for r in caplog.records
              if 'waiting on the replay table' in r.getMessage())
  assert 'table replay_table: size=0/100000' in line


def test_one_stall_is_one_line_until_what_it_waits_for_changes(port, caplog, monkeypatch):
  # No server: one "not answering" line, however often the watchdog probes. The server comes
  # up: one "answers again" line. It stays up and the loop stays blocked: nothing more until
  # repeat_s.
  exits, probes = [], []
  probe = watchdog_lib.describe_server
  monkeypatch.setattr(watchdog_lib, 'describe_server',
                      lambda address: probes.append(1) or probe(address))

  def _probed(times):
    seen = len(probes)
    wait_until(lambda: len(probes) >= seen + times, 30, f'{times} more probes')
  with caplog.at_level(logging.WARNING):
    dog = watchdog_lib.Watchdog('tester', f'localhost:{port}', quiet_s=0.5, deadline_s=600,
                                repeat_s=600, exit_fn=exits.append)
    try:
      wait_until(lambda: 'not answering' in caplog.text, 30, 'the first stall line')
      _probed(3)
      server = reverb.Server([reverb.Table.queue(constants.REPLAY_TABLE, 10)], port=port)
      try:
        wait_until(lambda: 'answers again' in caplog.text, 30, 'the server to be seen again')
        _probed(3)
      finally:
        server.stop()
    finally:
      dog.stop()
  assert not exits
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 2, lines
  assert 'not answering for' in lines[0] and '(deadline 600 s)' in lines[0]
  assert f'replay server localhost:{port} answers again after' in lines[1]
  assert f'table {constants.REPLAY_TABLE}: size=0/10' in lines[1]


def test_beats_keep_it_quiet(cartpole_server, caplog):
  with caplog.at_level(logging.WARNING):
    dog = watchdog_lib.Watchdog('tester', cartpole_server, quiet_s=1.0)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
      dog.beat()
      time.sleep(0.1)
    dog.stop()
  assert not [r for r in caplog.records if 'no progress' in r.getMessage()]


def test_an_unanswered_stop_request_ends_the_process_with_status_zero(port):
  exits, stop = [], threading.Event()
  dog = watchdog_lib.Watchdog('tester', f'localhost:{port}', quiet_s=100, stop_event=stop,
                              stop_grace_s=0.5, exit_fn=exits.append)
  try:
    stop.set()
    wait_until(lambda: exits, 30, 'the watchdog to end a blocked stop')
  finally:
    dog.stop()
  assert exits == [0]


def test_a_learner_stop_waits_for_its_step_while_the_server_answers(port, caplog):
  # The learner's waits on a live server are bounded (its samples time out), so a long step
  # (a first trace, an export) is waited for, and its saves on stop still happen; once the
  # server stops answering, the grace counts again.
  server = reverb.Server([reverb.Table.queue('q', 1)], port=port)
  exits, stop = [], threading.Event()
  dog = watchdog_lib.Watchdog('learner', f'localhost:{port}', quiet_s=100, stop_event=stop,
                              stop_grace_s=0.5, exit_fn=exits.append,
                              stop_waits_while_server_answers=True)
  try:
    with caplog.at_level(logging.INFO):
      stop.set()
      wait_until(lambda: 'finishing the current step first' in caplog.text, 30,
                 'the watchdog to wait for the step')
      waited_from = time.monotonic()
      wait_until(lambda: time.monotonic() > waited_from + 2, 30, 'four graces to pass')
      assert not exits
      server.stop()
      wait_until(lambda: exits, 30, 'the watchdog to end the stop once the server is gone')
  finally:
    dog.stop()
  assert exits == [0]
