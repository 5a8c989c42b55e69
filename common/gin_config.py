"""Gin configs: resolving the gin files' paths, parsing them with one-line errors, and
recording the operative config a process ran with."""

import json
import os
import re
from typing import List, Sequence

from absl import logging
import gin

from common import files
from common.errors import UserError


# The package whose data the gin files are in an installed copy (setup.py).
GIN_PACKAGE = 'reverb_fleet_gin'


def installed_gin_dir():
  """The directory of the installed gin files (`pip install .` or a wheel), or None."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec(GIN_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def resolve_gin_files(gin_files: Sequence[str], project_only: bool = False) -> List[str]:
  """Absolute paths of `gin_files`: as given from the working directory, else the project's.

  The project's files are the checkout's (`gin/...` next to the packages) or, in an installed
  copy, those of `GIN_PACKAGE`. So `reverb-fleet run --gin_file=gin/sac_inverted_pendulum.gin`
  works from any directory, and a launcher's children read the files the user meant. A path
  found nowhere is returned as given, for the one-line error of `load_gin`.

  With `project_only` (a launcher's default gin file, which the user did not name), the
  working directory is not looked at: a gin file is code, and a `gin/` directory that happens
  to be where the command runs must not stand in for the project's.
  """
  from common import console  # pylint: disable=g-import-not-at-top
  resolved = []
  for path in gin_files:
    installed = None
    if not os.path.isabs(path) and os.path.normpath(path).startswith('gin' + os.sep):
      directory = installed_gin_dir()
      if directory:
        installed = os.path.join(directory, os.path.normpath(path)[len('gin' + os.sep):])
    if os.path.isfile(path) and not (project_only and not os.path.isabs(path)):
      resolved.append(os.path.abspath(path))
    elif not os.path.isabs(path) and os.path.isfile(os.path.join(console.REPO, path)):
      resolved.append(os.path.join(console.REPO, path))
    elif installed and os.path.isfile(installed):
      resolved.append(installed)
    else:
      resolved.append(path)
  return resolved


# Recorded configs (operative_config.gin) of runs made before the Atari stack was installed name
# `suite_gym.load` by its short name: the only `load` configurable then. With ale-py installed,
# `tf_agents.environments` also imports suite_atari, suite_dm_control, suite_mujoco and
# suite_pybullet, whose `load` makes the short name ambiguous.
_BARE_LOAD = re.compile(r'^load\.', re.MULTILINE)


def gin_text(path: str) -> str:
  """A gin file's text, with a recorded config's bare `load.` bindings read as suite_gym's."""
  with open(path) as f:
    return _BARE_LOAD.sub('suite_gym.load.', f.read())


def load_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> None:
  """Parses gin files and bindings, with one-line errors.

  Importing `common` first registers every configurable, so a binding to a parameter that does
  not exist fails here, at start-up, and not later.

  Args:
    gin_files: Paths of gin files; at least one.
    gin_bindings: Extra bindings, applied after the files.

  Raises:
    UserError: a file is missing or malformed, or a binding names an unknown parameter.
  """
  if not gin_files:
    raise UserError('no gin file given: pass --gin_file=gin/dqn_cartpole.gin (see gin/)')
  for path in gin_files:
    if not os.path.isfile(path):
      raise UserError(f'gin file {path!r} does not exist: pass --gin_file with a path to one of '
                      'the files in gin/')
  gin.clear_config()
  try:
    for path in gin_files:
      gin.parse_config(gin_text(path))
    gin.parse_config(list(gin_bindings))
  except ImportError as e:
    name = getattr(e, 'name', None) or ' '.join(str(e).split())
    if isinstance(e, ModuleNotFoundError) and "'" in str(e):
      name = str(e).split("'")[1]
    raise UserError(f'the gin config imports {name!r}, which cannot be imported here: install '
                    'that package in this environment (pip install -e PATH) or put its '
                    'directory on PYTHONPATH') from None
  except (ValueError, SyntaxError, KeyError, TypeError) as e:
    message = ' '.join(str(e).split())
    raise UserError(f'bad gin config ({message}): fix the gin file or --gin_bindings') from None


def record_run_config(directory: str, flags: dict) -> None:
  """Writes the operative gin config and the flags a process ran with under `directory`."""
  files.atomic_write(os.path.join(directory, 'operative_config.gin'), gin.operative_config_str())
  files.atomic_write(os.path.join(directory, 'flags.json'),
               json.dumps(flags, indent=2, sort_keys=True, default=str) + '\n')
  logging.info('Recorded the operative gin config and flags under %s', directory)
