"""The learner's trainers, one per algorithm family (`agents.families`), behind one surface.

A trainer is what `run_learner` loops over. Each has the part of the TF-Agents `Learner`'s
surface that the loop uses, and three methods of its own:
- `run(iterations, iterator)`: train steps on the iterator the family made, then the triggers;
  returns the LossInfo of the last step;
- `triggers`, `train_summary_writer`: the Learner's;
- `interval_line()`: what the family adds to the learner's periodic log line ('' for none);
- `before_push()`: called before each weight push (prioritized replay: the largest recent
  priority goes with the weights);
- `close()`: ends what the trainer runs beside the loop and logs its totals; called once,
  when the loop ends.

The family's `make_trainer(Inputs)` calls one of the factories here.
"""

import dataclasses
from typing import Callable, Optional

from absl import logging
import tensorflow as tf

from common import constants
from learner import compiled_learner
from learner import on_policy as on_policy_lib
from learner import priorities as priorities_lib


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What a family needs to make its trainer.

  Attributes:
    learner_dir: Checkpoints and summaries go here.
    train_step: The learner's int64 train-step variable.
    built: The `builders.Build` (agent, specs, td_errors, max_priority).
    strategy: The distribution strategy.
    learner_config: `LearnerConfig`.
    replay_config: `ReplayConfig`.
    session: The learner's `session.ServerSession` (priority updates go through it).
    save_guard: Called with the train step before each save; raises to prevent it.
  """
  learner_dir: str
  train_step: tf.Variable
  built: object
  strategy: tf.distribute.Strategy
  learner_config: object
  replay_config: object
  session: object
  save_guard: Optional[Callable[[int], None]] = None


class OffPolicyTrainer(compiled_learner.CompiledLearner):
  """The off-policy trainer: `CompiledLearner` with the trainer surface."""

  def interval_line(self) -> str:
    return ''

  def before_push(self) -> None:
    pass

  def close(self) -> None:
    pass


class PrioritizedTrainer(OffPolicyTrainer):
  """Importance-weighted train steps whose new priorities go to the replay table off the loop
  (`priorities.PriorityWriter`); each push carries the largest priority written since the
  previous one, which the actors give new items (Schaul et al.'s rule, with the maximum of
  recent updates rather than of all time)."""

  def __init__(self, *args, priority_writer: priorities_lib.PriorityWriter,
               max_priority: tf.Variable, **kwargs):
    super().__init__(*args, on_priorities=priority_writer.submit, **kwargs)
    self._priority_writer = priority_writer
    self._max_priority = max_priority

  def before_push(self) -> None:
    recent_max = self._priority_writer.take_max()
    if recent_max is not None:
      self._max_priority.assign(recent_max)

  def close(self) -> None:
    writer = self._priority_writer
    writer.close()
    logging.info('learner: sent %d priority updates in %d calls (%d failed)',
                 writer.sent_updates, writer.sends, writer.failures)


def _learner_kwargs(inputs: Inputs) -> dict:
  config = inputs.learner_config
  return dict(checkpoint_interval=config.checkpoint_interval,
              summary_interval=config.summary_interval,
              max_checkpoints_to_keep=config.max_checkpoints_to_keep,
              strategy=inputs.strategy, use_xla=config.use_xla, save_guard=inputs.save_guard)


def off_policy_trainer(inputs: Inputs) -> OffPolicyTrainer:
  """Uniform replay: the agent's own train step on sampled batches."""
  built = inputs.built
  return OffPolicyTrainer(inputs.learner_dir, inputs.train_step, built.agent,
                          experience_dataset_fn=None, **_learner_kwargs(inputs))


def prioritized_trainer(inputs: Inputs) -> PrioritizedTrainer:
  """Prioritized replay: weighted train steps, priority updates, the max priority pushed."""
  built = inputs.built
  step = priorities_lib.PrioritizedStep(built.agent, built.td_errors, inputs.replay_config,
                                        inputs.train_step)
  writer = priorities_lib.PriorityWriter(inputs.session, constants.REPLAY_TABLE)
  return PrioritizedTrainer(inputs.learner_dir, inputs.train_step, built.agent,
                            experience_dataset_fn=None, prioritized_step=step,
                            priority_writer=writer, max_priority=built.max_priority,
                            **_learner_kwargs(inputs))


def on_policy_trainer(inputs: Inputs) -> on_policy_lib.OnPolicyTrainer:
  """On-policy: batches gathered by policy version, `num_epochs` epochs each iteration."""
  built, config = inputs.built, inputs.learner_config
  specs = built.specs
  trainer = on_policy_lib.OnPolicyTrainer(
      inputs.learner_dir, inputs.train_step, built.agent, specs.family, config.batch_size,
      specs.sequence_length, inputs.strategy,
      checkpoint_interval=config.checkpoint_interval,
      summary_interval=config.summary_interval,
      max_checkpoints_to_keep=config.max_checkpoints_to_keep,
      save_guard=inputs.save_guard, use_xla=config.use_xla)
  logging.info('learner: on-policy; %d items of %d steps per iteration, %d train steps each, '
               'items up to %d iteration(s) behind the weights', config.batch_size,
               specs.sequence_length, trainer.steps_per_iteration, specs.family.max_policy_lag)
  return trainer
