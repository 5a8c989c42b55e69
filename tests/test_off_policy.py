"""The off-policy family: Ape-X exploration, n-step items, prioritized replay and the new agents.

Real Reverb servers and real agents; the n-step and importance-weight checks compare against
TF-Agents' own losses and against the formulas computed here by hand.
"""

import os

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.agents.categorical_dqn import categorical_dqn_agent as c51_lib
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import writer as writer_lib
from common import agents
from common import builders
from common import gin_config
from common import constants
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import SignatureMismatchError
from common.errors import UserError
from common import session as session_lib
from learner import compiled_learner
from learner import dataset as learner_dataset
from learner import priorities
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR

APEX_GIN = os.path.join(GIN_DIR, 'apex_dqn_cartpole.gin')
C51_GIN = os.path.join(GIN_DIR, 'c51_cartpole.gin')
DQN_GIN = os.path.join(GIN_DIR, 'dqn_cartpole.gin')
# Tables that take items without samples (no ratio limiter) and can be sampled at once.
OPEN_TABLE = ('ReplayConfig.samples_per_insert = None', 'ReplayConfig.min_size = 1')


def _load(gin_file, *bindings):
  gin_config.load_gin([gin_file], list(bindings))
  return ReplayConfig()


def _server(built, replay_config, port):
  server = reverb.Server(tables_lib.make_tables(built.specs, replay_config, LearnerConfig()),
                         port=port)
  return server, f'localhost:{port}'


def _episode(length, seed=0):
  """A CartPole-shaped episode of `length` env steps as a batch-of-one Trajectory per step,
  plus the boundary step: rewards 1..length, discount 1 until the last step's 0."""
  rng = np.random.RandomState(seed)
  steps = []
  for t in range(length + 1):
    step_type = ts.StepType.FIRST if t == 0 else (
        ts.StepType.LAST if t == length else ts.StepType.MID)
    next_type = ts.StepType.FIRST if t == length else (
        ts.StepType.LAST if t == length - 1 else ts.StepType.MID)
    steps.append(trajectory_lib.Trajectory(
        step_type=np.array([step_type], np.int32),
        observation=rng.uniform(-1, 1, (1, 4)).astype(np.float32),
        action=np.array([t % 2], np.int64),
        policy_info=(),
        next_step_type=np.array([next_type], np.int32),
        reward=np.array([float(t + 1) if t < length else 0.0], np.float32),
        discount=np.array([0.0 if t >= length - 1 else 1.0], np.float32)))
  return steps


def _write(address, steps, sequence_length):
  observer = writer_lib.BatchedTrajectoryObserver(reverb.Client(address), 1, sequence_length)
  for step in steps:
    observer(step)
  assert observer.flush(timeout_s=30)
  observer.close()


def _agent_loss(agent, experience):
  """The agent's loss as its `train` computes it (the same discount and TD loss function)."""
  return agent._loss(  # pylint: disable=protected-access
      experience, td_errors_loss_fn=agent._td_errors_loss_fn,  # pylint: disable=protected-access
      gamma=agent._gamma, reward_scale_factor=agent._reward_scale_factor)  # pylint: disable=protected-access


def _sample_all(address, specs, count):
  dataset = learner_dataset.make_dataset(address, specs.collect_data_spec, count,
                                         specs.sequence_length, 5000)
  return next(iter(dataset))


# --- Ape-X exploration ------------------------------------------------------------------------

def test_apex_epsilon_ladder_spans_the_papers_range():
  ladder = [agents.apex_epsilon(0.4, agents.ActorSlot(i, 8)) for i in range(8)]
  assert ladder[0] == pytest.approx(0.4)
  assert ladder[-1] == pytest.approx(0.4 ** 8)
  assert all(a > b for a, b in zip(ladder, ladder[1:]))
  assert ladder[3] == pytest.approx(0.4 ** (1 + 7 * 3 / 7))
  assert agents.apex_epsilon(0.4, None) == 0.4  # learner, eval, server
  assert agents.apex_epsilon(0.4, agents.ActorSlot(12, 8)) == pytest.approx(0.4 ** 8)
  # Without --num_actors the gin ladder size applies.
  assert agents.apex_epsilon(0.4, agents.ActorSlot(1, 0), num_actors=3) == pytest.approx(
      0.4 ** 4.5)


def test_apex_epsilon_gives_each_environment_of_a_batched_actor_its_own_rung():
  # 2 actors of 4 environments: 8 slots, actor 1 holds slots 4..7.
  second = agents.apex_epsilon(0.4, agents.ActorSlot(1, 2, num_envs=4))
  np.testing.assert_allclose(second, [0.4 ** (1 + 7 * i / 7) for i in range(4, 8)], rtol=1e-6)
  single = agents.apex_epsilon(0.4, agents.ActorSlot(0, 1, num_envs=8))
  assert single[0] == pytest.approx(0.4) and single[-1] == pytest.approx(0.4 ** 8)


def test_each_actor_builds_its_own_epsilon_from_the_gin_ladder():
  replay_config = _load(APEX_GIN)
  epsilons = []
  for task in (0, 7):
    built = builders.build(replay_config, actor=agents.ActorSlot(task, 8))
    epsilons.append(float(built.agent.collect_policy._get_epsilon()))  # pylint: disable=protected-access
  assert epsilons == pytest.approx([0.4, 0.4 ** 8])


def test_a_batched_actor_explores_with_one_epsilon_per_environment():
  replay_config = _load(APEX_GIN)
  built = builders.build(replay_config, actor=agents.ActorSlot(0, 1, num_envs=8))
  from actor import inference  # pylint: disable=g-import-not-at-top
  policy = inference.CompiledPolicy(built.agent.collect_policy, 8)
  observation = np.zeros((8, 4), np.float32)
  time_step = ts.TimeStep(step_type=np.ones(8, np.int32), reward=np.zeros(8, np.float32),
                          discount=np.ones(8, np.float32), observation=observation)
  greedy = int(agents.greedy_policy(built.agent).action(
      ts.restart(tf.constant(observation[:1]), 1)).action.numpy()[0])
  # On one observation, environment 0 (epsilon 0.4) leaves the greedy action about 20% of the
  # time and environment 7 (epsilon 0.4 ** 8) almost never.
  off_greedy = np.mean([policy(time_step)[0] != greedy for _ in range(400)], axis=0)
  assert 0.1 < off_greedy[0] < 0.3
  assert off_greedy[7] < 0.02


# --- Start-up refusals ------------------------------------------------------------------------

@pytest.mark.parametrize('gin_file,env,message', [
    ('dqn_cartpole.gin', 'InvertedPendulumBulletEnv-v0', 'DQN needs a discrete action space'),
    ('ddqn_cartpole.gin', 'InvertedPendulumBulletEnv-v0', 'DDQN needs a discrete action space'),
    ('c51_cartpole.gin', 'InvertedPendulumBulletEnv-v0', 'C51 needs a discrete action space'),
    ('td3_inverted_pendulum.gin', 'CartPole-v0', 'TD3 needs a continuous action space'),
    ('ddpg_inverted_pendulum.gin', 'CartPole-v0', 'DDPG needs a continuous action space'),
    ('sac_inverted_pendulum.gin', 'CartPole-v0', 'SAC needs a continuous action space'),
])
def test_an_agent_refuses_the_wrong_action_space(gin_file, env, message):
  replay_config = _load(os.path.join(GIN_DIR, gin_file), f"make_environment.env_name = '{env}'")
  with pytest.raises(UserError, match=message):
    builders.build(replay_config)


def test_an_item_length_that_contradicts_n_is_refused_at_start_up():
  replay_config = _load(APEX_GIN, 'ReplayConfig.sequence_length = 2')
  with pytest.raises(UserError, match=r'trains on 4-step items.*sequence_length = 4'):
    builders.build(replay_config)


def test_a_server_built_for_another_n_is_refused_at_connect(port):
  server_config = _load(DQN_GIN, *OPEN_TABLE)
  server, address = _server(builders.build(server_config), server_config, port)
  try:
    client_config = _load(DQN_GIN, 'dqn_agent.n_step_update = 3',
                          'ReplayConfig.sequence_length = None')
    specs = builders.build(client_config).specs
    assert specs.sequence_length == 4
    with pytest.raises(SignatureMismatchError, match='signature mismatch'):
      session_lib.ServerSession(address, 'learner', specs, 10).connect()
  finally:
    server.stop()


# --- n-step items -----------------------------------------------------------------------------

def test_n_step_items_have_n_plus_one_steps_and_tf_agents_discounting(port):
  gamma, n = 0.9, 3
  replay_config = _load(DQN_GIN, *OPEN_TABLE, f'dqn_agent.n_step_update = {n}',
                        f'dqn_agent.gamma = {gamma}', 'ReplayConfig.sequence_length = None')
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  try:
    length = 10  # env steps; with the boundary step, 11 trajectory steps
    _write(address, _episode(length), built.specs.sequence_length)
    table = reverb.Client(address).server_info()[constants.REPLAY_TABLE]
    # One item per window of n + 1 consecutive steps of the episode, boundary step included.
    assert table.current_size == length + 1 - n
    experience, _ = _sample_all(address, built.specs, 64)
  finally:
    server.stop()
  rewards = experience.reward.numpy()
  assert rewards.shape == (64, n + 1)
  assert set(rewards[:, 0].astype(int)) == set(range(1, length + 2 - n))
  # The first n rewards of an item are consecutive steps' (the last may be the boundary's 0).
  np.testing.assert_array_equal(rewards[:, :n], rewards[:, :1] + np.arange(n))

  agent = built.agent
  loss_info = _agent_loss(agent, experience)
  obs = experience.observation
  q = agent._q_network(obs[:, 0])[0]  # pylint: disable=protected-access
  q_target = agent._target_q_network(obs[:, n])[0]  # pylint: disable=protected-access
  q_taken = tf.gather(q, experience.action[:, 0], batch_dims=1).numpy()
  discount = experience.discount.numpy()
  expected_target = np.zeros(64)
  for i in range(64):
    running = 1.0
    for k in range(n):
      expected_target[i] += running * rewards[i, k]
      running *= gamma * discount[i, k]
    expected_target[i] += running * np.max(q_target[i].numpy())
  np.testing.assert_allclose(loss_info.extra.td_error.numpy(), expected_target - q_taken,
                             rtol=1e-5, atol=1e-5)
  # The item that ends the episode bootstraps from nothing: its target is its rewards alone.
  last = rewards[:, 0] == length - n + 1
  assert last.any()
  np.testing.assert_allclose(expected_target[last],
                             length - n + 1 + gamma * (length - n + 2) + gamma ** 2 * length)


# --- Importance weights -----------------------------------------------------------------------

def test_importance_weights_follow_the_formula_and_annealing():
  probability = np.array([0.5, 0.25, 0.125, 0.125])
  weights = priorities.importance_weights(probability, np.full(4, 8), 0.5).numpy()
  expected = (8 * probability) ** -0.5
  np.testing.assert_allclose(weights, expected / expected.max(), rtol=1e-6)
  assert weights.max() == pytest.approx(1.0)
  replay_config = ReplayConfig(importance_exponent=0.4, importance_exponent_final=1.0,
                               importance_anneal_steps=100)
  betas = [float(priorities.importance_exponent(replay_config, s)) for s in (0, 50, 100, 500)]
  assert betas == pytest.approx([0.4, 0.7, 1.0, 1.0])


@pytest.mark.parametrize('gin_file', [APEX_GIN, C51_GIN], ids=['dqn', 'c51'])
def test_importance_weights_are_applied_to_the_loss(gin_file, port):
  replay_config = _load(gin_file, *OPEN_TABLE, 'ReplayConfig.prioritized = True',
                        'ReplayConfig.priority_exponent = 1.0')
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  try:
    _write(address, _episode(40) + _episode(40, seed=1), built.specs.sequence_length)
    client = reverb.Client(address)
    keys = [s[0].info.key for s in client.sample(constants.REPLAY_TABLE, 40)]
    # A skewed priority set, so that the weights differ from item to item.
    client.mutate_priorities(constants.REPLAY_TABLE,
                             {int(k): 1.0 + 10.0 * (i % 4) for i, k in enumerate(set(keys))})
    experience, info = _sample_all(address, built.specs, 32)
  finally:
    server.stop()
  agent = built.agent
  per_item = _agent_loss(agent, experience).extra.td_error.numpy()
  if gin_file == C51_GIN:
    per_item_loss = per_item  # the cross-entropy
  else:
    per_item_loss = per_item ** 2  # element-wise squared TD loss
  weights = priorities.importance_weights(info.probability, info.table_size,
                                          replay_config.importance_exponent).numpy()
  assert weights.min() < 0.99  # the sample is not uniform
  step = priorities.PrioritizedStep(agent, built.td_errors, replay_config,
                                    agent.train_step_counter)
  loss_info, sampled_keys, new_priorities = step(experience, info)
  # The train step's loss (computed before its update) is the importance-weighted mean...
  assert float(loss_info.loss) == pytest.approx(float(np.mean(weights * per_item_loss)),
                                                rel=1e-4)
  assert float(loss_info.loss) != pytest.approx(float(np.mean(per_item_loss)), rel=1e-3)
  # ...and each item's new priority is its |TD error| + epsilon.
  np.testing.assert_array_equal(sampled_keys.numpy(), info.key.numpy())
  np.testing.assert_allclose(new_priorities.numpy(),
                             np.abs(per_item) + replay_config.priority_epsilon, rtol=1e-4)


@pytest.mark.parametrize('n', [1, 2])
def test_weighted_c51_loss_is_the_stock_loss_without_weights(n, port):
  replay_config = _load(C51_GIN, *OPEN_TABLE, f'c51_agent.n_step_update = {n}')
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  try:
    _write(address, _episode(30), built.specs.sequence_length)
    experience, _ = _sample_all(address, built.specs, 16)
  finally:
    server.stop()
  ours = _agent_loss(built.agent, experience)
  stock = c51_lib.CategoricalDqnAgent._loss(  # pylint: disable=protected-access
      built.agent, experience, gamma=built.agent._gamma)  # pylint: disable=protected-access
  assert float(ours.loss) == pytest.approx(float(stock.loss), rel=1e-5)
  assert float(np.mean(ours.extra.td_error)) == pytest.approx(float(stock.loss), rel=1e-5)


# --- Priorities on the server -----------------------------------------------------------------

def _prioritized_learner(built, replay_config, address, tmp_path, on_priorities):
  step = priorities.PrioritizedStep(built.agent, built.td_errors, replay_config,
                                    built.agent.train_step_counter)
  learner = compiled_learner.CompiledLearner(
      str(tmp_path / 'learner'), built.agent.train_step_counter, built.agent,
      checkpoint_interval=-1, item_step=step, on_items=on_priorities)
  iterator = iter(learner_dataset.make_dataset(address, built.specs.collect_data_spec, 16,
                                      built.specs.sequence_length, 5000))
  return learner, iterator


def test_priorities_written_by_the_learner_are_on_the_server(port, tmp_path):
  replay_config = _load(APEX_GIN, *OPEN_TABLE)
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  writer = priorities.PriorityWriter(session_lib.unchecked(address), constants.REPLAY_TABLE)
  submitted = {}  # key -> every priority the learner computed for it

  def on_priorities(keys, values):
    for key, value in zip(keys.tolist(), values.tolist()):
      submitted.setdefault(key, []).append(value)
    writer.submit(keys, values)

  try:
    _write(address, _episode(60), built.specs.sequence_length)
    learner, iterator = _prioritized_learner(built, replay_config, address, tmp_path,
                                             on_priorities)
    learner.run(iterations=5, iterator=iterator)
    assert writer.flush(timeout_s=30)
    assert writer.failures == 0 and writer.sent_updates == len(submitted) > 0
    assert all(v != 1.0 for values in submitted.values() for v in values)
    # Every item's priority, read back from the server: one the learner computed for it where
    # it sampled the item, the actors' 1.0 elsewhere.
    client = reverb.Client(address)
    on_server = {}
    for sample in client.sample(constants.REPLAY_TABLE, 2000):
      on_server[int(sample[0].info.key)] = float(sample[0].info.priority)
    updated = set(submitted) & set(on_server)
    assert updated
    for key in updated:
      assert any(on_server[key] == pytest.approx(v) for v in submitted[key])
    assert {on_server[k] for k in set(on_server) - set(submitted)} <= {1.0}
    assert writer.take_max() == pytest.approx(max(max(v) for v in submitted.values()))
  finally:
    writer.close()
    server.stop()


def test_sample_frequencies_follow_the_priorities(port):
  replay_config = _load(APEX_GIN, *OPEN_TABLE, 'ReplayConfig.priority_exponent = 1.0')
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  writer = priorities.PriorityWriter(session_lib.unchecked(address), constants.REPLAY_TABLE)
  try:
    _write(address, _episode(6), built.specs.sequence_length)  # 4 items
    client = reverb.Client(address)
    keys = sorted({int(s[0].info.key) for s in client.sample(constants.REPLAY_TABLE, 200)})
    assert len(keys) == 4
    wanted = np.array([1.0, 2.0, 3.0, 14.0])
    writer.submit(np.array(keys, np.uint64), wanted)
    assert writer.flush(timeout_s=30)
    counts = dict.fromkeys(keys, 0)
    draws = 20000
    for sample in client.sample(constants.REPLAY_TABLE, draws):
      counts[int(sample[0].info.key)] += 1
  finally:
    writer.close()
    server.stop()
  frequencies = np.array([counts[k] for k in keys]) / draws
  # Binomial standard error at p = 0.7 and 20000 draws is 0.0032; allow six of them.
  np.testing.assert_allclose(frequencies, wanted / wanted.sum(), atol=0.02)


def test_an_update_for_an_evicted_item_is_harmless(port, tmp_path):
  replay_config = _load(APEX_GIN, *OPEN_TABLE, 'ReplayConfig.max_size = 30')
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  writer = priorities.PriorityWriter(session_lib.unchecked(address), constants.REPLAY_TABLE)
  try:
    _write(address, _episode(33), built.specs.sequence_length)  # 31 items: 1 evicted already
    client = reverb.Client(address)
    old_keys = np.array(sorted({int(s[0].info.key)
                                for s in client.sample(constants.REPLAY_TABLE, 300)}),
                        np.uint64)
    _write(address, _episode(40, seed=2), built.specs.sequence_length)  # evicts all of them
    writer.submit(old_keys, np.full(old_keys.size, 5.0))
    assert writer.flush(timeout_s=30)
    assert writer.failures == 0 and writer.sent_updates == old_keys.size
    info = client.server_info()[constants.REPLAY_TABLE]
    assert info.current_size == 30
    current = {int(s[0].info.key) for s in client.sample(constants.REPLAY_TABLE, 300)}
    assert not current & set(old_keys.tolist())
    # The learner trains on, and its own updates keep landing.
    learner, iterator = _prioritized_learner(built, replay_config, address, tmp_path,
                                             writer.submit)
    learner.run(iterations=3, iterator=iterator)
    assert writer.flush(timeout_s=30)
    assert writer.failures == 0 and writer.sent_updates > old_keys.size
  finally:
    writer.close()
    server.stop()


def test_priorities_the_table_cannot_take_are_not_sent(port):
  replay_config = _load(APEX_GIN, *OPEN_TABLE)
  built = builders.build(replay_config)
  server, address = _server(built, replay_config, port)
  writer = priorities.PriorityWriter(session_lib.unchecked(address), constants.REPLAY_TABLE)
  try:
    _write(address, _episode(6), built.specs.sequence_length)  # 4 items
    client = reverb.Client(address)
    keys = sorted({int(s[0].info.key) for s in client.sample(constants.REPLAY_TABLE, 200)})
    writer.submit(np.array(keys, np.uint64), np.array([3.0, -1.0, np.nan, np.inf]))
    assert writer.flush(timeout_s=30)
    assert writer.refused == 3 and writer.sent_updates == 1 and writer.failures == 0
    on_server = {int(s[0].info.key): float(s[0].info.priority)
                 for s in client.sample(constants.REPLAY_TABLE, 200)}
    assert on_server == {keys[0]: 3.0, keys[1]: 1.0, keys[2]: 1.0, keys[3]: 1.0}
    # The table's worker still runs: new items go in.
    _write(address, _episode(4, seed=3), built.specs.sequence_length)
    assert client.server_info()[constants.REPLAY_TABLE].current_size == 6
  finally:
    writer.close()
    server.stop()


def test_actors_insert_new_items_at_the_priority_the_learner_pushed(port):
  replay_config = _load(APEX_GIN, *OPEN_TABLE)
  built = builders.build(replay_config)
  assert constants.MAX_PRIORITY_KEY in built.specs.variables_signature
  server, address = _server(built, replay_config, port)
  try:
    observer = writer_lib.BatchedTrajectoryObserver(reverb.Client(address), 1,
                                                built.specs.sequence_length)
    observer.priority = 7.5
    for step in _episode(5):
      observer(step)
    assert observer.flush(timeout_s=30)
    observer.close()
    samples = reverb.Client(address).sample(constants.REPLAY_TABLE, 50)
    assert {float(s[0].info.priority) for s in samples} == {7.5}
  finally:
    server.stop()
