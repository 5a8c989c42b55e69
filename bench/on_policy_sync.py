"""The synchronous cost of distributed PPO: how much of the wall-clock time the learner waits for
data and the actors wait for the learner, at each allowed policy lag.

For each `--lags` value L, one local run (`python -m launcher.main`, replay server, actors,
learner and eval as processes) of `--gin_file` with `ppo_agent.max_policy_lag = L`, until
`--max_train_steps`. Read from the roles' own stop lines:
  learner   items trained on, items dropped as stale, and the shares of its time spent waiting
            for items (`data_wait`) and in PPOLearner's epochs (`epochs`);
  actors    the share of each actor's time spent waiting for the queue to take its items,
            i.e. for the learner to take a batch (`queue_wait`);
and the run's wall-clock time, train steps/s, and the learner's samples per second (env steps
through its train steps: items x steps per item x epochs, per second of its loop and per second
of its epochs). Lag 0 is strictly on-policy: whatever the
actors collect while the learner trains is stale by the time it is read, so the learner waits
for a whole fresh batch each iteration. Lag 1 lets the actors collect into the next iteration.

  python -m bench.on_policy_sync [--gin_file=gin/ppo_cartpole.gin] [--lags=0,1]
      [--num_actors=1] [--max_train_steps=2400] [--out=FILE.json]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import gin

from bench import harness
from common import gin_config

_LEARNER = re.compile(r'on-policy: (\d+) items trained on, (\d+) dropped as stale; of ([\d.]+) s, '
                      r'data_wait=([\d.]+)% epochs=([\d.]+)%')
_ACTOR = re.compile(r'after (\d+) env steps \(waited ([\d.]+)% of its time for the queue')


def run_once(gin_file: str, lag: int, num_actors: int, max_train_steps: int) -> dict:
  """One local run at `max_policy_lag = lag`; returns its figures."""
  root = tempfile.mkdtemp(prefix=f'ppo-sync-{lag}-')
  command = [sys.executable, '-m', 'launcher.main', f'--gin_file={gin_file}',
             f'--num_actors={num_actors}', f'--max_train_steps={max_train_steps}',
             f'--root_dir={root}', f'--gin_bindings=ppo_agent.max_policy_lag = {lag}',
             '--gin_bindings=EvalConfig.target_return = None']
  start = time.monotonic()
  done = subprocess.run(command, cwd=harness.REPO, capture_output=True, text=True,
                        timeout=3600)
  wall = time.monotonic() - start
  output = done.stdout + done.stderr
  learner = _LEARNER.search(output)
  actors = _ACTOR.findall(output)
  if done.returncode != 0 or not learner or not actors:
    raise RuntimeError(f'run at lag {lag} failed (exit {done.returncode}):\n{output[-3000:]}')
  items, dropped, learner_s, data_wait, epochs = learner.groups()
  return {
      'max_policy_lag': lag, 'wall_s': round(wall, 1), 'learner_s': float(learner_s),
      'train_steps': max_train_steps,
      'train_steps_per_s': round(max_train_steps / float(learner_s), 1),
      'items_trained': int(items), 'items_dropped': int(dropped),
      'learner_data_wait_pct': float(data_wait), 'learner_epochs_pct': float(epochs),
      'actor_queue_wait_pct': [float(w) for _, w in actors],
      'actor_env_steps': [int(s) for s, _ in actors],
      'root_dir': root,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--gin_file', default='gin/ppo_cartpole.gin')
  parser.add_argument('--lags', default='0,1')
  parser.add_argument('--num_actors', type=int, default=1)
  parser.add_argument('--max_train_steps', type=int, default=2400)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  gin_config.load_gin([args.gin_file])
  steps_per_item = gin.query_parameter('ppo_agent.collect_sequence_length')
  epochs = gin.query_parameter('ppo_agent.num_epochs')
  results = []
  for lag in [int(x) for x in args.lags.split(',')]:
    result = run_once(args.gin_file, lag, args.num_actors, args.max_train_steps)
    # Env steps through the train steps, per second of the learner's loop and of its epochs.
    samples = result['items_trained'] * steps_per_item * epochs
    result['learner_samples_per_s'] = round(samples / result['learner_s'])
    result['epoch_samples_per_s'] = round(
        samples / (result['learner_s'] * result['learner_epochs_pct'] / 100))
    harness.log(json.dumps(result))
    results.append(result)
    harness.emit(harness.make_record(
        f'learner data wait, max_policy_lag={lag}', result['learner_data_wait_pct'], '% of time',
        os.path.basename(args.gin_file), higher_is_better=False))
    harness.emit(harness.make_record(
        f'PPO learner samples/s, max_policy_lag={lag}', result['learner_samples_per_s'],
        'samples/s', os.path.basename(args.gin_file),
        epoch_samples_per_s=result['epoch_samples_per_s']))
    harness.emit(harness.make_record(
        f'actor queue wait, max_policy_lag={lag}',
        statistics.mean(result['actor_queue_wait_pct']), '% of time',
        os.path.basename(args.gin_file), higher_is_better=False))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'command': 'python -m bench.on_policy_sync ' + ' '.join(argv or sys.argv[1:]),
                 'date': time.strftime('%Y-%m-%d'), 'machine': harness.machine(),
                 'runs': results}, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
