"""Environments and specs: every process builds its specs here, from the gin config alone."""

from typing import Optional

import gin
import gym
from tf_agents.environments import batched_py_environment
from tf_agents.environments import py_environment
from tf_agents.environments import suite_gym
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from common import atari
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


def check_env_id(env_name: str, sticky_actions: float = 0.0) -> None:
  """Raises UserError unless `env_name` is a registered gym id (Atari ids register here)."""
  if 'Bullet' in env_name:
    _register_pybullet()
  atari.register(env_name, sticky_actions)
  try:
    gym.spec(env_name)
  except gym.error.Error:
    raise UserError(
        f'unknown environment id {env_name!r}: bind make_environment.env_name to a registered '
        'gym id such as CartPole-v0, CartPoleNoVelocity-v0, InvertedPendulumBulletEnv-v0, '
        'MinitaurBulletEnv-v0 or an Atari game as <Game>NoFrameskip-v4 (PongNoFrameskip-v4)'
    ) from None


@gin.configurable(allowlist=['env_name', 'max_episode_steps', 'sticky_actions',
                             'terminal_on_life_loss', 'noop_max'])
def make_environment(env_name: str = gin.REQUIRED,
                     max_episode_steps: Optional[int] = None,
                     seed: Optional[int] = None,
                     num_envs: int = 1,
                     sticky_actions: float = 0.0,
                     terminal_on_life_loss: bool = False,
                     noop_max: int = 0,
                     training: bool = True) -> py_environment.PyEnvironment:
  """Makes the task's Python environment.

  An Atari id (`<Game>NoFrameskip-v4`, any game whose ROM ale-py ships) gets the standard DQN
  preprocessing, as TF-Agents' `suite_atari.load` with its stacking wrappers applies it: 4
  frames per step (the action repeated), the max over the last two, 84x84 grayscale, the last
  4 frames stacked; uint8 observations of shape (84, 84, 4).

  Args:
    env_name: A gym id (gin). PyBullet and Atari ids are registered on demand.
    max_episode_steps: Optional episode cap (gin); None keeps the gym registration's limit.
    seed: Seed of the first environment; environment i gets `seed + i`.
    num_envs: If > 1, a BatchedPyEnvironment of that many copies stepped in lockstep.
    sticky_actions: Atari only (gin): the chance, each emulator frame, that the previous action
      is repeated (0.25 in Machado et al., 2018; 0, the default, is the classic protocol).
    terminal_on_life_loss: Atari only (gin): a lost life ends the episode, for the collect
      actors only (`training`); eval always plays whole games.
    noop_max: Atari only (gin): each episode starts with 0 to `noop_max` no-op frames, drawn
      from the environment's seed (30 in the DQN papers' evaluation protocol; 0, the default,
      starts every game from the same state, where a greedy policy replays one game).
    training: False for eval, which never ends an episode at a lost life.

  Returns:
    A PyEnvironment (batched when num_envs > 1).

  Raises:
    UserError: unknown environment id.
  """
  if not 0.0 <= sticky_actions <= 1.0:
    raise UserError(f'make_environment.sticky_actions={sticky_actions} must be a probability in '
                    '[0, 1]: fix it in the gin file')
  check_env_id(env_name, sticky_actions)
  is_atari = atari.game_of(env_name) is not None
  if not is_atari and (sticky_actions or terminal_on_life_loss or noop_max):
    raise UserError(f'make_environment.sticky_actions, terminal_on_life_loss and noop_max apply '
                    f'to Atari games only, not {env_name!r}: remove those bindings')
  if not isinstance(noop_max, int) or noop_max < 0:
    raise UserError(f'make_environment.noop_max={noop_max!r} must be an integer >= 0: fix it in '
                    'the gin file')

  def _load():
    if is_atari:
      return atari.load(env_name, max_episode_steps or 0,
                        terminal_on_life_loss=terminal_on_life_loss and training,
                        noop_max=noop_max)
    return suite_gym.load(env_name, max_episode_steps=max_episode_steps or 0)

  def _one(index: int) -> py_environment.PyEnvironment:
    env = _load()
    if seed is not None:
      env.seed(seed + index)
    return env

  if num_envs == 1:
    return _one(0)
  return batched_py_environment.BatchedPyEnvironment(
      [_one(i) for i in range(num_envs)], multithreading=False)


def frame_stack_size() -> int:
  """Frames stacked in each observation of the gin-configured task (Atari: FrameStack4's 4),
  0 for a task whose observations are not frame stacks."""
  env_name = gin.query_parameter('make_environment.env_name')
  return atari.FRAME_STACK if atari.game_of(env_name) is not None else 0


def environment_specs():
  """Returns (time_step_spec, action_spec) as TensorSpecs, for the gin-configured task."""
  env = make_environment()
  try:
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
  finally:
    env.close()
  return ts.time_step_spec(observation_spec), action_spec
