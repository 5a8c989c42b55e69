"""The builder layer shared by the replay server, the actors, eval and the learner.

Every process calls `build()` on the same gin config and gets the same agent layout and specs,
so table signatures never travel through files and processes may start in any order. What an
algorithm needs from the roles (the replay item length, its tables, writer, dataset and trainer)
comes from its agent builder's `AgentBuild` and its family (`agents.families`); no role names
an algorithm or asks which family it holds.
"""

import dataclasses
from typing import Optional

import tensorflow as tf
from tf_agents.utils import common as tfa_common

from common import agents
from common.agents import families
from common import environments
from common import replay
from common.config import ReplayConfig
from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class Specs:
  """What every process derives from the gin config.

  Attributes:
    time_step_spec: Of the environment.
    action_spec: Of the environment.
    collect_data_spec: Of one trajectory step written by the actors.
    sequence_length: Env steps per replay item (the agent builder's).
    family: The algorithm family (`agents.families`): what every role does with the data.
    replay_signature: Of one replay item (collect_data_spec with a time dimension).
    variables_signature: Of the variable-table item ({policy_variables, train_step} and, with
      prioritized replay, max_priority).
    frame_stack: Frames per observation when the replay table stores each frame once
      (`ReplayConfig.store_frames_once`), else 0: the actors write single frames, the learner's
      dataset stacks them again (`replay.replay_signature`).
  """
  time_step_spec: object
  action_spec: object
  collect_data_spec: object
  sequence_length: int
  family: agents.OffPolicy
  replay_signature: object
  variables_signature: object
  frame_stack: int = 0


@dataclasses.dataclass(frozen=True)
class Build:
  """The agent, what the roles need from it, and the specs.

  Attributes:
    agent: The TF-Agents agent.
    specs: Specs.
    variables: The variable-table nest (`agents.policy_variables`).
    td_errors: The builder's per-item TD error of the last train step (`AgentBuild.td_errors`).
    max_priority: The priority new items get (prioritized replay), else None.
    single_replica_reason: Why the agent cannot train replicated, or None.
  """
  agent: object
  specs: Specs
  variables: object
  td_errors: object
  max_priority: Optional[tf.Variable]
  single_replica_reason: Optional[str] = None


def build(replay_config: ReplayConfig, train_step=None,
          actor: Optional[agents.ActorSlot] = None) -> Build:
  """Builds the gin-configured agent and derives every signature from it.

  Args:
    replay_config: The replay table's configuration.
    train_step: The int64 train-step variable for the agent; a new one at 0 if None.
    actor: The collect actor building it (its exploration may depend on it), or None.

  Raises:
    UserError: `ReplayConfig.sequence_length` contradicts the agent's item length, or the
      agent's family cannot honour `replay_config` (`families.select`).
  """
  time_step_spec, action_spec = environments.environment_specs()
  if train_step is None:
    train_step = tfa_common.create_variable('train_step')
  agent_build = agents.make_agent(time_step_spec, action_spec, train_step, actor)
  length = agent_build.sequence_length
  if replay_config.sequence_length not in (None, length):
    raise UserError(
        f'ReplayConfig.sequence_length={replay_config.sequence_length}, but this agent trains '
        f'on {length}-step items (n_step_update + 1 for the DQN family): bind '
        f'ReplayConfig.sequence_length = {length}, or leave it unbound')
  family = families.select(agent_build.family, replay_config, agent_build.items_span_episodes)
  agent = agent_build.agent
  max_priority = family.make_max_priority()
  variables = agents.policy_variables(agent, train_step, max_priority)
  frame_stack = _frame_stack(replay_config, time_step_spec.observation, family)
  specs = Specs(
      time_step_spec=time_step_spec,
      action_spec=action_spec,
      collect_data_spec=agent.collect_data_spec,
      sequence_length=length,
      family=family,
      replay_signature=replay.replay_signature(agent.collect_data_spec, length, frame_stack),
      variables_signature=agents.variables_signature(variables),
      frame_stack=frame_stack)
  return Build(agent=agent, specs=specs, variables=variables, td_errors=agent_build.td_errors,
               max_priority=max_priority,
               single_replica_reason=agent_build.single_replica_reason)


def _frame_stack(replay_config: ReplayConfig, observation_spec, family) -> int:
  """`Specs.frame_stack` under `ReplayConfig.store_frames_once` (None: where it can apply)."""
  wanted = replay_config.store_frames_once
  if wanted is False:
    return 0
  stack = environments.frame_stack_size()
  if not stack:
    why = 'this task\'s observations are not frame stacks'
  else:
    why = (family.stores_frames_once()
           or replay.stacked_frames_layout(observation_spec, stack))
  if why is None:
    return stack
  if wanted:
    raise UserError(f'ReplayConfig.store_frames_once = True cannot apply: {why}; remove the '
                    'binding (frames are then stored once wherever they can be)')
  return 0


def make_agent_and_specs(replay_config: ReplayConfig, train_step=None,
                         actor: Optional[agents.ActorSlot] = None):
  """`build()`'s (agent, Specs), for the callers that need no more."""
  built = build(replay_config, train_step, actor)
  return built.agent, built.specs


def configure_tensorflow(threads: int = 0) -> None:
  """Caps TensorFlow's thread pools (0 keeps TensorFlow's default).

  Actors and eval run tiny per-step graphs; one thread each avoids oversubscribing the cores
  that the environments and the learner need.
  """
  if not threads:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    pass  # TensorFlow already started in this process (in-process tests): keep its pools.
