"""The eval process: runs the greedy policy on the newest weights every `EvalConfig.interval`.

Results go to TensorBoard (root_dir/eval) and to root_dir/eval/eval.csv, one row per
evaluation: train_step, env_steps (items inserted into replay so far), timestamp (Unix
seconds), average_return, average_episode_length, num_episodes.
"""

import csv
import os
import threading
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from actor import collect
from actor import inference
from actor import vector_env
from actor.policy_client import PolicyClient
from common import agents
from common import builders
from common import config as config_lib
from common import connection
from common import constants
from common import environments
from common import eval_log
from common import ownership
from common import replay
from common import storage
from common import watchdog as watchdog_lib
from common.config import ActorConfig
from common.config import EvalConfig
from common.connection import CONNECTION_ERRORS
from common.config import ReplayConfig

CSV_FIELDS = ('train_step', 'env_steps', 'timestamp', 'average_return',
              'average_episode_length', 'num_episodes')


def evaluate_policy(env: vector_env.VectorEnv, policy, num_episodes: int):
  """Runs `num_episodes` episodes; returns (average return, average episode length).

  `env` is a VectorEnv of one environment and `policy` a batched callable such as
  `inference.CompiledPolicy(tf_policy, 1)`. It plays and counts exactly like TF-Agents' PyDriver
  with `max_episodes=num_episodes` and the AverageReturn and AverageEpisodeLength metrics (reset
  first, stop after the boundary step that ends the last episode), so the episodes and figures
  are the same as that stock loop's; tests/test_fast_paths.py checks it. It avoids the stock
  loop's per-step costs (PyTFEagerPolicy dispatch, TF-Agents wrappers, trajectory nests).
  """
  metrics = collect.EpisodeMetrics(1, window=num_episodes)
  time_step = env.reset()
  episodes = 0
  while episodes < num_episodes:
    action, _ = policy(time_step)
    next_time_step = env.step(action)
    metrics.update(time_step.step_type, next_time_step.step_type, next_time_step.reward)
    episodes += int(np.sum(time_step.step_type == ts.StepType.LAST))
    time_step = next_time_step
  return metrics.average_return, metrics.average_length


def append_csv_row(path: str, row: dict) -> None:
  """Appends one row (writing the header first if the file is new), flushed to disk.

  A failed write (disk full, I/O error) is cut off again, so that the file never ends in half
  a row; the error is raised.
  """
  new = not os.path.exists(path)
  with open(path, 'a', newline='') as f:
    size = f.tell()
    try:
      writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
      if new:
        writer.writeheader()
      writer.writerow(row)
      f.flush()
      os.fsync(f.fileno())
    except OSError:
      try:
        f.truncate(size)
      except OSError:
        pass
      raise


class _Results:
  """Eval results not yet on disk: written in order, kept in memory while writes fail."""

  def __init__(self, csv_path: str, summary_writer):
    self._csv_path, self._writer = csv_path, summary_writer
    self._rows = []

  def add(self, row: dict) -> None:
    self._rows.append(row)

  def write(self) -> None:
    """Writes the kept rows, oldest first; raises on a storage fault with the rest kept."""
    while self._rows:
      row = self._rows[0]
      append_csv_row(self._csv_path, row)
      self._rows.pop(0)
      with self._writer.as_default():
        step, env_steps = row['train_step'], row['env_steps']
        tf.summary.scalar('Metrics/AverageReturn', row['average_return'], step=step)
        tf.summary.scalar('Metrics/AverageEpisodeLength', row['average_episode_length'],
                          step=step)
        tf.summary.scalar('Metrics/AverageReturn_vs_env_steps', row['average_return'],
                          step=env_steps)
      self._writer.flush()


read_csv = eval_log.read_csv  # The eval CSV's reader, beside its writer.


def run_eval(root_dir: str, server_address: str, max_evals: int = 0,
             server_timeout_s: float = 300.0, stop_event: Optional[threading.Event] = None,
             poll_interval_s: float = 1.0) -> int:
  """Evaluates until `max_evals` evaluations are done (0: for ever) or `stop_event` is set.

  Results that cannot be written (disk full, read-only) are kept in memory and retried with
  backoff (`storage.RetryingSave`); on stop, a last failure raises `storage.StorageError`.

  Returns:
    The number of evaluations run.
  """
  eval_config = EvalConfig()
  eval_config.validate()
  stop_event = stop_event or threading.Event()
  builders.configure_tensorflow(threads=1)
  role = 'eval'
  policy_client = PolicyClient(server_address, ReplayConfig(), role, server_timeout_s,
                               stop_event)
  policy_client.connect()
  env = vector_env.VectorEnv([environments.make_environment(seed=eval_config.seed,
                                                            training=False)])
  greedy = inference.make_policy(agents.greedy_policy(policy_client.agent), 1,
                                 ActorConfig().inference, eval_config.seed)
  eval_dir = os.path.join(root_dir, constants.EVAL_DIR)
  ownership.own(eval_dir, 'eval')
  config_lib.record_run_config(eval_dir, {'root_dir': root_dir, 'max_evals': max_evals,
                                          'replay_server_address': server_address})
  csv_path = os.path.join(root_dir, constants.EVAL_CSV)
  results = _Results(csv_path, tf.summary.create_file_writer(eval_dir))
  save = storage.RetryingSave('eval results', eval_dir, results.write)
  done_rows = read_csv(csv_path)
  last_step = int(done_rows[-1]['train_step']) if done_rows else None
  evals = 0
  logging.info('eval: %d greedy episodes every %d train steps; results in %s',
               eval_config.num_episodes, eval_config.interval, csv_path)
  watchdog = watchdog_lib.Watchdog(role, server_address, quiet_s=60.0,
                                   deadline_s=server_timeout_s, stop_event=stop_event)
  try:
    while not stop_event.is_set() and (not max_evals or evals < max_evals):
      watchdog.beat()
      try:
        step = policy_client.pull()
        due = step is not None and (last_step is None or step >= last_step + eval_config.interval)
        if not due:
          stop_event.wait(poll_interval_s)
          continue
        if stop_event.is_set():
          break
        greedy.sync()  # The pulled weights, for a NumPy policy.
        average_return, average_length = evaluate_policy(env, greedy, eval_config.num_episodes)
        info = policy_client.server_info = connection.probe(server_address)
        env_steps = replay.inserted_env_steps(info[constants.REPLAY_TABLE]) if info else -1
      except CONNECTION_ERRORS as e:
        policy_client.reconnect(e)
        continue
      row = dict(train_step=step, env_steps=env_steps, timestamp=round(time.time(), 3),
                 average_return=average_return, average_episode_length=average_length,
                 num_episodes=eval_config.num_episodes)
      results.add(row)
      save()
      logging.info('eval: train_step=%d env_steps=%d AverageReturn=%.2f AverageEpisodeLength=%.1f',
                   step, env_steps, average_return, average_length)
      last_step = step
      evals += 1
  finally:
    watchdog.stop()  # Also when the loop raises, so that no deadline outlives the loop.
  if save.pending:
    save.final()
  logging.info('%s after %d evaluations', constants.EVAL_STOPPED_LINE, evals)
  return evals
