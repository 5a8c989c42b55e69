r"""Ours against Stable-Baselines3 on the tasks users try first: launch to solved, and to exit.

  python -m bench.sb3 [--runs=5] [--tasks=dqn_cartpole,ppo_cartpole] [--budget_s=240]
      [--venv=~/.cache/reverb-fleet/sb3-2.9.2] [--json_out=bench/results/<date>-<host>-sb3.json]

For each task, alternating (ours, SB3, ours, SB3, ...), one at a time, `--runs` times:
  ours  `python -m launcher.main --gin_file=G --root_dir=<new dir>` (the replay server, one
        actor, the learner and eval as processes). Timed from its launch to the learner's first
        train call (`constants.FIRST_TRAIN_STEPS_LINE`), to "[local] stopping: eval return"
        (solved) and to its exit; env steps are the replay inserts at that evaluation.
  SB3   `bench/sb3_solve.py` (SB3 2.9.2 with the RL Zoo's CartPole-v1 hyperparameters, an eval of
        10 deterministic episodes every 2,048 env steps) with the Python of its own virtual
        environment, which this creates on first use (`SB3_REQUIREMENTS`, about 1 GB and 30 s
        from the local wheel of PyTorch); never in the project's. Timed from its launch to its
        SOLVED line and to its exit.
Both solve CartPole-v0 (200-step episodes) at an average greedy return >= 195 over 10 episodes.

Records, medians over the runs (an unsolved run counts as the budget):
  - ours launch to exit against SB3's launch to solved: the issue's target, <= 1.0x;
  - ours launch to solved against SB3's launch to solved;
  - ours launch to the first train step (target <= 5 s) and solved to exit (<= 2 s);
  - env steps to solve, ours against SB3's.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

from bench import harness
from common import constants
from launcher import processes

SB3_REQUIREMENTS = ('torch==2.13.0', 'stable-baselines3==2.9.2', 'gymnasium==1.2.3')
DEFAULT_VENV = os.path.join(os.path.expanduser('~'), '.cache', 'reverb-fleet', 'sb3-2.9.2')
# task: (our gin file, SB3 algorithm)
TASKS = {
    'dqn_cartpole': ('gin/dqn_cartpole_fast.gin', 'dqn'),
    'ppo_cartpole': ('gin/ppo_cartpole.gin', 'ppo'),
}
_OURS_SOLVED = re.compile(r'\[local\] stopping: eval return [\d.]+ >= target \S+ at train step '
                          r'\d+, (-?\d+) env steps')
_OURS_FIRST_STEP = re.compile(re.escape(constants.FIRST_TRAIN_STEPS_LINE))
_SB3_SOLVED = re.compile(r'^SOLVED env_steps=(\d+)')


def sb3_python(venv: str) -> str:
  """The Python of the SB3 virtual environment at `venv`, created with SB3_REQUIREMENTS first
  if it is not there."""
  python = os.path.join(venv, 'bin', 'python')
  if not os.path.exists(python):
    harness.log(f'creating the SB3 virtual environment {venv} ({" ".join(SB3_REQUIREMENTS)})')
    base = getattr(sys, '_base_executable', sys.executable)
    subprocess.run([base, '-m', 'venv', venv], check=True)
    subprocess.run([python, '-m', 'pip', 'install', '-q', *SB3_REQUIREMENTS], check=True)
  return python


def timed_run(argv: Sequence[str], patterns: Dict[str, re.Pattern], budget_s: float,
              log_path: str) -> Dict[str, object]:
  """Runs argv to its exit (stopped at `budget_s`), timing each pattern's first line.

  Returns {'exit_s': seconds from launch to exit (None if stopped), 'returncode': ...,
  name: (seconds from launch, match) for each pattern seen}.
  """
  seen: Dict[str, object] = {}
  lock = threading.Lock()
  start = time.monotonic()

  def _line(line: str) -> None:
    with lock:
      for name, pattern in patterns.items():
        if name not in seen:
          match = pattern.search(line)
          if match:
            seen[name] = (time.monotonic() - start, match)

  process = processes.Process(argv, os.path.basename(log_path), log_path=log_path,
                              on_line=_line, env={harness.RECORDS_ENV: ''})
  while process.alive() and time.monotonic() - start <= budget_s:
    time.sleep(0.05)
  exit_s = time.monotonic() - start if not process.alive() else None
  process.stop(90)
  with lock:
    return dict(seen, exit_s=exit_s, returncode=process.returncode)


def run_ours(gin_file: str, run_dir: str, seed: int, budget_s: float) -> Dict[str, object]:
  """One launch of ours: first_train_s, solved_s, exit_s, env_steps (None where not seen)."""
  result = timed_run(
      [sys.executable, '-m', 'launcher.main', f'--gin_file={gin_file}', f'--root_dir={run_dir}',
       f'--budget_s={budget_s:g}', f'--gin_bindings=ActorConfig.seed={seed}'],
      {'first': _OURS_FIRST_STEP, 'solved': _OURS_SOLVED}, budget_s + 60, f'{run_dir}.log')
  return _summary(result, 'first')


def run_sb3(python: str, algo: str, seed: int, budget_s: float,
            log_path: str) -> Dict[str, object]:
  """One launch of SB3: solved_s, exit_s, env_steps (None where not seen)."""
  result = timed_run([python, os.path.join(harness.REPO, 'bench', 'sb3_solve.py'),
                      f'--algo={algo}', f'--seed={seed}'], {'solved': _SB3_SOLVED}, budget_s,
                     log_path)
  return _summary(result, None)


def _summary(result, first: Optional[str]) -> Dict[str, object]:
  solved = result.get('solved')
  summary = dict(solved_s=solved[0] if solved else None,
                 env_steps=int(solved[1].group(1)) if solved else None,
                 exit_s=result['exit_s'] if solved else None)
  if first:
    summary['first_train_s'] = result[first][0] if first in result else None
  if solved and result['exit_s'] is not None:
    summary['solved_to_exit_s'] = result['exit_s'] - solved[0]
  return summary


def median_or_budget(runs: List[Dict[str, object]], key: str, budget_s: float) -> float:
  """The median of `key` over the runs, a run without it counted as the budget."""
  return statistics.median(run[key] if run.get(key) is not None else budget_s for run in runs)


def _median(runs, key) -> Optional[float]:
  values = [run[key] for run in runs if run.get(key) is not None]
  return statistics.median(values) if values else None


def emit_task(task: str, ours: List[Dict], sb3: List[Dict], budget_s: float) -> List[Dict]:
  """Emits and returns the task's records (see the module docstring)."""
  versus = 'Stable-Baselines3 2.9.2 (RL Zoo values), launch to solved'
  sb3_solved = median_or_budget(sb3, 'solved_s', budget_s)
  records = [
      harness.make_record(
          'launch to exit (median) vs SB3 launch to solved',
          median_or_budget(ours, 'exit_s', budget_s), 's', task, stock=sb3_solved, versus=versus,
          target=1.0, higher_is_better=False, runs=len(ours), ours_runs=ours, sb3_runs=sb3,
          budget_s=budget_s, gin_file=TASKS[task][0]),
      harness.make_record(
          'launch to solved (median) vs SB3', median_or_budget(ours, 'solved_s', budget_s), 's',
          task, stock=sb3_solved, versus=versus, target=1.0, higher_is_better=False)]
  first = _median(ours, 'first_train_s')
  if first is not None:
    records.append(harness.make_record(
        'launch to first train step (median)', first, 's', task, ratio=first / 5.0, target=1.0,
        target_text='<= 5 s', higher_is_better=False))
  stop = _median(ours, 'solved_to_exit_s')
  if stop is not None:
    records.append(harness.make_record(
        'solved to exit (median)', stop, 's', task, stock=_median(sb3, 'solved_to_exit_s'),
        versus='Stable-Baselines3 2.9.2', ratio=stop / 2.0, target=1.0, target_text='<= 2 s',
        higher_is_better=False))
  ours_steps = _median(ours, 'env_steps')
  if ours_steps is not None:
    records.append(harness.make_record(
        'env steps to solve (median)', ours_steps, 'env steps', task,
        stock=_median(sb3, 'env_steps'), versus='Stable-Baselines3 2.9.2 (RL Zoo values)',
        higher_is_better=False))
  return [harness.emit(record) for record in records]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--budget_s', type=float, default=240.0)
  parser.add_argument('--venv', default=DEFAULT_VENV)
  parser.add_argument('--json_out', default='',
                      help='Also write the records there (bench/results/<date>-<host>-sb3.json).')
  args = parser.parse_args(argv)
  tasks = [t for t in args.tasks.split(',') if t]
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    raise SystemExit(f'error: unknown task(s) {unknown} in --tasks: choose from {sorted(TASKS)}')
  python = sb3_python(args.venv)
  root = tempfile.mkdtemp(prefix='bench_sb3_')
  records = []
  for task in tasks:
    gin_file, algo = TASKS[task]
    ours, sb3 = [], []
    for run in range(args.runs):
      ours.append(run_ours(gin_file, f'{root}/{task}_ours_{run}', run, args.budget_s))
      harness.log(f'{task} run {run}: ours {ours[-1]}')
      sb3.append(run_sb3(python, algo, run, args.budget_s, f'{root}/{task}_sb3_{run}.log'))
      harness.log(f'{task} run {run}: SB3 {sb3[-1]}')
    records += emit_task(task, ours, sb3, args.budget_s)
  if args.json_out:
    harness.write_results(args.json_out, 'bench.sb3', argv, records)
    harness.log(f'wrote {args.json_out}')


if __name__ == '__main__':
  main()
