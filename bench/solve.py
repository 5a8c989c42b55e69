"""Time to solve a task (eval return >= its EvalConfig.target_return), from launch, start-up
included.

  ours      `python -m launcher.main --gin_file=G --num_actors=1` for each gin file G of
            `--gin_files` (replay server, actor, learner and eval as processes), timed from its
            launch to its "[local] stopping: eval return" line; env steps are the replay
            table's inserts at that evaluation.
  stock     the stock example itself, `python -m tf_agents.examples.dqn.dqn_train_eval` with its
            defaults (`run_stock`), timed from its launch to its first eval >= 195.
  tutorial  bench/tutorial_dqn.py (one process, written like the TF-Agents DQN tutorial, on
            CartPole-v0), timed from its launch to its SOLVED line.

All of them alternate (ours, stock, tutorial, ours, stock, ...), `--runs` times each, and each reports the median. Every gin file after
the first is also reported against the first (Ape-X DQN against uniform DQN with the same
actors, for example). The issue's measurement is the median of 5 runs (`--runs=5`, about 10
minutes per gin file on 2 cores); the default suite runs 1 of gin/dqn_cartpole_fast.gin.

  python -m bench.solve [--runs=1] [--budget_s=240] [--num_actors=1]
      [--gin_files=gin/dqn_cartpole_fast.gin,gin/apex_dqn_cartpole.gin] [--no_tutorial]
      [--no_stock] [--launcher_flags="--num_actors=2"]
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time

from bench import harness
from launcher import processes

TARGET_RATIO = 0.5
_OURS_DONE = re.compile(r'\[local\] stopping: eval return ([\d.]+) >= target \S+ at train step '
                        r'(\d+), (-?\d+) env steps')
_TUTORIAL_DONE = re.compile(r'SOLVED seconds=([\d.]+) env_steps=(\d+) train_steps=(\d+)')
STOCK_MODULE = 'tf_agents.examples.dqn.dqn_train_eval'
_STOCK_EVAL = re.compile(r'AverageReturn = (-?[\d.]+)')


def _run(argv, pattern, budget_s: float, log_path: str, accept=lambda match: True):
  """Runs argv until a line matches `pattern` and `accept(match)`; returns (seconds from
  launch, match) or None."""
  found = []
  matched = threading.Event()
  start = time.monotonic()

  def _line(line):
    match = None if found else pattern.search(line)
    if match and accept(match):
      found.append((time.monotonic() - start, match))
      matched.set()

  process = processes.Process(argv, argv[2], log_path=log_path, on_line=_line,
                              env={harness.RECORDS_ENV: ''})
  try:
    while not matched.is_set() and process.alive() and time.monotonic() - start <= budget_s:
      matched.wait(0.5)
  finally:
    process.stop(90)  # The launcher stops its children on SIGTERM.
  return found[0] if found else None


def run_stock(run_dir: str, budget_s: float, target: float = 195.0):
  """The stock example, `python -m tf_agents.examples.dqn.dqn_train_eval` (tf-agents 0.19.0,
  its defaults: CartPole-v0, fc (100,), 1000 random steps, one env step per train step, eval of
  10 episodes at train step 0 and every 1000), until an eval's AverageReturn >= `target`.

  Returns (seconds from launch, env steps, train steps) or None. The k-th evaluation (k = 0, 1,
  ...) runs at train step 1000 k, after 1000 + 1000 k env steps.
  """
  evaluations = []

  def _solved(match):
    evaluations.append(float(match.group(1)))
    return evaluations[-1] >= target

  result = _run([sys.executable, '-m', STOCK_MODULE, f'--root_dir={run_dir}'], _STOCK_EVAL,
                budget_s, f'{run_dir}.log', accept=_solved)
  if result is None:
    return None
  train_steps = 1000 * (len(evaluations) - 1)
  return result[0], 1000 + train_steps, train_steps


def _spread(results) -> dict:
  seconds = [r[0] for r in results]
  return dict(min_s=min(seconds), max_s=max(seconds)) if seconds else {}


def _name(gin_file: str) -> str:
  return os.path.splitext(os.path.basename(gin_file))[0]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=1)
  parser.add_argument('--budget_s', type=float, default=240.0)
  parser.add_argument('--num_actors', type=int, default=1)
  parser.add_argument('--gin_files', default='gin/dqn_cartpole_fast.gin',
                      help='Comma-separated gin files; the first is the others\' baseline.')
  parser.add_argument('--no_tutorial', action='store_true',
                      help='Skip the tutorial loop.')
  parser.add_argument('--no_stock', action='store_true',
                      help='Skip the stock dqn_train_eval.py example.')
  parser.add_argument('--launcher_flags', default='',
                      help='Extra flags of launcher.main, space-separated.')
  args = parser.parse_args(argv)
  gin_files = [f for f in args.gin_files.split(',') if f]
  root = tempfile.mkdtemp(prefix='bench_solve_')
  ours = {f: [] for f in gin_files}
  tutorial, stock = [], []
  for run in range(args.runs):
    for gin_file in gin_files:
      run_dir = f'{root}/{_name(gin_file)}_{run}'
      result = _run([sys.executable, '-m', 'launcher.main', f'--gin_file={gin_file}',
                     f'--root_dir={run_dir}',
                     f'--num_actors={args.num_actors}', f'--budget_s={args.budget_s:g}',
                     f'--gin_bindings=ActorConfig.seed={run}', *args.launcher_flags.split()],
                    _OURS_DONE, args.budget_s + 30, f'{run_dir}.log')
      if result:
        ours[gin_file].append((result[0], int(result[1].group(3)), int(result[1].group(2))))
      harness.log(f'solve run {run}: {_name(gin_file)} '
                  f'{result[0] if result else "not solved"}')
    if not args.no_stock:
      result = run_stock(f'{root}/stock{run}', args.budget_s + 30)
      if result:
        stock.append(result)
      harness.log(f'solve run {run}: stock {result[0] if result else "not solved"}')
    if args.no_tutorial:
      continue
    result = _run([sys.executable, '-m', 'bench.tutorial_dqn', f'--seed={run}'],
                  _TUTORIAL_DONE, args.budget_s + 30, f'{root}/tutorial{run}.log')
    if result:
      tutorial.append((result[0], int(result[1].group(2)), int(result[1].group(3))))
    harness.log(f'solve run {run}: tutorial {result[0] if result else "not solved"}')

  def seconds(results):
    # An unsolved run counts as the budget (an optimistic bound for the side that failed).
    return [r[0] for r in results] + [args.budget_s] * (args.runs - len(results))

  baseline = gin_files[0]
  for gin_file in gin_files:
    name = _name(gin_file)
    detail = dict(runs=args.runs, solved=len(ours[gin_file]), ours_runs=ours[gin_file],
                  num_actors=args.num_actors, budget_s=args.budget_s, gin_file=gin_file,
                  logs=root)
    detail.update(_spread(ours[gin_file]))
    if args.no_stock and args.no_tutorial:  # No comparison: the time itself (a user's task).
      harness.emit(harness.make_record(
          f'time to solve {name} (median, from launch)',
          statistics.median(seconds(ours[gin_file])), 's', name,
          env_steps=[r[1] for r in ours[gin_file]], train_steps=[r[2] for r in ours[gin_file]],
          **detail))
    if not args.no_stock:
      harness.emit(harness.make_record(
          f'time to solve {name} (median, from launch) vs the stock example',
          statistics.median(seconds(ours[gin_file])), 's', name,
          stock=statistics.median(seconds(stock)), versus=f'{STOCK_MODULE} (tf-agents 0.19.0)',
          target=TARGET_RATIO, higher_is_better=False, stock_solved=len(stock),
          stock_runs=stock, stock_spread=_spread(stock), **detail))
      if ours[gin_file] and stock:
        harness.emit(harness.make_record(
            f'env steps to solve {name} (median) vs the stock example',
            statistics.median(r[1] for r in ours[gin_file]), 'env steps', name,
            stock=statistics.median(r[1] for r in stock), versus=STOCK_MODULE,
            higher_is_better=False, runs=args.runs))
    if not args.no_tutorial:
      detail.update(tutorial_solved=len(tutorial), tutorial_runs=tutorial)
      harness.emit(harness.make_record(
          f'time to solve {name} (median, from launch)',
          statistics.median(seconds(ours[gin_file])), 's', name,
          stock=statistics.median(seconds(tutorial)), versus='TF-Agents tutorial loop',
          target=TARGET_RATIO, higher_is_better=False, **detail))
      if ours[gin_file] and tutorial:
        harness.emit(harness.make_record(
            f'env steps to solve {name} (median)',
            statistics.median(r[1] for r in ours[gin_file]), 'env steps', name,
            stock=statistics.median(r[1] for r in tutorial), versus='TF-Agents tutorial loop',
            higher_is_better=False, runs=args.runs))
    if gin_file != baseline:
      harness.emit(harness.make_record(
          f'time to solve {name} against {_name(baseline)} (median)',
          statistics.median(seconds(ours[gin_file])), 's', name,
          stock=statistics.median(seconds(ours[baseline])), versus=_name(baseline),
          higher_is_better=False, baseline_runs=ours[baseline], **detail))


if __name__ == '__main__':
  main()
