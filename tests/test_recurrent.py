"""Recurrent policies in the actor: per-environment state, and the same actions as TF-Agents.

Real DQN-RNN and PPO-RNN agents on the real masked-velocity CartPole.
"""

import os

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.drivers import py_driver
from tf_agents.policies import py_tf_eager_policy
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import collect
from actor import inference
from actor import vector_env
from actor import writer as writer_lib
from common import agents
from common import builders
from common import gin_config
from common import constants
from common import environments
from common.agents import dqn
from common.config import LearnerConfig
from common.config import ReplayConfig
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR

RNN_GINS = pytest.mark.parametrize('gin_name', [
    'dqn_rnn_cartpole_no_velocity.gin', 'ppo_rnn_cartpole_no_velocity.gin'],
    ids=['dqn-rnn', 'ppo-rnn'])


def _agent(gin_name):
  gin_config.load_gin([os.path.join(GIN_DIR, gin_name)])
  tf.random.set_seed(3)
  return builders.build(ReplayConfig()).agent


def _step(step_types, observations):
  n = len(step_types)
  return ts.TimeStep(np.asarray(step_types, np.int32), np.zeros(n, np.float32),
                     np.ones(n, np.float32), np.asarray(observations, np.float32))


@RNN_GINS
def test_policy_state_is_reset_per_environment_at_its_episode_end(gin_name):
  agent = _agent(gin_name)
  policy = inference.make_policy(agents.greedy_policy(agent), 2, 'tf')
  assert isinstance(policy, inference.CompiledPolicy) and len(tf.nest.flatten(policy.state)) == 2
  rng = np.random.RandomState(0)
  policy(_step([ts.StepType.FIRST] * 2, rng.uniform(-0.2, 0.2, (2, 2))))
  for _ in range(5):
    policy(_step([ts.StepType.MID] * 2, rng.uniform(-0.2, 0.2, (2, 2))))
  carried = [np.copy(s) for s in tf.nest.flatten(policy.state)]
  # Environment 0's episode ended: its next step is FIRST; environment 1 goes on.
  observation = rng.uniform(-0.2, 0.2, (2, 2))
  policy(_step([ts.StepType.FIRST, ts.StepType.MID], observation))
  after = tf.nest.flatten(policy.state)

  fresh = inference.make_policy(agents.greedy_policy(agent), 2, 'tf')
  fresh(_step([ts.StepType.FIRST] * 2, observation))
  from_zero = tf.nest.flatten(fresh.state)
  continued = inference.make_policy(agents.greedy_policy(agent), 2, 'tf')
  continued._state = carried  # pylint: disable=protected-access
  continued(_step([ts.StepType.MID] * 2, observation))
  from_carried = tf.nest.flatten(continued.state)
  for a, zero, kept in zip(after, from_zero, from_carried):
    np.testing.assert_allclose(a[0], zero[0], rtol=1e-6, atol=1e-6)  # reset on its own
    np.testing.assert_allclose(a[1], kept[1], rtol=1e-6, atol=1e-6)  # state carried on
    assert not np.allclose(zero[1], kept[1])  # (the two differ, so the check can fail)


@RNN_GINS
def test_recurrent_actions_in_the_actor_equal_tf_agents_py_driver(gin_name):
  agent = _agent(gin_name)
  greedy = agents.greedy_policy(agent)
  seed, steps = 11, 400

  reference_env = environments.make_environment(seed=seed)
  recorded = []
  reference_policy = py_tf_eager_policy.PyTFEagerPolicy(greedy, use_tf_function=True)
  driver = py_driver.PyDriver(
      reference_env, reference_policy,
      observers=[lambda traj: recorded.append((int(traj.step_type), int(traj.action)))],
      max_steps=steps)
  driver.run(reference_env.reset(), reference_policy.get_initial_state(batch_size=1))
  reference_env.close()

  env = vector_env.VectorEnv([environments.make_environment(seed=seed)])
  policy = inference.make_policy(greedy, 1, 'tf')
  ours = []
  time_step = env.reset()
  metrics = collect.EpisodeMetrics(1)
  while len(ours) < len(recorded):
    action, _ = policy(time_step)
    ours.append((int(time_step.step_type[0]), int(action[0])))
    next_time_step = env.step(action)
    metrics.update(time_step.step_type, next_time_step.step_type, next_time_step.reward)
    time_step = next_time_step
  env.close()
  assert metrics.episodes >= 3  # The sequence crosses several episode ends.
  assert ours == recorded


def test_burn_in_masks_the_first_transitions_of_each_sequence_out_of_the_loss():
  rng = np.random.RandomState(0)
  targets, q_values = (tf.constant(rng.normal(size=(4, 9)), tf.float32) for _ in range(2))
  squared = ((targets - q_values) ** 2).numpy()
  masked = dqn.burn_in_loss(3)(targets, q_values).numpy()
  np.testing.assert_array_equal(masked[:, :3], 0.0)
  np.testing.assert_allclose(masked[:, 3:], squared[:, 3:], rtol=1e-6)
  np.testing.assert_allclose(dqn.burn_in_loss(0)(targets, q_values), squared, rtol=1e-6)
  flat = dqn.burn_in_loss(3)(targets[:, 0], q_values[:, 0])  # No time axis: unchanged.
  np.testing.assert_allclose(flat, squared[:, 0], rtol=1e-6)


def _episodes(lengths):
  """Batch-of-one trajectory steps of consecutive episodes (each with its boundary step);
  observation[0] is the step's index in the whole stream."""
  steps = []
  for length in lengths:
    for t in range(length + 1):
      step_type = ts.StepType.FIRST if t == 0 else (
          ts.StepType.LAST if t == length else ts.StepType.MID)
      next_type = ts.StepType.FIRST if t == length else (
          ts.StepType.LAST if t == length - 1 else ts.StepType.MID)
      steps.append(trajectory_lib.Trajectory(
          step_type=np.array([step_type], np.int32),
          observation=np.array([[len(steps), 0.0]], np.float32),
          action=np.array([t % 2], np.int64), policy_info=(),
          next_step_type=np.array([next_type], np.int32),
          reward=np.array([1.0 if t < length else 0.0], np.float32),
          discount=np.array([0.0 if t >= length - 1 else 1.0], np.float32)))
  return steps


def test_recurrent_windows_run_on_across_episode_ends_as_tf_agents_samples_them(port):
  gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_rnn_cartpole_no_velocity.gin')],
                  ['ReplayConfig.min_size = 1', 'ReplayConfig.samples_per_insert = None'])
  replay_config = ReplayConfig()
  built = builders.build(replay_config)
  assert built.specs.family.items_span_episodes and built.specs.sequence_length == 10
  server = reverb.Server(tables_lib.make_tables(built.specs, replay_config, LearnerConfig()),
                         port=port)
  try:
    # An episode shorter than a window, then a longer one: 4 + 16 = 20 steps in the stream.
    steps = _episodes([3, 15])
    observer = writer_lib.BatchedTrajectoryObserver(
        reverb.Client(f'localhost:{port}'), 1, 10, step_spec=built.specs.collect_data_spec,
        span_episodes=built.specs.family.items_span_episodes)
    for step in steps:
      observer(step)
    assert observer.flush(timeout_s=30)
    observer.close()
    client = reverb.Client(f'localhost:{port}')
    assert client.server_info()[constants.REPLAY_TABLE].current_size == len(steps) - 10 + 1
    samples = list(client.sample(
        constants.REPLAY_TABLE, num_samples=200))
  finally:
    server.stop()
  starts = {int(sample[0].data[1][0]) for sample in samples}
  # Every stride-1 window of the stream: 20 - 10 + 1 = 11, the first holding the short
  # episode's terminal transition and its boundary.
  assert starts == set(range(len(steps) - 10 + 1))
  for sample in samples:
    first = int(sample[0].data[1][0])
    np.testing.assert_array_equal([int(step.data[1][0]) for step in sample],
                                  np.arange(first, first + 10))
