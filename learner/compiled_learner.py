"""A TF-Agents Learner whose train steps can be XLA-compiled and can feed prioritized replay.

TF-Agents' `Learner.run(iterations=n)` already runs n train steps inside one `tf.function`
(a `tf.while_loop`), which the learner uses through `LearnerConfig.iterations_per_call`. Two
things it cannot do:
- compile the agent's train step with XLA: the step writes TensorBoard summaries from inside
  the graph, and summary ops do not compile;
- prioritized replay: it calls `agent.train(experience)` without importance weights, drops the
  sample info, and reduces every loss output over the batch, so no per-item TD error leaves it
  (tensorflow/agents#522).
`CompiledLearner` keeps everything else of the stock Learner (checkpoints, restore, triggers,
the summary writer). When `use_xla` or `item_step` is set, `run` goes through its own loop of
n train steps in one graph: each step is `item_step(experience, sample_info)` (a train step
that reads the sample info and returns one value per item: prioritized replay's new
priorities, IMPALA's lags) or `agent.train(experience)`, XLA-compiled with `use_xla` and
traced without a summary writer. The loop returns the sampled keys and the items' values of
all n steps, handed to `on_items`; the loss and its scalar parts are written to TensorBoard
from Python every `summary_interval` train steps. bench/learner_bench.py measures both.
"""

import glob
import os
from typing import Callable, Optional

from absl import logging
import numpy as np
import tensorflow as tf
from tf_agents.train import learner as tfa_learner

from common import storage


class CompiledLearner(tfa_learner.Learner):
  """`tf_agents.train.learner.Learner` with an optional XLA-compiled or per-item train step.

  Takes the stock Learner's arguments plus:
    use_xla: Compile each train step with XLA.
    item_step: Called per replica as `item_step(experience, sample_info)`; trains and returns
      (LossInfo, keys uint64 [B], values float64 [B]): a `priorities.PrioritizedStep` (new
      priorities), or IMPALA's lag step.
    on_items: Called after each `run` with (keys uint64 [n * batch], values float64) when
      `item_step` is set.
    save_guard: Called with the train step before each checkpoint; raises to prevent it
      (`divergence.FiniteCheck`).
  Without either option, `run` is the stock one. In both, a checkpoint that fails on a storage
  fault is logged and retried with backoff (`storage.IntervalSave`) while training goes on.
  """

  def __init__(self, *args, use_xla: bool = False,
               item_step: Optional[Callable] = None,
               on_items: Optional[Callable[[np.ndarray, np.ndarray], None]] = None,
               save_guard: Optional[Callable[[int], None]] = None,
               **kwargs):
    self._save_guard = save_guard  # Read by _get_checkpoint_trigger, inside super().__init__.
    super().__init__(*args, **kwargs)
    self._use_xla = use_xla
    self._per_item = item_step is not None
    self._on_items = on_items
    self._summary_every = int(self.summary_interval.numpy())
    self._last_summary_step = int(self.train_step.numpy())
    self._own_loop = use_xla or self._per_item
    if self._per_item:
      # Like the stock Learner's `agent.train`: autograph must not rewrite the agent's Python
      # control flow, or a gradient all-reduce ends up inside a converted conditional, which
      # MirroredStrategy cannot run.
      step_fn = tf.autograph.experimental.do_not_convert(item_step)
    else:
      step_fn = lambda experience, _: self._agent.train(experience)  # pylint: disable=unnecessary-lambda
    self._step_fn = tf.function(step_fn, jit_compile=True) if use_xla else step_fn
    if self._own_loop:
      self._compiled_loop = tf.function(self._loop)
    if use_xla:
      logging.info('learner: train step compiled with XLA')

  def _get_checkpoint_trigger(self, checkpoint_interval):
    """The stock checkpoint trigger, made a `storage.IntervalSave` (logged retries)."""
    if checkpoint_interval <= 0:
      return super()._get_checkpoint_trigger(checkpoint_interval)
    directory = self._checkpointer.manager.directory

    def save():
      try:
        return self._checkpointer.save(self.train_step)
      except Exception as e:
        if storage.is_storage_error(e):  # Free what the failed write took, for the next try.
          for path in glob.glob(os.path.join(directory, '*_temp*')):
            storage.remove(path)
        raise

    return storage.IntervalSave(
        checkpoint_interval, storage.RetryingSave('learner checkpoint', directory, save),
        start=int(self.train_step.numpy()), guard=self._save_guard)

  def _gathered(self, value):
    return tf.concat(self.strategy.experimental_local_results(value), axis=0)

  def _one_step(self, iterator):
    experience, sample_info = next(iterator)
    outputs = self.strategy.run(self._step_fn, args=(experience, sample_info))
    if not self._per_item:
      return outputs, None, None
    loss_info, keys, values = outputs
    return loss_info, self._gathered(keys), self._gathered(values)

  def _loop(self, iterations, iterator):
    """`iterations` train steps in one graph.

    Returns:
      (last step's LossInfo reduced over replicas, keys, values); keys and values are those
      of every step, concatenated ([0]-shaped without `item_step`).
    """
    keys_array = tf.TensorArray(tf.uint64, size=iterations, infer_shape=False)
    values_array = tf.TensorArray(tf.float64, size=iterations, infer_shape=False)
    loss_info, keys, values = self._one_step(iterator)
    if self._per_item:
      keys_array = keys_array.write(0, keys)
      values_array = values_array.write(0, values)
    for i in tf.range(1, iterations):
      loss_info, keys, values = self._one_step(iterator)
      if self._per_item:
        keys_array = keys_array.write(i, keys)
        values_array = values_array.write(i, values)
    reduced = tf.nest.map_structure(self._reduce, loss_info)
    if not self._per_item:
      return reduced, tf.zeros([0], tf.uint64), tf.zeros([0], tf.float64)
    return reduced, keys_array.concat(), values_array.concat()

  def _reduce(self, loss):
    rank = loss.values[0].shape.rank if isinstance(
        loss, tf.distribute.DistributedValues) else loss.shape.rank
    axis = tuple(range(rank)) if rank else None
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=axis)

  def run(self, iterations=1, iterator=None, parallel_iterations=10):
    """Runs `iterations` train steps, then the triggers; returns the reduced LossInfo."""
    if not self._own_loop:
      return super().run(iterations, iterator, parallel_iterations)
    with self.strategy.scope():
      loss_info, keys, values = self._compiled_loop(
          tf.constant(iterations), iterator or self._experience_iterator)
    if self._per_item and self._on_items is not None:
      self._on_items(keys.numpy(), values.numpy())
    step = int(self.train_step.numpy())
    if self._summary_every > 0 and (step // self._summary_every
                                    > self._last_summary_step // self._summary_every):
      self._write_loss_summaries(loss_info, step)
      self._last_summary_step = step
    for trigger in self.triggers:
      trigger(step)
    return loss_info

  def _write_loss_summaries(self, loss_info, step: int) -> None:
    with self.train_summary_writer.as_default():
      tf.summary.scalar('Losses/total_loss', loss_info.loss, step=step)
      extra = loss_info.extra
      fields = extra._asdict() if hasattr(extra, '_asdict') else {}
      for name, value in fields.items():
        if tf.is_tensor(value) and value.shape.rank == 0:
          tf.summary.scalar(f'Losses/{name}', value, step=step)
