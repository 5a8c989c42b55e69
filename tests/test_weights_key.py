"""The run's weights key: the file's rules, the environment's, and what a signature covers."""

import os
import stat
import threading

import numpy as np
import pytest

from common import weights_key
from common.errors import UserError


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch):
  monkeypatch.delenv(weights_key.ENV_VAR, raising=False)


def _values():
  rng = np.random.RandomState(0)
  return [rng.normal(size=(4, 3)).astype(np.float32), np.array(1234, np.int64),
          rng.normal(size=(3,)).astype(np.float32)]


def test_a_signature_covers_every_value_its_dtype_and_its_shape():
  signer = weights_key.Signer(weights_key.new_key())
  values = _values()
  signature = signer.digest(values)
  assert signature.dtype == np.int64 and signature.shape == (weights_key.SIGNATURE_WORDS,)
  assert signer.verify(values, signature)
  altered = [
      [values[0], np.array(1235, np.int64), values[2]],  # Another train step.
      [values[0] + np.float32(1e-6), values[1], values[2]],  # One weight nudged.
      [values[0].reshape(3, 4), values[1], values[2]],  # Same bytes, another shape.
      [values[0].astype(np.float64), values[1], values[2]],  # Same numbers, another dtype.
      values[:2],  # A value left out.
      [values[2], values[1], values[0]],  # Reordered.
  ]
  for other in altered:
    assert not signer.verify(other, signature)
  assert not weights_key.Signer(weights_key.new_key()).verify(values, signature)
  assert not signer.verify(values, np.zeros(weights_key.SIGNATURE_WORDS, np.int64))
  assert not signer.verify(values, signature.astype(np.int32))  # Not a signature column.


def test_ensure_makes_an_owner_only_key_once_and_keeps_it(tmp_path):
  path = str(tmp_path / 'run' / weights_key.FILE_NAME)
  key = weights_key.ensure(path)
  assert len(key) == 32
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  assert weights_key.ensure(path) == key == weights_key.read(path)
  assert os.listdir(tmp_path / 'run') == [weights_key.FILE_NAME]  # No temporary left.


def test_processes_that_make_the_key_at_once_agree_on_it(tmp_path):
  path = str(tmp_path / weights_key.FILE_NAME)
  keys, barrier = [], threading.Barrier(8)

  def make():
    barrier.wait()
    keys.append(weights_key.ensure(path))

  threads = [threading.Thread(target=make) for _ in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(30)
  assert len(keys) == 8 and len(set(keys)) == 1
  assert os.listdir(tmp_path) == [weights_key.FILE_NAME]


def test_a_key_others_can_read_is_refused_with_the_fix(tmp_path):
  path = str(tmp_path / weights_key.FILE_NAME)
  weights_key.ensure(path)
  os.chmod(path, 0o644)
  with pytest.raises(UserError, match=r'is open to others \(mode 644\): run `chmod 600 '):
    weights_key.check(path)
  with pytest.raises(UserError, match='chmod 600'):
    weights_key.KeySource(path, 'actor 0')


def test_a_file_that_holds_no_key_is_refused(tmp_path):
  path = tmp_path / weights_key.FILE_NAME
  path.write_text('not a key\n')
  os.chmod(path, 0o600)
  with pytest.raises(UserError, match='is not 32 to 64 hex digits'):
    weights_key.check(str(path))


def test_the_environment_key_comes_first_and_is_checked(tmp_path, monkeypatch):
  path = str(tmp_path / weights_key.FILE_NAME)
  key = weights_key.new_key()
  monkeypatch.setenv(weights_key.ENV_VAR, key.hex())
  assert weights_key.KeySource(path, 'eval').signer() is not None
  values = _values()
  assert weights_key.learner_signer(path).digest(values).tolist() == (
      weights_key.Signer(key).digest(values).tolist())
  assert not os.path.exists(path)  # The learner made no file: the environment holds the key.
  monkeypatch.setenv(weights_key.ENV_VAR, 'xyz')
  with pytest.raises(UserError, match=r'REVERB_FLEET_WEIGHTS_KEY is not 32 to 64 hex digits'):
    weights_key.check(path)


def test_a_verifying_role_waits_for_the_file_and_says_so_once(tmp_path, caplog):
  path = str(tmp_path / weights_key.FILE_NAME)
  source = weights_key.KeySource(path, 'actor 3')
  with caplog.at_level('WARNING'):
    assert source.signer() is None and source.signer() is None
  lines = [r.getMessage() for r in caplog.records if 'no weights key yet' in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith('actor 3: no weights key yet')
  key = weights_key.ensure(path)
  values = _values()
  assert source.signer().verify(values, weights_key.Signer(key).digest(values))
