"""Value-based agent builders for discrete actions: DQN, DDQN (double_q), C51, DQN-RNN and
tabular Q-learning.

Each is an agent builder of the seam in `agents` (select it with `make_agent.agent_fn`); all take
n-step returns (`n_step_update`, so replay items are n + 1 steps), importance weights in
`agent.train(experience, weights)`, and report one TD error per item for prioritized replay.
"""

from typing import Optional, Sequence

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.categorical_dqn import categorical_dqn_agent as c51_lib
from tf_agents.agents.dqn import dqn_agent as dqn_lib
from tf_agents.networks import categorical_q_network
from tf_agents.networks import q_network
from tf_agents.networks import q_rnn_network
from tf_agents.networks import sequential
from tf_agents.trajectories import trajectory
from tf_agents.utils import common as tfa_common
from tf_agents.utils import value_ops

from common.agents import exploration
from common.agents import networks
from common.agents import seam
from common.errors import UserError


def _check_n_step(n_step_update: int) -> None:
  if n_step_update < 1:
    raise UserError(f'n_step_update={n_step_update} must be >= 1: bind a positive n in the '
                    'gin file')


@gin.configurable(module='common')
def dqn_agent(time_step_spec, action_spec, train_step,
              actor: Optional[seam.ActorSlot] = None,
              fc_layer_params: Sequence[int] = (100, 50),
              learning_rate: float = 1e-3,
              epsilon_greedy: float = 0.1,
              gamma: float = 1.0,
              target_update_period: int = 1,
              target_update_tau: float = 1.0,
              n_step_update: int = 1,
              double_q: bool = False,
              conv_layer_params: Optional[Sequence[Sequence[int]]] = None) -> seam.AgentBuild:
  """DqnAgent (or DdqnAgent with `double_q`) with a QNetwork of `fc_layer_params`, Adam and a
  squared TD loss.

  Args:
    conv_layer_params: (filters, kernel, stride) of convolutions before the dense layers, for
      image observations (`networks.NATURE_CONV_LAYERS`: the Nature DQN torso); uint8
      observations are scaled to [0, 1] inside the network (`networks.encoder_kwargs`).
    epsilon_greedy: Collect exploration; per actor through `collect_epsilon` (Ape-X ladder).
    n_step_update: Steps of reward before bootstrapping; replay items are n + 1 steps.
    double_q: Double DQN (van Hasselt et al., 2016): the online network picks the next action,
      the target network values it.
  """
  algorithm = 'DDQN' if double_q else 'DQN'
  seam.require_discrete(action_spec, algorithm)
  _check_n_step(n_step_update)
  network = q_network.QNetwork(
      time_step_spec.observation, action_spec, fc_layer_params=tuple(fc_layer_params),
      **networks.encoder_kwargs(time_step_spec.observation, conv_layer_params))
  agent = _dqn(time_step_spec, action_spec, network, train_step, actor, learning_rate,
               epsilon_greedy, gamma, target_update_period, target_update_tau, double_q,
               n_step_update=n_step_update)
  return seam.AgentBuild(agent, n_step_update + 1, seam.loss_info_td_error)


def _dqn(time_step_spec, action_spec, network, train_step, actor, learning_rate,
         epsilon_greedy, gamma, target_update_period, target_update_tau, double_q,
         n_step_update=1, td_errors_loss_fn=tfa_common.element_wise_squared_loss,
         optimizer=None):
  """DqnAgent (DdqnAgent with `double_q`) over `network`, with Adam (or `optimizer`) and a
  squared TD loss."""
  agent_class = dqn_lib.DdqnAgent if double_q else dqn_lib.DqnAgent
  return agent_class(
      time_step_spec, action_spec,
      q_network=network,
      optimizer=optimizer or tf.keras.optimizers.Adam(learning_rate=learning_rate),
      epsilon_greedy=exploration.collect_epsilon(epsilon_greedy, actor),
      gamma=gamma,
      n_step_update=n_step_update,
      target_update_period=target_update_period,
      target_update_tau=target_update_tau,
      td_errors_loss_fn=td_errors_loss_fn,
      train_step_counter=train_step)


class WeightedCategoricalDqnAgent(c51_lib.CategoricalDqnAgent):
  """CategoricalDqnAgent whose loss applies importance weights and reports per-item losses.

  The stock `CategoricalDqnAgent._loss` accepts `weights` but ignores them, and returns no
  per-item error. This loss is the stock one for feed-forward networks (same n-step target
  support, projection and cross-entropy; tests/test_off_policy.py checks that they agree) with
  `weights` applied, and `extra.td_error` set to each item's cross-entropy, the priority
  Rainbow (Hessel et al., 2018) uses for a distributional agent.
  """

  def _loss(self, experience, td_errors_loss_fn=None, gamma=1.0, reward_scale_factor=1.0,
            weights=None, training=False):
    del td_errors_loss_fn  # The distributional loss is a cross-entropy.
    if self._q_network.state_spec:
      raise UserError('c51_agent supports feed-forward Q networks only')
    first_two = tf.nest.map_structure(lambda x: x[:, :2], experience)
    last_two = tf.nest.map_structure(lambda x: x[:, -2:], experience)
    time_steps, policy_steps, _ = trajectory.experience_to_transitions(first_two, True)
    _, _, next_time_steps = trajectory.experience_to_transitions(last_two, True)
    actions = tf.nest.flatten(policy_steps.action)[0]
    if actions.shape.rank > 1:
      actions = tf.squeeze(actions, list(range(1, actions.shape.rank)))
    with tf.name_scope('critic_loss'):
      q_logits, _ = self._q_network(time_steps.observation, step_type=time_steps.step_type,
                                    training=training)
      next_q_distribution = self._next_q_distribution(next_time_steps)
      rewards = reward_scale_factor * experience.reward[:, :-1]
      discounts = gamma * experience.discount[:, :-1]
      returns = value_ops.discounted_return(
          rewards=rewards, discounts=discounts,
          final_value=tf.zeros_like(rewards[:, 0]), time_major=False,
          provide_all_returns=False)
      target_support = (returns[:, None]
                        + tf.reduce_prod(discounts, axis=1)[:, None] * self._support[None, :])
      target_distribution = tf.stop_gradient(c51_lib.project_distribution(
          target_support, next_q_distribution, self._support))
      chosen_logits = tf.gather(q_logits, tf.cast(actions, tf.int32), axis=1, batch_dims=1)
      per_item = tf.nn.softmax_cross_entropy_with_logits(labels=target_distribution,
                                                         logits=chosen_logits)
      aggregated = tfa_common.aggregate_losses(
          per_example_loss=per_item, sample_weight=weights,
          regularization_loss=self._q_network.losses)
      tfa_common.summarize_scalar_dict(
          {'critic_loss': aggregated.weighted, 'reg_loss': aggregated.regularization,
           'total_loss': aggregated.total_loss},
          step=self.train_step_counter, name_scope='Losses/')
    return tf_agent.LossInfo(aggregated.total_loss,
                             dqn_lib.DqnLossInfo(td_loss=aggregated.weighted, td_error=per_item))


@gin.configurable(module='common')
def q_learning_agent(time_step_spec, action_spec, train_step,
                     actor: Optional[seam.ActorSlot] = None,
                     learning_rate: float = 0.1,
                     final_learning_rate: Optional[float] = None,
                     decay_steps: int = 0,
                     epsilon_greedy: float = 0.1,
                     gamma: float = 0.99) -> seam.AgentBuild:
  """Tabular Q-learning (Watkins, 1989) for a Discrete observation and Discrete actions.

  The Q-table is a linear Q-network with no hidden layer and no bias over the one-hot encoding
  of the observation (`networks.observation_preprocessing`): its kernel is the table, one row
  per state, initialized to 0. Each train step applies Watkins' update to every transition of
  the sampled batch, as plain SGD with step size `learning_rate` (alpha) on the loss
  0.5 * (r + gamma * max_a' Q(s', a') - Q(s, a))^2 of each transition:
  Q(s, a) += alpha * (r + gamma * max_a' Q(s', a') - Q(s, a)), with Q(s', .) = 0 at a
  termination and bootstrapped at a truncation. The target is read from a copy of the table
  made after every train step (DqnAgent's target network, updated every step with tau 1), so it
  is the table before the step's update, as in Watkins' rule. Collection is epsilon-greedy.

  Transitions come from the replay table like every off-policy agent's (uniform sampling);
  the gin files say why replay is their default.

  With a constant alpha the table keeps moving by about alpha times the TD errors' spread, and
  on a stochastic task (the slippery FrozenLake) the greedy action flips between near-tied
  actions from one train step to the next. Q-learning converges with step sizes that decay
  (Watkins and Dayan, 1992): `final_learning_rate` and `decay_steps` make alpha fall
  linearly from `learning_rate` to `final_learning_rate` over the first `decay_steps` train
  steps, and stay there.

  Args:
    learning_rate: alpha, the step size of each transition's update (at the start).
    final_learning_rate: alpha after `decay_steps` train steps; None keeps it constant.
    decay_steps: Train steps over which alpha decays (with `final_learning_rate`).
    epsilon_greedy: Collect exploration (per actor through `collect_epsilon`).
    gamma: The discount.
  """
  seam.require_discrete(action_spec, 'q_learning_agent')
  observation_spec = time_step_spec.observation
  one_hot = networks.observation_preprocessing(observation_spec)
  if not (observation_spec.dtype.is_integer and tuple(observation_spec.shape) == ()
          and one_hot is not None):
    raise UserError('q_learning_agent needs a Discrete observation (one integer state, as '
                    'FrozenLake or Taxi observe), but the environment observes '
                    f'{observation_spec.dtype.name}{list(observation_spec.shape)}: use '
                    'make_agent.agent_fn = @dqn_agent, whose network generalizes over states')
  num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
  table = sequential.Sequential(
      [one_hot, tf.keras.layers.Dense(num_actions, use_bias=False,
                                      kernel_initializer='zeros', name='q_table')],
      input_spec=observation_spec, name='QTable')
  if final_learning_rate is not None and decay_steps < 1:
    raise UserError('q_learning_agent.final_learning_rate needs q_learning_agent.decay_steps '
                    '>= 1, the train steps over which alpha decays: bind both, or neither')
  alpha = learning_rate
  if final_learning_rate is not None:
    alpha = tf.keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps, end_learning_rate=final_learning_rate, power=1.0)
  agent = _dqn(time_step_spec, action_spec, table, train_step, actor, learning_rate,
               epsilon_greedy, gamma, target_update_period=1, target_update_tau=1.0,
               double_q=False, td_errors_loss_fn=_per_transition_sgd_loss,
               optimizer=tf.keras.optimizers.SGD(learning_rate=alpha))
  return seam.AgentBuild(agent, 2, seam.loss_info_td_error)


def _per_transition_sgd_loss(td_targets, q_values):
  """0.5 * (target - Q)^2 per transition, scaled so that SGD steps each transition by alpha.

  DqnAgent averages the per-item losses over the global batch (the items of every replica),
  and the strategy sums the replicas' gradients; multiplying by the global batch size undoes
  the mean, so the gradient of each transition's Q(s, a) is -(target - Q).
  """
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  global_batch = tf.cast(tf.size(td_targets) * replicas, tf.float32)
  return 0.5 * tf.square(td_targets - q_values) * global_batch


@gin.configurable(module='common')
def c51_agent(time_step_spec, action_spec, train_step,
              actor: Optional[seam.ActorSlot] = None,
              fc_layer_params: Sequence[int] = (100,),
              num_atoms: int = 51,
              min_q_value: float = -20.0,
              max_q_value: float = 20.0,
              learning_rate: float = 1e-3,
              epsilon_greedy: float = 0.1,
              gamma: float = 0.99,
              target_update_period: int = 1,
              target_update_tau: float = 1.0,
              n_step_update: int = 2,
              conv_layer_params: Optional[Sequence[Sequence[int]]] = None) -> seam.AgentBuild:
  """C51 (Bellemare et al., 2017): a CategoricalQNetwork of `num_atoms` atoms on
  [min_q_value, max_q_value], Adam; defaults are the TF-Agents C51 tutorial's.
  `conv_layer_params` as `dqn_agent`'s.
  """
  seam.require_discrete(action_spec, 'C51')
  _check_n_step(n_step_update)
  if not min_q_value < max_q_value or num_atoms < 2:
    raise UserError(f'c51_agent needs min_q_value < max_q_value and num_atoms >= 2 (got '
                    f'{min_q_value}, {max_q_value}, {num_atoms}): fix them in the gin file')
  network = categorical_q_network.CategoricalQNetwork(
      time_step_spec.observation, action_spec, num_atoms=num_atoms,
      fc_layer_params=tuple(fc_layer_params),
      **networks.encoder_kwargs(time_step_spec.observation, conv_layer_params))
  agent = WeightedCategoricalDqnAgent(
      time_step_spec, action_spec,
      categorical_q_network=network,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      min_q_value=min_q_value,
      max_q_value=max_q_value,
      epsilon_greedy=exploration.collect_epsilon(epsilon_greedy, actor),
      n_step_update=n_step_update,
      gamma=gamma,
      target_update_period=target_update_period,
      target_update_tau=target_update_tau,
      train_step_counter=train_step)
  return seam.AgentBuild(agent, n_step_update + 1, seam.loss_info_td_error)


def _sequence_td_error(loss_info) -> tf.Tensor:
  """One TD error per sequence item: the mean |TD error| over its transitions."""
  error = loss_info.extra.td_error
  if error.shape.rank > 1:
    error = tf.reduce_mean(tf.abs(error), axis=list(range(1, error.shape.rank)))
  return error


@gin.configurable(module='common')
def dqn_rnn_agent(time_step_spec, action_spec, train_step,
                  actor: Optional[seam.ActorSlot] = None,
                  input_fc_layer_params: Sequence[int] = (50,),
                  lstm_size: Sequence[int] = (20,),
                  output_fc_layer_params: Sequence[int] = (20,),
                  train_sequence_length: int = 10,
                  learning_rate: float = 1e-3,
                  epsilon_greedy: float = 0.1,
                  gamma: float = 0.99,
                  target_update_period: int = 1,
                  target_update_tau: float = 1.0,
                  double_q: bool = False,
                  burn_in: int = 0) -> seam.AgentBuild:
  """DqnAgent over a QRnnNetwork (dense, LSTM, dense) trained on sequences of
  `train_sequence_length` steps; defaults are TF-Agents' DQN-RNN example's.

  Each replay item is a window of `train_sequence_length` consecutive steps, which may run on
  across an episode end, as TF-Agents' replay buffers sample them
  (`AgentBuild.items_span_episodes`): the network restarts from the zero state at the FIRST
  step inside it, and the LAST -> FIRST transition is masked out of the loss. So every
  transition, the terminal ones too, is in as many windows as any other, and episodes shorter
  than a window are trained on. The learner unrolls the network over each window from the
  zero state, as TF-Agents does (no stored state). The actors carry each environment's LSTM
  state from step to step.

  Args:
    burn_in: The first `burn_in` transitions of each window only warm the LSTM state up: the
      network unrolls over them, but they add nothing to the loss (R2D2's burn-in, Kapturowski
      et al., 2019). 0 trains on every transition, as TF-Agents does.
  """
  seam.require_discrete(action_spec, 'DQN-RNN')
  if train_sequence_length < 2:
    raise UserError(f'dqn_rnn_agent.train_sequence_length={train_sequence_length} must be >= 2: '
                    'a TD target needs a next step')
  if not 0 <= burn_in < train_sequence_length - 1:
    raise UserError(f'dqn_rnn_agent.burn_in={burn_in} must be in [0, train_sequence_length - 1 '
                    f'= {train_sequence_length - 1}): a window must train on at least one '
                    'transition')
  network = q_rnn_network.QRnnNetwork(
      time_step_spec.observation, action_spec,
      preprocessing_layers=networks.observation_preprocessing(time_step_spec.observation),
      input_fc_layer_params=tuple(input_fc_layer_params), lstm_size=tuple(lstm_size),
      output_fc_layer_params=tuple(output_fc_layer_params))
  agent = _dqn(time_step_spec, action_spec, network, train_step, actor, learning_rate,
               epsilon_greedy, gamma, target_update_period, target_update_tau, double_q,
               td_errors_loss_fn=burn_in_loss(burn_in))
  return seam.AgentBuild(agent, train_sequence_length, _sequence_td_error,
                           items_span_episodes=True)


def burn_in_loss(burn_in: int):
  """The squared TD loss with the first `burn_in` transitions of each sequence masked out.

  DqnAgent calls it with [batch, time] targets and Q values for a recurrent network (and with
  [batch] ones for a feed-forward network, which it leaves as they are).
  """
  def loss(td_targets, q_values):
    element = tfa_common.element_wise_squared_loss(td_targets, q_values)
    if burn_in == 0 or element.shape.rank < 2:
      return element
    trained = tf.range(tf.shape(element)[1]) >= burn_in
    return element * tf.cast(trained, element.dtype)[None, :]
  return loss
