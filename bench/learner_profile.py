"""Where a learner's time goes: the train step alone, the dataset alone, and both together.

From a filled table (synthetic items of the task's signature), in one process:

  compute   `agent.train` in a tf.function on one fixed batch: the math, nothing else;
  dataset   batches/s out of the learner's prefetching dataset, with no training;
  together  the learner's own loop (CompiledLearner, iterations_per_call) on that dataset.

If `together` is close to `compute`, the train step's math bounds the learner, and a faster
loop or input pipeline cannot help; the figure to beat is then `compute` itself.

  python -m bench.learner_profile [--task=sac_halfcheetah] [--window_s=5]
"""

import argparse
import tempfile
import time

from bench import harness
from bench import learner_bench


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--task', default='sac_halfcheetah')
  parser.add_argument('--window_s', type=float, default=5.0)
  args = parser.parse_args(argv)
  harness.load_task(args.task, ['ReplayConfig.min_size = 1000'])
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.train.utils import train_utils  # pylint: disable=g-import-not-at-top
  from common import builders  # pylint: disable=g-import-not-at-top
  from learner import dataset as learner_dataset  # pylint: disable=g-import-not-at-top
  from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
  config = LearnerConfig()
  server = harness.ReplayServer()
  try:
    harness.write_items(server.address, server.specs.collect_data_spec, 3000, 2)
    train_step = train_utils.create_train_step()
    agent, specs = builders.make_agent_and_specs(server.replay_config, train_step)
    dataset = learner_dataset.make_dataset(server.address, specs.collect_data_spec,
                                           config.batch_size, 2, 5000)
    iterator = iter(dataset)
    experience, _ = next(iterator)
    train = tf.function(agent.train)
    train(experience)

    def rate(call):
      call()
      n, start = 0, time.monotonic()
      while time.monotonic() - start < args.window_s:
        call()
        n += 1
      return n / (time.monotonic() - start)

    compute = rate(lambda: train(experience).loss.numpy())
    data = rate(lambda: next(iterator))
    call, n = learner_bench._our_learner(  # pylint: disable=protected-access
        server, config, tempfile.mkdtemp(), config.use_xla)
    together = rate(call) * n
  finally:
    server.stop()
  for name, value in (('compute', compute), ('dataset', data), ('together', together)):
    harness.emit(harness.make_record(f'learner profile: {name}', value,
                                     'train steps/s' if name != 'dataset' else 'batches/s',
                                     args.task, batch_size=config.batch_size,
                                     window_s=args.window_s))


if __name__ == '__main__':
  main()
