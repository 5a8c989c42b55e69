"""A batch of environments stepped in lockstep, as flat numpy batches.

TF-Agents' BatchedPyEnvironment stacks every time step with nest utilities that walk the
TimeStep structure per environment and per field, and each PyEnvironment wraps every gym step
in several Python layers (auto-reset, time limit, dtype matching, TimeStep construction); on a
cheap environment such as CartPole that costs several times the physics, on HalfCheetah about
13% of a step. `VectorEnv` steps the gym environments underneath the TF-Agents wrappers
directly, reproducing those wrappers' time steps exactly, and writes each step into
preallocated batch arrays, so the per-step cost is the environments' own.
"""

import time
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.environments import gym_wrapper
from tf_agents.environments import py_environment
from tf_agents.environments import wrappers
from tf_agents.trajectories import time_step as ts

from common import gymnasium_env

_FIRST = np.int32(ts.StepType.FIRST)
_MID = np.int32(ts.StepType.MID)
_LAST = np.int32(ts.StepType.LAST)


class _GymSlot:
  """One environment of the fast path: the gym (or Gymnasium) env and what its wrappers did.

  `adapter` is the `GymnasiumEnvironment` of a Gymnasium env (None for gym 0.23): its
  `reset_observation` resets with the pending seed, and `gym_env` is the Gymnasium env it wraps.
  """

  def __init__(self, gym_env, duration: Optional[int], discount: float, discrete: bool,
               adapter=None):
    self.gym_env = gym_env
    self.duration = duration  # TF-Agents TimeLimit's, None without one.
    self.discount = discount  # The wrapper's discount of non-terminal steps.
    self.discrete = discrete
    self.adapter = adapter
    self.num_steps = 0
    self.needs_reset = True


def _gym_slot(env: py_environment.PyEnvironment) -> Optional[_GymSlot]:
  """The fast-path view of `env` if it is what `make_environment` builds, else None.

  That is a GymWrapper (auto-reset, observation dtype matching, no spec dtype map), optionally
  inside one TimeLimit, with a single-array observation, reward and action. Anything else
  (other wrappers, nested specs) keeps the PyEnvironment path.
  """
  duration = None
  inner = env
  if isinstance(inner, wrappers.TimeLimit):
    duration = int(inner.duration)
    inner = inner.wrapped_env()
  if type(inner) is gymnasium_env.GymnasiumEnvironment:  # pylint: disable=unidiomatic-typecheck
    if tf.nest.is_nested(inner.observation_spec()):
      return None
    return _GymSlot(inner.gymnasium, duration, inner.discount, inner.discrete_action,
                    adapter=inner)
  if type(inner) is not gym_wrapper.GymWrapper:  # pylint: disable=unidiomatic-typecheck
    return None
  # pylint: disable=protected-access
  if not (inner._handle_auto_reset and inner._match_obs_space_dtype):
    return None
  if any(tf.nest.is_nested(s) for s in (inner.observation_spec(), inner.action_spec(),
                                       inner.reward_spec())):
    return None
  return _GymSlot(inner.gym, duration, float(inner._discount), bool(inner._action_is_discrete))
  # pylint: enable=protected-access


class VectorEnv:
  """`num_envs` PyEnvironments (each auto-resetting) behind one batched step.

  `reset()` and `step(actions)` return a TimeStep whose fields have a leading `num_envs`
  dimension. An environment whose previous step was LAST starts a new episode on this step
  (its FIRST step comes back), exactly like TF-Agents' auto-reset environments.

  When every environment is a GymWrapper or a GymnasiumEnvironment (optionally in a TimeLimit)
  with flat specs, as `common.environments.make_environment` builds them, the gym (Gymnasium)
  environments are stepped directly and the TimeSteps are those the wrappers would have
  returned: FIRST with reward 0 and discount 1 after a reset; LAST with discount 0 when gym
  says done (Gymnasium: terminated); LAST with the wrapper's discount when the TimeLimit's
  duration is reached (Gymnasium: truncated); MID otherwise; observations and rewards cast to
  the specs' dtypes. tests/test_fast_paths.py checks this field by field
  against BatchedPyEnvironment. The returned arrays are fresh each call.
  """

  def __init__(self, envs: Sequence[py_environment.PyEnvironment]):
    if not envs:
      raise ValueError('VectorEnv needs at least one environment')
    self._envs: List[py_environment.PyEnvironment] = list(envs)
    self.num_envs = len(self._envs)
    self._time_step_spec = self._envs[0].time_step_spec()
    self._action_spec = self._envs[0].action_spec()
    self._flat_observation = not tf.nest.is_nested(self._time_step_spec.observation) and (
        not tf.nest.is_nested(self._time_step_spec.reward))
    self.reset_seconds = 0.0  # Wall time in environment resets (gym path only).
    slots = [_gym_slot(env) for env in self._envs]
    self._slots: Optional[List[_GymSlot]] = slots if all(slots) else None
    if self._slots is not None:
      self._obs_shape = tuple(self._time_step_spec.observation.shape)
      self._obs_dtype = self._time_step_spec.observation.dtype
      self._reward_dtype = self._time_step_spec.reward.dtype
      self._discount_dtype = self._time_step_spec.discount.dtype

  @property
  def uses_gym_directly(self) -> bool:
    """True when the gym environments are stepped without the TF-Agents wrappers.

    Only then is `reset_seconds`, the time spent in environment resets, counted.
    """
    return self._slots is not None

  def time_step_spec(self):
    return self._time_step_spec

  def action_spec(self):
    return self._action_spec

  def _stack(self, steps: Sequence[ts.TimeStep]) -> ts.TimeStep:
    if self._flat_observation:
      return ts.TimeStep(np.stack([s.step_type for s in steps]),
                         np.stack([s.reward for s in steps]),
                         np.stack([s.discount for s in steps]),
                         np.stack([s.observation for s in steps]))
    flats = [tf.nest.flatten(s) for s in steps]
    stacked = [np.stack(column) for column in zip(*flats)]
    return tf.nest.pack_sequence_as(self._time_step_spec, stacked)

  def _empty_batch(self):
    n = self.num_envs
    return (np.empty(n, np.int32), np.empty(n, self._reward_dtype),
            np.empty(n, self._discount_dtype), np.empty((n,) + self._obs_shape, self._obs_dtype))

  def _reset_slot(self, slot: _GymSlot, i: int, step_type, reward, discount, observation):
    start = time.perf_counter()
    observation[i] = (slot.adapter.reset_observation() if slot.adapter is not None
                      else slot.gym_env.reset())
    self.reset_seconds += time.perf_counter() - start
    step_type[i] = _FIRST
    reward[i] = 0
    discount[i] = 1
    slot.num_steps = 0
    slot.needs_reset = False

  def reset(self) -> ts.TimeStep:
    if self._slots is None:
      return self._stack([env.reset() for env in self._envs])
    step_type, reward, discount, observation = self._empty_batch()
    for i, slot in enumerate(self._slots):
      self._reset_slot(slot, i, step_type, reward, discount, observation)
    return ts.TimeStep(step_type, reward, discount, observation)

  def step(self, actions) -> ts.TimeStep:
    """Steps environment i with `actions[i]` (a batched action nest)."""
    flat_actions = tf.nest.flatten(actions)
    if self._slots is not None:
      return self._step_gym(flat_actions[0])
    if len(flat_actions) == 1:
      column = flat_actions[0]
      steps = [env.step(column[i]) for i, env in enumerate(self._envs)]
    else:
      steps = [env.step(tf.nest.pack_sequence_as(self._action_spec,
                                                  [a[i] for a in flat_actions]))
               for i, env in enumerate(self._envs)]
    return self._stack(steps)

  def _step_gym(self, column) -> ts.TimeStep:
    step_type, reward, discount, observation = self._empty_batch()
    for i, slot in enumerate(self._slots):
      if slot.needs_reset:
        self._reset_slot(slot, i, step_type, reward, discount, observation)
        continue
      action = column[i]
      if slot.adapter is not None:
        observation[i], reward[i], done, truncated, _ = slot.gym_env.step(
            action.item() if slot.discrete else action)
        if truncated and not done:
          step_type[i], discount[i] = _LAST, slot.discount
          slot.needs_reset = True
          continue
      else:
        observation[i], reward[i], done, _ = slot.gym_env.step(
            action.item() if slot.discrete else action)
      slot.num_steps += 1
      if done:
        step_type[i] = _LAST
        discount[i] = 0
      else:
        step_type[i] = (_LAST if slot.duration is not None and slot.num_steps >= slot.duration
                        else _MID)
        discount[i] = slot.discount
      slot.needs_reset = step_type[i] == _LAST
    return ts.TimeStep(step_type, reward, discount, observation)

  def close(self) -> None:
    for env in self._envs:
      env.close()
