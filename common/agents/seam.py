"""The agent seam: what an agent builder declares, and the helpers builders share.

An agent builder is a gin-configurable function called as
`builder(time_step_spec, action_spec, train_step, actor)`; it returns an `AgentBuild`.
"""

import dataclasses
import threading
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from common.agents import families
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
    family: The builder's `families` family (how its data is written, kept and consumed), or
      None for off-policy replay (uniform, or by priority as `ReplayConfig.prioritized` says).
    items_span_episodes: Items are windows at stride 1 that run on across episode ends, as
      TF-Agents' replay buffers sample them (recurrent networks restart from the zero state at
      each FIRST step inside an item, and the LAST -> FIRST transition is masked out of the
      loss); otherwise an off-policy item lies within one episode.
  """
  agent: object
  sequence_length: int
  td_errors: Optional[Callable[[object], tf.Tensor]]
  single_replica_reason: Optional[str] = None
  family: Optional[families.OffPolicy] = None
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
