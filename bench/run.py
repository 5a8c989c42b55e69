r"""Runs the benchmark suite and writes bench/results/<date>-<host>.json.

  python -m bench.run                      # the whole suite, about 10 minutes on 2 cores
  python -m bench.run --only=learner,replay
  python -m bench.run --solve_runs=5       # the issue's median-of-5 time-to-solve measurement

Each benchmark runs as its own process (`python -m bench.<module>`), in this order: env_rate,
replay, learner, actor, scaling, solve. Each prints its records (one JSON line, prefixed with
`BENCH `, and one markdown row) as it goes. At the end this prints the whole table, writes the
results file (the machine, the load seen before and after, the command, every record) and
compares every figure with the newest earlier results file: a change beyond --tolerance is
reported as a possible regression or improvement, never as a failure, because figures taken on
a shared machine are noisy. The exit status is non-zero only when a benchmark crashed.

The same command runs on a GPU machine: the learner benchmarks then train on the GPU (the
actors and the stock collect job never see it).
"""

import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import harness
from common import files

RESULTS_DIR = os.path.join(harness.REPO, 'bench', 'results')


def _suite(args):
  """[(name, argv)] of the benchmarks to run."""
  raw_json = os.path.join(args.work_dir, 'raw_rates.json')
  suite = [
      ('env_rate', ['bench.env_rate', f'--json_out={raw_json}']),
      ('replay', ['bench.replay_bench']),
      ('learner', ['bench.learner_bench', '--prioritized']),
      ('inference', ['bench.inference_bench']),
      ('actor', ['bench.actor_bench']),  # Measures the raw rate again, beside its windows.
      ('scaling', ['bench.scaling']),
      ('solve', ['bench.solve', f'--runs={args.solve_runs}']),
  ]
  # Run only when named in --only: minutes each, and the cluster needs root.
  opt_in = [
      ('replay_capacity', ['bench.replay_capacity']),
      ('cluster', ['bench.cluster_bench']),
      # Creates its own 1 GB virtual environment for Stable-Baselines3 on first use.
      ('sb3', ['bench.sb3', f'--runs={args.solve_runs}']),
  ]
  if args.only:
    wanted = set(args.only.split(','))
    suite += [(name, argv) for name, argv in opt_in if name in wanted]
    unknown = wanted - {name for name, _ in suite}
    if unknown:
      raise SystemExit(f'error: unknown benchmark(s) {sorted(unknown)} in --only: choose from '
                       + ', '.join(name for name, _ in suite + opt_in))
    suite = [(name, argv) for name, argv in suite if name in wanted]
  return suite


def key(record) -> str:
  return f'{record["name"]} | {record.get("task", "-")}'


def compare(records, previous, tolerance: float):
  """Lines describing each figure's change against `previous` records (same name and task)."""
  before = {key(r): r for r in previous}
  lines = []
  for record in records:
    old = before.get(key(record))
    if not old or not old.get('value'):
      continue
    change = record['value'] / old['value'] - 1
    better = change > 0 if record.get('higher_is_better', True) else change < 0
    verdict = 'ok'
    if abs(change) > tolerance:
      verdict = 'improved' if better else 'POSSIBLE REGRESSION'
    lines.append(f'{verdict:>19}  {change:+7.1%}  {key(record)}: {old["value"]:.4g} -> '
                 f'{record["value"]:.4g} {record["unit"]}')
  return lines


def previous_results(out: str):
  """The results file to compare with: `out` itself if an earlier run wrote it, else the newest."""
  if os.path.exists(out):
    return out
  paths = sorted(glob.glob(os.path.join(RESULTS_DIR, '*.json')), key=os.path.getmtime)
  return paths[-1] if paths else None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', default='', help='Comma-separated subset of the benchmarks.')
  parser.add_argument('--solve_runs', type=int, default=1,
                      help='Time-to-solve runs per side (5 for the full measurement).')
  parser.add_argument('--out', default='', help='Results file (default bench/results/'
                      '<date>-<host>.json).')
  parser.add_argument('--tolerance', type=float, default=0.25,
                      help='Relative change reported as a regression or improvement.')
  parser.add_argument('--timeout_s', type=float, default=600.0,
                      help='Deadline of each benchmark process.')
  args = parser.parse_args(argv)
  args.work_dir = tempfile.mkdtemp(prefix='bench_run_')
  host = harness.machine()
  date = datetime.date.today().isoformat()
  out = args.out or os.path.join(RESULTS_DIR, f'{date}-{host["host"]}.json')
  records_path = os.path.join(args.work_dir, 'records.jsonl')
  env = dict(os.environ, **{harness.RECORDS_ENV: records_path}, PYTHONUNBUFFERED='1')
  start = time.monotonic()
  failed = []
  durations = {}
  for name, module_argv in _suite(args):
    harness.log(f'running {name}: python -m {" ".join(module_argv)}')
    began = time.monotonic()
    try:
      code = subprocess.run([sys.executable, '-m'] + module_argv, cwd=harness.REPO, env=env,
                            timeout=args.timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
      code = 'timeout'
    durations[name] = round(time.monotonic() - began, 1)
    if code != 0:
      failed.append(name)
      harness.log(f'{name} failed ({code})')
  records = []
  if os.path.exists(records_path):
    with open(records_path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  host_after = harness.machine()
  result = dict(
      date=date, command='python -m bench.run ' + ' '.join(argv or sys.argv[1:]),
      machine=host, load_average_after=host_after['load_average'],
      seconds=round(time.monotonic() - start, 1), durations_s=durations, failed=failed,
      records=records)
  os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
  previous = previous_results(out)
  old = None
  if previous:
    with open(previous) as f:
      old = json.load(f)
  files.atomic_write(out, json.dumps(result, indent=1, sort_keys=True) + '\n')

  print(f'\n## Results ({date}, {host["host"]}, {host["usable_cores"]} cores, '
        f'{host["cpu_model"]}, GPUs: {", ".join(host["gpus"]) or "none"})\n')
  print(f'Load average before: {host["load_average"][0]:.1f}, after: '
        f'{host_after["load_average"][0]:.1f}; {result["seconds"]:.0f} s in all.\n')
  print(harness.TABLE_HEADER)
  for record in records:
    print(harness.markdown_row(record))
  missed = [r for r in records if r.get('met') is False]
  if missed:
    print('\nTargets not reached:')
    for record in missed:
      print(f'  {key(record)}: {record["ratio"]:.2f}x against {record["target_text"]} '
            f'({record["shortfall"]})')
  if old is not None:
    print(f'\nRegression comparison with {os.path.relpath(previous, harness.REPO)} '
          f'(reported, never failing; tolerance {args.tolerance:.0%}):')
    for line in compare(records, old.get('records', []), args.tolerance) or ['  (nothing '
                                                                            'in common)']:
      print('  ' + line)
  else:
    print('\nNo earlier results file to compare with.')
  print(f'\nWrote {os.path.relpath(out, harness.REPO)}')
  return 1 if failed else 0


if __name__ == '__main__':
  raise SystemExit(main())
