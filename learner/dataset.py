"""The learner's replay data: the distributed dataset of sampled batches, and the on-policy
item iterator; both end (OutOfRangeError) when the rate limiter holds a sample past the
timeout, so that the learner logs the table's state instead of hanging.

Both skip items with an inf or NaN value (`skip_non_finite`). Actors never write one (their
environments' checks refuse such observations), so one comes from elsewhere: anyone who
reaches the server can insert items. Trained on, it would turn the weights into NaN and end the
run as diverged; skipped, it is counted and logged.
"""

import threading
import time

from absl import logging
import numpy as np
import reverb
import tensorflow as tf

from common import constants
from common import replay
from common.errors import UserError


def distributed_iterator_fn(strategy: tf.distribute.Strategy, server_address: str, specs,
                            learner_config):
  """A function that makes a fresh distributed iterator of batches over the replay table.

  Each replica reads its share of `LearnerConfig.batch_size` from its own dataset.

  Raises:
    UserError: the batch does not split over the replicas.
  """
  replicas = strategy.num_replicas_in_sync
  if learner_config.batch_size % replicas:
    raise UserError(f'LearnerConfig.batch_size={learner_config.batch_size} is not divisible by '
                    f'the {replicas} replicas: pick a multiple')
  timeout_ms = int(learner_config.rate_limiter_timeout_s * 1000)

  def dataset_fn(context: tf.distribute.InputContext):
    return make_dataset(server_address, specs.collect_data_spec,
                        context.get_per_replica_batch_size(learner_config.batch_size),
                        specs.sequence_length, timeout_ms, specs.frame_stack)

  return lambda: iter(strategy.distribute_datasets_from_function(dataset_fn))


def item_iterator_fn(server_address: str, specs, learner_config):
  """A function that makes a fresh iterator of single items (`make_item_iterator`)."""
  timeout_ms = int(learner_config.rate_limiter_timeout_s * 1000)
  return lambda: make_item_iterator(server_address, constants.REPLAY_TABLE,
                                    specs.replay_signature, timeout_ms)


def make_dataset(server_address: str, collect_data_spec, batch_size: int, sequence_length: int,
                 rate_limiter_timeout_ms: int, frame_stack: int = 0) -> tf.data.Dataset:
  """Batches of (experience, sample_info) from the replay table, prefetched.

  A sample that waits on the rate limiter longer than `rate_limiter_timeout_ms` ends the
  dataset (OutOfRangeError from the iterator), so the caller can log the table state and build
  a new iterator instead of hanging. With `frame_stack`, items hold single frames and the
  experience has them stacked again (`restack_frames`), as the collect data spec has them.
  """
  signature = replay.replay_signature(collect_data_spec, sequence_length, frame_stack)
  dataset = reverb.TrajectoryDataset(
      server_address=server_address,
      table=constants.REPLAY_TABLE,
      dtypes=tf.nest.map_structure(lambda s: s.dtype, signature),
      shapes=tf.nest.map_structure(lambda s: s.shape, signature),
      max_in_flight_samples_per_worker=2 * batch_size,
      rate_limiter_timeout_ms=rate_limiter_timeout_ms).filter(
          skip_non_finite(constants.REPLAY_TABLE))
  if frame_stack:
    dataset = dataset.map(lambda sample: (
        restack_frames(sample.data, sequence_length, frame_stack), sample.info))
  else:
    dataset = dataset.map(lambda sample: (sample.data, sample.info))
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def restack_frames(trajectory, sequence_length: int, frame_stack: int):
  """An item read with `replay_signature(..., frame_stack)` back as the collect data spec's
  trajectory: step t's observation is frames t .. t + frame_stack - 1, stacked on the last
  axis (oldest first, as FrameStack4 stacks them). Works on one item ([T, H, W] frames)."""
  frames = trajectory.observation
  stacked = tf.stack([frames[k:k + sequence_length] for k in range(frame_stack)], axis=-1)
  return trajectory._replace(observation=stacked)


def make_item_iterator(server_address: str, table: str, signature, timeout_ms: int):
  """Single replay samples (data with its time axis, and info), one in flight at a time.

  One in flight, so that at most one item is taken from the queue ahead of the learner's need;
  a sample held by the rate limiter past `timeout_ms` ends the iterator (OutOfRangeError).
  """
  dataset = reverb.TrajectoryDataset(
      server_address=server_address, table=table,
      dtypes=tf.nest.map_structure(lambda s: s.dtype, signature),
      shapes=tf.nest.map_structure(lambda s: s.shape, signature),
      max_in_flight_samples_per_worker=1, num_workers_per_iterator=1,
      rate_limiter_timeout_ms=timeout_ms).filter(skip_non_finite(table))
  return iter(dataset)


class SkippedItems:
  """The count of items skipped for an inf or NaN value; the first is logged at once, later
  ones at most every `log_every_s` with the total."""

  def __init__(self, log_every_s: float = 600.0):
    self._lock = threading.Lock()
    self._log_every_s = log_every_s
    self._logged_at = None
    self.count = 0

  def add(self, key: int, table: str) -> None:
    with self._lock:
      self.count += 1
      now = time.monotonic()
      if self._logged_at is not None and now - self._logged_at < self._log_every_s:
        return
      self._logged_at = now
      logging.warning('learner: skipped replay item %d of table %s: it holds inf or NaN, which '
                      'no actor writes (a peer on the network inserted it?); %d skipped in all. '
                      'Keep the replay server\'s port closed to the network (docs/security.md)',
                      key, table, self.count)


SKIPPED = SkippedItems()


def skip_non_finite(table: str):
  """A `Dataset.filter` predicate over samples of `table`: False (and `SKIPPED` counts it) for
  an item with an inf or NaN in any floating-point column."""

  def skipped(key) -> np.bool_:
    SKIPPED.add(int(key.numpy()), table)
    return np.False_

  def keep(sample: reverb.ReplaySample) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(column))
              for column in tf.nest.flatten(sample.data) if column.dtype.is_floating]
    if not checks:
      return tf.constant(True)
    finite = tf.reduce_all(tf.stack(checks))
    return tf.cond(finite, lambda: finite,
                   lambda: tf.reshape(tf.py_function(skipped, [sample.info.key], tf.bool), []))

  return keep
