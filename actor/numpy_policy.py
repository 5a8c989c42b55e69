"""Collect-policy inference in NumPy for small feed-forward networks.

On a cheap environment the TensorFlow policy call (about 350 us per batch of 8 for the DQN
tutorial's network on CartPole, `CompiledPolicy`) costs several times the environment step.
For the networks that are a few dense layers, the same forward pass in NumPy takes a few
microseconds, so this module reproduces the two collect policies whose networks are such a
stack, with their exact semantics:

- `QPolicy`: TF-Agents' `EpsilonGreedyPolicy(GreedyPolicy(QPolicy(QNetwork)))`: greedy is the
  first argmax of the Q-values, shifted by the action spec's minimum; with probability epsilon
  (a float, or one per environment: the Ape-X ladder) a uniform action in the spec's bounds.
- `TanhGaussianPolicy`: TF-Agents' `ActorPolicy` over an `ActorDistributionNetwork` with a
  `TanhNormalProjectionNetwork` (SAC): the projection gives a mean and log-std per action
  dimension; a sample is `mid + half_range * tanh(mean + exp(log_std) * noise)`, with standard
  normal noise; the greedy action uses noise 0 (the mode).

Weights are read from the TF variables by `sync()`, which the actor calls after each pull: the
NumPy copies then equal the pulled weights bit for bit. `for_policy` returns None for any other
policy (convolutional or recurrent networks, preprocessing layers, other agents), and the actor
keeps `CompiledPolicy` for it. tests/test_numpy_policy.py checks actions against the TF policy on
the same inputs (and the same noise); bench/actor_bench.py measures both paths.
"""

from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.networks import actor_distribution_network
from tf_agents.networks import encoding_network
from tf_agents.networks import q_network
from tf_agents.policies import actor_policy
from tf_agents.policies import epsilon_greedy_policy
from tf_agents.policies import greedy_policy
from tf_agents.policies import q_policy

_BLOCK = 256  # Calls' worth of random draws generated at once.

_ACTIVATIONS = {
    'linear': lambda x: x,
    'relu': lambda x: np.maximum(x, 0.0),
    'tanh': np.tanh,
    'elu': lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


def _activation(layer) -> Optional[Callable[[np.ndarray], np.ndarray]]:
  name = getattr(layer.activation, '__name__', None)
  return _ACTIVATIONS.get(name)


class DenseStack:
  """`y = act_n(... act_1(x W_1 + b_1) ... W_n + b_n)` over a list of Keras Dense layers."""

  def __init__(self, layers: List[tf.keras.layers.Dense]):
    self._layers = layers
    self._activations = [_activation(layer) for layer in layers]
    self._weights: List[Tuple[np.ndarray, Optional[np.ndarray]]] = []
    self.sync()

  def sync(self) -> None:
    """Copies the layers' current kernels and biases."""
    self._weights = [(layer.kernel.numpy(), layer.bias.numpy() if layer.use_bias else None)
                     for layer in self._layers]

  def __call__(self, x: np.ndarray) -> np.ndarray:
    for (kernel, bias), act in zip(self._weights, self._activations):
      x = x @ kernel
      if bias is not None:
        x = x + bias
      x = act(x)
    return x


def _plain_dense(layer) -> bool:
  return (isinstance(layer, tf.keras.layers.Dense) and _activation(layer) is not None
          and layer.built)


def _encoder_dense_layers(encoder) -> Optional[List[tf.keras.layers.Dense]]:
  """The Dense layers of an EncodingNetwork that is only Flatten and Dense layers, else None."""
  if not isinstance(encoder, encoding_network.EncodingNetwork):
    return None
  if getattr(encoder, '_preprocessing_nest', None) is not None and tf.nest.flatten(
      encoder._preprocessing_nest):  # pylint: disable=protected-access
    return None
  if getattr(encoder, '_preprocessing_combiner', None) is not None:
    return None
  dense = []
  for layer in encoder._postprocessing_layers:  # pylint: disable=protected-access
    if isinstance(layer, tf.keras.layers.Flatten):
      continue
    if not _plain_dense(layer):
      return None
    dense.append(layer)
  return dense


def _flat_observation(spec) -> bool:
  specs = tf.nest.flatten(spec)
  return len(specs) == 1 and specs[0].shape.rank == 1 and specs[0].dtype.is_floating


class QPolicy:
  """The epsilon-greedy (or greedy) Q-network policy, in NumPy. See the module docstring."""

  def __init__(self, dense: List[tf.keras.layers.Dense],
               action_spec, epsilon, batch_size: int, seed: int):
    self._stack = DenseStack(dense)
    self._minimum = int(np.asarray(action_spec.minimum))
    self._maximum = int(np.asarray(action_spec.maximum))
    self._dtype = action_spec.dtype.as_numpy_dtype
    self._epsilon = epsilon
    self._batch_size = batch_size
    self._rng = np.random.default_rng(seed)
    self._block, self._next = None, 0
    self.epsilon = self._read_epsilon()

  def _read_epsilon(self):
    if self._epsilon is None:
      return None
    value = self._epsilon() if callable(self._epsilon) else self._epsilon
    value = np.asarray(value.numpy() if hasattr(value, 'numpy') else value, np.float32)
    return np.broadcast_to(value, (self._batch_size,))

  def sync(self) -> None:
    self._stack.sync()
    self.epsilon = self._read_epsilon()

  def q_values(self, observation: np.ndarray) -> np.ndarray:
    return self._stack(observation.astype(np.float32, copy=False))

  def greedy(self, observation: np.ndarray) -> np.ndarray:
    action = self.q_values(observation).argmax(axis=-1)
    if self._minimum:
      action += self._minimum
    return action if action.dtype == self._dtype else action.astype(self._dtype)

  def act(self, observation: np.ndarray, uniform: np.ndarray,
          random_actions: np.ndarray) -> np.ndarray:
    """The action given the exploration draws: `uniform` in [0, 1) decides per environment
    (explore where uniform < epsilon), `random_actions` are the uniform actions taken then."""
    action = self.greedy(observation)
    if self.epsilon is None:
      return action
    explore = uniform < self.epsilon
    if explore.any():
      action[explore] = random_actions[explore]
    return action

  def _draws(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The next call's exploration draws, from blocks drawn `_BLOCK` calls at a time (one
    generator call per block instead of two per call)."""
    if self._block is None or self._next >= _BLOCK or self._block[0].shape[1] != n:
      self._block = (self._rng.random((_BLOCK, n), dtype=np.float32),
                     self._rng.integers(self._minimum, self._maximum + 1, size=(_BLOCK, n),
                                        dtype=self._dtype))
      self._next = 0
    i, self._next = self._next, self._next + 1
    return self._block[0][i], self._block[1][i]

  def __call__(self, time_step) -> Tuple[np.ndarray, tuple]:
    observation = time_step.observation
    if self.epsilon is None:
      return self.greedy(observation), ()
    uniform, random_actions = self._draws(observation.shape[0])
    return self.act(observation, uniform, random_actions), ()


class TanhGaussianPolicy:
  """SAC's actor policy (sampled, or its mode), in NumPy. See the module docstring."""

  def __init__(self, encoder_dense: List[tf.keras.layers.Dense],
               projection: tf.keras.layers.Dense, action_spec, sample: bool, seed: int):
    self._stack = DenseStack(list(encoder_dense) + [projection])
    self._low = np.asarray(action_spec.minimum, np.float32)
    self._high = np.asarray(action_spec.maximum, np.float32)
    self._mid = (self._high + self._low) / 2.0
    self._half = (self._high - self._low) / 2.0
    self._dims = int(np.prod(action_spec.shape))
    self._shape = tuple(action_spec.shape)
    self._sample = sample
    self._rng = np.random.default_rng(seed)
    self._noise, self._next = None, 0

  def sync(self) -> None:
    self._stack.sync()

  def mean_and_std(self, observation: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    out = self._stack(observation.astype(np.float32, copy=False))
    return out[:, :self._dims], np.exp(out[:, self._dims:])

  def act(self, observation: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The action for standard normal `noise` (zeros: the mode, the greedy action)."""
    mean, std = self.mean_and_std(observation)
    action = self._mid + self._half * np.tanh(mean + std * noise)
    # ActorPolicy clips to the spec; tanh can round to the bound itself in float32.
    action = np.clip(action, self._low, self._high).astype(np.float32)
    return action.reshape((observation.shape[0],) + self._shape)

  def __call__(self, time_step) -> Tuple[np.ndarray, tuple]:
    observation = time_step.observation
    n = observation.shape[0]
    if not self._sample:
      return self.act(observation, np.zeros((n, self._dims), np.float32)), ()
    if self._noise is None or self._next >= _BLOCK or self._noise.shape[1] != n:
      self._noise = self._rng.standard_normal((_BLOCK, n, self._dims), dtype=np.float32)
      self._next = 0
    i, self._next = self._next, self._next + 1
    return self.act(observation, self._noise[i]), ()


def for_policy(tf_policy, batch_size: int, seed: int):
  """The NumPy twin of `tf_policy` (built, with its variables), or None when there is none.

  Supported: the (epsilon-)greedy QNetwork policy of DQN and DDQN, and SAC's actor policy and
  its greedy wrapper, over networks of Flatten and Dense layers on a flat float observation,
  with an empty policy info.
  """
  if tf.nest.flatten(tf_policy.info_spec) or tf.nest.flatten(tf_policy.policy_state_spec):
    return None
  if not _flat_observation(tf_policy.time_step_spec.observation):
    return None
  epsilon, policy = None, tf_policy
  if isinstance(policy, epsilon_greedy_policy.EpsilonGreedyPolicy):
    epsilon = policy._epsilon  # pylint: disable=protected-access
    policy = policy._greedy_policy  # pylint: disable=protected-access
  greedy = isinstance(policy, greedy_policy.GreedyPolicy)
  if greedy:
    policy = policy._wrapped_policy  # pylint: disable=protected-access
  if isinstance(policy, q_policy.QPolicy) and greedy:
    network = policy._q_network  # pylint: disable=protected-access
    if (type(network) is not q_network.QNetwork  # pylint: disable=unidiomatic-typecheck
        or policy._observation_and_action_constraint_splitter is not None):  # pylint: disable=protected-access
      return None
    dense = _encoder_dense_layers(network._encoder)  # pylint: disable=protected-access
    head = network._q_value_layer  # pylint: disable=protected-access
    if dense is None or not _plain_dense(head):
      return None
    action_spec = tf.nest.flatten(tf_policy.action_spec)
    if len(action_spec) != 1 or action_spec[0].shape.rank != 0:
      return None
    return QPolicy(dense + [head], action_spec[0], epsilon, batch_size, seed)
  if isinstance(policy, actor_policy.ActorPolicy) and epsilon is None:
    network = policy._actor_network  # pylint: disable=protected-access
    if type(network) is not actor_distribution_network.ActorDistributionNetwork:  # pylint: disable=unidiomatic-typecheck
      return None
    projections = tf.nest.flatten(network._projection_networks)  # pylint: disable=protected-access
    if len(projections) != 1 or not isinstance(
        projections[0], tanh_normal_projection_network.TanhNormalProjectionNetwork):
      return None
    projection = projections[0]
    if projection._std_transform is not tf.exp:  # pylint: disable=protected-access
      return None
    dense = _encoder_dense_layers(network._encoder)  # pylint: disable=protected-access
    if dense is None or not _plain_dense(projection._projection_layer):  # pylint: disable=protected-access
      return None
    action_spec = tf.nest.flatten(tf_policy.action_spec)
    if len(action_spec) != 1:
      return None
    return TanhGaussianPolicy(dense, projection._projection_layer, action_spec[0],  # pylint: disable=protected-access
                              sample=not greedy, seed=seed)
  return None
