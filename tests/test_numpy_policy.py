"""The NumPy collect policies act as the TensorFlow policies they replace.

Greedy and deterministic actions must equal the TF policy's on the same inputs; sampled SAC
actions must equal TF's squashing of the same Gaussian noise; epsilon-greedy actions must have
the TF policy's distribution, per environment (one epsilon each, the Ape-X ladder).
"""

import numpy as np
import pytest
from tf_agents.trajectories import time_step as ts

from actor import inference
from actor import numpy_policy
from common import agents
from common import builders
from common.config import ReplayConfig
from common.errors import UserError
from tests.conftest import GIN_DIR
from tests.conftest import parse_gin

BATCH = 8


def _build(gin_file, bindings=(), actor=agents.ActorSlot(0, 1, BATCH)):
  parse_gin(f'{GIN_DIR}/{gin_file}', bindings)
  return builders.build(ReplayConfig(), actor=actor).agent


def _perturb(network, seed):
  """Random weights, so that no test passes on the initializer's values alone."""
  rng = np.random.default_rng(seed)
  for variable in network.variables:
    variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))


def _time_step(agent, n, seed):
  spec = agent.time_step_spec.observation
  obs = np.random.default_rng(seed).normal(0.0, 2.0, (n,) + tuple(spec.shape)).astype(np.float32)
  return ts.TimeStep(step_type=np.ones(n, np.int32), reward=np.zeros(n, np.float32),
                     discount=np.ones(n, np.float32), observation=obs)


def test_dqn_greedy_actions_and_q_values_equal_tensorflow():
  agent = _build('dqn_cartpole.gin')
  _perturb(agent._q_network, 0)
  greedy = agents.greedy_policy(agent)
  ours = numpy_policy.for_policy(greedy, 256, seed=0)
  assert isinstance(ours, numpy_policy.QPolicy) and ours.epsilon is None
  step = _time_step(agent, 256, 1)
  expected = inference.CompiledPolicy(greedy, 256)(step)[0]
  np.testing.assert_array_equal(ours(step)[0], expected)
  q_tf, _ = agent._q_network(step.observation, step_type=step.step_type)
  np.testing.assert_allclose(ours.q_values(step.observation), q_tf.numpy(), rtol=1e-5,
                             atol=1e-5)


def test_weights_follow_the_variables_after_sync_only():
  agent = _build('dqn_cartpole.gin')
  greedy = agents.greedy_policy(agent)
  ours = numpy_policy.for_policy(greedy, 256, seed=0)
  step = _time_step(agent, 256, 2)
  before = ours.q_values(step.observation)
  _perturb(agent._q_network, 3)  # What a pull does: assign the learner's values.
  np.testing.assert_array_equal(ours.q_values(step.observation), before)
  ours.sync()
  q_tf, _ = agent._q_network(step.observation, step_type=step.step_type)
  np.testing.assert_allclose(ours.q_values(step.observation), q_tf.numpy(), rtol=1e-5,
                             atol=1e-5)


def test_dqn_epsilon_greedy_is_the_greedy_action_unless_the_draw_explores():
  agent = _build('dqn_cartpole.gin')
  _perturb(agent._q_network, 4)
  ours = numpy_policy.for_policy(agent.collect_policy, BATCH, seed=0)
  np.testing.assert_allclose(ours.epsilon, 0.1)  # The tutorial's epsilon_greedy.
  step = _time_step(agent, BATCH, 5)
  greedy = inference.CompiledPolicy(agents.greedy_policy(agent), BATCH)(step)[0]
  uniform = np.array([0.0, 0.05, 0.0999, 0.1, 0.5, 0.99, 0.01, 0.2], np.float32)
  random_actions = 1 - greedy  # The other action, so a wrong choice shows.
  action = ours.act(step.observation, uniform, random_actions)
  explore = uniform < 0.1
  np.testing.assert_array_equal(action, np.where(explore, random_actions, greedy))


def _action_frequencies(policy, step, calls):
  counts = np.zeros((step.observation.shape[0], 2))
  for _ in range(calls):
    action = np.asarray(policy(step)[0])
    counts[np.arange(len(action)), action] += 1
  return counts / calls


def test_dqn_epsilon_greedy_matches_tensorflow_per_environment_on_the_apex_ladder():
  # The Ape-X ladder over 8 environments: epsilon 0.4 down to 0.4 ** 8, one per environment.
  agent = _build('apex_dqn_cartpole.gin')
  _perturb(agent._q_network, 6)
  ours = numpy_policy.for_policy(agent.collect_policy, BATCH, seed=7)
  ladder = np.asarray(agent.collect_policy._epsilon, np.float32)
  assert ladder.shape == (BATCH,) and ladder[0] > ladder[-1]
  np.testing.assert_array_equal(ours.epsilon, ladder)
  step = _time_step(agent, BATCH, 8)
  greedy = inference.CompiledPolicy(agents.greedy_policy(agent), BATCH)(step)[0]
  calls = 3000
  theirs = _action_frequencies(inference.CompiledPolicy(agent.collect_policy, BATCH), step,
                               calls)
  mine = _action_frequencies(ours, step, calls)
  # P(greedy) = 1 - eps + eps / 2 for two actions; binomial standard error at most 0.0091.
  expected = 1.0 - ladder / 2.0
  for freq in (theirs, mine):
    np.testing.assert_allclose(freq[np.arange(BATCH), greedy], expected, atol=0.04)
  np.testing.assert_allclose(mine, theirs, atol=0.05)


def test_sac_deterministic_action_equals_tensorflow():
  agent = _build('sac_inverted_pendulum.gin')
  _perturb(agent._actor_network, 9)
  greedy = agents.greedy_policy(agent)
  ours = numpy_policy.for_policy(greedy, 64, seed=0)
  assert isinstance(ours, numpy_policy.TanhGaussianPolicy)
  step = _time_step(agent, 64, 10)
  expected = inference.CompiledPolicy(greedy, 64)(step)[0]
  np.testing.assert_allclose(ours(step)[0], expected, rtol=1e-5, atol=1e-5)


def test_sac_sampled_action_equals_tensorflows_squashing_of_the_same_noise():
  agent = _build('sac_inverted_pendulum.gin')
  _perturb(agent._actor_network, 11)
  ours = numpy_policy.for_policy(agent.collect_policy, 64, seed=0)
  step = _time_step(agent, 64, 12)
  noise = np.random.default_rng(13).standard_normal((64, 1)).astype(np.float32)
  distribution, _ = agent._actor_network(step.observation, step_type=step.step_type,
                                         network_state=())
  gaussian = distribution.input_distribution
  squash = distribution._squashed_distribution.bijector
  expected = squash.forward(gaussian.mean() + gaussian.stddev() * noise).numpy()
  np.testing.assert_allclose(ours.act(step.observation, noise), expected, rtol=1e-5, atol=1e-5)
  # And the samples the two policies draw have one distribution.
  one = ts.TimeStep(*[np.repeat(x[:1], 64, axis=0) for x in step])
  theirs = np.concatenate([inference.CompiledPolicy(agent.collect_policy, 64)(one)[0]
                           for _ in range(40)])
  mine = np.concatenate([ours(one)[0] for _ in range(40)])
  assert abs(theirs.mean() - mine.mean()) < 0.05 and abs(theirs.std() - mine.std()) < 0.05


@pytest.mark.parametrize('gin_file', ['c51_cartpole.gin', 'td3_inverted_pendulum.gin',
                                      'ddpg_inverted_pendulum.gin'])
def test_policies_without_a_twin_keep_tensorflow_and_numpy_is_refused(gin_file):
  agent = _build(gin_file)
  assert numpy_policy.for_policy(agent.collect_policy, BATCH, seed=0) is None
  assert isinstance(inference.make_policy(agent.collect_policy, BATCH, 'auto'),
                    inference.CompiledPolicy)
  with pytest.raises(UserError, match="ActorConfig.inference='numpy'"):
    inference.make_policy(agent.collect_policy, BATCH, 'numpy')


def test_tf_mode_keeps_the_compiled_policy():
  agent = _build('dqn_cartpole.gin')
  assert isinstance(inference.make_policy(agent.collect_policy, BATCH, 'tf'),
                    inference.CompiledPolicy)
  assert isinstance(inference.make_policy(agent.collect_policy, BATCH, 'numpy'),
                    numpy_policy.QPolicy)
  # 'auto' measures both; on this network NumPy is about 10x faster on any CPU.
  chosen = inference.make_policy(agent.collect_policy, BATCH, 'auto', calls=50)
  assert isinstance(chosen, numpy_policy.QPolicy)
  assert 'us per call in NumPy' in chosen.description and 'in TensorFlow' in chosen.description


def test_unknown_inference_mode_is_refused():
  from common.config import ActorConfig  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="ActorConfig.inference='jax'"):
    ActorConfig(inference='jax').validate()
