"""Reverb tables, the learner's dataset and the actors' observer, all derived from specs."""

from typing import List, Optional

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.replay_buffers import reverb_utils
from tf_agents.specs import tensor_spec

from common import constants
from common.config import ReplayConfig
from common.errors import UserError


def replay_signature(collect_data_spec, sequence_length: int):
  """Signature of one replay item: the trajectory spec with a leading time dimension."""
  return tensor_spec.add_outer_dim(tensor_spec.from_spec(collect_data_spec), sequence_length)


def make_rate_limiter(config: ReplayConfig) -> reverb.rate_limiters.RateLimiter:
  """SampleToInsertRatio when `samples_per_insert` is set, MinSize otherwise.

  The error buffer is `tolerance * min_size * samples_per_insert`, raised to Reverb's floor of
  `max(1, samples_per_insert)` so that neither side can be blocked for good.
  """
  config.validate()
  if config.samples_per_insert is None:
    return reverb.rate_limiters.MinSize(config.min_size)
  spi = float(config.samples_per_insert)
  error_buffer = max(config.samples_per_insert_tolerance * config.min_size * spi,
                     max(1.0, spi))
  try:
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=spi, min_size_to_sample=config.min_size, error_buffer=error_buffer)
  except ValueError as e:
    raise UserError(f'Reverb rejects the rate limiter ({e}): change ReplayConfig.min_size or '
                    'ReplayConfig.samples_per_insert') from None


def make_replay_table(collect_data_spec, config: ReplayConfig) -> reverb.Table:
  """The uniform, FIFO replay table."""
  return reverb.Table(
      name=constants.REPLAY_TABLE,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=config.max_size,
      rate_limiter=make_rate_limiter(config),
      signature=replay_signature(collect_data_spec, config.sequence_length))


def make_variable_table(signature) -> reverb.Table:
  """The variable table: one item, replaced by each push (ReverbVariableContainer contract)."""
  return reverb.Table(
      name=constants.VARIABLE_TABLE,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=1,
      max_times_sampled=0,
      rate_limiter=reverb.rate_limiters.MinSize(1),
      signature=signature)


def make_dataset(server_address: str, collect_data_spec, batch_size: int, sequence_length: int,
                 rate_limiter_timeout_ms: int) -> tf.data.Dataset:
  """Batches of (experience, sample_info) from the replay table, prefetched.

  A sample that waits on the rate limiter longer than `rate_limiter_timeout_ms` ends the
  dataset (OutOfRangeError from the iterator), so the caller can log the table state and build
  a new iterator instead of hanging.
  """
  signature = replay_signature(collect_data_spec, sequence_length)
  dataset = reverb.TrajectoryDataset(
      server_address=server_address,
      table=constants.REPLAY_TABLE,
      dtypes=tf.nest.map_structure(lambda s: s.dtype, signature),
      shapes=tf.nest.map_structure(lambda s: s.shape, signature),
      max_in_flight_samples_per_worker=2 * batch_size,
      rate_limiter_timeout_ms=rate_limiter_timeout_ms)
  dataset = dataset.map(lambda sample: (sample.data, sample.info))
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class BatchedTrajectoryObserver:
  """TF-Agents' ReverbAddTrajectoryObserver for a batch of environments.

  The stock observer takes unbatched trajectories only; this keeps one per environment of the
  batch and hands each its slice, so every environment writes its own contiguous sequences.
  """

  def __init__(self, py_client: reverb.Client, num_envs: int, sequence_length: int):
    self._num_envs = num_envs
    self._observers = [
        reverb_utils.ReverbAddTrajectoryObserver(
            py_client, constants.REPLAY_TABLE, sequence_length=sequence_length,
            stride_length=1)
        for _ in range(num_envs)
    ]

  @property
  def observers(self) -> List[reverb_utils.ReverbAddTrajectoryObserver]:
    return self._observers

  def __call__(self, trajectory) -> None:
    if self._num_envs == 1:
      self._observers[0](trajectory)
      return
    flat = tf.nest.flatten(trajectory)
    structure = trajectory
    for i, observer in enumerate(self._observers):
      observer(tf.nest.pack_sequence_as(structure, [np.asarray(x)[i] for x in flat]))

  def flush(self) -> None:
    for observer in self._observers:
      observer.flush()

  def reset(self) -> None:
    """Drops cached steps (used when the environments are reset mid-episode)."""
    for observer in self._observers:
      observer.reset(write_cached_steps=False)

  def close(self) -> None:
    for observer in self._observers:
      try:
        observer.close()
      except Exception:  # pylint: disable=broad-except
        pass  # The server may be gone; the writer is discarded either way.

  def reopen(self) -> None:
    """Opens fresh writers (after the server came back)."""
    for observer in self._observers:
      observer.open()


def table_state(info) -> str:
  """One line describing a table: size and rate-limiter counters, for stall logs."""
  rl = info.rate_limiter_info
  return (f'table {info.name}: size={info.current_size}/{info.max_size} '
          f'inserts={rl.insert_stats.completed} samples={rl.sample_stats.completed} '
          f'samples_per_insert={rl.samples_per_insert:g} min_size_to_sample='
          f'{rl.min_size_to_sample} allowed_error=[{rl.min_diff:g}, {rl.max_diff:g}]')


def inserted_items(info) -> int:
  """Items ever inserted into a table (env steps collected, for sequence tables)."""
  return int(info.rate_limiter_info.insert_stats.completed)
