"""The learner: the gin-selected agent's train steps on replay samples, under a distribution
strategy, with what its algorithm family adds (`agents.families`): priority updates for
prioritized replay, batches gathered by policy version for an on-policy agent.

`run_learner` assembles the learner (`assembly.assemble`), loops, and stops; the loop only
trains, logs, waits out an empty table and reconnects to a lost server.
"""

import threading
import time
from typing import Optional

from absl import logging
import tensorflow as tf

from common import config as config_lib
from common import connection
from common import constants
from common import storage
from common import watchdog as watchdog_lib
from common.errors import ServerUnavailableError
from learner import assembly

CONNECTION_ERRORS = connection.CONNECTION_ERRORS

# Every replay iterator `run_learner` is done with (dropped on a reconnect, or left when its loop
# ends) is kept here, never freed. Freeing one joins its Reverb worker threads, and a worker
# left on a lost server's stream never ends: the learner hung at the end of `run_learner`
# after a server restart, in TensorFlow's `~IteratorResource`. Which iterator holds such a
# worker cannot be told, so all are kept; the learner's main ends with `main_utils.exit_now`.
RETIRED_ITERATORS = []


def run_learner(root_dir: str, server_address: str, configs: config_lib.Configs,
                max_train_steps: int = 0, server_timeout_s: float = 300.0,
                stop_event: Optional[threading.Event] = None,
                strategy: Optional[tf.distribute.Strategy] = None,
                weights_key_file: Optional[str] = None) -> int:
  """Trains until the train step reaches `max_train_steps` (0: for ever) or `stop_event`.

  Resumes from the newest checkpoint under root_dir/learner. On stop it checkpoints, exports
  the policies and pushes the weights once more. A checkpoint or export that fails on a
  storage fault is retried with backoff while training goes on (`storage.IntervalSave`).

  Args:
    root_dir: Run directory; the learner owns root_dir/learner.
    server_address: host:port of the replay server.
    configs: The run's validated configs (`config.validated_configs()`).
    max_train_steps: Total train steps of the run (counting resumed ones); 0 for no limit.
    server_timeout_s: Deadline for reaching the server, at start and after it goes away.
    stop_event: Set to stop (SIGTERM/SIGINT in main).
    strategy: Overrides `assembly.make_strategy()` (tests pass a MirroredStrategy on CPU devices).
    weights_key_file: The run's weights key (`common.weights_key`), made if missing; default
      root_dir/weights.key. $REVERB_FLEET_WEIGHTS_KEY, when set, is the key instead.

  Returns:
    The final train step.

  Raises:
    divergence.DivergedError: the loss or a weight became inf or NaN; raised before anything
      non-finite is checkpointed, exported or pushed, and without the saves on stop.
    storage.StorageError: a save on stop failed on every try (the weight push still ran).
  """
  stop_event = stop_event or threading.Event()
  learning = assembly.assemble(root_dir, server_address, configs, server_timeout_s, stop_event,
                               strategy, max_train_steps, weights_key_file)
  watchdog = watchdog_lib.Watchdog(
      'learner', server_address, quiet_s=max(10.0, 2 * configs.learner.rate_limiter_timeout_s),
      deadline_s=server_timeout_s, stop_event=stop_event, stop_waits_while_server_answers=True)
  try:
    _loop(learning, configs.learner, max_train_steps, stop_event, watchdog)
  finally:
    watchdog.stop()  # Also when the loop raises, so that no deadline outlives the loop.
    learning.trainer.close()
  return _stop(learning)


def _loop(learning: assembly.Learning, config, max_train_steps: int,
          stop_event: threading.Event, watchdog) -> None:
  """Trains `iterations_per_call` steps at a time until the last step or `stop_event`."""
  iterator, stall_since = None, None
  log = _StepLog(learning.step, config.log_interval)
  try:
    while not stop_event.is_set():
      watchdog.beat()
      step = learning.step
      if max_train_steps and step >= max_train_steps:
        break
      iterations = config.iterations_per_call
      if max_train_steps:
        iterations = min(iterations, max_train_steps - step)
      try:
        if iterator is None:
          iterator = learning.make_iterator()
        loss_info = learning.trainer.run(iterations=iterations, iterator=iterator)
        stall_since = None
      except tf.errors.OutOfRangeError:
        # The rate limiter held the sample past its timeout: say why, then wait again.
        stall_since = _log_stall(learning.session, step, stall_since,
                                 config.rate_limiter_timeout_s)
        iterator = None
        continue
      except Exception as e:  # pylint: disable=broad-except
        if _recovered(learning, e, stop_event):
          RETIRED_ITERATORS.append(iterator)
          iterator = None
          continue
        if stop_event.is_set():
          break  # Stopping: the checkpoint after the loop needs no server.
        continue  # A summary write on a full disk: training goes on.
      learning.finite(learning.step, float(loss_info.loss))
      log(learning, float(loss_info.loss))
  finally:
    RETIRED_ITERATORS.append(iterator)


def _recovered(learning: assembly.Learning, error: Exception,
               stop_event: threading.Event) -> bool:
  """Handles an error of a train call: True after a reconnect (the iterator is stale), False
  for a summary fault handled or a server gone while stopping; raises anything else."""
  learning.finite.raise_if_numerics_error(learning.step, error)
  if learning.summary_faults.handle(error):  # A summary write on a full disk.
    return False
  if not isinstance(error, CONNECTION_ERRORS):
    raise error
  try:
    learning.session.reconnect(error)
  except ServerUnavailableError:
    if stop_event.is_set():
      return False
    raise
  learning.push(learning.step, force_trigger=True)
  return True


def _log_stall(session, step: int, since: Optional[float], timeout_s: float) -> float:
  """Logs why no sample came (the table's state); returns when the stall began."""
  since = since or time.monotonic() - timeout_s
  state = session.replay_table_state()
  logging.warning('learner: no replay sample for %.0f s at train step %d (%s); waiting for '
                  'actors', time.monotonic() - since, step, state)
  return since


class _StepLog:
  """The periodic log line: train step, steps/s, loss, and what the trainer adds."""

  def __init__(self, start_step: int, interval: int):
    self._step, self._time, self._interval = start_step, time.monotonic(), interval
    self._first = True

  def __call__(self, learning: assembly.Learning, loss: float) -> None:
    step = learning.step
    if self._first:  # The start-up's end (bench.sb3 times launches to it).
      logging.info('%s (train step %d)', constants.FIRST_TRAIN_STEPS_LINE, step)
      self._first = False
    if step - self._step < self._interval:
      return
    now = time.monotonic()
    extra = learning.trainer.interval_line()
    logging.info('learner: train_step=%d steps/s=%.1f loss=%.4f%s', step,
                 (step - self._step) / max(now - self._time, 1e-9), loss,
                 ' ' + extra if extra else '')
    self._step, self._time = step, now


def _stop(learning: assembly.Learning) -> int:
  """The saves on stop (checkpoint, export, weight push); returns the final train step.

  Raises:
    storage.StorageError: a save failed on every try (the other saves still ran).
  """
  final_step = learning.step
  storage_errors = []
  for trigger in learning.trainer.triggers:
    if trigger is learning.push and learning.session.probe() is None:
      # Said here, not as the push trigger's "retrying at the next interval": there is none.
      logging.warning('learner: replay server %s not answering; no final weight push',
                      learning.session.address)
      continue
    try:
      trigger(final_step, force_trigger=True)
    except CONNECTION_ERRORS as e:
      logging.warning('learner: final %s failed: %s', type(trigger).__name__,
                      connection.first_line(e))
    except storage.StorageError as e:  # The other saves (the weight push) still run.
      storage_errors.append(e)
  try:
    learning.trainer.train_summary_writer.flush()  # The process may end without tearing down.
  except Exception as e:  # pylint: disable=broad-except  (a full disk: the summaries are lost)
    logging.warning('learner: final summary flush failed: %s', connection.first_line(e))
  if storage_errors:
    raise storage_errors[0]
  logging.info('%s at train step %d; checkpoint in %s', constants.LEARNER_STOPPED_LINE,
               final_step, learning.learner_dir)
  return final_step
