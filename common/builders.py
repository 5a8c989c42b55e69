"""The builder seam shared by the replay server, the actors, eval and the learner.

Every process calls `make_specs()` on the same gin config and gets the same specs, so table
signatures never travel through files and processes may start in any order.
"""

import dataclasses

import tensorflow as tf
from tf_agents.utils import common as tfa_common

from common import agents
from common import environments
from common import replay
from common.config import ReplayConfig


@dataclasses.dataclass(frozen=True)
class Specs:
  """What every process derives from the gin config.

  Attributes:
    time_step_spec: Of the environment.
    action_spec: Of the environment.
    collect_data_spec: Of one trajectory step written by the actors.
    replay_signature: Of one replay item (collect_data_spec with a time dimension).
    variables_signature: Of the variable-table item ({policy_variables, train_step}).
  """
  time_step_spec: object
  action_spec: object
  collect_data_spec: object
  replay_signature: object
  variables_signature: object


def make_agent_and_specs(replay_config: ReplayConfig, train_step=None):
  """Builds the gin-configured agent and derives every signature from it.

  Args:
    replay_config: Gives the replay item's sequence length.
    train_step: The int64 train-step variable for the agent; a new one at 0 if None.

  Returns:
    (agent, Specs).
  """
  time_step_spec, action_spec = environments.environment_specs()
  if train_step is None:
    train_step = tfa_common.create_variable('train_step')
  agent = agents.make_agent(time_step_spec, action_spec, train_step)
  specs = Specs(
      time_step_spec=time_step_spec,
      action_spec=action_spec,
      collect_data_spec=agent.collect_data_spec,
      replay_signature=replay.replay_signature(agent.collect_data_spec,
                                               replay_config.sequence_length),
      variables_signature=agents.variables_signature(
          agents.policy_variables(agent, train_step)))
  return agent, specs


def make_tables(specs: Specs, replay_config: ReplayConfig):
  """The replay table and the variable table, in that order."""
  return [
      replay.make_replay_table(specs.collect_data_spec, replay_config),
      replay.make_variable_table(specs.variables_signature),
  ]


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
