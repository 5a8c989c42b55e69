"""How far one replay server goes: M concurrent writers and the learner's sampler at once.

Per item layout (DQN CartPole and SAC HalfCheetah from their gin files, and an Atari item: an
84x84x4 uint8 observation with a discrete action), one real Reverb server runs in a process of
its own with a uniform FIFO table of that signature. M writers (M = 1, 4, 16, 64 by default;
threads spread over up to 4 writer processes) insert 2-step items with stride 1, as actors do,
through the actor's own `actor.writer.BatchedTrajectoryObserver` (which keeps at most 32 items
unconfirmed); every `FLUSH_EVERY` steps a writer flushes, and the time from that step's write to
the server's confirmation of every item is the insert latency. At the same time one process
samples through the learner's dataset (`learner.dataset.make_dataset`, the task's batch).

Reported per task and M: inserts/s and samples/s (the server's own counters over the window),
insert latency p50 and p99. Then, per task, how many actors one server feeds: the best insert
rate over M divided by one actor's rate (`ACTOR_RATE`, measured by `bench.actor_bench`).

  python -m bench.replay_capacity [--tasks=dqn_cartpole,sac_halfcheetah,atari] \
      [--writers=1,4,16,64] [--window_s=8]
"""

import argparse
import multiprocessing
import threading
import time

from bench import harness

FLUSH_EVERY = 16
WRITER_PROCESSES = 4
BATCH = {'dqn_cartpole': 64, 'sac_halfcheetah': 256, 'atari': 32}
# Env steps/s of one actor beside the learner, each item one env step (bench/results/
# 2026-11-21-vm.json: actor_bench). Atari: ALE's raw rate on one core (about 9,300 frames/s)
# over a frame skip of 4, the most one single-core actor can step.
ACTOR_RATE = {'dqn_cartpole': 2248.0, 'sac_halfcheetah': 660.0, 'atari': 2325.0}


def collect_data_spec(task: str):
  """The trajectory spec of one env step of `task`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.specs import tensor_spec  # pylint: disable=g-import-not-at-top
  from tf_agents.trajectories import trajectory  # pylint: disable=g-import-not-at-top
  if task != 'atari':
    harness.load_task(task)
    from common import builders  # pylint: disable=g-import-not-at-top
    from common.config import ReplayConfig  # pylint: disable=g-import-not-at-top
    return builders.make_agent_and_specs(ReplayConfig())[1].collect_data_spec
  step_type = tensor_spec.TensorSpec((), tf.int32, 'step_type')
  return trajectory.Trajectory(
      step_type=step_type,
      observation=tensor_spec.BoundedTensorSpec((84, 84, 4), tf.uint8, 0, 255, 'observation'),
      action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 5, 'action'),
      policy_info=(), next_step_type=step_type,
      reward=tensor_spec.TensorSpec((), tf.float32, 'reward'),
      discount=tensor_spec.BoundedTensorSpec((), tf.float32, 0.0, 1.0, 'discount'))


def _serve(task: str, port: int, ready, stop) -> None:
  import reverb  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  from common import replay  # pylint: disable=g-import-not-at-top
  table = reverb.Table(name=constants.REPLAY_TABLE, sampler=reverb.selectors.Uniform(),
                       remover=reverb.selectors.Fifo(), max_size=20000,
                       rate_limiter=reverb.rate_limiters.MinSize(1),
                       signature=replay.replay_signature(collect_data_spec(task), 2))
  server = reverb.Server([table], port=port)
  ready.set()
  stop.wait()
  server.stop()


def _write(task: str, address: str, threads: int, seconds: float, results) -> None:
  """`threads` writers, each the actor's own `BatchedTrajectoryObserver` over one environment."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import reverb  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from actor import writer as writer_lib  # pylint: disable=g-import-not-at-top
  steps = harness.synthetic_steps(collect_data_spec(task), 64)
  flat_rows = [[np.asarray(x[i])[np.newaxis] for x in tf.nest.flatten(steps)]
               for i in range(64)]
  mid = np.array([False])
  client = reverb.Client(address)
  latencies, counts = [], []
  start_at = time.monotonic() + 1.0  # Every thread starts at once.

  def _one(seed):
    rng = np.random.default_rng(seed)
    observer = writer_lib.BatchedTrajectoryObserver(client, 1, 2)
    count, mine = 0, []
    time.sleep(max(start_at - time.monotonic(), 0))
    end = start_at + seconds
    while time.monotonic() < end:
      t0 = time.monotonic()
      observer.write(flat_rows[int(rng.integers(64))], mid)
      count += 1
      if count % FLUSH_EVERY == 0:
        observer.flush()
        mine.append(time.monotonic() - t0)
    observer.flush()
    observer.close()
    counts.append(count - 1)  # The first step of a writer makes no item.
    latencies.extend(mine)

  workers = [threading.Thread(target=_one, args=(i,)) for i in range(threads)]
  for w in workers:
    w.start()
  for w in workers:
    w.join()
  results.put((sum(counts), latencies))


def _sample(task: str, address: str, stop) -> None:
  """The learner's dataset, drawn as fast as it goes until `stop` (the server counts samples)."""
  from learner import dataset as learner_dataset  # pylint: disable=g-import-not-at-top
  iterator = iter(learner_dataset.make_dataset(address, collect_data_spec(task), BATCH[task], 2,
                                              60000))
  while not stop.is_set():
    next(iterator)


def _table(address: str):
  import reverb  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  info = reverb.Client(address).server_info(timeout=10)[constants.REPLAY_TABLE]
  return (int(info.rate_limiter_info.insert_stats.completed),
          int(info.rate_limiter_info.sample_stats.completed))


def bench_task(task: str, writer_counts, window_s: float):
  context = multiprocessing.get_context('spawn')
  port = harness.free_port()
  address = f'localhost:{port}'
  ready, stop, stop_sampler = context.Event(), context.Event(), context.Event()
  server = context.Process(target=_serve, args=(task, port, ready, stop), daemon=True)
  server.start()
  if not ready.wait(300):
    raise TimeoutError(f'{task}: the replay server did not start in 300 s')
  sampler = context.Process(target=_sample, args=(task, address, stop_sampler), daemon=True)
  best = 0.0
  try:
    for m in writer_counts:
      results = context.Queue()
      baseline = _table(address)[0]
      procs = min(m, WRITER_PROCESSES)
      writers = [context.Process(target=_write, args=(task, address, m // procs + (
          i < m % procs), window_s, results), daemon=True) for i in range(procs)]
      for w in writers:
        w.start()
      if not sampler.is_alive():
        sampler.start()
      # The window is the writers' own (they start together after their imports): read the
      # server's counters around it by waiting for the writers' results.
      inserts0 = samples0 = t0 = None
      gathered, latencies = 0, []
      deadline = time.monotonic() + 600
      while len(latencies) < procs and time.monotonic() < deadline:
        if t0 is None and _table(address)[0] > baseline:
          inserts0, samples0 = _table(address)
          t0 = time.monotonic()
        try:
          count, lat = results.get(timeout=0.2)
          gathered += count
          latencies.append(lat)
        except Exception:  # pylint: disable=broad-except  (queue.Empty: keep polling)
          continue
      inserts1, samples1 = _table(address)
      elapsed = time.monotonic() - t0
      for w in writers:
        w.join(timeout=30)
      flat = sorted(x for lat in latencies for x in lat)
      inserts = (inserts1 - inserts0) / elapsed
      samples = (samples1 - samples0) / elapsed
      best = max(best, gathered / window_s)
      pct = lambda q: 1000 * flat[min(int(q * len(flat)), len(flat) - 1)] if flat else float('nan')
      detail = dict(writers=m, writer_processes=procs, window_s=window_s, items=gathered,
                    latency_p50_ms=pct(0.5), latency_p99_ms=pct(0.99),
                    samples_per_s=samples, batch_size=BATCH[task])
      harness.emit(harness.make_record(f'one server, {m} writers + sampler: inserts/s',
                                       gathered / window_s, 'items/s', task,
                                       server_inserts_per_s=inserts, **detail))
      harness.log(f'{task} M={m}: {gathered / window_s:,.0f} inserts/s (server {inserts:,.0f}), '
                  f'{samples:,.0f} samples/s, latency p50 {pct(0.5):.1f} ms p99 '
                  f'{pct(0.99):.1f} ms')
  finally:
    stop_sampler.set()
    sampler.join(timeout=10)  # Blocked in a sample for good once the writers are gone.
    if sampler.is_alive():
      sampler.kill()
    stop.set()
    server.join(timeout=30)
    if server.is_alive():
      server.kill()
  actors = best / ACTOR_RATE[task]
  harness.emit(harness.make_record('actors one server feeds', actors, 'actors', task,
                                   best_inserts_per_s=best, actor_rate=ACTOR_RATE[task]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tasks', default='dqn_cartpole,sac_halfcheetah,atari')
  parser.add_argument('--writers', default='1,4,16,64')
  parser.add_argument('--window_s', type=float, default=8.0)
  args = parser.parse_args(argv)
  for task in args.tasks.split(','):
    bench_task(task, [int(m) for m in args.writers.split(',')], args.window_s)


if __name__ == '__main__':
  main()
