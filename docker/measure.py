r"""Measures a compose run: time from `up` to the first train steps, the actors' aggregate env
steps/s, and the time until eval reaches the target return (CartPole-v0: 195).

  BASE_IMAGE=reverb-fleet-base:py3.11-bookworm BUILD_NETWORK=host docker-compose build
  python3 docker/measure.py --actors=8 --budget_s=1200

It brings up its own compose project (the default experiment unless EXPERIMENT is set), polls
the learner's log and eval.csv every few seconds, prints one line per poll and a summary, and
always ends with `down -v`. The only binding it adds is LearnerConfig.log_interval = 10 (a log
line every 10 train steps, to time the first ones); nothing that changes the learning.
Stdlib only: run it with any Python 3.
"""

import argparse
import csv
import datetime
import io
import os
import re
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAIN_STEP = re.compile(r'^learner[-_]1\s+\|\s(\S+)\s.*learner: train_step=(\d+)')
_ACTOR_RATE = re.compile(r'^actor[-_](\d+)\s+\|\s\S+\s.*actor \d+: env_steps=\d+ env_steps/s=(\d+)')


def _compose(project, *args, timeout_s=600, check=True):
  result = subprocess.run(['docker-compose', '-p', project, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
  if check and result.returncode:
    raise RuntimeError(f'docker-compose {" ".join(args)}: {result.stderr[-2000:]}')
  return result.stdout


def _timestamp(text):
  """Seconds since the epoch of a Docker log timestamp (nanoseconds cut to microseconds)."""
  text = re.sub(r'(\.\d{6})\d*Z$', r'\1+00:00', text)
  return datetime.datetime.fromisoformat(text).timestamp()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--actors', type=int, default=8)
  parser.add_argument('--budget_s', type=float, default=1200.0)
  parser.add_argument('--target', type=float, default=195.0)
  parser.add_argument('--poll_s', type=float, default=10.0)
  args = parser.parse_args()

  project = f'rfmeasure{uuid.uuid4().hex[:6]}'
  os.environ.setdefault('GIN_BINDINGS', 'LearnerConfig.log_interval = 10')
  os.environ.setdefault('TENSORBOARD_PORT', '16007')
  start = time.time()
  print(f'[measure] {project}: up --scale actor={args.actors}, budget {args.budget_s:g} s',
        flush=True)
  first_step = reached = None
  rows = []
  try:
    _compose(project, 'up', '-d', '--no-build', '--scale', f'actor={args.actors}')
    print(f'[measure] up returned after {time.time() - start:.0f} s', flush=True)
    while time.time() - start < args.budget_s:
      time.sleep(args.poll_s)
      logs = _compose(project, 'logs', '--no-color', '-t', 'learner', 'actor', check=False)
      steps = [(_timestamp(m.group(1)), int(m.group(2)))
               for m in map(_TRAIN_STEP.match, logs.splitlines()) if m]
      if steps and first_step is None:
        first_step = steps[0]
      rates = {}
      for match in map(_ACTOR_RATE.match, logs.splitlines()):
        if match:
          rates[int(match.group(1))] = int(match.group(2))  # The latest line per actor.
      text = _compose(project, 'exec', '-T', 'eval', 'cat', '/data/eval/eval/eval.csv',
                      check=False)
      rows = list(csv.DictReader(io.StringIO(text))) if text.startswith('train_step') else []
      last = rows[-1] if rows else None
      print(f'[measure] t={time.time() - start:5.0f}s train_step={steps[-1][1] if steps else 0} '
            f'actors={len(rates)} sum(env_steps/s)={sum(rates.values())} '
            f'eval={last["average_return"] if last else "-"}', flush=True)
      hit = [r for r in rows if float(r['average_return']) >= args.target]
      if hit:
        reached = hit[0]
        break
  finally:
    _compose(project, 'down', '-v', timeout_s=900, check=False)

  print('[measure] summary')
  if first_step:
    print(f'  up -> train step {first_step[1]} logged: {first_step[0] - start:.0f} s')
  if len(rows) >= 2:
    t0, t1 = float(rows[0]['timestamp']), float(rows[-1]['timestamp'])
    n0, n1 = int(rows[0]['env_steps']), int(rows[-1]['env_steps'])
    if t1 > t0:
      print(f'  aggregate env steps/s (replay inserts between the first and last eval): '
            f'{(n1 - n0) / (t1 - t0):.0f} over {t1 - t0:.0f} s')
  if reached:
    print(f'  eval return {float(reached["average_return"]):.1f} >= {args.target:g} at train '
          f'step {reached["train_step"]}, {reached["env_steps"]} env steps, '
          f'{float(reached["timestamp"]) - start:.0f} s after up')
  else:
    best = max((float(r['average_return']) for r in rows), default=None)
    print(f'  eval return {args.target:g} not reached within {args.budget_s:g} s '
          f'(best {best})')
  return 0 if reached else 1


if __name__ == '__main__':
  sys.exit(main())
