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
import numpy as np
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
    super().__init__(*args, on_items=priority_writer.submit, **kwargs)
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
  logging.info('learner: prioritized replay; importance-weighted loss, priority updates')
  return PrioritizedTrainer(inputs.learner_dir, inputs.train_step, built.agent,
                            experience_dataset_fn=None, item_step=step,
                            priority_writer=writer, max_priority=built.max_priority,
                            **_learner_kwargs(inputs))


class LagStep:
  """IMPALA's train step: each item's lag, the items beyond the limit weighted out, V-trace.

  Called per replica with a batch of (experience, SampleInfo) from the queue. An item's lag is
  the learner's train step minus its priority, the train step of the weights that wrote it
  (`families.Impala.new_item_priority`). Returns (LossInfo, keys uint64 [B], lags float64 [B]).
  """

  def __init__(self, agent, train_step: tf.Variable, max_policy_lag: Optional[int]):
    self._agent, self._train_step, self._max_lag = agent, train_step, max_policy_lag

  def __call__(self, experience, sample_info):
    lags = tf.cast(self._train_step, tf.float64) - tf.cast(sample_info.priority, tf.float64)
    weights = None
    if self._max_lag is not None:
      weights = tf.cast(lags <= self._max_lag, tf.float32)
    loss_info = self._agent.train(experience, weights=weights)
    return loss_info, sample_info.key, lags


class ImpalaTrainer(OffPolicyTrainer):
  """V-trace train steps on the queue's batches; counts the items trained on and dropped, and
  their lag, for the log (`interval_line`, and the totals at `close`)."""

  def __init__(self, *args, max_policy_lag: Optional[int], **kwargs):
    super().__init__(*args, on_items=self._count, **kwargs)
    self._max_lag = max_policy_lag
    self.items = self.dropped = 0
    self.lag_sum = 0.0
    self.lag_max = 0.0
    self._last = (0, 0, 0.0)

  def _count(self, keys: np.ndarray, lags: np.ndarray) -> None:
    del keys
    dropped = int(np.count_nonzero(lags > self._max_lag)) if self._max_lag is not None else 0
    self.items += lags.size - dropped
    self.dropped += dropped
    self.lag_sum += float(lags.sum())
    if lags.size:
      self.lag_max = max(self.lag_max, float(lags.max()))

  def interval_line(self) -> str:
    items, dropped, lag_sum = self._last
    seen = self.items + self.dropped - items - dropped
    mean = (self.lag_sum - lag_sum) / seen if seen else 0.0
    self._last = (self.items, self.dropped, self.lag_sum)
    return (f'items={self.items - items} dropped_stale={self.dropped - dropped} '
            f'lag_mean={mean:.1f}')

  def close(self) -> None:
    seen = self.items + self.dropped
    logging.info('learner: impala: %d items trained on, %d dropped as stale; lag (train steps '
                 'behind the learner) mean %.2f, max %.0f', self.items, self.dropped,
                 self.lag_sum / seen if seen else 0.0, self.lag_max)


def impala_trainer(inputs: Inputs) -> ImpalaTrainer:
  """IMPALA: V-trace on the queue's items, whatever their lag, up to `max_policy_lag`."""
  built = inputs.built
  family = built.specs.family
  step = LagStep(built.agent, inputs.train_step, family.max_policy_lag)
  logging.info('learner: impala; V-trace on items of %d steps, %s', built.specs.sequence_length,
               'none dropped for lag' if family.max_policy_lag is None else
               f'items over {family.max_policy_lag} train steps behind dropped')
  return ImpalaTrainer(inputs.learner_dir, inputs.train_step, built.agent,
                       experience_dataset_fn=None, item_step=step,
                       max_policy_lag=family.max_policy_lag, **_learner_kwargs(inputs))


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
