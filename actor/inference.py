"""Policy inference for the collect loop: one compiled call per batch of environments.

TF-Agents' PyTFEagerPolicy converts and re-nests the time step, then goes through
`tf.function`'s polymorphic dispatch (argument canonicalization, trace-cache lookup) on every
call; on CartPole that is most of an actor's time. `CompiledPolicy` traces the policy once for a
fixed batch size into a concrete function of flat tensors (optionally XLA-compiled), and each call
is one invocation of that function, numpy in and numpy out. `RandomPolicy` draws the warm-up
actions with numpy, without TensorFlow.
"""

from typing import Tuple

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec


class CompiledPolicy:
  """`tf_policy.action` for batches of exactly `batch_size` time steps.

  The policy's variables are captured by reference, so weights assigned later (pulls from the
  variable table) are used by the next call without retracing.
  """

  def __init__(self, tf_policy, batch_size: int, jit_compile: bool = False):
    if tf.nest.flatten(tf_policy.policy_state_spec):
      raise ValueError('CompiledPolicy supports stateless (feed-forward) policies only')
    self._policy = tf_policy
    self._time_step_spec = tf_policy.time_step_spec
    self._action_spec = tf_policy.action_spec
    self._info_spec = tf_policy.info_spec
    self._num_action = len(tf.nest.flatten(self._action_spec))
    batched = tensor_spec.add_outer_dims_nest(self._time_step_spec, (batch_size,))
    flat_specs = [tf.TensorSpec(s.shape, s.dtype) for s in tf.nest.flatten(batched)]

    def action(*flat_time_step):
      time_step = tf.nest.pack_sequence_as(self._time_step_spec, list(flat_time_step))
      step = tf_policy.action(time_step)
      return tf.nest.flatten(step.action) + tf.nest.flatten(step.info)

    self._fn = tf.function(action, autograph=False,
                           jit_compile=jit_compile).get_concrete_function(*flat_specs)
    # The concrete function's public __call__ re-binds and re-casts every argument against its
    # signature (half of the call on CartPole); the inputs here always match it, so call the
    # flat entry point with the captured variables directly.
    self._captured = self._fn.captured_inputs
    self._call_flat = getattr(self._fn, '_call_flat', None)

  def __call__(self, time_step) -> Tuple[object, object]:
    """Returns (action, info) as numpy nests with the batch dimension."""
    flat = tf.nest.flatten(time_step)
    if self._call_flat is not None:
      outputs = self._call_flat([tf.constant(x) for x in flat], self._captured)
    else:
      outputs = self._fn(*flat)
    outputs = [o.numpy() for o in outputs]
    action = tf.nest.pack_sequence_as(self._action_spec, outputs[:self._num_action])
    info = tf.nest.pack_sequence_as(self._info_spec, outputs[self._num_action:])
    return action, info


class RandomPolicy:
  """Uniform actions within the action spec's bounds, drawn with numpy."""

  def __init__(self, action_spec, info_spec, batch_size: int, seed: int):
    self._action_spec = action_spec
    self._info_spec = info_spec
    self._batch_size = batch_size
    self._rng = np.random.default_rng(seed)
    self._info = tf.nest.map_structure(
        lambda s: np.zeros((batch_size,) + tuple(s.shape), s.dtype.as_numpy_dtype
                           if hasattr(s.dtype, 'as_numpy_dtype') else s.dtype), info_spec)

  def _sample(self, spec):
    shape = (self._batch_size,) + tuple(spec.shape)
    dtype = spec.dtype.as_numpy_dtype if hasattr(spec.dtype, 'as_numpy_dtype') else spec.dtype
    low = np.asarray(spec.minimum)
    high = np.asarray(spec.maximum)
    if np.issubdtype(dtype, np.integer):
      return self._rng.integers(low, high + 1, size=shape).astype(dtype)
    return self._rng.uniform(low, high, size=shape).astype(dtype)

  def __call__(self, time_step) -> Tuple[object, object]:
    del time_step
    return tf.nest.map_structure(self._sample, self._action_spec), self._info
