"""Actor-critic agent builders for continuous actions: SAC, TD3 and DDPG.

Each is an agent builder of the seam in `agents` (select it with `make_agent.agent_fn`). Their
critics learn from one-step TD targets on 2-step replay items; `agent.train(experience, weights)`
applies importance weights, and the critics' element-wise TD loss goes through a
`TdErrorRecorder`, which gives prioritized replay one TD error per item.
"""

from typing import Optional, Sequence

import gin
import tensorflow as tf
from tf_agents.agents.ddpg import actor_network
from tf_agents.agents.ddpg import ddpg_agent as ddpg_lib
from tf_agents.agents.sac import sac_agent as sac_lib
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.agents.td3 import td3_agent as td3_lib
from tf_agents.networks import actor_distribution_network
from tf_agents.policies import actor_policy
from tf_agents.policies import gaussian_policy
from tf_agents.utils import common as tfa_common

from common.agents import networks
from common.agents import seam


def _deterministic_actor_critic(time_step_spec, action_spec, actor_fc_layer_params,
                                critic_joint_fc_layer_params, actor_learning_rate,
                                critic_learning_rate):
  """The networks and optimizers that TD3 and DDPG share: a deterministic actor, a critic."""
  observation_spec = time_step_spec.observation
  seam.require_float_observations(observation_spec, 'TD3 and DDPG')
  return dict(
      actor_network=actor_network.ActorNetwork(observation_spec, action_spec,
                                               fc_layer_params=tuple(actor_fc_layer_params)),
      critic_network=networks.critic_network_for(observation_spec, action_spec,
                                                  critic_joint_fc_layer_params),
      actor_optimizer=tf.keras.optimizers.Adam(learning_rate=actor_learning_rate),
      critic_optimizer=tf.keras.optimizers.Adam(learning_rate=critic_learning_rate))


@gin.configurable(module='common')
def sac_agent(time_step_spec, action_spec, train_step,
              actor: Optional[seam.ActorSlot] = None,
              actor_fc_layer_params: Sequence[int] = (256, 256),
              critic_joint_fc_layer_params: Sequence[int] = (256, 256),
              actor_learning_rate: float = 3e-4,
              critic_learning_rate: float = 3e-4,
              alpha_learning_rate: float = 3e-4,
              target_update_tau: float = 0.005,
              target_update_period: int = 1,
              gamma: float = 0.99,
              reward_scale_factor: float = 1.0) -> seam.AgentBuild:
  """SacAgent with the SAC Minitaur tutorial's networks (tanh-normal actor)."""
  del actor  # SAC explores through its own entropy-regularized policy.
  seam.require_continuous(action_spec, 'SAC')
  seam.require_float_observations(time_step_spec.observation, 'SAC')
  observation_spec = time_step_spec.observation
  actor_net = actor_distribution_network.ActorDistributionNetwork(
      observation_spec, action_spec,
      fc_layer_params=tuple(actor_fc_layer_params),
      continuous_projection_net=tanh_normal_projection_network.TanhNormalProjectionNetwork)
  recorder = seam.TdErrorRecorder(tf.math.squared_difference)
  agent = sac_lib.SacAgent(
      time_step_spec, action_spec,
      actor_network=actor_net,
      critic_network=networks.critic_network_for(observation_spec, action_spec,
                                                  critic_joint_fc_layer_params),
      actor_optimizer=tf.keras.optimizers.Adam(learning_rate=actor_learning_rate),
      critic_optimizer=tf.keras.optimizers.Adam(learning_rate=critic_learning_rate),
      alpha_optimizer=tf.keras.optimizers.Adam(learning_rate=alpha_learning_rate),
      target_update_tau=target_update_tau,
      target_update_period=target_update_period,
      td_errors_loss_fn=recorder,
      gamma=gamma,
      reward_scale_factor=reward_scale_factor,
      train_step_counter=train_step)
  return seam.AgentBuild(agent, 2, recorder.take)


@gin.configurable(module='common')
def td3_agent(time_step_spec, action_spec, train_step,
              actor: Optional[seam.ActorSlot] = None,
              actor_fc_layer_params: Sequence[int] = (400, 300),
              critic_joint_fc_layer_params: Sequence[int] = (400, 300),
              actor_learning_rate: float = 1e-3,
              critic_learning_rate: float = 1e-3,
              exploration_noise_std: float = 0.1,
              target_policy_noise: float = 0.2,
              target_policy_noise_clip: float = 0.5,
              actor_update_period: int = 2,
              target_update_tau: float = 0.005,
              target_update_period: int = 2,
              gamma: float = 0.99,
              reward_scale_factor: float = 1.0) -> seam.AgentBuild:
  """Td3Agent (Fujimoto et al., 2018); defaults are the paper's: 400-300 networks, Adam 1e-3,
  Gaussian exploration 0.1, target smoothing 0.2 clipped at 0.5, delayed actor and target
  updates every 2 train steps, tau 0.005, and a squared TD loss.
  """
  del actor  # Every actor explores with the same Gaussian noise.
  seam.require_continuous(action_spec, 'TD3')
  recorder = seam.TdErrorRecorder(tfa_common.element_wise_squared_loss)
  agent = td3_lib.Td3Agent(
      time_step_spec, action_spec,
      **_deterministic_actor_critic(time_step_spec, action_spec, actor_fc_layer_params,
                                    critic_joint_fc_layer_params, actor_learning_rate,
                                    critic_learning_rate),
      exploration_noise_std=exploration_noise_std,
      target_policy_noise=target_policy_noise,
      target_policy_noise_clip=target_policy_noise_clip,
      actor_update_period=actor_update_period,
      target_update_tau=target_update_tau,
      target_update_period=target_update_period,
      td_errors_loss_fn=recorder,
      gamma=gamma,
      reward_scale_factor=reward_scale_factor,
      train_step_counter=train_step)
  return seam.AgentBuild(
      agent, 2, recorder.take,
      single_replica_reason='TD3 applies its delayed actor update inside a tf.cond, and '
      'MirroredStrategy cannot all-reduce gradients there')


class GaussianDdpgAgent(ddpg_lib.DdpgAgent):
  """DdpgAgent that explores with clipped Gaussian action noise instead of an OU process.

  The stock collect policy keeps one Ornstein-Uhlenbeck state per action dimension, created on
  its first call and shared by every environment of a batch, so a batched actor would give all
  its environments the same noise. Uncorrelated Gaussian noise is what Fujimoto et al. (2018)
  found as good for DDPG on these tasks, and what TD3 uses.
  """

  def __init__(self, *args, exploration_noise_std: float = 0.1, **kwargs):
    super().__init__(*args, **kwargs)
    self._collect_policy = gaussian_policy.GaussianPolicy(
        actor_policy.ActorPolicy(time_step_spec=self.time_step_spec,
                                 action_spec=self.action_spec,
                                 actor_network=self._actor_network, clip=False),
        scale=exploration_noise_std, clip=True)


@gin.configurable(module='common')
def ddpg_agent(time_step_spec, action_spec, train_step,
               actor: Optional[seam.ActorSlot] = None,
               actor_fc_layer_params: Sequence[int] = (400, 300),
               critic_joint_fc_layer_params: Sequence[int] = (400, 300),
               actor_learning_rate: float = 1e-3,
               critic_learning_rate: float = 1e-3,
               exploration_noise_std: float = 0.1,
               target_update_tau: float = 0.005,
               target_update_period: int = 1,
               gamma: float = 0.99,
               reward_scale_factor: float = 1.0) -> seam.AgentBuild:
  """DDPG (Lillicrap et al., 2016) as in Fujimoto et al.'s re-implementation: 400-300
  networks, Adam 1e-3, Gaussian exploration 0.1, tau 0.005, one critic, no delays.
  """
  del actor  # Every actor explores with the same Gaussian noise.
  seam.require_continuous(action_spec, 'DDPG')
  recorder = seam.TdErrorRecorder(tfa_common.element_wise_squared_loss)
  agent = GaussianDdpgAgent(
      time_step_spec, action_spec,
      **_deterministic_actor_critic(time_step_spec, action_spec, actor_fc_layer_params,
                                    critic_joint_fc_layer_params, actor_learning_rate,
                                    critic_learning_rate),
      exploration_noise_std=exploration_noise_std,
      target_update_tau=target_update_tau,
      target_update_period=target_update_period,
      td_errors_loss_fn=recorder,
      gamma=gamma,
      reward_scale_factor=reward_scale_factor,
      train_step_counter=train_step)
  return seam.AgentBuild(agent, 2, recorder.take)
