"""Replay: inserts/s and samples/s at the real item size of each task.

Per task, against an in-process replay server with the task's tables, from one client thread:

  inserts  2-step items (stride 1) of synthetic steps with the task's signature, written by our
           `BatchedTrajectoryObserver` (one environment) and by TF-Agents'
           `ReverbAddTrajectoryObserver` (stock), with an episode end every 200 steps.
  samples  items/s through the learner's dataset (`learner.dataset.make_dataset`, the task's
           batch size).

  python -m bench.replay_bench [--tasks=dqn_cartpole,sac_halfcheetah] [--window_s=3]
"""

import argparse
import time

from bench import harness

EPISODE = 200  # Steps per synthetic episode.


def _insert_rate(write_step, window_s: float) -> float:
  steps, start = 0, time.monotonic()
  while True:
    for _ in range(50):
      write_step(steps)
      steps += 1
    elapsed = time.monotonic() - start
    if elapsed >= window_s:
      return steps / elapsed


def bench_task(task: str, window_s: float):
  harness.load_task(task, ['ReplayConfig.min_size = 1000'])
  import numpy as np  # pylint: disable=g-import-not-at-top
  import reverb  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.replay_buffers import reverb_utils  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  from actor import writer as writer_lib  # pylint: disable=g-import-not-at-top
  from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
  from learner import dataset as learner_dataset  # pylint: disable=g-import-not-at-top
  server = harness.ReplayServer()
  try:
    spec = server.specs.collect_data_spec
    steps = harness.synthetic_steps(spec, EPISODE)
    last = np.full((EPISODE,), 1, np.int32)
    last[-1] = 2  # The episode's final step is a boundary (LAST -> FIRST).
    steps = steps._replace(step_type=last)
    item_bytes = sum(x[0].nbytes for x in tf.nest.flatten(steps)) * 2
    rows = [tf.nest.map_structure(lambda x, i=i: x[i], steps) for i in range(EPISODE)]
    flat_rows = [[np.asarray(x)[np.newaxis] for x in tf.nest.flatten(r)] for r in rows]
    boundary = [np.array([r.step_type == 2]) for r in rows]
    client = reverb.Client(server.address)

    stock = reverb_utils.ReverbAddTrajectoryObserver(client, constants.REPLAY_TABLE,
                                                     sequence_length=2, stride_length=1)
    ours = writer_lib.BatchedTrajectoryObserver(client, 1, 2, step_spec=spec)
    rates = {}
    for name, write in (('stock', lambda i: stock(rows[i % EPISODE])),
                        ('ours', lambda i: ours.write(flat_rows[i % EPISODE],
                                                      boundary[i % EPISODE]))):
      _insert_rate(write, 0.5)
      rates[name] = _insert_rate(write, window_s)
    stock.flush()
    ours.flush()
    config = LearnerConfig()
    dataset = learner_dataset.make_dataset(server.address, spec, config.batch_size, 2, 5000)
    iterator = iter(dataset)
    for _ in range(3):
      next(iterator)
    batches, start = 0, time.monotonic()
    while time.monotonic() - start < window_s:
      next(iterator)
      batches += 1
    samples = batches * config.batch_size / (time.monotonic() - start)
    stock.close()
    ours.close()
  finally:
    server.stop()
  detail = dict(item_bytes=item_bytes, window_s=window_s)
  harness.emit(harness.make_record('replay inserts/s (2-step items, 1 writer)', rates['ours'],
                                   'items/s', task, stock=rates['stock'],
                                   versus='ReverbAddTrajectoryObserver', **detail))
  harness.emit(harness.make_record('replay samples/s (learner dataset)', samples, 'items/s',
                                   task, batch_size=config.batch_size, **detail))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tasks', default='dqn_cartpole,sac_halfcheetah')
  parser.add_argument('--window_s', type=float, default=3.0)
  args = parser.parse_args(argv)
  for task in args.tasks.split(','):
    bench_task(task, args.window_s)


if __name__ == '__main__':
  main()
