"""Unit tests of the builder layer: environments, specs, agents and table construction."""

import os
import re

import numpy as np
import pytest
import reverb
import tensorflow as tf

from common import agents
from common import builders
from common import constants
from common import environments
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import UserError
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR
from tests.conftest import parse_gin


def test_cartpole_specs_give_two_step_replay_signature():
  parse_gin()
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  assert specs.time_step_spec.observation.shape == (4,)
  assert specs.action_spec.dtype == tf.int64
  assert specs.replay_signature.observation.shape == (2, 4)
  assert specs.replay_signature.action.shape == (2,)
  assert set(specs.variables_signature) == {constants.POLICY_KEY, constants.TRAIN_STEP_KEY,
                                           constants.SIGNATURE_KEY}
  assert specs.variables_signature[constants.TRAIN_STEP_KEY].dtype == tf.int64
  assert specs.variables_signature[constants.SIGNATURE_KEY].shape == (4,)
  kernel_shapes = [tuple(s.shape) for s in specs.variables_signature[constants.POLICY_KEY]
                   if len(s.shape) == 2]
  assert kernel_shapes == [(4, 100), (100, 50), (50, 2)]


def test_specs_are_identical_across_independent_builds():
  parse_gin()
  _, first = builders.make_agent_and_specs(ReplayConfig())
  _, second = builders.make_agent_and_specs(ReplayConfig())
  flat = lambda sig: [(s.dtype, tuple(s.shape)) for s in tf.nest.flatten(sig)]
  assert flat(first.replay_signature) == flat(second.replay_signature)
  assert flat(first.variables_signature) == flat(second.variables_signature)


def test_sac_specs_for_a_pybullet_task():
  parse_gin('gin/sac_inverted_pendulum.gin', ())
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  assert specs.action_spec.dtype == tf.float32
  assert specs.replay_signature.action.shape == (2, 1)
  assert specs.replay_signature.observation.shape == (2, 5)


def test_tables_have_the_configured_size_and_signature(port):
  parse_gin()
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  server = reverb.Server(tables_lib.make_tables(specs, config, LearnerConfig()), port=port)
  try:
    info = reverb.Client(f'localhost:{port}').server_info()
    assert info[constants.REPLAY_TABLE].max_size == 100000
    assert info[constants.VARIABLE_TABLE].max_size == 1
    assert info[constants.REPLAY_TABLE].rate_limiter_info.min_size_to_sample == 64
    assert info[constants.REPLAY_TABLE].signature.observation.shape == (2, 4)
  finally:
    server.stop()


def test_min_size_limiter_without_samples_per_insert():
  limiter = tables_lib.make_rate_limiter(ReplayConfig(min_size=10))
  assert isinstance(limiter, reverb.rate_limiters.MinSize)


@pytest.mark.parametrize('spi,min_size', [(0.5, 1), (1.0, 1), (64.0, 100), (256.0, 10000),
                                          (1000.0, 1)])
def test_sample_to_insert_ratio_error_buffer_passes_reverb_checks(spi, min_size):
  limiter = tables_lib.make_rate_limiter(ReplayConfig(min_size=min_size, samples_per_insert=spi))
  assert isinstance(limiter, reverb.rate_limiters.SampleToInsertRatio)
  # Reverb's own deadlock rules: a range of at least 2 * max(1, spi) that contains the offset.
  assert limiter._max_diff - limiter._min_diff >= 2 * max(1.0, spi)
  assert limiter._min_diff <= spi * min_size <= limiter._max_diff


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(min_size=0), 'min_size'),
    (dict(max_size=10, min_size=20), 'exceeds'),
    (dict(samples_per_insert=0.0), 'samples_per_insert'),
    (dict(samples_per_insert=-2.0), 'samples_per_insert'),
    (dict(sequence_length=1), 'sequence_length'),
])
def test_impossible_replay_numbers_are_user_errors(kwargs, fragment):
  with pytest.raises(UserError, match=fragment):
    ReplayConfig(**kwargs).validate()


def test_non_positive_batch_size_is_a_user_error():
  with pytest.raises(UserError, match='batch_size'):
    LearnerConfig(batch_size=0).validate()


def test_unknown_environment_id_is_a_user_error():
  with pytest.raises(UserError, match="unknown gym id 'NoSuchEnv-v9'"):
    environments.check_env_id('NoSuchEnv-v9')


def test_seeds_make_environments_reproducible_and_distinct():
  parse_gin()
  first = [environments.make_environment(seed=s).reset().observation for s in (7, 7, 8)]
  np.testing.assert_array_equal(first[0], first[1])
  assert not np.array_equal(first[0], first[2])


def test_dqn_on_continuous_actions_is_a_user_error():
  parse_gin('gin/sac_inverted_pendulum.gin', ('make_agent.agent_fn = @dqn_agent',))
  with pytest.raises(UserError, match='discrete action'):
    builders.make_agent_and_specs(ReplayConfig())


def test_policy_variables_are_shared_by_greedy_and_collect_policies():
  parse_gin()
  train_step = tf.Variable(0, dtype=tf.int64)
  time_step_spec, action_spec = environments.environment_specs()
  agent = agents.make_agent(time_step_spec, action_spec, train_step).agent
  pushed = {id(v) for v in agents.policy_variables(agent, train_step)[constants.POLICY_KEY]}
  assert {id(v) for v in agent.policy.variables()} == pushed


@pytest.mark.parametrize('gin_file, binding, fragment', [
    ('dqn_cartpole.gin', "dqn_agent.learning_rate = '1e-3'",
     "dqn_agent.learning_rate='1e-3' is not a number"),
    ('dqn_cartpole.gin', 'dqn_agent.fc_layer_params = 100',
     'dqn_agent.fc_layer_params=100 is not a sequence of integers'),
    ('dqn_cartpole.gin', 'dqn_agent.fc_layer_params = (100, 0)',
     'dqn_agent.fc_layer_params=(100, 0) must be positive layer widths'),
    ('dqn_cartpole.gin', 'dqn_agent.double_q = 1', 'dqn_agent.double_q=1 is not True or False'),
    ('dqn_cartpole.gin', 'dqn_agent.gamma = 1.5', 'dqn_agent.gamma=1.5 must be in [0, 1]'),
    ('dqn_cartpole.gin', 'dqn_agent.epsilon_greedy = -0.1',
     'dqn_agent.epsilon_greedy=-0.1 must be in [0, 1]'),
    ('sac_inverted_pendulum.gin', 'sac_agent.target_update_tau = 0.0',
     'sac_agent.target_update_tau=0.0 must be in (0, 1]'),
    ('sac_inverted_pendulum.gin', 'sac_agent.critic_learning_rate = -3e-4',
     'sac_agent.critic_learning_rate=-0.0003 must be > 0'),
    ('td3_inverted_pendulum.gin', 'td3_agent.actor_update_period = 2.0',
     'td3_agent.actor_update_period=2.0 is not an integer'),
    ('td3_inverted_pendulum.gin', 'td3_agent.exploration_noise_std = -1.0',
     'td3_agent.exploration_noise_std=-1.0 must be >= 0'),
    ('ppo_cartpole.gin', 'ppo_agent.num_epochs = 0', 'ppo_agent.num_epochs=0 must be >= 1'),
    ('ppo_cartpole.gin', 'ppo_agent.collect_sequence_length = 1',
     'ppo_agent.collect_sequence_length=1 must be >= 2'),
    ('ppo_cartpole.gin', 'ppo_agent.max_policy_lag = -1',
     'ppo_agent.max_policy_lag=-1 must be >= 0'),
    ('ppo_cartpole.gin', 'ppo_agent.lambda_value = 1.5',
     'ppo_agent.lambda_value=1.5 must be in [0, 1]'),
    ('ppo_cartpole.gin', 'ppo_agent.minibatch_size = 64.0',
     'ppo_agent.minibatch_size=64.0 is not'),
    ('ppo_rnn_cartpole_no_velocity.gin', 'ppo_rnn_agent.lstm_size = (0,)',
     'ppo_rnn_agent.lstm_size=(0,) must be positive layer widths'),
    ('dqn_pong.gin', 'dqn_agent.conv_layer_params = ((32, 8),)',
     'dqn_agent.conv_layer_params=((32, 8),) must be (filters, kernel, stride) triples'),
    ('dqn_pong.gin', 'dqn_agent.conv_layer_params = (32, 8, 4)',
     'dqn_agent.conv_layer_params=(32, 8, 4) is not a sequence of sequences of integers'),
    ('dqn_rnn_cartpole_no_velocity.gin', 'dqn_rnn_agent.burn_in = 9',
     'dqn_rnn_agent.burn_in=9 must be in [0, train_sequence_length - 1 = 9)'),
    ('ppo_pong.gin', 'ppo_agent.conv_layer_params = ((32, 8),)',
     'ppo_agent.conv_layer_params=((32, 8),) must be (filters, kernel, stride) triples'),
    ('ppo_pong.gin', "ppo_agent.activation = 'elu'",
     "ppo_agent.activation='elu' must be one of ['relu', 'tanh']"),
    ('ppo_pong.gin', 'ppo_agent.normalize_observations = True',
     'ppo_agent.normalize_observations = True cannot apply to uint8 image observations'),
])
def test_agent_builder_arguments_are_checked_before_the_agent_is_built(gin_file, binding,
                                                                       fragment):
  parse_gin(os.path.join(GIN_DIR, gin_file), [binding])
  with pytest.raises(UserError, match=re.escape(fragment)):
    builders.make_agent_and_specs(ReplayConfig())

