"""Environments and specs: every process builds its specs here, from the gin config alone."""

from typing import Optional

import gin
import gym
from tf_agents.environments import batched_py_environment
from tf_agents.environments import py_environment
from tf_agents.environments import suite_gym
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from common.errors import UserError

_PYBULLET_REGISTERED = False

# CartPole with the velocity entries of its observation removed: the standard partially observed
# benchmark, where only a memory of past observations tells which way the pole is moving.
NO_VELOCITY_CARTPOLE = 'CartPoleNoVelocity-v0'


class NoVelocityCartPole(gym.ObservationWrapper):
  """CartPole-v0 observing only the cart position and the pole angle (indices 0 and 2)."""

  def __init__(self):
    super().__init__(gym.make('CartPole-v0').unwrapped)
    inner = self.env.observation_space
    self.observation_space = gym.spaces.Box(inner.low[[0, 2]], inner.high[[0, 2]],
                                            dtype=inner.dtype)

  def observation(self, observation):
    return observation[[0, 2]]


if NO_VELOCITY_CARTPOLE not in gym.envs.registry.env_specs:
  gym.register(id=NO_VELOCITY_CARTPOLE, entry_point=NoVelocityCartPole, max_episode_steps=200,
               reward_threshold=195.0)


def _register_pybullet() -> None:
  """Registers the PyBullet gym ids (MinitaurBulletEnv-v0, ...) once, on first use."""
  global _PYBULLET_REGISTERED
  if not _PYBULLET_REGISTERED:
    import pybullet_envs  # pylint: disable=g-import-not-at-top,unused-import
    _PYBULLET_REGISTERED = True


def check_env_id(env_name: str) -> None:
  """Raises UserError unless `env_name` is a registered gym id."""
  if 'Bullet' in env_name:
    _register_pybullet()
  try:
    gym.spec(env_name)
  except gym.error.Error:
    raise UserError(
        f'unknown environment id {env_name!r}: bind make_environment.env_name to a registered '
        'gym id such as CartPole-v0, CartPoleNoVelocity-v0, InvertedPendulumBulletEnv-v0 or '
        'MinitaurBulletEnv-v0'
    ) from None


@gin.configurable(allowlist=['env_name', 'max_episode_steps'])
def make_environment(env_name: str = gin.REQUIRED,
                     max_episode_steps: Optional[int] = None,
                     seed: Optional[int] = None,
                     num_envs: int = 1) -> py_environment.PyEnvironment:
  """Makes the task's Python environment.

  Args:
    env_name: A gym id (gin). PyBullet ids are registered on demand.
    max_episode_steps: Optional episode cap (gin); None keeps the gym registration's limit.
    seed: Seed of the first environment; environment i gets `seed + i`.
    num_envs: If > 1, a BatchedPyEnvironment of that many copies stepped in lockstep.

  Returns:
    A PyEnvironment (batched when num_envs > 1).

  Raises:
    UserError: unknown environment id.
  """
  check_env_id(env_name)

  def _one(index: int) -> py_environment.PyEnvironment:
    env = suite_gym.load(env_name, max_episode_steps=max_episode_steps or 0)
    if seed is not None:
      env.seed(seed + index)
    return env

  if num_envs == 1:
    return _one(0)
  return batched_py_environment.BatchedPyEnvironment(
      [_one(i) for i in range(num_envs)], multithreading=False)


def environment_specs():
  """Returns (time_step_spec, action_spec) as TensorSpecs, for the gin-configured task."""
  env = make_environment()
  try:
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
  finally:
    env.close()
  return ts.time_step_spec(observation_spec), action_spec
