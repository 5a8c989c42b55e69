"""Prints a results file as markdown: the machine, the date, the command and the table.

  python -m bench.report [bench/results/<date>-<host>.json]   # default: the newest file

docs/performance.md embeds this output for the latest results file.
"""

import argparse
import glob
import json
import os

from bench import harness
from bench import run


def render(result: dict, path: str) -> str:
  machine = result['machine']
  gpus = ', '.join(machine.get('gpus') or []) or 'none'
  lines = [
      f'Results file: `{os.path.relpath(path, harness.REPO)}`  ',
      f'Date: {result["date"]}; command: `{result["command"].strip()}`; '
      f'{result["seconds"]:.0f} s in all.  ',
      f'Machine: {machine["host"]}, {machine["usable_cores"]} usable cores '
      f'({machine["cpu_model"]}), {machine.get("memory_gib")} GiB, GPUs: {gpus}.  ',
      f'Load average (1 min) before the suite: {machine["load_average"][0]:.1f}, after: '
      f'{result["load_average_after"][0]:.1f} (the suite\'s own load is in the second).',
      '',
      harness.TABLE_HEADER,
  ]
  lines += [harness.markdown_row(r) for r in result['records']]
  missed = [r for r in result['records'] if r.get('met') is False]
  if missed:
    lines += ['', 'Targets not reached in this run:', '']
    lines += [f'- {run.key(r)}: {r["ratio"]:.2f}x against {r["target_text"]} '
              f'({r["shortfall"]})' for r in missed]
  if result.get('failed'):
    lines += ['', f'Benchmarks that failed: {", ".join(result["failed"])}']
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('path', nargs='?', default='')
  args = parser.parse_args(argv)
  path = args.path
  if not path:
    paths = sorted(glob.glob(os.path.join(run.RESULTS_DIR, '*.json')), key=os.path.getmtime)
    if not paths:
      raise SystemExit('error: no results file in bench/results: run python -m bench.run first')
    path = paths[-1]
  with open(path) as f:
    print(render(json.load(f), path), end='')


if __name__ == '__main__':
  main()
