"""What the collect actors and eval share: connect, check signatures, pull weights."""

import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from common import agents
from common import builders
from common import constants
from common import session as session_lib
from common import variables as variables_lib
from common import weights_key
from common.config import ReplayConfig


class PolicyClient:
  """An agent built from the gin config, whose weights follow the learner's pushes.

  Attributes:
    agent: The TF-Agents agent (its policies share the pulled variables).
    specs: The specs derived from the gin config.
    session: The process's `session.ServerSession` (connect, reconnect, probes).
    train_step: Learner step of the weights in use (-1 until the first pull succeeds).
  """

  def __init__(self, server_address: str, replay_config: ReplayConfig, role: str,
               server_timeout_s: float, keys: weights_key.KeySource,
               stop_event: Optional[threading.Event] = None,
               actor: Optional[agents.ActorSlot] = None):
    """
    Args:
      server_address: host:port of the replay server.
      replay_config: The replay table's configuration.
      role: For log lines ('actor 3', 'eval').
      server_timeout_s: Deadline of each (re)connect.
      keys: The run's weights key; no weights are loaded while it has none.
      stop_event: Ends waits early when set.
      actor: The collect actor this client serves (its exploration), or None for eval.
    """
    self._role = role
    stop_event = stop_event or threading.Event()
    self._train_step = tf.Variable(-1, dtype=tf.int64, name='train_step')
    built = builders.build(replay_config, self._train_step, actor)
    self.agent, self.specs = built.agent, built.specs
    self._variables = built.variables
    self._max_priority = built.max_priority
    self.session = session_lib.ServerSession(server_address, role, self.specs, server_timeout_s,
                                             lambda: not stop_event.is_set())
    self._keys = keys
    self._client = None
    self._older_logged = None
    self.refused = 0  # Variable-table items read whose signature did not verify.
    self._loaded_inserts = None  # The variable table's insert count at the last load.

  @property
  def train_step(self) -> int:
    return int(self._train_step.numpy())

  @property
  def max_priority(self) -> Optional[float]:
    """The priority for new items that came with the weights (prioritized replay), else None."""
    return None if self._max_priority is None else float(self._max_priority.numpy())

  def connect(self) -> None:
    """Waits (bounded, logged) for the server, checks both signatures, opens the client.

    Raises:
      ServerUnavailableError: no answer before --server_timeout_s.
      SignatureMismatchError: the server was built for another environment or agent.
    """
    self.session.connect()
    self._client = None  # Made at the first pull with a key (`_variable_client`).

  def reconnect(self, error: BaseException) -> None:
    """After a CONNECTION_ERRORS `error`: logs it, waits for the server and checks it again."""
    self.session.reconnect(error)
    self._loaded_inserts = None  # A new server counts its inserts anew.

  def pull(self) -> Optional[int]:
    """Loads the newest weights if any were pushed; returns their train step or None.

    An empty variable table (no push yet, or a restarted server before the learner's next
    push) is seen with a cheap probe and leaves the current weights in place, so a pull never
    blocks on it. So does a table whose insert count is the one of the weights in use: nothing
    was pushed since they were loaded, and they are not read again (an actor that checks after
    every item of 20 steps would otherwise read the whole network each time). Weights older
    than those in use (a server restored from an old checkpoint) are not loaded either: weights
    never go backwards. Nothing is loaded before the run's key is there, nor from an item whose
    signature does not verify under it (counted in `refused`; the first is logged).
    """
    if self._client is None:
      signer = self._keys.signer()
      if signer is None:
        return None
      self._client = variables_lib.VariableClient(self.session, self._variables, signer)
    info = self.session.probe()
    if info is None or not info[constants.VARIABLE_TABLE].current_size:
      return None
    inserts = int(info[constants.VARIABLE_TABLE].rate_limiter_info.insert_stats.completed)
    if inserts == self._loaded_inserts:
      return None
    current = self.train_step
    step = self._client.pull(not_older_than=current if current >= 0 else None)
    self._loaded_inserts = inserts
    if self._client.refused:
      self.refused += 1
      if self.refused == 1:
        logging.warning('%s: the variable table holds an item that is not signed with this '
                        'run\'s weights key (a peer on the network, or a learner of another '
                        'run); it was not loaded, nor will any be that fail to verify (counted '
                        'as weights_refused in the status records). If this learner\'s own '
                        'weights are refused, give every role the same key: --weights_key_file '
                        'or $%s', self._role, weights_key.ENV_VAR)
      return None
    if step is None and self._client.older_step is not None:
      if self._client.older_step != self._older_logged:
        logging.warning('%s: the variable table holds the weights of train step %d, older than '
                        'those in use (%d); keeping these until newer ones are pushed',
                        self._role, self._client.older_step, current)
        self._older_logged = self._client.older_step
      return None
    if step is not None and step < 0:
      return None
    return step

  def log_first_weights(self, step: int) -> None:
    logging.info('%s: first weights arrived (learner step %d); switching from the random '
                 'policy', self._role, step)
