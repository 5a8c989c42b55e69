r"""Writes the image's hashed lock files from pinned versions and PyPI's own file hashes.

  .venv/bin/python docker/lock.py                  # from the pins already in the lock files
  .venv/bin/python docker/lock.py --from_freeze    # from this virtual environment's packages
  .venv/bin/python docker/lock.py --from_file=F    # from the name==version lines of F

docker/requirements.lock holds every package of the image (setup.cfg's pins, the `ray` and
`mujoco` extras, and every transitive dependency) at one version, with the sha256 of each of
that version's files on PyPI, as pip's hash-checking mode reads them. docker/install_stack.sh
installs with `--require-hashes`, so a file whose content changed on the index (or on a mirror,
or in transit) fails the build. docker/requirements-cuda.lock holds the CUDA packages that
TensorFlow's `and-cuda` extra pins, for the GPU image.

With --from_freeze, the versions are those of `pip freeze` in this environment, less the test
tools and the project itself: run it after changing setup.cfg and installing again.
"""

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import urllib.request

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.utils import parse_sdist_filename
from packaging.utils import parse_wheel_filename
from packaging.version import Version

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK = os.path.join(HERE, 'requirements.lock')
CUDA_LOCK = os.path.join(HERE, 'requirements-cuda.lock')
INDEX = 'https://pypi.org/simple'
# Installed for the tests only (setup.cfg's `test` extra and what it pulls in), not in the image.
TEST_ONLY = {'pytest', 'pytest-timeout', 'iniconfig', 'pluggy', 'pygments',
             'kubernetes-validate', 'reverb-fleet', 'pip', 'setuptools'}
_PIN = re.compile(r'^([A-Za-z0-9_.\-]+)==([^\s;\\]+)')


def _version_of(filename: str):
  try:
    if filename.endswith('.whl'):
      return parse_wheel_filename(filename)[1]
    return parse_sdist_filename(filename)[1]
  except ValueError:
    return None


def hashes(name: str, version: str):
  """The sha256 of every file of `name`==`version` on the index (PEP 691's JSON)."""
  request = urllib.request.Request(f'{INDEX}/{canonicalize_name(name)}/',
                                   headers={'Accept': 'application/vnd.pypi.simple.v1+json'})
  with urllib.request.urlopen(request, timeout=60) as response:
    files = json.load(response)['files']
  wanted = Version(version)
  found = sorted({f['hashes']['sha256'] for f in files
                  if 'sha256' in f.get('hashes', {}) and _version_of(f['filename']) == wanted})
  if not found:
    raise SystemExit(f'lock: no file of {name}=={version} on {INDEX}')
  return found


def read_pins(path: str):
  pins = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        match = _PIN.match(line.strip())
        if match:
          pins[match.group(1)] = match.group(2)
  return pins


def freeze_pins():
  # --all: `wheel` too, which astunparse needs; pip and setuptools come with the venv.
  out = subprocess.run([sys.executable, '-m', 'pip', 'freeze', '--all', '--exclude-editable'],
                       capture_output=True, text=True, check=True).stdout
  pins = {}
  for line in out.splitlines():
    match = _PIN.match(line.strip())
    if match and canonicalize_name(match.group(1)) not in TEST_ONLY:
      pins[match.group(1)] = match.group(2)
  return pins


def cuda_pins():
  """The exact pins of TensorFlow's `and-cuda` extra, from the installed TensorFlow."""
  pins = {}
  for text in importlib.metadata.requires('tensorflow') or ():
    requirement = Requirement(text)
    if requirement.marker and requirement.marker.evaluate({'extra': 'and-cuda'}) and \
        not requirement.marker.evaluate({'extra': ''}):
      (spec,) = requirement.specifier
      pins[requirement.name] = spec.version
  return pins


def write(path: str, pins, header: str) -> None:
  lines = [header.rstrip(), '']
  for name in sorted(pins, key=canonicalize_name):
    lines.append(f'{name}=={pins[name]} \\')
    digests = hashes(name, pins[name])
    lines.extend(f'    --hash=sha256:{d}' + (' \\' if i < len(digests) - 1 else '')
                 for i, d in enumerate(digests))
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'lock: wrote {path} ({len(pins)} packages)')


_HEADER = """\
# Every package of the image, at one version, with the sha256 of each of its files on PyPI
# (pip's hash-checking mode: docker/install_stack.sh installs with --require-hashes).
# Written by docker/lock.py; do not edit by hand. The direct pins live in setup.cfg.
"""
_CUDA_HEADER = """\
# The CUDA packages of the GPU image (TensorFlow's `and-cuda` extra), hashed as
# requirements.lock is. Written by docker/lock.py; do not edit by hand.
"""


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--from_freeze', action='store_true')
  parser.add_argument('--from_file', default=LOCK)
  args = parser.parse_args(argv)
  pins = freeze_pins() if args.from_freeze else read_pins(args.from_file)
  if not pins:
    raise SystemExit('lock: no pins: run with --from_freeze in the project\'s environment')
  write(LOCK, pins, _HEADER)
  write(CUDA_LOCK, cuda_pins(), _CUDA_HEADER)


if __name__ == '__main__':
  main()
