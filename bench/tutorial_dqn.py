"""DQN CartPole-v0 in one process, written the way the TF-Agents DQN tutorial writes it.

tf_agents/docs/tutorials/1_dqn_tutorial: suite_gym CartPole-v0, a Sequential QNetwork of Dense
(100, 50) with the tutorial's initializers, Adam 1e-3, element-wise squared loss, an in-process
Reverb table (MinSize(1)) with ReverbAddTrajectoryObserver (sequence length 2), 100 random
initial collect steps, then per iteration one collect step (PyDriver + PyTFEagerPolicy) and one
train step (`common.function(agent.train)`) from `as_dataset(num_parallel_calls=3,
sample_batch_size=64, num_steps=2).prefetch(3)`, and `compute_avg_return` over 10 episodes
every `eval_interval` = 1000 iterations. It stops when that average reaches --target and prints
`SOLVED seconds=<since process start> env_steps=<collect steps> train_steps=<steps>`.

  python -m bench.tutorial_dqn [--target=195] [--max_iterations=20000] [--seed=0]
"""

import time

START = time.time()  # Before the imports: start-up counts.

import argparse  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

import common  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--target', type=float, default=195.0)
  parser.add_argument('--max_iterations', type=int, default=20000)
  parser.add_argument('--eval_interval', type=int, default=1000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  # pylint: disable=g-import-not-at-top
  import reverb
  import tensorflow as tf
  from tf_agents.agents.dqn import dqn_agent
  from tf_agents.drivers import py_driver
  from tf_agents.environments import suite_gym
  from tf_agents.environments import tf_py_environment
  from tf_agents.networks import sequential
  from tf_agents.policies import py_tf_eager_policy
  from tf_agents.policies import random_tf_policy
  from tf_agents.replay_buffers import reverb_replay_buffer
  from tf_agents.replay_buffers import reverb_utils
  from tf_agents.specs import tensor_spec
  from tf_agents.utils import common as tfa_common
  # pylint: enable=g-import-not-at-top
  tf.random.set_seed(args.seed)

  initial_collect_steps, batch_size, learning_rate = 100, 64, 1e-3
  num_eval_episodes, replay_buffer_max_length = 10, 100000
  env = suite_gym.load('CartPole-v0')
  train_py_env = suite_gym.load('CartPole-v0')
  eval_py_env = suite_gym.load('CartPole-v0')
  train_py_env.seed(args.seed)
  eval_py_env.seed(args.seed + 1)
  train_env = tf_py_environment.TFPyEnvironment(train_py_env)
  eval_env = tf_py_environment.TFPyEnvironment(eval_py_env)

  action_tensor_spec = tensor_spec.from_spec(env.action_spec())
  num_actions = action_tensor_spec.maximum - action_tensor_spec.minimum + 1

  def dense_layer(num_units):
    return tf.keras.layers.Dense(
        num_units, activation=tf.keras.activations.relu,
        kernel_initializer=tf.keras.initializers.VarianceScaling(
            scale=2.0, mode='fan_in', distribution='truncated_normal'))

  q_values_layer = tf.keras.layers.Dense(
      num_actions, activation=None,
      kernel_initializer=tf.keras.initializers.RandomUniform(minval=-0.03, maxval=0.03),
      bias_initializer=tf.keras.initializers.Constant(-0.2))
  q_net = sequential.Sequential([dense_layer(n) for n in (100, 50)] + [q_values_layer])
  agent = dqn_agent.DqnAgent(
      train_env.time_step_spec(), train_env.action_spec(), q_network=q_net,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      td_errors_loss_fn=tfa_common.element_wise_squared_loss,
      train_step_counter=tf.Variable(0))
  agent.initialize()
  random_policy = random_tf_policy.RandomTFPolicy(train_env.time_step_spec(),
                                                  train_env.action_spec())

  def compute_avg_return(environment, policy, num_episodes=10):
    total_return = 0.0
    for _ in range(num_episodes):
      time_step = environment.reset()
      episode_return = 0.0
      while not time_step.is_last():
        action_step = policy.action(time_step)
        time_step = environment.step(action_step.action)
        episode_return += time_step.reward
      total_return += episode_return
    return (total_return / num_episodes).numpy()[0]

  table_name = 'uniform_table'
  signature = tensor_spec.add_outer_dim(tensor_spec.from_spec(agent.collect_data_spec))
  table = reverb.Table(table_name, max_size=replay_buffer_max_length,
                       sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                       rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature)
  reverb_server = reverb.Server([table])
  replay_buffer = reverb_replay_buffer.ReverbReplayBuffer(
      agent.collect_data_spec, table_name=table_name, sequence_length=2,
      local_server=reverb_server)
  rb_observer = reverb_utils.ReverbAddTrajectoryObserver(replay_buffer.py_client, table_name,
                                                         sequence_length=2)
  py_driver.PyDriver(env, py_tf_eager_policy.PyTFEagerPolicy(random_policy, use_tf_function=True),
                     [rb_observer], max_steps=initial_collect_steps).run(train_py_env.reset())
  dataset = replay_buffer.as_dataset(num_parallel_calls=3, sample_batch_size=batch_size,
                                     num_steps=2).prefetch(3)
  iterator = iter(dataset)

  agent.train = tfa_common.function(agent.train)
  agent.train_step_counter.assign(0)
  time_step = train_py_env.reset()
  collect_driver = py_driver.PyDriver(
      env, py_tf_eager_policy.PyTFEagerPolicy(agent.collect_policy, use_tf_function=True),
      [rb_observer], max_steps=1)
  for iteration in range(1, args.max_iterations + 1):
    time_step, _ = collect_driver.run(time_step)
    experience, _ = next(iterator)
    agent.train(experience)
    step = agent.train_step_counter.numpy()
    if step % args.eval_interval == 0:
      avg_return = compute_avg_return(eval_env, agent.policy, num_eval_episodes)
      print(f'step = {step}: Average Return = {avg_return:.1f} '
            f'({time.time() - START:.1f} s)', flush=True)
      if avg_return >= args.target:
        print(f'SOLVED seconds={time.time() - START:.2f} '
              f'env_steps={initial_collect_steps + iteration} train_steps={step}', flush=True)
        reverb_server.stop()
        return 0
  print(f'NOT SOLVED after {args.max_iterations} iterations', flush=True)
  reverb_server.stop()
  return 1


if __name__ == '__main__':
  raise SystemExit(main())
