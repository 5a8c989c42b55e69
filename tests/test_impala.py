"""IMPALA: V-trace against an independent NumPy implementation, its on-policy reduction to
n-step returns, the queue's overlapping items, the learner's lag accounting, and learning
CartPole from actors held many learner steps behind.

Real Reverb servers and real CartPole environments; V-trace's reference is written here from
the paper's definition (the sum over future steps, eq. 1), not from the recursion the
implementation uses.
"""

import collections
import os

import gin
import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import inference
from actor import vector_env
from actor import writer as writer_lib
from common import builders
from common import constants
from common import environments
from common import gin_config
from common.agents import impala
from common.agents import vtrace as vtrace_lib
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import UserError
from learner import dataset as learner_dataset
from learner import on_policy
from learner import trainers
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR

IMPALA_GIN = os.path.join(GIN_DIR, 'impala_cartpole.gin')
PPO_GIN = os.path.join(GIN_DIR, 'ppo_cartpole.gin')


def _reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, mask, rho_bar, c_bar,
                      pg_rho_bar):
  """V-trace by its definition: v_s = V(x_s) + sum_{t >= s} (prod_{i=s}^{t-1} gamma_i c_i)
  delta_t, with delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)); a masked step is no
  transition (delta 0, and nothing passes through it)."""
  batch, length = rewards.shape
  clip = lambda x, bar: x if bar is None else np.minimum(bar, x)
  rhos = np.exp(log_rhos)
  next_values = np.concatenate([values[:, 1:], bootstrap[:, None]], axis=1)
  vs = np.zeros_like(values)
  advantages = np.zeros_like(values)
  for b in range(batch):
    for s in range(length):
      total, product = 0.0, 1.0
      for t in range(s, length):
        delta = mask[b, t] * clip(rhos[b, t], rho_bar) * (
            rewards[b, t] + discounts[b, t] * next_values[b, t] - values[b, t])
        total += product * delta
        product *= mask[b, t] * discounts[b, t] * clip(rhos[b, t], c_bar)
      vs[b, s] = values[b, s] + total
  for b in range(batch):
    for s in range(length):
      next_v = vs[b, s + 1] if s + 1 < length else bootstrap[b]
      advantages[b, s] = mask[b, s] * clip(rhos[b, s], pg_rho_bar) * (
          rewards[b, s] + discounts[b, s] * next_v - values[b, s])
  return vs, advantages


def _random_trajectories(seed, batch=5, length=9, log_rho_scale=1.0):
  rng = np.random.RandomState(seed)
  target, behaviour = rng.randn(2, batch, length, 3) * log_rho_scale
  actions = rng.randint(0, 3, (batch, length))
  log_softmax = lambda z: z - np.log(np.exp(z).sum(-1, keepdims=True))
  pick = lambda z: np.take_along_axis(log_softmax(z), actions[..., None], -1)[..., 0]
  log_rhos = pick(target) - pick(behaviour)
  ends = rng.rand(batch, length) < 0.2  # Episode ends: a termination (discount 0) ...
  mask = (rng.rand(batch, length) > 0.15).astype(np.float32)  # ... or no transition at all.
  discounts = np.where(ends, 0.0, 0.97).astype(np.float32)
  discounts *= mask  # The step into a non-transition is a termination or a truncation.
  rewards = rng.randn(batch, length).astype(np.float32)
  values = rng.randn(batch, length).astype(np.float32)
  bootstrap = rng.randn(batch).astype(np.float32)
  return log_rhos.astype(np.float32), discounts, rewards, values, bootstrap, mask


@pytest.mark.parametrize('clips', [(1.0, 1.0, 1.0), (None, None, None), (2.0, 0.5, 1.5)],
                         ids=['paper-clips', 'no-clips', 'other-clips'])
def test_vtrace_matches_an_independent_numpy_implementation(clips):
  for seed in range(3):
    log_rhos, discounts, rewards, values, bootstrap, mask = _random_trajectories(seed)
    rhos = np.exp(log_rhos)
    # Ratios on both sides of every clip, so that clipping is and is not active.
    assert (rhos > 2.0).any() and (rhos < 0.5).any()
    got = vtrace_lib.vtrace(log_rhos, discounts, rewards, values, bootstrap, mask=mask,
                            clip_rho_threshold=clips[0], clip_c_threshold=clips[1],
                            clip_pg_rho_threshold=clips[2])
    vs, advantages = _reference_vtrace(log_rhos, discounts, rewards, values, bootstrap, mask,
                                       *clips)
    np.testing.assert_allclose(got.vs.numpy(), vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.pg_advantages.numpy(), advantages, rtol=1e-5, atol=1e-5)


def test_clipping_changes_the_targets_when_ratios_exceed_the_thresholds():
  log_rhos, discounts, rewards, values, bootstrap, mask = _random_trajectories(0)
  clipped = vtrace_lib.vtrace(log_rhos, discounts, rewards, values, bootstrap, mask=mask)
  unclipped = vtrace_lib.vtrace(log_rhos, discounts, rewards, values, bootstrap, mask=mask,
                                clip_rho_threshold=None, clip_c_threshold=None,
                                clip_pg_rho_threshold=None)
  assert np.abs(clipped.vs.numpy() - unclipped.vs.numpy()).max() > 1e-2


def test_on_policy_vtrace_is_the_n_step_return():
  """With mu = pi every ratio is 1, and v_s is the discounted return to the end of the
  trajectory, bootstrapped from V(x_T), cut at terminations."""
  _, discounts, rewards, values, bootstrap, _ = _random_trajectories(1)
  batch, length = rewards.shape
  got = vtrace_lib.vtrace(np.zeros_like(rewards), discounts, rewards, values, bootstrap)
  for b in range(batch):
    for s in range(length):
      n_step, product = 0.0, 1.0
      for t in range(s, length):
        n_step += product * rewards[b, t]
        product *= discounts[b, t]
      n_step += product * bootstrap[b]
      assert got.vs.numpy()[b, s] == pytest.approx(n_step, rel=1e-5, abs=1e-5)
      next_v = got.vs.numpy()[b, s + 1] if s + 1 < length else bootstrap[b]
      assert got.pg_advantages.numpy()[b, s] == pytest.approx(
          rewards[b, s] + discounts[b, s] * next_v - values[b, s], rel=1e-5, abs=1e-5)


def _load(*bindings):
  gin_config.load_gin([IMPALA_GIN], list(bindings))
  return ReplayConfig()


def test_the_behaviour_policy_records_the_logits_it_sampled_from():
  built = builders.build(_load())
  policy = built.agent.collect_policy
  observations = tf.constant(np.random.RandomState(0).uniform(-1, 1, (6, 4)), tf.float32)
  step = policy.action(ts.restart(observations, 6))
  distribution, _ = built.agent._actor_net(observations, step_type=None, network_state=())  # pylint: disable=protected-access
  np.testing.assert_allclose(step.info[impala.LOGITS_KEY].numpy(),
                             distribution.logits_parameter().numpy(), rtol=1e-6)
  assert built.specs.family.name == 'impala' and built.specs.sequence_length == 21


@pytest.mark.parametrize('binding', ['ReplayConfig.prioritized = True',
                                     'ReplayConfig.samples_per_insert = 4.0'])
def test_impala_refuses_replay_settings_it_cannot_honour(binding):
  with pytest.raises(UserError, match=r'this agent \(impala\) consumes each item once'):
    builders.build(_load(binding))


def test_impala_refuses_continuous_actions():
  gin_config.load_gin([IMPALA_GIN], ["make_environment.env_name = 'Pendulum-v1'"])
  with pytest.raises(UserError, match='impala_agent needs a discrete action space'):
    builders.build(ReplayConfig())


def _steps(num_envs, count):
  """Batched CartPole-shaped steps whose observation[0] is the step's index."""
  steps = []
  for t in range(count):
    observation = np.zeros((num_envs, 4), np.float32)
    observation[:, 0] = t
    mid = np.full(num_envs, ts.StepType.FIRST if t == 0 else ts.StepType.MID, np.int32)
    steps.append(trajectory_lib.Trajectory(
        step_type=mid, observation=observation, action=np.zeros(num_envs, np.int64),
        policy_info={impala.LOGITS_KEY: np.zeros((num_envs, 2), np.float32)},
        next_step_type=np.full(num_envs, ts.StepType.MID, np.int32),
        reward=np.ones(num_envs, np.float32), discount=np.ones(num_envs, np.float32)))
  return steps


def _server(built, port, batch_size):
  tables = tables_lib.make_tables(built.specs, ReplayConfig(), LearnerConfig())
  return reverb.Server(tables, port=port), f'localhost:{port}'


def test_items_share_their_bootstrap_step_with_the_next_item(port):
  built = builders.build(_load('impala_agent.unroll_length = 3'))
  length = built.specs.sequence_length
  assert length == 4
  server, address = _server(built, port, LearnerConfig().batch_size)
  try:
    table = reverb.Client(address).server_info()[constants.REPLAY_TABLE]
    assert table.max_size == 2 * LearnerConfig().batch_size and table.max_times_sampled == 1
    observer = built.specs.family.make_writer(reverb.Client(address), 2, built.specs,
                                              is_running=lambda: True)
    observer.priority = 7.0
    for step in _steps(2, 10):  # 10 steps: items at steps 0-3, 3-6 and 6-9.
      observer.write(tf.nest.flatten(step), step.is_boundary())
    assert observer.flush(timeout_s=30)
    observer.close()
    samples = list(reverb.Client(address).sample(constants.REPLAY_TABLE, num_samples=6))
  finally:
    server.stop()
  firsts = sorted(int(np.stack([s.data[1] for s in sample])[0, 0]) for sample in samples)
  for sample in samples:
    observation = np.stack([step.data[1] for step in sample])[:, 0]
    np.testing.assert_array_equal(observation, np.arange(observation[0], observation[0] + 4))
    assert float(sample[0].info.priority) == 7.0
  assert firsts == [0, 0, 3, 3, 6, 6]


def test_the_learner_trains_on_every_item_and_drops_only_those_beyond_the_limit(port, tmp_path):
  replay_config = _load('impala_agent.unroll_length = 3', 'LearnerConfig.batch_size = 8',
                        'impala_agent.max_policy_lag = 5')
  train_step = tf.Variable(10, dtype=tf.int64)
  built = builders.build(replay_config, train_step)
  server, address = _server(built, port, 8)
  trainer = trainers.ImpalaTrainer(
      str(tmp_path / 'learner'), train_step, built.agent, experience_dataset_fn=None,
      item_step=trainers.LagStep(built.agent, train_step, 5), max_policy_lag=5,
      checkpoint_interval=-1, summary_interval=1000)
  try:
    observer = writer_lib.BatchedTrajectoryObserver(
        reverb.Client(address), 1, 4, step_spec=built.specs.collect_data_spec,
        end_to_end=True, overlap=1)
    versions = [10, 9, 3, 5, 8, 0, 10, 4]  # Lags 0, 1, 7, 5, 2, 10, 0, 6 at train step 10.
    observer.priority = versions[0]
    written = 0
    for step in _steps(1, 1 + 3 * len(versions)):
      if observer.write(tf.nest.flatten(step), step.is_boundary()):
        written += 1
        if written < len(versions):
          observer.priority = versions[written]
    assert observer.flush(timeout_s=30)
    observer.close()
    iterator = iter(learner_dataset.make_dataset(address, built.specs.collect_data_spec, 8, 4,
                                                 5000))
    loss_info = trainer.run(iterations=1, iterator=iterator)
  finally:
    server.stop()
  assert (trainer.items, trainer.dropped) == (5, 3)  # Lags 7, 10 and 6 are over the limit.
  assert trainer.lag_max == 10
  assert int(train_step.numpy()) == 11
  assert np.isfinite(float(loss_info.loss))
  assert trainer.interval_line() == 'items=5 dropped_stale=3 lag_mean=3.9'


def _collect_and_train(iterations, lag, seed=0):
  """IMPALA on CartPole, in one process: 16 environments act with the learner's weights of
  `lag` train steps before; each iteration's batch is their next 20 transitions. Returns the
  average return of the last 50 episodes after every 50 iterations."""
  tf.random.set_seed(seed)
  built = builders.build(_load())
  behaviour = builders.build(ReplayConfig())
  envs = vector_env.VectorEnv([environments.make_environment(seed=seed + i)
                               for i in range(16)])
  policy = inference.make_policy(behaviour.agent.collect_policy, 16, 'auto', seed)
  train = tf.function(built.agent.train, autograph=False)
  snapshots = collections.deque()
  time_step, previous = envs.reset(), None
  returns, episode_return = collections.deque(maxlen=50), np.zeros(16)
  averages = []
  for iteration in range(iterations):
    snapshots.append([v.numpy() for v in built.agent.collect_policy.variables()])
    if len(snapshots) > lag + 1:
      snapshots.popleft()
    for variable, value in zip(behaviour.agent.collect_policy.variables(), snapshots[0]):
      variable.assign(value)  # The weights of `lag` train steps ago (or the first ones).
    policy.sync()
    steps = [] if previous is None else [previous]
    while len(steps) < built.specs.sequence_length:
      action, info = policy(time_step)
      next_step = envs.step(action)
      steps.append(trajectory_lib.Trajectory(
          time_step.step_type, time_step.observation, action, info, next_step.step_type,
          next_step.reward, next_step.discount))
      episode_return = np.where(time_step.step_type == ts.StepType.FIRST, 0.0,
                                episode_return) + next_step.reward
      returns.extend(episode_return[next_step.step_type == ts.StepType.LAST].tolist())
      time_step = next_step
    previous = steps[-1]
    train(tf.nest.map_structure(lambda *xs: tf.convert_to_tensor(np.stack(xs, 1)), *steps))
    if (iteration + 1) % 50 == 0:
      averages.append(float(np.mean(returns)))
  envs.close()
  return averages


@pytest.mark.slow  # Trains CartPole for about 15 s.
def test_impala_learns_cartpole_from_actors_many_learner_steps_behind():
  lag = 100
  # PPO's queue (ppo_cartpole.gin) keeps items at most max_policy_lag iterations behind:
  gin.clear_config()
  gin_config.load_gin([PPO_GIN], [])
  ppo = builders.build(ReplayConfig()).specs
  window = ppo.family.max_policy_lag * on_policy.steps_per_iteration(
      ppo.family, LearnerConfig().batch_size, ppo.sequence_length, 1)
  assert lag > window  # ... so it would drop every item of these actors.
  averages = _collect_and_train(700, lag)
  # A random policy averages about 22 on CartPole-v0.
  assert max(averages) >= 170, averages
  assert averages[-1] >= 120, averages


def _on_policy_batch(agent, specs, batch=4, seed=0):
  """Real CartPole-shaped steps whose behaviour logits are `agent`'s own (mu = pi)."""
  rng = np.random.RandomState(seed)
  length = specs.sequence_length
  observation = tf.constant(rng.uniform(-1, 1, (batch, length, 4)), tf.float32)
  distribution, _ = agent._actor_net(observation, step_type=None, network_state=())  # pylint: disable=protected-access
  mid = tf.fill([batch, length], ts.StepType.MID)
  return trajectory_lib.Trajectory(
      step_type=mid, observation=observation,
      action=tf.constant(rng.randint(0, 2, (batch, length)), tf.int64),
      policy_info={impala.LOGITS_KEY: distribution.logits_parameter()},
      next_step_type=mid, reward=tf.constant(rng.randn(batch, length), tf.float32),
      discount=tf.ones([batch, length]))


def _pg_gradients(agent, experience):
  variables = agent._actor_net.trainable_variables  # pylint: disable=protected-access
  with tf.GradientTape() as tape:
    loss = agent._loss(experience).extra.policy_gradient_loss  # pylint: disable=protected-access
  return [g.numpy() for g in tape.gradient(loss, variables)]


def test_appo_has_the_policy_gradient_of_impala_on_policy():
  """With mu = pi every ratio is 1, inside the clip range, where the clipped surrogate's
  gradient, ratio * grad log pi * A, is the policy gradient's, grad log pi * A."""
  plain = builders.build(_load('impala_agent.unroll_length = 5'))
  experience = _on_policy_batch(plain.agent, plain.specs)
  clipped = builders.build(_load('impala_agent.unroll_length = 5', 'impala_agent.ppo_clip = 0.2'))
  for source, target in zip(plain.agent._actor_net.variables, clipped.agent._actor_net.variables):  # pylint: disable=protected-access
    target.assign(source)
  for source, target in zip(plain.agent._value_net.variables, clipped.agent._value_net.variables):  # pylint: disable=protected-access
    target.assign(source)
  assert float(plain.agent._loss(experience).extra.mean_rho) == pytest.approx(1.0)  # pylint: disable=protected-access
  for a, b in zip(_pg_gradients(plain.agent, experience),
                  _pg_gradients(clipped.agent, experience)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # ... while the objectives themselves differ: -log pi * A against -ratio * A.
  plain_loss = float(plain.agent._loss(experience).extra.policy_gradient_loss)  # pylint: disable=protected-access
  clipped_loss = float(clipped.agent._loss(experience).extra.policy_gradient_loss)  # pylint: disable=protected-access
  assert abs(plain_loss - clipped_loss) > 1e-3
