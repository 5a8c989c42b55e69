"""Every shipped gin file parses, and every binding in it takes effect."""

import glob
import os

import gin
import pytest

from common import builders
from common import config
from common import gin_config
from common import environments
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import UserError
from tests.conftest import GIN_DIR
from tests.conftest import REPO

GIN_FILES = sorted(glob.glob(os.path.join(GIN_DIR, '*.gin')))


def _pairs(config):
  """(configurable, parameter) for every binding in one of gin's binding dicts."""
  return {(selector.split('.')[-1], param)
          for (_, selector), params in config.items() for param in params}


def _bindings():
  return _pairs(gin.config._CONFIG)  # pylint: disable=protected-access


def _operative():
  return _pairs(gin.config._OPERATIVE_CONFIG)  # pylint: disable=protected-access


def test_every_gin_file_is_found():
  names = {os.path.basename(f) for f in GIN_FILES}
  assert {'dqn_cartpole.gin', 'sac_minitaur.gin', 'sac_inverted_pendulum.gin'} <= names


@pytest.mark.parametrize('gin_file', GIN_FILES, ids=os.path.basename)
def test_every_binding_takes_effect(gin_file):
  gin_config.load_gin([gin_file])
  bound = _bindings()
  configs = config.validated_configs()
  builders.make_agent_and_specs(configs[0])
  environments.make_environment().close()
  unused = bound - _operative()
  assert not unused, f'bindings in {gin_file} that no builder used: {sorted(unused)}'
  for (name, param) in bound:
    value = gin.query_parameter(f'{name}.{param}')
    built = {c.__class__.__name__: c for c in configs}.get(name)
    if built is not None and not isinstance(value, gin.config.ConfigurableReference):
      assert getattr(built, param) == value, f'{name}.{param}'


def test_cartpole_values_are_the_dqn_tutorials():
  gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_cartpole.gin')])
  agent, specs = builders.make_agent_and_specs(ReplayConfig())
  layers = [v.shape[-1] for v in agent.collect_policy.variables() if len(v.shape) == 2]
  assert layers == [100, 50, 2]
  assert float(agent._optimizer.learning_rate.numpy()) == pytest.approx(1e-3)  # pylint: disable=protected-access
  assert LearnerConfig().batch_size == 64
  assert ReplayConfig().max_size == 100000
  assert specs.time_step_spec.observation.shape == (4,)


def test_minitaur_values_are_the_sac_tutorials():
  gin_config.load_gin([os.path.join(GIN_DIR, 'sac_minitaur.gin')])
  agent, specs = builders.make_agent_and_specs(ReplayConfig())
  layers = [v.shape[-1] for v in agent.collect_policy.variables() if len(v.shape) == 2]
  assert layers[:2] == [256, 256]
  assert float(agent._actor_optimizer.learning_rate.numpy()) == pytest.approx(3e-4)  # pylint: disable=protected-access
  assert agent._target_update_tau == pytest.approx(0.005)  # pylint: disable=protected-access
  assert agent._gamma == pytest.approx(0.99)  # pylint: disable=protected-access
  assert LearnerConfig().batch_size == 256
  assert specs.action_spec.shape == (8,)


def test_missing_gin_file_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    gin_config.load_gin([str(tmp_path / 'nope.gin')])


def test_malformed_gin_file_is_a_user_error(tmp_path):
  path = tmp_path / 'bad.gin'
  path.write_text('ReplayConfig.max_size = = 3\n')
  with pytest.raises(UserError, match='bad gin config'):
    gin_config.load_gin([str(path)])


def test_binding_to_an_unknown_parameter_is_a_user_error():
  with pytest.raises(UserError, match='no_such_param'):
    gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_cartpole.gin')],
                    ['ReplayConfig.no_such_param = 3'])


def test_binding_an_argument_owned_by_the_caller_is_rejected():
  # num_envs of make_environment belongs to ActorConfig; gin must not be able to shadow it.
  with pytest.raises(UserError):
    gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_cartpole.gin')],
                    ['make_environment.num_envs = 4'])


# The gin config that the 90-minute Minitaur run in docs/results.md recorded.
MINITAUR_RUN_CONFIG = os.path.join(REPO, 'docs', 'results', 'data', 'sac_minitaur_fast', 'eval',
                                   'operative_config.gin')


# The gin config that the Pong run in docs/results.md recorded.
PONG_RUN_CONFIG = os.path.join(REPO, 'docs', 'results', 'data', 'ppo_pong', 'eval',
                               'operative_config.gin')


@pytest.mark.parametrize('gin_name,recorded_config', [
    ('sac_minitaur_fast.gin', MINITAUR_RUN_CONFIG),
    ('ppo_pong.gin', PONG_RUN_CONFIG),
])
def test_fast_file_is_the_measured_run(gin_name, recorded_config):
  gin_config.load_gin([os.path.join(GIN_DIR, gin_name)])
  shipped = {(name, param): gin.query_parameter(f'{name}.{param}') for name, param in _bindings()}
  gin.clear_config()
  gin.parse_config(gin_config.gin_text(recorded_config), skip_unknown=True)
  recorded = {key: gin.query_parameter('.'.join(key)) for key in shipped}
  assert shipped == recorded


def test_a_config_recorded_before_the_atari_stack_still_loads():
  # Its `load.*` bindings were suite_gym.load's short name, ambiguous once ale-py is installed
  # (tf_agents.environments then imports every suite, each with a `load`).
  with open(MINITAUR_RUN_CONFIG) as f:
    assert 'load.discount = 1.0' in f.read().splitlines()
  gin_config.load_gin([MINITAUR_RUN_CONFIG])
  assert gin.query_parameter('suite_gym.load.discount') == 1.0
  assert gin.query_parameter('make_environment.env_name') == 'MinitaurBulletEnv-v0'


def test_a_default_gin_file_is_the_projects_never_the_working_directorys(tmp_path, monkeypatch):
  # A gin file is code: a `gin/` that happens to be in the working directory may be taken for
  # a file the user names, but never for the launcher's default.
  (tmp_path / 'gin').mkdir()
  (tmp_path / 'gin' / 'dqn_cartpole_fast.gin').write_text('this is not the project file\n')
  monkeypatch.chdir(tmp_path)
  named = ['gin/dqn_cartpole_fast.gin']
  assert gin_config.resolve_gin_files(named) == [str(tmp_path / 'gin' / 'dqn_cartpole_fast.gin')]
  assert gin_config.resolve_gin_files(named, project_only=True) == [
      os.path.join(REPO, 'gin', 'dqn_cartpole_fast.gin')]


def test_the_local_launcher_default_ignores_a_gin_directory_where_it_runs(tmp_path):
  import signal  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  (tmp_path / 'gin').mkdir()
  (tmp_path / 'gin' / 'dqn_cartpole_fast.gin').write_text('this is not gin\n')
  launcher = subprocess.Popen(
      [sys.executable, '-m', 'launcher.main', f'--root_dir={tmp_path / "run"}'], cwd=tmp_path,
      env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=''),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    # With the working directory's file, the syntax check would end it at once (exit 2).
    with pytest.raises(subprocess.TimeoutExpired):
      launcher.wait(timeout=3)
  finally:
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=120)
  assert launcher.returncode in (0, 130), stderr[-2000:]  # Stopped before or after the go.
  assert 'error:' not in stderr, stderr[-2000:]
