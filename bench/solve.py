"""Time to solve DQN CartPole-v0 (eval return >= 195), from launch, start-up included.

  ours      `python -m launcher.main --gin_file=gin/dqn_cartpole_fast.gin --num_actors=1`
            (replay server, actor, learner and eval as processes; the tutorial's agent, network
            and batch), timed from its launch to its "[local] stopping: eval return" line; env
            steps are the replay table's inserts at that evaluation.
  tutorial  bench/tutorial_dqn.py (one process, written like the TF-Agents DQN tutorial), timed
            from its launch to its SOLVED line.

The two alternate, `--runs` times each, and each reports the median. The issue's measurement
is the median of 5 runs (`--runs=5`, about 10 minutes on 2 cores); the default suite runs 1.

  python -m bench.solve [--runs=1] [--budget_s=240] [--num_actors=1]
"""

import argparse
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


def _run(argv, pattern, budget_s: float, log_path: str):
  """Runs argv until a line matches `pattern`; returns (seconds from launch, match) or None."""
  found = []
  matched = threading.Event()
  start = time.monotonic()

  def _line(line):
    match = None if found else pattern.search(line)
    if match:
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=1)
  parser.add_argument('--budget_s', type=float, default=240.0)
  parser.add_argument('--num_actors', type=int, default=1)
  parser.add_argument('--gin_file', default='gin/dqn_cartpole_fast.gin')
  args = parser.parse_args(argv)
  root = tempfile.mkdtemp(prefix='bench_solve_')
  ours, tutorial = [], []
  for run in range(args.runs):
    result = _run([sys.executable, '-m', 'launcher.main', f'--gin_file={args.gin_file}',
                   f'--root_dir={root}/ours{run}',
                   f'--num_actors={args.num_actors}', f'--budget_s={args.budget_s:g}',
                   f'--gin_bindings=ActorConfig.seed={run}'],
                  _OURS_DONE, args.budget_s + 30, f'{root}/ours{run}.log')
    if result:
      ours.append((result[0], int(result[1].group(3)), int(result[1].group(2))))
    harness.log(f'solve run {run}: ours {result[0] if result else "not solved"}')
    result = _run([sys.executable, '-m', 'bench.tutorial_dqn', f'--seed={run}'],
                  _TUTORIAL_DONE, args.budget_s + 30, f'{root}/tutorial{run}.log')
    if result:
      tutorial.append((result[0], int(result[1].group(2)), int(result[1].group(3))))
    harness.log(f'solve run {run}: tutorial {result[0] if result else "not solved"}')
  detail = dict(runs=args.runs, ours_solved=len(ours), tutorial_solved=len(tutorial),
                ours_runs=ours, tutorial_runs=tutorial, num_actors=args.num_actors,
                budget_s=args.budget_s, gin_file=args.gin_file, logs=root)
  # An unsolved run counts as the budget (an optimistic bound for the side that failed).
  ours_s = [r[0] for r in ours] + [args.budget_s] * (args.runs - len(ours))
  tutorial_s = [r[0] for r in tutorial] + [args.budget_s] * (args.runs - len(tutorial))
  harness.emit(harness.make_record(
      'time to solve DQN CartPole-v0 (median, from launch)', statistics.median(ours_s), 's',
      'dqn_cartpole', stock=statistics.median(tutorial_s), versus='TF-Agents tutorial loop',
      target=TARGET_RATIO, higher_is_better=False, **detail))
  if ours and tutorial:
    harness.emit(harness.make_record(
        'env steps to solve DQN CartPole-v0 (median)', statistics.median(r[1] for r in ours),
        'env steps', 'dqn_cartpole', stock=statistics.median(r[1] for r in tutorial),
        versus='TF-Agents tutorial loop', higher_is_better=False, runs=args.runs))


if __name__ == '__main__':
  main()
