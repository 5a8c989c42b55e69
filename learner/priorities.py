"""Prioritized replay on the learner: importance weights, and new priorities sent back.

The learner samples items with probability P(i) = p_i^alpha / sum p^alpha (Reverb's Prioritized
selector), weights each item's loss by (N * P(i))^-beta divided by the batch's largest weight
(Schaul et al., 2016), and after every train step sets the sampled items' priorities to
|TD error| + epsilon. `PriorityWriter` sends those updates from a background thread: the train
loop only hands over the keys and errors of its last call, and updates that pile up while a
send is in flight are merged (the newest priority per key wins) into the next send.
"""

import threading
import time
from typing import Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from common.config import ReplayConfig


def importance_exponent(config: ReplayConfig, train_step) -> tf.Tensor:
  """beta at `train_step`: linear from `importance_exponent` to `importance_exponent_final`
  over `importance_anneal_steps` train steps (constant when that is 0)."""
  start = tf.constant(config.importance_exponent, tf.float64)
  if not config.importance_anneal_steps:
    return start
  fraction = tf.minimum(tf.cast(train_step, tf.float64) / config.importance_anneal_steps, 1.0)
  return start + fraction * (config.importance_exponent_final - config.importance_exponent)


def importance_weights(probability, table_size, beta) -> tf.Tensor:
  """(N * P(i))^-beta for each sampled item, divided by the batch's largest; float32 [B]."""
  probability = tf.cast(probability, tf.float64)
  size = tf.cast(table_size, tf.float64)
  weights = tf.pow(size * probability, -tf.cast(beta, tf.float64))
  return tf.cast(weights / tf.reduce_max(weights), tf.float32)


class PrioritizedStep:
  """One train step on a prioritized sample: weighted loss, then each item's new priority.

  Called per replica (inside `strategy.run`) with a batch of (experience, SampleInfo).
  """

  def __init__(self, agent, td_errors, config: ReplayConfig, train_step: tf.Variable):
    """
    Args:
      agent: The TF-Agents agent.
      td_errors: The agent builder's `td_errors(loss_info)` (per-item TD error).
      config: Gives beta, its annealing and epsilon.
      train_step: The learner's train step (for beta's annealing).
    """
    self._agent = agent
    self._td_errors = td_errors
    self._config = config
    self._train_step = train_step

  def __call__(self, experience, sample_info):
    """Returns (loss_info, keys uint64 [B], priorities float64 [B])."""
    beta = importance_exponent(self._config, self._train_step)
    weights = importance_weights(sample_info.probability, sample_info.table_size, beta)
    loss_info = self._agent.train(experience, weights=weights)
    errors = tf.reshape(self._td_errors(loss_info), [-1])
    priorities = tf.abs(tf.cast(errors, tf.float64)) + self._config.priority_epsilon
    return loss_info, sample_info.key, priorities


class PriorityWriter:
  """Writes new priorities to a replay table with `mutate_priorities`, off the train loop.

  `submit` never waits for the server. A key whose item was evicted meanwhile is ignored by the
  server. A failed send (the server is away) is logged and its updates dropped: the items keep
  their old priorities, and the learner's next samples bring new ones. A priority that is
  negative, NaN or infinite is never sent (a negative one stops Reverb's table worker, and with
  it every insert of every actor): it is counted in `refused`, logged, and its item keeps its
  old priority; the learner's divergence check stops the run on the loss that made it.
  """

  def __init__(self, session, table: str):
    """`session`: the learner's `session.ServerSession`; updates go through its client."""
    self._session = session
    self._table = table
    self._pending: Dict[int, float] = {}
    self._lock = threading.Condition()
    self._closed = False
    self._in_flight = False
    self._max_since_take = None
    self.sent_updates = 0  # Keys whose priority was sent.
    self.sends = 0  # mutate_priorities calls.
    self.failures = 0
    self.refused = 0  # Priorities not sent: negative, NaN or infinite.
    self._last_failure_log = -float('inf')
    self._last_refusal_log = -float('inf')
    self._thread = threading.Thread(target=self._run, name='priority-writer', daemon=True)
    self._thread.start()

  def submit(self, keys: np.ndarray, priorities: np.ndarray) -> None:
    """Queues new priorities for sampled keys (the newest one per key wins)."""
    keys = np.asarray(keys).reshape(-1)
    priorities = np.asarray(priorities, np.float64).reshape(-1)
    usable = np.isfinite(priorities) & (priorities >= 0)
    if not usable.all():
      bad = priorities[~usable]
      self.refused += bad.size
      if time.monotonic() - self._last_refusal_log >= 10:
        logging.warning('learner: %d new priorities not sent (%s among them: a priority must be '
                        'finite and >= 0); those items keep their old priorities', bad.size,
                        bad[0])
        self._last_refusal_log = time.monotonic()
      keys, priorities = keys[usable], priorities[usable]
    if not keys.size:
      return
    with self._lock:
      self._pending.update(zip(keys.tolist(), priorities.tolist()))
      batch_max = float(priorities.max())
      if self._max_since_take is None or batch_max > self._max_since_take:
        self._max_since_take = batch_max
      self._lock.notify()

  def take_max(self) -> Optional[float]:
    """The largest priority submitted since the last call (None if none was)."""
    with self._lock:
      value, self._max_since_take = self._max_since_take, None
    return value

  def _run(self) -> None:
    while True:
      with self._lock:
        while not self._pending and not self._closed:
          self._lock.wait()
        if not self._pending:
          return
        updates, self._pending = self._pending, {}
        self._in_flight = True
      try:
        self._session.client.mutate_priorities(self._table, updates=updates)
        self.sent_updates += len(updates)
        self.sends += 1
      except Exception as e:  # pylint: disable=broad-except  (the server may be away)
        self.failures += 1
        if time.monotonic() - self._last_failure_log >= 10:
          logging.warning('learner: %d priority updates not sent (%s); the items keep their '
                          'old priorities', len(updates), str(e).splitlines()[0][:200])
          self._last_failure_log = time.monotonic()
      finally:
        with self._lock:
          self._in_flight = False
          self._lock.notify_all()

  def flush(self, timeout_s: float = 10.0) -> bool:
    """Waits until every submitted update was sent (or failed); False on timeout."""
    deadline = time.monotonic() + timeout_s
    with self._lock:
      while self._pending or self._in_flight:
        left = deadline - time.monotonic()
        if left <= 0:
          return False
        self._lock.wait(left)
    return True

  def close(self, timeout_s: float = 10.0) -> None:
    """Sends what is queued (bounded by `timeout_s`) and stops the thread."""
    self.flush(timeout_s)
    with self._lock:
      self._closed = True
      self._pending.clear()
      self._lock.notify_all()
    self._thread.join(timeout_s)
