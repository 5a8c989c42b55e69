"""Learner throughput: train steps/s from a filled replay table, ours against the stock loop.

For each task (DQN CartPole: fc (100, 50), batch 64; SAC HalfCheetah: 256x256, batch 256, as
in the shipped gin files), one in-process replay server is filled with synthetic items of the
real signature, then three learners with the same network and batch train from it in turns:

  stock    TF-Agents `Learner.run(iterations=1)` in a loop, on
           `ReverbReplayBuffer.as_dataset(sample_batch_size, num_steps=2).prefetch(3)`, the way
           the distributed SAC example's train job does it (without its push after every step).
  ours     the learner's own pieces as `run_learner` builds them (CompiledLearner,
           `LearnerConfig.iterations_per_call` steps per call, the prefetching dataset, weight
           pushes every `push_interval`), with the gin file's `use_xla`.
  ours/xla (with --compare_xla) the same with `use_xla` flipped, to show whether XLA helps on
           this machine.
  ours/prioritized (with --prioritized) ours on a second table that samples by priority
           (`ReplayConfig.prioritized`), with importance-weighted train steps and every sampled
           item's new priority sent back through `PriorityWriter`, against ours on the uniform
           table (target: >= 0.8x).

Checkpoints and policy exports are off for all three. Windows alternate between the learners
and each reports its best window, so a burst of load from other processes on a shared machine
hurts one window rather than one side.

  python -m bench.learner_bench [--tasks=dqn_cartpole,sac_halfcheetah] [--window_s=4]
      [--compare_xla] [--prioritized]
"""

import argparse
import tempfile
import time

from bench import harness

TARGET = 1.5
PRIORITIZED_TARGET = 0.8


def _stock_learner(server, batch_size: int, root_dir: str):
  from tf_agents.replay_buffers import reverb_replay_buffer  # pylint: disable=g-import-not-at-top
  from tf_agents.train import learner as tfa_learner  # pylint: disable=g-import-not-at-top
  from tf_agents.train.utils import train_utils  # pylint: disable=g-import-not-at-top
  from common import builders  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  train_step = train_utils.create_train_step()
  agent, _ = builders.make_agent_and_specs(server.replay_config, train_step)
  buffer = reverb_replay_buffer.ReverbReplayBuffer(
      agent.collect_data_spec, sequence_length=2, table_name=constants.REPLAY_TABLE,
      server_address=server.address)
  learner = tfa_learner.Learner(
      root_dir, train_step, agent,
      lambda: buffer.as_dataset(sample_batch_size=batch_size, num_steps=2).prefetch(3),
      checkpoint_interval=-1)
  return lambda: learner.run(iterations=1), 1


def _our_learner(server, learner_config, root_dir: str, use_xla: bool):
  """The learner's own parts, as `learner.assembly` puts them together: the family's iterator
  and trainer, and the weight-push trigger (no checkpoints)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.train.utils import train_utils  # pylint: disable=g-import-not-at-top
  from common import builders  # pylint: disable=g-import-not-at-top
  from common import session as session_lib  # pylint: disable=g-import-not-at-top
  from common import variables  # pylint: disable=g-import-not-at-top
  from learner import assembly  # pylint: disable=g-import-not-at-top
  from learner import trainers  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.get_strategy()
  config = dataclasses.replace(learner_config, checkpoint_interval=-1, use_xla=use_xla)
  with strategy.scope():
    train_step = train_utils.create_train_step()
    built = builders.build(server.replay_config, train_step)
  family = built.specs.family
  make_iterator = family.make_iterator_fn(strategy, server.address, built.specs, config)
  learner = family.make_trainer(trainers.Inputs(
      learner_dir=root_dir, train_step=train_step, built=built, strategy=strategy,
      learner_config=config, replay_config=server.replay_config,
      session=session_lib.unchecked(server.address)))
  client = variables.VariableClient(session_lib.unchecked(server.address), built.variables,
                                    server.signer)
  learner.triggers.append(assembly.PushTrigger(
      client, family.push_interval(config), 0, before_push=learner.before_push))
  iterator = make_iterator()
  n = config.iterations_per_call
  return lambda: learner.run(iterations=n, iterator=iterator), n


def _steps_per_s(call, steps_per_call: int, window_s: float) -> float:
  start, steps = time.monotonic(), 0
  while True:
    call()
    steps += steps_per_call
    elapsed = time.monotonic() - start
    if elapsed >= window_s:
      return steps / elapsed


def bench_task(task: str, window_s: float, rounds: int, compare_xla: bool,
               prioritized: bool = False):
  """Emits the learner records for one task."""
  harness.load_task(task, ['ReplayConfig.min_size = 1000'])
  import gin  # pylint: disable=g-import-not-at-top
  from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
  config = LearnerConfig()
  server = harness.ReplayServer()
  servers = [server]
  try:
    insert_rate = harness.write_items(server.address, server.specs.collect_data_spec, 4000,
                                      server.specs.sequence_length)
    harness.log(f'{task}: table filled with 4000 synthetic items ({insert_rate:.0f} items/s)')
    if prioritized:
      gin.bind_parameter('ReplayConfig.prioritized', True)
      prioritized_server = harness.ReplayServer()
      servers.append(prioritized_server)
      harness.write_items(prioritized_server.address,
                          prioritized_server.specs.collect_data_spec, 4000,
                          prioritized_server.specs.sequence_length)
    root = tempfile.mkdtemp(prefix='bench_learner_')
    learners = {
        'stock': _stock_learner(server, config.batch_size, f'{root}/stock'),
        'ours': _our_learner(server, config, f'{root}/ours', config.use_xla),
    }
    if compare_xla:
      learners['ours_other_xla'] = _our_learner(server, config, f'{root}/other',
                                                not config.use_xla)
    if prioritized:
      learners['ours_prioritized'] = _our_learner(prioritized_server, config,
                                                  f'{root}/prioritized', config.use_xla)
    for name, (call, _) in learners.items():  # Trace and warm up.
      start = time.monotonic()
      call()
      call()
      harness.log(f'{task}: {name} learner warm (first calls {time.monotonic() - start:.1f} s)')
    best = {name: 0.0 for name in learners}
    for _ in range(rounds):
      for name, (call, n) in learners.items():
        best[name] = max(best[name], _steps_per_s(call, n, window_s))
  finally:
    for each in servers:
      each.stop()
  detail = dict(batch_size=config.batch_size, iterations_per_call=config.iterations_per_call,
                use_xla=config.use_xla, window_s=window_s, rounds=rounds)
  harness.emit(harness.make_record(
      'learner train steps/s', best['ours'], 'train steps/s', task, stock=best['stock'],
      target=TARGET, **detail))
  if compare_xla:
    harness.emit(harness.make_record(
        f'learner train steps/s, use_xla={not config.use_xla}', best['ours_other_xla'],
        'train steps/s', task, stock=best['stock'], **detail))
  if prioritized:
    harness.emit(harness.make_record(
        'learner train steps/s, prioritized replay against uniform', best['ours_prioritized'],
        'train steps/s', task, stock=best['ours'], versus='ours on a uniform table',
        target=PRIORITIZED_TARGET, **detail))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tasks', default='dqn_cartpole,sac_halfcheetah')
  parser.add_argument('--window_s', type=float, default=4.0)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--compare_xla', action='store_true',
                      help='Also measure our learner with use_xla flipped.')
  parser.add_argument('--prioritized', action='store_true',
                      help='Also measure our learner on a prioritized table with updates.')
  args = parser.parse_args(argv)
  for task in args.tasks.split(','):
    bench_task(task, args.window_s, args.rounds, args.compare_xla, args.prioritized)


if __name__ == '__main__':
  main()
