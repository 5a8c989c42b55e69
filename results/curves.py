"""Learning curves of runs: read from eval CSVs or TensorBoard event files, and grouped.

A run directory is the `--root_dir` of a run. Its curve is read from root_dir/eval/eval.csv
(columns train_step, env_steps, timestamp, average_return, ...); where there is no CSV, from the
eval TensorBoard events (root_dir/eval/events.out.tfevents.*, tag
`Metrics/AverageReturn_vs_env_steps`, whose step is the env-step count). A path may also name
an eval.csv file or a folder of event files directly.

Wall-clock time is measured from the start of the run's eval process: the creation time of its
first event file (TensorBoard writes it into the file name). Without event files it is measured
from the first evaluation. A resumed run counts the time it was stopped.
"""

import csv
import dataclasses
import glob
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from common import constants
from common.errors import UserError

ENV_STEPS_TAG = 'Metrics/AverageReturn_vs_env_steps'
_EVENT_GLOB = 'events.out.tfevents.*'
_EVENT_TIME = re.compile(r'events\.out\.tfevents\.(\d+)\.')
_NO_DATA_FIX = ('run the eval process beside the run (python -m launcher.main starts it, or '
                'python -m actor.main --mode=eval) and plot once it has written a row')


@dataclasses.dataclass(frozen=True)
class Curve:
  """Average eval return of one run, one point per evaluation, in evaluation order.

  Attributes:
    label: Name in the legend.
    env_steps: Env steps collected when each evaluation ran.
    wall_s: Seconds since the run's start.
    returns: Average return of each evaluation.
  """
  label: str
  env_steps: np.ndarray
  wall_s: np.ndarray
  returns: np.ndarray

  def xy(self, axis: str) -> Tuple[np.ndarray, np.ndarray]:
    """(x, returns) against `axis` ('env_steps' or 'wall_s'), sorted by x.

    Evaluations whose env-step count is unknown (written as -1 when the replay server did not
    answer) are left out of the env-step axis.
    """
    x = getattr(self, axis)
    keep = x >= 0
    order = np.argsort(x[keep], kind='stable')
    return x[keep][order], self.returns[keep][order]


@dataclasses.dataclass(frozen=True)
class Band:
  """Mean, minimum and maximum of several curves on a shared x grid."""
  label: str
  x: np.ndarray
  mean: np.ndarray
  low: np.ndarray
  high: np.ndarray
  num_runs: int


def _event_files(directory: str) -> List[str]:
  return sorted(glob.glob(os.path.join(directory, _EVENT_GLOB)))


def _file_start_time(path: str) -> Optional[float]:
  match = _EVENT_TIME.search(os.path.basename(path))
  return float(match.group(1)) if match else None


def _read_csv(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
    env_steps = np.array([float(r['env_steps']) for r in rows])
    timestamps = np.array([float(r['timestamp']) for r in rows])
    returns = np.array([float(r['average_return']) for r in rows])
  except (KeyError, ValueError, TypeError) as e:
    raise UserError(f'{path} is not an eval CSV ({type(e).__name__}: {e}): pass a run '
                    'directory whose eval/eval.csv has the columns env_steps, timestamp and '
                    'average_return') from None
  return env_steps, timestamps, returns


def _read_events(paths: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(env_steps, wall times, returns) of the ENV_STEPS_TAG scalars in `paths`."""
  # Imported here: TensorBoard's reader pulls in TensorFlow, which CSV runs do not need.
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  points = {}
  for path in paths:
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if value.tag != ENV_STEPS_TAG:
          continue
        if value.HasField('tensor'):
          number = float(tensor_util.make_ndarray(value.tensor))
        else:
          number = float(value.simple_value)
        points[int(event.step)] = (event.wall_time, number)  # A rewrite keeps the last.
  steps = sorted(points)
  return (np.array(steps, dtype=float), np.array([points[s][0] for s in steps]),
          np.array([points[s][1] for s in steps]))


def load_run(path: str, label: Optional[str] = None) -> Curve:
  """Reads the learning curve of one run.

  Args:
    path: A run directory (its --root_dir), an eval.csv file, or a folder of eval event files.
    label: Legend name; the run directory's name if None.

  Returns:
    The run's Curve, with at least one point.

  Raises:
    UserError: the path does not exist or holds no evaluation.
  """
  path = os.path.normpath(path)
  if not os.path.exists(path):
    raise UserError(f'run directory {path!r} does not exist: pass the --root_dir of a run')
  if os.path.isfile(path):
    csv_path, event_dir = path, os.path.dirname(path)
    run_dir = os.path.dirname(event_dir)
  elif os.path.isfile(os.path.join(path, constants.EVAL_CSV)):
    csv_path, event_dir, run_dir = (os.path.join(path, constants.EVAL_CSV),
                                    os.path.join(path, constants.EVAL_DIR), path)
  else:
    csv_path = None
    event_dir = path if _event_files(path) else os.path.join(path, constants.EVAL_DIR)
    run_dir = path
  events = _event_files(event_dir)
  if csv_path:
    env_steps, timestamps, returns = _read_csv(csv_path)
    source = csv_path
  elif events:
    env_steps, timestamps, returns = _read_events(events)
    source = f'the event files in {event_dir}'
  else:
    raise UserError(f'no evaluations under {path!r} (neither {constants.EVAL_CSV} nor '
                    f'{constants.EVAL_DIR}/{_EVENT_GLOB}): {_NO_DATA_FIX}')
  if not len(returns):  # pylint: disable=g-explicit-length-test
    raise UserError(f'{source} holds no evaluation yet: {_NO_DATA_FIX}')
  starts = [t for t in map(_file_start_time, events) if t is not None]
  start = min(starts + [float(timestamps.min())])
  label = label or os.path.basename(os.path.abspath(run_dir)) or path
  return Curve(label, env_steps, timestamps - start, returns)


def expand(patterns: Sequence[str]) -> List[str]:
  """Expands shell-style wildcards (sorted); a pattern matching nothing is kept as is."""
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else []
    paths.extend(matches or [pattern])
  return paths


def parse_group(spec: str) -> Tuple[str, List[str]]:
  """Parses 'LABEL=DIR[,DIR...]' (wildcards allowed) into (label, run directories).

  Raises:
    UserError: malformed spec.
  """
  label, sep, dirs = spec.partition('=')
  paths = expand([d for d in dirs.split(',') if d])
  if not sep or not label or not paths:
    raise UserError(f'bad --group={spec!r}: write LABEL=DIR[,DIR...], for example '
                    '--group="DQN CartPole=runs/cp_seed*"')
  return label, paths


def band(label: str, curves: Sequence[Curve], axis: str, points: int = 200) -> Band:
  """Mean and min-max band of `curves` against `axis` ('env_steps' or 'wall_s').

  Each curve is linearly interpolated on a shared grid spanning the x range that every curve
  covers, so the band never extrapolates a run past its last evaluation.

  Raises:
    UserError: the curves share no x range.
  """
  pairs = [c.xy(axis) for c in curves]
  if any(not len(x) for x, _ in pairs):  # pylint: disable=g-explicit-length-test
    raise UserError(f'a run of group {label!r} has no evaluation with a known {axis}: group '
                    'runs whose eval CSV has env_steps')
  lo, hi = max(float(x[0]) for x, _ in pairs), min(float(x[-1]) for x, _ in pairs)
  if hi < lo:
    raise UserError(f'the runs of group {label!r} share no {axis} range (their evaluations do '
                    'not overlap): group runs of the same task and budget')
  grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
  values = np.stack([np.interp(grid, x, y) for x, y in pairs])
  return Band(label, grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0),
              len(curves))
