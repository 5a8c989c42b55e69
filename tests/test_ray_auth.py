"""Ray's token authentication: the launcher refuses an open cluster, and a command without the
cluster's token, before it sends anything; real Ray head nodes (`ray start --head`).

The head nodes run on this machine with session directories of their own, one open
(RAY_AUTH_MODE=disabled, as `ray start` runs by default) and one that demands a token.
`test_ray_cluster.py` runs a whole fleet on a cluster with a token.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

import portpicker
import psutil
import pytest

from launcher import ray_auth
from tests.conftest import REPO
from tests.conftest import wait_until

RAY = os.path.join(os.path.dirname(sys.executable), 'ray')


def test_client_token_names_where_it_comes_from_or_what_is_missing(tmp_path):
  token = tmp_path / 'token'
  assert ray_auth.client_token({}) == (None, 'RAY_AUTH_MODE is not set')
  assert "not 'token'" in ray_auth.client_token({'RAY_AUTH_MODE': 'disabled'})[1]
  assert ray_auth.client_token({'RAY_AUTH_MODE': 'token', 'RAY_AUTH_TOKEN': 'x'}) == (
      'x', 'RAY_AUTH_TOKEN')
  missing = ray_auth.client_token({'RAY_AUTH_MODE': 'token', 'RAY_AUTH_TOKEN_PATH': str(token)})
  assert missing[0] is None and f'the token file {token} cannot be read' in missing[1]
  token.write_text('')
  assert 'is empty' in ray_auth.client_token({'RAY_AUTH_MODE': 'token',
                                              'RAY_AUTH_TOKEN_PATH': str(token)})[1]
  token.write_text('secret\n')
  assert ray_auth.client_token({'RAY_AUTH_MODE': 'token', 'RAY_AUTH_TOKEN_PATH': str(token)}) == (
      'secret', f'the token file {token}')
  home = tmp_path / 'home'
  (home / '.ray').mkdir(parents=True)
  (home / '.ray' / 'auth_token').write_text('t')  # Ray's default path.
  assert ray_auth.client_token({'RAY_AUTH_MODE': 'token', 'HOME': str(home)})[0] == 't'


class _Head:
  """`ray start --head --block` with its own session directory; `stop` ends its process tree."""

  def __init__(self, tmp, env):
    self.port = portpicker.pick_unused_port()
    self.address = f'127.0.0.1:{self.port}'
    self._log = os.path.join(tmp, 'head.log')
    # Ray's socket paths must fit in 107 bytes: a short session directory of its own.
    self._temp_dir = tempfile.mkdtemp(prefix='rfauth', dir='/tmp')
    self._process = subprocess.Popen(
        [RAY, 'start', '--head', '--block', f'--port={self.port}', '--num-cpus=0',
         '--include-dashboard=false', '--disable-usage-stats', '--node-ip-address=127.0.0.1',
         f'--temp-dir={self._temp_dir}'],
        stdout=open(self._log, 'w'), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_until(self._up, 120, f'the Ray head at {self.address}', interval_s=0.5,
               detail=lambda: open(self._log).read()[-2000:])

  def _up(self):
    assert self._process.poll() is None, open(self._log).read()[-2000:]
    return 'Ray runtime started' in open(self._log).read()

  def stop(self):
    tree = psutil.Process(self._process.pid).children(recursive=True)
    os.killpg(self._process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs([psutil.Process(self._process.pid)] + tree, timeout=30)
    for proc in alive:
      proc.kill()
    shutil.rmtree(self._temp_dir, ignore_errors=True)


def _env(**extra):
  env = dict(os.environ, RAY_USAGE_STATS_ENABLED='0')
  for name in ('RAY_AUTH_MODE', 'RAY_AUTH_TOKEN', 'RAY_AUTH_TOKEN_PATH'):
    env.pop(name, None)
  env.update(extra)
  return env


def _launch(address, env, *args):
  done = subprocess.run([sys.executable, '-m', 'launcher.ray', *args, f'--address={address}',
                         '--name=authtest', '--connect_timeout_s=20'],
                        cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
  return done.returncode, [l for l in done.stderr.splitlines() if l.startswith('error: ')]


@pytest.fixture(scope='module')
def token_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('token') / 'auth_token'
  path.write_text(secrets.token_hex(32))
  path.chmod(0o600)
  return str(path)


@pytest.mark.slow
def test_an_open_cluster_is_refused_before_anything_is_sent(tmp_path, token_file):
  if not os.path.exists(RAY):
    pytest.skip('ray is not installed: pip install -e ".[ray]"')
  head = _Head(str(tmp_path), _env(RAY_AUTH_MODE='disabled'))
  try:
    assert ray_auth.gcs_requires_token(head.address) is False
    # Even a command that holds a token does not run a fleet there.
    code, errors = _launch(head.address, _env(RAY_AUTH_MODE='token',
                                              RAY_AUTH_TOKEN_PATH=token_file), 'status')
    assert code == 2 and len(errors) == 1, errors
    assert f'the Ray cluster at {head.address} runs without authentication' in errors[0]
    assert 'RAY_AUTH_MODE=token' in errors[0] and 'ray get-auth-token --generate' in errors[0]
  finally:
    head.stop()


@pytest.mark.slow
def test_a_command_without_the_token_is_refused_by_a_cluster_that_demands_one(tmp_path,
                                                                              token_file):
  if not os.path.exists(RAY):
    pytest.skip('ray is not installed: pip install -e ".[ray]"')
  head = _Head(str(tmp_path), _env(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=token_file))
  try:
    assert ray_auth.gcs_requires_token(head.address) is True
    code, errors = _launch(head.address, _env(), 'status')
    assert code == 2 and len(errors) == 1, errors
    assert 'demands a token and this command has none (RAY_AUTH_MODE is not set)' in errors[0]
    # A wrong token: Ray's own refusal, as one line.
    wrong = os.path.join(str(tmp_path), 'wrong')
    with open(wrong, 'w') as f:
      f.write(secrets.token_hex(32))
    code, errors = _launch(head.address, _env(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=wrong),
                           'status')
    assert code == 2 and len(errors) == 1, errors
    assert 'refused this command\'s token' in errors[0]
    # The right token: past authentication, to the fleet lookup.
    code, errors = _launch(head.address, _env(RAY_AUTH_MODE='token',
                                              RAY_AUTH_TOKEN_PATH=token_file), 'status')
    assert code == 2 and errors and "no fleet named 'authtest'" in errors[0], errors
  finally:
    head.stop()


@pytest.mark.slow
def test_a_local_cluster_without_authentication_is_refused_before_it_starts():
  code, errors = _launch('local', _env(RAY_AUTH_MODE='disabled'), 'status')
  assert code == 2 and len(errors) == 1, errors
  assert '--address=local with RAY_AUTH_MODE=disabled would start a Ray cluster' in errors[0]
  assert 'unset RAY_AUTH_MODE' in errors[0]
