"""The networks' shared parts: observation preprocessing, the Nature DQN torso, a critic, and a
value head over another network's encoder."""

from typing import Sequence

import numpy as np
import tensorflow as tf
from tf_agents.agents.ddpg import critic_network
from tf_agents.networks import actor_distribution_network
from tf_agents.networks import network
from tf_agents.networks import value_network
from tf_agents.utils import nest_utils

from common.errors import UserError


# The convolutional torso of the Nature DQN (Mnih et al., 2015): (filters, kernel, stride).
NATURE_CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def observation_preprocessing(observation_spec):
  """The Keras layer that turns the environment's raw observation into the network's input, or
  None for a float observation, which the network takes as it is.

  It lives inside the network, so every process that runs the network (actor, learner, eval,
  an exported SavedModel) takes the environment's own observations:
  * a Discrete observation (a bounded integer scalar: FrozenLake's cell, Taxi's state) becomes
    the one-hot vector of its n values;
  * uint8 observations (images) stay uint8 from the environment to the network (a quarter of
    float32's bytes in replay and on the wire) and are scaled to [0, 1];
  * other integer or boolean observations are cast to float32.
  """
  dtype = observation_spec.dtype
  if dtype.is_floating:
    return None
  if (dtype.is_integer and tuple(observation_spec.shape) == ()
      and hasattr(observation_spec, 'maximum')):
    low = int(np.asarray(observation_spec.minimum))
    depth = int(np.asarray(observation_spec.maximum)) - low + 1
    return tf.keras.layers.Lambda(
        lambda index: tf.one_hot(tf.cast(index, tf.int32) - low, depth, dtype=tf.float32),
        name='one_hot_discrete_observation')
  if dtype == tf.uint8:
    return tf.keras.layers.Lambda(lambda frames: tf.cast(frames, tf.float32) / 255.0,
                                  name='scale_uint8_to_unit')
  return tf.keras.layers.Lambda(lambda values: tf.cast(values, tf.float32),
                                name='cast_to_float')


def encoder_kwargs(observation_spec, conv_layer_params) -> dict:
  """The encoder arguments of a TF-Agents network over `observation_spec`: its convolutions,
  and the preprocessing layer of a non-float observation (`observation_preprocessing`)."""
  kwargs = {}
  if conv_layer_params:
    kwargs['conv_layer_params'] = tuple(tuple(layer) for layer in conv_layer_params)
  layer = observation_preprocessing(observation_spec)
  if layer is not None:
    kwargs['preprocessing_layers'] = layer
  return kwargs


def critic_network_for(observation_spec, action_spec, joint_fc_layer_params: Sequence[int]):
  """A critic Q(observation, action) with joint dense layers (TF-Agents' CriticNetwork)."""
  return critic_network.CriticNetwork(
      (observation_spec, action_spec),
      observation_fc_layer_params=None,
      action_fc_layer_params=None,
      joint_fc_layer_params=tuple(joint_fc_layer_params),
      kernel_initializer='glorot_uniform',
      last_kernel_initializer='glorot_uniform')


class TorsoValueNetwork(network.Network):
  """A value network over another network's encoder: dense layers and one output on it.

  The encoder's variables belong to both networks; `PPOClipAgent` trains each variable once
  (it deduplicates the two networks' variables), with the sum of the policy and value losses.
  """

  def __init__(self, input_tensor_spec, encoder: network.Network,
               fc_layer_params: Sequence[int] = (), activation_fn=tf.keras.activations.relu,
               name: str = 'TorsoValueNetwork'):
    super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
    self._encoder = encoder
    self._head = [tf.keras.layers.Dense(
        units, activation=activation_fn,
        kernel_initializer=tf.keras.initializers.VarianceScaling(
            scale=2.0, mode='fan_in', distribution='truncated_normal'))
                  for units in fc_layer_params]
    # ValueNetwork's output layer.
    self._head.append(tf.keras.layers.Dense(
        1, kernel_initializer=tf.random_uniform_initializer(minval=-0.03, maxval=0.03)))

  @property
  def encoder(self) -> network.Network:
    return self._encoder

  def head(self, state, training=False):
    """The value of the encoder's output `state`."""
    for layer in self._head:
      state = layer(state, training=training)
    return tf.squeeze(state, -1)

  def call(self, observation, step_type=None, network_state=(), training=False):
    state, network_state = self._encoder(observation, step_type=step_type,
                                         network_state=network_state, training=training)
    return self.head(state, training=training), network_state


# Hidden-layer activations by name (the actor-critic builders' `activation`).
ACTIVATIONS = {'tanh': tf.keras.activations.tanh, 'relu': tf.keras.activations.relu}


def actor_and_value_networks(observation_spec, action_spec, actor_fc_layer_params,
                             value_fc_layer_params, conv_layer_params, activation: str,
                             shared_torso: bool, builder: str):
  """An `ActorDistributionNetwork` and a value network over `observation_spec`.

  Each network gets its own encoder (a Keras layer belongs to one network), unless
  `shared_torso`: then the value network is a `TorsoValueNetwork` on the actor network's
  encoder (its convolutions and `actor_fc_layer_params` layers), with `value_fc_layer_params`
  layers and one output on it.

  Raises:
    UserError: `activation` is not a name of `ACTIVATIONS` (said as `<builder>.activation`).
  """
  if activation not in ACTIVATIONS:
    raise UserError(f'{builder}.activation={activation!r} must be one of '
                    f'{sorted(ACTIVATIONS)}: fix it in the gin file')
  activation_fn = ACTIVATIONS[activation]
  actor_net = actor_distribution_network.ActorDistributionNetwork(
      observation_spec, action_spec, fc_layer_params=tuple(actor_fc_layer_params),
      activation_fn=activation_fn, **encoder_kwargs(observation_spec, conv_layer_params))
  if shared_torso:
    value_net = TorsoValueNetwork(
        observation_spec, actor_net._encoder,  # pylint: disable=protected-access
        fc_layer_params=tuple(value_fc_layer_params), activation_fn=activation_fn)
  else:
    value_net = value_network.ValueNetwork(
        observation_spec, fc_layer_params=tuple(value_fc_layer_params),
        activation_fn=activation_fn, **encoder_kwargs(observation_spec, conv_layer_params))
  return actor_net, value_net


def policy_and_value(actor_net, value_net, observation, step_type, training=False):
  """The action distribution of a feed-forward `ActorDistributionNetwork` and the values of
  `value_net` for the same observations (any outer dimensions).

  When `value_net` is a `TorsoValueNetwork` on `actor_net`'s encoder, the encoder runs once for
  both, where calling the two networks would run it twice (for a Nature torso on Atari frames,
  most of a train step's work).
  """
  encoder = actor_net._encoder  # pylint: disable=protected-access
  if not (isinstance(value_net, TorsoValueNetwork) and value_net.encoder is encoder):
    distribution, _ = actor_net(observation, step_type=step_type, network_state=(),
                                training=training)
    values, _ = value_net(observation, step_type=step_type, network_state=(), training=training)
    return distribution, values
  state, _ = encoder(observation, step_type=step_type, network_state=(), training=training)
  outer_rank = nest_utils.get_outer_rank(observation, actor_net.input_tensor_spec)
  distribution, _ = actor_net._projection_networks(  # pylint: disable=protected-access
      state, outer_rank, training=training)
  return distribution, value_net.head(state, training=training)
