"""Tabular Q-learning against the optimum, on FrozenLake-v1 (slippery) and Taxi-v3.

For each gin file: `python -m launcher.main --gin_file=G --num_actors=1 --budget_s=B` (replay
server, actor, learner and eval as processes) runs until eval reaches the file's target or the
budget ends, timed from launch to exit. Then the learner's final greedy SavedModel
(root_dir/learner/policies/greedy_policy) is read as a table (its action in every state) and
played for `--episodes` episodes of the Gymnasium environment, with its own time limit and
fresh seeds: its mean return and standard error. The optimum of the same protocol (the
expected return of the best policy under the time limit) is computed exactly by finite-horizon
value iteration on the environment's own transition table (`env.unwrapped.P`), averaged over
its start states. Each record also keeps the run's eval curve (train step, env steps, seconds
from the first eval, return).

  python -m bench.tabular [--runs=1] [--episodes=5000] [--budget_s=600] [--max_train_steps=0]
      [--gin_bindings=B ...] [--gin_files=gin/q_learning_frozenlake.gin,gin/q_learning_taxi.gin]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import harness
from common import constants
from common import eval_log

_ENVIRONMENTS = {  # gin file -> (Gymnasium id, make kwargs)
    'q_learning_frozenlake': ('FrozenLake-v1', {'is_slippery': True}),
    'q_learning_taxi': ('Taxi-v3', {}),
}


def optimum(env) -> float:
  """The best expected return within the time limit, from the start-state distribution.

  V_h(s) = max_a sum_{s'} p (r + [not done] V_{h-1}(s')) with V_0 = 0, for h up to the
  environment's step limit.
  """
  inner = env.unwrapped
  horizon = env.spec.max_episode_steps
  states, actions = inner.observation_space.n, inner.action_space.n
  values = np.zeros(states)
  for _ in range(horizon):
    q = np.zeros((states, actions))
    for s in range(states):
      for a in range(actions):
        q[s, a] = sum(p * (r + (0.0 if done else values[s2]))
                      for p, s2, r, done in inner.P[s][a])
    values = q.max(axis=1)
  return float(np.dot(inner.initial_state_distrib, values))


def policy_table(policy_dir: str, states: int) -> np.ndarray:
  """The exported greedy policy's action in every state (it is deterministic)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.trajectories import time_step as ts  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(policy_dir)
  observations = tf.range(states, dtype=tf.int64)
  step = loaded.action(ts.restart(observations, batch_size=states), ())
  return step.action.numpy().astype(np.int64)


def play(env, table: np.ndarray, episodes: int, seed: int) -> np.ndarray:
  """Returns of `episodes` episodes of the table's policy (time limit included)."""
  returns = np.zeros(episodes)
  for i in range(episodes):
    state, _ = env.reset(seed=seed + i)
    done = False
    while not done:
      state, reward, terminated, truncated, _ = env.step(int(table[state]))
      returns[i] += reward
      done = terminated or truncated
  return returns


def _curve(root_dir: str):
  rows = eval_log.read_csv(os.path.join(root_dir, constants.EVAL_CSV))
  start = rows[0]['timestamp'] if rows else 0.0
  return [dict(train_step=int(r['train_step']), env_steps=int(r['env_steps']),
               seconds=round(r['timestamp'] - start, 1), average_return=r['average_return'])
          for r in rows]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=1)
  parser.add_argument('--episodes', type=int, default=5000)
  parser.add_argument('--budget_s', type=float, default=600.0)
  parser.add_argument('--max_train_steps', type=int, default=0,
                      help='Train steps of each run; 0: until the gin file\'s target.')
  parser.add_argument('--gin_bindings', action='append', default=[],
                      help='Extra gin bindings of every run.')
  parser.add_argument('--gin_files',
                      default='gin/q_learning_frozenlake.gin,gin/q_learning_taxi.gin')
  args = parser.parse_args(argv)
  import gymnasium  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp(prefix='bench_tabular_')
  records = []
  for run in range(args.runs):
    for gin_file in [f for f in args.gin_files.split(',') if f]:
      name = os.path.splitext(os.path.basename(gin_file))[0]
      env_id, kwargs = _ENVIRONMENTS[name]
      env = gymnasium.make(env_id, **kwargs)
      run_dir = f'{root}/{name}_{run}'
      start = time.monotonic()
      with open(f'{run_dir}.log', 'w') as log:
        status = subprocess.call(
            [sys.executable, '-m', 'launcher.main', f'--gin_file={gin_file}',
             f'--root_dir={run_dir}', '--num_actors=1', f'--budget_s={args.budget_s:g}',
             f'--gin_bindings=ActorConfig.seed={run}', f'--max_train_steps={args.max_train_steps}',
             *[f'--gin_bindings={b}' for b in args.gin_bindings]],
            stdout=log, stderr=subprocess.STDOUT)
      seconds = time.monotonic() - start
      table = policy_table(os.path.join(run_dir, constants.POLICY_DIR, 'greedy_policy'),
                           env.observation_space.n)
      returns = play(env, table, args.episodes, seed=100_000 * (run + 1))
      best = optimum(env)
      curve = _curve(run_dir)
      harness.log(f'{name} run {run}: {returns.mean():.3f} +- '
                  f'{returns.std() / np.sqrt(returns.size):.3f} (optimum {best:.3f}), '
                  f'exit {status} after {seconds:.0f} s')
      records.append(harness.emit(harness.make_record(
          f'greedy return of tabular Q-learning over {args.episodes} episodes', returns.mean(),
          'return', name, stock=best, versus='optimum (value iteration)',
          standard_error=float(returns.std() / np.sqrt(returns.size)),
          launch_to_exit_s=round(seconds, 1), exit_status=status, run=run,
          env_steps=max((c['env_steps'] for c in curve), default=None),
          train_steps=curve[-1]['train_step'] if curve else None, curve=curve,
          gin_file=gin_file, logs=run_dir)))
  out = os.path.join('bench', 'results', f'{time.strftime("%Y-%m-%d")}-tabular.json')
  harness.write_results(out, 'bench.tabular', argv, records)
  harness.log(f'wrote {out}')


if __name__ == '__main__':
  main()
