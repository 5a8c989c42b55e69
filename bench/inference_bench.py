"""Collect-policy inference per call: the NumPy twin against the TensorFlow CompiledPolicy.

For each task's shipped gin file, builds the actor's collect policy as the actor does (its
`ActorConfig.num_envs` as the batch), then times both paths on the same zero time step with
`inference.time_per_call` (alternating rounds, median), the measurement that
`ActorConfig.inference='auto'` makes at each actor's start-up, here with more calls and rounds.

  python -m bench.inference_bench [--tasks=dqn_cartpole,dqn_cartpole_fast,sac_minitaur,sac_halfcheetah]
      [--calls=500] [--rounds=5]
"""

import argparse
import os

from bench import harness


def bench_task(task: str, calls: int, rounds: int) -> None:
  # pylint: disable=g-import-not-at-top
  from actor import inference
  from actor import numpy_policy
  from common import agents
  from common import builders
  from common.config import ActorConfig
  from common.config import ReplayConfig
  harness.load_task(task)
  num_envs = ActorConfig().num_envs
  agent = builders.build(ReplayConfig(), actor=agents.ActorSlot(0, 1, num_envs)).agent
  twin = numpy_policy.for_policy(agent.collect_policy, num_envs, seed=0)
  if twin is None:
    harness.log(f'{task}: no NumPy twin for its collect policy')
    return
  compiled = inference.CompiledPolicy(agent.collect_policy, num_envs)
  step = inference.zero_time_step(agent.collect_policy.time_step_spec, num_envs)
  numpy_s, tf_s = inference.time_per_call([twin, compiled], step, calls, rounds)
  harness.emit(harness.make_record(
      'collect policy call, NumPy twin', 1e6 * numpy_s, 'us per call', task, stock=1e6 * tf_s,
      versus='TensorFlow CompiledPolicy', higher_is_better=False, num_envs=num_envs,
      calls=calls, rounds=rounds, cores=os.cpu_count()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tasks', default='dqn_cartpole,dqn_cartpole_fast,sac_minitaur,'
                      'sac_halfcheetah')
  parser.add_argument('--calls', type=int, default=500)
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args(argv)
  for task in args.tasks.split(','):
    bench_task(task, args.calls, args.rounds)


if __name__ == '__main__':
  main()
