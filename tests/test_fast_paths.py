"""The collect loop's own pieces behave like the TF-Agents pieces they replace.

BatchedTrajectoryObserver writes the items ReverbAddTrajectoryObserver writes; VectorEnv steps
like BatchedPyEnvironment; EpisodeMetrics counts like the TF-Agents py_metrics; CompiledPolicy
acts like the policy; CompiledLearner trains with use_xla. Real Reverb servers, real
environments and real agents throughout.
"""

import collections
import re
import threading
import time

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.drivers import py_driver
from tf_agents.environments import batched_py_environment
from tf_agents.metrics import py_metrics
from tf_agents.policies import py_tf_eager_policy
from tf_agents.replay_buffers import reverb_utils
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import collect
from actor import evaluate
from actor import inference
from actor import vector_env
from actor import writer as writer_lib
from common import agents
from common import builders
from common import environments
from common.config import ReplayConfig
from common.errors import ItemRejectedError
from common.config import validated_configs
from learner import dataset as learner_dataset
from tests.conftest import parse_gin
from tests.conftest import wait_until


def _fifo_table(name, signature):
  """A table that hands its items back once each, in insertion order."""
  return reverb.Table(name, sampler=reverb.selectors.Fifo(), remover=reverb.selectors.Fifo(),
                      max_size=10_000, max_times_sampled=1,
                      rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature)


def _read_all(client, table, count):
  items = []
  for _ in range(count):
    sample = next(client.sample(table, num_samples=1, emit_timesteps=False))
    items.append([np.asarray(column) for column in tf.nest.flatten(sample.data)])
  return items


def _trajectories(num_envs, steps, seed=0):
  """Batched CartPole trajectories from real environments and random actions."""
  env = vector_env.VectorEnv([environments.make_environment(seed=seed + i)
                              for i in range(num_envs)])
  rng = np.random.default_rng(seed)
  time_step = env.reset()
  out = []
  for _ in range(steps):
    action = rng.integers(0, 2, size=(num_envs,)).astype(np.int64)
    next_time_step = env.step(action)
    out.append(trajectory_lib.Trajectory(
        step_type=time_step.step_type, observation=time_step.observation, action=action,
        policy_info=(), next_step_type=next_time_step.step_type,
        reward=next_time_step.reward, discount=next_time_step.discount))
    time_step = next_time_step
  env.close()
  return out


def test_observer_writes_the_items_of_the_stock_observer(port):
  parse_gin()
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  server = reverb.Server([_fifo_table('ours', specs.replay_signature),
                          _fifo_table('stock', specs.replay_signature)], port=port)
  client = reverb.Client(f'localhost:{port}')
  try:
    trajectories = _trajectories(1, 300)
    ours = writer_lib.BatchedTrajectoryObserver(client, 1, 2, table='ours')
    stock = reverb_utils.ReverbAddTrajectoryObserver(client, 'stock', sequence_length=2)
    for batched in trajectories:
      ours(batched)
      stock(tf.nest.map_structure(lambda x: x[0], batched))
    ours.flush()
    stock.flush()
    info = client.server_info()
    count = info['stock'].current_size
    episodes = sum(int(t.step_type[0] == ts.StepType.LAST) for t in trajectories)
    assert episodes >= 3  # Random CartPole episodes are short: boundaries were crossed.
    assert info['ours'].current_size == count
    for a, b in zip(_read_all(client, 'ours', count), _read_all(client, 'stock', count)):
      for column_a, column_b in zip(a, b):
        np.testing.assert_array_equal(column_a, column_b)
  finally:
    server.stop()


def test_batched_observer_keeps_each_environment_in_its_own_items(port):
  parse_gin()
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  server = reverb.Server([_fifo_table('ours', specs.replay_signature)], port=port)
  client = reverb.Client(f'localhost:{port}')
  try:
    trajectories = _trajectories(3, 120)
    # Mark every observation with its environment index, to see which items mix them.
    marked = [t._replace(observation=np.concatenate(
        [t.observation[:, :3], np.arange(3, dtype=np.float32)[:, None] + 100], axis=1))
              for t in trajectories]
    observer = writer_lib.BatchedTrajectoryObserver(client, 3, 2, table='ours')
    for t in marked:
      observer(t)
    observer.flush()
    count = client.server_info()['ours'].current_size
    boundaries = sum(int(np.sum(t.step_type == ts.StepType.LAST)) for t in trajectories)
    # Every env step but the first of each environment's episode makes an item.
    assert count == 3 * 120 - 3 - boundaries
    for item in _read_all(client, 'ours', count):
      step_type, observation = item[0], item[1]
      assert observation[0, 3] == observation[1, 3]  # One environment per item.
      assert step_type[0] != ts.StepType.LAST  # No item starts at an episode boundary.
  finally:
    server.stop()


def test_observer_refuses_columns_and_priorities_the_table_cannot_take(port):
  # Reverb's server stores a mismatched item as it is sent (the learner's dataset fails on it
  # later), and a negative priority stops the table's worker: both are refused before sending.
  parse_gin()
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  server = reverb.Server([_fifo_table('ours', specs.replay_signature)], port=port)
  client = reverb.Client(f'localhost:{port}')
  try:
    observer = writer_lib.BatchedTrajectoryObserver(client, 3, 2, table='ours',
                                                step_spec=specs.collect_data_spec)
    good = _trajectories(3, 4)
    for t in good:
      observer(t)
    observer.flush()
    written = client.server_info()['ours'].current_size
    assert written > 0
    wrong = [good[0]._replace(observation=good[0].observation.astype(np.float64)),
             good[0]._replace(observation=good[0].observation[:, :3]),
             good[0]._replace(action=good[0].action[:2])]
    expected = ['observation is float64[4], the replay table takes float32[4]',
                'observation is float32[3], the replay table takes float32[4]',
                'action has 2 rows for 3 environments']
    for t, fragment in zip(wrong, expected):
      with pytest.raises(ItemRejectedError, match=re.escape(fragment)):
        observer(t)
    for bad in (-1.0, float('nan'), float('inf')):
      with pytest.raises(ItemRejectedError, match='which the replay table cannot take'):
        observer.priority = bad
    observer.priority = 2.5
    for t in good:
      observer(t)
    observer.flush()
    assert client.server_info()['ours'].current_size > written  # The table still takes items.
    observer.close()
  finally:
    server.stop()


def _held_table_server(port):
  """A server with one CartPole DQN table 'held' whose limiter admits an insert per sample
  (after a few), and a client of it."""
  parse_gin()
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  held = reverb.Table('held', sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                      max_size=10_000, signature=specs.replay_signature,
                      rate_limiter=reverb.rate_limiters.SampleToInsertRatio(
                          samples_per_insert=1.0, min_size_to_sample=1, error_buffer=4.0))
  server = reverb.Server([held], port=port)
  return server, reverb.Client(f'localhost:{port}')


def test_observer_follows_a_rate_limiter_with_few_items_pending(port, capfd):
  """A limiter that admits inserts only as samples come keeps the writer at its pace.

  The writer waits instead of piling up items (at most max_pending_items in flight; Reverb logs
  a warning on every step once a writer holds about 50), and stops waiting when told to.
  """
  server, client = _held_table_server(port)
  running = threading.Event()
  running.set()
  sampling = threading.Event()

  def sample_slowly():  # One sample per 10 ms: the pace the limiter lets inserts follow.
    while not sampling.wait(0.01):
      next(client.sample('held', num_samples=1, emit_timesteps=False))

  sampler = threading.Thread(target=sample_slowly)
  try:
    trajectories = _trajectories(1, 400)
    observer = writer_lib.BatchedTrajectoryObserver(client, 1, 2, table='held',
                                                    max_pending_items=32,
                                                    is_running=running.is_set)
    written = []
    writer = threading.Thread(target=lambda: written.extend(
        observer.write(tf.nest.flatten(t), t.is_boundary()) for t in trajectories))
    writer.start()
    wait_until(lambda: client.server_info()['held'].current_size > 0, 30, 'first inserts')
    writer.join(timeout=3)
    assert writer.is_alive(), 'the writer should wait for the rate limiter'
    assert client.server_info()['held'].current_size < 20
    sampler.start()
    wait_until(lambda: len(written) == len(trajectories), 60, 'the writer at the sampler\'s pace')
    assert 'alarmingly high' not in capfd.readouterr().err
  finally:
    running.clear()
    sampling.set()
    writer.join(timeout=30)
    if sampler.is_alive():
      sampler.join(timeout=30)
    server.stop()


def test_final_flush_gives_up_at_once_when_nobody_samples_and_waits_while_somebody_does(port):
  """A stopping actor's last items: held by a limiter that nobody releases, it stops after one
  slice, not the whole timeout; while a learner still samples, it waits until they are in."""
  server, client = _held_table_server(port)
  probe = lambda: client.server_info(timeout=2)
  stop_sampling = threading.Event()

  def sample_slowly():
    while not stop_sampling.wait(0.02):
      next(client.sample('held', num_samples=1, emit_timesteps=False))

  sampler = threading.Thread(target=sample_slowly)
  try:
    observer = writer_lib.BatchedTrajectoryObserver(client, 1, 2, table='held',
                                                    max_pending_items=64)
    for t in _trajectories(1, 30):
      observer.write(tf.nest.flatten(t), t.is_boundary())
    start = time.monotonic()
    why = collect.final_flush(observer, probe, timeout_s=30, slice_s=0.5)
    assert why is not None and why.startswith('nobody sampled the replay for 0.5 s'), why
    assert time.monotonic() - start < 5
    inserted = lambda: client.server_info()['held'].rate_limiter_info.insert_stats.completed
    held_back = inserted()
    assert not observer.flush(timeout_s=0.1)  # Some items really were held.
    sampler.start()
    assert collect.final_flush(observer, probe, timeout_s=60, slice_s=0.5) is None
    assert observer.flush(timeout_s=0.1) and inserted() > held_back
    observer.close()
  finally:
    stop_sampling.set()
    if sampler.is_alive():
      sampler.join(timeout=30)
    server.stop()


@pytest.mark.parametrize('gin_file,bindings,steps', [
    # Discrete actions; episodes end by gym's done (terminal or gym's own 200-step limit).
    ('gin/dqn_cartpole.gin', [], 300),
    # A gin episode cap: TF-Agents' TimeLimit cuts episodes with discount 1.
    ('gin/dqn_cartpole.gin', ['make_environment.max_episode_steps = 7'], 60),
    # Continuous actions and a PyBullet task.
    ('gin/sac_inverted_pendulum.gin', ['make_environment.max_episode_steps = 40'], 150),
    # Gymnasium: terminated (discount 0) and truncated by the cap (discount 1).
    ('gin/dqn_cartpole.gin', ["make_environment.env_name = 'CartPole-v1'",
                              "make_environment.suite = 'gymnasium'",
                              'make_environment.max_episode_steps = 12'], 120),
    # Gymnasium MuJoCo, continuous actions, a 1000-step registration limit cut to 30.
    ('gin/sac_halfcheetah_v5.gin', ['make_environment.max_episode_steps = 30'], 100),
])
def test_vector_env_steps_like_batched_py_environment(gin_file, bindings, steps):
  parse_gin(gin_file, bindings)
  ours = vector_env.VectorEnv([environments.make_environment(seed=i) for i in range(3)])
  assert ours.uses_gym_directly
  stock = batched_py_environment.BatchedPyEnvironment(
      [environments.make_environment(seed=i) for i in range(3)], multithreading=False)
  spec = ours.action_spec()
  rng = np.random.default_rng(1)
  a, b = ours.reset(), stock.reset()
  seen = collections.Counter()
  for _ in range(steps):  # Long enough for several episode ends and auto-resets.
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
      assert x.dtype == y.dtype and x.shape == y.shape
      np.testing.assert_array_equal(x, y)
    seen.update(zip(a.step_type.tolist(), a.discount.tolist()))
    if np.issubdtype(spec.dtype, np.integer):
      action = rng.integers(spec.minimum, spec.maximum + 1, size=(3,)).astype(np.int64)
    else:
      action = rng.uniform(spec.minimum, spec.maximum, size=(3,) + spec.shape).astype(np.float32)
    a, b = ours.step(action), stock.step(action)
  # Both kinds of episode end and the restarts after them were compared.
  assert seen[(int(ts.StepType.FIRST), 1.0)] > 3
  assert seen[(int(ts.StepType.LAST), 0.0)] + seen[(int(ts.StepType.LAST), 1.0)] > 3
  ours.close()
  stock.close()


def test_episode_metrics_count_like_tf_agents_metrics():
  parse_gin()
  trajectories = _trajectories(2, 200)
  ours = collect.EpisodeMetrics(2)
  stock = [py_metrics.EnvironmentSteps(), py_metrics.NumberOfEpisodes(),
           py_metrics.AverageReturnMetric(batch_size=2),
           py_metrics.AverageEpisodeLengthMetric(batch_size=2)]
  counted = 0
  for t in trajectories:
    counted += ours.update(t.step_type, t.next_step_type, t.reward)
    for metric in stock:
      metric(t)
  assert counted == ours.env_steps == int(stock[0].result())
  assert ours.episodes == int(stock[1].result()) > 5
  assert ours.average_return == float(stock[2].result())
  assert ours.average_length == float(stock[3].result())


@pytest.mark.parametrize('gin_file', ['gin/dqn_cartpole.gin', 'gin/sac_inverted_pendulum.gin'])
def test_evaluate_policy_plays_like_the_stock_driver(gin_file):
  """Same episodes and figures as PyDriver + PyTFEagerPolicy + metrics, evaluation after evaluation."""
  # The network's initial weights from a fixed seed, not from whatever the tests before this
  # one left in TensorFlow's random state: some draws act alike in every state, and their
  # episodes are too alike for the check at the end.
  tf.random.set_seed(3)
  parse_gin(gin_file, ['make_environment.max_episode_steps = 60'])
  agent, _ = builders.make_agent_and_specs(ReplayConfig())
  ours_env = vector_env.VectorEnv([environments.make_environment(seed=5)])
  greedy = agents.greedy_policy(agent)
  ours_policy = inference.CompiledPolicy(greedy, 1)
  stock_env = environments.make_environment(seed=5)
  stock_policy = py_tf_eager_policy.PyTFEagerPolicy(greedy, use_tf_function=True)
  lengths = []
  for _ in range(3):  # Consecutive evaluations share the environment and its random state.
    ours = evaluate.evaluate_policy(ours_env, ours_policy, 4)
    average_return = py_metrics.AverageReturnMetric(buffer_size=4)
    average_length = py_metrics.AverageEpisodeLengthMetric(buffer_size=4)
    py_driver.PyDriver(stock_env, stock_policy, [average_return, average_length],
                       max_episodes=4).run(stock_env.reset())
    assert ours == (float(average_return.result()), float(average_length.result()))
    lengths.append(ours[1])
  assert len(set(lengths)) > 1 or lengths[0] == 60  # Episodes differ between evaluations.


def test_compiled_policy_acts_like_the_policy():
  parse_gin()
  agent, specs = builders.make_agent_and_specs(ReplayConfig())
  compiled = inference.CompiledPolicy(agent.policy, 5)
  observation = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  time_step = ts.restart(observation, batch_size=5)
  action, _ = compiled(tf.nest.map_structure(np.asarray, time_step))
  expected = agent.policy.action(tf.nest.map_structure(tf.constant, time_step)).action
  np.testing.assert_array_equal(action, expected.numpy())
  # Weights assigned later (a pull) are used without retracing.
  for variable in agent.policy.variables():
    variable.assign(tf.zeros_like(variable))
  action, _ = compiled(tf.nest.map_structure(np.asarray, time_step))
  expected = agent.policy.action(tf.nest.map_structure(tf.constant, time_step)).action
  np.testing.assert_array_equal(action, expected.numpy())
  assert specs.action_spec.dtype == action.dtype


def test_random_policy_stays_within_the_action_spec():
  parse_gin('gin/sac_inverted_pendulum.gin', ())
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  policy = inference.RandomPolicy(specs.action_spec, (), 64, seed=0)
  action, info = policy(None)
  assert action.shape == (64,) + tuple(specs.action_spec.shape)
  assert np.all(action >= specs.action_spec.minimum)
  assert np.all(action <= specs.action_spec.maximum)
  assert info == ()


def test_compiled_learner_trains_with_xla(cartpole_server, tmp_path):
  from tf_agents.train.utils import train_utils  # pylint: disable=g-import-not-at-top
  from learner import compiled_learner  # pylint: disable=g-import-not-at-top
  collect.run_actor(str(tmp_path), cartpole_server, task=0, max_env_steps=200,
      configs=validated_configs())
  config = ReplayConfig()
  train_step = train_utils.create_train_step()
  agent, specs = builders.make_agent_and_specs(config, train_step)
  dataset = learner_dataset.make_dataset(cartpole_server, specs.collect_data_spec, 16, 2, 5000)
  learner = compiled_learner.CompiledLearner(
      str(tmp_path / 'learner'), train_step, agent, checkpoint_interval=-1,
      summary_interval=5, use_xla=True)
  before = [v.numpy().copy() for v in agent.collect_policy.variables()]
  loss = learner.run(iterations=10, iterator=iter(dataset))
  assert int(train_step.numpy()) == 10
  assert np.isfinite(float(loss.loss))
  after = [v.numpy() for v in agent.collect_policy.variables()]
  assert any(not np.array_equal(x, y) for x, y in zip(before, after))
  # The loss summaries come from Python (XLA cannot compile summary ops).
  assert list((tmp_path / 'learner' / 'train').glob('events.out.tfevents.*'))
