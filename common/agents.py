"""The agent seam: what an agent builder declares, and what every role takes from it.

An algorithm is one gin-configurable builder function (in `q_agents`, `actor_critic_agents` or
`on_policy_agents`)
and one gin file that selects it with `make_agent.agent_fn = @<builder>`. A builder is called as
`builder(time_step_spec, action_spec, train_step, actor)` and returns an `AgentBuild`: the
TF-Agents agent, the replay item length it trains on, how to read one priority per sampled
item from its train step, and, for an on-policy agent, how it consumes its data (`OnPolicy`). No role names an algorithm: the replay server, the actors, eval and the
learner all go through `make_agent` and `builders`.
"""

import dataclasses
import inspect
import math
import threading
import typing
from typing import Callable, Dict, List, Optional, Union

import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import greedy_policy as greedy_policy_lib
from tf_agents.utils import common as tfa_common

from common import config as config_lib
from common import constants
from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class ActorSlot:
  """Which collect actor builds the agent (exploration may depend on it).

  Attributes:
    task: The actor's task id (0-based).
    num_actors: Actors in the fleet; 0 when the launcher did not say.
    num_envs: Environments the actor steps in one batch (`ActorConfig.num_envs`).
  """
  task: int
  num_actors: int = 0
  num_envs: int = 1


@dataclasses.dataclass(frozen=True)
class OnPolicy:
  """How an on-policy agent's data is written, kept and consumed.

  An on-policy agent changes what every role does with replay:
  - the replay table is a queue (Fifo sampler and remover, each item sampled once, inserts held
    while it is full) of `capacity(LearnerConfig.batch_size)` items;
  - actors write fixed-length items of `sequence_length` steps with stride `sequence_length`
    (across episode ends, which the agent masks), never collect with the random policy, give
    each item the train step of the weights that produced it as its priority (its policy
    version), and check for newer weights after every item;
  - the learner gathers `LearnerConfig.batch_size` items of at most `max_policy_lag` versions
    back, drops the others and counts them, runs `num_epochs` epochs over the batch, and pushes
    the weights after every iteration.

  Attributes:
    num_epochs: Passes over each gathered batch (TF-Agents' `PPOLearner`).
    minibatch_size: Steps per train step; None trains on whole items (recurrent networks).
    max_policy_lag: Versions (learner iterations) an item may be behind the learner's weights;
      0 is strictly on-policy.
  """
  num_epochs: int
  minibatch_size: Optional[int]
  max_policy_lag: int

  def capacity(self, batch_size: int) -> int:
    """Queue size: one batch. While the learner trains, the actors fill the queue with the
    next batch and then wait; the learner reads the oldest items first, so room for more
    would only hold items that are staler still when read (measured: bench/on_policy_sync.py,
    docs/algorithms.md)."""
    return batch_size


@dataclasses.dataclass(frozen=True)
class AgentBuild:
  """What an agent builder declares for the roles.

  Attributes:
    agent: The TF-Agents agent; `agent.train(experience, weights=...)` applies per-item
      importance weights.
    sequence_length: Env steps per replay item that `agent.train` needs (n + 1 for n-step
      returns, 2 for one-step TD targets).
    td_errors: Called in the same graph right after `agent.train` with its LossInfo; returns
      one float per item of the batch, the item's TD error (any sign), from which the learner
      computes new priorities.
    single_replica_reason: Set when `agent.train` cannot run replicated (MirroredStrategy over
      several devices); the learner then refuses more than one replica with this reason.
    on_policy: Set for an on-policy agent (PPO): how its items are written and consumed.
    items_span_episodes: Items are windows at stride 1 that run on across episode ends, as
      TF-Agents' replay buffers sample them (recurrent networks restart from the zero state at
      each FIRST step inside an item, and the LAST -> FIRST transition is masked out of the
      loss); otherwise an off-policy item lies within one episode.
  """
  agent: object
  sequence_length: int
  td_errors: Optional[Callable[[object], tf.Tensor]]
  single_replica_reason: Optional[str] = None
  on_policy: Optional[OnPolicy] = None
  items_span_episodes: bool = False


class TdErrorRecorder:
  """Wraps an element-wise TD loss `fn(targets, predictions)` and remembers `targets - predictions`.

  Actor-critic agents (DDPG, TD3, SAC) call their `td_errors_loss_fn` once per critic inside
  `train`, but return only the reduced loss. Passing the agent this recorder lets `take()`,
  called right after `agent.train` in the same graph and thread (one thread per replica under
  MirroredStrategy), return the per-item TD error: the mean absolute error over the critics.
  Errors recorded in other graphs or threads (a variable-creating trace, another replica) are
  never mixed in.
  """

  def __init__(self, loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]):
    self._loss_fn = loss_fn
    self._errors: Dict[tuple, List[tf.Tensor]] = {}
    self._lock = threading.Lock()

  @staticmethod
  def _where():
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    return (id(graph), threading.get_ident())

  def __call__(self, targets, predictions):
    error = tf.abs(tf.cast(targets, tf.float32) - tf.cast(predictions, tf.float32))
    with self._lock:
      self._errors.setdefault(self._where(), []).append(error)
    return self._loss_fn(targets, predictions)

  def take(self, loss_info=None) -> tf.Tensor:
    """The per-item error of this graph's and thread's calls since its last `take`."""
    del loss_info
    with self._lock:
      errors = self._errors.pop(self._where(), [])
    if not errors:
      raise RuntimeError('TdErrorRecorder.take() before the agent computed a TD loss')
    return tf.add_n(errors) / float(len(errors))


def loss_info_td_error(loss_info) -> tf.Tensor:
  """The per-item TD error that DQN-family agents return in `loss_info.extra.td_error`."""
  return loss_info.extra.td_error


def require_discrete(action_spec, algorithm: str) -> None:
  """Raises the one-line UserError for a value-based agent on continuous actions."""
  if not tf.nest.flatten(action_spec)[0].dtype.is_integer:
    raise UserError(f'{algorithm} needs a discrete action space, but the environment\'s actions '
                    'are continuous: use make_agent.agent_fn = @sac_agent, @td3_agent or '
                    '@ddpg_agent')


def require_continuous(action_spec, algorithm: str) -> None:
  """Raises the one-line UserError for an actor-critic agent on discrete actions."""
  if tf.nest.flatten(action_spec)[0].dtype.is_integer:
    raise UserError(f'{algorithm} needs a continuous action space, but the environment\'s '
                    'actions are discrete: use make_agent.agent_fn = @dqn_agent or @c51_agent')


def require_float_observations(observation_spec, algorithm: str) -> None:
  """Raises the one-line UserError for an actor-critic agent on non-float observations (its
  critic takes the observation as it is, without the networks' preprocessing layers)."""
  if not observation_spec.dtype.is_floating:
    raise UserError(f'{algorithm} needs float observations, but the environment observes '
                    f'{observation_spec.dtype.name} ones: observe floats (a Box of float32), or '
                    'use make_agent.agent_fn = @ppo_agent, which one-hots or casts them')


@gin.configurable(module='common')
def apex_epsilon(epsilon: float, actor: Optional[ActorSlot], alpha: float = 7.0,
                 num_actors: int = 8) -> Union[float, np.ndarray]:
  """Ape-X's per-actor exploration: slot i of N explores with epsilon ** (1 + alpha * i / (N-1)).

  Horgan et al. (2018) use epsilon = 0.4 and alpha = 7 with one environment per actor, so the
  slots span epsilon 0.4 down to 0.4 ** 8 = 0.00066. Here every environment is a slot: actor t
  stepping E environments holds slots t * E .. t * E + E - 1 of N = actors * E, and its batched
  collect policy gets one epsilon per environment. The actor count is the fleet's when the
  launcher passes it (`--num_actors`), else `num_actors` here; a slot past N - 1 takes the
  least exploring rung.

  Args:
    epsilon: The base epsilon (the agent's `epsilon_greedy`).
    actor: The actor building its collect policy; None (learner, eval, server) returns epsilon.
    alpha: The exponent's spread.
    num_actors: The actor count when the launcher does not give the fleet's.

  Returns:
    A float for one environment (or no actor), else float32 [num_envs].
  """
  if actor is None:
    return epsilon
  envs = max(1, actor.num_envs)
  slots = (actor.num_actors or num_actors) * envs
  if slots <= 1:
    return epsilon
  rungs = np.minimum(actor.task * envs + np.arange(envs), slots - 1)
  ladder = (epsilon ** (1.0 + alpha * rungs / (slots - 1))).astype(np.float32)
  return float(ladder[0]) if envs == 1 else ladder


@gin.configurable(module='common', allowlist=['schedule'])
def collect_epsilon(epsilon: float, actor: Optional[ActorSlot],
                    schedule: Optional[Callable] = None) -> Union[float, np.ndarray]:
  """The epsilon of an actor's epsilon-greedy collect policy.

  `schedule` is None (every actor uses `epsilon`) or `@apex_epsilon` (gin).
  """
  if schedule is None:
    return epsilon
  return schedule(epsilon, actor)


# Every builder's arguments but these four are gin's; they are checked before the builder runs.
_BUILDER_INPUTS = ('time_step_spec', 'action_spec', 'train_step', 'actor')

# Ranges the builders' hyperparameters share, by name: (applies to name, holds for value, what
# it must be). A name may meet several.
_RANGES = (
    (lambda n: n.endswith('learning_rate'), lambda v: 0 < v < math.inf, 'must be > 0'),
    (lambda n: n in ('gamma', 'discount_factor', 'lambda_value'), lambda v: 0 <= v <= 1,
     'must be in [0, 1]'),
    (lambda n: n.endswith('tau'), lambda v: 0 < v <= 1, 'must be in (0, 1]'),
    (lambda n: n.endswith('_period'), lambda v: v >= 1, 'must be >= 1'),
    (lambda n: n == 'epsilon_greedy', lambda v: 0 <= v <= 1, 'must be in [0, 1]'),
    (lambda n: n.endswith(('_std', '_clip')), lambda v: 0 <= v < math.inf, 'must be >= 0'),
    (lambda n: n.endswith('fc_layer_params') or n == 'lstm_size',
     lambda v: all(u > 0 for u in v), 'must be positive layer widths'),
    (lambda n: n == 'conv_layer_params',
     lambda v: all(len(layer) == 3 and min(layer) > 0 for layer in v),
     'must be (filters, kernel, stride) triples of positive integers'),
    (lambda n: n == 'reward_scale_factor', math.isfinite, 'must be finite'),
    (lambda n: n in ('num_epochs', 'minibatch_size'), lambda v: v >= 1, 'must be >= 1'),
    (lambda n: n == 'collect_sequence_length', lambda v: v >= 2,
     'must be >= 2 (advantages need a next step to bootstrap from)'),
    (lambda n: n == 'max_policy_lag', lambda v: v >= 0, 'must be >= 0 (0: strictly on-policy)'),
)


def check_builder_arguments(agent_fn: Callable) -> None:
  """Checks an agent builder's gin-bound arguments against its annotations and shared ranges.

  Runs before the builder, so that `dqn_agent.learning_rate = '1e-3'` (a string),
  `fc_layer_params = 100` (not a sequence) or `gamma = 1.5` is one line naming the binding,
  not a TensorFlow error from inside the agent or a run that trains on a wrong value. Types come
  from the builder's annotations (`config.check_type`); ranges from `_RANGES`, by argument
  name, so a new builder that names its arguments as the others do is checked as they are.

  Raises:
    UserError: naming `<builder>.<argument>`, the value and what it must be.
  """
  fn = inspect.unwrap(agent_fn)
  hints = typing.get_type_hints(fn)
  bound = gin.get_bindings(agent_fn)
  for parameter in inspect.signature(fn).parameters.values():
    if parameter.name in _BUILDER_INPUTS:
      continue
    value = bound.get(parameter.name, parameter.default)
    if value is inspect.Parameter.empty:
      continue
    name = f'{fn.__name__}.{parameter.name}'
    default = None if parameter.default is inspect.Parameter.empty else parameter.default
    if parameter.name in hints:
      config_lib.check_type(name, value, hints[parameter.name], default)
    for applies, holds, must in _RANGES:
      if applies(parameter.name) and isinstance(value, (int, float, list, tuple)) and (
          not holds(value)):
        raise UserError(f'{name}={value!r} {must}: fix it in the gin file'
                        + (f' (the default is {default!r})' if default is not None else ''))


@gin.configurable(allowlist=['agent_fn'])
def make_agent(time_step_spec, action_spec, train_step=None,
               actor: Optional[ActorSlot] = None,
               agent_fn: Callable = gin.REQUIRED) -> AgentBuild:
  """Makes the gin-selected agent and initializes its variables.

  Args:
    time_step_spec: From `environments.environment_specs()`.
    action_spec: From `environments.environment_specs()`.
    train_step: The int64 train-step variable; a new one at 0 if None.
    actor: The collect actor building it, or None.
    agent_fn: An agent builder (gin), e.g. `@dqn_agent`, `@c51_agent`, `@td3_agent`.

  Returns:
    The builder's AgentBuild; the agent's variables exist (so their shapes give the
    variable-table signature).

  Raises:
    UserError: a builder argument of the wrong type or range (`check_builder_arguments`).
  """
  check_builder_arguments(agent_fn)
  if train_step is None:
    train_step = tfa_common.create_variable('train_step')
  build = agent_fn(time_step_spec, action_spec, train_step, actor)
  build.agent.initialize()
  return build


def greedy_policy(agent):
  """The agent's deterministic policy: what eval plays and the learner exports.

  DQN's and C51's `agent.policy` are already greedy (argmax Q), DDPG's and TD3's are the
  deterministic actor; SAC's `agent.policy` is the same stochastic actor policy as its collect
  policy, so every policy that is not greedy already is wrapped to play the mode.
  """
  policy = agent.policy
  if not isinstance(policy, greedy_policy_lib.GreedyPolicy):
    policy = greedy_policy_lib.GreedyPolicy(policy)
  return policy


def policy_variables(agent, train_step, max_priority: Optional[tf.Variable] = None):
  """The nest pushed to and pulled from the variable table (ReverbVariableContainer's keys).

  The greedy and the collect policy share these variables, so eval and the actors load the same
  nest. With prioritized replay, `max_priority` (the priority actors give new items) travels in
  the same item.
  """
  nest = {
      constants.POLICY_KEY: agent.collect_policy.variables(),
      constants.TRAIN_STEP_KEY: train_step,
  }
  if max_priority is not None:
    nest[constants.MAX_PRIORITY_KEY] = max_priority
  return nest


def variables_signature(variables):
  """TensorSpecs of a variables nest: the variable table's signature."""
  return tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), variables)


# Registers the builders with gin (they import this module's seam).
from common import actor_critic_agents  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from common import on_policy_agents  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from common import q_agents  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
