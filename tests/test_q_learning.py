"""Tabular Q-learning: each train step is Watkins' update of every sampled transition, with
step size alpha, on a table that is the linear network's kernel; a non-Discrete observation
is refused. Real agents on the real FrozenLake-v1 specs."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from common import builders
from common import gin_config
from common.config import ReplayConfig
from common.errors import UserError
from tests.conftest import GIN_DIR

FROZENLAKE_GIN = os.path.join(GIN_DIR, 'q_learning_frozenlake.gin')
ALPHA, GAMMA = 0.1, 0.99


def _table(agent):
  (kernel,) = agent._q_network.trainable_variables  # pylint: disable=protected-access
  return kernel


def _transitions(states, actions, rewards, next_states, next_types):
  """A batch of 2-step items: (state, action) -> (reward, next state of `next_types`)."""
  batch = len(states)
  pair = lambda first, second: np.stack([np.asarray(first), np.asarray(second)], axis=1)
  return trajectory_lib.Trajectory(
      step_type=tf.constant(pair([ts.StepType.MID] * batch, next_types), tf.int32),
      observation=tf.constant(pair(states, next_states), tf.int64),
      action=tf.constant(pair(actions, [0] * batch), tf.int64),
      policy_info=(),
      next_step_type=tf.constant(pair(next_types, [ts.StepType.MID] * batch), tf.int32),
      reward=tf.constant(pair(rewards, [0.0] * batch), tf.float32),
      discount=tf.constant(pair([0.0 if t == ts.StepType.LAST else 1.0 for t in next_types],
                                [1.0] * batch), tf.float32))


def test_a_train_step_is_watkins_update_of_each_transition():
  gin_config.load_gin([FROZENLAKE_GIN], [f'q_learning_agent.learning_rate = {ALPHA}',
                                         f'q_learning_agent.gamma = {GAMMA}'])
  agent = builders.build(ReplayConfig()).agent
  table = _table(agent)
  assert table.shape == (16, 4)  # 16 cells, 4 moves: the kernel is the Q-table.
  np.testing.assert_array_equal(table.numpy(), 0.0)
  rng = np.random.RandomState(0)
  start = rng.uniform(-1, 1, table.shape).astype(np.float32)
  table.assign(start)
  agent._target_q_network.set_weights(agent._q_network.get_weights())  # pylint: disable=protected-access
  # Three transitions of distinct (state, action): a move, a move into the goal (termination),
  # and a move whose episode was cut by the time limit (bootstrapped).
  states, actions = [3, 9, 14], [1, 2, 2]
  rewards, next_states = [0.0, 0.5, 1.0], [7, 13, 15]
  next_types = [ts.StepType.MID, ts.StepType.MID, ts.StepType.LAST]
  agent.train(_transitions(states, actions, rewards, next_states, next_types))
  expected = start.copy()
  for s, a, r, s2, t in zip(states, actions, rewards, next_states, next_types):
    bootstrap = 0.0 if t == ts.StepType.LAST else GAMMA * start[s2].max()
    expected[s, a] = start[s, a] + ALPHA * (r + bootstrap - start[s, a])
  np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_alpha_decays_to_its_final_value():
  gin_config.load_gin([FROZENLAKE_GIN], ['q_learning_agent.learning_rate = 0.1',
                                         'q_learning_agent.final_learning_rate = 0.01',
                                         'q_learning_agent.decay_steps = 100'])
  agent = builders.build(ReplayConfig()).agent
  table = _table(agent)
  agent._optimizer.iterations.assign(100)  # pylint: disable=protected-access
  agent.train(_transitions([3], [1], [1.0], [7], [ts.StepType.LAST]))
  assert table.numpy()[3, 1] == pytest.approx(0.01 * 1.0)  # alpha (1 - 0) at its final value


def test_the_greedy_policy_reads_the_table():
  gin_config.load_gin([FROZENLAKE_GIN], [])
  agent = builders.build(ReplayConfig()).agent
  values = np.zeros((16, 4), np.float32)
  best = np.random.RandomState(1).randint(0, 4, 16)
  values[np.arange(16), best] = 1.0
  _table(agent).assign(values)
  step = agent.policy.action(ts.restart(tf.range(16, dtype=tf.int64), 16))
  np.testing.assert_array_equal(step.action.numpy(), best)


def test_q_learning_refuses_an_observation_that_is_not_one_discrete_state():
  gin_config.load_gin([FROZENLAKE_GIN], ["make_environment.env_name = 'CartPole-v1'",
                                         'make_environment.env_kwargs = {}'])
  with pytest.raises(UserError, match='q_learning_agent needs a Discrete observation'):
    builders.build(ReplayConfig())
