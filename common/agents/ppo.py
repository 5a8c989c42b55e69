"""On-policy agent builders: PPO (the clipped objective of Schulman et al., 2017) and PPO-RNN.

Agent builders (select one with `make_agent.agent_fn = @ppo_agent` or `@ppo_rnn_agent`) of the
`families.OnPolicy` family: the data is consumed once, by the weights that produced it. The
agent is TF-Agents' `PPOClipAgent` set up as TF-Agents' `PPOLearner` needs it: values and
advantages computed before training (`agent.preprocess_sequence`, so that minibatches of single
steps can be shuffled) and the normalizers updated by the learner from each gathered batch, not
inside `agent.train`.
"""

from typing import Optional, Sequence

import gin
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.networks import actor_distribution_rnn_network
from tf_agents.networks import value_rnn_network

from common.agents import families
from common.agents import networks
from common.agents import seam
from common.errors import UserError

@gin.configurable(module='common')
def ppo_agent(time_step_spec, action_spec, train_step,
              actor: Optional[seam.ActorSlot] = None,
              actor_fc_layer_params: Sequence[int] = (64, 64),
              value_fc_layer_params: Sequence[int] = (64, 64),
              learning_rate: float = 3e-4,
              collect_sequence_length: int = 128,
              num_epochs: int = 10,
              minibatch_size: Optional[int] = 64,
              max_policy_lag: int = 1,
              importance_ratio_clipping: float = 0.2,
              lambda_value: float = 0.95,
              discount_factor: float = 0.99,
              entropy_regularization: float = 0.0,
              value_pred_loss_coef: float = 0.5,
              gradient_clipping: Optional[float] = 0.5,
              normalize_observations: bool = True,
              normalize_rewards: bool = True,
              conv_layer_params: Optional[Sequence[Sequence[int]]] = None,
              activation: str = 'tanh',
              shared_torso: bool = False) -> seam.AgentBuild:
  """PPOClipAgent over an ActorDistributionNetwork and a ValueNetwork, with Adam, GAE and
  TD(lambda) returns; discrete or continuous actions.

  Args:
    collect_sequence_length: Env steps per replay item (actors write items end to end, across
      episode ends, which PPO masks).
    num_epochs: Passes over each gathered batch.
    minibatch_size: Single steps per train step, shuffled; None trains on whole items.
    max_policy_lag: Learner iterations an item's weights may be behind; 0 is strictly
      on-policy (`families.OnPolicy`).
    importance_ratio_clipping: The clip range epsilon of the probability ratio.
    lambda_value: GAE's lambda.
    normalize_observations, normalize_rewards: Running normalizers, updated by the learner
      from each gathered batch; the observation normalizer travels with the policy weights.
      Image (uint8) observations are scaled inside the networks instead, and refuse it.
    conv_layer_params: (filters, kernel, stride) of convolutions before the dense layers of
      both networks, each network its own torso (`networks.NATURE_CONV_LAYERS` for Atari);
      uint8 observations are scaled to [0, 1] inside the networks (`networks.encoder_kwargs`).
    activation: The hidden layers' activation, 'tanh' or 'relu'.
    shared_torso: The value network reads the policy network's torso (its convolutions and
      `actor_fc_layer_params` layers) and adds `value_fc_layer_params` layers and its output,
      as in Schulman et al.'s Atari networks; the value loss then trains the torso too. On
      frames, a torso trained by the policy gradient alone loses its ReLU units: the frames'
      near-constant background makes each filter's weight updates coherent, and a filter
      pushed below zero everywhere gets no gradient back (docs/algorithms.md, PPO on Pong).
  """
  del actor  # Every actor explores by sampling the same stochastic policy.
  # The ranges of these arguments are checked before the builder runs (registry._RANGES).
  if normalize_observations and time_step_spec.observation.dtype == tf.uint8:
    raise UserError('ppo_agent.normalize_observations = True cannot apply to uint8 image '
                    'observations (the networks scale them to [0, 1] themselves): bind '
                    'ppo_agent.normalize_observations = False')
  if normalize_observations and not time_step_spec.observation.dtype.is_floating:
    raise UserError('ppo_agent.normalize_observations = True cannot apply to '
                    f'{time_step_spec.observation.dtype.name} observations (the networks one-hot '
                    'or cast them themselves): bind ppo_agent.normalize_observations = False')
  actor_net, value_net = networks.actor_and_value_networks(
      time_step_spec.observation, action_spec, actor_fc_layer_params, value_fc_layer_params,
      conv_layer_params, activation, shared_torso, 'ppo_agent')
  return _ppo(time_step_spec, action_spec, actor_net, value_net, train_step, learning_rate,
              collect_sequence_length, num_epochs, minibatch_size, max_policy_lag,
              importance_ratio_clipping, lambda_value, discount_factor, entropy_regularization,
              value_pred_loss_coef, gradient_clipping, normalize_observations, normalize_rewards)


@gin.configurable(module='common')
def ppo_rnn_agent(time_step_spec, action_spec, train_step,
                  actor: Optional[seam.ActorSlot] = None,
                  input_fc_layer_params: Sequence[int] = (64,),
                  lstm_size: Sequence[int] = (64,),
                  output_fc_layer_params: Sequence[int] = (64,),
                  learning_rate: float = 3e-4,
                  collect_sequence_length: int = 64,
                  num_epochs: int = 10,
                  max_policy_lag: int = 1,
                  importance_ratio_clipping: float = 0.2,
                  lambda_value: float = 0.95,
                  discount_factor: float = 0.99,
                  entropy_regularization: float = 0.0,
                  value_pred_loss_coef: float = 0.5,
                  gradient_clipping: Optional[float] = 0.5,
                  normalize_observations: bool = True,
                  normalize_rewards: bool = True) -> seam.AgentBuild:
  """PPO as `ppo_agent`, over an ActorDistributionRnnNetwork and a ValueRnnNetwork (dense,
  LSTM, dense; tanh).

  Each train step is one gathered batch of whole items (`families.OnPolicy.minibatch_size` is
  None: a recurrent network is unrolled over each item's time axis, so its steps cannot be
  shuffled apart), `num_epochs` steps per iteration. The learner unrolls both networks over
  each item from the zero state, as TF-Agents does; the networks reset their state at every
  episode start inside an item. The actors carry each environment's state from step to step.
  Other arguments as `ppo_agent`.
  """
  del actor
  actor_net = actor_distribution_rnn_network.ActorDistributionRnnNetwork(
      time_step_spec.observation, action_spec,
      input_fc_layer_params=tuple(input_fc_layer_params), lstm_size=tuple(lstm_size),
      output_fc_layer_params=tuple(output_fc_layer_params),
      activation_fn=tf.keras.activations.tanh)
  value_net = value_rnn_network.ValueRnnNetwork(
      time_step_spec.observation, input_fc_layer_params=tuple(input_fc_layer_params),
      lstm_size=tuple(lstm_size), output_fc_layer_params=tuple(output_fc_layer_params),
      activation_fn=tf.keras.activations.tanh)
  return _ppo(time_step_spec, action_spec, actor_net, value_net, train_step, learning_rate,
              collect_sequence_length, num_epochs, None, max_policy_lag,
              importance_ratio_clipping, lambda_value, discount_factor, entropy_regularization,
              value_pred_loss_coef, gradient_clipping, normalize_observations, normalize_rewards)


def _ppo(time_step_spec, action_spec, actor_net, value_net, train_step, learning_rate,
         collect_sequence_length, num_epochs, minibatch_size, max_policy_lag,
         importance_ratio_clipping, lambda_value, discount_factor, entropy_regularization,
         value_pred_loss_coef, gradient_clipping, normalize_observations,
         normalize_rewards) -> seam.AgentBuild:
  """The PPOClipAgent of both builders, set up for `PPOLearner`, and its AgentBuild."""
  agent = ppo_clip_agent.PPOClipAgent(
      time_step_spec, action_spec,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-5),
      actor_net=actor_net,
      value_net=value_net,
      greedy_eval=True,
      importance_ratio_clipping=importance_ratio_clipping,
      lambda_value=lambda_value,
      discount_factor=discount_factor,
      entropy_regularization=entropy_regularization,
      value_pred_loss_coef=value_pred_loss_coef,
      gradient_clipping=gradient_clipping,
      num_epochs=1,  # The learner's epochs (PPOLearner), each over shuffled minibatches.
      use_gae=True,
      use_td_lambda_return=True,
      normalize_rewards=normalize_rewards,
      normalize_observations=normalize_observations,
      compute_value_and_advantage_in_train=False,
      update_normalizers_in_train=False,
      train_step_counter=train_step)
  return seam.AgentBuild(
      agent, collect_sequence_length, td_errors=None,
      family=families.OnPolicy(num_epochs=num_epochs, minibatch_size=minibatch_size,
                                max_policy_lag=max_policy_lag))
