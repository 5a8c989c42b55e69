"""Reaching the replay server: bounded, logged waits, probes, and signature checks.

The parts a `session.ServerSession` is made of, and the probes of the processes that hold no
session (the watchdog, the launchers' status views). Every role treats the exceptions in
`CONNECTION_ERRORS` as "the server went away" and comes back through its session's
`reconnect`, which checks the signatures again: a server restarted with another config is
refused, not written to.
"""

import socket
import time
from typing import Callable, Dict, Optional

from absl import logging
import reverb
import tensorflow as tf

from common import constants
from common import reverb_rpc
from common.errors import NotReplayServerError
from common.errors import ServerUnavailableError
from common.errors import StopRequested
from common.errors import SignatureMismatchError

# Raised by Reverb clients, datasets and writers when the server goes away or restarts: gRPC
# statuses surfaced as TensorFlow errors (datasets, TF clients), Reverb's own errors, and the
# RuntimeError of its pybind writers. Anything else (a bad argument, a shape error) is a bug and
# propagates.
CONNECTION_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError,
                     tf.errors.InternalError, tf.errors.DeadlineExceededError,
                     tf.errors.AbortedError, tf.errors.UnknownError, reverb.errors.ReverbError,
                     RuntimeError)

# One gRPC ServerInfo call never waits longer than this, so a dead peer is noticed quickly.
_PROBE_TIMEOUT_S = 2


def probe(address: str, timeout_s: int = _PROBE_TIMEOUT_S) -> Optional[Dict[str, object]]:
  """Returns the server's table infos, or None if it did not answer within `timeout_s`."""
  try:
    return reverb.Client(address).server_info(timeout=timeout_s)
  except Exception:  # pylint: disable=broad-except  (any failure means "not reachable now")
    return None


def answers(address: str,
            timeout_s: float = _PROBE_TIMEOUT_S) -> Optional[Dict[str, reverb_rpc.TableInfo]]:
  """The server's tables, asked on a connection of this call's own; None: no answer in time.

  Whether the server answers now, whatever this process's Reverb clients see: they share one
  gRPC connection per address, which after a network partition stays dead until TCP
  retransmits on it (`reverb_rpc`), while a new connection answers at once. A frozen server
  (SIGSTOP) accepts the TCP connection and answers nothing: None.
  """
  try:
    return reverb_rpc.server_info(address, timeout_s, own_connection=True)
  except (reverb_rpc.RpcError, ValueError):
    return None


# What a gRPC client sends first: the HTTP/2 connection preface and an empty SETTINGS frame. A
# gRPC server's first frame in reply is its own SETTINGS frame (RFC 9113, section 3.4).
_HTTP2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + b'\x00\x00\x00\x04\x00\x00\x00\x00\x00'
_FRAME_HEADER_BYTES = 9
_SETTINGS_FRAME = 0x04


def _connect(address: str, timeout_s: float) -> socket.socket:
  """A TCP connection to host:port (an IPv6 host in brackets).

  Raises:
    OSError: refused or unreachable. ValueError: a port that is not a number.
  """
  host, _, port = address.rpartition(':')
  return socket.create_connection((host.strip('[]'), int(port)), timeout=timeout_s)


def foreign_reply(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> Optional[str]:
  """What another kind of server answered at `address` to a gRPC client's first bytes, or None.

  Reverb's client cannot tell "nothing there yet" from "something else there": both are
  DEADLINE_EXCEEDED. This sends the HTTP/2 preface over plain TCP and reads the first reply.

  Returns:
    None when nothing listens, the peer closed or said nothing within `timeout_s` (a proxy
    whose backend is not up yet, a server still starting), or its first frame is HTTP/2
    SETTINGS (a gRPC server). Otherwise the start of what it sent, for the error line: an
    HTTP/1 server's status line, an SSH banner, a database's greeting.
  """
  data = b''
  try:
    with _connect(address, timeout_s) as sock:
      sock.sendall(_HTTP2_PREFACE)
      while len(data) < _FRAME_HEADER_BYTES:
        chunk = sock.recv(64)
        if not chunk:
          break
        data += chunk
  except (OSError, ValueError):
    pass
  if not data or (len(data) >= _FRAME_HEADER_BYTES and data[3] == _SETTINGS_FRAME):
    return None
  text = data.decode('ascii', 'replace').strip().splitlines()
  return repr(text[0][:60]) if text else repr(data[:20])


def _accepts(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to `address` opens (refused or unreachable: False)."""
  try:
    with _connect(address, timeout_s):
      return True
  except (OSError, ValueError):
    return False


def wait_for_server(address: str, timeout_s: float, role: str,
                    is_running: Callable[[], bool] = lambda: True,
                    log_every_s: float = 10.0) -> Dict[str, object]:
  """Polls the replay server until it answers, with backoff and a log line while waiting.

  Args:
    address: host:port of the replay server.
    timeout_s: Deadline in seconds; 0 waits for as long as `is_running()` holds.
    role: Who is waiting, for the log line.
    is_running: Polled between attempts; waiting stops early when it returns False.
    log_every_s: Seconds between "still waiting" log lines.

  Returns:
    The server's table infos (name -> TableInfo).

  Raises:
    ServerUnavailableError: the deadline passed.
    NotReplayServerError: `address` answers as another kind of server (`foreign_reply`).
    StopRequested: `is_running()` turned False.
  """
  start = time.monotonic()
  last_log = -float('inf')
  delay = 0.1
  while True:
    # Nothing listening yet (a refused connection returns at once) is not worth a gRPC probe,
    # which would wait out its whole timeout: the first answer comes within one poll.
    accepts = _accepts(address)
    info = probe(address) if accepts else None
    if info is not None:
      waited = time.monotonic() - start
      if waited > 1:
        logging.info('%s: replay server %s answered after %.1f s', role, address, waited)
      return info
    reply = foreign_reply(address) if accepts else None
    if reply is not None:
      raise NotReplayServerError(
          f'{address} is not a replay server: it answers, but not as a gRPC server (it replied '
          f'{reply}): pass the host:port that replay_server.main serves on')
    elapsed = time.monotonic() - start
    if not is_running():
      raise StopRequested(f'{role}: stopped while waiting for the replay server at {address}, '
                          'before it answered')
    if timeout_s and elapsed >= timeout_s:
      raise ServerUnavailableError(
          f'replay server {address} did not answer within {timeout_s:g} s: start '
          'replay_server.main there, fix --replay_server_address, or raise --server_timeout_s')
    if time.monotonic() - last_log >= log_every_s:
      logging.warning('%s: waiting for the replay server at %s (%.0f s so far, deadline %s)',
                      role, address, elapsed, f'{timeout_s:g} s' if timeout_s else 'none')
      last_log = time.monotonic()
    time.sleep(delay)
    delay = min(delay * 2, 0.5)


def _describe(signature) -> str:
  specs = tf.nest.flatten(signature)
  return '[' + ', '.join(f'{s.dtype.name}{list(s.shape)}' for s in specs) + ']'


def check_signature(server_info: Dict[str, object], table: str, expected) -> None:
  """Checks that the server's table holds what this process was built to write or read.

  Args:
    server_info: From `wait_for_server` or `probe`.
    table: Table name.
    expected: The signature this process derived from its own gin config.

  Raises:
    SignatureMismatchError: the table is missing, or its signature differs (another
      environment or agent); the message shows both.
  """
  if table not in server_info:
    raise SignatureMismatchError(
        f'the replay server has no table {table!r} (it has {sorted(server_info)}): start it with '
        'the same --gin_file as this process')
  actual = server_info[table].signature
  expected_flat = [(s.dtype, tuple(s.shape)) for s in tf.nest.flatten(expected)]
  actual_flat = [(s.dtype, tuple(s.shape)) for s in tf.nest.flatten(actual)] if actual else []
  if expected_flat != actual_flat:
    raise SignatureMismatchError(
        f'table {table!r} signature mismatch: server has {_describe(actual)}, this process '
        f'expects {_describe(expected)}: start every process with the same --gin_file')


def check_tables(server_info: Dict[str, object], specs) -> None:
  """Checks the replay and the variable table against `specs` (a `builders.Specs`)."""
  check_signature(server_info, constants.REPLAY_TABLE, specs.replay_signature)
  check_signature(server_info, constants.VARIABLE_TABLE, specs.variables_signature)


def first_line(error: BaseException, limit: int = 200) -> str:
  """An exception's first line, shortened, for log lines."""
  text = str(error).strip()
  return (text.splitlines()[0] if text else type(error).__name__)[:limit]
