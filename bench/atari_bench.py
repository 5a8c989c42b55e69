"""Pong from pixels: actor frames/s against raw ALE, learner steps/s, replay bytes and capacity.

Three parts (`--parts`), each on `gin/dqn_pong.gin` (Ape-X DQN, the Nature CNN):

  actor    Our actor (`python -m actor.main`, 8 environments) and the raw emulator take turns on
           one core (both pinned to core 0; the paused one is stopped with SIGSTOP): raw ALE is
           `ALEInterface.act` with random actions of Pong's minimal set, no preprocessing; the
           actor runs the full pipeline (4 frames per step, max-pool, 84x84 grayscale,
           stacking, replay writes) with the random policy, then with the learned policy
           (the Nature CNN's forward pass, after one weight push). Frames/s = env steps/s
           (items inserted at the server; one per step, less 3 per episode) x 4. With
           `--envpool_python` (an interpreter that has `envpool`), EnvPool's Pong-v5 (8
           environments, 1 thread, the same preprocessing in C++) takes turns on the same core.
  learner  The real learner (`python -m learner.main`) trains from a table the actor filled,
           at batch 32 and 256 (`LearnerConfig.batch_size`), with the actor paused: train
           steps/s from its log, and samples/s.
  replay   Bytes per transition on the server (its resident memory, in its own process, over
           `--replay_transitions` transitions of real Pong play), frames stored once against
           whole stacked observations, and the naive size (an observation and a next
           observation per transition); the largest table that fits in 16 GB follows. With
           `--capacity_transitions`, the real replay server is filled to that many items by two
           actors and its memory and final checkpoint time (on SIGTERM) are measured.

  python -m bench.atari_bench [--parts=actor,learner,replay] [--window_s=8] [--rounds=3]
      [--envpool_python=PATH] [--replay_transitions=40000] [--capacity_transitions=0]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import textwrap
import time

from bench import harness

GIN_FILE = os.path.join(harness.REPO, 'gin', 'dqn_pong.gin')
FRAMES_PER_STEP = 4
FRAME_BYTES = 84 * 84
# Bench overrides: no insert limiter (measure the actor, not the learner's pace), no
# checkpoints or exports, frequent logs.
BINDINGS = (
    'ReplayConfig.samples_per_insert = None',
    'ReplayConfig.min_size = 1000',
    'LearnerConfig.checkpoint_interval = 100000000',
    'LearnerConfig.policy_export_interval = 100000000',
    'LearnerConfig.log_interval = 50',
    'LearnerConfig.rate_limiter_timeout_s = 60.0',
    'ActorConfig.log_interval_s = 5.0',
)
RAW_TARGET = 0.8  # The target: the actor's frames/s over raw ALE's, per core.
GIB = 1024 ** 3

# Raw ALE: Pong with random minimal-set actions, one emulator, the calling thread only.
_RAW_ALE = '''
import time, numpy as np, ale_py
from ale_py import roms
ale = ale_py.ALEInterface()
ale.setLoggerMode(ale_py.LoggerMode.Error)
ale.setInt('random_seed', 0)
ale.setFloat('repeat_action_probability', 0.0)
ale.loadROM(roms.get_rom_path('pong'))
actions = ale.getMinimalActionSet()
rng = np.random.RandomState(0)
def raw_frames(window_s):
  frames, start = 0, time.monotonic()
  while time.monotonic() - start < window_s:
    for a in rng.randint(0, len(actions), 256):
      ale.act(actions[a], 1.0)  # a strength, or the paddle does not move (atari.PADDLE_STRENGTH)
      if ale.game_over():
        ale.reset_game()
    frames += 256
  return frames / (time.monotonic() - start)
'''

# EnvPool (run by --envpool_python): 8 Pong environments stepped as one batch on one thread,
# with the DQN preprocessing (frame skip 4, max-pool, 84x84 grayscale, 4 stacked frames).
_ENVPOOL = textwrap.dedent('''
    import json, sys, time, numpy as np, envpool
    env = envpool.make('Pong-v5', env_type='gym', num_envs=8, batch_size=8, num_threads=1,
                       thread_affinity_offset=-1, episodic_life=False, reward_clip=False,
                       stack_num=4, img_height=84, img_width=84, noop_max=1,
                       repeat_action_probability=0.0, seed=0)
    env.reset()
    rng = np.random.RandomState(0)
    for line in sys.stdin:
      window_s = float(line)
      steps, start = 0, time.monotonic()
      while time.monotonic() - start < window_s:
        env.step(rng.randint(0, 6, 8))
        steps += 8
      print(json.dumps(dict(frames_per_s=4 * steps / (time.monotonic() - start),
                            version=envpool.__version__)), flush=True)
''')


RECORDS = []  # Every record this run emitted, for --out.


def _emit(record):
  RECORDS.append(harness.emit(record))


def _gin_args(bindings=()):
  return [f'--gin_file={GIN_FILE}'] + [f'--gin_bindings={b}' for b in BINDINGS + tuple(bindings)]


def _pin_this_thread(cores) -> set:
  """Pins the calling thread (and the children it starts from now on) to `cores`."""
  previous = os.sched_getaffinity(0)
  os.sched_setaffinity(0, cores)
  return previous


def bench_actor(window_s: float, rounds: int, envpool_python: str, startup_timeout_s: float):
  harness.load_task_file(GIN_FILE, BINDINGS)
  server = harness.ReplayServer()  # Its threads may use every core; the contenders use core 0.
  root = tempfile.mkdtemp(prefix='bench_atari_actor_')
  scope = {}
  exec(_RAW_ALE, scope)  # pylint: disable=exec-used
  raw_frames = scope['raw_frames']
  previous = _pin_this_thread({0})
  children, envpool = [], None
  try:
    actor = harness.Child('actor.main', _gin_args() + [
        f'--replay_server_address={server.address}', f'--root_dir={root}', '--task=0'],
        os.path.join(root, 'actor.log'))
    children.append(actor)
    if envpool_python:
      envpool = subprocess.Popen([envpool_python, '-c', _ENVPOOL], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    harness.wait_for(lambda: server.inserted() > 0, startup_timeout_s, 'the actor\'s first items')
    actor.pause()  # Each contender runs alone in its windows.

    def actor_frames():
      actor.resume()
      harness.rate(server.inserted, 1.0)  # Settle.
      value = FRAMES_PER_STEP * harness.rate(server.inserted, window_s)
      actor.pause()
      return value

    def envpool_frames():
      envpool.stdin.write(f'{window_s}\n')
      envpool.stdin.flush()
      return json.loads(envpool.stdout.readline())

    windows = {'raw': [], 'random': [], 'learned': [], 'envpool': []}
    for phase in ('random', 'learned'):
      if phase == 'learned':
        actor.resume()
        server.push_weights()
        actor.wait_line('first weights arrived', startup_timeout_s)
        actor.pause()
      for _ in range(rounds):
        windows['raw'].append(raw_frames(window_s))
        windows[phase].append(actor_frames())
        if envpool is not None and phase == 'random':
          windows['envpool'].append(envpool_frames()['frames_per_s'])
    envpool_version = envpool_frames()['version'] if envpool is not None else None
  finally:
    os.sched_setaffinity(0, previous)
    for child in children:
      child.resume()
    harness.stop_all(children)
    if envpool is not None:
      envpool.kill()
    server.stop()
  med = {k: statistics.median(v) for k, v in windows.items() if v}
  detail = dict(num_envs=8, window_s=window_s, rounds=rounds, core='0 (all contenders)',
                windows={k: [round(x) for x in v] for k, v in windows.items()})
  _emit(harness.make_record(
      'Pong actor frames/s, random policy, one core', med['random'], 'frames/s', 'dqn_pong',
      stock=med['raw'], versus='raw ALE act() on the same core', target=RAW_TARGET, **detail))
  _emit(harness.make_record(
      'Pong actor frames/s, learned policy (Nature CNN), one core', med['learned'], 'frames/s',
      'dqn_pong', stock=med['raw'], versus='raw ALE act() on the same core', **detail))
  if 'envpool' in med:
    _emit(harness.make_record(
        'Pong actor frames/s, random policy, one core, vs EnvPool', med['random'], 'frames/s',
        'dqn_pong', stock=med['envpool'],
        versus=f'EnvPool {envpool_version} Pong-v5, 8 envs, 1 thread, same core', **detail))
  else:
    harness.log('EnvPool: not measured (give --envpool_python, an interpreter with envpool)')


_LEARNER_RATE = re.compile(r'learner: train_step=(\d+) steps/s=([0-9.]+)')


def bench_learner(batch_sizes, window_steps: int, startup_timeout_s: float):
  root = tempfile.mkdtemp(prefix='bench_atari_learner_')
  harness.load_task_file(GIN_FILE, BINDINGS)
  server = harness.ReplayServer()
  children = []
  try:
    actor = harness.Child('actor.main', _gin_args() + [
        f'--replay_server_address={server.address}', f'--root_dir={root}/actor', '--task=0'],
        os.path.join(root, 'actor.log'))
    children.append(actor)
    harness.wait_for(lambda: server.size() >= 5000, startup_timeout_s, '5,000 items')
    actor.pause()  # The learner gets the cores; the table is no longer written.
    for batch in batch_sizes:
      skip = max(10, window_steps * 32 // batch)  # Steps of about the same time per batch.
      log_path = os.path.join(root, f'learner_{batch}.log')
      learner = harness.Child('learner.main', _gin_args([
          f'LearnerConfig.batch_size = {batch}', 'LearnerConfig.log_interval = 10']) + [
          f'--replay_server_address={server.address}', f'--root_dir={root}/learner_{batch}',
          f'--max_train_steps={skip * 3}'], log_path)
      children.append(learner)
      learner.wait(startup_timeout_s + 60 * skip)
      rates = [(int(s), float(r)) for s, r in _LEARNER_RATE.findall(learner.log_text())]
      steady = [r for s, r in rates if s > skip]  # Past tracing and the first pushes.
      if not steady:
        raise RuntimeError(f'no steady learner rate in {log_path}:\n'
                           + learner.log_text()[-2000:])
      children.remove(learner)
      value = statistics.median(steady)
      _emit(harness.make_record(
          f'Pong learner train steps/s, batch {batch}', value, 'train steps/s', 'dqn_pong',
          samples_per_s=round(value * batch), windows=steady, prioritized=True,
          cores=os.cpu_count(),
          network='Nature CNN (32-8-4, 64-4-2, 64-3-1, fc 512), Adam, double Q, n=3'))
  finally:
    for child in children:
      child.resume()
    harness.stop_all(children)
    server.stop()


def _rss(pid: int) -> int:
  with open(f'/proc/{pid}/status') as status:
    return int([l for l in status if l.startswith('VmRSS')][0].split()[1]) * 1024


def replay_bytes_per_transition(transitions: int, frames_once: bool, num_envs: int = 4) -> dict:
  """Server bytes per transition of random Pong play written by the actor's observer."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import reverb
  from tf_agents.trajectories import trajectory as trajectory_lib
  from actor import writer as writer_lib
  from common import builders
  from common import constants
  from common import environments
  from common.config import ReplayConfig
  # pylint: enable=g-import-not-at-top
  bindings = BINDINGS + (f'ReplayConfig.max_size = {transitions + 1000}',
                         f'ReplayConfig.store_frames_once = {frames_once}')
  with harness.MeasuredServer(GIN_FILE, bindings) as server:
    harness.load_task_file(GIN_FILE, bindings)
    specs = builders.build(ReplayConfig()).specs
    envs = [environments.make_environment(seed=i) for i in range(num_envs)]
    observer = writer_lib.BatchedTrajectoryObserver(
        reverb.Client(server.address), num_envs, specs.sequence_length,
        step_spec=specs.collect_data_spec, frame_stack=specs.frame_stack)
    rng = np.random.RandomState(0)
    time_steps = [env.reset() for env in envs]
    before, steps, start = server.rss(), 0, time.monotonic()
    while steps < transitions:
      actions = rng.randint(0, 6, num_envs).astype(np.int64)
      next_steps = [env.step(a) for env, a in zip(envs, actions)]
      observer(trajectory_lib.Trajectory(
          step_type=np.stack([t.step_type for t in time_steps]),
          observation=np.stack([t.observation for t in time_steps]), action=actions,
          policy_info=(), next_step_type=np.stack([t.step_type for t in next_steps]),
          reward=np.stack([t.reward for t in next_steps]).astype(np.float32),
          discount=np.stack([t.discount for t in next_steps]).astype(np.float32)))
      time_steps = next_steps
      steps += num_envs
    if not observer.flush(timeout_s=120):
      raise TimeoutError('the server did not confirm the items within 120 s')
    observer.close()
    items = int(reverb.Client(server.address).server_info()[
        constants.REPLAY_TABLE].current_size)
    grown = server.rss() - before
    return dict(bytes_per_transition=grown / items, items=items, env_steps=steps,
                seconds=time.monotonic() - start)


def bench_replay(transitions: int):
  once = replay_bytes_per_transition(transitions, True)
  stacked = replay_bytes_per_transition(transitions, False)
  naive = 2 * FRAMES_PER_STEP * FRAME_BYTES
  detail = dict(transitions=once['items'], source='random Pong play, 4 environments',
                measured='replay server resident memory growth (malloc_trim first) per item')
  _emit(harness.make_record(
      'Pong replay bytes per transition, frames stored once', once['bytes_per_transition'],
      'bytes', 'dqn_pong', stock=stacked['bytes_per_transition'],
      versus='whole stacked observations (store_frames_once = False)',
      higher_is_better=False, **detail))
  _emit(harness.make_record(
      'Pong replay bytes per transition, frames once vs naive', once['bytes_per_transition'],
      'bytes', 'dqn_pong', stock=naive,
      versus='naive: uncompressed observation + next observation (2 x 84x84x4)',
      higher_is_better=False, **detail))
  for name, measured in (('frames once', once), ('stacked observations', stacked)):
    _emit(harness.make_record(
        f'Pong transitions in 16 GB of replay, {name}',
        16 * GIB / measured['bytes_per_transition'], 'transitions', 'dqn_pong',
        bytes_per_transition=round(measured['bytes_per_transition']), **detail))


def bench_capacity(transitions: int, startup_timeout_s: float):
  """Fills the real replay server to `transitions` items with two actors (random policy)."""
  root = tempfile.mkdtemp(prefix='bench_atari_capacity_')
  port = harness.free_port()
  address = f'localhost:{port}'
  bindings = [f'ReplayConfig.max_size = {transitions}']
  children = []
  server = harness.Child('replay_server.main', _gin_args(bindings) + [
      f'--port={port}', f'--root_dir={root}/replay', '--checkpoint_interval_s=0'],
      os.path.join(root, 'server.log'))
  children.append(server)
  try:
    server.wait_line('on port', startup_timeout_s)
    import reverb  # pylint: disable=g-import-not-at-top
    from common import constants  # pylint: disable=g-import-not-at-top
    client = reverb.Client(address)
    table = constants.REPLAY_TABLE
    size = lambda: int(client.server_info()[table].current_size)
    base = _rss(server.pid)
    for task in (0, 1):
      children.append(harness.Child('actor.main', _gin_args(bindings) + [
          f'--replay_server_address={address}', f'--root_dir={root}/run', f'--task={task}'],
          os.path.join(root, f'actor{task}.log')))
    start = time.monotonic()
    harness.wait_for(lambda: size() >= transitions, 4 * 3600, f'{transitions} items',
                     interval_s=5.0)
    fill_s = time.monotonic() - start
    for actor in children[1:]:
      actor.stop()
    time.sleep(2.0)  # In-flight items land.
    items = size()
    grown = _rss(server.pid) - base
    start = time.monotonic()
    server.stop(grace_s=3600)
    stop_s = time.monotonic() - start
    written = re.findall(r'Replay checkpoint \S+ written in ([0-9.]+) s', server.log_text())
    checkpoint_bytes = sum(os.path.getsize(os.path.join(d, f))
                           for d, _, files in os.walk(os.path.join(root, 'replay'))
                           for f in files)
    _emit(harness.make_record(
        'Pong replay server memory, full table', grown / GIB, 'GiB', 'dqn_pong',
        higher_is_better=False,
        items=items, bytes_per_transition=round(grown / items), fill_s=round(fill_s),
        source='two actors, random policy, frames stored once'))
    _emit(harness.make_record(
        'Pong replay final checkpoint (SIGTERM to exit)', stop_s, 's', 'dqn_pong',
        higher_is_better=False,
        items=items, checkpoint_write_s=float(written[-1]) if written else None,
        checkpoint_gib=round(checkpoint_bytes / GIB, 3)))
  finally:
    harness.stop_all(children)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--parts', default='actor,learner,replay')
  parser.add_argument('--window_s', type=float, default=8.0)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--envpool_python', default='',
                      help='A Python interpreter with envpool installed (its own venv).')
  parser.add_argument('--batch_sizes', default='32,256')
  parser.add_argument('--learner_window_steps', type=int, default=200,
                      help='Train steps skipped before the learner rate counts; 3x are run.')
  parser.add_argument('--replay_transitions', type=int, default=40000)
  parser.add_argument('--capacity_transitions', type=int, default=0,
                      help='Fill the real server to this many items (0: skip).')
  parser.add_argument('--startup_timeout_s', type=float, default=300.0)
  parser.add_argument('--out', default='', help='Also write the records, the command, the date '
                      'and the machine to this JSON file.')
  args = parser.parse_args(argv)
  parts = args.parts.split(',')
  if 'actor' in parts:
    bench_actor(args.window_s, args.rounds, args.envpool_python, args.startup_timeout_s)
  if 'learner' in parts:
    bench_learner([int(b) for b in args.batch_sizes.split(',')], args.learner_window_steps,
                  args.startup_timeout_s)
  if 'replay' in parts:
    bench_replay(args.replay_transitions)
  if args.capacity_transitions:
    bench_capacity(args.capacity_transitions, args.startup_timeout_s)
  if args.out:
    harness.write_results(args.out, 'bench.atari_bench', argv, RECORDS)


if __name__ == '__main__':
  main()
