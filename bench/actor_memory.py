"""Where a long-lived collect actor's memory goes: a heap profile beside a live fleet.

  python -m bench.actor_memory [--gin_file=gin/dqn_cartpole.gin] [--duration_s=1800]
      [--snapshot_every_s=300] [--frames=12] [--arms=fix,without]
      [--out=bench/results/DATE-vm-actor-memory.json]

Each arm starts a replay server, a learner and one collect actor (`launcher.local.commands`,
no eval), the actor under `tracemalloc` (`--frames` deep; 0 for none). From `--warmup_s` on,
every `--snapshot_every_s` the actor writes:
- its RSS and the anonymous memory of `/proc/self/smaps_rollup`;
- with tracemalloc, the Python heap it traces, in total, and the allocation sites
  (tracebacks) that grew most since the warm-up snapshot.

That separates growth in Python objects (tracemalloc's total follows RSS) from native growth
(RSS grows, tracemalloc's total does not), and names the Python sites. tracemalloc slows the
actor (about 2x) and adds its own memory: compare RSS slopes with `--frames=0`. The arm
`without` runs the actor without `common/eager_tensors.py` (the hook replaces its `install`),
`fix` as every role runs; each arm reports its RSS slope after the warm-up (least squares).
"""

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time

import numpy as np

from bench import harness
from launcher import local
from launcher import processes

_ENV_STEPS = re.compile(r'env_steps=(\d+) env_steps/s')

_HOOK = r'''
import os, sys, threading, time, tracemalloc, json, runpy
_out, _warmup, _every, _top, _fix = (sys.argv[1], float(sys.argv[2]), float(sys.argv[3]),
                                     int(sys.argv[4]), sys.argv[5] == 'fix')
del sys.argv[1:6]
sys.path.insert(0, os.getcwd())  # The repository (the actor's working directory), as -m has it.
if not _fix:  # The arm without the fix: the role's own install() does nothing.
  import common
  from common import eager_tensors
  eager_tensors.install = lambda: False

def _mem():
  fields = {}
  with open('/proc/self/smaps_rollup') as f:
    for line in f:
      parts = line.split()
      if len(parts) >= 2 and parts[0].endswith(':') and parts[1].isdigit():
        fields[parts[0][:-1]] = int(parts[1]) * 1024
  return fields

def _watch():
  time.sleep(_warmup)
  tracing = tracemalloc.is_tracing()
  base = tracemalloc.take_snapshot() if tracing else None
  start = time.time()
  while True:
    mem = _mem()
    record = dict(t=round(time.time() - start, 1), rss=mem.get('Rss'),
                  anonymous=mem.get('Anonymous'))
    if tracing and record['t'] > 0:
      snap = tracemalloc.take_snapshot()
      stats = snap.compare_to(base, 'traceback')
      record.update(traced=tracemalloc.get_traced_memory()[0],
                    overhead=tracemalloc.get_tracemalloc_memory(),
                    top=[dict(size_diff=s.size_diff, count_diff=s.count_diff,
                              where=[f'{fr.filename}:{fr.lineno}' for fr in s.traceback][-8:])
                         for s in stats[:_top]])
      del snap, stats
    with open(_out, 'a') as f:
      f.write(json.dumps(record) + '\n')
    time.sleep(_every)

threading.Thread(target=_watch, daemon=True).start()
runpy.run_module('actor.main', run_name='__main__', alter_sys=True)
'''


def _slope_mib_per_hour(rows) -> float:
  """Least-squares RSS slope over the snapshots, MiB per hour."""
  if len(rows) < 2:
    return float('nan')
  t = np.array([r['t'] for r in rows])
  rss = np.array([r['rss'] for r in rows]) / 2**20
  return float(np.polyfit(t, rss, 1)[0] * 3600)


def run_arm(args, fix: bool) -> dict:
  """One fleet (replay server, learner, one actor) for `--duration_s`; the actor's records."""
  root = tempfile.mkdtemp(prefix='actor_memory_')
  port = harness.free_port()
  children = [c for c in local.commands([args.gin_file], args.gin_binding, root, port,
                                        num_actors=1) if c[0] != 'eval']
  records = os.path.join(root, 'actor_memory.jsonl')
  hook = os.path.join(root, 'actor_hook.py')
  with open(hook, 'w') as f:
    f.write(_HOOK)
  procs = []
  for name, argv in children:
    if name.startswith('actor'):
      module = argv.index('actor.main')
      tracing = [f'-Xtracemalloc={args.frames}'] if args.frames else []
      argv = ([argv[0], *tracing, hook, records, str(args.warmup_s),
               str(args.snapshot_every_s), str(args.top), 'fix' if fix else 'without']
              + argv[module + 1:])
    procs.append(processes.Process(argv, name,
                                   log_path=os.path.join(root, name.replace('/', '_') + '.log')))
  harness.log(f'actor_memory: {"with" if fix else "without"} the fix; run directory {root}')
  start = time.monotonic()
  try:
    while time.monotonic() - start < args.duration_s:
      for p in procs:
        if p.poll() is not None:
          sys.exit(f'[actor_memory] {p.name} exited with {p.poll()}; see {root}')
      time.sleep(5)
  finally:
    for p in reversed(procs):
      p.stop()
  rows = []
  if os.path.exists(records):
    with open(records) as f:
      rows = [json.loads(line) for line in f]
  with open(os.path.join(root, 'actor_0.log'), errors='replace') as f:
    env_steps = [int(n) for n in _ENV_STEPS.findall(f.read())]
  for row in rows:
    line = f"t={row['t']:7.0f}s rss={row['rss'] / 2**20:7.1f} MiB"
    if 'traced' in row:
      line += (f" traced={row['traced'] / 2**20:6.1f} MiB "
               f"tracemalloc's own={row['overhead'] / 2**20:6.1f} MiB")
    print(line, flush=True)
  if rows and rows[-1].get('top'):
    print('grew most since the warm-up snapshot:')
    for entry in rows[-1]['top'][:8]:
      print(f"  {entry['size_diff'] / 2**10:9.1f} KiB {entry['count_diff']:+7d} "
            f"{' <- '.join(reversed(entry['where'][-3:]))}")
  slope = _slope_mib_per_hour(rows)
  steps = env_steps[-1] if env_steps else 0
  harness.log(f'actor_memory: {"with" if fix else "without"} the fix: RSS {slope:+.1f} MiB/h '
              f'after the warm-up, {steps} env steps in {args.duration_s:.0f} s')
  return dict(fix=fix, rss_mib_per_hour=slope, env_steps=steps, snapshots=rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--gin_file', default='gin/dqn_cartpole.gin')
  parser.add_argument('--gin_binding', action='append', default=[])
  parser.add_argument('--duration_s', type=float, default=1800, help='per arm')
  parser.add_argument('--warmup_s', type=float, default=180)
  parser.add_argument('--snapshot_every_s', type=float, default=300)
  parser.add_argument('--frames', type=int, default=12,
                      help='tracemalloc\'s traceback depth; 0: no tracemalloc, RSS only')
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--arms', default='fix',
                      help='comma-separated, run in this order: fix (as the roles run), '
                           'without (common/eager_tensors.py not installed)')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  signal.signal(signal.SIGTERM, lambda *_: sys.exit('[actor_memory] stopped (SIGTERM)'))
  results = [run_arm(args, arm == 'fix') for arm in args.arms.split(',')]
  if args.out:
    harness.write_results(args.out, 'bench.actor_memory', None, results)


if __name__ == '__main__':
  main()
