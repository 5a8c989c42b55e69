"""A collect actor: steps its environments, writes trajectories, follows the learner's weights.

The collect loop is this module's own rather than TF-Agents' Actor/PyDriver: per batch of
`ActorConfig.num_envs` environments it makes one compiled policy call (`inference`), one
lockstep environment step (`vector_env`), one batched replay write
(`writer_lib.BatchedTrajectoryObserver.write`) and one numpy metrics update. TF-Agents' Actor pays
for a polymorphic `tf.function` dispatch, several trajectory-nest walks and four py_metrics per
environment step; bench/actor_bench.py measures both against the raw environment rate.
"""

import collections
import dataclasses
import os
import threading
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import inference
from actor import status as status_lib
from actor import vector_env
from actor import writer as writer_lib
from actor.policy_client import PolicyClient
from common import agents
from common import builders
from common import config as config_lib
from common import gin_config
from common import connection
from common import constants
from common import environments
from common import ownership
from common import storage
from common import watchdog as watchdog_lib
from common import weights_key
from common.config import ActorConfig

CONNECTION_ERRORS = connection.CONNECTION_ERRORS
# How long a stopping actor waits for the server to confirm its last items, at most.
_FINAL_FLUSH_TIMEOUT_S = 10.0
# A stopping actor stops waiting once nobody sampled the replay for this long: a rate limiter
# that holds inserts only lets them through when the learner samples.
_FINAL_FLUSH_SLICE_S = 0.25


class EpisodeMetrics:
  """Env steps, episodes, and average return and length over the last `window` episodes.

  Counts like TF-Agents' EnvironmentSteps, NumberOfEpisodes, AverageReturnMetric and
  AverageEpisodeLengthMetric: boundary steps (LAST -> FIRST) are not env steps, an episode
  ends on a step whose next step is LAST.
  """

  def __init__(self, num_envs: int, window: int = 10):
    self.env_steps = 0
    self.episodes = 0
    self._return = np.zeros(num_envs, np.float64)
    self._length = np.zeros(num_envs, np.int64)
    self._returns = collections.deque(maxlen=window)
    self._lengths = collections.deque(maxlen=window)

  def update(self, step_type, next_step_type, reward) -> int:
    """Records one batched step; returns the env steps it counts (non-boundary steps)."""
    first = step_type == ts.StepType.FIRST
    boundary = step_type == ts.StepType.LAST
    self._return[first] = 0.0
    self._length[first] = 0
    self._return += reward
    self._length += ~boundary
    last = np.flatnonzero(next_step_type == ts.StepType.LAST)
    if last.size:
      self.episodes += int(last.size)
      self._returns.extend(self._return[last].tolist())
      self._lengths.extend(self._length[last].tolist())
    counted = int(boundary.size - np.count_nonzero(boundary))
    self.env_steps += counted
    return counted

  # Means in float32 over float64 sums, as the TF-Agents metrics' result() computes them, so
  # that eval's figures equal theirs to the bit.
  @property
  def average_return(self) -> float:
    return float(np.mean(self._returns, dtype=np.float32)) if self._returns else 0.0

  @property
  def average_length(self) -> float:
    return float(np.mean(self._lengths, dtype=np.float32)) if self._lengths else 0.0


class Collector:
  """Steps a VectorEnv with the random policy until `use_learned`, then with the learned one."""

  def __init__(self, env: vector_env.VectorEnv, learned, random_policy,
               observer: writer_lib.BatchedTrajectoryObserver, metrics: EpisodeMetrics):
    self._env = env
    self._learned = learned
    self._random = random_policy
    self._observer = observer
    self.metrics = metrics
    self.use_learned = False
    self._time_step = None

  def reset(self) -> None:
    """Starts new episodes in every environment (after a reconnect)."""
    self._time_step = self._env.reset()
    self._observer.reset()

  def run(self, env_steps: int, until_item: bool = False) -> int:
    """Collects at least `env_steps` env steps (a whole batch at a time); returns the count.

    With `until_item`, stops earlier, on the step that completed replay items (on-policy
    agents check for new weights after every item).
    """
    if self._time_step is None:
      self.reset()
    collected = 0
    time_step = self._time_step
    while collected < env_steps:
      policy = self._learned if self.use_learned else self._random
      action, info = policy(time_step)
      next_time_step = self._env.step(action)
      trajectory = trajectory_lib.Trajectory(
          step_type=time_step.step_type, observation=time_step.observation, action=action,
          policy_info=info, next_step_type=next_time_step.step_type,
          reward=next_time_step.reward, discount=next_time_step.discount)
      created = self._observer.write(tf.nest.flatten(trajectory),
                                     time_step.step_type == ts.StepType.LAST)
      collected += self.metrics.update(time_step.step_type, next_time_step.step_type,
                                       next_time_step.reward)
      time_step = self._time_step = next_time_step
      if until_item and created:
        break
    return collected


class _Stats:
  """Rates and lag for the periodic log line and TensorBoard."""

  def __init__(self):
    self.env_steps = 0
    self.last_env_steps = 0
    self.last_time = time.monotonic()
    self.last_reset_seconds = 0.0
    self.last_wait_seconds = 0.0
    self.policy_lag = 0
    self.rate = 0.0
    self.published_step = None  # Weights step of the last status record.
    self.waiting_logged = False

  def record(self, task: int, policy_client: PolicyClient) -> dict:
    """This actor's status record for the status table (`replay.publish_status`)."""
    self.published_step = policy_client.train_step
    return {'role': 'actor', 'task': task, 'env_steps': self.env_steps,
            'env_steps_per_s': round(self.rate, 1), 'weights_step': self.published_step,
            'weights_refused': policy_client.refused}


@dataclasses.dataclass
class _Collecting:
  """The assembled actor: what its loop and its stop need."""
  role: str
  task: int
  config: ActorConfig
  policy_client: PolicyClient
  family: object  # `agents.families` family: how this actor writes and follows weights.
  env: vector_env.VectorEnv
  learned: object  # `inference` policy over the agent's collect policy.
  observer: writer_lib.BatchedTrajectoryObserver
  collector: Collector
  summary_writer: object
  summary_faults: storage.SummaryFaults
  stats: _Stats = dataclasses.field(default_factory=_Stats)
  started: float = dataclasses.field(default_factory=time.monotonic)


def run_actor(root_dir: str, server_address: str, task: int, configs: config_lib.Configs,
              max_env_steps: int = 0, server_timeout_s: float = 300.0,
              stop_event: Optional[threading.Event] = None, num_actors: int = 0,
              weights_key_file: Optional[str] = None) -> int:
  """Collects until `max_env_steps` (0: for ever) or until `stop_event` is set.

  Args:
    root_dir: Run directory; summaries go to root_dir/actor/<task>.
    server_address: host:port of the replay server.
    task: This actor's id; it seeds the environments and the exploration.
    configs: The run's validated configs (`config.validated_configs()`).
    max_env_steps: Env steps (summed over the batch) after which to stop; 0 for no limit.
    server_timeout_s: Deadline for reaching the server, at start and after it goes away.
    stop_event: Set to stop (SIGTERM/SIGINT in main).
    weights_key_file: The run's weights key (`common.weights_key`); default
      root_dir/weights.key, which the learner makes. $REVERB_FLEET_WEIGHTS_KEY, when set, is
      the key instead.
    num_actors: Actors in the fleet (0: unknown); per-actor exploration schedules use it.

  How items are written and when weights are checked is the family's (`agents.families`):
  an on-policy agent collects nothing before the first weights arrive, writes items end to
  end with the weights' train step as their priority, and checks for newer weights after
  every item instead of every `variable_update_interval` steps.

  Returns:
    Env steps collected.

  Raises:
    ServerUnavailableError, SignatureMismatchError: see `PolicyClient.connect`.
  """
  stop_event = stop_event or threading.Event()
  actor = _assemble(root_dir, server_address, task, configs, max_env_steps, server_timeout_s,
                    stop_event, num_actors, weights_key_file)
  watchdog = watchdog_lib.Watchdog(actor.role, server_address, deadline_s=server_timeout_s,
                                   stop_event=stop_event)
  try:
    _collect(actor, max_env_steps, stop_event, watchdog)
  finally:
    watchdog.stop()  # Also when the loop raises, so that no deadline outlives the loop.
  _stop(actor)
  return actor.stats.env_steps


def _assemble(root_dir: str, server_address: str, task: int, configs: config_lib.Configs,
              max_env_steps: int, server_timeout_s: float, stop_event: threading.Event,
              num_actors: int, weights_key_file: Optional[str]) -> _Collecting:
  """Seeds, connects (checking the server's tables), and builds the actor's parts."""
  config = configs.actor
  role = f'actor {task}'
  seed = config.check_task(task)
  tf.random.set_seed(seed)
  np.random.seed(seed)
  builders.configure_tensorflow(threads=1)
  policy_client = PolicyClient(server_address, configs.replay, role, server_timeout_s,
                               weights_key.KeySource(
                                   weights_key_file or weights_key.default_path(root_dir), role),
                               stop_event,
                               actor=agents.ActorSlot(task, num_actors, config.num_envs))
  policy_client.connect()
  specs = policy_client.specs
  env = vector_env.VectorEnv([environments.make_environment(seed=seed + i)
                              for i in range(config.num_envs)])
  learned = inference.make_policy(policy_client.agent.collect_policy, config.num_envs,
                                  config.inference, seed)
  random_policy = inference.RandomPolicy(env.action_spec(), specs.collect_data_spec.policy_info,
                                         config.num_envs, seed)
  observer = specs.family.make_writer(policy_client.session.client, config.num_envs, specs,
                                      is_running=lambda: not stop_event.is_set())
  summary_dir = os.path.join(root_dir, constants.ACTOR_DIR, str(task))
  ownership.own(summary_dir, f'actor with --task={task}')
  summary_faults = storage.SummaryFaults(role, summary_dir)
  summary_writer = summary_faults.wrap(tf.summary.create_file_writer(summary_dir))
  gin_config.record_run_config(summary_dir, {'root_dir': root_dir, 'task': task,
                                             'replay_server_address': server_address,
                                             'max_env_steps': max_env_steps})
  collector = Collector(env, learned, random_policy, observer, EpisodeMetrics(config.num_envs))
  logging.info('%s: collecting %d env(s) from %s into table %s (seed=%d, max_env_steps=%s, '
               'policy inference: %s; %s replay)', role, config.num_envs, server_address,
               constants.REPLAY_TABLE, seed, max_env_steps or 'none', learned.description,
               specs.family.name)
  return _Collecting(role, task, config, policy_client, specs.family, env, learned, observer,
                     collector, summary_writer, summary_faults)


def _collect(actor: _Collecting, max_env_steps: int, stop_event: threading.Event,
             watchdog) -> None:
  """The collect loop: pull weights when due, collect a run, log; reconnect on a lost server."""
  config, family, stats, collector = actor.config, actor.family, actor.stats, actor.collector
  steps_since_pull = config.variable_update_interval  # Pull before the first run.
  last_log = time.monotonic()
  while not stop_event.is_set() and (not max_env_steps or stats.env_steps < max_env_steps):
    watchdog.beat()
    try:
      # Until the first weights arrive, look for them after every run (a cheap probe).
      if (steps_since_pull >= config.variable_update_interval or not collector.use_learned
          or family.checks_weights_every_item):
        _pull(actor)
        steps_since_pull = 0
      if not collector.use_learned and not family.collects_before_weights:
        _wait_for_first_weights(actor.role, stop_event, stats)
        continue
      budget = config.steps_per_run
      if max_env_steps:
        budget = min(budget, max_env_steps - stats.env_steps)
      collected = collector.run(budget, until_item=family.checks_weights_every_item)
      stats.env_steps += collected
      steps_since_pull += collected
    except CONNECTION_ERRORS as e:
      actor.observer.close()
      actor.policy_client.reconnect(e)
      actor.observer.reopen(actor.policy_client.session.client)
      collector.reset()
      steps_since_pull = config.variable_update_interval
      continue
    if time.monotonic() - last_log >= config.log_interval_s:
      _log(actor)
      status_lib.publish_status(actor.policy_client.session.client,
                                stats.record(actor.task, actor.policy_client))
      last_log = time.monotonic()


def _replay_samples(info) -> int:
  """Samples completed over the server's replay tables (not the variable or status table)."""
  return sum(int(table.rate_limiter_info.sample_stats.completed) for name, table in info.items()
             if name not in (constants.VARIABLE_TABLE, constants.STATUS_TABLE))


def final_flush(observer, probe, timeout_s: float = _FINAL_FLUSH_TIMEOUT_S,
                slice_s: float = _FINAL_FLUSH_SLICE_S) -> Optional[str]:
  """Waits for the server to confirm the observer's last items; None once it has, else why not.

  Waits at most `timeout_s`, and gives up as soon as a `slice_s` passes in which nobody sampled
  the replay tables: the items are then held by the table's rate limiter, and only a sampling
  learner would let them in (at the end of a run the learner stops beside the actors). `probe`
  returns the server's table infos or None (`session.ServerSession.probe`).
  """
  info = probe()
  if info is None:
    return 'the replay server is not answering'
  samples = _replay_samples(info)
  deadline = time.monotonic() + timeout_s
  while True:
    if observer.flush(timeout_s=min(slice_s, max(deadline - time.monotonic(), 0.001))):
      return None
    if time.monotonic() >= deadline:
      return f'the replay server did not confirm them within {timeout_s:g} s'
    info = probe()
    if info is None:
      return 'the replay server stopped answering'
    latest = _replay_samples(info)
    if latest == samples:
      return (f'nobody sampled the replay for {slice_s:g} s, so its rate limiter holds them '
              '(the learner has stopped)')
    samples = latest


def _stop(actor: _Collecting) -> None:
  """Flushes the last items (bounded), closes the writers and the environments, logs."""
  try:
    why = final_flush(actor.observer, actor.policy_client.session.probe)
    if why is not None:
      logging.info('%s: stopping without its last unconfirmed items: %s', actor.role, why)
  except CONNECTION_ERRORS:
    pass
  actor.observer.close()
  actor.env.close()
  _log(actor)
  actor.summary_writer.flush()
  waited = ''
  if actor.family.is_queue:
    share = actor.observer.wait_seconds / max(time.monotonic() - actor.started, 1e-9)
    waited = f' (waited {100 * share:.1f}% of its time for the queue to take its items)'
  logging.info('%s: %s after %d env steps%s', constants.ACTOR_STOPPED_LINE, actor.role,
               actor.stats.env_steps, waited)


def _wait_for_first_weights(role: str, stop_event: threading.Event, stats: _Stats,
                            poll_s: float = 0.5) -> None:
  """One poll interval of the wait for the learner's first weights of an actor that never
  collects with the random policy (logged once); the caller's loop beats the watchdog and
  pulls again."""
  if not stats.waiting_logged:
    logging.info('%s: waiting for the learner\'s first weights (an on-policy agent never '
                 'collects with the random policy)', role)
    stats.waiting_logged = True
  stop_event.wait(poll_s)


def _pull(actor: _Collecting) -> None:
  """Pulls the newest weights; when any arrived, syncs the policy, sets the priority of new
  items (the family's) and publishes a status record when the weights are new."""
  policy_client, stats, collector = actor.policy_client, actor.stats, actor.collector
  previous = policy_client.train_step
  step = policy_client.pull()
  if step is None:
    return
  priority = actor.family.new_item_priority(step, policy_client.max_priority)
  if priority is not None:
    actor.observer.priority = priority
  if previous >= 0:
    stats.policy_lag = step - previous
  if not collector.use_learned:
    collector.use_learned = True
    policy_client.log_first_weights(step)
  actor.learned.sync()
  # When new weights arrive, so that the status view's policy lag is the lag of the weights in
  # use (a pull of the same weights, every few ms on CartPole, needs none).
  if step != stats.published_step:
    status_lib.publish_status(policy_client.session.client, stats.record(actor.task, policy_client))


def _log(actor: _Collecting) -> None:
  """Logs and summarizes the interval since the last call.

  `queue_wait` (a family whose table is a queue: on-policy agents) is the share of the
  interval's wall time the actor waited for the replay queue to take its items, i.e. for the
  learner to take a batch.

  `env_resets` is the share of the interval's wall time spent resetting environments: a policy
  that ends episodes early (an untrained Minitaur falls within tens of steps, and each reset
  settles the robot for 100 simulation steps) lowers the env-step rate without any cost of
  the actor's own.
  """
  stats, env, metrics = actor.stats, actor.env, actor.collector.metrics
  now = time.monotonic()
  elapsed = max(now - stats.last_time, 1e-9)
  rate = stats.rate = (stats.env_steps - stats.last_env_steps) / elapsed
  reset_share = (env.reset_seconds - stats.last_reset_seconds) / elapsed
  stats.last_env_steps, stats.last_time = stats.env_steps, now
  stats.last_reset_seconds = env.reset_seconds
  wait_share = None
  if actor.family.is_queue:
    wait_share = (actor.observer.wait_seconds - stats.last_wait_seconds) / elapsed
    stats.last_wait_seconds = actor.observer.wait_seconds
  average_return = metrics.average_return
  weights_step = actor.policy_client.train_step
  resets = f' env_resets={100 * reset_share:.0f}%' if env.uses_gym_directly else ''
  if wait_share is not None:
    resets += f' queue_wait={100 * wait_share:.0f}%'
  logging.info('%s: env_steps=%d env_steps/s=%.0f episodes=%d avg_return=%.2f '
               'weights_step=%d policy_lag=%d%s', actor.role, stats.env_steps, rate,
               metrics.episodes, average_return, weights_step, stats.policy_lag, resets)
  try:
    _summarize(actor.summary_writer, env, metrics, stats, rate, reset_share, average_return,
               weights_step, wait_share)
  except Exception as e:  # pylint: disable=broad-except
    if not actor.summary_faults.handle(e):
      raise


def _summarize(summary_writer, env, metrics, stats, rate, reset_share, average_return,
               weights_step, wait_share=None) -> None:
  with summary_writer.as_default():
    if wait_share is not None:
      tf.summary.scalar('actor/queue_wait_time_share', wait_share, step=stats.env_steps)
    if env.uses_gym_directly:
      tf.summary.scalar('actor/env_reset_time_share', reset_share, step=stats.env_steps)
    tf.summary.scalar('actor/env_steps_per_sec', rate, step=stats.env_steps)
    tf.summary.scalar('actor/average_return', average_return, step=stats.env_steps)
    tf.summary.scalar('actor/average_episode_length', metrics.average_length,
                      step=stats.env_steps)
    tf.summary.scalar('actor/policy_lag', stats.policy_lag, step=stats.env_steps)
    tf.summary.scalar('actor/weights_step', weights_step, step=stats.env_steps)
