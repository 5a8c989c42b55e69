"""Policy inference for the collect loop: one compiled call per batch of environments.

TF-Agents' PyTFEagerPolicy converts and re-nests the time step, then goes through
`tf.function`'s polymorphic dispatch (argument canonicalization, trace-cache lookup) on every
call; on CartPole that is most of an actor's time. `CompiledPolicy` traces the policy once for a
fixed batch size into a concrete function of flat tensors (optionally XLA-compiled), and each call
is one invocation of that function, numpy in and numpy out. `RandomPolicy` draws the warm-up
actions with numpy, without TensorFlow. `make_policy` picks between `CompiledPolicy` and the
NumPy forward pass of actor/numpy_policy.py (`ActorConfig.inference`).
"""

from typing import Tuple

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec


class CompiledPolicy:
  """`tf_policy.action` for batches of exactly `batch_size` time steps.

  The policy's variables are captured by reference, so weights assigned later (pulls from the
  variable table) are used by the next call without retracing.

  A recurrent policy's state is carried from one call to the next: each environment's state is
  its own row of the batched state. TF-Agents' recurrent networks start from the zero state
  wherever the step type is FIRST, so an environment whose episode ended (VectorEnv returns its
  FIRST step next) starts again from the zero state on its own, and the other environments'
  states go on; tests/test_recurrent.py checks both.
  """

  def __init__(self, tf_policy, batch_size: int, jit_compile: bool = False):
    self._policy = tf_policy
    self._time_step_spec = tf_policy.time_step_spec
    self._action_spec = tf_policy.action_spec
    self._info_spec = tf_policy.info_spec
    self._state_spec = tf_policy.policy_state_spec
    self._batch_size = batch_size
    self._num_action = len(tf.nest.flatten(self._action_spec))
    self._num_info = len(tf.nest.flatten(self._info_spec))
    time_steps = tf.nest.flatten(
        tensor_spec.add_outer_dims_nest(self._time_step_spec, (batch_size,)))
    states = tf.nest.flatten(tensor_spec.add_outer_dims_nest(self._state_spec, (batch_size,)))
    num_time_step = len(time_steps)
    flat_specs = [tf.TensorSpec(s.shape, s.dtype) for s in time_steps + states]

    def action(*flat):
      time_step = tf.nest.pack_sequence_as(self._time_step_spec, list(flat[:num_time_step]))
      state = tf.nest.pack_sequence_as(self._state_spec, list(flat[num_time_step:]))
      step = tf_policy.action(time_step, state)
      return (tf.nest.flatten(step.action) + tf.nest.flatten(step.info)
              + tf.nest.flatten(step.state))

    self._fn = tf.function(action, autograph=False,
                           jit_compile=jit_compile).get_concrete_function(*flat_specs)
    # The concrete function's public __call__ re-binds and re-casts every argument against its
    # signature (half of the call on CartPole); the inputs here always match it, so call the
    # flat entry point with the captured variables directly.
    self._captured = self._fn.captured_inputs
    self._call_flat = getattr(self._fn, '_call_flat', None)
    self.reset()

  def reset(self) -> None:
    """Every environment back to the zero state (nothing to do for a feed-forward policy)."""
    self._state = [np.zeros((self._batch_size,) + tuple(s.shape), s.dtype.as_numpy_dtype)
                   for s in tf.nest.flatten(self._state_spec)]

  @property
  def state(self):
    """The batched policy state after the last call, as a nest of numpy arrays (() if none)."""
    return tf.nest.pack_sequence_as(self._state_spec, self._state)

  def sync(self) -> None:
    """Nothing to do: the traced function reads the variables themselves."""

  def __call__(self, time_step) -> Tuple[object, object]:
    """Returns (action, info) as numpy nests with the batch dimension; keeps the new state."""
    flat = tf.nest.flatten(time_step) + self._state
    if self._call_flat is not None:
      outputs = self._call_flat([tf.constant(x) for x in flat], self._captured)
    else:
      outputs = self._fn(*flat)
    outputs = [o.numpy() for o in outputs]
    action = tf.nest.pack_sequence_as(self._action_spec, outputs[:self._num_action])
    end = self._num_action + self._num_info
    info = tf.nest.pack_sequence_as(self._info_spec, outputs[self._num_action:end])
    if self._state:
      self._state = outputs[end:]
    return action, info


def make_policy(tf_policy, batch_size: int, mode: str = 'auto', seed: int = 0,
                calls: int = 200):
  """The collect policy's inference path for `ActorConfig.inference` (`mode`).

  'tf': a `CompiledPolicy` (which carries a recurrent policy's state). 'numpy': the
  `numpy_policy` twin. 'auto': where there is a twin,
  whichever of the two is faster here: both are timed on the same zero time step, `calls`
  calls each in three alternating rounds (about 0.1-0.5 s at start-up), and the lower median
  wins; without a twin, `CompiledPolicy`. The network's size, the batch and the machine's BLAS
  decide, so the choice is measured where it runs rather than assumed. Both are called with a
  numpy time step and return (action, info); `sync()` must follow every weight pull. The
  returned policy's `description` says what was chosen and why.

  Raises:
    UserError: 'numpy' for a policy that has no NumPy twin.
  """
  # pylint: disable=g-import-not-at-top
  from actor import numpy_policy
  from common.errors import UserError
  twin = None
  if mode in ('auto', 'numpy'):
    twin = numpy_policy.for_policy(tf_policy, batch_size, seed)
    if twin is None and mode == 'numpy':
      raise UserError(f'ActorConfig.inference=\'numpy\' but {type(tf_policy).__name__} over this '
                      'network has no NumPy twin (dense DQN and SAC networks only): bind '
                      '\'auto\' or \'tf\'')
  if twin is not None and mode == 'numpy':
    twin.description = f'NumPy {type(twin).__name__} (ActorConfig.inference=\'numpy\')'
    return twin
  compiled = CompiledPolicy(tf_policy, batch_size)
  if twin is None:
    compiled.description = ('TensorFlow CompiledPolicy' + (
        ' (policy state per environment)' if compiled.state else '') + (
        ' (no NumPy twin for this policy)' if mode == 'auto' else
        ' (ActorConfig.inference=\'tf\')'))
    return compiled
  step = zero_time_step(tf_policy.time_step_spec, batch_size)
  numpy_s, tf_s = time_per_call([twin, compiled], step, calls)
  chosen = twin if numpy_s <= tf_s else compiled
  chosen.description = (f'{"NumPy " + type(twin).__name__ if chosen is twin else "TensorFlow"} '
                        f'(measured {1e6 * numpy_s:.0f} us per call in NumPy, '
                        f'{1e6 * tf_s:.0f} us in TensorFlow)')
  return chosen


def zero_time_step(time_step_spec, batch_size: int):
  """A time step of zeros with the batch dimension, as numpy arrays."""
  return tf.nest.map_structure(
      lambda s: np.zeros((batch_size,) + tuple(s.shape), s.dtype.as_numpy_dtype),
      time_step_spec)


def time_per_call(policies, time_step, calls: int, rounds: int = 3):
  """Median seconds per call of each policy over `rounds` alternating rounds of `calls`."""
  import time  # pylint: disable=g-import-not-at-top
  for policy in policies:
    policy(time_step)  # Warm-up: the first call of a traced function is slower.
  samples = [[] for _ in policies]
  for _ in range(rounds):
    for policy, out in zip(policies, samples):
      start = time.perf_counter()
      for _ in range(calls):
        policy(time_step)
      out.append((time.perf_counter() - start) / calls)
  return [sorted(out)[len(out) // 2] for out in samples]


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
