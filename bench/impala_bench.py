"""IMPALA's learner step on Pong-shaped batches: the shared torso run once against twice.

`gin/impala_pong.gin` shares the Nature torso between the policy and the baseline heads. Calling
the two networks would run the torso twice per train step (forward and backward);
`networks.policy_and_value` runs it once. Both agents are built from the same gin file and
trained on the same synthetic batches (LearnerConfig.batch_size items of unroll_length + 1
uint8 84x84x4 steps), one `tf.function` train step at a time, in alternating rounds; the
figure is the median of the rounds' train steps/s, and samples/s counts the transitions
(batch x unroll_length) a step trains on.

  python -m bench.impala_bench [--rounds=5] [--steps=10] [--gin_file=gin/impala_pong.gin]
"""

import argparse
import os
import statistics
import time
from unittest import mock

from bench import harness


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--gin_file', default='gin/impala_pong.gin')
  args = parser.parse_args(argv)
  harness.load_task_file(args.gin_file)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from common import builders  # pylint: disable=g-import-not-at-top
  from common.agents import networks  # pylint: disable=g-import-not-at-top
  from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
  from common.config import ReplayConfig  # pylint: disable=g-import-not-at-top

  batch_size = LearnerConfig().batch_size
  built = builders.build(ReplayConfig())
  length = built.specs.sequence_length
  steps = harness.synthetic_steps(built.specs.collect_data_spec, batch_size * length)
  batch = tf.nest.map_structure(
      lambda x: tf.constant(np.reshape(x, (batch_size, length) + x.shape[1:])), steps)
  once = tf.function(built.agent.train, autograph=False)
  twice_agent = builders.build(ReplayConfig()).agent

  def two_calls(actor_net, value_net, observation, step_type, training=False):
    distribution, _ = actor_net(observation, step_type=step_type, network_state=(),
                                training=training)
    values, _ = value_net(observation, step_type=step_type, network_state=(), training=training)
    return distribution, values

  with mock.patch.object(networks, 'policy_and_value', two_calls):
    twice = tf.function(twice_agent.train, autograph=False)
    twice.get_concrete_function(batch)  # Traced with the two calls.
  once.get_concrete_function(batch)

  def rate(train):
    train(batch)
    start = time.perf_counter()
    for _ in range(args.steps):
      loss = train(batch).loss
    float(loss)
    return args.steps / (time.perf_counter() - start)

  rates = {'once': [], 'twice': []}
  for round_ in range(args.rounds):
    for name, train in (('once', once), ('twice', twice)):
      rates[name].append(rate(train))
      harness.log(f'round {round_}: torso {name}: {rates[name][-1]:.2f} train steps/s')
  task = os.path.splitext(os.path.basename(args.gin_file))[0]
  transitions = batch_size * (length - 1)
  records = [harness.emit(harness.make_record(
      'IMPALA learner train steps/s, shared torso run once vs twice',
      statistics.median(rates['once']), 'train steps/s', task,
      stock=statistics.median(rates['twice']), versus='the two networks called apart',
      samples_per_s=statistics.median(rates['once']) * transitions,
      samples_per_s_twice=statistics.median(rates['twice']) * transitions,
      batch=batch_size, unroll=length - 1, rounds=rates))]
  out = os.path.join('bench', 'results', f'{time.strftime("%Y-%m-%d")}-impala-learner.json')
  harness.write_results(out, 'bench.impala_bench', argv, records)
  harness.log(f'wrote {out}')


if __name__ == '__main__':
  main()
