"""`connection.foreign_reply`: telling another kind of server from a replay server not up yet.

Real sockets on free ports: a Reverb server, an HTTP server, a port nobody listens on, and one
that accepts and closes at once (a proxy whose backend is not up).
"""

from http import server as http_server
import socket
import threading
import time

import portpicker
import pytest
import reverb

from common import connection
from common.errors import NotReplayServerError
from common.errors import ServerUnavailableError


@pytest.fixture
def http_port():
  http = http_server.HTTPServer(('localhost', 0), http_server.BaseHTTPRequestHandler)
  http.RequestHandlerClass.log_message = lambda *_: None
  threading.Thread(target=http.serve_forever, daemon=True).start()
  yield http.server_port
  http.shutdown()
  http.server_close()


@pytest.fixture
def closing_port():
  listener = socket.create_server(('localhost', 0))

  def _accept_and_close():
    while True:
      try:
        conn, _ = listener.accept()
      except OSError:
        return
      conn.close()

  threading.Thread(target=_accept_and_close, daemon=True).start()
  yield listener.getsockname()[1]
  listener.close()


def test_a_reverb_server_is_not_foreign():
  server = reverb.Server([reverb.Table.queue('q', 10)])
  try:
    assert connection.foreign_reply(f'localhost:{server.port}') is None
  finally:
    server.stop()


def test_an_http_server_is_foreign_and_its_reply_is_shown(http_port):
  reply = connection.foreign_reply(f'localhost:{http_port}')
  assert reply is not None and 'HTML' in reply.upper()


def test_silence_is_not_taken_for_another_server(closing_port):
  assert connection.foreign_reply(f'localhost:{portpicker.pick_unused_port()}') is None
  assert connection.foreign_reply(f'localhost:{closing_port}') is None
  assert connection.foreign_reply('no-such-host.invalid:8000') is None


def test_waiting_on_another_server_fails_at_once_and_on_silence_at_the_deadline(
    http_port, closing_port):
  with pytest.raises(NotReplayServerError, match=f'localhost:{http_port} is not a replay server'):
    connection.wait_for_server(f'localhost:{http_port}', timeout_s=600, role='test')
  with pytest.raises(ServerUnavailableError, match='did not answer within 1 s'):
    connection.wait_for_server(f'localhost:{closing_port}', timeout_s=1, role='test')


def test_a_server_that_comes_up_while_polled_is_found_within_half_a_second():
  # Polled while nothing listens (refused connections, not gRPC probes that wait out their
  # timeout), then a Reverb server starts.
  port = portpicker.pick_unused_port()
  servers, up = [], []

  def _start_later():
    time.sleep(1.5)
    servers.append(reverb.Server([reverb.Table.queue('q', 10)], port=port))
    up.append(time.monotonic())

  starter = threading.Thread(target=_start_later, daemon=True)
  starter.start()
  try:
    connection.wait_for_server(f'localhost:{port}', timeout_s=30, role='test')
    assert up, 'answered before the server started'
    assert time.monotonic() - up[0] < 1.0
  finally:
    starter.join(10)
    for server in servers:
      server.stop()
