"""A weight pull, the way the actors do it against the way it was done through tf.data.

  python -m bench.pull_bench [--task=dqn_cartpole] [--pulls=500] [--rounds=3]

A replay server with the task's tables runs in a process of its own
(`harness.MeasuredServer`), and the task's freshly initialized weights are pushed once. Then,
alternating, `--rounds` rounds of `--pulls` pulls each:
- `client`: `VariableClient.pull` (the Python client's sampler on a reader thread; what
  actors and eval use);
- `tf.data`: the same item read through a `reverb.TimestepDataset(...).take(1)`, iterated once
  per pull (a new iterator each time, as before), then verified and assigned the same way.

Prints ms per pull for each, and the record: ours, with tf.data's as `stock`. Both verify the signature and assign every
variable.
"""

import argparse
import statistics
import time

from bench import harness


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--task', default='dqn_cartpole')
  parser.add_argument('--pulls', type=int, default=500)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default=None, help='JSON results path.')
  args = parser.parse_args(argv)
  harness.load_task(args.task)
  # pylint: disable=g-import-not-at-top
  import reverb
  import tensorflow as tf
  from common import builders
  from common import constants
  from common import session as session_lib
  from common import variables as variables_lib
  from common.config import ReplayConfig

  gin_file = harness.GIN[args.task]
  signer = harness.bench_signer()
  built = builders.build(ReplayConfig())
  flat = tf.nest.flatten(built.variables)
  with harness.MeasuredServer(gin_file) as server:
    client = variables_lib.VariableClient(session_lib.unchecked(server.address),
                                          built.variables, signer)
    client.push()
    signature = next(i for i, v in enumerate(flat)
                     if v is built.variables[constants.SIGNATURE_KEY])
    dataset = reverb.TimestepDataset(
        server_address=server.address, table=constants.VARIABLE_TABLE,
        dtypes=tuple(v.dtype for v in flat), shapes=tuple(v.shape for v in flat),
        max_in_flight_samples_per_worker=1, rate_limiter_timeout_ms=2000).take(1)

    def through_dataset():
      for sample in dataset:
        values = [tensor.numpy() for tensor in sample.data]
        assert signer.verify([v for i, v in enumerate(values) if i != signature],
                             values[signature])
        for variable, value in zip(flat, values):
          variable.assign(value)

    def through_client():
      assert client.pull() is not None

    arms = {'client': through_client, 'tf.data': through_dataset}
    for pull in arms.values():  # Warm-up: first traces and connections.
      for _ in range(20):
        pull()
    times = {name: [] for name in arms}
    for _ in range(args.rounds):
      for name, pull in arms.items():
        start = time.perf_counter()
        for _ in range(args.pulls):
          pull()
        times[name].append((time.perf_counter() - start) / args.pulls * 1e3)
  for name, values in times.items():
    harness.log(f'{name}: {statistics.median(values):.2f} ms per pull (rounds: '
                f'{", ".join(f"{v:.2f}" for v in values)})')
  record = harness.emit(harness.make_record(
      'weight pull', statistics.median(times['client']), 'ms', args.task,
      stock=statistics.median(times['tf.data']), versus='a tf.data iterator per pull',
      higher_is_better=False))
  if args.out:
    harness.write_results(args.out, 'bench.pull_bench', argv, [record])


if __name__ == '__main__':
  main()
