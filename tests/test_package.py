"""The package as a user installs it: a wheel built from the source tree, installed without `-e`
into a fresh virtual environment, runs `reverb-fleet run` from another directory.

The fresh environment takes the pinned dependencies from this interpreter's site-packages (one
path line in a .pth file, whose own .pth files, this checkout's editable install among them,
are not read), so that the test installs nothing from the network. Marked `slow`.
"""

import os
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(args, **kwargs):
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, f'{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}'
  return result.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(venv directory, its site-packages) with the wheel of this source tree installed."""
  base = tmp_path_factory.mktemp('package')
  source = base / 'source'
  # The source tree as a clean clone would have it: tracked and unignored files only.
  files = _run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=REPO).split('\0')
  for name in filter(None, files):
    if os.path.isfile(os.path.join(REPO, name)):
      os.makedirs(source / os.path.dirname(name), exist_ok=True)
      with open(os.path.join(REPO, name), 'rb') as src, open(source / name, 'wb') as dst:
        dst.write(src.read())
  wheels = base / 'wheels'
  _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
        '-w', str(wheels), str(source)])
  (wheel,) = os.listdir(wheels)
  venv = base / 'venv'
  _run([sys.executable, '-m', 'venv', str(venv)])
  python = str(venv / 'bin' / 'python')
  site = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
              env={'PATH': os.environ['PATH']}).strip()
  with open(os.path.join(site, 'pinned_dependencies.pth'), 'w') as f:
    f.write(sysconfig.get_paths()['purelib'] + '\n')
  _run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
        str(wheels / wheel)])
  return venv, site


def _clean_env():
  return {k: v for k, v in os.environ.items()
          if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'CUDA_VISIBLE_DEVICES')}


def test_the_wheel_carries_the_packages_the_gin_files_and_the_command(installed):
  venv, site = installed
  where = _run([str(venv / 'bin' / 'python'), '-c',
                'import launcher, common.gin_config as g; print(launcher.__file__); '
                'print(g.installed_gin_dir())'], cwd='/', env=_clean_env()).split()
  assert where[0].startswith(site), where  # The installed copy, not this checkout.
  assert where[1].startswith(site), where
  installed_gins = sorted(f for f in os.listdir(where[1]) if f.endswith('.gin'))
  assert installed_gins == sorted(f for f in os.listdir(os.path.join(REPO, 'gin'))
                                  if f.endswith('.gin'))
  assert os.access(venv / 'bin' / 'reverb-fleet', os.X_OK)


def test_reverb_fleet_run_trains_from_another_directory(installed, tmp_path):
  venv, site = installed
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  root_dir = tmp_path / 'run'
  # The default gin file (gin/dqn_cartpole_fast.gin), a path relative to no directory here; no
  # target, so the run ends at the learner's train-step budget with status 0.
  output = _run([str(venv / 'bin' / 'reverb-fleet'), 'run', f'--root_dir={root_dir}',
                 '--max_train_steps=100', '--budget_s=300',
                 '--gin_bindings=EvalConfig.target_return=None'],
                cwd=elsewhere, env=_clean_env(), timeout=600)
  assert 'done (learner finished its 100 train steps); exit status 0' in output, output[-3000:]
  with open(root_dir / 'learner' / 'operative_config.gin') as f:
    assert "make_environment.env_name = 'CartPole-v0'" in f.read()
  assert os.listdir(root_dir / 'learner' / 'policies'), 'no exported policy'
