"""The replay data contract every process derives the same way from specs: the replay item's
signature (single frames or stacks), and how to read a table's state from its info."""

from typing import Optional

import tensorflow as tf
from tf_agents.specs import tensor_spec


def replay_signature(collect_data_spec, sequence_length: int, frame_stack: int = 0):
  """Signature of one replay item: the trajectory spec with a leading time dimension.

  With `frame_stack` (frames stored once, `Specs.frame_stack`), the observation column holds
  single frames instead of stacks: `sequence_length + frame_stack - 1` of them, [T, H, W] for a
  [H, W, frame_stack] observation, the item's steps and the frames before its first step.
  """
  signature = tensor_spec.add_outer_dim(tensor_spec.from_spec(collect_data_spec),
                                        sequence_length)
  if not frame_stack:
    return signature
  obs = collect_data_spec.observation
  frames = tf.TensorSpec((sequence_length + frame_stack - 1,) + tuple(obs.shape[:-1]),
                         obs.dtype, name='observation_frames')
  return signature._replace(observation=frames)


def stacked_frames_layout(observation_spec, stack: int) -> Optional[str]:
  """Why observations of `observation_spec` cannot be stored as single frames of a `stack`-deep
  stack, or None when they can: one uint8 array [H, W, stack], oldest frame first."""
  if tf.nest.is_nested(observation_spec):
    return 'the observation is a nest, not one frame stack'
  shape = tuple(observation_spec.shape)
  if len(shape) != 3 or shape[-1] != stack or observation_spec.dtype != tf.uint8:
    return (f'the observation is {observation_spec.dtype.name}{list(shape)}, not a uint8 stack '
            f'of {stack} frames [H, W, {stack}]')
  return None


def table_state(info) -> str:
  """One line describing a table: size and rate-limiter counters, for stall logs.

  `info` is a table's entry of `reverb.Client.server_info()` or of `reverb_rpc.server_info()`.
  """
  if hasattr(info, 'rate_limiter_info'):
    rl = info.rate_limiter_info
    inserts, samples = rl.insert_stats.completed, rl.sample_stats.completed
  else:
    rl = info.rate_limiter
    inserts, samples = rl.inserts, rl.samples
  return (f'table {info.name}: size={info.current_size}/{info.max_size} '
          f'inserts={inserts} samples={samples} '
          f'samples_per_insert={rl.samples_per_insert:g} min_size_to_sample='
          f'{rl.min_size_to_sample} allowed_error=[{rl.min_diff:g}, {rl.max_diff:g}]')


def env_steps_per_item(specs) -> int:
  """Env steps that one replay insert stands for, from the agent's `builders.Specs`: an item's
  length for the on-policy queue (items end to end), else 1 (items overlap, stride 1); as
  `inserted_env_steps` counts them."""
  if not specs.family.is_queue:
    return 1
  shape = tf.nest.flatten(specs.replay_signature)[0].shape
  return int(shape[0]) if shape.rank else 1


def inserted_env_steps(info) -> int:
  """Env steps ever written to the replay table, from its info (`server_info()`).

  An off-policy table gets one item per env step (its items overlap, stride 1); the on-policy
  queue, the only table whose items are sampled once, gets items end to end, so each insert is
  as many env steps as its items have (the signature's time dimension).
  """
  items = int(info.rate_limiter_info.insert_stats.completed)
  if info.max_times_sampled == 1 and info.signature is not None:
    shape = tf.nest.flatten(info.signature)[0].shape
    if shape.rank:
      return items * int(shape[0])
  return items
