"""Assembles the learner: strategy, agent, the family's iterator and trainer, triggers.

Everything that differs between algorithm families comes from the family
(`specs.family.make_iterator_fn`, `make_trainer`, `push_interval`); this module only puts the
parts together, in the order the learner's contract needs: the server is reached and its
tables checked before anything is written, the learner directory is owned before its first
write, and the agent's checkpoint is checked before the trainer restores it.
"""

import dataclasses
import os
import threading
from typing import Callable, Optional

from absl import logging
import tensorflow as tf
from tf_agents.train import triggers
from tf_agents.train.utils import strategy_utils
from tf_agents.train.utils import train_utils

from common import builders
from common import config as config_lib
from common import gin_config
from common import files
from common import connection
from common import constants
from common import environments
from common import ownership
from common import session as session_lib
from common import storage
from common import weights_key
from common import variables as variables_lib
from common.errors import UserError
from learner import agent_record
from learner import divergence
from learner import export
from learner import trainers

CONNECTION_ERRORS = connection.CONNECTION_ERRORS


def make_strategy() -> tf.distribute.Strategy:
  """MirroredStrategy over every visible GPU, the default strategy where there is none."""
  gpus = tf.config.list_physical_devices('GPU')
  strategy = strategy_utils.get_strategy(tpu=False, use_gpu=bool(gpus))
  logging.info('learner: %s with %d replica(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


@dataclasses.dataclass
class Learning:
  """The assembled learner: what `run_learner`'s loop and its stop need.

  Attributes:
    trainer: The family's trainer (`trainers` surface).
    train_step: The train-step variable.
    specs: `builders.Specs`.
    make_iterator: Makes a fresh iterator over the replay table (the family's).
    session: The learner's `session.ServerSession`.
    push: The weight-push trigger (also among `trainer.triggers`).
    finite: The divergence check (`divergence.FiniteCheck`).
    summary_faults: Handles a summary write on a full disk.
    learner_dir: root_dir/learner.
  """
  trainer: object
  train_step: tf.Variable
  specs: builders.Specs
  make_iterator: Callable[[], object]
  session: session_lib.ServerSession
  push: 'PushTrigger'
  finite: divergence.FiniteCheck
  summary_faults: storage.SummaryFaults
  learner_dir: str

  @property
  def step(self) -> int:
    return int(self.train_step.numpy())


def assemble(root_dir: str, server_address: str, configs: config_lib.Configs,
             server_timeout_s: float, stop_event: threading.Event,
             strategy: Optional[tf.distribute.Strategy], max_train_steps: int,
             weights_key_file: Optional[str] = None) -> Learning:
  """Builds the learner of `configs` against the server at `server_address`.

  Raises:
    UserError: the agent cannot train on this strategy's replicas, the learner directory holds
      another agent, or the server was built for another environment or agent.
    ServerUnavailableError: no answer before `server_timeout_s`.
  """
  strategy = strategy or make_strategy()
  learner_config = configs.learner
  with strategy.scope():
    train_step = train_utils.create_train_step()
    built = builders.build(configs.replay, train_step)
  _check_replicas(built, strategy)
  specs = built.specs
  make_iterator = specs.family.make_iterator_fn(strategy, server_address, specs,
                                                learner_config)
  key_path = weights_key_file or weights_key.default_path(root_dir)
  weights_key.check(key_path)
  session = session_lib.ServerSession(server_address, 'learner', specs, server_timeout_s,
                                      lambda: not stop_event.is_set())
  session.connect()
  watch = variables_lib.PushWatch(session, learner_config.foreign_push_window_s)
  learner_dir = os.path.join(root_dir, constants.LEARNER_DIR)
  _own(learner_dir, built.agent)
  signer = weights_key.learner_signer(key_path)
  learning_rates = agent_record.configured_learning_rates(built.agent)
  finite = divergence.FiniteCheck(
      built.agent.variables, os.path.join(learner_dir, agent_record.CHECKPOINT_SUBDIR))
  trainer = specs.family.make_trainer(trainers.Inputs(
      learner_dir=learner_dir, train_step=train_step, built=built, strategy=strategy,
      learner_config=learner_config, replay_config=configs.replay, session=session,
      save_guard=finite))
  agent_record.apply_learning_rates(built.agent, learning_rates)  # After the restore.
  summary_faults = storage.SummaryFaults('learner', os.path.join(learner_dir, 'train'))
  summary_faults.wrap(trainer.train_summary_writer)
  start_step = int(train_step.numpy())
  logging.info('learner: %s at train step %d', 'resumed' if start_step else 'starting',
               start_step)
  _record(root_dir, learner_dir, server_address, max_train_steps)
  push = PushTrigger(variables_lib.VariableClient(session, built.variables, signer),
                     specs.family.push_interval(learner_config), start_step,
                     before_push=trainer.before_push, guard=finite, watch=watch)
  trainer.triggers.extend([
      export.PolicyExportTrigger(os.path.join(root_dir, constants.POLICY_DIR), built.agent,
                                 train_step, learner_config.policy_export_interval,
                                 guard=finite),
      triggers.StepPerSecondLogTrigger(train_step, interval=learner_config.log_interval),
      push,
  ])
  watch.check_start()
  push(start_step, force_trigger=True)
  return Learning(trainer, train_step, specs, make_iterator, session, push, finite,
                  summary_faults, learner_dir)


def _check_replicas(built: builders.Build, strategy: tf.distribute.Strategy) -> None:
  replicas = strategy.num_replicas_in_sync
  if built.single_replica_reason and replicas > 1:
    raise UserError(f'{built.single_replica_reason}, so this agent cannot train on '
                    f'{replicas} replicas: give the learner one GPU '
                    '(CUDA_VISIBLE_DEVICES=0) or pick another agent')


def _own(learner_dir: str, agent) -> None:
  """Checks the directory's checkpoints are of `agent`, owns it, records the agent."""
  agent_record.check(learner_dir, agent)
  ownership.own(learner_dir, 'learner')  # Before the first write under learner_dir.
  agent_record.set_aside_unreadable(learner_dir)
  agent_record.record(learner_dir, agent)


def _record(root_dir: str, learner_dir: str, server_address: str, max_train_steps: int):
  """The run config, and the observation layout of a Dict or Tuple observation (how the
  exported policies' input vector is laid out)."""
  gin_config.record_run_config(learner_dir, {'root_dir': root_dir,
                                             'replay_server_address': server_address,
                                             'max_train_steps': max_train_steps})
  layout = environments.observation_layout()
  if layout:
    files.atomic_write(os.path.join(root_dir, constants.OBSERVATION_LAYOUT), layout)


class PushTrigger:
  """Pushes the policy weights every `interval` train steps; a failed push is logged, not fatal.

  With a `watch`, inserts into the variable table that are not this learner's are counted and
  logged (`variables.PushWatch`). `before_push` runs before each
  push (the trainer's: prioritized replay's max priority goes with the weights).
  """

  def __init__(self, client: variables_lib.VariableClient, interval: int, start: int,
               before_push: Callable[[], None] = lambda: None,
               guard: Optional[Callable[[int], None]] = None,
               watch: Optional[variables_lib.PushWatch] = None):
    self._client = client
    self._guard = guard
    self._watch = watch
    self._interval = interval
    self._last = start
    self._before_push = before_push

  def __call__(self, step: int, force_trigger: bool = False) -> None:
    if not force_trigger and step - self._last < self._interval:
      return
    if self._guard is not None:
      self._guard(step)
    self._before_push()
    try:
      if self._watch is not None:
        self._watch.before_push()
      self._client.push()
      if self._watch is not None:
        self._watch.after_push()
      self._last = step
    except CONNECTION_ERRORS as e:
      logging.warning('learner: weight push at step %d failed (%s); retrying at the next '
                      'interval', step, connection.first_line(e))
