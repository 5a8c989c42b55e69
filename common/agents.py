"""Agents (DQN for discrete actions, SAC for continuous ones) and the variables they share.

`make_agent` is the single entry point; the gin file picks the algorithm with
`make_agent.agent_fn = @dqn_agent` or `@sac_agent`. Hyperparameters are bound on those two.
"""

from typing import Callable, Sequence

import gin
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent as dqn_lib
from tf_agents.agents.sac import sac_agent as sac_lib
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.agents.ddpg import critic_network
from tf_agents.networks import actor_distribution_network
from tf_agents.networks import q_network
from tf_agents.policies import greedy_policy as greedy_policy_lib
from tf_agents.utils import common as tfa_common

from common import constants
from common.errors import UserError


@gin.configurable(module='common')
def dqn_agent(time_step_spec, action_spec, train_step,
              fc_layer_params: Sequence[int] = (100, 50),
              learning_rate: float = 1e-3,
              epsilon_greedy: float = 0.1,
              gamma: float = 1.0,
              target_update_period: int = 1,
              target_update_tau: float = 1.0,
              n_step_update: int = 1):
  """Makes a DqnAgent with a QNetwork of `fc_layer_params`, Adam and squared TD loss."""
  if not tf.nest.flatten(action_spec)[0].dtype.is_integer:
    raise UserError('DQN needs a discrete action space, but the environment\'s actions are '
                    'continuous: use make_agent.agent_fn = @sac_agent')
  network = q_network.QNetwork(time_step_spec.observation, action_spec,
                               fc_layer_params=tuple(fc_layer_params))
  return dqn_lib.DqnAgent(
      time_step_spec, action_spec,
      q_network=network,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      epsilon_greedy=epsilon_greedy,
      gamma=gamma,
      n_step_update=n_step_update,
      target_update_period=target_update_period,
      target_update_tau=target_update_tau,
      td_errors_loss_fn=tfa_common.element_wise_squared_loss,
      train_step_counter=train_step)


@gin.configurable(module='common')
def sac_agent(time_step_spec, action_spec, train_step,
              actor_fc_layer_params: Sequence[int] = (256, 256),
              critic_joint_fc_layer_params: Sequence[int] = (256, 256),
              actor_learning_rate: float = 3e-4,
              critic_learning_rate: float = 3e-4,
              alpha_learning_rate: float = 3e-4,
              target_update_tau: float = 0.005,
              target_update_period: int = 1,
              gamma: float = 0.99,
              reward_scale_factor: float = 1.0):
  """Makes a SacAgent with the SAC Minitaur tutorial's networks (tanh-normal actor)."""
  if tf.nest.flatten(action_spec)[0].dtype.is_integer:
    raise UserError('SAC needs a continuous action space, but the environment\'s actions are '
                    'discrete: use make_agent.agent_fn = @dqn_agent')
  observation_spec = time_step_spec.observation
  critic_net = critic_network.CriticNetwork(
      (observation_spec, action_spec),
      observation_fc_layer_params=None,
      action_fc_layer_params=None,
      joint_fc_layer_params=tuple(critic_joint_fc_layer_params),
      kernel_initializer='glorot_uniform',
      last_kernel_initializer='glorot_uniform')
  actor_net = actor_distribution_network.ActorDistributionNetwork(
      observation_spec, action_spec,
      fc_layer_params=tuple(actor_fc_layer_params),
      continuous_projection_net=tanh_normal_projection_network.TanhNormalProjectionNetwork)
  return sac_lib.SacAgent(
      time_step_spec, action_spec,
      actor_network=actor_net,
      critic_network=critic_net,
      actor_optimizer=tf.keras.optimizers.Adam(learning_rate=actor_learning_rate),
      critic_optimizer=tf.keras.optimizers.Adam(learning_rate=critic_learning_rate),
      alpha_optimizer=tf.keras.optimizers.Adam(learning_rate=alpha_learning_rate),
      target_update_tau=target_update_tau,
      target_update_period=target_update_period,
      td_errors_loss_fn=tf.math.squared_difference,
      gamma=gamma,
      reward_scale_factor=reward_scale_factor,
      train_step_counter=train_step)


@gin.configurable(allowlist=['agent_fn'])
def make_agent(time_step_spec, action_spec, train_step=None,
               agent_fn: Callable = gin.REQUIRED):
  """Makes the gin-selected agent and initializes its variables.

  Args:
    time_step_spec: From `environments.environment_specs()`.
    action_spec: From `environments.environment_specs()`.
    train_step: The int64 train-step variable; a new one at 0 if None.
    agent_fn: `dqn_agent` or `sac_agent` (gin).

  Returns:
    A TF-Agents agent whose variables exist (so their shapes give the variable-table signature).
  """
  if train_step is None:
    train_step = tfa_common.create_variable('train_step')
  agent = agent_fn(time_step_spec, action_spec, train_step)
  agent.initialize()
  return agent


def greedy_policy(agent):
  """The agent's deterministic policy: what eval plays and the learner exports.

  DQN's `agent.policy` is already greedy (argmax Q). SAC's `agent.policy` is the same
  stochastic actor policy as its collect policy, so it is wrapped to play the mode.
  """
  policy = agent.policy
  if not isinstance(policy, greedy_policy_lib.GreedyPolicy):
    policy = greedy_policy_lib.GreedyPolicy(policy)
  return policy


def policy_variables(agent, train_step):
  """The nest pushed to and pulled from the variable table (ReverbVariableContainer's keys).

  The greedy and the collect policy share these variables, so eval and the actors load the same
  nest.
  """
  return {
      constants.POLICY_KEY: agent.collect_policy.variables(),
      constants.TRAIN_STEP_KEY: train_step,
  }


def variables_signature(variables):
  """TensorSpecs of a variables nest: the variable table's signature."""
  return tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), variables)
