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
from common import gin_config
from common import constants
from common import environments
from common import eval_log
from common import ownership
from common import replay
from common import storage
from common import weights_key
from common import watchdog as watchdog_lib
from common.connection import CONNECTION_ERRORS

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


def run_eval(root_dir: str, server_address: str, configs: config_lib.Configs,
             max_evals: int = 0, server_timeout_s: float = 300.0,
             stop_event: Optional[threading.Event] = None, poll_interval_s: float = 1.0,
             weights_key_file: Optional[str] = None) -> int:
  """Evaluates until `max_evals` evaluations are done (0: for ever) or `stop_event` is set.

  An evaluation runs `EvalConfig.num_episodes` greedy episodes on the newest weights once they
  are `EvalConfig.interval` train steps past the last evaluated ones. Results that cannot be
  written (disk full, read-only) are kept in memory and retried with backoff
  (`storage.RetryingSave`); on stop, a last failure raises `storage.StorageError`. Weights are
  loaded only when signed with the run's key: `weights_key_file` (default root_dir/weights.key,
  which the learner makes) or $REVERB_FLEET_WEIGHTS_KEY.

  Returns:
    The number of evaluations run.
  """
  stop_event = stop_event or threading.Event()
  evaluation = _assemble(root_dir, server_address, configs, max_evals, server_timeout_s,
                         stop_event, weights_key_file)
  watchdog = watchdog_lib.Watchdog('eval', server_address, quiet_s=60.0,
                                   deadline_s=server_timeout_s, stop_event=stop_event)
  evals = 0
  try:
    while not stop_event.is_set() and (not max_evals or evals < max_evals):
      watchdog.beat()
      try:
        row = evaluation.evaluate_if_due()
      except CONNECTION_ERRORS as e:
        evaluation.policy_client.reconnect(e)
        continue
      if row is None:
        stop_event.wait(poll_interval_s)
        continue
      evaluation.record(row)
      evals += 1
  finally:
    watchdog.stop()  # Also when the loop raises, so that no deadline outlives the loop.
  if evaluation.save.pending:
    evaluation.save.final()
  logging.info('%s after %d evaluations', constants.EVAL_STOPPED_LINE, evals)
  return evals


class _Evaluation:
  """The assembled eval process: the agent, its greedy policy, one environment, the results."""

  def __init__(self, config, policy_client: PolicyClient, env, greedy, results: '_Results',
               save: storage.RetryingSave, last_step: Optional[int],
               stop_event: threading.Event):
    self.config = config
    self._stop_event = stop_event
    self.policy_client = policy_client
    self._env = env
    self._greedy = greedy
    self._results = results
    self.save = save
    self._last_step = last_step

  def evaluate_if_due(self) -> Optional[dict]:
    """Pulls the newest weights; evaluates them if due. Returns the result row, or None."""
    step = self.policy_client.pull()
    if step is None or (self._last_step is not None
                        and step < self._last_step + self.config.interval):
      return None
    if self._stop_event.is_set():
      return None
    self._greedy.sync()  # The pulled weights, for a NumPy policy.
    average_return, average_length = evaluate_policy(self._env, self._greedy,
                                                     self.config.num_episodes)
    info = self.policy_client.session.probe()
    env_steps = replay.inserted_env_steps(info[constants.REPLAY_TABLE]) if info else -1
    return dict(train_step=step, env_steps=env_steps, timestamp=round(time.time(), 3),
                average_return=average_return, average_episode_length=average_length,
                num_episodes=self.config.num_episodes)

  def record(self, row: dict) -> None:
    """Adds a result row, writes the results (retried on a storage fault), logs it."""
    self._results.add(row)
    self.save()
    logging.info('eval: train_step=%d env_steps=%d AverageReturn=%.2f AverageEpisodeLength=%.1f',
                 row['train_step'], row['env_steps'], row['average_return'],
                 row['average_episode_length'])
    self._last_step = row['train_step']


def _assemble(root_dir: str, server_address: str, configs: config_lib.Configs, max_evals: int,
              server_timeout_s: float, stop_event: threading.Event,
              weights_key_file: Optional[str]) -> _Evaluation:
  """Connects (checking the server's tables), builds the greedy policy, opens the results."""
  config = configs.eval
  builders.configure_tensorflow(threads=1)
  policy_client = PolicyClient(server_address, configs.replay, 'eval', server_timeout_s,
                               weights_key.KeySource(
                                   weights_key_file or weights_key.default_path(root_dir), 'eval'),
                               stop_event)
  policy_client.connect()
  env = vector_env.VectorEnv([environments.make_environment(seed=config.seed, training=False)])
  greedy = inference.make_policy(agents.greedy_policy(policy_client.agent), 1,
                                 configs.actor.inference, config.seed)
  eval_dir = os.path.join(root_dir, constants.EVAL_DIR)
  ownership.own(eval_dir, 'eval')
  gin_config.record_run_config(eval_dir, {'root_dir': root_dir, 'max_evals': max_evals,
                                          'replay_server_address': server_address})
  csv_path = os.path.join(root_dir, constants.EVAL_CSV)
  results = _Results(csv_path, tf.summary.create_file_writer(eval_dir))
  done_rows = read_csv(csv_path)
  logging.info('eval: %d greedy episodes every %d train steps; results in %s',
               config.num_episodes, config.interval, csv_path)
  return _Evaluation(config, policy_client, env, greedy, results,
                     storage.RetryingSave('eval results', eval_dir, results.write),
                     int(done_rows[-1]['train_step']) if done_rows else None, stop_event)
