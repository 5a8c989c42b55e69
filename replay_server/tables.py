"""The replay server's tables: the replay table (of the agent's family), the variable table and
the status table, all derived from specs."""

import reverb
import tensorflow as tf

from common import constants
from common import replay
from common.config import ReplayConfig
from common.errors import UserError


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


def make_replay_table(collect_data_spec, config: ReplayConfig, sequence_length: int,
                      frame_stack: int = 0, sampler=None) -> reverb.Table:
  """The replay table of off-policy items: FIFO eviction, `config`'s size and rate limiter.

  `sampler`: the family's (`reverb.selectors`), uniform if None. `frame_stack`: observations
  are stored as single frames (`replay.replay_signature`).
  """
  return reverb.Table(
      name=constants.REPLAY_TABLE,
      sampler=sampler or reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=config.max_size,
      rate_limiter=make_rate_limiter(config),
      signature=replay.replay_signature(collect_data_spec, sequence_length, frame_stack))


def make_queue_table(collect_data_spec, sequence_length: int, capacity: int) -> reverb.Table:
  """An on-policy agent's replay table: a queue of `capacity` items, each sampled once.

  Reverb's queue: Fifo sampler and remover, `max_times_sampled=1`, and a `Queue` rate limiter
  that holds inserts while `capacity` items wait and holds samples while none does.
  """
  if capacity < 1:
    raise UserError(f'the on-policy queue would hold {capacity} items: bind a positive '
                    'LearnerConfig.batch_size')
  return reverb.Table.queue(name=constants.REPLAY_TABLE, max_size=capacity,
                            signature=replay.replay_signature(collect_data_spec, sequence_length))


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


def make_status_table() -> reverb.Table:
  """The status table: the newest JSON status records of the actors (`publish_status`).

  Read by `reverb-fleet status` without TensorFlow (Reverb stores string tensors uncompressed;
  see common/reverb_rpc.py). Uniform sampling, FIFO eviction, never rate-limited by size.
  """
  return reverb.Table(
      name=constants.STATUS_TABLE,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=constants.STATUS_TABLE_SIZE,
      max_times_sampled=0,
      rate_limiter=reverb.rate_limiters.MinSize(1),
      signature=tf.TensorSpec((), tf.string, name='status'))


def make_tables(specs, replay_config: ReplayConfig, learner_config):
  """The replay table (its family's: `OffPolicy.replay_table`), the variable table and the
  status table, in that order, for `specs` (`builders.Specs`)."""
  return [
      specs.family.replay_table(specs, replay_config, learner_config),
      make_variable_table(specs.variables_signature),
      make_status_table(),
  ]
