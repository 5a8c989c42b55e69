"""The learner bootstraps from a truncated final step and not from a terminated one.

A real Gymnasium environment (tests/envs.py's corridor, through its entry point and a time
limit) is stepped by the actors' `VectorEnv`; its trajectories go through the actors' observer
into a real replay server, and back out through the learner's dataset into the DQN agent's
loss. The TD target of the transition cut by the time limit includes gamma times the target
network's value of the final observation; the one that reached the corridor's end, on the very
step the limit also came (Gymnasium then says both terminated and truncated), has none.
"""

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import vector_env
from actor import writer as writer_lib
from common import builders
from common import gin_config
from common import constants
from common import environments
from common.config import LearnerConfig
from common.config import ReplayConfig
from learner import dataset as learner_dataset
from replay_server import tables as tables_lib
from tests.conftest import CARTPOLE_GIN

GAMMA = 0.9
LENGTH = 3  # Cells to the corridor's end; the time limit is as many steps.


def test_a_truncated_step_is_bootstrapped_and_a_terminated_one_is_not(port):
  gin_config.load_gin([CARTPOLE_GIN], [
      'make_environment.env_name = None',
      "make_environment.entry_point = 'tests.envs:Corridor'",
      f"make_environment.env_kwargs = {{'length': {LENGTH}}}",
      f'make_environment.max_episode_steps = {LENGTH}',
      f'dqn_agent.gamma = {GAMMA}',
      'ReplayConfig.samples_per_insert = None', 'ReplayConfig.min_size = 1'])
  replay_config = ReplayConfig()
  built = builders.build(replay_config)
  server = reverb.Server(tables_lib.make_tables(built.specs, replay_config, LearnerConfig()),
                         port=port)
  address = f'localhost:{port}'
  try:
    env = vector_env.VectorEnv([environments.make_environment(seed=0)])
    observer = writer_lib.BatchedTrajectoryObserver(reverb.Client(address), 1,
                                                built.specs.sequence_length)
    # Episode 1 dawdles (right, left, right): cut by the time limit at cell 1.
    # Episode 2 walks right three times: it reaches the end as the limit comes. After each
    # LAST step, the next step starts a new episode (the boundary step that ends the items).
    time_step = env.reset()
    kinds = []
    for action in (1, 0, 1, 1, 1, 1, 1, 1):
      action_step = policy_step.PolicyStep(np.array([action], np.int64), (), ())
      next_step = env.step(action_step.action)
      observer(trajectory_lib.from_transition(time_step, action_step, next_step))
      if int(next_step.step_type[0]) == ts.StepType.LAST:
        kinds.append((float(next_step.observation[0, 0]), float(next_step.discount[0])))
      time_step = next_step
    assert kinds == [(1.0, 1.0), (float(LENGTH), 0.0)]  # (final cell, discount)
    assert observer.flush(timeout_s=30)
    observer.close()
    size = reverb.Client(address).server_info()[constants.REPLAY_TABLE].current_size
    experience, _ = next(iter(learner_dataset.make_dataset(
        address, built.specs.collect_data_spec, 64, built.specs.sequence_length, 5000)))
  finally:
    server.stop()
  assert size == 2 * LENGTH  # One 2-step item per transition; none spans the episodes.

  agent = built.agent
  loss_info = agent._loss(  # pylint: disable=protected-access
      experience, td_errors_loss_fn=agent._td_errors_loss_fn,  # pylint: disable=protected-access
      gamma=agent._gamma, reward_scale_factor=agent._reward_scale_factor)  # pylint: disable=protected-access
  observation = experience.observation.numpy()
  q = agent._q_network(experience.observation[:, 0])[0]  # pylint: disable=protected-access
  q_taken = tf.gather(q, experience.action[:, 0], batch_dims=1).numpy()
  target_value = np.max(
      agent._target_q_network(experience.observation[:, 1])[0].numpy(), axis=1)  # pylint: disable=protected-access
  target = loss_info.extra.td_error.numpy() + q_taken
  final = experience.step_type.numpy()[:, 1] == ts.StepType.LAST
  truncated = final & (observation[:, 1, 0] == 1.0)
  terminated = final & (observation[:, 1, 0] == LENGTH)
  assert truncated.any() and terminated.any()
  reward = experience.reward.numpy()[:, 0]
  np.testing.assert_allclose(experience.discount.numpy()[truncated, 0], 1.0)
  np.testing.assert_allclose(experience.discount.numpy()[terminated, 0], 0.0)
  # Truncated: reward + gamma * max_a Q_target(final observation), a bootstrap that is not 0.
  assert np.all(np.abs(target_value[truncated]) > 1e-6)
  np.testing.assert_allclose(target[truncated], reward[truncated] + GAMMA * target_value[truncated],
                             rtol=1e-5, atol=1e-5)
  # Terminated: the reward alone.
  np.testing.assert_allclose(target[terminated], reward[terminated], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(reward[terminated], 1.0)
