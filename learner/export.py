"""SavedModel export of the greedy and collect policies, with the current weights.

TF-Agents' PolicySavedModelTrigger writes each SavedModel once, with the weights of step 0, and
afterwards only variable checkpoints beside it; `tf.saved_model.load` of its greedy_policy
gives an untrained policy. This trigger rewrites complete SavedModels, so the directory always
loads as the newest policy in a plain TensorFlow process, and swaps each one in by renames so
that a reader never sees a half-written model.
"""

import os
import shutil
from typing import Callable, Optional

from absl import logging
import tensorflow as tf
from tf_agents.policies import policy_saver

from common import agents
from common import storage

GREEDY_POLICY = 'greedy_policy'
COLLECT_POLICY = 'collect_policy'


def _swap_in(tmp_dir: str, final_dir: str) -> None:
  old_dir = final_dir + '.old'
  shutil.rmtree(old_dir, ignore_errors=True)
  if os.path.exists(final_dir):
    os.rename(final_dir, old_dir)
  os.rename(tmp_dir, final_dir)
  shutil.rmtree(old_dir, ignore_errors=True)


class PolicyExportTrigger(storage.IntervalSave):
  """Every `interval` train steps, writes greedy_policy/ and collect_policy/ SavedModels.

  An export that fails on a storage fault leaves the previous SavedModels in place, removes
  what it wrote, and is retried with backoff (`storage.IntervalSave`).
  """

  def __init__(self, policy_dir: str, agent, train_step: tf.Variable, interval: int,
               guard: Optional[Callable[[int], None]] = None):
    self._policy_dir = policy_dir
    self._train_step = train_step
    self._savers = {
        GREEDY_POLICY: policy_saver.PolicySaver(agents.greedy_policy(agent), batch_size=None,
                                                train_step=train_step),
        COLLECT_POLICY: policy_saver.PolicySaver(agent.collect_policy, batch_size=None,
                                                 train_step=train_step),
    }
    super().__init__(interval, storage.RetryingSave('policy export', policy_dir, self._export),
                     start=int(train_step.numpy()), guard=guard)

  def _export(self) -> None:
    os.makedirs(self._policy_dir, exist_ok=True)
    for name, saver in self._savers.items():
      final_dir = os.path.join(self._policy_dir, name)
      tmp_dir = final_dir + '.tmp'
      shutil.rmtree(tmp_dir, ignore_errors=True)
      try:
        saver.save(tmp_dir)
      except Exception:
        storage.remove(tmp_dir)
        raise
      _swap_in(tmp_dir, final_dir)
    logging.info('Exported %s at train step %d to %s', ', '.join(self._savers),
                 int(self._train_step.numpy()), self._policy_dir)
