"""Where an environment comes from: a gym 0.23 id, a Gymnasium id, or the user's entry point.

`environments.make_environment` picks the source from the gin bindings and calls one of:

* `make_gymnasium(env_id, ...)`: `gymnasium.make` with the id (ids the user's own package
  registers included: import the package in the gin file, or write the id as
  `package:Env-v0`, which Gymnasium imports itself);
* `make_from_entry_point('package.module:callable', ...)`: the callable, with the bound keyword
  arguments, returns a Gymnasium env, a gym env, a `dm_env.Environment` or a TF-Agents
  `PyEnvironment`; `as_py_environment` adapts each to a `PyEnvironment`.

Each failure a user can cause is one `UserError` line that names the problem and the fix: an
entry point that does not import or names nothing callable, a callable that raises or returns
something that is not an environment, a package the environment needs that is not installed
(with the pip extra that brings it), an unknown Gymnasium id (with the nearest registered ids).
"""

import difflib
import importlib
import inspect
from typing import Callable, Optional

import numpy as np
from tf_agents.environments import dm_control_wrapper
from tf_agents.environments import py_environment
from tf_agents.environments import suite_gym
from tf_agents.environments import wrappers

from common.errors import UserError

# Packages an environment may need, and what installs them beside the pinned stack.
_EXTRAS = {
    'mujoco': "pip install 'reverb-fleet[mujoco]'",
    'Box2D': "pip install 'gymnasium[box2d]==1.2.3'",
    'box2d': "pip install 'gymnasium[box2d]==1.2.3'",
    'pygame': "pip install pygame",
    'ale_py': "pip install ale-py==0.10.1",
    'dm_env': "pip install dm-env==1.6",
    'gymnasium': "pip install gymnasium==1.2.3",
}


def install_hint(package: str) -> str:
  """The command that installs `package` (a top-level module name) beside the pinned stack."""
  return _EXTRAS.get(package, f'pip install {package}')


def missing_package(error: ModuleNotFoundError, what: str) -> UserError:
  """The one-line error for `what` (an id or entry point) needing an uninstalled package."""
  package = (error.name or str(error)).split('.')[0]
  return UserError(f'{what} needs the package {package!r}, which is not installed: '
                   f'{install_hint(package)}')


def _gymnasium(what: str):
  try:
    import gymnasium  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise missing_package(e, what) from None
  return gymnasium


def check_gymnasium_id(env_id: str) -> None:
  """Raises UserError unless `env_id` is (or, with a `module:` prefix, becomes) registered.

  A `package:Env-v0` id imports `package` first, as `gymnasium.make` does.
  """
  gymnasium = _gymnasium(f'the Gymnasium id {env_id!r}')
  if ':' in env_id:
    module, _, bare = env_id.partition(':')
    import_user_module(module, f'the Gymnasium id {env_id!r}')
  else:
    bare = env_id
  if bare in gymnasium.envs.registry:
    return
  nearest = difflib.get_close_matches(bare, list(gymnasium.envs.registry), n=3, cutoff=0.5)
  hint = f'did you mean {", ".join(map(repr, nearest))}?' if nearest else (
      'list the ids with `python -c "import gymnasium; gymnasium.pprint_registry()"`')
  raise UserError(f'unknown Gymnasium id {env_id!r}: {hint} (an id that your package registers '
                  'needs the package imported first: add `import your_package` to the gin file)')


def make_gymnasium(env_id: str, env_kwargs: dict, max_episode_steps: Optional[int],
                   discount: float = 1.0) -> py_environment.PyEnvironment:
  """A Gymnasium environment, made with `render_mode='rgb_array'` (for videos), of an id that
  `check_gymnasium_id` accepted.

  `max_episode_steps` replaces the registration's time limit; its end is a truncation.
  """
  what = f'the Gymnasium id {env_id!r}'
  gymnasium = _gymnasium(what)
  kwargs = dict(env_kwargs)
  kwargs.setdefault('render_mode', 'rgb_array')
  if max_episode_steps:
    kwargs['max_episode_steps'] = max_episode_steps
  try:
    env = gymnasium.make(env_id, **kwargs)
  except ModuleNotFoundError as e:
    raise missing_package(e, what) from None
  except gymnasium.error.DependencyNotInstalled as e:
    raise _dependency_error(e, what) from None
  except TypeError as e:
    raise UserError(f'{what} does not take the keyword arguments '
                    f'{sorted(env_kwargs)} ({e}): fix make_environment.env_kwargs') from None
  return as_py_environment(env, what, None, discount)


def _dependency_error(error, what: str) -> UserError:
  text = str(error)
  for package in _EXTRAS:
    if package.lower() in text.lower():
      return UserError(f'{what} needs the package {package!r}, which is not installed: '
                       f'{install_hint(package)}')
  return UserError(f'{what} needs a package that is not installed ({" ".join(text.split())})')


def import_user_module(module: str, what: str):
  """Imports `module` for `what`; a missing module or a missing dependency is one line."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    missing = (e.name or '').split('.')[0]
    if missing and missing == module.split('.')[0] or (e.name or '') == module:
      raise UserError(f'{what}: cannot import {module!r} (no module named {e.name!r}): install '
                      'your package in this environment (pip install -e PATH) or put its '
                      'directory on PYTHONPATH') from None
    raise missing_package(e, what) from None
  except Exception as e:  # pylint: disable=broad-except  (the user's module failed to import)
    raise UserError(f'{what}: importing {module!r} raised {type(e).__name__}: '
                    f'{" ".join(str(e).split())}: fix the module') from None


def load_entry_point(entry_point: str) -> Callable:
  """The callable named by `package.module:callable` (a dotted attribute path is allowed)."""
  what = f'make_environment.entry_point={entry_point!r}'
  module_name, sep, attribute = entry_point.partition(':')
  if not sep or not module_name or not attribute:
    raise UserError(f'{what} is not of the form \'package.module:callable\': bind it as, for '
                    'example, \'catch_env:CatchEnv\'')
  target = import_user_module(module_name, what)
  for part in attribute.split('.'):
    if not hasattr(target, part):
      raise UserError(f'{what}: module {module_name!r} has no attribute {attribute!r}: name a '
                      'class or function that it defines')
    target = getattr(target, part)
  if not callable(target):
    raise UserError(f'{what} names an object of type {type(target).__name__}, which is not '
                    'callable: name a class or a function that returns an environment')
  return target


def _accepts(fn: Callable, name: str) -> bool:
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def make_from_entry_point(entry_point: str, env_kwargs: dict, seed: Optional[int],
                          max_episode_steps: Optional[int],
                          discount: float = 1.0) -> py_environment.PyEnvironment:
  """Calls the entry point and adapts what it returns (`as_py_environment`).

  The callable gets `env_kwargs`, plus `seed=seed` if it takes a `seed` argument and
  `render_mode='rgb_array'` if it takes a `render_mode` one (unless `env_kwargs` sets them).
  """
  fn = load_entry_point(entry_point)
  what = f'make_environment.entry_point={entry_point!r}'
  kwargs = dict(env_kwargs)
  if seed is not None and 'seed' not in kwargs and _accepts(fn, 'seed'):
    kwargs['seed'] = int(seed)
  if 'render_mode' not in kwargs and _accepts(fn, 'render_mode'):
    kwargs['render_mode'] = 'rgb_array'
  try:
    env = fn(**kwargs)
  except ModuleNotFoundError as e:
    raise missing_package(e, what) from None
  except Exception as e:  # pylint: disable=broad-except  (the user's code failed)
    raise UserError(f'{what} raised {type(e).__name__}: {" ".join(str(e).split())}: fix the '
                    'callable or make_environment.env_kwargs') from None
  return as_py_environment(env, what, max_episode_steps, discount)


def as_py_environment(env, what: str, max_episode_steps: Optional[int],
                      discount: float = 1.0) -> py_environment.PyEnvironment:
  """Adapts a Gymnasium env, a gym 0.23 env, a dm_env.Environment or a PyEnvironment.

  `max_episode_steps` adds a time limit whose end is a truncation (discount 1).

  Raises:
    UserError: `env` is none of those.
  """
  from common import gymnasium_env  # pylint: disable=g-import-not-at-top
  if isinstance(env, py_environment.PyEnvironment):
    return wrappers.TimeLimit(env, max_episode_steps) if max_episode_steps else env
  kind = _kind(env)
  try:
    if kind == 'gymnasium':
      if max_episode_steps:
        import gymnasium  # pylint: disable=g-import-not-at-top
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps)
      return gymnasium_env.GymnasiumEnvironment(env, discount)
    if kind == 'gym':
      return suite_gym.wrap_env(env, discount=discount, max_episode_steps=max_episode_steps or 0)
    if kind == 'dm_env':
      wrapped = DmEnvironment(env)
      return wrappers.TimeLimit(wrapped, max_episode_steps) if max_episode_steps else wrapped
  except gymnasium_env.UnsupportedSpace as e:
    raise UserError(f'{what}: {e}') from None
  raise UserError(f'{what} returned a {type(env).__module__}.{type(env).__name__}, which is not '
                  'an environment: return a gymnasium.Env, a gym.Env, a dm_env.Environment or '
                  'a TF-Agents PyEnvironment')


def _kind(env) -> Optional[str]:
  for kind, module, name in (('gymnasium', 'gymnasium', 'Env'), ('gym', 'gym', 'Env'),
                             ('dm_env', 'dm_env', 'Environment')):
    try:
      base = getattr(importlib.import_module(module), name)
    except ImportError:
      continue
    if isinstance(env, base):
      return kind
  return None


class DmEnvironment(py_environment.PyEnvironment):
  """A `dm_env.Environment` behind the PyEnvironment API.

  Specs and time steps convert as TF-Agents' dm_control suite converts them (float64 becomes
  float32; the first step's reward and discount None become 0 and 1). It resets itself after a
  LAST step, whatever the inner environment does; `seed` is not part of dm_env (give the entry
  point a `seed` argument instead); `render()` calls the environment's own `render()` or
  `physics.render()` where it has one.
  """

  def __init__(self, env):
    super().__init__(handle_auto_reset=True)
    self._env = env
    self._observation_spec = _nest_map(dm_control_wrapper.convert_spec, env.observation_spec())
    self._action_spec = dm_control_wrapper.convert_spec(_single_action_spec(env.action_spec()))

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def _reset(self):
    return dm_control_wrapper.convert_time_step(self._env.reset())

  def _step(self, action):
    action = np.asarray(action, dtype=self._env.action_spec().dtype)
    return dm_control_wrapper.convert_time_step(self._env.step(action))

  def render(self, mode: str = 'rgb_array'):
    if hasattr(self._env, 'render'):
      return self._env.render()
    return self._env.physics.render()

  def get_info(self):
    return None

  def close(self):
    self._env.close()


def _nest_map(fn, nest):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.nest.map_structure(fn, nest)


def _single_action_spec(spec):
  from common import gymnasium_env  # pylint: disable=g-import-not-at-top
  if not hasattr(spec, 'dtype'):
    raise gymnasium_env.UnsupportedSpace(
        f'the action spec {spec} is a nest, which no agent acts on: they take one discrete '
        f'array ({gymnasium_env.DISCRETE_AGENTS}) or one continuous array '
        f'({gymnasium_env.CONTINUOUS_AGENTS}); expose a single action array')
  return spec
