"""The exported SavedModel is portable: it loads in a fresh Python process that has only
TensorFlow and TF-Agents, and, run in the environment, it earns the return that eval reported.

A short real CartPole run trains the policy (a real Reverb server, a collect actor thread and
the learner), then the eval process evaluates the final weights. The fresh process (`python
-I`, outside the checkout, with this project's packages blocked from import) loads
root_dir/learner/policies/greedy_policy and replays eval's episodes: same environment, same
seed, same number of episodes. The greedy policy is deterministic, so the returns must match;
and on a batch of probe observations its actions equal those of the learner's final weights
pulled from the variable table.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from actor import collect
from actor import evaluate
from common import agents
from common import builders
from common import constants
from common import session as session_lib
from common import variables as variables_lib
from common.config import LearnerConfig
from common.config import EvalConfig
from common.config import ReplayConfig
from common.config import validated_configs
from learner import export
from learner import train
from replay_server import tables as tables_lib
from tests.conftest import FRESH_PROCESS_HEADER
from tests.conftest import GIN_DIR
from tests.conftest import parse_gin
from tests.conftest import run_signer

# Trains a learner and an actor to eval's return, then loads the export in a fresh process.
pytestmark = pytest.mark.slow

TRAIN_STEPS = 300

# Runs with nothing from this project: its top-level packages cannot even be imported.
_FRESH_PROCESS = FRESH_PROCESS_HEADER + r'''import tensorflow as tf
from tf_agents.drivers import py_driver
from tf_agents.environments import suite_gym
from tf_agents.metrics import py_metrics
from tf_agents.policies import py_tf_eager_policy

import numpy as np
from tf_agents.trajectories import time_step as ts


policy_dir, env_name, seed, num_episodes, probe_path = sys.argv[1:6]
seed, num_episodes = int(seed), int(num_episodes)
if env_name == 'CartPoleNoVelocity-v0':  # The task's definition: CartPole seeing x and angle.
  import gym

  class NoVelocity(gym.ObservationWrapper):
    def __init__(self):
      super().__init__(gym.make('CartPole-v0').unwrapped)
      inner = self.env.observation_space
      self.observation_space = gym.spaces.Box(inner.low[[0, 2]], inner.high[[0, 2]],
                                              dtype=inner.dtype)

    def observation(self, observation):
      return observation[[0, 2]]

  gym.register(id=env_name, entry_point=NoVelocity, max_episode_steps=200)
loaded = tf.saved_model.load(policy_dir)
# The raw SavedModel's greedy actions on a batch of probe observations, from its initial state.
observations = tf.constant(np.load(probe_path))
probe_actions = loaded.action(ts.restart(observations, batch_size=observations.shape[0]),
                              loaded.get_initial_state(observations.shape[0]))
np.save(probe_path + '.actions.npy', probe_actions.action.numpy())
policy = py_tf_eager_policy.SavedModelPyTFEagerPolicy(policy_dir, load_specs_from_pbtxt=True)
env = suite_gym.load(env_name)
env.seed(seed)
average_return = py_metrics.AverageReturnMetric(buffer_size=num_episodes)
average_length = py_metrics.AverageEpisodeLengthMetric(buffer_size=num_episodes)
py_driver.PyDriver(env, policy, [average_return, average_length],
                   max_episodes=num_episodes).run(env.reset(), policy.get_initial_state(1))
assert not PROJECT & {m.split('.')[0] for m in sys.modules}
print(json.dumps(dict(train_step=int(loaded.get_train_step().numpy()),
                      average_return=float(average_return.result()),
                      average_length=float(average_length.result()))))
'''


@pytest.mark.parametrize('gin_name, env_name', [
    ('dqn_cartpole.gin', 'CartPole-v0'),
    ('dqn_rnn_cartpole_no_velocity.gin', 'CartPoleNoVelocity-v0'),  # A recurrent policy.
], ids=['feed-forward', 'recurrent'])
def test_exported_policy_loads_without_the_project_and_reaches_evals_return(
    gin_name, env_name, port, root_dir, tmp_path):
  gin_file = os.path.join(GIN_DIR, gin_name)
  parse_gin(gin_file, _bindings())
  server = reverb.Server(tables_lib.make_tables(builders.build(ReplayConfig()).specs,
                                              ReplayConfig(), LearnerConfig()), port=port)
  cartpole_server = f'localhost:{port}'
  try:
    _check_portable(gin_file, env_name, cartpole_server, root_dir, tmp_path)
  finally:
    server.stop()


def _check_portable(gin_file, env_name, cartpole_server, root_dir, tmp_path):
  stop = threading.Event()
  actor = threading.Thread(target=collect.run_actor, args=(root_dir, cartpole_server, 0),
                           kwargs=dict(max_env_steps=20_000, stop_event=stop,
                                       configs=validated_configs()))
  actor.start()
  try:
    assert train.run_learner(root_dir, cartpole_server,
                             max_train_steps=TRAIN_STEPS,
                                 configs=validated_configs()) == TRAIN_STEPS
  finally:
    stop.set()
    actor.join(timeout=120)
  assert not actor.is_alive()
  parse_gin(gin_file, _bindings())
  assert evaluate.run_eval(root_dir, cartpole_server, max_evals=1, configs=validated_configs()) == 1
  row = evaluate.read_csv(os.path.join(root_dir, constants.EVAL_CSV))[-1]
  assert row['train_step'] == TRAIN_STEPS  # Eval ran on the learner's final weights...
  eval_config = EvalConfig()
  # The learner's final weights, as the actors and eval get them from the variable table.
  train_step = tf.Variable(0, dtype=tf.int64)
  agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  pulled = variables_lib.VariableClient(session_lib.unchecked(cartpole_server),
                                        agents.policy_variables(agent, train_step),
                                        run_signer(root_dir))
  assert pulled.pull() == TRAIN_STEPS
  size = agent.time_step_spec.observation.shape[0]
  observations = np.random.RandomState(0).uniform(-2.5, 2.5, (2000, size)).astype(np.float32)
  expected_actions = agent.policy.action(ts.restart(tf.constant(observations), 2000),
                                         agent.policy.get_initial_state(2000)).action
  probe_path = str(tmp_path / 'observations.npy')
  np.save(probe_path, observations)

  script = tmp_path / 'fresh.py'
  script.write_text(_FRESH_PROCESS)
  policy_dir = os.path.join(root_dir, constants.POLICY_DIR, export.GREEDY_POLICY)
  env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHON')}
  done = subprocess.run(
      [sys.executable, '-I', str(script), policy_dir, env_name, str(eval_config.seed),
       str(eval_config.num_episodes), probe_path],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  fresh = json.loads(done.stdout.strip().splitlines()[-1])
  assert fresh['train_step'] == TRAIN_STEPS  # ...and the export holds the same weights.
  assert fresh['average_return'] == row['average_return']
  assert fresh['average_length'] == row['average_episode_length']
  # Action for action, the SavedModel is the network the learner trained last.
  np.testing.assert_array_equal(np.load(probe_path + '.actions.npy'), expected_actions.numpy())


def _bindings():
  from tests.conftest import FAST_BINDINGS  # pylint: disable=g-import-not-at-top
  # Five eval episodes make a coincidental match of two different policies unlikely.
  return FAST_BINDINGS + ('EvalConfig.num_episodes = 5',
                          'LearnerConfig.policy_export_interval = 1000')
