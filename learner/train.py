"""The learner: the gin-selected agent's train steps on replay samples, under a distribution
strategy, with importance weights and priority updates when the replay table is prioritized."""

import os
import threading
import time
from typing import Callable, Optional

from absl import logging
import tensorflow as tf
from tf_agents.train import triggers
from tf_agents.train.utils import strategy_utils
from tf_agents.train.utils import train_utils

from common import builders
from common import config as config_lib
from common import connection
from common import constants
from common import environments
from common import ownership
from common import replay
from common import storage
from common import variables as variables_lib
from common import watchdog as watchdog_lib
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import ServerUnavailableError
from common.errors import UserError
from learner import agent_record
from learner import compiled_learner
from learner import divergence
from learner import export
from learner import on_policy as on_policy_lib
from learner import priorities as priorities_lib

CONNECTION_ERRORS = connection.CONNECTION_ERRORS

# Every replay iterator `run_learner` is done with (dropped on a reconnect, or left when its loop
# ends) is kept here, never freed. Freeing one joins its Reverb worker threads, and a worker
# left on a lost server's stream never ends: the learner hung at the end of `run_learner`
# after a server restart, in TensorFlow's `~IteratorResource`. Which iterator holds such a
# worker cannot be told, so all are kept; the learner's main ends with `main_utils.exit_now`.
RETIRED_ITERATORS = []


def make_strategy() -> tf.distribute.Strategy:
  """MirroredStrategy over every visible GPU, the default strategy where there is none."""
  gpus = tf.config.list_physical_devices('GPU')
  strategy = strategy_utils.get_strategy(tpu=False, use_gpu=bool(gpus))
  logging.info('learner: %s with %d replica(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


def _iterator_fn(strategy, server_address, specs, learner_config, replay_config):
  """Returns a function that makes a fresh distributed iterator over the replay table."""
  if learner_config.batch_size % strategy.num_replicas_in_sync:
    raise UserError(f'LearnerConfig.batch_size={learner_config.batch_size} is not divisible by '
                    f'the {strategy.num_replicas_in_sync} replicas: pick a multiple')
  timeout_ms = int(learner_config.rate_limiter_timeout_s * 1000)

  def dataset_fn(context: tf.distribute.InputContext):
    return replay.make_dataset(
        server_address, specs.collect_data_spec,
        context.get_per_replica_batch_size(learner_config.batch_size),
        specs.sequence_length, timeout_ms, specs.frame_stack)

  def make_iterator():
    return iter(strategy.distribute_datasets_from_function(dataset_fn))

  return make_iterator


def run_learner(root_dir: str, server_address: str, max_train_steps: int = 0,
                server_timeout_s: float = 300.0,
                stop_event: Optional[threading.Event] = None,
                strategy: Optional[tf.distribute.Strategy] = None) -> int:
  """Trains until the train step reaches `max_train_steps` (0: for ever) or `stop_event`.

  Resumes from the newest checkpoint under root_dir/learner. On stop it checkpoints, exports
  the policies and pushes the weights once more. A checkpoint or export that fails on a
  storage fault is retried with backoff while training goes on (`storage.IntervalSave`).

  Raises:
    divergence.DivergedError: the loss or a weight became inf or NaN; raised before anything
      non-finite is checkpointed, exported or pushed, and without the saves on stop.
    storage.StorageError: a save on stop failed on every try (the weight push still ran).

  Args:
    root_dir: Run directory; the learner owns root_dir/learner.
    server_address: host:port of the replay server.
    max_train_steps: Total train steps of the run (counting resumed ones); 0 for no limit.
    server_timeout_s: Deadline for reaching the server, at start and after it goes away.
    stop_event: Set to stop (SIGTERM/SIGINT in main).
    strategy: Overrides `make_strategy()` (tests pass a MirroredStrategy on CPU devices).

  Returns:
    The final train step.
  """
  learner_config = LearnerConfig()
  replay_config = ReplayConfig()
  learner_config.validate()
  replay_config.validate()
  stop_event = stop_event or threading.Event()
  strategy = strategy or make_strategy()
  learner_dir = os.path.join(root_dir, constants.LEARNER_DIR)

  with strategy.scope():
    train_step = train_utils.create_train_step()
    built = builders.build(replay_config, train_step)
  agent, specs = built.agent, built.specs
  if built.single_replica_reason and strategy.num_replicas_in_sync > 1:
    raise UserError(f'{built.single_replica_reason}, so this agent cannot train on '
                    f'{strategy.num_replicas_in_sync} replicas: give the learner one GPU '
                    '(CUDA_VISIBLE_DEVICES=0) or pick another agent')
  if specs.on_policy is not None:
    timeout_ms = int(learner_config.rate_limiter_timeout_s * 1000)
    make_iterator = lambda: on_policy_lib.make_item_iterator(
        server_address, constants.REPLAY_TABLE, specs.replay_signature, timeout_ms)
  else:
    make_iterator = _iterator_fn(strategy, server_address, specs, learner_config, replay_config)

  is_running = lambda: not stop_event.is_set()
  connection.connect(server_address, server_timeout_s, 'learner', specs, is_running)
  push_watch = variables_lib.PushWatch(server_address, learner_config.foreign_push_window_s)
  variable_client = variables_lib.VariableClient(server_address, built.variables)
  priority_writer = prioritized_step = None
  if specs.prioritized:
    priority_writer = priorities_lib.PriorityWriter(server_address, constants.REPLAY_TABLE)
    prioritized_step = priorities_lib.PrioritizedStep(agent, built.td_errors, replay_config,
                                                      train_step)

  agent_record.check(learner_dir, agent)
  ownership.own(learner_dir, 'learner')  # Before the first write under learner_dir.
  agent_record.set_aside_unreadable(learner_dir)
  agent_record.record(learner_dir, agent)
  learning_rates = agent_record.configured_learning_rates(agent)
  finite = divergence.FiniteCheck(
      agent.variables, os.path.join(learner_dir, agent_record.CHECKPOINT_SUBDIR))
  push_interval = learner_config.push_interval
  if specs.on_policy is not None:
    learner = on_policy_lib.OnPolicyTrainer(
        learner_dir, train_step, agent, specs.on_policy, learner_config.batch_size,
        specs.sequence_length, strategy,
        checkpoint_interval=learner_config.checkpoint_interval,
        summary_interval=learner_config.summary_interval,
        max_checkpoints_to_keep=learner_config.max_checkpoints_to_keep,
        save_guard=finite, use_xla=learner_config.use_xla)
    push_interval = 1  # After every iteration: actors must not collect with stale weights.
    logging.info('learner: on-policy; %d items of %d steps per iteration, %d train steps each, '
                 'items up to %d iteration(s) behind the weights', learner_config.batch_size,
                 specs.sequence_length, learner.steps_per_iteration,
                 specs.on_policy.max_policy_lag)
  else:
    learner = compiled_learner.CompiledLearner(
        learner_dir, train_step, agent,
        experience_dataset_fn=None,
        checkpoint_interval=learner_config.checkpoint_interval,
        summary_interval=learner_config.summary_interval,
        max_checkpoints_to_keep=learner_config.max_checkpoints_to_keep,
        strategy=strategy, use_xla=learner_config.use_xla,
        prioritized_step=prioritized_step,
        on_priorities=priority_writer.submit if priority_writer else None,
        save_guard=finite)
  agent_record.apply_learning_rates(agent, learning_rates)
  summary_faults = storage.SummaryFaults('learner', os.path.join(learner_dir, 'train'))
  summary_faults.wrap(learner.train_summary_writer)
  start_step = int(train_step.numpy())
  logging.info('learner: %s at train step %d', 'resumed' if start_step else 'starting',
               start_step)
  config_lib.record_run_config(learner_dir, {'root_dir': root_dir,
                                             'replay_server_address': server_address,
                                             'max_train_steps': max_train_steps})
  layout = environments.observation_layout()
  if layout:  # A Dict or Tuple observation: how the exported policies' input vector is laid out.
    config_lib.atomic_write(os.path.join(root_dir, constants.OBSERVATION_LAYOUT), layout)
  learner.triggers.extend([
      export.PolicyExportTrigger(os.path.join(root_dir, constants.POLICY_DIR), agent,
                                 train_step, learner_config.policy_export_interval,
                                 guard=finite),
      triggers.StepPerSecondLogTrigger(train_step, interval=learner_config.log_interval),
  ])
  push_trigger = _PushTrigger(variable_client, push_interval, start_step,
                              built.max_priority, priority_writer, guard=finite,
                              watch=push_watch)
  learner.triggers.append(push_trigger)
  push_watch.check_start()
  push_trigger(start_step, force_trigger=True)

  iterator = None  # Made inside the loop, where losing the server is handled.
  last_log_step, stall_since = start_step, None
  last_log_time = time.monotonic()
  watchdog = watchdog_lib.Watchdog('learner', server_address,
                                   quiet_s=max(10.0, 2 * learner_config.rate_limiter_timeout_s),
                                   deadline_s=server_timeout_s, stop_event=stop_event,
                                   stop_waits_while_server_answers=True)
  try:
    while not stop_event.is_set():
      watchdog.beat()
      step = int(train_step.numpy())
      if max_train_steps and step >= max_train_steps:
        break
      iterations = learner_config.iterations_per_call
      if max_train_steps:
        iterations = min(iterations, max_train_steps - step)
      try:
        if iterator is None:
          iterator = make_iterator()
        loss_info = learner.run(iterations=iterations, iterator=iterator)
        stall_since = None
      except tf.errors.OutOfRangeError:
        # The rate limiter held the sample past its timeout: say why, then wait again.
        stall_since = stall_since or time.monotonic() - learner_config.rate_limiter_timeout_s
        info = connection.probe(server_address)
        state = (replay.table_state(info[constants.REPLAY_TABLE]) if info
                 else 'replay server not answering')
        logging.warning('learner: no replay sample for %.0f s at train step %d (%s); waiting for '
                        'actors', time.monotonic() - stall_since, step, state)
        iterator = None
        continue
      except Exception as e:  # pylint: disable=broad-except
        finite.raise_if_numerics_error(int(train_step.numpy()), e)
        if summary_faults.handle(e):  # A summary write on a full disk, not a lost server.
          continue
        if not isinstance(e, CONNECTION_ERRORS):
          raise
        try:
          connection.reconnect(server_address, server_timeout_s, 'learner', specs, e, is_running)
        except ServerUnavailableError:
          if stop_event.is_set():
            break  # Stopping: the checkpoint below needs no server.
          raise
        push_trigger(int(train_step.numpy()), force_trigger=True)
        RETIRED_ITERATORS.append(iterator)
        iterator = None
        continue
      step = int(train_step.numpy())
      finite(step, float(loss_info.loss))
      if step - last_log_step >= learner_config.log_interval:
        now = time.monotonic()
        logging.info('learner: train_step=%d steps/s=%.1f loss=%.4f%s', step,
                     (step - last_log_step) / max(now - last_log_time, 1e-9),
                     float(loss_info.loss),
                     ' ' + learner.interval_line() if specs.on_policy is not None else '')
        last_log_step, last_log_time = step, now
  finally:
    watchdog.stop()  # Also when the loop raises, so that no deadline outlives the loop.
    RETIRED_ITERATORS.append(iterator)
    iterator = None
    if specs.on_policy is not None:
      learner.close()
      logging.info('learner: on-policy: %s', learner.totals_line())
  final_step = int(train_step.numpy())
  storage_errors = []
  for trigger in learner.triggers:
    if trigger is push_trigger and connection.probe(server_address) is None:
      # Said here, not as the push trigger's "retrying at the next interval": there is none.
      logging.warning('learner: replay server %s not answering; no final weight push',
                      server_address)
      continue
    try:
      trigger(final_step, force_trigger=True)
    except CONNECTION_ERRORS as e:
      logging.warning('learner: final %s failed: %s', type(trigger).__name__,
                      connection.first_line(e))
    except storage.StorageError as e:  # The other saves (the weight push) still run.
      storage_errors.append(e)
  if priority_writer is not None:
    priority_writer.close()
    logging.info('learner: sent %d priority updates in %d calls (%d failed)',
                 priority_writer.sent_updates, priority_writer.sends, priority_writer.failures)
  try:
    learner.train_summary_writer.flush()  # The process may end without tearing down.
  except Exception as e:  # pylint: disable=broad-except  (a full disk: the summaries are lost)
    logging.warning('learner: final summary flush failed: %s', connection.first_line(e))
  if storage_errors:
    raise storage_errors[0]
  logging.info('%s at train step %d; checkpoint in %s', constants.LEARNER_STOPPED_LINE,
               final_step, learner_dir)
  return final_step


class _PushTrigger:
  """Pushes the policy weights every `interval` train steps; a failed push is logged, not fatal.

  With a `watch`, another learner's pushes to the same server stop this one
  (`variables.SecondLearnerError`) before it overwrites them.

  With prioritized replay, each push also carries the largest priority written since the
  previous push: the priority the actors give new items, so that every new item is sampled
  soon (Schaul et al.'s rule, with the maximum of recent updates rather than of all time).
  """

  def __init__(self, client: variables_lib.VariableClient, interval: int, start: int,
               max_priority: Optional[tf.Variable] = None,
               priority_writer: Optional[priorities_lib.PriorityWriter] = None,
               guard: Optional[Callable[[int], None]] = None,
               watch: Optional[variables_lib.PushWatch] = None):
    self._client = client
    self._guard = guard
    self._watch = watch
    self._interval = interval
    self._last = start
    self._max_priority = max_priority
    self._priority_writer = priority_writer

  def __call__(self, step: int, force_trigger: bool = False) -> None:
    if not force_trigger and step - self._last < self._interval:
      return
    if self._guard is not None:
      self._guard(step)
    if self._priority_writer is not None:
      recent_max = self._priority_writer.take_max()
      if recent_max is not None:
        self._max_priority.assign(recent_max)
    try:
      if self._watch is not None:
        self._watch.before_push()
      self._client.push()
      if self._watch is not None:
        self._watch.after_push()
      self._last = step
    except CONNECTION_ERRORS as e:
      logging.warning('learner: weight push at step %d failed (%s); retrying at the next '
                      'interval', step, connection.first_line(e))
