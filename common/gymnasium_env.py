"""Gymnasium (1.x) environments as TF-Agents `PyEnvironment`s.

TF-Agents 0.19 has a suite for gym 0.23 only; `GymnasiumEnvironment` is the adapter for the
Gymnasium API, with the semantics the learner relies on:

* `terminated` (the task ended: a goal, a crash, a fall) is a LAST step with discount 0, so the
  learner does not bootstrap past it;
* `truncated` (a time limit, or any other cut the task did not cause) is a LAST step with
  discount 1, so the learner bootstraps from the final observation's value;
* seeding goes through `reset(seed=...)`: `seed(s)` makes the next reset use `s`, and every
  reset after it continues the environment's own generator (Gymnasium's rule);
* it resets itself on the step after a LAST step (`handle_auto_reset`), as the actors'
  `VectorEnv` and TF-Agents' drivers expect;
* `render()` returns the environment's `rgb_array` frame, for `reverb-fleet video`.

Spaces map to specs with `spec_from_space`: Box (any shape; float64 is carried as float32, as
TF-Agents' other suites do) and Discrete; Dict and Tuple observations become nests, which
`environments.make_environment` flattens for the agents. An action space no agent can act on is
refused with one line (`UnsupportedSpace`).
"""

from typing import Optional

import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

# The agents, by the action space they act on (for the one-line refusals).
DISCRETE_AGENTS = '@dqn_agent, @c51_agent, @dqn_rnn_agent or @ppo_agent'
CONTINUOUS_AGENTS = '@sac_agent, @td3_agent, @ddpg_agent or @ppo_agent'


class UnsupportedSpace(ValueError):
  """A space that cannot become a spec; its message names the space and the fix."""


def _float_dtype(dtype) -> np.dtype:
  dtype = np.dtype(dtype)
  return np.dtype(np.float32) if dtype == np.float64 else dtype


def spec_from_space(space, name: str, action: bool = False):
  """The TF-Agents array spec (or nest of specs) of a Gymnasium or gym space.

  Args:
    space: A Box, Discrete, Dict or Tuple space (Gymnasium's or gym 0.23's).
    name: 'observation' or 'action', for the spec names and the messages.
    action: True for the action space: only a single Box or Discrete is accepted.

  Raises:
    UnsupportedSpace: the space, or a part of a Dict or Tuple observation, has no spec.
  """
  kind = type(space).__name__
  if kind == 'Discrete':
    start = int(getattr(space, 'start', 0))
    return array_spec.BoundedArraySpec((), np.int64, start, start + int(space.n) - 1, name=name)
  if kind == 'Box':
    dtype = _float_dtype(space.dtype)
    if action or np.issubdtype(dtype, np.integer):
      low, high = space.low, space.high
      if np.issubdtype(dtype, np.floating):
        finite = np.finfo(dtype).max
        low, high = np.clip(low, -finite, finite), np.clip(high, -finite, finite)
      return array_spec.BoundedArraySpec(space.shape, dtype, low.astype(dtype),
                                         high.astype(dtype), name=name)
    return array_spec.ArraySpec(space.shape, dtype, name=name)
  if action:
    raise UnsupportedSpace(
        f'the action space {space} ({kind}) is not one the agents act on: they take a Discrete '
        f'space ({DISCRETE_AGENTS}) or a Box space ({CONTINUOUS_AGENTS}); wrap the environment '
        'so that it exposes one of those (for example one Discrete action per combination)')
  if kind == 'Dict':
    return {key: spec_from_space(sub, f'{name}/{key}') for key, sub in space.spaces.items()}
  if kind == 'Tuple':
    return tuple(spec_from_space(sub, f'{name}/{i}') for i, sub in enumerate(space.spaces))
  raise UnsupportedSpace(
      f'the {name} space {space} ({kind}) is not supported: observations must be Box, Discrete, '
      'or a Dict or Tuple of those; wrap the environment to observe one of them')


class ObservationMismatch(ValueError):
  """An observation that does not fit its space; the message names the field."""


def check_observation(value, spec, field: str = 'observation') -> None:
  """Raises ObservationMismatch unless `value` has `spec`'s structure, shape and dtype kind.

  A float observation of another precision than the space's (float64 for a float32 Box) fits:
  it is cast. An integer observation for a float space, a float one for an integer space, or
  any other shape does not.
  """
  if isinstance(spec, dict):
    if not isinstance(value, dict) or set(value) != set(spec):
      raise ObservationMismatch(
          f'{field} has keys {sorted(value) if isinstance(value, dict) else type(value).__name__}'
          f' but its space has keys {sorted(spec)}: return what observation_space declares')
    for key, sub in spec.items():
      check_observation(value[key], sub, f'{field}[{key!r}]')
    return
  if isinstance(spec, tuple):
    if not isinstance(value, (tuple, list)) or len(value) != len(spec):
      raise ObservationMismatch(f'{field} is not a tuple of {len(spec)} parts as its space '
                                'declares: return what observation_space declares')
    for i, (v, sub) in enumerate(zip(value, spec)):
      check_observation(v, sub, f'{field}[{i}]')
    return
  array = np.asarray(value)
  kind_fits = np.issubdtype(array.dtype, np.floating) == np.issubdtype(spec.dtype, np.floating)
  if array.shape != tuple(spec.shape) or not kind_fits:
    raise ObservationMismatch(
        f'{field} has shape {array.shape} and dtype {array.dtype}, but its space declares shape '
        f'{tuple(spec.shape)} and dtype {np.dtype(spec.dtype)}: make the environment return '
        'what observation_space declares, or declare what it returns')


def _cast(value, spec):
  """`value` as an array of `spec`'s dtype (nests follow the spec)."""
  if isinstance(spec, dict):
    return {key: _cast(value[key], sub) for key, sub in spec.items()}
  if isinstance(spec, tuple):
    return tuple(_cast(v, sub) for v, sub in zip(value, spec))
  return np.asarray(value, dtype=spec.dtype)


class GymnasiumEnvironment(py_environment.PyEnvironment):
  """One Gymnasium environment behind the PyEnvironment API (see the module docstring).

  Args:
    env: A `gymnasium.Env` (wrapped as `gymnasium.make` returns it, or bare).
    discount: Discount of every step that is not terminal (truncated steps included).
  """

  def __init__(self, env, discount: float = 1.0):
    super().__init__(handle_auto_reset=True)
    self._env = env
    self._discount = np.asarray(discount, np.float32)
    self._observation_spec = spec_from_space(env.observation_space, 'observation')
    self._action_spec = spec_from_space(env.action_space, 'action', action=True)
    self._discrete_action = type(env.action_space).__name__ == 'Discrete'
    self._next_seed: Optional[int] = None
    self._checks_left = 2  # The first reset's and the first step's observations are checked.

  @property
  def gymnasium(self):
    """The wrapped Gymnasium environment."""
    return self._env

  @property
  def discount(self) -> float:
    """The discount of every step that is not terminal."""
    return float(self._discount)

  @property
  def discrete_action(self) -> bool:
    return self._discrete_action

  def reset_observation(self):
    """Resets the Gymnasium env with the pending seed (`seed`) and returns its raw observation:
    `reset` without the TimeStep, for `actor.vector_env.VectorEnv`'s fast path."""
    seed, self._next_seed = self._next_seed, None
    observation, _ = self._env.reset(seed=seed)
    return observation

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def seed(self, seed: Optional[int]):
    """Seeds the next reset (`reset(seed=seed)`); later resets continue from it."""
    self._next_seed = None if seed is None else int(seed)
    self._env.action_space.seed(self._next_seed)

  def _reset(self):
    return ts.restart(self._observation(self.reset_observation()))

  def _observation(self, observation):
    if self._checks_left:
      self._checks_left -= 1
      check_observation(observation, self._observation_spec)
    return _cast(observation, self._observation_spec)

  def _step(self, action):
    if self._discrete_action:
      action = int(np.asarray(action).item())
    observation, reward, terminated, truncated, _ = self._env.step(action)
    observation = self._observation(observation)
    reward = np.asarray(reward, np.float32)
    if terminated:
      return ts.termination(observation, reward)
    if truncated:
      return ts.truncation(observation, reward, self._discount)
    return ts.transition(observation, reward, self._discount)

  def render(self, mode: str = 'rgb_array'):
    if mode != 'rgb_array':
      raise ValueError(f'only rgb_array rendering is supported, not {mode!r}')
    return self._env.render()

  def get_info(self):
    return None

  def close(self):
    self._env.close()
