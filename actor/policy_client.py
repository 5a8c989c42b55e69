"""What the collect actors and eval share: connect, check signatures, pull weights."""

import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from common import agents
from common import builders
from common import connection
from common import constants
from common import variables as variables_lib
from common.config import ReplayConfig


class PolicyClient:
  """An agent built from the gin config, whose weights follow the learner's pushes.

  Attributes:
    agent: The TF-Agents agent (its policies share the pulled variables).
    specs: The specs derived from the gin config.
    train_step: Learner step of the weights in use (-1 until the first pull succeeds).
  """

  def __init__(self, server_address: str, replay_config: ReplayConfig, role: str,
               server_timeout_s: float, stop_event: Optional[threading.Event] = None):
    self._address = server_address
    self._role = role
    self._timeout_s = server_timeout_s
    self._stop = stop_event or threading.Event()
    self._train_step = tf.Variable(-1, dtype=tf.int64, name='train_step')
    self.agent, self.specs = builders.make_agent_and_specs(replay_config, self._train_step)
    self._variables = agents.policy_variables(self.agent, self._train_step)
    self._client = None
    self.server_info = None

  @property
  def train_step(self) -> int:
    return int(self._train_step.numpy())

  @property
  def train_step_variable(self) -> tf.Variable:
    return self._train_step

  @property
  def has_weights(self) -> bool:
    return self.train_step >= 0

  def connect(self) -> None:
    """Waits (bounded, logged) for the server, checks both signatures, opens the client.

    Raises:
      ServerUnavailableError: no answer before --server_timeout_s.
      SignatureMismatchError: the server was built for another environment or agent.
    """
    self.server_info = connection.wait_for_server(
        self._address, self._timeout_s, self._role, is_running=lambda: not self._stop.is_set())
    connection.check_signature(self.server_info, constants.REPLAY_TABLE,
                               self.specs.replay_signature)
    connection.check_signature(self.server_info, constants.VARIABLE_TABLE,
                               self.specs.variables_signature)
    self._client = variables_lib.VariableClient(self._address, self._variables)

  def pull(self) -> Optional[int]:
    """Loads the newest weights if any were pushed; returns their train step or None.

    An empty variable table (no push yet, or a restarted server before the learner's next
    push) is seen with a cheap probe and leaves the current weights in place, so a pull never
    blocks on it.
    """
    info = connection.probe(self._address)
    if info is None or not info[constants.VARIABLE_TABLE].current_size:
      return None
    self.server_info = info
    step = self._client.pull()
    if step is not None and step < 0:
      return None
    return step

  def log_first_weights(self, step: int) -> None:
    logging.info('%s: first weights arrived (learner step %d); switching from the random '
                 'policy', self._role, step)
