"""Environments and specs: every process builds its specs here, from the gin config alone."""

import difflib
import inspect
from typing import Dict, Optional

import gin
import gym
import numpy as np
import tensorflow as tf
from tf_agents.environments import py_environment
from tf_agents.environments import suite_gym
from tf_agents.specs import array_spec
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from common import atari
from common import env_sources
from common import gymnasium_env
from common import observations
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
  """Raises UserError unless `env_name` is a registered gym id (Atari ids register here).

  An id that Gymnasium registers instead gets the binding that selects Gymnasium; another gets
  the nearest gym ids.
  """
  if 'Bullet' in env_name:
    _register_pybullet()
  atari.register(env_name, sticky_actions)
  try:
    gym.spec(env_name)
  except gym.error.Error:
    pass
  else:
    return
  try:
    import gymnasium  # pylint: disable=g-import-not-at-top
    in_gymnasium = env_name in gymnasium.envs.registry
  except ImportError:
    in_gymnasium = False
  if in_gymnasium:
    raise UserError(f'{env_name!r} is a Gymnasium id, not a gym 0.23 one: bind '
                    "make_environment.suite = 'gymnasium'") from None
  nearest = difflib.get_close_matches(env_name, list(gym.envs.registry.env_specs), n=3,
                                      cutoff=0.6)
  raise UserError(
      f'unknown gym id {env_name!r}'
      + (f' (did you mean {", ".join(map(repr, nearest))}?)' if nearest else '')
      + ': bind make_environment.env_name to a registered gym id such as CartPole-v0, '
      'InvertedPendulumBulletEnv-v0 or PongNoFrameskip-v4, make_environment.suite = '
      "'gymnasium' for a Gymnasium id, or make_environment.entry_point for your own "
      'environment') from None


SUITES = ('gym', 'gymnasium')


def _source_error(env_name, suite, entry_point, env_kwargs) -> Optional[str]:
  """What is wrong with the bindings that choose the environment's source, or None."""
  if suite not in SUITES:
    return (f'make_environment.suite={suite!r} is not one of {", ".join(map(repr, SUITES))}: '
            'bind \'gym\' (gym 0.23 ids) or \'gymnasium\'')
  if (env_name is None) == (entry_point is None):
    return ('bind exactly one of make_environment.env_name (a registered id) and '
            'make_environment.entry_point (\'package.module:callable\')'
            + (', not both' if env_name is not None else ''))
  if env_name is not None and not isinstance(env_name, str):
    return f'make_environment.env_name={env_name!r} is not a string: bind an id such as \'CartPole-v1\''
  if entry_point is not None and not isinstance(entry_point, str):
    return (f'make_environment.entry_point={entry_point!r} is not a string: bind '
            '\'package.module:callable\'')
  if entry_point is not None and suite != 'gym':
    return ('make_environment.suite applies to make_environment.env_name only: remove it (an '
            'entry point may return any kind of environment)')
  if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
    return (f'make_environment.env_kwargs={env_kwargs!r} is not a dict of keyword arguments: '
            "bind one such as {'size': 8}")
  return None


@gin.configurable(allowlist=['env_name', 'suite', 'entry_point', 'env_kwargs',
                             'max_episode_steps', 'sticky_actions', 'terminal_on_life_loss',
                             'noop_max'])
def make_environment(env_name: Optional[str] = None,
                     suite: str = 'gym',
                     entry_point: Optional[str] = None,
                     env_kwargs: Optional[dict] = None,
                     max_episode_steps: Optional[int] = None,
                     seed: Optional[int] = None,
                     sticky_actions: float = 0.0,
                     terminal_on_life_loss: bool = False,
                     noop_max: int = 0,
                     training: bool = True) -> py_environment.PyEnvironment:
  """Makes the task's Python environment, from one of three sources (gin):

  * `env_name` with `suite = 'gym'` (the default): a gym 0.23 id (CartPole-v0, the PyBullet
    ids, `<Game>NoFrameskip-v4` Atari games, or an id a module imported by the gin file
    registers). An Atari id gets the standard DQN preprocessing, as TF-Agents'
    `suite_atari.load` with its stacking wrappers applies it: 4 frames per step (the action
    repeated), the max over the last two, 84x84 grayscale, the last 4 frames stacked; uint8
    observations of shape (84, 84, 4).
  * `env_name` with `suite = 'gymnasium'`: a Gymnasium 1.x id (`HalfCheetah-v5`,
    `FrozenLake-v1`, an id the user's package registers, or `package:Env-v0`), adapted by
    `gymnasium_env.GymnasiumEnvironment`: a terminated step has discount 0, a truncated one
    discount 1.
  * `entry_point = 'package.module:callable'`: the callable, called with `env_kwargs`, returns a
    Gymnasium env, a gym env, a `dm_env.Environment` or a TF-Agents `PyEnvironment`
    (`env_sources.make_from_entry_point`).

  Dict and Tuple observations are flattened into one vector (`observations.FlatObservation`).

  Args:
    env_name: A registered id (gin), or None with `entry_point`.
    suite: 'gym' or 'gymnasium' (gin): which registry `env_name` is in.
    entry_point: 'package.module:callable' (gin), or None with `env_name`.
    env_kwargs: Keyword arguments for `gymnasium.make`, `gym.make` or the entry point (gin).
    max_episode_steps: Optional episode cap (gin); its end is a truncation (discount 1). None
      keeps the registration's limit.
    seed: The environment's seed (through `reset(seed=...)` for Gymnasium; also as the entry
      point's `seed` argument if it takes one). The actors give environment i of their batch
      `seed + i` and step the batch with `actor.vector_env.VectorEnv`.
    sticky_actions: Atari only (gin): the chance, each emulator frame, that the previous action
      is repeated (0.25 in Machado et al., 2018; 0, the default, is the classic protocol).
    terminal_on_life_loss: Atari only (gin): a lost life ends the episode, for the collect
      actors only (`training`); eval always plays whole games.
    noop_max: Atari only (gin): each episode starts with 0 to `noop_max` no-op frames, drawn
      from the environment's seed (30 in the DQN papers' evaluation protocol; 0, the default,
      starts every game from the same state, where a greedy policy replays one game).
    training: False for eval, which never ends an episode at a lost life.

  Returns:
    A PyEnvironment.

  Raises:
    UserError: a source that cannot be made, with the fix (see `env_sources`).
  """
  env_kwargs = {} if env_kwargs is None else env_kwargs
  problem = _source_error(env_name, suite, entry_point, env_kwargs)
  if problem:
    raise UserError(problem)
  if not 0.0 <= sticky_actions <= 1.0:
    raise UserError(f'make_environment.sticky_actions={sticky_actions} must be a probability in '
                    '[0, 1]: fix it in the gin file')
  is_atari = suite == 'gym' and env_name is not None and atari.game_of(env_name) is not None
  if not is_atari and (sticky_actions or terminal_on_life_loss or noop_max):
    raise UserError(f'make_environment.sticky_actions, terminal_on_life_loss and noop_max apply '
                    f'to Atari games only (gym Atari ids), not {env_name or entry_point!r}: remove '
                    'those bindings')
  if not isinstance(noop_max, int) or noop_max < 0:
    raise UserError(f'make_environment.noop_max={noop_max!r} must be an integer >= 0: fix it in '
                    'the gin file')
  if max_episode_steps is not None and (not isinstance(max_episode_steps, int)
                                        or max_episode_steps < 1):
    raise UserError(f'make_environment.max_episode_steps={max_episode_steps!r} must be a '
                    'positive integer (or None: the registration\'s limit)')
  if env_name is not None and suite == 'gym':
    check_env_id(env_name, sticky_actions)
  elif env_name is not None:
    env_sources.check_gymnasium_id(env_name)

  def _load(env_seed):
    if is_atari:
      return atari.load(env_name, max_episode_steps or 0,
                        terminal_on_life_loss=terminal_on_life_loss and training,
                        noop_max=noop_max)
    if entry_point is not None:
      return env_sources.make_from_entry_point(entry_point, env_kwargs, env_seed,
                                               max_episode_steps)
    if suite == 'gymnasium':
      return env_sources.make_gymnasium(env_name, env_kwargs, max_episode_steps)
    return suite_gym.load(env_name, max_episode_steps=max_episode_steps or 0,
                          gym_kwargs=env_kwargs)

  env = _checked(_load(seed), env_name or entry_point)
  if seed is not None:
    try:
      env.seed(seed)
    except NotImplementedError:
      pass  # A PyEnvironment or dm_env without seeding: seeded by its entry point, or not.
  return env


def _checked(env: py_environment.PyEnvironment, what: str) -> py_environment.PyEnvironment:
  """`env` with a single action array the agents act on and a flat observation.

  Raises:
    UserError: an action space no agent acts on, or an observation that cannot be flattened.
  """
  gym_space = getattr(getattr(env, 'gym', None), 'action_space', None)
  action_spec = env.action_spec()
  if tf.nest.is_nested(action_spec) or action_spec.dtype.kind == 'b' or (
      action_spec.dtype.kind in 'iu' and tuple(action_spec.shape) not in ((), (1,))):
    space = gym_space if gym_space is not None else action_spec
    raise UserError(f'{what}: the action space {space} is not one the agents act on: they take '
                    f'a Discrete space ({gymnasium_env.DISCRETE_AGENTS}) or a Box space '
                    f'({gymnasium_env.CONTINUOUS_AGENTS}); wrap the environment so that it '
                    'exposes one of those (for example one Discrete action per combination)')
  if tf.nest.is_nested(env.observation_spec()):
    try:
      env = observations.FlatObservation(env)
    except observations.UnflattenableObservation as e:
      raise UserError(f'{what}: {e}') from None
  return env


def bound_parameter(name: str):
  """The gin binding of `make_environment.<name>`, or its default."""
  try:
    return gin.query_parameter(f'make_environment.{name}')
  except ValueError:
    return inspect.signature(make_environment).parameters[name].default


def frame_stack_size() -> int:
  """Frames stacked in each observation of the gin-configured task (Atari: FrameStack4's 4),
  0 for a task whose observations are not frame stacks."""
  env_name = bound_parameter('env_name')
  if bound_parameter('suite') != 'gym' or not isinstance(env_name, str):
    return 0
  return atari.FRAME_STACK if atari.game_of(env_name) is not None else 0


# What a process derives from its environment, by the gin config it was derived under: each
# role makes its environment once at start-up for these (`check_environment`), not once per use.
_DERIVED: Dict[str, tuple] = {}


def _derive(env) -> tuple:
  """(time_step_spec, action_spec, observation layout or None) of `env`, remembered under the
  current gin config."""
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  action_spec = tensor_spec.from_spec(env.action_spec())
  layout = None
  if isinstance(env, observations.FlatObservation):
    layout = observations.layout_json(env.wrapped_env().observation_spec())
  derived = (ts.time_step_spec(observation_spec), action_spec, layout)
  _DERIVED[gin.config_str()] = derived
  return derived


def _derived() -> tuple:
  """`_derive` of the gin-configured environment, made once per gin config."""
  derived = _DERIVED.get(gin.config_str())
  if derived is not None:
    return derived
  env = make_environment()
  try:
    return _derive(env)
  finally:
    env.close()


def check_environment() -> None:
  """Makes the gin-configured environment, resets it and takes one random step, so that a bad
  source, space or observation is one line before anything starts. Its specs are kept for
  `environment_specs` and `observation_layout`.

  Raises:
    UserError: naming the problem and the fix.
  """
  env = make_environment(seed=0)
  try:
    _derive(env)
    gymnasium_env.check_observation(env.reset().observation, env.observation_spec())
    action = array_spec.sample_spec_nest(env.action_spec(), np.random.RandomState(0))
    gymnasium_env.check_observation(env.step(action).observation, env.observation_spec())
  except gymnasium_env.ObservationMismatch as e:
    what = bound_parameter('env_name') or bound_parameter('entry_point')
    raise UserError(f'{what}: {e}') from None
  finally:
    env.close()


def observation_layout() -> Optional[str]:
  """The JSON layout of a flattened Dict or Tuple observation (`observations.layout_json`), or
  None when the gin-configured environment observes one array. `make_environment` puts
  `FlatObservation` outermost, so the environment it returns is that wrapper or not."""
  return _derived()[2]


def environment_specs():
  """Returns (time_step_spec, action_spec) as TensorSpecs, for the gin-configured task."""
  time_step_spec, action_spec, _ = _derived()
  return time_step_spec, action_spec
