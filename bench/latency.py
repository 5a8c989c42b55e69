"""Latency: the local fleet with the replay server's traffic delayed, against the same undelayed.

  python -m bench.latency [--gin_file=gin/dqn_cartpole.gin] [--delay_ms=50] [--jitter_ms=10]
      [--rounds=2] [--window_s=60] [--out=bench/results/DATE-vm-latency.json]

What a deployment whose learner and actors sit in another zone than the replay server sees:
every byte the server sends reaches its clients `delay_ms` (+- `jitter_ms`, uniform) later, as
`tc qdisc add dev <server link> root netem delay 50ms 10ms` makes it. This machine's kernel has
no netem (`sch_netem` is not built; `tc` answers "Specified qdisc kind is unknown"), so the delay
is made in user space: a TCP relay (`DelayRelay`) between the clients (learner, actors, eval) and
the server holds each chunk the server sends for its delay, then passes it on, in order. Both
arms run through the relay, the baseline with 0 ms, so the relay's own cost is in both; the arms
alternate, `--rounds` times each, each a fresh run directory.

Per arm, over `--window_s` once the learner has trained for `--warm_s`: inserts/s and samples/s
(the server's own counters, read on its port, not through the relay), the learner's train
steps/s, the actors' env steps/s, and the actors' policy lag (the train steps between the
learner's newest weights and the ones the actor collects with, from their log lines).

What the relay does not model: each side's TCP sees a local peer, so TCP's window over a long
round trip plays no part. gRPC's HTTP/2 flow-control windows are end to end and see the delay;
they, and Reverb's own round trips (a writer's confirmations, a sampler's requests, a
variable-table read), are what a delay costs a Reverb client.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from bench import chaos
from bench import harness
from common import constants
from launcher import local
from common import reverb_rpc

_LAG = re.compile(r'env_steps=(\d+) env_steps/s=(\d+) .*policy_lag=(\d+)')
_TRAIN_STEP = re.compile(r'learner: train_step=(\d+)')


class DelayRelay:
  """A TCP relay on a free local port that delays what `target` sends back by delay +- jitter.

  Client-to-server bytes pass at once; server-to-client chunks are released in order, each no
  earlier than its arrival plus its own delay (a later chunk never overtakes an earlier one).
  Runs its own event loop in a daemon thread; `close` ends it.
  """

  def __init__(self, target_port: int, delay_s: float, jitter_s: float, seed: int = 0):
    if jitter_s > delay_s:
      raise ValueError('jitter must not exceed the delay')
    self.port = harness.free_port()
    self._target_port = target_port
    self._delay_s, self._jitter_s = delay_s, jitter_s
    self._rng = random.Random(seed)
    self._loop = asyncio.new_event_loop()
    started = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(started,), daemon=True,
                                    name='delay relay')
    self._thread.start()
    if not started.wait(10):
      raise RuntimeError('the delay relay did not start')

  def _run(self, started: threading.Event) -> None:
    asyncio.set_event_loop(self._loop)
    self._server = self._loop.run_until_complete(
        asyncio.start_server(self._relay, '127.0.0.1', self.port))
    started.set()
    self._loop.run_forever()

  async def _relay(self, reader, writer) -> None:
    try:
      up_reader, up_writer = await asyncio.open_connection('127.0.0.1', self._target_port)
    except OSError:
      writer.close()
      return
    await asyncio.gather(self._pass(reader, up_writer, delayed=False),
                         self._pass(up_reader, writer, delayed=True), return_exceptions=True)

  async def _pass(self, reader, writer, delayed: bool) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def _send():
      while (item := await queue.get()) is not None:
        release, data = item
        wait = release - loop.time()
        if wait > 0:
          await asyncio.sleep(wait)
        writer.write(data)
        await writer.drain()
    sender = asyncio.ensure_future(_send())
    last = 0.0
    try:
      while data := await reader.read(1 << 16):
        if delayed:
          last = max(last, loop.time() + self._delay_s + self._rng.uniform(-self._jitter_s,
                                                                          self._jitter_s))
        queue.put_nowait((last if delayed else 0.0, data))
    except (ConnectionError, OSError):
      pass
    queue.put_nowait(None)
    try:
      await sender
    except (ConnectionError, OSError):
      pass
    writer.close()

  def close(self) -> None:
    """Closes the listening socket and every relayed connection, and ends the thread."""
    async def _shutdown():
      self._server.close()
      tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      self._loop.stop()
    asyncio.run_coroutine_threadsafe(_shutdown(), self._loop)
    self._thread.join(timeout=10)
    self._loop.close()


def _counters(port: int):
  table = reverb_rpc.server_info(f'localhost:{port}', timeout_s=10)[constants.REPLAY_TABLE]
  return table.rate_limiter.inserts, table.rate_limiter.samples


def _learner_steps(fleet: chaos.Fleet) -> List[int]:
  return [int(s) for s in _TRAIN_STEP.findall(fleet.log('learner'))]


def run_arm(args, delay_s: float, seed: int) -> Dict:
  """One fleet, its clients through a relay with `delay_s`; the window's figures."""
  root = tempfile.mkdtemp(prefix='latency-')
  try:
    port = harness.free_port()
    relay = DelayRelay(port, delay_s, args.jitter_ms / 1e3 if delay_s else 0.0, seed)
    from common import gin_config  # pylint: disable=g-import-not-at-top
    gin_files = gin_config.resolve_gin_files([args.gin_file])
    run_dir = os.path.join(root, 'run')
    # The server on its own port; every client through the relay.
    served = dict(local.commands(gin_files, args.gin_bindings, run_dir, port, args.num_actors))
    relayed = local.commands(gin_files, args.gin_bindings, run_dir, relay.port, args.num_actors)
    commands = [(n, served[n] if n == 'replay_server' else argv) for n, argv in relayed]
    fleet = chaos.Fleet(commands, os.path.join(root, 'logs'))
    os.makedirs(os.path.join(root, 'logs'))
    try:
      for name, _ in commands:
        fleet.start(name)
      harness.wait_for(lambda: _learner_steps(fleet), args.start_s, 'the first train steps')
      warm_until = time.monotonic() + args.warm_s
      harness.wait_for(lambda: time.monotonic() >= warm_until, args.warm_s + 5, 'the warm-up')
      marks = {name: len(fleet.log(name)) for name, _ in commands}
      inserts0, samples0 = _counters(port)
      step0, t0 = _learner_steps(fleet)[-1], time.monotonic()
      window_end = t0 + args.window_s
      harness.wait_for(lambda: time.monotonic() >= window_end, args.window_s + 5, 'the window')
      inserts1, samples1 = _counters(port)
      step1, t1 = _learner_steps(fleet)[-1], time.monotonic()
      lags, rates = [], []
      for name, _ in commands:
        if name.startswith('actor/'):
          found = _LAG.findall(fleet.log(name)[marks[name]:])
          lags += [int(lag) for _, _, lag in found]
          rates.append(statistics.median(int(r) for _, r, _ in found) if found else 0)
      elapsed = t1 - t0
      return dict(delay_ms=delay_s * 1e3, jitter_ms=args.jitter_ms if delay_s else 0.0,
                  window_s=round(elapsed, 1),
                  inserts_per_s=round((inserts1 - inserts0) / elapsed, 1),
                  samples_per_s=round((samples1 - samples0) / elapsed, 1),
                  train_steps_per_s=round((step1 - step0) / elapsed, 2),
                  actor_env_steps_per_s=rates,
                  policy_lag=dict(median=statistics.median(lags) if lags else None,
                                  p90=sorted(lags)[int(0.9 * (len(lags) - 1))] if lags else None,
                                  samples=len(lags)))
    finally:
      fleet.stop()
      relay.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)


def _median(arms: List[Dict], key: str) -> Optional[float]:
  values = [a[key] for a in arms if a[key] is not None]
  return statistics.median(values) if values else None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--gin_file', default='gin/dqn_cartpole.gin')
  parser.add_argument('--gin_bindings', action='append', default=[])
  parser.add_argument('--num_actors', type=int, default=2)
  parser.add_argument('--delay_ms', type=float, default=50.0)
  parser.add_argument('--jitter_ms', type=float, default=10.0)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--start_s', type=float, default=300.0)
  parser.add_argument('--warm_s', type=float, default=20.0)
  parser.add_argument('--window_s', type=float, default=60.0)
  parser.add_argument('--out', default=None, help='JSON report path.')
  args = parser.parse_args(argv)
  arms = {0.0: [], args.delay_ms: []}
  for round_ in range(args.rounds):
    for delay_ms in arms:  # Alternating: baseline, delayed, baseline, delayed, ...
      result = run_arm(args, delay_ms / 1e3, seed=round_)
      harness.log(f'latency: {json.dumps(result)}')
      arms[delay_ms].append(result)
  summary = {}
  for delay_ms, results in arms.items():
    summary[f'{delay_ms:g}ms'] = {key: _median(results, key) for key in (
        'inserts_per_s', 'samples_per_s', 'train_steps_per_s')}
    summary[f'{delay_ms:g}ms']['policy_lag_median'] = statistics.median(
        r['policy_lag']['median'] for r in results if r['policy_lag']['median'] is not None)
  base, slow = summary['0ms'], summary[f'{args.delay_ms:g}ms']
  ratios = {key: round(slow[key] / base[key], 3) if base[key] else None
            for key in ('inserts_per_s', 'samples_per_s', 'train_steps_per_s')}
  report = dict(command=' '.join(['python -m bench.latency'] + sys.argv[1:]),
                date=time.strftime('%Y-%m-%d'), machine=harness.machine(),
                gin_file=args.gin_file, num_actors=args.num_actors, delay_ms=args.delay_ms,
                jitter_ms=args.jitter_ms, mechanism='user-space TCP relay (no netem here)',
                summary=summary, delayed_over_baseline=ratios,
                arms={f'{k:g}ms': v for k, v in arms.items()})
  text = json.dumps(report, indent=1)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  print(json.dumps(dict(summary=summary, delayed_over_baseline=ratios), indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
