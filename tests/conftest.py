"""Shared fixtures: clean gin state, temporary run directories, free ports, real servers.

Every test gets a fresh gin config. Waits are bounded polls (`wait_until`), never bare sleeps.
"""

import os
import threading

import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import gin
import portpicker
import pytest
import reverb

from bench import harness
from launcher import processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, 'gin')
CARTPOLE_GIN = os.path.join(GIN_DIR, 'dqn_cartpole.gin')

# Small, fast settings for tests that run the real CartPole pipeline.
FAST_BINDINGS = (
    'ReplayConfig.min_size = 64',
    'LearnerConfig.iterations_per_call = 5',
    'LearnerConfig.push_interval = 10',
    'LearnerConfig.checkpoint_interval = 50',
    'LearnerConfig.policy_export_interval = 50',
    'LearnerConfig.log_interval = 50',
    'LearnerConfig.rate_limiter_timeout_s = 1.0',
    'LearnerConfig.foreign_push_window_s = 1.0',
    'ActorConfig.steps_per_run = 20',
    'ActorConfig.variable_update_interval = 50',
    'ActorConfig.log_interval_s = 1.0',
    'EvalConfig.num_episodes = 2',
    'EvalConfig.interval = 20',
)


# The start of a script run with `python -I` outside the checkout: from its first line on, none of
# this project's packages can be imported, and TensorFlow runs with Keras 2 as TF-Agents needs.
FRESH_PROCESS_HEADER = r'''
import importlib.abc, json, os, sys

PROJECT = {'common', 'actor', 'learner', 'launcher', 'replay_server', 'results', 'bench', 'tests'}

class _Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in PROJECT:
      raise ImportError(f'project module {name} imported')
    return None

sys.meta_path.insert(0, _Block())
os.environ['TF_USE_LEGACY_KERAS'] = '1'
'''


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2, detail=None):
  """`bench.harness.wait_for` that fails the test instead of raising.

  `detail`, if given, is called on failure and its text is added to the message.
  """
  try:
    return harness.wait_for(predicate, timeout_s, what, interval_s)
  except TimeoutError as e:
    extra = f'; {detail()}' if detail else ''
    pytest.fail(f'{e}{extra}')


def parse_gin(gin_file: str = CARTPOLE_GIN, bindings=FAST_BINDINGS) -> None:
  gin.clear_config()
  gin.parse_config_files_and_bindings([gin_file], list(bindings), finalize_config=False)


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(autouse=True)
def no_watchdog_left():
  """Fails a test that leaves a role's watchdog running in the test process.

  A watchdog ends its process (`os._exit(3)`) once its server is gone for its deadline: one
  left by a role run in-process would end the whole test session minutes later.
  """
  yield
  left = [t.name for t in threading.enumerate() if t.name.endswith(' watchdog')]
  assert not left, f'watchdog threads still running after the test: {left}'


@pytest.fixture
def root_dir(tmp_path):
  path = tmp_path / 'run'
  path.mkdir()
  return str(path)


@pytest.fixture
def port():
  return portpicker.pick_unused_port()


@pytest.fixture
def cartpole_server(root_dir, port):
  """An in-process replay server with the CartPole DQN tables (FAST_BINDINGS)."""
  from common import builders
  from replay_server import tables as tables_lib
  from common.config import LearnerConfig
  from common.config import ReplayConfig
  parse_gin()
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  server = reverb.Server(tables_lib.make_tables(specs, config, LearnerConfig()), port=port)
  yield f'localhost:{port}'
  server.stop()


def run_signer(root_dir: str):
  """The signer of the run in `root_dir` (its weights key, made if missing, as the learner
  does), for a test that pushes weights in the learner's place."""
  from common import weights_key  # pylint: disable=g-import-not-at-top
  return weights_key.Signer(weights_key.ensure(weights_key.default_path(root_dir)))


def start_role(role: str, *, log_path: str, name: str = '', **flags) -> processes.Process:
  """Starts one role's main (`processes.role_argv(role, **flags)`), output to `log_path`."""
  return processes.Process(processes.role_argv(role, **flags), name or role, log_path=log_path,
                           new_session=False)
