"""A collect actor: steps its environments, writes trajectories, follows the learner's weights."""

import os
import threading
import time
from typing import Optional

from absl import logging
import numpy as np
import reverb
import tensorflow as tf
from tf_agents.metrics import py_metrics
from tf_agents.policies import py_policy
from tf_agents.policies import py_tf_eager_policy
from tf_agents.policies import random_py_policy
from tf_agents.train import actor as tfa_actor

from actor.policy_client import PolicyClient
from common import builders
from common import connection
from common import constants
from common import environments
from common import replay
from common import watchdog as watchdog_lib
from common.config import ActorConfig
from common.config import ReplayConfig

# Errors that mean "the replay server went away"; the actor reconnects instead of dying.
CONNECTION_ERRORS = (RuntimeError, tf.errors.OpError, reverb.errors.ReverbError, ValueError)


class WarmStartPolicy(py_policy.PyPolicy):
  """Acts with a random policy until the learned one has weights, then with the learned one."""

  def __init__(self, random_policy: py_policy.PyPolicy, learned_policy: py_policy.PyPolicy):
    super().__init__(learned_policy.time_step_spec, learned_policy.action_spec,
                     learned_policy.policy_state_spec, learned_policy.info_spec)
    self._random = random_policy
    self._learned = learned_policy
    self.use_learned = False

  def _action(self, time_step, policy_state):
    policy = self._learned if self.use_learned else self._random
    return policy.action(time_step, policy_state)

  def _get_initial_state(self, batch_size):
    return self._learned.get_initial_state(batch_size)


def make_metrics(num_envs: int):
  """Episode and step counters plus average return and length over the last 10 episodes."""
  return [
      py_metrics.NumberOfEpisodes(),
      py_metrics.EnvironmentSteps(),
      py_metrics.AverageReturnMetric(buffer_size=10, batch_size=num_envs),
      py_metrics.AverageEpisodeLengthMetric(buffer_size=10, batch_size=num_envs),
  ]


class _Stats:
  """Rates and lag for the periodic log line and TensorBoard."""

  def __init__(self):
    self.env_steps = 0
    self.last_env_steps = 0
    self.last_time = time.monotonic()
    self.policy_lag = 0
    self.pulls = 0


def run_actor(root_dir: str, server_address: str, task: int, max_env_steps: int = 0,
              server_timeout_s: float = 300.0,
              stop_event: Optional[threading.Event] = None) -> int:
  """Collects until `max_env_steps` (0: for ever) or until `stop_event` is set.

  Args:
    root_dir: Run directory; summaries go to root_dir/actor/<task>.
    server_address: host:port of the replay server.
    task: This actor's id; it seeds the environments and the exploration.
    max_env_steps: Env steps (summed over the batch) after which to stop; 0 for no limit.
    server_timeout_s: Deadline for reaching the server, at start and after it goes away.
    stop_event: Set to stop (SIGTERM/SIGINT in main).

  Returns:
    Env steps collected.

  Raises:
    ServerUnavailableError, SignatureMismatchError: see `PolicyClient.connect`.
  """
  config = ActorConfig()
  replay_config = ReplayConfig()
  config.validate()
  replay_config.validate()
  stop_event = stop_event or threading.Event()
  role = f'actor {task}'
  seed = config.seed + 1000 * task
  tf.random.set_seed(seed)
  np.random.seed(seed)
  builders.configure_tensorflow(threads=1)

  policy_client = PolicyClient(server_address, replay_config, role, server_timeout_s,
                               stop_event)
  policy_client.connect()
  env = environments.make_environment(seed=seed, num_envs=config.num_envs)
  batched = config.num_envs > 1
  learned = py_tf_eager_policy.PyTFEagerPolicy(
      policy_client.agent.collect_policy, use_tf_function=True, batch_time_steps=not batched)
  random_policy = random_py_policy.RandomPyPolicy(
      env.time_step_spec(), env.action_spec(), seed=seed,
      outer_dims=(config.num_envs,) if batched else None)
  policy = WarmStartPolicy(random_policy, learned)
  observer = replay.BatchedTrajectoryObserver(
      reverb.Client(server_address), config.num_envs, replay_config.sequence_length)
  summary_dir = os.path.join(root_dir, constants.ACTOR_DIR, str(task))
  metrics = make_metrics(config.num_envs)
  actor = tfa_actor.Actor(
      env, policy, policy_client.train_step_variable, steps_per_run=config.steps_per_run,
      observers=[observer], metrics=metrics, summary_dir=summary_dir,
      summary_interval=1, name=f'actor_{task}')
  logging.info('%s: collecting %d env(s) from %s into table %s (max_env_steps=%s)', role,
               config.num_envs, server_address, constants.REPLAY_TABLE, max_env_steps or 'none')

  stats = _Stats()
  steps_since_pull = config.variable_update_interval  # Pull before the first run.
  last_log = time.monotonic()
  watchdog = watchdog_lib.Watchdog(role, server_address, deadline_s=server_timeout_s)
  while not stop_event.is_set() and (not max_env_steps or stats.env_steps < max_env_steps):
    watchdog.beat()
    try:
      # Until the first weights arrive, look for them after every run (a cheap probe).
      if steps_since_pull >= config.variable_update_interval or not policy.use_learned:
        _pull(policy_client, policy, stats)
        steps_since_pull = 0
      before = metrics[1].result()
      actor.run()
      collected = int(metrics[1].result() - before)
      stats.env_steps += collected
      steps_since_pull += collected
    except CONNECTION_ERRORS as e:
      logging.warning('%s: lost the replay server (%s); reconnecting',
                      role, str(e).splitlines()[0][:200])
      observer.close()
      connection.wait_for_server(server_address, server_timeout_s, role,
                                 is_running=lambda: not stop_event.is_set())
      observer.reopen()
      actor.reset()
      steps_since_pull = config.variable_update_interval
      continue
    if time.monotonic() - last_log >= config.log_interval_s:
      _log(actor, metrics, stats, role)
      last_log = time.monotonic()

  watchdog.stop()
  try:
    observer.flush()
  except CONNECTION_ERRORS:
    pass
  observer.close()
  _log(actor, metrics, stats, role)
  logging.info('%s: %s after %d env steps', constants.ACTOR_STOPPED_LINE, role,
               stats.env_steps)
  return stats.env_steps


def _pull(policy_client: PolicyClient, policy: WarmStartPolicy, stats: _Stats) -> None:
  previous = policy_client.train_step
  step = policy_client.pull()
  if step is None:
    return
  stats.pulls += 1
  if previous >= 0:
    stats.policy_lag = step - previous
  if not policy.use_learned:
    policy.use_learned = True
    policy_client.log_first_weights(step)


def _log(actor, metrics, stats: _Stats, role: str) -> None:
  now = time.monotonic()
  rate = (stats.env_steps - stats.last_env_steps) / max(now - stats.last_time, 1e-9)
  stats.last_env_steps, stats.last_time = stats.env_steps, now
  average_return = float(metrics[2].result())
  weights_step = int(actor.train_step.numpy())
  logging.info('%s: env_steps=%d env_steps/s=%.0f episodes=%d avg_return=%.2f '
               'weights_step=%d policy_lag=%d', role, stats.env_steps, rate,
               int(metrics[0].result()), average_return, weights_step, stats.policy_lag)
  with actor.summary_writer.as_default():
    tf.summary.scalar('actor/env_steps_per_sec', rate, step=stats.env_steps)
    tf.summary.scalar('actor/average_return', average_return, step=stats.env_steps)
    tf.summary.scalar('actor/policy_lag', stats.policy_lag, step=stats.env_steps)
    tf.summary.scalar('actor/weights_step', weights_step, step=stats.env_steps)
