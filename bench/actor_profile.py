"""Where an actor's time goes: py-spy on `python -m actor.main` with the learned policy.

Starts an in-process replay server with the task's tables, pushes freshly initialized weights
(as the learner's first push does), starts our actor against it, waits for its first weights,
then samples it with py-spy for `--seconds` and splits the samples inside the collect loop
(`Collector.run`) by what they were doing: stepping the environments (their resets apart),
policy inference, replay writes, metrics, and the loop itself. Prints one line per part and
the actor's env steps/s during the profile. Needs the bench extra (`pip install -e '.[bench]'`,
which pins py-spy); py-spy needs ptrace permission (root, or a container with SYS_PTRACE).

  python -m bench.actor_profile --task=sac_halfcheetah [--seconds=15] [--raw_out=/tmp/p.txt]
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import actor_bench
from bench import harness

_LOOP = 'run (actor/collect.py'


def classify(raw_profile: str) -> collections.Counter:
  """Samples per part of the collect loop, from py-spy's `-f raw` output (stack;... count)."""
  parts = collections.Counter()
  for line in raw_profile.splitlines():
    stack, _, count = line.rstrip().rpartition(' ')
    if _LOOP not in stack or not count.isdigit():
      continue
    frames = stack.split(';')
    inner = ';'.join(frames[max(i for i, f in enumerate(frames) if _LOOP in f) + 1:])
    if 'vector_env.py' in inner:
      part = 'environment resets' if '_reset_slot' in inner else 'environment steps'
    elif 'inference.py' in inner or 'numpy_policy.py' in inner:
      part = 'policy inference'
    elif 'replay.py' in inner:
      part = 'replay writes'
    elif 'update (actor/collect.py' in inner:
      part = 'metrics'
    else:
      part = 'loop and trajectory'
    parts[part] += int(count)
  return parts


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--task', default='sac_halfcheetah', choices=sorted(harness.GIN))
  parser.add_argument('--seconds', type=int, default=15)
  parser.add_argument('--rate_hz', type=int, default=100)
  parser.add_argument('--raw_out', default='', help='Also keep py-spy\'s raw output here.')
  parser.add_argument('--startup_timeout_s', type=float, default=180.0)
  args = parser.parse_args(argv)
  py_spy = shutil.which('py-spy', path=os.path.dirname(sys.executable)) or shutil.which('py-spy')
  if not py_spy:
    raise SystemExit("error: py-spy not found: pip install -e '.[bench]'")
  harness.load_task(args.task, actor_bench.BINDINGS)
  root = tempfile.mkdtemp(prefix=f'bench_profile_{args.task}_')
  raw_out = args.raw_out or os.path.join(root, 'profile.txt')
  server = harness.ReplayServer()
  actor = None
  try:
    server.push_weights()
    actor = harness.Child('actor.main', actor_bench._gin_args(args.task) + [  # pylint: disable=protected-access
        f'--replay_server_address={server.address}', f'--root_dir={root}/actor', '--task=0'],
        os.path.join(root, 'actor.log'))
    actor.wait_line('first weights arrived', args.startup_timeout_s)
    harness.rate(server.inserted, 2.0)  # Past the policy's first traces.
    before, start = server.inserted(), time.monotonic()
    subprocess.run([py_spy, 'record', '-r', str(args.rate_hz), '-f', 'raw', '-d',
                    str(args.seconds), '-p', str(actor.pid), '-o', raw_out],
                   check=True, capture_output=True, timeout=args.seconds + 120)
    rate = (server.inserted() - before) / (time.monotonic() - start)
  finally:
    if actor is not None:
      actor.stop()
    server.stop()
  with open(raw_out) as f:
    parts = classify(f.read())
  total = sum(parts.values())
  if not total:
    raise SystemExit(f'error: no samples inside the collect loop; see {raw_out}')
  harness.log(f'{args.task}: {rate:.0f} env steps/s (items/s) during the profile; '
              f'{total} samples in the collect loop; raw profile {raw_out}')
  for part, count in parts.most_common():
    print(f'  {part:22s} {100 * count / total:5.1f}%')


if __name__ == '__main__':
  main()
