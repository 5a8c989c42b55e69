"""IMPALA (Espeholt et al., 2018): an actor-critic trained off-policy with V-trace targets.

The agent builder `impala_agent` (select it with `make_agent.agent_fn = @impala_agent`) is of
the `families.Impala` family: actors write fixed-length trajectories end to end (consecutive
items share one step, the bootstrap of the first and the start of the next), across episode
ends, with the behaviour policy's logits of every step, to a queue; the learner trains on each
item once, whatever weights produced it, correcting for the lag with V-trace
(`vtrace.vtrace`). `ImpalaAgent.train` takes a batch of such items [B, T] and trains the
policy-gradient, baseline and entropy losses of the paper over its T - 1 transitions; with
`ppo_clip` the policy gradient is PPO's clipped surrogate on the V-trace advantages, with the
ratio to the behaviour policy (what RLlib calls APPO).

TF-Agents has no V-trace or IMPALA agent; `vtrace.py` is written from the paper and
tests/test_impala.py checks it against an independent NumPy implementation.
"""

from typing import NamedTuple, Optional, Sequence

import gin
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.agents import tf_agent
from tf_agents.policies import actor_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step

from common.agents import families
from common.agents import networks
from common.agents import seam
from common.agents import vtrace as vtrace_lib

# The key of the behaviour policy's logits in each step's policy info.
LOGITS_KEY = 'logits'

class ImpalaLossInfo(NamedTuple):
  """The parts of the loss, and the mean importance ratio pi / mu of the batch's transitions."""
  policy_gradient_loss: tf.Tensor
  baseline_loss: tf.Tensor
  entropy_loss: tf.Tensor
  mean_rho: tf.Tensor


class BehaviourPolicy(actor_policy.ActorPolicy):
  """The collect policy: samples the actor network's categorical distribution and records its
  logits in the step's info (`{LOGITS_KEY: [num_actions]}`), from which the learner computes
  mu(a | x) of the action taken."""

  def __init__(self, time_step_spec, action_spec, actor_network, num_actions: int):
    super().__init__(time_step_spec, action_spec, actor_network,
                     info_spec={LOGITS_KEY: tf.TensorSpec([num_actions], tf.float32,
                                                          name=LOGITS_KEY)})

  def _distribution(self, time_step, policy_state):
    step = super()._distribution(time_step, policy_state)
    logits = tf.cast(step.action.logits_parameter(), tf.float32)
    return policy_step.PolicyStep(step.action, step.state, {LOGITS_KEY: logits})


class ImpalaAgent(tf_agent.TFAgent):
  """An actor network (categorical policy) and a value network, trained with V-trace.

  `train(experience, weights)` takes trajectories [B, T] whose policy info holds the behaviour
  logits; `weights` [B] weighs each item (0 drops it: the learner's lag limit).
  """

  def __init__(self, time_step_spec, action_spec, actor_net, value_net,
               optimizer: tf.keras.optimizers.Optimizer, discount_factor: float,
               rho_clip: Optional[float], c_clip: Optional[float], pg_rho_clip: Optional[float],
               baseline_cost: float, entropy_cost: float, gradient_clipping: Optional[float],
               ppo_clip: Optional[float], train_step_counter: tf.Variable):
    num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
    actor_net.create_variables(time_step_spec.observation)
    value_net.create_variables(time_step_spec.observation)
    self._actor_net, self._value_net = actor_net, value_net
    self._optimizer = optimizer
    self._discount_factor = discount_factor
    self._clips = (rho_clip, c_clip, pg_rho_clip)
    self._baseline_cost, self._entropy_cost = baseline_cost, entropy_cost
    self._gradient_clipping, self._ppo_clip = gradient_clipping, ppo_clip
    self._minimum_action = int(action_spec.minimum)
    collect_policy = BehaviourPolicy(time_step_spec, action_spec, actor_net, num_actions)
    policy = actor_policy.ActorPolicy(time_step_spec, action_spec, actor_net)
    super().__init__(time_step_spec, action_spec, policy, collect_policy,
                     train_sequence_length=None, train_step_counter=train_step_counter)

  def _variables_to_train(self):
    unique = {}
    for variable in self._actor_net.trainable_variables + self._value_net.trainable_variables:
      unique.setdefault(variable.ref(), variable)  # A shared torso belongs to both networks.
    return list(unique.values())

  def _initialize(self):
    return tf.no_op()

  def _train(self, experience, weights=None):
    variables = self._variables_to_train()
    with tf.GradientTape() as tape:
      loss_info = self._loss(experience, weights=weights, training=True)
    gradients = tape.gradient(loss_info.loss, variables)
    if self._gradient_clipping:
      gradients, _ = tf.clip_by_global_norm(gradients, self._gradient_clipping)
    self._optimizer.apply_gradients(zip(gradients, variables))
    self.train_step_counter.assign_add(1)
    return loss_info

  def _loss(self, experience, weights=None, training=False):
    """The IMPALA loss of a batch of trajectories [B, T] (T - 1 transitions each)."""
    observation, step_type = experience.observation, experience.step_type
    distribution, values = networks.policy_and_value(self._actor_net, self._value_net,
                                                     observation, step_type, training)
    actions = tf.cast(experience.action, tf.int32) - self._minimum_action
    target_log_probs = distribution.log_prob(actions)[:, :-1]
    behaviour = tfp.distributions.Categorical(logits=experience.policy_info[LOGITS_KEY])
    log_rhos = target_log_probs - behaviour.log_prob(actions)[:, :-1]
    # Step t is the transition x_t -> x_{t+1} unless x_t is an episode's LAST observation.
    mask = tf.cast(~experience.is_boundary()[:, :-1], tf.float32)
    discounts = self._discount_factor * tf.cast(experience.discount[:, :-1], tf.float32) * mask
    rewards = tf.cast(experience.reward[:, :-1], tf.float32) * mask
    rho_clip, c_clip, pg_rho_clip = self._clips
    returns = vtrace_lib.vtrace(log_rhos, discounts, rewards, values[:, :-1], values[:, -1],
                                mask=mask, clip_rho_threshold=rho_clip,
                                clip_c_threshold=c_clip, clip_pg_rho_threshold=pg_rho_clip)
    advantages = returns.pg_advantages
    if self._ppo_clip is None:
      pg_losses = -target_log_probs * advantages
    else:
      ratio = tf.exp(log_rhos)
      clipped = tf.clip_by_value(ratio, 1.0 - self._ppo_clip, 1.0 + self._ppo_clip)
      pg_losses = -tf.minimum(ratio * advantages, clipped * advantages)
    baseline_losses = 0.5 * tf.square(returns.vs - values[:, :-1])
    entropy_losses = -distribution.entropy()[:, :-1]
    if weights is not None:
      mask *= tf.cast(tf.reshape(weights, [-1, 1]), tf.float32)
    # The mean over the kept transitions of this replica, divided by the replicas, whose
    # gradients the strategy sums.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    count = tf.maximum(tf.reduce_sum(mask), 1.0) * replicas
    mean = lambda losses: tf.reduce_sum(mask * losses) / count
    pg_loss, baseline_loss, entropy_loss = (mean(pg_losses), mean(baseline_losses),
                                            mean(entropy_losses))
    total = pg_loss + self._baseline_cost * baseline_loss + self._entropy_cost * entropy_loss
    return tf_agent.LossInfo(total, ImpalaLossInfo(pg_loss, baseline_loss, entropy_loss,
                                                   mean(tf.exp(log_rhos))))


@gin.configurable(module='common')
def impala_agent(time_step_spec, action_spec, train_step,
                 actor: Optional[seam.ActorSlot] = None,
                 actor_fc_layer_params: Sequence[int] = (64, 64),
                 value_fc_layer_params: Sequence[int] = (64, 64),
                 conv_layer_params: Optional[Sequence[Sequence[int]]] = None,
                 activation: str = 'tanh',
                 shared_torso: bool = False,
                 learning_rate: float = 6e-4,
                 unroll_length: int = 20,
                 discount_factor: float = 0.99,
                 rho_clip: Optional[float] = 1.0,
                 c_clip: Optional[float] = 1.0,
                 pg_rho_clip: Optional[float] = 1.0,
                 baseline_cost: float = 0.5,
                 entropy_cost: float = 0.01,
                 gradient_clipping: Optional[float] = 40.0,
                 ppo_clip: Optional[float] = None,
                 max_policy_lag: Optional[int] = None,
                 queue_batches: int = 2) -> seam.AgentBuild:
  """IMPALA with V-trace over an ActorDistributionNetwork and a ValueNetwork, Adam; discrete
  actions.

  Args:
    actor_fc_layer_params, value_fc_layer_params: Dense layers of each network (with
      `shared_torso`, the value network's layers on the policy network's torso).
    conv_layer_params: (filters, kernel, stride) of convolutions before the dense layers
      (`networks.NATURE_CONV_LAYERS` for Atari); uint8 observations are scaled to [0, 1] and
      Discrete ones one-hot encoded inside the networks (`networks.encoder_kwargs`).
    activation: The hidden layers' activation, 'tanh' or 'relu'.
    shared_torso: The value network reads the policy network's torso (as in the paper's Atari
      networks); the baseline loss then trains the torso too.
    learning_rate: Adam's step size.
    unroll_length: Transitions per replay item; an item holds `unroll_length + 1` steps, the
      last one the bootstrap (and the first step of the actor's next item).
    rho_clip, c_clip, pg_rho_clip: V-trace's rho-bar, c-bar and the advantages' rho-bar (the
      paper's defaults: 1); None does not clip.
    baseline_cost, entropy_cost: Weights of the baseline and entropy losses.
    gradient_clipping: Global-norm clip of the gradients; None does not clip.
    ppo_clip: If set, the policy gradient is PPO's clipped surrogate with this epsilon on the
      V-trace advantages, the ratio taken to the behaviour policy (RLlib's APPO).
    max_policy_lag: Learner train steps an item's weights may be behind the learner's; older
      items are dropped (counted in the learner's log). None: no item is dropped, V-trace
      corrects for any lag.
    queue_batches: The queue holds this many learner batches (`LearnerConfig.batch_size`
      items each); while it is full, actors wait.
  """
  del actor  # Every actor samples the same stochastic policy.
  seam.require_discrete(action_spec, 'impala_agent')
  actor_net, value_net = networks.actor_and_value_networks(
      time_step_spec.observation, action_spec, actor_fc_layer_params, value_fc_layer_params,
      conv_layer_params, activation, shared_torso, 'impala_agent')
  agent = ImpalaAgent(
      time_step_spec, tensor_spec.from_spec(action_spec), actor_net, value_net,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      discount_factor=discount_factor, rho_clip=rho_clip, c_clip=c_clip,
      pg_rho_clip=pg_rho_clip, baseline_cost=baseline_cost, entropy_cost=entropy_cost,
      gradient_clipping=gradient_clipping, ppo_clip=ppo_clip, train_step_counter=train_step)
  return seam.AgentBuild(
      agent, unroll_length + 1, td_errors=None,
      family=families.Impala(max_policy_lag=max_policy_lag, queue_batches=queue_batches))
