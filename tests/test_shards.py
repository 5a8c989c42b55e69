"""learner/shards.py: two real Reverb servers sampled as one table.

Each shard holds items whose only column is the item's id; the learner's sharded dataset
samples them, and the tests compare what came out with what one table of all the items would
give: uniform frequencies over two shards of unequal size, prioritized frequencies and
probabilities against the written priorities, and priority updates that reach the shard that
holds the item.
"""

import numpy as np
import pytest
import reverb
import tensorflow as tf

from common import connection
from learner import shards as shards_lib

TABLE = 'replay'
SIGNATURE = {'id': tf.TensorSpec([1], tf.int64)}


class _Session:
  """What `PriorityWriter` needs of a session: a client."""

  def __init__(self, address):
    self.client = reverb.Client(address)


def _server(prioritized: bool, alpha: float = 1.0) -> reverb.Server:
  sampler = (reverb.selectors.Prioritized(alpha) if prioritized
             else reverb.selectors.Uniform())
  return reverb.Server([reverb.Table(TABLE, sampler, reverb.selectors.Fifo(), 10_000,
                                     reverb.rate_limiters.MinSize(1))])


def _write(address: str, ids, priorities) -> None:
  client = reverb.Client(address)
  with client.trajectory_writer(num_keep_alive_refs=1) as writer:
    for item_id, priority in zip(ids, priorities):
      writer.append({'id': np.int64(item_id)})
      writer.create_item(TABLE, float(priority), {'id': writer.history['id'][-1:]})
    writer.flush()


def _sample(addresses, mix, batches: int, batch_size: int = 128):
  dataset = shards_lib.make_sharded_dataset(addresses, TABLE, SIGNATURE, batch_size, 10_000,
                                            mix)
  ids, shards, probabilities, sizes, keys = [], [], [], [], []
  for data, info, shard in dataset.take(batches):
    ids.append(data['id'].numpy()[:, 0])
    shards.append(shard.numpy())
    probabilities.append(info.probability.numpy())
    sizes.append(info.table_size.numpy())
    keys.append(info.key.numpy())
  return tuple(np.concatenate(x) for x in (ids, shards, probabilities, sizes, keys))


@pytest.fixture
def two_servers(request):
  servers = [_server(request.param), _server(request.param)]
  yield [f'localhost:{s.port}' for s in servers]
  for s in servers:
    s.stop()


@pytest.mark.parametrize('two_servers', [False], indirect=True)
def test_uniform_sampling_over_shards_of_unequal_size_is_uniform_over_all_items(two_servers):
  a, b = two_servers
  _write(a, range(0, 300), [1.0] * 300)       # 300 items: shard 0
  _write(b, range(300, 400), [1.0] * 100)     # 100 items: shard 1
  mix = shards_lib.ShardMix(two_servers, TABLE, prioritized=False, seed=1)
  try:
    ids, shards, probabilities, sizes, _ = _sample(two_servers, mix, batches=100)
  finally:
    mix.close()
  n = ids.size
  # Each shard's share is its share of the items, within 4 binomial standard deviations.
  share = np.mean(shards == 1)
  assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n), share
  assert np.array_equal(ids >= 300, shards == 1)  # Items come from the shard that holds them.
  # Every item equally likely: a chi-square test over the 400 items.
  counts = np.bincount(ids, minlength=400)
  expected = n / 400
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 399 + 5 * np.sqrt(2 * 399), chi2  # mean 399, sd sqrt(2 * 399)
  # The sample says what one table of 400 items would: P = 1/400, N = 400.
  np.testing.assert_allclose(probabilities, 1 / 400, rtol=1e-9)
  assert (sizes == 400).all()


@pytest.mark.parametrize('two_servers', [True], indirect=True)
def test_prioritized_sampling_over_shards_follows_the_written_priorities(two_servers):
  a, b = two_servers
  priorities = {i: 1.0 + (i % 10) for i in range(100)}   # shard 0: mass 550
  priorities.update({i: 3.0 * (1.0 + (i % 10)) for i in range(100, 200)})  # shard 1: 1650
  _write(a, range(0, 100), [priorities[i] for i in range(0, 100)])
  _write(b, range(100, 200), [priorities[i] for i in range(100, 200)])
  mass = sum(priorities.values())
  mix = shards_lib.ShardMix(two_servers, TABLE, prioritized=True, priority_exponent=1.0,
                            seed=2)
  try:
    ids, shards, probabilities, sizes, _ = _sample(two_servers, mix, batches=120)
  finally:
    mix.close()
  # After the first blocks (drawn before each shard's mass was known), shard 1 holds 3/4 of
  # the priority mass and gets 3/4 of the samples.
  ids, shards, probabilities, sizes = (x[4096:] for x in (ids, shards, probabilities, sizes))
  n = ids.size
  share = np.mean(shards == 1)
  assert abs(share - 0.75) < 4 * np.sqrt(0.25 * 0.75 / n), share
  # Each item's frequency follows p_i / sum p over both shards (chi-square over 200 items).
  expected = n * np.array([priorities[i] for i in range(200)]) / mass
  counts = np.bincount(ids, minlength=200)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 199 + 5 * np.sqrt(2 * 199), chi2
  # And each sample's probability is p_i / sum p, N the union's size.
  np.testing.assert_allclose(probabilities, [priorities[i] / mass for i in ids], rtol=1e-6)
  assert (sizes == 200).all()


@pytest.mark.parametrize('two_servers', [True], indirect=True)
def test_priority_updates_reach_the_shard_that_holds_the_item(two_servers):
  a, b = two_servers
  _write(a, range(0, 20), [1.0] * 20)
  _write(b, range(20, 40), [1.0] * 20)
  mix = shards_lib.ShardMix(two_servers, TABLE, prioritized=True, seed=3)
  try:
    ids, shards, _, _, keys = _sample(two_servers, mix, batches=4, batch_size=32)
  finally:
    mix.close()
  writer = shards_lib.ShardedPriorityWriter([_Session(a), _Session(b)], TABLE)
  updates = {int(k): (10.0 + float(i), int(s)) for k, i, s in zip(keys, ids, shards)}
  new = {k: p for k, (p, _) in updates.items()}
  writer.submit(np.array(list(updates), np.uint64), np.array(list(new.values())),
                np.array([s for _, s in updates.values()]))
  writer.close()
  assert {int(s) for _, s in updates.values()} == {0, 1}  # Both shards had items updated.
  # Read every item of each shard back: the updated keys carry their new priorities there.
  for k, address in enumerate(two_servers):
    seen = {}
    for steps in reverb.Client(address).sample(TABLE, num_samples=400):
      info = steps[0].info
      seen[int(info.key)] = (float(info.priority), int(steps[0].data[0]))
    for key, (priority, item_id) in seen.items():
      if key in new:
        assert priority == new[key] and (item_id >= 20) == (k == 1)
      else:
        assert priority == 1.0
    assert connection.probe(address)[TABLE].current_size == 20
