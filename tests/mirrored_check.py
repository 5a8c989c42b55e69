"""Run as a script by test_mirrored_strategy.py, in a fresh process per check.

  python -m tests.mirrored_check ROOT dqn|sac|impala|learner|prioritized|td3|ppo|impala_learner

Splits the CPU into two logical devices (possible only before TensorFlow initializes them).
`dqn`: one replicated train step gives the same loss as the default strategy on the same batch
and the same initial weights. `sac`: the replicated step runs and gives a finite loss close to
the default strategy's (SAC samples actions inside its loss, so the two are equal only in
distribution). `learner`: `run_learner` trains under a MirroredStrategy against a real Reverb
server fed by a real actor. `prioritized`: the same with DDPG on a prioritized table, so that
the importance-weighted step, the per-replica TD errors and the priority updates run replicated.
`td3`: run_learner refuses TD3 on two replicas with its one-line reason. `ppo`: run_learner
trains PPO under a MirroredStrategy from a real actor's on-policy queue, its minibatches split
over the two replicas. `impala`: as `dqn`, for IMPALA's V-trace loss (its mean over the kept
transitions, divided over the replicas). `impala_learner`: run_learner trains IMPALA from a
real actor's queue, each replica on its share of the batch.
Prints its result and exits non-zero on failure.
"""

import math
import sys
import threading

import common  # noqa: F401

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import gin  # noqa: E402
import portpicker  # noqa: E402
import reverb  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.train import learner as tfa_learner  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

from actor import collect  # noqa: E402
from common import builders  # noqa: E402
from common import constants  # noqa: E402
from common.config import LearnerConfig
from common.config import ReplayConfig  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.config import validated_configs
from learner import train  # noqa: E402
from replay_server import tables as tables_lib


def _batch(collect_data_spec, batch_size):
  """A fixed, valid batch of 2-step trajectories: N(0, 1) observations and rewards, actions
  drawn within their bounds, MID steps and discount 1."""
  spec = tensor_spec.add_outer_dims_nest(collect_data_spec, (batch_size, 2))
  mid = tf.fill([batch_size, 2], ts.StepType.MID)
  normal = lambda s: tf.random.stateless_normal(s.shape, seed=[1, 2], dtype=s.dtype)
  return spec._replace(
      step_type=mid, next_step_type=mid,
      observation=tf.nest.map_structure(normal, spec.observation),
      action=tensor_spec.sample_spec_nest(spec.action, seed=0),
      policy_info=tf.nest.map_structure(normal, spec.policy_info),  # IMPALA's logits
      reward=normal(spec.reward),
      discount=tf.ones([batch_size, 2]))


def _loss(strategy, batch, initial_values, root_dir):
  """One train step under `strategy` from the given initial weights; returns the loss."""
  with strategy.scope():
    train_step = tf.Variable(0, dtype=tf.int64)
    agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  model_variables = list(agent.variables)  # Networks and targets, before optimizer slots exist.
  assert len(model_variables) == len(initial_values)
  for variable, value in zip(model_variables, initial_values):
    variable.assign(value)
  learner = tfa_learner.Learner(root_dir, train_step, agent, checkpoint_interval=-1,
                                strategy=strategy)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((batch, ())).repeat())
  return float(learner.run(iterations=1, iterator=iter(dataset)).loss)


def check_loss(gin_file, root):
  gin.clear_config()
  gin.parse_config_file(gin_file)
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  assert mirrored.num_replicas_in_sync == 2
  reference, specs = builders.make_agent_and_specs(ReplayConfig())
  initial_values = [v.numpy() for v in reference.variables]
  batch = _batch(specs.collect_data_spec, 64)
  default_loss = _loss(tf.distribute.get_strategy(), batch, initial_values, f'{root}/default')
  mirrored_loss = _loss(mirrored, batch, initial_values, f'{root}/mirrored')
  print(f'{gin_file}: default loss {default_loss:.6f} mirrored loss {mirrored_loss:.6f}')
  return default_loss, mirrored_loss


def check_run_learner(root, gin_file='gin/dqn_cartpole.gin', bindings=(), sample=True):
  gin.clear_config()
  gin.parse_config_files_and_bindings([gin_file], [
      'ReplayConfig.min_size = 64', 'LearnerConfig.iterations_per_call = 5',
      'LearnerConfig.checkpoint_interval = 20', 'LearnerConfig.policy_export_interval = 20',
      'ActorConfig.steps_per_run = 20', *bindings])
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  port = portpicker.pick_unused_port()
  server = reverb.Server(tables_lib.make_tables(specs, config, LearnerConfig()), port=port)
  address = f'localhost:{port}'
  stop = threading.Event()
  actor = threading.Thread(target=collect.run_actor, args=(f'{root}/run', address, 0),
                           kwargs=dict(max_env_steps=5000, stop_event=stop,
                                       configs=validated_configs()))
  actor.start()
  try:
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    step = train.run_learner(f'{root}/run', address, max_train_steps=20, strategy=strategy,
        configs=validated_configs())
    priorities = {float(item[0].info.priority) for item in
                  reverb.Client(address).sample(constants.REPLAY_TABLE, 300)} if sample else ()
  finally:
    stop.set()
    actor.join(timeout=60)
    server.stop()
  print(f'run_learner under MirroredStrategy reached train step {step}; '
        f'{len(priorities)} distinct priorities in replay')
  return step, len(priorities)


def main(root, check):
  if check == 'learner':
    return 0 if check_run_learner(root)[0] == 20 else 1
  if check == 'prioritized':
    step, distinct = check_run_learner(root, 'gin/ddpg_inverted_pendulum.gin',
                                       ['ReplayConfig.prioritized = True'])
    return 0 if step == 20 and distinct > 10 else 1
  if check == 'ppo':
    # 2 items of 32 steps in minibatches of 32, 2 epochs: 4 batches, 2 train steps per iteration.
    step, _ = check_run_learner(root, 'gin/ppo_cartpole.gin', [
        'LearnerConfig.batch_size = 2', 'ppo_agent.collect_sequence_length = 32',
        'ppo_agent.minibatch_size = 32', 'ppo_agent.num_epochs = 2',
        'LearnerConfig.foreign_push_window_s = 1.0', 'ActorConfig.num_envs = 2'], sample=False)
    return 0 if step == 20 else 1
  if check == 'impala_learner':
    step, _ = check_run_learner(root, 'gin/impala_cartpole.gin', [
        'LearnerConfig.batch_size = 4', 'impala_agent.unroll_length = 5',
        'LearnerConfig.foreign_push_window_s = 1.0', 'ActorConfig.num_envs = 2'], sample=False)
    return 0 if step == 20 else 1
  if check == 'td3':
    try:
      check_run_learner(root, 'gin/td3_inverted_pendulum.gin')
    except UserError as e:
      print(f'refused: {e}')
      return 0
    return 1
  gin_file = {'dqn': 'gin/dqn_cartpole.gin', 'sac': 'gin/sac_inverted_pendulum.gin',
              'impala': 'gin/impala_cartpole.gin'}[check]
  default_loss, mirrored_loss = check_loss(gin_file, root)
  if not (math.isfinite(default_loss) and math.isfinite(mirrored_loss)):
    print('NON-FINITE LOSS')
    return 1
  tolerance = 4.0 if check == 'sac' else 1e-4
  if abs(default_loss - mirrored_loss) > tolerance * max(1.0, abs(default_loss)):
    print(f'MISMATCH for {gin_file}')
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1], sys.argv[2]))
