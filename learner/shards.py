"""Sampling K replay shards as if they were one table.

With K replay servers (shards), each actor writes to one of them, and the learner samples all
of them. Which shard each sampled item comes from is drawn ahead, in blocks, with shard k's
probability w_k (`ShardMix`). w_k is chosen so that every item is drawn with the probability
that one table holding all the items would give it:
- **Uniform tables**: w_k = N_k / N, where N_k is shard k's size at its last probe and N is
  the sum of the sizes. An item of shard k is then drawn with probability
  (N_k / N) * (1 / N_k) = 1 / N.
- **Prioritized tables**: w_k = M_k / M, where M_k is the sum of p_i^alpha over shard k (its
  priority mass) and M is the sum of the M_k. Reverb reports each sample's priority p_i and
  its probability within its shard, p_i^alpha / M_k, so every sample gives M_k exactly, as
  of the moment it was drawn. An item is then drawn with probability
  (M_k / M) * (p_i^alpha / M_k) = p_i^alpha / M, which is Reverb's own rule over the union.
  Until a shard has been sampled once, its mass is taken to be its size times the mean
  p^alpha of the shards already seen, or its size where none has been.

The sample's `probability` and `table_size` are rewritten to those of the union, 1 / N or
p_i^alpha / M, and N. So the importance weights (N * P(i))^-beta of `learner.priorities` are
the ones a single table would give. Each sample also carries its shard's index, so that its
new priority goes back to the server that holds the item (`ShardedPriorityWriter`).

Sizes are probed on a thread of their own (`server_info`, with a deadline). A shard that does
not answer keeps its last size. A shard with no items gets weight 0 until one arrives. While
no shard has any item, the weights are equal, and the rate limiters hold the samples.
"""

import threading
import time
from typing import List, Optional, Sequence

from absl import logging
import numpy as np
import reverb
import tensorflow as tf

from common import connection
from learner import dataset as dataset_lib
from learner import priorities as priorities_lib

# Shard choices drawn per call into Python; their weights are at most this many items old.
_BLOCK = 1024


class ShardMix:
  """The shards' sampling weights, and the rewrite of each sample to the union's terms."""

  def __init__(self, addresses: Sequence[str], table: str, prioritized: bool,
               priority_exponent: float = 1.0, probe_every_s: float = 1.0,
               seed: Optional[int] = None):
    """
    Args:
      addresses: host:port of each shard, in shard order.
      table: The replay table every shard holds.
      prioritized: Weigh shards by priority mass instead of size.
      priority_exponent: alpha of the prioritized selector.
      probe_every_s: How often each shard's size is read.
      seed: Of the shard choices.
    """
    self._addresses = list(addresses)
    self._table = table
    self._prioritized = prioritized
    self._alpha = priority_exponent
    self._probe_every_s = probe_every_s
    self._lock = threading.Lock()
    self._sizes = np.zeros(len(self._addresses), np.float64)
    self._masses = np.full(len(self._addresses), np.nan)  # Unknown until sampled.
    self._rng = np.random.default_rng(seed)
    self._stop = threading.Event()
    self.probe_once()
    threading.Thread(target=self._run, name='shard sizes', daemon=True).start()

  @property
  def num_shards(self) -> int:
    return len(self._addresses)

  def probe_once(self) -> None:
    """Reads every shard's size; a shard that does not answer keeps its last one."""
    sizes = self._sizes.copy()
    for k, address in enumerate(self._addresses):
      info = connection.probe(address)
      if info is not None and self._table in info:
        sizes[k] = float(info[self._table].current_size)
    with self._lock:
      self._sizes = sizes

  def _run(self) -> None:
    while not self._stop.wait(self._probe_every_s):
      try:
        self.probe_once()
      except Exception as e:  # pylint: disable=broad-except  (a probe must not end sampling)
        logging.warning('learner: reading the replay shards\' sizes failed (%s); keeping the '
                        'last ones', connection.first_line(e))

  def close(self) -> None:
    self._stop.set()

  def weights(self) -> np.ndarray:
    """w_k, summing to 1 (see the module docstring)."""
    with self._lock:
      sizes, masses = self._sizes.copy(), self._masses.copy()
    if self._prioritized:
      known = ~np.isnan(masses) & (sizes > 0)
      if known.any():
        per_item = masses[known].sum() / sizes[known].sum()
        masses = np.where(np.isnan(masses), sizes * per_item, masses)
      else:
        masses = sizes
      raw = np.where(sizes > 0, masses, 0.0)
    else:
      raw = sizes
    if raw.sum() <= 0:
      return np.full(self.num_shards, 1.0 / self.num_shards)
    return raw / raw.sum()

  def choices(self, count: int) -> np.ndarray:
    """`count` shard indices drawn with the current weights (int64)."""
    weights = self.weights()
    with self._lock:
      return self._rng.choice(self.num_shards, size=int(count), p=weights).astype(np.int64)

  def rewrite(self, shards: np.ndarray, priorities: np.ndarray,
              probabilities: np.ndarray):
    """(probability, table_size) of each sample in the union's terms; learns the masses.

    Args:
      shards: Each sample's shard index.
      priorities: Each sample's priority p_i (Reverb's SampleInfo.priority).
      probabilities: Each sample's probability within its shard.
    """
    shards = np.asarray(shards, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    if self._prioritized:
      scaled = np.power(np.asarray(priorities, np.float64), self._alpha)
      with self._lock:
        for k, mass in zip(shards, scaled / np.maximum(probabilities, 1e-300)):
          self._masses[k] = mass  # The newest sample of each shard gives its mass.
    weights = self.weights()
    with self._lock:
      total = self._sizes.sum()
    union = probabilities * weights[shards]
    return union.astype(np.float64), np.full(shards.shape, max(total, 1.0), np.int64)


def make_sharded_dataset(addresses: Sequence[str], table: str, signature, batch_size: int,
                         rate_limiter_timeout_ms: int, mix: ShardMix) -> tf.data.Dataset:
  """Batches of (data, info, shard) sampled from every shard with `mix`'s weights.

  `info.probability` and `info.table_size` are the union's (module docstring); `shard` is
  each item's shard index (int64 [B]). A sample held by a shard's rate limiter past the
  timeout ends the dataset, as `dataset.make_dataset` does.
  """
  per_shard = []
  for k, address in enumerate(addresses):
    shard = reverb.TrajectoryDataset(
        server_address=address, table=table,
        dtypes=tf.nest.map_structure(lambda s: s.dtype, signature),
        shapes=tf.nest.map_structure(lambda s: s.shape, signature),
        max_in_flight_samples_per_worker=2 * batch_size,
        rate_limiter_timeout_ms=rate_limiter_timeout_ms).filter(
            dataset_lib.skip_non_finite(table))
    per_shard.append(shard.map(
        lambda sample, k=k: (sample.data, sample.info, tf.constant(k, tf.int64))))
  choice = tf.data.Dataset.from_tensors(np.int64(_BLOCK)).repeat().map(
      lambda n: tf.reshape(tf.numpy_function(mix.choices, [n], tf.int64), [_BLOCK])).unbatch()
  mixed = tf.data.Dataset.choose_from_datasets(per_shard, choice).batch(
      batch_size, drop_remainder=True)

  def to_union(data, info, shard):
    probability, size = tf.numpy_function(
        mix.rewrite, [shard, info.priority, info.probability], [tf.float64, tf.int64])
    probability = tf.reshape(probability, [batch_size])
    size = tf.reshape(size, [batch_size])
    return data, info._replace(probability=probability, table_size=size), shard

  return mixed.map(to_union).prefetch(tf.data.AUTOTUNE)


class ShardedPriorityWriter:
  """A `priorities.PriorityWriter` per shard; each new priority goes to its item's shard."""

  def __init__(self, sessions: Sequence[object], table: str):
    self._writers: List[priorities_lib.PriorityWriter] = [
        priorities_lib.PriorityWriter(session, table) for session in sessions]

  def submit(self, keys: np.ndarray, priorities: np.ndarray, shards: np.ndarray) -> None:
    keys = np.asarray(keys).reshape(-1)
    priorities = np.asarray(priorities).reshape(-1)
    shards = np.asarray(shards).reshape(-1)
    for k, writer in enumerate(self._writers):
      mine = shards == k
      if mine.any():
        writer.submit(keys[mine], priorities[mine])

  def take_max(self) -> Optional[float]:
    values = [v for v in (w.take_max() for w in self._writers) if v is not None]
    return max(values) if values else None

  def close(self, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    for writer in self._writers:
      writer.close(max(0.0, deadline - time.monotonic()))
