"""Moving policy weights through the variable table, with deadlines.

Items have the layout of TF-Agents' `ReverbVariableContainer` (one single-step item of the
flattened nest in a `max_size=1` table with that signature), with one more column: the push's
HMAC under the run's key (`common.weights_key`), which `pull` verifies before it loads anything.
A stock container reads the items if its nest has the `signature` entry, and loads them
unverified. Two of the container's calls are replaced, each for a failure it has:
- its `pull` samples with no deadline, so a pull against an empty table (a restarted server
  before the learner's next push) would block forever. `pull` here reads the item with the
  Python client's sampler on a reader thread and waits for it `pull_timeout_s` at most. The
  numpy arrays come straight from the sampler: no tf.data iterator is made per pull (one was
  about 4x slower, see `bench/pull_bench.py`), and no eager tensor but the assignments';
- its `push` goes through a `reverb.TFClient` resource, which another client's teardown in the
  same process can destroy (`NotFoundError: Resource .../ReverbClient does not exist`); `push`
  here inserts through the Python client's trajectory writer, with a deadline. (The Python
  client's `insert` and legacy `writer` block without one while the server is away: creating
  a legacy writer waits for the server however long it takes.)
"""

import concurrent.futures
import threading
import time
from typing import List, Optional

from absl import logging
import numpy as np
import reverb
import tensorflow as tf

from common import constants
from common import weights_key


class VariableClient:
  """Pushes and pulls one nest of variables ({POLICY_KEY: ..., TRAIN_STEP_KEY: ...})."""

  def __init__(self, session, variables, signer: weights_key.Signer,
               pull_timeout_s: float = 2.0, push_timeout_s: float = 30.0):
    """
    Args:
      session: The process's `session.ServerSession` (connected); pushes go through its
        client.
      variables: The nest, as returned by `agents.policy_variables`.
      signer: Signs pushes and verifies pulls with the run's key.
      pull_timeout_s: How long a pull waits for an item before returning None.
      push_timeout_s: How long a push waits for the server to confirm the item before it
        raises `tf.errors.DeadlineExceededError`.
    """
    self._session = session
    self._address = session.address
    self._variables = variables
    self._signer = signer
    self._flat_variables = tf.nest.flatten(variables)
    self._signature_index = next(i for i, v in enumerate(self._flat_variables)
                                 if v is variables[constants.SIGNATURE_KEY])
    self._step_index = next(i for i, v in enumerate(self._flat_variables)
                            if v is variables[constants.TRAIN_STEP_KEY])
    self._pull_timeout_s = pull_timeout_s
    self._push_timeout_ms = int(push_timeout_s * 1000)
    self.older_step = None  # The train step of the last older weights that were not loaded.
    self.refused = False  # Whether the last pull read an item whose signature did not verify.
    # A read that outlives its pull's deadline (the table emptied, or the server went away,
    # between the caller's probe and the read) stays the only one until it ends, which it does
    # when the server holds weights again; its item is then dropped.
    self._pending: Optional[concurrent.futures.Future] = None

  def push(self) -> None:
    """Inserts the current values; the table keeps only the newest item.

    Raises:
      tf.errors.DeadlineExceededError: The server did not confirm the item within
        `push_timeout_s` (it is away, or went away during the push).
    """
    # validate_items=False: validating fetches the table signature first, with no deadline.
    writer = self._session.client.trajectory_writer(num_keep_alive_refs=1,
                                                    validate_items=False)
    try:
      values = [v.numpy() for v in self._flat_variables]
      values[self._signature_index] = self._signer.digest(self._signed(values))
      writer.append(values)
      # The priority is the train step, so that `reverb-fleet status` reads it without
      # decoding the weights (the table samples uniformly: the priority changes nothing else).
      step = float(self._variables[constants.TRAIN_STEP_KEY].numpy())
      writer.create_item(table=constants.VARIABLE_TABLE, priority=step,
                         # One step with its time axis, as the legacy writer wrote it.
                         trajectory=[column[-1:] for column in writer.history])
      try:
        writer.flush(timeout_ms=self._push_timeout_ms)
      except reverb.errors.DeadlineExceededError:
        raise tf.errors.DeadlineExceededError(
            None, None, f'weight push to {self._address} not confirmed within '
            f'{self._push_timeout_ms / 1000:g} s') from None
    finally:
      writer.close()  # Does not wait: an unconfirmed item is dropped with the stream.

  def _signed(self, values):
    return [value for i, value in enumerate(values) if i != self._signature_index]

  def _read(self, client) -> List[np.ndarray]:
    for steps in client.sample(constants.VARIABLE_TABLE, num_samples=1):
      return list(steps[0].data)  # One item of one step: the flattened nest.
    raise RuntimeError('the variable table\'s sampler ended without an item')

  def _read_within_deadline(self) -> Optional[List[np.ndarray]]:
    """The newest item's columns, or None if none came within `pull_timeout_s`.

    Raises:
      Whatever the read raised (a CONNECTION_ERRORS error when the server is gone).
    """
    if self._pending is not None:
      if not self._pending.done():
        return None
      self._pending = None  # Its item, or its error, is older than this pull: dropped.
    read = concurrent.futures.Future()
    client = self._session.client

    def _run():
      try:
        read.set_result(self._read(client))
      except BaseException as e:  # pylint: disable=broad-except  (raised by result() below)
        read.set_exception(e)
    # A daemon thread: a read still waiting on the server never holds up the process's exit.
    threading.Thread(target=_run, daemon=True, name='weights pull').start()
    try:
      return read.result(timeout=self._pull_timeout_s)
    except concurrent.futures.TimeoutError:
      self._pending = read
      return None

  def pull(self, not_older_than: Optional[int] = None) -> Optional[int]:
    """Loads the newest pushed values into the variables, if their signature verifies.

    Args:
      not_older_than: Weights of an earlier train step are not loaded (a replay server
        restored from an old checkpoint holds the weights of that time until the learner's
        next push).

    Returns:
      The learner's train step of the loaded weights, or None if the table stayed empty for
      `pull_timeout_s`, held older weights, or held an item that is not signed with the run's
      key (`refused` is True then; nothing was changed).
    """
    self.refused = False
    values = self._read_within_deadline()
    if values is None:
      return None
    if not self._signer.verify(self._signed(values), values[self._signature_index]):
      self.refused = True
      return None
    step = int(values[self._step_index])
    if not_older_than is not None and step < not_older_than:
      self.older_step = step
      return None
    for variable, value in zip(self._flat_variables, values):
      variable.assign(value, read_value=False)
    self.older_step = None
    return step


class PushWatch:
  """Counts the variable table's inserts that are not this learner's pushes, and logs them.

  Anyone who reaches the server can insert into the variable table: a peer on the network, or
  a second learner pointed at this run's server. Neither can stop this learner: actors load
  only items signed with the run's key, a replayed old item is older than their weights, and
  this learner's next push replaces whatever was inserted. So foreign inserts are a fault to
  report, not an input to refuse (refusing would hand anyone who reaches the port a way to end
  the run). The learner watches the table from its connection to its first push, at least
  `window_s` (`check_start`: a learner that is already running pushes every few seconds), then
  before each of its own pushes checks that the count is what its last push left
  (`before_push`, `after_push`). A restarted server restores a lower count, which becomes the
  new baseline. The first foreign insert is logged at once, later ones at most every
  `log_every_s` with the running total (`foreign`).
  """

  def __init__(self, session, window_s: float = 10.0, clock=time.monotonic, sleep=time.sleep,
               log_every_s: float = 60.0):
    """`session`: the learner's `session.ServerSession`; the table is read through its probes."""
    self._session, self._address, self._window_s = session, session.address, window_s
    self._clock, self._sleep = clock, sleep
    self._log_every_s = log_every_s
    self._logged_at = None
    self.foreign = 0  # Inserts into the variable table that were not this learner's pushes.
    self._started = clock()
    self._baseline = self._count()

  def _count(self) -> Optional[int]:
    info = self._session.probe()
    if info is None:
      return None
    return int(info[constants.VARIABLE_TABLE].rate_limiter_info.insert_stats.completed)

  def _foreign(self, inserts: int, since: str) -> None:
    self.foreign += inserts
    now = self._clock()
    if self._logged_at is not None and now - self._logged_at < self._log_every_s:
      return
    self._logged_at = now
    logging.warning(
        'learner: the variable table at %s took %d insert(s) %s that are not this learner\'s '
        '(%d in all): a second learner on this server, or a peer on the network. Actors load '
        'only weights signed with this run\'s key, and the next push replaces it; if another '
        'learner runs against this server, stop it, or give each run its own replay server '
        '(--port) and --root_dir', self._address, inserts, since, self.foreign)

  def check_start(self) -> None:
    """Waits out the rest of `window_s` since construction; logs what was inserted meanwhile.

    A variable table that nothing was ever inserted into (a new server, or one restored from
    a checkpoint without pushes) has no running learner behind it, and is not waited on: of two
    learners that start together, the one that pushes second finds the other's push here or
    in `before_push`, before its own first push.
    """
    remaining = self._window_s - (self._clock() - self._started)
    if self._baseline == 0:
      remaining = 0
    if remaining > 0:
      logging.info('learner: watching the variable table for %.0f s for another learner',
                   remaining)
      self._sleep(remaining)
    count = self._count()
    if None not in (count, self._baseline) and count > self._baseline:
      self._foreign(count - self._baseline, f'in the {self._window_s:g} s before its first push')
    if count is not None:
      self._baseline = count

  def before_push(self) -> None:
    """Logs inserts other than this learner's pushes since `after_push`.

    Raises:
      tf.errors.UnavailableError: The server does not answer (a push would only wait out its
        deadline).
    """
    count = self._count()
    if count is None:
      raise tf.errors.UnavailableError(None, None,
                                       f'replay server {self._address} not answering')
    if self._baseline is None:
      self._baseline = count
      return
    if count > self._baseline:
      self._foreign(count - self._baseline, 'since its previous push')
    self._baseline = count  # Lower after a server restart from an older checkpoint.

  def after_push(self) -> None:
    count = self._count()
    if count is not None:
      self._baseline = count
