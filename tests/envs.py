"""Small environments of every kind the entry point takes, for the tests (`tests.envs:NAME`).

Each is a real environment of its library (Gymnasium, dm_env, TF-Agents), small enough to reason
about step by step; the bad ones break exactly one rule each.
"""

from typing import Optional

import dm_env
from dm_env import specs as dm_specs
import gymnasium
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts


def walk(position: int, action, length: int):
  """The corridor's rule: (new position, its observation, whether the end is reached, reward)."""
  position = int(np.clip(position + (1 if int(action) == 1 else -1), 0, length))
  reached = position == length
  return position, np.array([position], np.float32), reached, (1.0 if reached else -0.1)


class Corridor(gymnasium.Env):
  """Walk right from cell 0 to cell `length`: action 1 moves right, 0 left. Reaching the end is
  terminated with reward 1; every other step costs 0.1. Observes the position, float32 (1,).
  `max_episode_steps` (gin) or Gymnasium's TimeLimit truncates it."""

  metadata = {'render_modes': ['rgb_array'], 'render_fps': 4}

  def __init__(self, length: int = 4, render_mode: Optional[str] = None):
    self.length = length
    self.render_mode = render_mode
    self.observation_space = gymnasium.spaces.Box(0.0, float(length), (1,), np.float32)
    self.action_space = gymnasium.spaces.Discrete(2)
    self.position = 0
    self.start_noise = 0.0

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self.position = 0
    self.start_noise = float(self.np_random.uniform())  # Shows which seed the reset used.
    return np.array([self.position], np.float32), {'start_noise': self.start_noise}

  def step(self, action):
    self.position, observation, terminated, reward = walk(self.position, action, self.length)
    return observation, reward, terminated, False, {}

  def render(self):
    frame = np.zeros((8, 8 * (self.length + 1), 3), np.uint8)
    frame[:, 8 * self.position:8 * self.position + 8] = 255
    return frame


class SpaceEnv(gymnasium.Env):
  """Observes and acts in the given spaces; observations are samples of its space."""

  def __init__(self, observation_space, action_space):
    self.observation_space = observation_space
    self.action_space = action_space

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self.observation_space.seed(seed)
    return self.observation_space.sample(), {}

  def step(self, action):
    return self.observation_space.sample(), 0.0, False, False, {}


def dict_observations():
  return SpaceEnv(gymnasium.spaces.Dict({
      'position': gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32),
      'goal': gymnasium.spaces.Discrete(3),
      'grid': gymnasium.spaces.Box(0, 1, (2, 2), np.int8)}), gymnasium.spaces.Discrete(2))


def tuple_observations():
  return SpaceEnv(gymnasium.spaces.Tuple((gymnasium.spaces.Discrete(4),
                                          gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32))),
                  gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32))


def image_in_dict():
  return SpaceEnv(gymnasium.spaces.Dict({
      'pixels': gymnasium.spaces.Box(0, 255, (8, 8, 3), np.uint8),
      'speed': gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)}), gymnasium.spaces.Discrete(2))


def action_space(kind: str):
  """An environment acting in a space no agent acts on."""
  spaces = {'multi_discrete': gymnasium.spaces.MultiDiscrete([3, 3]),
            'multi_binary': gymnasium.spaces.MultiBinary(4),
            'dict': gymnasium.spaces.Dict({'move': gymnasium.spaces.Discrete(2)})}
  return SpaceEnv(gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32), spaces[kind])


class WrongShape(Corridor):
  """Declares a (1,) observation and returns (2,) ones from `step`."""

  def step(self, action):
    observation, reward, terminated, truncated, info = super().step(action)
    return np.concatenate([observation, observation]), reward, terminated, truncated, info


class WrongDtype(Corridor):
  """Declares a float32 observation and returns int64 ones from `step`."""

  def step(self, action):
    observation, reward, terminated, truncated, info = super().step(action)
    return observation.astype(np.int64), reward, terminated, truncated, info


def raises(**kwargs):
  raise RuntimeError(f'the simulator licence server is down ({kwargs})')


def not_an_environment():
  return {'observation': 0}


NOT_CALLABLE = 42


def needs_a_missing_package():
  import reverb_fleet_test_missing_package  # pylint: disable=g-import-not-at-top,import-error,unused-import
  return Corridor()


class DmCorridor(dm_env.Environment):
  """The corridor as a dm_env.Environment; seeded by its `seed` argument."""

  def __init__(self, length: int = 4, seed: Optional[int] = None):
    self.length = length
    self.seed_given = seed
    self.position = 0

  def reset(self):
    self.position = 0
    return dm_env.restart(np.array([0.0], np.float32))

  def step(self, action):
    self.position, observation, reached, reward = walk(self.position, action, self.length)
    if reached:
      return dm_env.termination(reward, observation)
    return dm_env.transition(reward, observation)

  def observation_spec(self):
    return dm_specs.Array((1,), np.float32, 'position')

  def action_spec(self):
    return dm_specs.DiscreteArray(2, name='action')


class PyCorridor(py_environment.PyEnvironment):
  """The corridor as a TF-Agents PyEnvironment."""

  def __init__(self, length: int = 4):
    super().__init__(handle_auto_reset=True)
    self.length = length
    self.position = 0

  def observation_spec(self):
    return array_spec.ArraySpec((1,), np.float32, 'observation')

  def action_spec(self):
    return array_spec.BoundedArraySpec((), np.int64, 0, 1, 'action')

  def _reset(self):
    self.position = 0
    return ts.restart(np.array([0.0], np.float32))

  def _step(self, action):
    self.position, observation, reached, reward = walk(self.position, action, self.length)
    if reached:
      return ts.termination(observation, np.float32(reward))
    return ts.transition(observation, np.float32(reward))


class CannotRender(Corridor):
  """A corridor whose renderer cannot start, as MuJoCo's without a GL back end."""

  def render(self):
    raise RuntimeError('an OpenGL platform library has not been loaded into this process')
