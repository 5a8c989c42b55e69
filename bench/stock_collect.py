"""The stock collect job: TF-Agents' distributed SAC example's collect loop, on our task.

As in tf_agents/experimental/distributed/examples/sac/sac_collect.py: a TF-Agents `Actor` with
`steps_per_run=1`, the collect policy in a `PyTFEagerPolicy`, a `ReverbAddTrajectoryObserver`
(sequence length 2, stride 1), `actor.collect_metrics(10)` with summaries, and
`ReverbVariableContainer.update` (a pull of every policy weight) after every env step. The
environment and the network are the gin task's, so only the collect machinery differs from
ours. With --random it collects with a RandomPyPolicy and pulls nothing (the example's initial
collect).

It builds everything, then waits for --go_file to exist before collecting, so that its
start-up does not overlap another measurement. It logs STOCK_COLLECTING when it starts.

  python -m bench.stock_collect --task=sac_halfcheetah --address=localhost:PORT \
      --root_dir=/tmp/x [--bindings=...] [--go_file=/tmp/go] [--random]
"""

import argparse
import os
import signal
import threading
import time

from bench import harness

COLLECTING_LINE = 'STOCK_COLLECTING'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--task', required=True, choices=sorted(harness.GIN))
  parser.add_argument('--address', required=True)
  parser.add_argument('--root_dir', required=True)
  parser.add_argument('--bindings', action='append', default=[])
  parser.add_argument('--go_file', default='')
  parser.add_argument('--random', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())

  harness.load_task(args.task, args.bindings)
  import reverb  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.experimental.distributed import reverb_variable_container  # pylint: disable=g-import-not-at-top
  from tf_agents.metrics import py_metrics  # pylint: disable=g-import-not-at-top
  from tf_agents.policies import py_tf_eager_policy  # pylint: disable=g-import-not-at-top
  from tf_agents.policies import random_py_policy  # pylint: disable=g-import-not-at-top
  from tf_agents.replay_buffers import reverb_utils  # pylint: disable=g-import-not-at-top
  from tf_agents.train import actor  # pylint: disable=g-import-not-at-top
  from tf_agents.train.utils import train_utils  # pylint: disable=g-import-not-at-top
  from common import builders  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  from common import environments  # pylint: disable=g-import-not-at-top
  from common.config import ReplayConfig  # pylint: disable=g-import-not-at-top

  collect_env = environments.make_environment(seed=args.seed)
  train_step = train_utils.create_train_step()
  agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  # The stock container loads whatever the table holds: it has a column for the signature and
  # does not check it.
  variables = {constants.POLICY_KEY: agent.collect_policy.variables(),
               constants.TRAIN_STEP_KEY: train_step,
               constants.SIGNATURE_KEY: tf.Variable(tf.zeros([4], tf.int64))}
  container = reverb_variable_container.ReverbVariableContainer(
      args.address, table_names=[constants.VARIABLE_TABLE])
  rb_observer = reverb_utils.ReverbAddTrajectoryObserver(
      reverb.Client(args.address), table_name=constants.REPLAY_TABLE, sequence_length=2,
      stride_length=1)
  if args.random:
    policy = random_py_policy.RandomPyPolicy(collect_env.time_step_spec(),
                                             collect_env.action_spec())
  else:
    policy = py_tf_eager_policy.PyTFEagerPolicy(agent.collect_policy, use_tf_function=True)
    container.update(variables)
  env_step_metric = py_metrics.EnvironmentSteps()
  collect_actor = actor.Actor(
      collect_env, policy, train_step, steps_per_run=1,
      metrics=actor.collect_metrics(10),
      summary_dir=os.path.join(args.root_dir, 'stock_collect'),
      observers=[rb_observer, env_step_metric])
  while args.go_file and not os.path.exists(args.go_file) and not stop.is_set():
    time.sleep(0.05)
  print(COLLECTING_LINE, flush=True)
  while not stop.is_set():
    collect_actor.run()
    if not args.random:
      container.update(variables)
  print(f'stock collect stopped after {int(env_step_metric.result())} env steps', flush=True)


if __name__ == '__main__':
  main()
