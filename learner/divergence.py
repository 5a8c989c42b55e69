"""Stops a diverged learner before it saves, exports or pushes non-finite values.

A learning rate too high or an exploding loss turns the weights into inf or NaN within a few
train steps. Checkpointed, such weights would replace the last good checkpoint; pushed, every
actor would act on them; exported, the SavedModel would be broken. `FiniteCheck` runs before
each of those (a `storage.IntervalSave` guard, and the weight push) and after each train call
(on the loss), and raises `DivergedError`, which names the step, the first non-finite variable
and the newest checkpoint, still the last good one. Some TF-Agents agents (DQN, TD3, PPO)
check their loss inside the train step, with `tf.debugging.check_numerics`, before they apply
its gradients; `raise_if_numerics_error` turns that InvalidArgumentError into the same error.
"""

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from common import errors


class DivergedError(errors.DivergedError):
  """The loss or a weight is not finite; nothing non-finite was saved, exported or pushed."""


class FiniteCheck:
  """Checks that the loss and every floating-point variable of the agent are finite."""

  def __init__(self, variables: Sequence[tf.Variable], checkpoint_dir: str):
    """
    Args:
      variables: The agent's variables (all of them: networks, target networks, optimizer
        slots); those of integer dtype are skipped.
      checkpoint_dir: Where the learner's checkpoints are, for the error.
    """
    self._variables = [v for v in variables if v.dtype.is_floating]
    self._checkpoint_dir = checkpoint_dir
    self._all_finite = tf.function(
        lambda: tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in self._variables]))

  def __call__(self, step: int, loss: Optional[float] = None) -> None:
    """Raises DivergedError if `loss` (when given) or a variable is inf or NaN."""
    if loss is not None and not np.isfinite(loss):
      self._raise(step, f'the loss is {loss}')
    if not self._variables:
      return
    finite = self._all_finite().numpy()
    if not finite.all():
      bad = [v.name for v, ok in zip(self._variables, finite) if not ok]
      more = f' and {len(bad) - 1} more' if len(bad) > 1 else ''
      self._raise(step, f'variable {bad[0]}{more} holds inf or NaN')

  def raise_if_numerics_error(self, step: int, error: Exception) -> None:
    """Raises DivergedError if `error` is a failed `tf.debugging.check_numerics`."""
    text = str(getattr(error, 'message', error))
    if isinstance(error, tf.errors.InvalidArgumentError) and (
        'Tensor had NaN values' in text or 'Tensor had Inf values' in text):
      check = next((line.split(' : Tensor had')[0].strip() for line in text.splitlines()
                    if 'Tensor had' in line), 'a tensor is inf or nan')
      self._raise(step, f'the agent\'s own check failed ({check})')

  def _raise(self, step: int, what: str) -> None:
    latest = tf.train.latest_checkpoint(self._checkpoint_dir)
    kept = (f'the newest checkpoint, {os.path.basename(latest)} in {self._checkpoint_dir}, is '
            'the last good one' if latest else 'no checkpoint was written')
    raise DivergedError(
        f'learner diverged at train step {step}: {what}; nothing non-finite was saved, '
        f'exported or pushed, and {kept}: lower the learning rate or clip the gradients in '
        'the gin file, then restart')
