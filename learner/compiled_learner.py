"""A TF-Agents Learner whose train steps can be XLA-compiled.

TF-Agents' `Learner.run(iterations=n)` already runs n train steps inside one `tf.function`
(a `tf.while_loop`), which the learner uses through `LearnerConfig.iterations_per_call`. What it
cannot do is compile the agent's train step with XLA: the step writes TensorBoard summaries
from inside the graph, and summary ops do not compile. `CompiledLearner` keeps everything else
of the stock Learner (checkpoints, restore, triggers, the summary writer) and, when `use_xla`
is set, runs the loop over an XLA-compiled `agent.train` traced without a summary writer; the
loss and its scalar parts are written to TensorBoard from Python every `summary_interval` train
steps instead. bench/learner_bench.py measures it against the stock `Learner.run(iterations=1)`
loop.
"""

from absl import logging
import tensorflow as tf
from tf_agents.train import learner as tfa_learner


class CompiledLearner(tfa_learner.Learner):
  """`tf_agents.train.learner.Learner` with an optional XLA-compiled train step.

  Takes the stock Learner's arguments plus `use_xla`. Without it, `run` is the stock one.
  """

  def __init__(self, *args, use_xla: bool = False, **kwargs):
    super().__init__(*args, **kwargs)
    self._use_xla = use_xla
    self._summary_every = int(self.summary_interval.numpy())
    self._last_summary_step = int(self.train_step.numpy())
    if use_xla:
      self._compiled_train = tf.function(self._agent.train, jit_compile=True)
      self._compiled_loop = tf.function(self._loop)
      logging.info('learner: train step compiled with XLA')

  def _loop(self, iterations, iterator):
    """`iterations` train steps in one graph; returns the last step's loss, reduced."""
    experience, _ = next(iterator)
    loss_info = self.strategy.run(self._compiled_train, args=(experience,))
    for _ in tf.range(iterations - 1):
      experience, _ = next(iterator)
      loss_info = self.strategy.run(self._compiled_train, args=(experience,))
    return tf.nest.map_structure(self._reduce, loss_info)

  def _reduce(self, loss):
    rank = loss.values[0].shape.rank if isinstance(
        loss, tf.distribute.DistributedValues) else loss.shape.rank
    axis = tuple(range(rank)) if rank else None
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=axis)

  def run(self, iterations=1, iterator=None, parallel_iterations=10):
    """Runs `iterations` train steps, then the triggers; returns the reduced LossInfo."""
    if not self._use_xla:
      return super().run(iterations, iterator, parallel_iterations)
    with self.strategy.scope():
      loss_info = self._compiled_loop(tf.constant(iterations),
                                      iterator or self._experience_iterator)
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
