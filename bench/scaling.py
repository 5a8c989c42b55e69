"""Scaling: total env steps/s of 1, 2, 4 and 8 actor processes against one replay server.

The actors (`python -m actor.main`, learned policy: the weights are pushed once) are added to
the running ones, 1 -> 2 -> 4 -> 8, and the total insert rate at the server is measured once
all of them collect. The record states the machine's core count: once actors outnumber the
cores (the server needs some too), the total stops growing.

  python -m bench.scaling [--task=dqn_cartpole_fast] [--counts=1,2,4,8] [--window_s=4]
"""

import argparse
import os
import tempfile

from bench import harness

BINDINGS = ('ActorConfig.log_interval_s = 2.0',
            'ReplayConfig.samples_per_insert = None')  # No learner here to sample.


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--task', default='dqn_cartpole_fast')
  parser.add_argument('--counts', default='1,2,4,8')
  parser.add_argument('--window_s', type=float, default=4.0)
  parser.add_argument('--startup_timeout_s', type=float, default=240.0)
  args = parser.parse_args(argv)
  harness.load_task(args.task, BINDINGS)
  from common.config import ActorConfig  # pylint: disable=g-import-not-at-top
  num_envs = ActorConfig().num_envs
  root = tempfile.mkdtemp(prefix='bench_scaling_')
  server = harness.ReplayServer()
  server.push_weights()
  actors = []
  rates = {}
  try:
    for count in [int(c) for c in args.counts.split(',')]:
      while len(actors) < count:
        task = len(actors)
        actors.append(harness.Child('actor.main', [
            f'--gin_file={harness.GIN[args.task]}', f'--replay_server_address={server.address}',
            f'--root_dir={root}', f'--task={task}'] + [f'--gin_bindings={b}' for b in BINDINGS],
            os.path.join(root, f'actor{task}.log')))
      for actor in actors:
        actor.wait_line('first weights arrived', args.startup_timeout_s)
      harness.rate(server.inserted, 1.0)
      rates[count] = harness.rate(server.inserted, args.window_s)
      harness.log(f'scaling: {count} actor(s) -> {rates[count]:.0f} env steps/s')
  finally:
    harness.stop_all(actors)
    server.stop()
  base = rates[min(rates)]
  for count, value in rates.items():
    harness.emit(harness.make_record(
        f'scaling: total env steps/s, {count} actor(s)', value, 'env steps/s', args.task,
        stock=base, versus=f'{min(rates)} actor', cores=os.cpu_count(), num_envs=num_envs,
        window_s=args.window_s))


if __name__ == '__main__':
  main()
