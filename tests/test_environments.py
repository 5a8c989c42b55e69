"""The user's own environment: every source, the Gymnasium adapter's semantics, the spaces, and
each refusal, on real Gymnasium, gym, dm_env and TF-Agents environments (tests/envs.py)."""

import json

import gin
import gymnasium
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from actor import vector_env
from common import builders
from common import environments
from common import gin_config
from common import gymnasium_env
from common.config import ReplayConfig
from common.errors import UserError
from common.errors import one_line
from tests.conftest import CARTPOLE_GIN
from tests import envs
from tests.conftest import FAST_BINDINGS

FIRST, MID, LAST = (int(t) for t in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))


def _load(*bindings, gin_file=CARTPOLE_GIN):
  gin_config.load_gin([gin_file], list(FAST_BINDINGS) + list(bindings))


def _entry_point(name, **kwargs):
  bindings = ['make_environment.env_name = None',
              f"make_environment.entry_point = 'tests.envs:{name}'"]
  if kwargs:
    bindings.append(f'make_environment.env_kwargs = {kwargs!r}')
  return bindings


def _gymnasium_id(env_id, **kwargs):
  bindings = [f"make_environment.env_name = '{env_id}'", "make_environment.suite = 'gymnasium'"]
  if kwargs:
    bindings.append(f'make_environment.env_kwargs = {kwargs!r}')
  return bindings


def _steps(env, actions):
  return [env.reset()] + [env.step(np.asarray(a)) for a in actions]


# The Gymnasium adapter.

def test_terminated_is_last_with_discount_0_and_the_next_step_resets():
  env = gymnasium_env.GymnasiumEnvironment(envs.Corridor(2))
  steps = _steps(env, [1, 1, 1])
  assert [int(s.step_type) for s in steps] == [FIRST, MID, LAST, FIRST]
  assert [float(s.discount) for s in steps] == [1.0, 1.0, 0.0, 1.0]
  assert [float(s.reward) for s in steps] == pytest.approx([0.0, -0.1, 1.0, 0.0])
  assert steps[3].observation.tolist() == [0.0]


def test_truncated_is_last_with_discount_1_so_the_learner_bootstraps():
  env = gymnasium_env.GymnasiumEnvironment(
      gymnasium.wrappers.TimeLimit(envs.Corridor(10), max_episode_steps=3), discount=0.99)
  steps = _steps(env, [1, 0, 1, 1])
  assert [int(s.step_type) for s in steps] == [FIRST, MID, MID, LAST, FIRST]
  # Not the task's end: the step keeps the wrapper's discount, as a MID step does.
  assert [float(s.discount) for s in steps] == pytest.approx([1.0, 0.99, 0.99, 0.99, 1.0])


def test_make_environment_time_limit_on_a_gymnasium_id_truncates():
  _load(*_gymnasium_id('CartPole-v1'), 'make_environment.max_episode_steps = 5')
  env = environments.make_environment(seed=0)
  steps = _steps(env, [0, 1, 0, 1, 0])
  assert int(steps[-1].step_type) == LAST and float(steps[-1].discount) == 1.0
  assert all(int(s.step_type) == MID for s in steps[1:-1])


def test_seeding_goes_through_reset_seed_per_environment():
  def first_noises(seed):
    env = gymnasium_env.GymnasiumEnvironment(envs.Corridor())
    env.seed(seed)
    env.reset()
    first = env.gymnasium.start_noise
    env.reset()  # Later resets continue the seeded generator.
    return first, env.gymnasium.start_noise

  assert first_noises(7) == first_noises(7)
  assert first_noises(7) != first_noises(8)
  assert first_noises(7)[0] != first_noises(7)[1]


def test_each_actor_environment_gets_its_own_seed():
  _load(*_entry_point('Corridor'))
  batch = [environments.make_environment(seed=1000 + i) for i in range(3)]
  noises = []
  for env in batch:
    env.reset()
    noises.append(env.gymnasium.start_noise)
  assert len(set(noises)) == 3
  again = environments.make_environment(seed=1001)
  again.reset()
  assert again.gymnasium.start_noise == noises[1]


def test_vector_env_auto_resets_gymnasium_environments():
  _load(*_entry_point('Corridor', length=1))
  env = vector_env.VectorEnv([environments.make_environment(seed=i) for i in range(2)])
  first = env.reset()
  assert first.step_type.tolist() == [FIRST, FIRST]
  last = env.step(np.array([1, 0]))
  assert last.step_type.tolist() == [LAST, MID]
  assert last.discount.tolist() == [0.0, 1.0]
  again = env.step(np.array([1, 1]))
  assert again.step_type.tolist() == [FIRST, LAST]


def test_render_returns_rgb_frames_for_videos():
  _load(*_gymnasium_id('CartPole-v1'))
  env = environments.make_environment(seed=0)
  env.reset()
  frame = env.render('rgb_array')
  assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
  _load(*_entry_point('Corridor'))
  env = environments.make_environment(seed=0)
  env.reset()
  assert env.render('rgb_array').shape == (8, 40, 3)


# Sources.

@pytest.mark.parametrize('name', ['Corridor', 'DmCorridor', 'PyCorridor'])
def test_every_entry_point_kind_walks_the_corridor(name):
  _load(*_entry_point(name, length=2))
  environments.check_environment()
  env = environments.make_environment(seed=3)
  steps = _steps(env, [1, 1, 1])
  assert [int(s.step_type) for s in steps] == [FIRST, MID, LAST, FIRST]
  assert float(steps[2].discount) == 0.0 and float(steps[2].reward) == 1.0
  assert float(steps[0].reward) == 0.0  # dm_env's first reward is None.
  assert env.observation_spec().dtype == np.float32


def test_dm_env_entry_point_gets_the_seed():
  _load(*_entry_point('DmCorridor'))
  env = environments.make_environment(seed=41)
  assert env._env.seed_given == 41  # pylint: disable=protected-access


def test_gym_023_ids_work_as_before():
  _load()
  env = environments.make_environment(seed=0)
  assert type(env).__name__ == 'GymWrapper' and env.observation_spec().shape == (4,)


def test_gymnasium_mujoco_halfcheetah_v5():
  _load(*_gymnasium_id('HalfCheetah-v5'), gin_file=CARTPOLE_GIN)
  env = environments.make_environment(seed=0)
  assert env.observation_spec().shape == (17,) and env.observation_spec().dtype == np.float32
  assert env.action_spec().shape == (6,)
  step = env.step(np.zeros(6, np.float32)) if env.reset() is not None else None
  assert step.observation.dtype == np.float32


# Spaces.

def test_discrete_observations_are_one_hot_inside_the_network():
  _load(*_gymnasium_id('FrozenLake-v1', is_slippery=False))
  agent, specs = builders.make_agent_and_specs(ReplayConfig())
  spec = specs.time_step_spec.observation
  assert spec.dtype == tf.int64 and spec.shape == () and int(spec.maximum) == 15
  network = agent._q_network  # pylint: disable=protected-access
  observations = tf.constant([0, 5, 15], tf.int64)
  q_values, _ = network(observations)
  assert q_values.shape == (3, 4)
  # One-hot: the first layer's kernel rows 0, 5 and 15 are what each cell contributes.
  layer = network.layers[0]
  inputs = layer._flat_preprocessing_layers[0](observations)  # pylint: disable=protected-access
  np.testing.assert_array_equal(inputs.numpy(), np.eye(16, dtype=np.float32)[[0, 5, 15]])


def test_dict_observations_are_flattened_with_their_layout():
  _load(*_entry_point('dict_observations'))
  environments.check_environment()
  env = environments.make_environment(seed=0)
  assert env.observation_spec().shape == (2 * 2 + 3 + 2,)
  layout = json.loads(environments.observation_layout())
  assert [(leaf['key'], leaf['encoding'], leaf['offset'], leaf['size'])
          for leaf in layout['leaves']] == [('goal', 'one_hot', 0, 3), ('grid', 'flat', 3, 4),
                                            ('position', 'flat', 7, 2)]
  observation = env.reset().observation
  assert observation.dtype == np.float32 and observation[:3].sum() == 1.0


def test_tuple_observations_are_flattened():
  _load(*_entry_point('tuple_observations'))
  env = environments.make_environment(seed=0)
  assert env.observation_spec().shape == (4 + 3,)
  assert environments.observation_layout() is not None
  _load()
  assert environments.observation_layout() is None


def test_an_image_inside_a_dict_is_refused_naming_the_key():
  _load(*_entry_point('image_in_dict'))
  with pytest.raises(UserError, match=r"observation key 'pixels' is an image.*drop the key"):
    environments.make_environment()


@pytest.mark.parametrize('kind,shown', [('multi_discrete', 'MultiDiscrete'),
                                        ('multi_binary', 'MultiBinary'), ('dict', 'Dict')])
def test_action_spaces_no_agent_acts_on_are_refused(kind, shown):
  _load(*_entry_point('action_space', kind=kind))
  with pytest.raises(UserError) as raised:
    environments.make_environment()
  message = one_line(raised.value)
  assert shown in message and '@dqn_agent' in message and '@sac_agent' in message


def test_sac_refuses_discrete_observations():
  _load(*_gymnasium_id('FrozenLake-v1'), 'make_agent.agent_fn = @sac_agent')
  with pytest.raises(UserError, match='continuous action space|float observations'):
    builders.make_agent_and_specs(ReplayConfig())


# Refusals, one line each.

@pytest.mark.parametrize('bindings,expected', [
    (["make_environment.entry_point = 'tests.no_such_module:Env'"],
     "cannot import 'tests.no_such_module'"),
    (["make_environment.entry_point = 'tests.envs:NoSuchEnv'"],
     "has no attribute 'NoSuchEnv'"),
    (["make_environment.entry_point = 'tests.envs:NOT_CALLABLE'"], 'not callable'),
    (["make_environment.entry_point = 'tests.envs'"], "not of the form 'package.module:callable'"),
    (["make_environment.entry_point = 'tests.envs:raises'"],
     'raised RuntimeError: the simulator licence server is down'),
    (["make_environment.entry_point = 'tests.envs:not_an_environment'"],
     'returned a builtins.dict, which is not an environment'),
    (["make_environment.entry_point = 'tests.envs:needs_a_missing_package'"],
     "needs the package 'reverb_fleet_test_missing_package', which is not installed: pip install"),
    (["make_environment.entry_point = 'tests.envs:WrongShape'"],
     'observation has shape (2,) and dtype float32, but its space declares shape (1,)'),
    (["make_environment.entry_point = 'tests.envs:WrongDtype'"],
     'observation has shape (1,) and dtype int64, but its space declares shape (1,) and dtype '
     'float32'),
])
def test_bad_entry_points_are_one_line(bindings, expected):
  _load('make_environment.env_name = None', *bindings)
  with pytest.raises(UserError) as raised:
    environments.check_environment()
  assert expected in one_line(raised.value)


def test_unknown_gymnasium_id_suggests_the_nearest():
  _load(*_gymnasium_id('HalfCheeta-v5'))
  with pytest.raises(UserError, match=r"unknown Gymnasium id 'HalfCheeta-v5': did you mean "
                                      r"'HalfCheetah-v5'"):
    environments.check_environment()


def test_a_gymnasium_id_bound_as_gym_names_the_binding():
  _load("make_environment.env_name = 'HalfCheetah-v5'")
  with pytest.raises(UserError, match="is a Gymnasium id.*make_environment.suite = 'gymnasium'"):
    environments.check_environment()


def test_a_missing_environment_package_names_the_pip_extra():
  # Box2D is not part of the stack: LunarLander needs gymnasium's box2d extra.
  _load(*_gymnasium_id('LunarLander-v3'))
  with pytest.raises(UserError, match=r"needs the package 'Box2D'.*gymnasium\[box2d\]"):
    environments.check_environment()


@pytest.mark.parametrize('bindings,expected', [
    (['make_environment.env_name = None'], 'bind exactly one of make_environment.env_name'),
    (["make_environment.entry_point = 'tests.envs:Corridor'"], 'not both'),
    (["make_environment.suite = 'dm_control'"], "make_environment.suite='dm_control' is not"),
    (['make_environment.env_name = None', "make_environment.entry_point = 'tests.envs:Corridor'",
      "make_environment.suite = 'gymnasium'"], 'suite applies to make_environment.env_name only'),
    (['make_environment.env_kwargs = 3'], 'is not a dict of keyword arguments'),
    (['make_environment.max_episode_steps = 0'], 'must be a positive integer'),
])
def test_bindings_that_choose_the_source_are_checked(bindings, expected):
  _load(*bindings)
  with pytest.raises(UserError, match=expected.replace('(', r'\(').replace(')', r'\)')):
    environments.make_environment()


def test_a_gin_import_of_a_missing_package_is_one_line(tmp_path):
  path = tmp_path / 'user.gin'
  path.write_text('import reverb_fleet_no_such_user_package\n'
                  "make_environment.env_name = 'CartPole-v0'\n")
  with pytest.raises(UserError, match="imports 'reverb_fleet_no_such_user_package', which cannot "
                                      'be imported here.*PYTHONPATH'):
    gin_config.load_gin([str(path)])


def test_frame_stack_size_follows_the_source():
  _load("make_environment.env_name = 'PongNoFrameskip-v4'")
  assert environments.frame_stack_size() == 4
  _load(*_entry_point('Corridor'))
  assert environments.frame_stack_size() == 0
  gin.clear_config()


# What travels to a Ray cluster's nodes.

def test_user_modules_are_the_users_own_not_installed_or_project_ones(tmp_path, monkeypatch):
  from launcher import cluster  # pylint: disable=g-import-not-at-top
  package = tmp_path / 'my_sim_pkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (tmp_path / 'my_single_module.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path))
  gin_text = ('import my_sim_pkg.envs\nfrom __gin__ import dynamic_registration\n'
              'import json\nimport gymnasium\nimport common.agents\n')
  paths = cluster.user_modules([('a.gin', gin_text)], 'my_single_module:make', None)
  assert paths == (str(package.resolve()), str((tmp_path / 'my_single_module.py').resolve()))
  # A Gymnasium id's package prefix is the user's module too.
  assert cluster.user_modules([], None, 'my_sim_pkg:Sim-v0') == (str(package.resolve()),)
  # Installed packages (gymnasium), the standard library (json) and the project (common) stay.
  assert cluster.user_modules([('b.gin', 'import json\nimport gymnasium\n')],
                              'common.agents:x', 'CartPole-v1') == ()


def test_a_renderer_that_cannot_start_is_one_line_with_the_fix():
  from results import rollout  # pylint: disable=g-import-not-at-top
  _load(*_entry_point('CannotRender'))
  env = environments.make_environment(seed=0)
  env.reset()
  with pytest.raises(UserError, match=r'cannot render \(RuntimeError: an OpenGL platform.*'
                                      r'MUJOCO_GL=osmesa'):
    rollout.render_first(env)
  _load(*_entry_point('Corridor'))
  env = environments.make_environment(seed=0)
  env.reset()
  assert rollout.render_first(env).shape == (8, 40, 3)


def test_a_process_makes_its_environment_once_for_what_it_derives(monkeypatch):
  """The check at start-up, the specs, the observation layout and the agent's build share one
  environment per gin config; another config makes a new one."""
  _load()
  made = []
  checked = environments._checked  # pylint: disable=protected-access  (once per environment)
  monkeypatch.setattr(environments, '_checked', lambda env, what: made.append(1) or checked(
      env, what))
  environments.check_environment()
  environments.environment_specs()
  assert environments.observation_layout() is None
  builders.build(ReplayConfig())
  assert len(made) == 1
  gin.bind_parameter('make_environment.max_episode_steps', 50)
  time_step_spec, _ = environments.environment_specs()
  assert len(made) == 2 and time_step_spec.observation.shape == (4,)
