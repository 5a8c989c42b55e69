"""The on-policy path: PPO's queue, end-to-end items with their policy version, stale drops.

Real Reverb servers, real PPO agents, a real collect actor; only `steps_per_iteration` is
checked as pure logic.
"""

import os
import threading
import time

import gin
import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import collect
from actor import writer as writer_lib
from common import agents
from common import builders
from common import gin_config
from common import constants
from common import replay
from common import session as session_lib
from common import variables as variables_lib
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.config import validated_configs
from common.errors import UserError
from learner import dataset as learner_dataset
from learner import on_policy
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR
from tests.conftest import run_signer
from tests.conftest import wait_until

PPO_GIN = os.path.join(GIN_DIR, 'ppo_cartpole.gin')
LENGTH = 4


def _load(*bindings):
  gin_config.load_gin([PPO_GIN], [f'ppo_agent.collect_sequence_length = {LENGTH}',
                              *bindings])
  return ReplayConfig()


def _server(built, port, capacity=None):
  """The agent's tables; `capacity` replaces the queue's size (to hold a test's items)."""
  tables = tables_lib.make_tables(built.specs, ReplayConfig(), LearnerConfig())
  if capacity is not None:
    tables[0] = tables_lib.make_queue_table(built.specs.collect_data_spec,
                                        built.specs.sequence_length, capacity)
  return reverb.Server(tables, port=port), f'localhost:{port}'


def _steps(num_envs, length, last_at=()):
  """Batched CartPole-shaped steps whose observation[0] is the step's index t; environment 0's
  episode ends at each t in `last_at` (that step is LAST, the next one FIRST)."""
  steps = []
  for t in range(length):
    step_type = np.full(num_envs, ts.StepType.MID, np.int32)
    next_type = np.full(num_envs, ts.StepType.MID, np.int32)
    if t == 0 or t - 1 in last_at:
      step_type[0] = ts.StepType.FIRST
    if t in last_at:
      step_type[0] = ts.StepType.LAST
    if t + 1 in last_at:
      next_type[0] = ts.StepType.LAST
    if t in last_at:
      next_type[0] = ts.StepType.FIRST
    observation = np.zeros((num_envs, 4), np.float32)
    observation[:, 0] = t
    observation[:, 1] = np.arange(num_envs)
    steps.append(trajectory_lib.Trajectory(
        step_type=step_type, observation=observation,
        action=np.zeros(num_envs, np.int64),
        policy_info={'dist_params': {'logits': np.zeros((num_envs, 2), np.float32)},
                     'value_prediction': np.zeros(num_envs, np.float32)},
        next_step_type=next_type, reward=np.ones(num_envs, np.float32),
        discount=np.ones(num_envs, np.float32)))
  return steps


def _write(address, built, steps, num_envs, priorities):
  """Writes `steps` end to end; item k of each environment gets priorities[k]."""
  observer = writer_lib.BatchedTrajectoryObserver(
      reverb.Client(address), num_envs, LENGTH, step_spec=built.specs.collect_data_spec,
      end_to_end=True)
  items = 0
  observer.priority = priorities[0]
  for step in steps:
    if observer.write(tf.nest.flatten(step), step.is_boundary()):
      items += 1
      if items < len(priorities):
        observer.priority = priorities[items]
  assert observer.flush(timeout_s=30)
  observer.close()


def _take(address, count):
  samples = list(reverb.Client(address).sample(constants.REPLAY_TABLE, num_samples=count))
  return [(float(s[0].info.priority), s) for s in samples]


def test_steps_per_iteration_follows_the_stock_learners_rules():
  ppo = agents.OnPolicy(num_epochs=10, minibatch_size=128, max_policy_lag=1)
  assert on_policy.steps_per_iteration(ppo, 8, 128, 1) == 80
  assert on_policy.steps_per_iteration(ppo, 8, 128, 2) == 40
  with pytest.raises(UserError, match='do not split into minibatches of 128'):
    on_policy.steps_per_iteration(ppo, 3, 100, 1)
  odd = agents.OnPolicy(num_epochs=3, minibatch_size=None, max_policy_lag=0)
  assert on_policy.steps_per_iteration(odd, 8, 128, 1) == 3
  with pytest.raises(UserError, match='do not split over 2 replicas'):
    on_policy.steps_per_iteration(odd, 8, 128, 2)


@pytest.mark.parametrize('binding', ['ReplayConfig.prioritized = True',
                                     'ReplayConfig.samples_per_insert = 4.0'])
def test_an_on_policy_agent_refuses_replay_settings_it_cannot_honour(binding):
  replay_config = _load(binding)
  with pytest.raises(UserError, match=r'this agent \(on-policy\) consumes each item once'):
    builders.build(replay_config)


def _value_gradients(agent):
  """Gradients of the value network's output with respect to the policy network's variables."""
  observation = tf.random.uniform((5, 4))
  actor_variables = agent._actor_net.trainable_variables  # pylint: disable=protected-access
  with tf.GradientTape() as tape:
    value, _ = agent._value_net(observation)  # pylint: disable=protected-access
    loss = tf.reduce_sum(value)
  return actor_variables, tape.gradient(loss, actor_variables)


@pytest.mark.parametrize('value_layers', [(), (16,)])
def test_a_shared_torso_is_trained_by_the_value_loss_and_carried_once(value_layers):
  built = builders.build(_load('ppo_agent.shared_torso = True',
                               f'ppo_agent.value_fc_layer_params = {value_layers}',
                               'ppo_agent.normalize_observations = False'))
  actor_variables, grads = _value_gradients(built.agent)
  torso = actor_variables[:-2]  # All but the logits layer's kernel and bias.
  assert torso and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
                       for g in grads[:-2])
  assert all(g is None for g in grads[-2:])  # The policy head is the policy's own.
  pushed = tf.nest.flatten(built.variables[constants.POLICY_KEY])
  assert len({id(v) for v in pushed}) == len(pushed)  # Each shared variable once.
  # The torso, the policy head, the value_fc_layer_params layers and the value output.
  assert len(pushed) == len(torso) + 2 + 2 * len(value_layers) + 2

  gin.clear_config()
  separate = builders.build(_load())
  _, grads = _value_gradients(separate.agent)
  assert all(g is None for g in grads)


def test_items_are_written_end_to_end_across_episodes_with_their_weights_version(port):
  replay_config = _load()
  built = builders.build(replay_config)
  server, address = _server(built, port)
  try:
    table = reverb.Client(address).server_info()[constants.REPLAY_TABLE]
    assert table.max_size == 8 and table.max_times_sampled == 1  # One batch.
    # 2 environments, 3 items each; environment 0's episode ends inside its first item.
    _write(address, built, _steps(2, 3 * LENGTH, last_at=(2,)), 2, [5.0, 85.0, 165.0])
    assert replay.inserted_env_steps(
        reverb.Client(address).server_info()[constants.REPLAY_TABLE]) == 6 * LENGTH
    items = _take(address, 6)
  finally:
    server.stop()
  seen = {}
  for priority, sample in items:
    observation = np.stack([step.data[1] for step in sample])  # (time, 4)
    env, first = int(observation[0, 1]), int(observation[0, 0])
    np.testing.assert_array_equal(observation[:, 0], np.arange(first, first + LENGTH))
    seen[(env, first)] = priority
  # Consecutive, non-overlapping items (stride LENGTH), the first spanning environment 0's
  # episode end, each tagged with the version set before it was written.
  assert seen == {(e, k * LENGTH): [5.0, 85.0, 165.0][k] for e in (0, 1) for k in range(3)}


@pytest.mark.parametrize('max_policy_lag, kept', [(1, (1, 2)), (0, (2,))])
def test_stale_items_are_dropped_at_the_configured_lag(max_policy_lag, kept, port, tmp_path):
  replay_config = _load(f'ppo_agent.max_policy_lag = {max_policy_lag}',
                        'LearnerConfig.batch_size = 1', f'ppo_agent.minibatch_size = {LENGTH}',
                        'ppo_agent.num_epochs = 2')
  train_step = tf.Variable(0, dtype=tf.int64)
  built = builders.build(replay_config, train_step)
  trainer = on_policy.OnPolicyTrainer(
      str(tmp_path / 'learner'), train_step, built.agent, built.specs.family, 1, LENGTH,
      tf.distribute.get_strategy(), checkpoint_interval=-1, summary_interval=1000,
      max_checkpoints_to_keep=1)
  per_iteration = trainer.steps_per_iteration
  assert per_iteration == 2  # 1 item of 4 steps, minibatches of 4, 2 epochs.
  train_step.assign(2 * per_iteration)  # The learner's weights are version 2.
  versions = [0, 1, 2, 3]  # In iterations; 3 is ahead of the learner (an earlier run's).
  server, address = _server(built, port, capacity=8)
  try:
    _write(address, built, _steps(1, 4 * LENGTH), 1,
           [float(v * per_iteration) for v in versions])
    iterator = learner_dataset.make_item_iterator(address, constants.REPLAY_TABLE,
                                            built.specs.replay_signature, 5000)
    batches = []
    for _ in kept:
      batches.append(trainer.gather(iterator))
    normalizer_count = lambda: float(
        built.agent._observation_normalizer._count[0].numpy().ravel()[0])  # pylint: disable=protected-access
    before = normalizer_count()
    # What is left in the queue after the gathers, then one whole iteration on a fresh item.
    _write(address, built, _steps(1, LENGTH), 1, [float(2 * per_iteration)])
    loss_info = trainer.run(iterator=iterator)
  finally:
    trainer.close()
    server.stop()
  gathered = [version for batch in batches for _, version in batch]
  assert gathered == [float(v * per_iteration) for v in kept]
  assert trainer.dropped == len(versions) - len(kept)
  assert int(train_step.numpy()) == 3 * per_iteration
  assert np.isfinite(float(loss_info.loss))
  assert normalizer_count() == pytest.approx(before + LENGTH)  # It saw the batch's steps.
  assert 'dropped_stale=' in trainer.interval_line()


@pytest.mark.slow  # Waits out rate-limiter timeouts or trains to a checkpoint: seconds each.
def test_an_on_policy_actor_waits_for_weights_and_tags_items_with_their_version(root_dir, port):
  replay_config = _load('ActorConfig.num_envs = 2', 'ActorConfig.log_interval_s = 1.0')
  train_step = tf.Variable(0, dtype=tf.int64)
  built = builders.build(replay_config, train_step)
  server, address = _server(built, port)
  stop = threading.Event()
  actor = threading.Thread(target=collect.run_actor, args=(root_dir, address, 0),
                           kwargs=dict(stop_event=stop, server_timeout_s=30,
                                       configs=validated_configs()))
  client = reverb.Client(address)
  size = lambda: client.server_info()[constants.REPLAY_TABLE].current_size
  pusher = variables_lib.VariableClient(session_lib.unchecked(address), built.variables,
                                        run_signer(root_dir))
  actor.start()
  try:
    # Without weights an on-policy actor writes nothing (no random-policy items).
    summary_dir = os.path.join(root_dir, constants.ACTOR_DIR, '0')
    wait_until(lambda: os.path.isdir(summary_dir), 120, 'the actor to start')
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # An observation window: the table must stay empty.
      assert size() == 0, 'an on-policy actor wrote items before any weights were pushed'
      stop.wait(0.2)
    train_step.assign(7)
    pusher.push()
    wait_until(lambda: size() >= 2, 60, 'items of the first weights')
    train_step.assign(9)
    pusher.push()
    versions = []

    def newer_weights_arrived():
      versions.extend(p for p, _ in _take(address, 1))
      return versions[-1] == 9.0

    wait_until(newer_weights_arrived, 60, 'items of the newer weights')
  finally:
    stop.set()
    actor.join(timeout=60)
    server.stop()
  assert not actor.is_alive()
  assert set(versions) <= {7.0, 9.0} and versions[0] == 7.0
  # The version changes only between items, never back: the actor checks after each item.
  assert versions == sorted(versions)
