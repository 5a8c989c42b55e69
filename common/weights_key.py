"""The run's weights key: only a holder of it can make weights that actors and eval load.

Reverb serves every RPC to whoever reaches its port, so anyone there can insert an item into
the variable table. The learner signs each push with an HMAC-SHA256 over every value of the
item (the policy weights, the train step and, with prioritized replay, the max priority) under
a key of the run; actors and eval verify it before they load anything (`variables`). A forged,
unsigned or altered item is refused, so a peer can neither hand the actors its own policy nor
push a huge train step that would make them refuse the learner's weights from then on.

Where the key comes from (`source`), in this order:
- `REVERB_FLEET_WEIGHTS_KEY` in the environment (64 hex digits): how the Ray launcher hands it
  to roles on other nodes, and how a Kubernetes Secret reaches the pods;
- the file `--weights_key_file` (default `<root_dir>/weights.key`): 64 hex digits, readable by
  its owner only. The learner, and the local launcher before its children, make it when it is
  missing (`ensure`); actors and eval on another disk get a copy of it.
"""

import binascii
import hashlib
import hmac
import os
import secrets
import stat
from typing import Optional, Sequence

from absl import logging
import numpy as np

from common.errors import UserError

ENV_VAR = 'REVERB_FLEET_WEIGHTS_KEY'
FILE_NAME = 'weights.key'
# HMAC-SHA256, 32 bytes, carried as int64[4] (the dtype of the train step: a mirrored variable of
# it lives on any device).
SIGNATURE_WORDS = 4
_KEY_BYTES = 32
_DOMAIN = b'reverb-fleet weights v1\0'


class Signer:
  """Signs and verifies the flat values of one variable-table item."""

  def __init__(self, key: bytes):
    if len(key) < 16:
      raise ValueError('a weights key has at least 16 bytes')
    self._key = key

  def digest(self, values: Sequence[np.ndarray]) -> np.ndarray:
    """HMAC-SHA256 over the values in order, each with its dtype and shape, as int64[4]."""
    mac = hmac.new(self._key, _DOMAIN, hashlib.sha256)
    for value in values:
      value = np.ascontiguousarray(value)
      mac.update(f'{value.dtype.str}{value.shape};'.encode())
      mac.update(memoryview(value).cast('B'))
    return np.frombuffer(mac.digest(), dtype='<i8').astype(np.int64)

  def verify(self, values: Sequence[np.ndarray], signature: np.ndarray) -> bool:
    signature = np.asarray(signature)
    if signature.dtype != np.int64 or signature.shape != (SIGNATURE_WORDS,):
      return False
    return hmac.compare_digest(self.digest(values).tobytes(), signature.tobytes())


def new_key() -> bytes:
  return secrets.token_bytes(_KEY_BYTES)


def default_path(root_dir: str) -> str:
  return os.path.join(root_dir, FILE_NAME)


def _parse(text: str, where: str, fix: str) -> bytes:
  text = text.strip()
  try:
    key = binascii.unhexlify(text)
  except (binascii.Error, ValueError):
    key = b''
  if len(key) < 16:
    raise UserError(f'the weights key in {where} is not 32 to 64 hex digits: {fix}')
  return key


def read(path: str) -> bytes:
  """The key in the file at `path`.

  Raises:
    UserError: others than its owner may read or write the file, or it holds no key.
  """
  mode = os.stat(path).st_mode
  if mode & (stat.S_IRWXG | stat.S_IRWXO):
    raise UserError(f'the weights key {path} is open to others (mode {mode & 0o777:o}): '
                    f'run `chmod 600 {path}`')
  with open(path) as f:
    return _parse(f.read(), path, 'remove it (the learner makes a new one) or copy the '
                  'learner\'s')


def from_environment() -> Optional[bytes]:
  text = os.environ.get(ENV_VAR)
  if not text:
    return None
  return _parse(text, f'${ENV_VAR}', 'set it to the output of `python -c "import secrets; '
                'print(secrets.token_hex(32))"`, the same for every role of the run')


def ensure(path: str) -> bytes:
  """The key in `path`, made first (owner-only, written whole) when there is none.

  Two processes that make it at once agree: the file is linked into place only if it is not
  there yet, and the loser reads the winner's.
  """
  if os.path.exists(path):
    return read(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f'.{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}')
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(new_key().hex() + '\n')
      f.flush()
      os.fsync(f.fileno())
    try:
      os.link(tmp, path)
      logging.info('made the run\'s weights key %s (owner-only)', path)
    except FileExistsError:
      pass
  finally:
    os.unlink(tmp)
  return read(path)


class KeySource:
  """The key of a role that verifies (actors, eval): from the environment, or from a file that
  may appear after the role starts (the learner makes it), read on first use.

  `signer()` is None while there is no key; the role keeps its current weights then, and says
  so once with the fix.
  """

  def __init__(self, path: str, role: str):
    self._path, self._role = path, role
    self._signer = None
    self._said = False
    key = from_environment()
    if key is not None:
      self._signer = Signer(key)
    elif os.path.exists(path):
      self._signer = Signer(read(path))  # A bad file is refused at start.

  def signer(self) -> Optional[Signer]:
    if self._signer is None and os.path.exists(self._path):
      self._signer = Signer(read(self._path))
    if self._signer is None and not self._said:
      logging.warning('%s: no weights key yet (no $%s, no file %s); weights are not loaded '
                      'until there is one. The learner makes the file at start; a role on '
                      'another disk needs a copy of it (--weights_key_file) or $%s',
                      self._role, ENV_VAR, self._path, ENV_VAR)
      self._said = True
    return self._signer


def check(path: str) -> None:
  """Refuses a bad key in the environment or in the file at `path`, if either is there; writes
  nothing (a role checks this before it waits on the network or writes anything).

  Raises:
    UserError: naming the problem and the fix.
  """
  if from_environment() is None and os.path.exists(path):
    read(path)


def learner_signer(path: str) -> Signer:
  """The learner's signer: the environment's key, else the file's, made when missing."""
  key = from_environment()
  return Signer(key if key is not None else ensure(path))
