"""Where a long-lived collect actor's memory goes: a heap profile beside a live fleet.

  python -m bench.actor_memory [--gin_file=gin/dqn_cartpole.gin] [--duration_s=1800]
      [--snapshot_every_s=300] [--out=bench/results/DATE-vm-actor-memory.json]

Starts a replay server, a learner and one collect actor (`launcher.local.commands`, no eval),
the actor under `tracemalloc` (`--frames` deep). From `--warmup_s` on, every
`--snapshot_every_s` the actor writes:
- its RSS and the anonymous memory of `/proc/self/smaps_rollup`;
- the Python heap that tracemalloc traces, in total;
- the allocation sites (tracebacks) that grew most since the warm-up snapshot.

That separates growth in Python objects (tracemalloc's total follows RSS) from native growth
(RSS grows, tracemalloc's total does not), and names the Python sites. tracemalloc slows the
actor (about 2x); the growth per env step is what to compare, not the rate.
"""

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time

from bench import harness
from launcher import local
from launcher import processes

_ENV_STEPS = re.compile(r'env_steps=(\d+) env_steps/s')

_HOOK = r'''
import os, sys, threading, time, tracemalloc, json, runpy
_out, _warmup, _every, _top = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
del sys.argv[1:5]

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
  base = tracemalloc.take_snapshot()
  start = time.time()
  while True:
    time.sleep(_every)
    snap = tracemalloc.take_snapshot()
    stats = snap.compare_to(base, 'traceback')
    mem = _mem()
    record = dict(t=round(time.time() - start, 1), rss=mem.get('Rss'),
                  anonymous=mem.get('Anonymous'),
                  traced=tracemalloc.get_traced_memory()[0],
                  overhead=tracemalloc.get_tracemalloc_memory(),
                  top=[dict(size_diff=s.size_diff, count_diff=s.count_diff,
                            where=[f'{fr.filename}:{fr.lineno}' for fr in s.traceback][-8:])
                       for s in stats[:_top]])
    with open(_out, 'a') as f:
      f.write(json.dumps(record) + '\n')
    del snap, stats

threading.Thread(target=_watch, daemon=True).start()
runpy.run_module('actor.main', run_name='__main__', alter_sys=True)
'''


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--gin_file', default='gin/dqn_cartpole.gin')
  parser.add_argument('--gin_binding', action='append', default=[])
  parser.add_argument('--duration_s', type=float, default=1800)
  parser.add_argument('--warmup_s', type=float, default=180)
  parser.add_argument('--snapshot_every_s', type=float, default=300)
  parser.add_argument('--frames', type=int, default=12)
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--out', default='')
  args = parser.parse_args()

  root = tempfile.mkdtemp(prefix='actor_memory_')
  port = harness.free_port()
  children = [c for c in local.commands([args.gin_file], args.gin_binding, root, port,
                                        num_actors=1) if c[0] != 'eval']
  records = os.path.join(root, 'actor_memory.jsonl')
  procs = []
  for name, argv in children:
    if name.startswith('actor'):
      hook = os.path.join(root, 'actor_hook.py')
      with open(hook, 'w') as f:
        f.write(_HOOK)
      module = argv.index('actor.main')
      argv = ([argv[0], f'-Xtracemalloc={args.frames}', hook, records, str(args.warmup_s),
               str(args.snapshot_every_s), str(args.top)] + argv[module + 1:])
    procs.append(processes.Process(argv, name,
                                   log_path=os.path.join(root, name.replace('/', '_') + '.log')))
  print(f'[actor_memory] run directory {root}; records in {records}', flush=True)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit('[actor_memory] stopped (SIGTERM)'))
  deadline = time.monotonic() + args.duration_s
  try:
    while time.monotonic() < deadline:
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
    print(f"t={row['t']:7.0f}s rss={row['rss'] / 2**20:7.1f} MiB "
          f"anonymous={row['anonymous'] / 2**20:7.1f} MiB traced={row['traced'] / 2**20:6.1f} MiB "
          f"tracemalloc's own={row['overhead'] / 2**20:6.1f} MiB")
  if rows:
    print('grew most since the warm-up snapshot:')
    for entry in rows[-1]['top'][:8]:
      print(f"  {entry['size_diff'] / 2**10:9.1f} KiB {entry['count_diff']:+7d} "
            f"{' <- '.join(reversed(entry['where'][-3:]))}")
  if args.out:
    harness.write_results(args.out, 'bench.actor_memory', None,
                          [dict(env_steps=env_steps[-1] if env_steps else 0, snapshots=rows)])


if __name__ == '__main__':
  main()
