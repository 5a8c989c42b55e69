"""The docs name what the code has: every relative link reaches a file (and its heading), and
every flag on a command line of the project's own commands is one that a main defines."""

import glob
import os
import re

import pytest

from tests.conftest import REPO

DOCS = sorted(['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'] +
              [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md'))])

# Flags that absl gives every main.
_ABSL_FLAGS = {'help', 'helpfull', 'helpshort', 'verbosity'}
# A line that runs one of the project's commands.
_PROJECT_COMMAND = re.compile(
    r'reverb-fleet (run|cluster|server|actor|learner|eval|status|plot|video)\b'
    r'|python -m (launcher|actor|learner|replay_server|bench|results)\.')
_FLAG = re.compile(r'(?<![\w-])--([a-z][a-z0-9_]*)')
_LINK = re.compile(r'\]\(([^)\s]+)\)')


def _defined_flags():
  """Names of the flags of every main: absl DEFINE_* and the benchmarks' argparse options."""
  names = set(_ABSL_FLAGS)
  for directory in ('actor', 'learner', 'replay_server', 'launcher', 'common', 'results', 'bench'):
    for path in glob.glob(os.path.join(REPO, directory, '**', '*.py'), recursive=True):
      with open(path) as f:
        text = f.read()
      names.update(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", text))
      names.update(n.replace('-', '_') for n in re.findall(r"add_argument\(\s*'--([\w-]+)'", text))
  return names


def _anchor(heading: str) -> str:
  """GitHub's anchor of a markdown heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def _anchors(path):
  with open(path) as f:
    return {_anchor(line.lstrip('#')) for line in f if line.startswith('#')}


@pytest.mark.parametrize('doc', DOCS)
def test_every_flag_of_a_project_command_exists(doc):
  defined = _defined_flags()
  with open(os.path.join(REPO, doc)) as f:
    lines = f.read().split('\n')
  unknown = []
  for number, line in enumerate(lines, 1):
    # A command continued over lines ends each with a backslash: check the whole command.
    if not _PROJECT_COMMAND.search(line):
      continue
    command = line
    following = number
    while command.rstrip().endswith('\\') and following < len(lines):
      command = command.rstrip()[:-1] + ' ' + lines[following]
      following += 1
    unknown += [f'{doc}:{number}: --{name}' for name in _FLAG.findall(command)
                if name not in defined]
  assert not unknown, unknown


@pytest.mark.parametrize('doc', DOCS)
def test_every_relative_link_reaches_its_file_and_heading(doc):
  with open(os.path.join(REPO, doc)) as f:
    text = f.read()
  broken = []
  for target in _LINK.findall(text):
    if re.match(r'[a-z]+://', target) or target.startswith('mailto:'):
      continue
    path, _, anchor = target.partition('#')
    full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path else (
        os.path.join(REPO, doc))
    if not os.path.exists(full):
      broken.append(f'{target} (no such file)')
    elif anchor and full.endswith('.md') and anchor not in _anchors(full):
      broken.append(f'{target} (no such heading)')
  assert not broken, f'{doc}: {broken}'
