"""Every agent trains through the real processes, and its export is portable.

For each gin file: the replay server, the learner, one collect actor and eval run as separate
processes (`launcher.processes`); the learner trains a few hundred steps and stops; eval scores
the final weights; the greedy SavedModel then loads in a fresh Python process with this project's
packages blocked from import, and its actions on probe observations are those of the learner's
final weights pulled from the variable table. Marked `slow`.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from actor import evaluate
from common import agents
from common import builders
from common import config
from common import gin_config
from common import constants
from common import session as session_lib
from common import variables as variables_lib
from common.config import ReplayConfig
from learner import export
from learner import on_policy
from tests.conftest import FAST_BINDINGS
from tests.conftest import FRESH_PROCESS_HEADER
from tests.conftest import GIN_DIR
from tests.conftest import REPO
from tests.conftest import run_signer
from tests.conftest import start_role

pytestmark = pytest.mark.slow

TRAIN_STEPS = 200
AGENTS = ['ddqn_cartpole.gin', 'c51_cartpole.gin', 'apex_dqn_cartpole.gin',
          'ddpg_inverted_pendulum.gin', 'td3_inverted_pendulum.gin', 'ppo_cartpole.gin',
          'ppo_inverted_pendulum.gin', 'dqn_rnn_cartpole_no_velocity.gin',
          'ppo_rnn_cartpole_no_velocity.gin', 'dqn_pong.gin', 'ppo_pong.gin',
          'impala_cartpole.gin', 'impala_pong.gin', 'q_learning_frozenlake.gin']
BINDINGS = FAST_BINDINGS + ('EvalConfig.num_episodes = 1',)
# Smaller batches where a gin file's own would make its train steps take seconds on 2 cores.
SMALLER = {'impala_pong.gin': ('LearnerConfig.batch_size = 4', 'impala_agent.unroll_length = 5'),
           # 3 train steps of 64 per 64-step iteration, not 12 of 256 per 1,024 steps.
           'ppo_pong.gin': ('LearnerConfig.batch_size = 2', 'ActorConfig.num_envs = 2',
                            'ppo_agent.collect_sequence_length = 32',
                            'ppo_agent.minibatch_size = 64')}

# Runs with nothing from this project: its top-level packages cannot even be imported.
_FRESH_PROCESS = FRESH_PROCESS_HEADER + r'''import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

policy_dir, probe_path = sys.argv[1:3]
loaded = tf.saved_model.load(policy_dir)
observations = tf.constant(np.load(probe_path))
state = loaded.get_initial_state(observations.shape[0])  # () for a feed-forward policy
step = loaded.action(ts.restart(observations, batch_size=observations.shape[0]), state)
np.save(probe_path + '.actions.npy', step.action.numpy())
assert not PROJECT & {m.split('.')[0] for m in sys.modules}
print(json.dumps(dict(train_step=int(loaded.get_train_step().numpy()))))
'''


def _final_step(replay_config):
  """TRAIN_STEPS, or for an on-policy agent the end of the iteration that passes it (an
  iteration's epochs are never cut short)."""
  built = builders.build(replay_config)
  if not isinstance(built.specs.family, agents.OnPolicy):
    return TRAIN_STEPS
  per_iteration = on_policy.steps_per_iteration(
      built.specs.family, config.LearnerConfig().batch_size, built.specs.sequence_length, 1)
  return -(-TRAIN_STEPS // per_iteration) * per_iteration


def _log(path):
  with open(path) as f:
    return f.read()


@pytest.mark.parametrize('gin_name', AGENTS)
def test_agent_trains_through_the_real_processes_and_exports_a_portable_policy(
    gin_name, root_dir, port, tmp_path):
  _train_and_check_export(os.path.join(GIN_DIR, gin_name), BINDINGS + SMALLER.get(gin_name, ()),
                          root_dir, port, tmp_path)


CATCH_PACKAGE = os.path.join(REPO, 'examples', 'catch')
# Each source of an environment (common/env_sources.py): (gin file, extra bindings, whether the
# user's package is on PYTHONPATH).
SOURCES = {
    'entry-point-gymnasium-catch': ('examples/catch/catch.gin', (), True),
    'entry-point-dm-env-catch': ('examples/catch/catch_dm_env.gin', (), True),
    'gymnasium-id-cartpole': ('gin/dqn_cartpole.gin', (
        "make_environment.env_name = 'CartPole-v1'", "make_environment.suite = 'gymnasium'"),
        False),
    'discrete-observation-frozenlake': ('gin/dqn_frozenlake.gin', (), False),
    # A Dict observation (Box, Discrete and integer Box leaves), flattened with its layout.
    'entry-point-dict-observation': ('gin/dqn_cartpole.gin', (
        'make_environment.env_name = None',
        "make_environment.entry_point = 'tests.envs:dict_observations'",
        'make_environment.max_episode_steps = 20'), False),
}


@pytest.mark.parametrize('source', sorted(SOURCES))
def test_each_environment_source_trains_and_exports_a_portable_policy(
    source, root_dir, port, tmp_path, monkeypatch):
  gin_file, bindings, user_package = SOURCES[source]
  if user_package:  # Installed as a user would put it: on PYTHONPATH, for every process.
    monkeypatch.setenv('PYTHONPATH', CATCH_PACKAGE)
    monkeypatch.syspath_prepend(CATCH_PACKAGE)
  _train_and_check_export(os.path.join(REPO, gin_file), BINDINGS + bindings, root_dir, port,
                          tmp_path)
  layout_path = os.path.join(root_dir, constants.OBSERVATION_LAYOUT)
  if source == 'entry-point-dict-observation':
    with open(layout_path) as f:
      layout = json.load(f)
    assert [leaf['key'] for leaf in layout['leaves']] == ['goal', 'grid', 'position']
    assert layout['flat_size'] == 9
  else:
    assert not os.path.exists(layout_path)


def _probe_observations(spec, count: int) -> np.ndarray:
  """Observations to compare the exported policy with the learner's: uniform in [-1.5, 1.5],
  or, for a Discrete observation, every value the environment can return."""
  dtype = spec.dtype.as_numpy_dtype
  if spec.dtype.is_integer and hasattr(spec, 'maximum'):
    low, high = int(np.min(spec.minimum)), int(np.max(spec.maximum))
    return np.random.RandomState(0).randint(low, high + 1, (count,) + tuple(spec.shape)).astype(
        dtype)
  return np.random.RandomState(0).uniform(-1.5, 1.5, (count,) + tuple(spec.shape)).astype(dtype)


def _train_and_check_export(gin_file, bindings, root_dir, port, tmp_path):
  """Trains TRAIN_STEPS through the real server, learner, actor and eval; then the greedy
  SavedModel, in a fresh process without this project's code, acts as the learner's final
  weights do."""
  common_flags = dict(gin_files=[gin_file], gin_bindings=bindings, root_dir=root_dir)
  client = dict(common_flags, address=f'localhost:{port}')
  logs = {role: str(tmp_path / f'{role}.log') for role in ('server', 'learner', 'actor', 'eval')}
  started = [start_role('replay_server', port=port, log_path=logs['server'],
                        extra=['--checkpoint_interval_s=0'], **common_flags)]
  try:
    started.append(start_role('learner', log_path=logs['learner'],
                              extra=[f'--max_train_steps={TRAIN_STEPS}'], **client))
    started.append(start_role('actor', task=1, log_path=logs['actor'],
                              extra=['--num_actors=2', '--max_env_steps=1000000'], **client))
    learner = started[1]
    assert learner.wait(900) == 0, _log(logs['learner'])[-3000:]
    learner_log = _log(logs['learner'])
    gin_config.load_gin([gin_file], list(bindings))
    replay_config = ReplayConfig()
    final_step = _final_step(replay_config)
    assert re.search(rf'{constants.LEARNER_STOPPED_LINE} at train step {final_step}\b',
                     learner_log), learner_log[-3000:]
    if replay_config.prioritized:
      sent = re.search(r'sent (\d+) priority updates in (\d+) calls \((\d+) failed\)',
                       learner_log)
      assert sent and int(sent.group(1)) > 0 and int(sent.group(3)) == 0, learner_log[-2000:]
    eval_process = start_role('eval', log_path=logs['eval'], extra=['--max_evals=1'], **client)
    started.append(eval_process)
    assert eval_process.wait(600) == 0, _log(logs['eval'])[-3000:]
    row = evaluate.read_csv(os.path.join(root_dir, constants.EVAL_CSV))[-1]
    assert row['train_step'] == final_step

    # The learner's final weights, as the actors and eval get them.
    train_step = tf.Variable(0, dtype=tf.int64)
    built = builders.build(replay_config, train_step)
    assert variables_lib.VariableClient(session_lib.unchecked(client['address']),
                                        built.variables,
                                        run_signer(root_dir)).pull() == final_step
  finally:
    for process in reversed(started):
      process.stop()
  observations = _probe_observations(built.specs.time_step_spec.observation, 256)
  greedy_policy = agents.greedy_policy(built.agent)
  greedy = greedy_policy.action(ts.restart(tf.constant(observations), 256),
                                greedy_policy.get_initial_state(256)).action.numpy()
  probe_path = str(tmp_path / 'observations.npy')
  np.save(probe_path, observations)
  script = tmp_path / 'fresh.py'
  script.write_text(_FRESH_PROCESS)
  policy_dir = os.path.join(root_dir, constants.POLICY_DIR, export.GREEDY_POLICY)
  env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHON')}
  done = subprocess.run([sys.executable, '-I', str(script), policy_dir, probe_path],
                        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.strip().splitlines()[-1])['train_step'] == final_step
  exported = np.load(probe_path + '.actions.npy')
  if np.issubdtype(exported.dtype, np.integer):
    np.testing.assert_array_equal(exported, greedy)
  else:
    np.testing.assert_allclose(exported, greedy, rtol=1e-5, atol=1e-6)
