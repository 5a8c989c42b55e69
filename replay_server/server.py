"""The replay server: the replay table and the variable table, checkpointed under root_dir."""

import os
import threading
import time
from typing import Optional

from absl import logging
import reverb

from common import builders
from common import config as config_lib
from common import gin_config
from common import connection
from common import constants
from common import ownership
from common import replay
from common import storage
from common.errors import UserError
from common.preflight import check_port_free
from replay_server import checkpoints as checkpoints_lib
from replay_server import tables as tables_lib


class ReplayServer:
  """A Reverb server with the run's tables, restored from and checkpointed to root_dir."""

  def __init__(self, root_dir: str, port: int, configs: config_lib.Configs,
               keep_checkpoints: int = 2, stop_grace_s: float = 0.0,
               specs: Optional[builders.Specs] = None):
    """Builds the tables of `configs` (the agent's family's) and starts serving on `port`.

    Args:
      configs: The run's validated configs (`config.validated_configs()`).
      stop_grace_s: Seconds the orchestrator waits after SIGTERM before it kills the server
        (0: unknown). A checkpoint that takes over half of it is warned about
        (`grace_warning`): the final one, written on SIGTERM, could be cut off.
      specs: The agent's specs, if the caller built them (`builders.make_agent_and_specs`).

    Raises:
      UserError: the port is taken or a checkpoint does not fit the configured tables.
    """
    self._stop_grace_s = stop_grace_s
    check_port_free(port)
    if specs is None:
      _, specs = builders.make_agent_and_specs(configs.replay)
    make_tables = lambda: tables_lib.make_tables(specs, configs.replay, configs.learner)
    self._make_tables = make_tables
    self._checkpoint_dir = os.path.join(root_dir, constants.REPLAY_CHECKPOINT_DIR)
    self._keep = keep_checkpoints
    self._last_own, self._last_size = None, 0  # This process's last checkpoint, its table size.
    os.makedirs(self._checkpoint_dir, exist_ok=True)
    restored = self._start(make_tables, port)
    self.port = port
    self._client = reverb.Client(f'localhost:{port}')
    info = self._client.server_info()
    if restored:
      logging.info('Restored replay checkpoint %s: %s', restored,
                   replay.table_state(info[constants.REPLAY_TABLE]))
    self._log_ready(info)

  def _start(self, make_tables, port: int) -> Optional[str]:
    """Starts Reverb on the newest readable checkpoint, in the configured settings
    (`checkpoints.reconcile`); an unreadable one, or one restored with fewer items than it
    records, is set aside for the one before it.

    Returns:
      The checkpoint restored, or None.
    """
    while True:
      tables = make_tables()
      restored = checkpoints_lib.reconcile(self._checkpoint_dir, tables)
      try:
        expected = checkpoints_lib.recorded_sizes(restored[0]) if restored else {}
        self._server = reverb.Server(
            tables=tables, port=port,
            checkpointer=reverb.checkpointers.DefaultCheckpointer(path=self._checkpoint_dir))
      except (RuntimeError, ValueError, checkpoints_lib.UnreadableCheckpointError) as e:
        message = ' '.join(str(e).split())[:300]
        if not restored:
          raise UserError(f'replay server failed to start ({message}): fix the table settings '
                          'in the gin file') from None
        for path in restored:
          checkpoints_lib.set_aside(path, message)
        continue
      missing = self._missing_items(port, tables, expected)
      if not missing:
        return restored[0] if restored else None
      self._server.stop()
      for path in restored:
        checkpoints_lib.set_aside(path, missing)

  @staticmethod
  def _missing_items(port: int, tables, expected) -> str:
    """Tables restored with fewer items than their checkpoint records, described; '' if none."""
    info = connection.wait_for_server(f'localhost:{port}', 60, 'replay server')
    short = [f'{t.name} restored {info[t.name].current_size} of '
             f'{min(expected[t.name], t.info.max_size)} items'
             for t in tables if t.name in expected
             and info[t.name].current_size < min(expected[t.name], t.info.max_size)]
    return '; '.join(short)

  def _log_ready(self, info) -> None:
    tables = '; '.join(
        f'{name} max_size={t.max_size} size={t.current_size} '
        f'signature={" ".join(str(t.signature).split())}'
        for name, t in sorted(info.items()))
    logging.info('%s on port %d, tables: %s', constants.SERVER_READY_LINE, self.port, tables)

  def info(self):
    return self._client.server_info()

  def checkpoint(self) -> str:
    """Writes a checkpoint and prunes old ones; returns its path. A replay table that shrank
    since the last one (a Reset from elsewhere) is restored from that one instead, and its
    path returned.

    Raises:
      What the write raised on a storage fault (`storage.is_storage_error`), after deleting
      the incomplete checkpoint it left, so that the space is free for the next try.
    """
    start = time.monotonic()
    # Read before the checkpoint: the table only grows (or stays full) meanwhile, so the
    # checkpoint holds at least this many items.
    table = self._client.server_info()[constants.REPLAY_TABLE]
    size = table.current_size
    # A table whose items are never taken out (not a queue) shrinks only by a Reset RPC (or a
    # deletion), which anyone who reaches the port can send. Checkpointed, the emptied table
    # would soon prune the last full checkpoint: the server restarts from that one instead.
    if (table.max_times_sampled == 0 and self._last_own is not None
        and size < self._last_size):
      return self._restart_from_last_own(size)
    try:
      path = self._client.checkpoint()
    except Exception as e:
      if storage.is_storage_error(e):
        checkpoints_lib.remove_incomplete(self._checkpoint_dir)
      raise
    self._last_own = checkpoints_lib.record_own(self._checkpoint_dir, path, self._keep)
    self._last_size = size
    checkpoints_lib.prune_checkpoints(self._checkpoint_dir, self._keep)
    seconds = time.monotonic() - start
    logging.info('Replay checkpoint %s written in %.2f s (%d items)', path, seconds, size)
    warning = grace_warning(seconds, self._stop_grace_s, size)
    if warning:
      logging.warning('%s', warning)
    return path

  def _restart_from_last_own(self, size: int) -> str:
    """Restarts Reverb, on the same port, from this server's newest own checkpoint (its items
    inserted since are lost; clients reconnect as after any server restart); returns it."""
    logging.warning('replay server: the replay table shrank from %d to %d items since its last '
                    'checkpoint %s, which only a Reset or a deletion from elsewhere does: '
                    'restarting from that checkpoint. Keep the port closed to the network '
                    '(docs/security.md)', self._last_size, size, self._last_own)
    self._server.stop()
    restored = self._start(self._make_tables, self.port)
    self._log_ready(self._client.server_info())
    return restored

  def stop(self) -> None:
    self._server.stop()


def grace_warning(checkpoint_s: float, stop_grace_s: float, items: int) -> Optional[str]:
  """The warning for a checkpoint of `checkpoint_s` seconds under a stop grace of
  `stop_grace_s` (0: unknown), or None while it takes at most half of the grace.

  The final checkpoint is written after SIGTERM, and a bigger table takes longer: a checkpoint
  the orchestrator cuts off is set aside at the next start, and the run resumes from the one
  before it, losing what came in between.
  """
  if not stop_grace_s or checkpoint_s <= stop_grace_s / 2:
    return None
  return (f'replay checkpoint of {items} items took {checkpoint_s:.0f} s, over half of the '
          f'{stop_grace_s:g} s stop grace (--stop_grace_s), so the final checkpoint on stop may '
          'be cut off: give the replay server a longer stop grace (docker-compose '
          'stop_grace_period with --stop_grace_s) or a smaller ReplayConfig.max_size')


def serve(root_dir: str, port: int, configs: config_lib.Configs, checkpoint_interval_s: float,
          keep_checkpoints: int = 2,
          stop_event: Optional[threading.Event] = None, log_interval_s: float = 60.0,
          ready_event: Optional[threading.Event] = None, stop_grace_s: float = 0.0,
          specs: Optional[builders.Specs] = None) -> None:
  """Runs the replay server until `stop_event` is set, then checkpoints and stops.

  A checkpoint that fails on a storage fault (disk full, read-only, I/O error) is logged and
  retried with backoff while the server keeps serving (`storage.RetryingSave`); only the final
  one, failing on every try, ends the run with a `StorageError`.

  Args:
    root_dir: Run directory; checkpoints go to root_dir/replay_server/checkpoints.
    port: gRPC port.
    configs: The run's validated configs (`config.validated_configs()`).
    checkpoint_interval_s: Seconds between periodic checkpoints (0 disables them; the
      checkpoint on stop is always written).
    keep_checkpoints: Complete checkpoints kept on disk.
    stop_event: Set by the caller (the SIGTERM/SIGINT handler in main) to stop.
    log_interval_s: Seconds between table-state log lines.
    ready_event: Set once the server answers.
    stop_grace_s: The orchestrator's stop grace (`ReplayServer`); 0 if unknown.
    specs: The agent's specs, if the caller built them (`builders.make_agent_and_specs`).
  """
  stop_event = stop_event or threading.Event()
  check_port_free(port)
  ownership.own(os.path.join(root_dir, constants.REPLAY_DIR), 'replay server')
  server = ReplayServer(root_dir, port, configs, keep_checkpoints, stop_grace_s, specs)
  gin_config.record_run_config(os.path.join(root_dir, constants.REPLAY_DIR), {
      'root_dir': root_dir, 'port': port, 'checkpoint_interval_s': checkpoint_interval_s,
      'keep_checkpoints': keep_checkpoints, 'stop_grace_s': stop_grace_s})
  if ready_event is not None:
    ready_event.set()
  saver = storage.RetryingSave(
      'replay checkpoint', os.path.join(root_dir, constants.REPLAY_CHECKPOINT_DIR),
      server.checkpoint, first_retry_s=min(30.0, checkpoint_interval_s or 30.0),
      max_retry_s=max(30.0, checkpoint_interval_s))
  last_checkpoint = last_log = time.monotonic()
  try:
    while not stop_event.wait(1.0):
      now = time.monotonic()
      if saver.retry_due() or (checkpoint_interval_s and not saver.pending
                               and now - last_checkpoint >= checkpoint_interval_s):
        saver()
        last_checkpoint = now
      if now - last_log >= log_interval_s:
        logging.info('%s', replay.table_state(server.info()[constants.REPLAY_TABLE]))
        last_log = now
    path = saver.final()
  finally:
    server.stop()
  logging.info('%s: final checkpoint %s', constants.SERVER_STOPPED_LINE, path)
