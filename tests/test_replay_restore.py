"""A restarted replay server runs the config it is given, and falls back past an unreadable
checkpoint (real Reverb servers, real checkpoints)."""

import glob
import os

import numpy as np
import portpicker
import pytest
import reverb
import tensorflow as tf

from common import constants
from common.errors import UserError
from common.config import validated_configs
from replay_server import checkpoints as checkpoints_lib
from replay_server import server as server_lib
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import parse_gin

BINDINGS = list(FAST_BINDINGS) + ['ReplayConfig.max_size = 1000', 'ReplayConfig.min_size = 1',
                                  'ReplayConfig.samples_per_insert = None']


def _insert(port: int, count: int, start: int = 0) -> None:
  """`count` CartPole items whose first observation entry is start, start + 1, ..."""
  client = reverb.Client(f'localhost:{port}')
  flat = tf.nest.flatten(client.server_info()[constants.REPLAY_TABLE].signature)
  with client.trajectory_writer(num_keep_alive_refs=2) as writer:
    for i in range(count):
      for _ in range(2):
        writer.append([np.full(s.shape[1:], start + i, s.dtype.as_numpy_dtype) for s in flat])
      writer.create_item(constants.REPLAY_TABLE, 1.0, [c[-2:] for c in writer.history])
      writer.end_episode()
    writer.flush()


def _server(root: str, bindings=BINDINGS, keep: int = 2) -> server_lib.ReplayServer:
  parse_gin(CARTPOLE_GIN, bindings)
  return server_lib.ReplayServer(root, portpicker.pick_unused_port(), validated_configs(),
                                 keep_checkpoints=keep)


def _table(server):
  return server.info()[constants.REPLAY_TABLE]


def _first_values(server, count: int = 200):
  """The first observation entry of sampled items (which item they came from)."""
  client = reverb.Client(f'localhost:{server.port}')
  return {int(np.ravel(s[0].data[1])[0]) for s in client.sample(constants.REPLAY_TABLE, count)}


def _checkpointed(root: str, *counts: int):
  """Runs a server that inserts `counts[k]` more items, then checkpoints, for each k; returns
  the checkpoint paths."""
  server = _server(root)
  paths, start = [], 0
  try:
    for count in counts:
      _insert(server.port, count, start=start)
      start += count
      paths.append(server.checkpoint())
  finally:
    server.stop()
  return paths


def test_restart_with_other_table_settings_applies_them(tmp_path, caplog):
  root = str(tmp_path / 'run')
  _checkpointed(root, 50)

  smaller = BINDINGS + ['ReplayConfig.max_size = 20', 'ReplayConfig.samples_per_insert = 2.0',
                        'ReplayConfig.min_size = 10']
  with caplog.at_level('WARNING'):
    server = _server(root, smaller)
  try:
    table = _table(server)
    assert table.max_size == 20
    assert table.current_size == 20
    assert table.rate_limiter_info.samples_per_insert == 2.0
    assert table.rate_limiter_info.min_size_to_sample == 10
    # FIFO: the newest 20 of the 50 items stayed (the new ratio window allows 2 samples now).
    assert _first_values(server, count=2) <= set(range(30, 50))
    # Both sides can go on: the ratio starts inside its window.
    _insert(server.port, 1, start=50)
    assert len(list(reverb.Client(f'localhost:{server.port}').sample(constants.REPLAY_TABLE,
                                                                     1))) == 1
  finally:
    server.stop()
  lines = [r.getMessage() for r in caplog.records if 'applying the configuration' in r.getMessage()]
  assert len(lines) == 1, caplog.text
  assert 'max_size: 1000 -> 20' in lines[0]
  assert 'samples_per_insert=1 min_size=1' in lines[0]  # The old MinSize(1) limiter.
  assert 'samples_per_insert=2' in lines[0]


def test_restart_with_another_environment_is_refused_and_changes_nothing(tmp_path):
  root = str(tmp_path / 'run')
  _checkpointed(root, 5)
  before = sorted(glob.glob(os.path.join(root, '**'), recursive=True))
  with pytest.raises(UserError) as refused:
    _server(root, BINDINGS + ["make_environment.env_name = 'Acrobot-v1'"])
  message = str(refused.value)
  assert "holds table 'replay_table' of another environment or agent" in message
  assert 'float32[2, 4]' in message and 'float32[2, 6]' in message
  assert 'fresh --root_dir' in message
  assert sorted(glob.glob(os.path.join(root, '**'), recursive=True)) == before


@pytest.mark.parametrize('kept_fraction', [0.0, 0.5])
def test_truncated_newest_checkpoint_falls_back_to_the_previous(kept_fraction, tmp_path, caplog):
  """Cut at a record boundary (0), Reverb loads the chunk file without an error and drops the
  items it cannot find; cut inside a record (0.5, usually), it fails. Both fall back."""
  root = str(tmp_path / 'run')
  first, newest = _checkpointed(root, 10, 10)
  checkpoint_dir = os.path.dirname(newest)
  own = glob.glob(os.path.join(os.path.dirname(checkpoint_dir), checkpoints_lib.OWN_DIR, '*'))
  assert sorted(os.path.basename(p) for p in own) == [os.path.basename(first),
                                                      os.path.basename(newest)]
  chunks = os.path.join(newest, 'chunks.tfrecord')
  with open(chunks, 'r+b') as f:
    f.truncate(int(os.path.getsize(chunks) * kept_fraction))

  with caplog.at_level('WARNING'):
    server = _server(root)
  try:
    assert _table(server).current_size == 10  # The first checkpoint's items.
    assert _first_values(server) <= set(range(10))
  finally:
    server.stop()
  assert 'is unreadable' in caplog.text
  assert "falling back to this server's newest own checkpoint" in caplog.text
  corrupt = os.path.join(os.path.dirname(checkpoint_dir), checkpoints_lib.CORRUPT_DIR)
  assert os.listdir(corrupt) == [os.path.basename(newest)]  # Kept for a post-mortem.


def _attack(port: int) -> str:
  """What anyone who reaches the port can do: Reset the replay table, then Checkpoint (Reverb
  then deletes every other checkpoint in the directory). Returns the empty checkpoint."""
  client = reverb.Client(f'localhost:{port}')
  client.reset(constants.REPLAY_TABLE)
  return client.checkpoint()


def test_a_reset_and_checkpoint_from_elsewhere_is_not_restored(tmp_path, caplog):
  root = str(tmp_path / 'run')
  server = _server(root)
  try:
    _insert(server.port, 30)
    own = server.checkpoint()
    foreign = _attack(server.port)
    checkpoint_dir = os.path.dirname(own)
    assert checkpoints_lib.complete_checkpoints(checkpoint_dir) == [foreign]  # Ours is gone.
  finally:
    server.stop()  # As kill -9 would: no checkpoint of its own on the way out.
  with caplog.at_level('WARNING'):
    server = _server(root)
  try:
    assert _table(server).current_size == 30
    assert _first_values(server) <= set(range(30))
  finally:
    server.stop()
  assert f'checkpoint {foreign} was not written by this server' in caplog.text
  foreign_dir = os.path.join(os.path.dirname(checkpoint_dir), checkpoints_lib.FOREIGN_DIR)
  assert os.listdir(foreign_dir) == [os.path.basename(foreign)]


def test_a_reset_from_elsewhere_is_undone_from_the_last_checkpoint(tmp_path, caplog):
  # After a Reset, the server's own next checkpoints would hold the emptied table and prune the
  # last full one; the server restarts from that one instead, on the same port.
  root = str(tmp_path / 'run')
  server = _server(root, keep=1)
  try:
    _insert(server.port, 40)
    full = server.checkpoint()
    _attack(server.port)
    _insert(server.port, 3, start=100)
    with caplog.at_level('WARNING'):
      assert server.checkpoint() == full
    assert _table(server).current_size == 40
    assert _first_values(server) <= set(range(40))  # None of the 3 inserted after the Reset.
    _insert(server.port, 5, start=200)  # Clients write to it again.
    newer = server.checkpoint()
    assert newer > full and _table(server).current_size == 45
  finally:
    server.stop()
  assert (f'the replay table shrank from 40 to 3 items since its last checkpoint '
          f'{os.path.join(os.path.dirname(os.path.dirname(full)), checkpoints_lib.OWN_DIR)}'
          in caplog.text)


def test_a_checkpoint_of_the_variable_table_before_its_signature_column_restores(tmp_path,
                                                                                  caplog):
  # An earlier version's variable table had no signature column: its one item (the learner
  # pushes again) is dropped, and the replay restores.
  from common import builders  # pylint: disable=g-import-not-at-top
  from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
  from common.config import ReplayConfig  # pylint: disable=g-import-not-at-top
  from replay_server import tables as tables_lib  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / 'run')
  parse_gin(CARTPOLE_GIN, BINDINGS)
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  unsigned = {k: v for k, v in specs.variables_signature.items()
              if k != constants.SIGNATURE_KEY}
  tables = tables_lib.make_tables(specs, ReplayConfig(), LearnerConfig())
  tables[1] = tables_lib.make_variable_table(unsigned)
  port = portpicker.pick_unused_port()
  checkpoint_dir = os.path.join(root, constants.REPLAY_CHECKPOINT_DIR)
  old = reverb.Server(tables, port=port, checkpointer=reverb.checkpointers.DefaultCheckpointer(
      path=checkpoint_dir))
  try:
    _insert(port, 12)
    client = reverb.Client(f'localhost:{port}')
    client.insert([np.zeros(s.shape, s.dtype.as_numpy_dtype) for s in tf.nest.flatten(unsigned)],
                  {constants.VARIABLE_TABLE: 1.0})
    assert client.server_info()[constants.VARIABLE_TABLE].current_size == 1
    client.checkpoint()
  finally:
    old.stop()
  with caplog.at_level('WARNING'):
    server = _server(root)
  try:
    assert _table(server).current_size == 12
    assert server.info()[constants.VARIABLE_TABLE].current_size == 0
  finally:
    server.stop()
  assert 'variables.signature' in caplog.text and 'the learner pushes again' in caplog.text


def test_a_checkpoint_over_half_the_stop_grace_is_warned_about(tmp_path, caplog):
  assert server_lib.grace_warning(29.0, 60.0, 10) is None
  assert server_lib.grace_warning(31.0, 0.0, 10) is None  # Grace unknown: no check.
  parse_gin(CARTPOLE_GIN, BINDINGS)
  server = server_lib.ReplayServer(str(tmp_path / 'run'), portpicker.pick_unused_port(),
                                   validated_configs(), stop_grace_s=1e-6)
  try:
    _insert(server.port, 20)
    with caplog.at_level('WARNING'):
      server.checkpoint()
  finally:
    server.stop()
  warnings = [r.getMessage() for r in caplog.records if 'stop grace' in r.getMessage()]
  assert len(warnings) == 1, caplog.text
  assert 'replay checkpoint of 20 items took' in warnings[0]
  assert 'smaller ReplayConfig.max_size' in warnings[0]


def test_a_checkpoint_of_the_former_table_name_restores_under_the_current_one(
    tmp_path, monkeypatch, caplog):
  """Runs checkpointed before the replay table was renamed hold `uniform_table`: the server
  restores their items, the rate limiter's counts and the priorities under `replay_table`."""
  (old_name, new_name), = constants.FORMER_TABLE_NAMES.items()
  root = str(tmp_path / 'run')
  with monkeypatch.context() as patch:
    patch.setattr(constants, 'REPLAY_TABLE', old_name)
    [path] = _checkpointed(root, 30)
  assert set(checkpoints_lib.read_tables(path)) >= {old_name}

  with caplog.at_level('WARNING'):
    server = _server(root)
  try:
    info = server.info()
    assert old_name not in info
    assert info[new_name].current_size == 30
    assert info[new_name].rate_limiter_info.insert_stats.completed == 30
    assert _first_values(server, 1000) == set(range(30))  # Each item drawn: P(miss) < 1e-13.
  finally:
    server.stop()
  assert f'{new_name}.name: {old_name} -> {new_name}' in caplog.text
  assert os.path.isdir(path)  # The old checkpoint stays as the fallback.
