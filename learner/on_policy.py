"""The on-policy learner: each iteration gathers a batch of current items, runs TF-Agents'
`PPOLearner` epochs over it, and leaves the pushing to the learner's triggers.

TF-Agents 0.19 has no distributed PPO: its PPO examples collect and train in turn in one process
and clear both replay tables after every iteration, and its `PPOLearner` reads its batch
straight from Reverb, so it cannot tell which weights produced an item. Here the actors keep
collecting while the learner trains, and every item carries the train step of the weights that
produced it as its priority (`families.OnPolicy`). `OnPolicyTrainer.run`:
1. gathers `LearnerConfig.batch_size` items from the replay queue, one at a time, and drops
   (and counts) every item more than `max_policy_lag` iterations behind the learner's weights,
   or ahead of them (written for weights of a run this learner resumed before);
2. computes values and advantages over the batch (`agent.preprocess_sequence`), then runs
   `PPOLearner.run`: the normalizers are updated from the batch, and `num_epochs` epochs of
   shuffled minibatches are trained under the distribution strategy, exactly as in the stock
   example. `PPOLearner` reads its batch through two in-memory queues fed here, one for
   training and one for the normalizers, instead of two Reverb tables;
3. the learner's triggers run after the epochs: the weight push (every iteration), checkpoints
   and exports.
Items gathered before a rate-limiter timeout or a lost server are kept for the next try, so no
item taken from the queue is lost. The time spent waiting for items is measured
(`data_wait_share`), as the actors measure theirs.
"""

import queue
import time
from typing import List

from absl import logging
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.train import ppo_learner

from common.agents import families
from common.errors import UserError
from learner import compiled_learner

# How long a queued batch waits for PPOLearner's dataset before the trainer checks its flag.
_POLL_S = 1.0


def steps_per_iteration(on_policy: families.OnPolicy, batch_size: int, sequence_length: int,
                        num_replicas: int) -> int:
  """Train steps of one iteration (one `PPOLearner.run`), checked against the replicas.

  Raises:
    UserError: the batch does not split into whole minibatches, or the minibatches of one
      iteration do not split over the replicas (the stock learner's rule, said up front).
  """
  frames = batch_size * sequence_length
  if on_policy.minibatch_size:
    if frames % on_policy.minibatch_size:
      raise UserError(
          f'an iteration gathers LearnerConfig.batch_size={batch_size} items of '
          f'{sequence_length} steps ({frames} steps), which do not split into minibatches of '
          f'{on_policy.minibatch_size}: make batch_size * collect_sequence_length a multiple of '
          'ppo_agent.minibatch_size')
    batches = frames // on_policy.minibatch_size * on_policy.num_epochs
  else:
    batches = on_policy.num_epochs
  if batches % num_replicas:
    raise UserError(
        f'an iteration trains {batches} batches, which do not split over {num_replicas} '
        'replicas: make the minibatches per epoch times ppo_agent.num_epochs a multiple of the '
        'replica count')
  return batches // num_replicas


class OnPolicyTrainer(ppo_learner.PPOLearner):
  """`PPOLearner` over batches gathered by policy version, with the project's Learner underneath.

  The Learner that runs the train steps is a `compiled_learner.CompiledLearner` (checkpoint
  retries, the finite-weights guard before each save), so `triggers`, `train_summary_writer`
  and `train_step` are those of the off-policy learner. Use `run(iterator=...)` with an
  iterator of single replay samples (`dataset.make_item_iterator`).

  Attributes:
    steps_per_iteration: Train steps each `run` adds.
    gathered, dropped: Items gathered for training, and items dropped as stale, since start.
    wait_seconds, train_seconds: Time spent waiting for items, and in `PPOLearner.run`.
  """

  def __init__(self, root_dir: str, train_step: tf.Variable, agent, on_policy: families.OnPolicy,
               batch_size: int, sequence_length: int, strategy: tf.distribute.Strategy,
               checkpoint_interval: int, summary_interval: int, max_checkpoints_to_keep: int,
               save_guard=None, use_xla: bool = False):
    # pylint: disable=super-init-not-called
    # PPOLearner.__init__ builds a stock Learner; this sets the same attributes around ours.
    minibatch = on_policy.minibatch_size
    if minibatch and (agent._actor_net.state_spec or agent._value_net.state_spec):  # pylint: disable=protected-access
      raise UserError('a recurrent PPO network trains on whole items: bind '
                      'ppo_agent.minibatch_size = None')
    self.steps_per_iteration = steps_per_iteration(on_policy, batch_size, sequence_length,
                                                   strategy.num_replicas_in_sync)
    self._agent = agent
    self._on_policy = on_policy
    self._batch_size = batch_size
    self._minibatch_size = minibatch
    self._shuffle_buffer_size = sequence_length * batch_size
    self._num_epochs = on_policy.num_epochs
    self._num_samples = 1
    self._closed = False
    self._train_batches: queue.Queue = queue.Queue()
    self._norm_batches: queue.Queue = queue.Queue()
    batch_spec = tensor_spec.add_outer_dims_nest(
        tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, s.dtype),
                              agent.training_data_spec), (batch_size, sequence_length))
    self._signature = (batch_spec, tf.TensorSpec((batch_size, sequence_length), tf.float64))
    self._experience_dataset_fn = lambda: self._dataset(self._train_batches)
    self._normalization_dataset_fn = lambda: self._dataset(self._norm_batches)
    self._generic_learner = compiled_learner.CompiledLearner(
        root_dir, train_step, agent, experience_dataset_fn=None,
        checkpoint_interval=checkpoint_interval, summary_interval=summary_interval,
        max_checkpoints_to_keep=max_checkpoints_to_keep, strategy=strategy,
        use_xla=use_xla, save_guard=save_guard)
    self.num_replicas = strategy.num_replicas_in_sync
    self._create_datasets(strategy)
    self.num_frames_for_training = tf.Variable(0, dtype=tf.int32)
    self._preprocess = tf.function(agent.preprocess_sequence, autograph=False)
    self._pending: List[tuple] = []
    self.gathered = self.dropped = 0
    self.wait_seconds = self.train_seconds = 0.0
    self._started = None  # At the first gather: the shares are of the training loop's time.
    self._last = (0, 0, 0.0, 0.0, time.monotonic())

  # The Learner's surface, as `run_learner` uses it.
  @property
  def triggers(self):
    return self._generic_learner.triggers

  @property
  def train_summary_writer(self):
    return self._generic_learner.train_summary_writer

  @property
  def train_step(self):
    return self._generic_learner.train_step

  @tf.autograph.experimental.do_not_convert
  def _dataset(self, batches: queue.Queue) -> tf.data.Dataset:
    """One queued batch, when `PPOLearner`'s pipeline asks for it (it may ask ahead)."""

    def generate():
      while True:
        try:
          yield batches.get(timeout=_POLL_S)
          return
        except queue.Empty:
          if self._closed:
            raise RuntimeError('on-policy trainer closed') from None

    return tf.data.Dataset.from_generator(generate, output_signature=self._signature)

  def is_fresh(self, version: float) -> bool:
    """Whether an item of weights `version` (their train step) may train the current weights."""
    current = int(self.train_step.numpy())
    oldest = current - self._on_policy.max_policy_lag * self.steps_per_iteration
    return oldest <= version <= current

  def gather(self, iterator) -> list:
    """Takes items from `iterator` until `batch_size` fresh ones are held; returns them.

    Raises what the iterator raises (OutOfRangeError on a rate-limiter timeout, connection
    errors); the items held so far are kept for the next call.
    """
    if self._started is None:
      self._started = time.monotonic()
    while len(self._pending) < self._batch_size:
      start = time.monotonic()
      try:
        sample = next(iterator)
      except StopIteration:  # Eagerly, the rate-limiter timeout ends the iterator so.
        raise tf.errors.OutOfRangeError(None, None, 'no replay item within the rate-limiter '
                                        'timeout') from None
      finally:
        self.wait_seconds += time.monotonic() - start
      version = float(sample.info.priority.numpy())
      if not self.is_fresh(version):
        self.dropped += 1
        continue
      self._pending.append((sample.data, version))
    batch, self._pending = self._pending[:self._batch_size], self._pending[self._batch_size:]
    self.gathered += len(batch)
    return batch

  def run(self, iterations=None, iterator=None, parallel_iterations: int = 10):
    """One iteration: gather a batch, then `PPOLearner`'s normalizer update and epochs.

    `iterations` is ignored: an iteration is always `steps_per_iteration` train steps.
    Returns the LossInfo of the last train step.
    """
    del iterations
    batch = self.gather(iterator)
    data = tf.nest.map_structure(lambda *xs: tf.stack(xs), *[d for d, _ in batch])
    processed = tf.nest.pack_sequence_as(  # In the spec's own nest types.
        self._signature[0], [t.numpy() for t in tf.nest.flatten(self._preprocess(data))])
    versions = np.repeat(np.array([v for _, v in batch], np.float64)[:, None],
                         data.reward.shape[1], axis=1)
    self._train_batches.put((processed, versions))
    self._norm_batches.put((processed, versions))
    start = time.monotonic()
    try:
      return super().run(parallel_iterations=parallel_iterations)
    finally:
      self.train_seconds += time.monotonic() - start

  def interval_line(self) -> str:
    """Items, drops and the data-wait share since the previous call, for the log line."""
    gathered, dropped, wait, train, since = self._last
    now = time.monotonic()
    elapsed = max(now - since, 1e-9)
    line = (f'items={self.gathered - gathered} dropped_stale={self.dropped - dropped} '
            f'data_wait={100 * (self.wait_seconds - wait) / elapsed:.0f}% '
            f'epochs={100 * (self.train_seconds - train) / elapsed:.0f}%')
    self._last = (self.gathered, self.dropped, self.wait_seconds, self.train_seconds, now)
    return line

  def totals_line(self) -> str:
    """Items, drops and time shares since start, for the learner's stop line."""
    elapsed = max(time.monotonic() - (self._started or time.monotonic()), 1e-9)
    return (f'{self.gathered} items trained on, {self.dropped} dropped as stale; of '
            f'{elapsed:.1f} s, data_wait={100 * self.wait_seconds / elapsed:.1f}% '
            f'epochs={100 * self.train_seconds / elapsed:.1f}%')

  def before_push(self) -> None:
    pass

  def close(self) -> None:
    """Ends the pipeline's waits for batches that will not come; logs the totals."""
    self._closed = True
    logging.info('learner: on-policy: %s', self.totals_line())
