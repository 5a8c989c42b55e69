"""Moving policy weights through the variable table, with deadlines.

Items have the layout of TF-Agents' `ReverbVariableContainer` (one single-step item of the
flattened nest in a `max_size=1` table with that signature), so either side may be the stock
container. Two of its calls are replaced, each for a failure it has:
- its `pull` samples with no deadline, so a pull against an empty table (a restarted server
  before the learner's next push) would block forever; `pull` here reads the item through a
  Reverb dataset with a rate-limiter timeout and returns None when no weights are there yet;
- its `push` goes through a `reverb.TFClient` resource, which another client's teardown in the
  same process can destroy (`NotFoundError: Resource .../ReverbClient does not exist`); `push`
  here inserts through the Python client's trajectory writer, with a deadline. (The Python
  client's `insert` and legacy `writer` block without one while the server is away: creating
  a legacy writer waits for the server however long it takes.)
"""

import time
from typing import Optional

from absl import logging
import reverb
import tensorflow as tf

from common import constants
from common.errors import UserError


class VariableClient:
  """Pushes and pulls one nest of variables ({POLICY_KEY: ..., TRAIN_STEP_KEY: ...})."""

  def __init__(self, session, variables, pull_timeout_s: float = 2.0,
               push_timeout_s: float = 30.0):
    """
    Args:
      session: The process's `session.ServerSession` (connected); pushes go through its
        client.
      variables: The nest, as returned by `agents.policy_variables`.
      pull_timeout_s: How long a pull waits for an item before returning None.
      push_timeout_s: How long a push waits for the server to confirm the item before it
        raises `tf.errors.DeadlineExceededError`.
    """
    self._session = session
    self._address = session.address
    self._variables = variables
    self._flat_variables = tf.nest.flatten(variables)
    self._timeout_ms = int(pull_timeout_s * 1000)
    self._push_timeout_ms = int(push_timeout_s * 1000)
    self.older_step = None  # The train step of the last older weights that were not loaded.
    self._dataset = reverb.TimestepDataset(
        server_address=session.address,
        table=constants.VARIABLE_TABLE,
        dtypes=tuple(v.dtype for v in self._flat_variables),
        shapes=tuple(v.shape for v in self._flat_variables),
        max_in_flight_samples_per_worker=1,
        rate_limiter_timeout_ms=self._timeout_ms).take(1)

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
      writer.append([v.numpy() for v in self._flat_variables])
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

  def pull(self, not_older_than: Optional[int] = None) -> Optional[int]:
    """Loads the newest pushed values into the variables.

    Args:
      not_older_than: Weights of an earlier train step are not loaded (a replay server
        restored from an old checkpoint holds the weights of that time until the learner's
        next push).

    Returns:
      The learner's train step of the loaded weights, or None if the table stayed empty for
      `pull_timeout_s`, or held older weights (nothing was changed then).
    """
    step_index = next(i for i, v in enumerate(self._flat_variables)
                      if v is self._variables[constants.TRAIN_STEP_KEY])
    for sample in self._dataset:
      step = int(sample.data[step_index].numpy())
      if not_older_than is not None and step < not_older_than:
        self.older_step = step
        return None
      for variable, value in zip(self._flat_variables, sample.data):
        variable.assign(value)
      self.older_step = None
      return step
    return None


class SecondLearnerError(UserError):
  """Another learner pushes weights to the same replay server."""


class PushWatch:
  """Tells this learner's weight pushes from another's, by the variable table's insert count.

  Two learners on one server would overwrite each other's weights in every actor. A learner
  watches the table from its connection to its first push, at least `window_s` (`check_start`:
  a learner that is already running pushes every few seconds), then, before each of its own
  pushes, that the count is what its last push left (`before_push`, `after_push`). A restarted
  server restores a lower count, which becomes the new baseline.
  """

  def __init__(self, session, window_s: float = 10.0, clock=time.monotonic, sleep=time.sleep):
    """`session`: the learner's `session.ServerSession`; the table is read through its probes."""
    self._session, self._address, self._window_s = session, session.address, window_s
    self._clock, self._sleep = clock, sleep
    self._started = clock()
    self._baseline = self._count()

  def _count(self) -> Optional[int]:
    info = self._session.probe()
    if info is None:
      return None
    return int(info[constants.VARIABLE_TABLE].rate_limiter_info.insert_stats.completed)

  def _refuse(self, pushes: int, since: str) -> None:
    raise SecondLearnerError(
        f'another learner pushes weights to the replay server at {self._address} ({pushes} '
        f'push(es) {since} that are not this learner\'s): stop it, or give each run its own '
        'replay server (--port) and --root_dir')

  def check_start(self) -> None:
    """Waits out the rest of `window_s` since construction; raises if anything was pushed.

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
      self._refuse(count - self._baseline, f'in the {self._window_s:g} s before its first')
    if count is not None:
      self._baseline = count

  def before_push(self) -> None:
    """Raises if pushes other than this learner's arrived since `after_push`.

    Raises:
      SecondLearnerError: Another learner pushed.
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
      self._refuse(count - self._baseline, 'since its previous push')
    self._baseline = count  # Lower after a server restart from an older checkpoint.

  def after_push(self) -> None:
    count = self._count()
    if count is not None:
      self._baseline = count
