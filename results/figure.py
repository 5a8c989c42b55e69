"""Drawing learning curves: average return against env steps and against wall-clock time."""

import os
from typing import Optional, Sequence, Tuple

import matplotlib
matplotlib.use('Agg')  # Headless: no display is needed or used.
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top

from common.errors import UserError
from results import curves as curves_lib
from common import files

FORMATS = ('.png', '.svg')
AXES = ('env_steps', 'wall_s')
_WALL_UNITS = ((3 * 3600, 3600.0, 'hours'), (300, 60.0, 'minutes'), (0, 1.0, 'seconds'))


def check_out_path(out: str) -> str:
  """Returns the image format of `out` ('png' or 'svg').

  Raises:
    UserError: another extension.
  """
  extension = os.path.splitext(out)[1].lower()
  if extension not in FORMATS:
    raise UserError(f'--out={out!r} must end in .png or .svg (the image format is taken from '
                    'the extension)')
  return extension[1:]


def _wall_unit(max_seconds: float) -> Tuple[float, str]:
  for threshold, scale, name in _WALL_UNITS:
    if max_seconds >= threshold:
      return scale, name
  return 1.0, 'seconds'


def plot_curves(out: str, runs: Sequence[curves_lib.Curve] = (),
                groups: Sequence[Tuple[str, Sequence[curves_lib.Curve]]] = (),
                axes: Sequence[str] = AXES, title: Optional[str] = None,
                target: Optional[float] = None, dpi: int = 110) -> str:
  """Draws one panel per x axis, overlaying single runs and grouped runs, and writes `out`.

  Args:
    out: Image path ending in .png or .svg; written through a rename, never half-written.
    runs: Curves drawn one line each.
    groups: (label, curves) pairs drawn as the mean with a min-max band.
    axes: x axes, one panel each: 'env_steps' and/or 'wall_s'.
    title: Figure title.
    target: If set, a dashed line at this return (the task's solved threshold).
    dpi: Resolution of PNG output.

  Returns:
    `out`.

  Raises:
    UserError: bad path, unknown axis, nothing to draw, or grouped runs that do not overlap.
  """
  image_format = check_out_path(out)
  if not runs and not groups:
    raise UserError('nothing to plot: pass at least one --run_dir or --group')
  for axis in axes:
    if axis not in AXES:
      raise UserError(f'unknown x axis {axis!r}: use env_steps or wall_s')
  everything = list(runs) + [c for _, members in groups for c in members]
  bands = {axis: [curves_lib.band(label, members, axis) for label, members in groups]
           for axis in axes}
  figure, panels = plt.subplots(1, len(axes), figsize=(6.0 * len(axes), 4.2), squeeze=False)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for panel, axis in zip(panels[0], axes):
    scale, unit = 1.0, ''
    if axis == 'wall_s':
      scale, unit = _wall_unit(max(float(c.wall_s.max()) for c in everything))
    color = 0
    for curve in runs:
      x, y = curve.xy(axis)
      panel.plot(x / scale, y, marker='o', markersize=3, linewidth=1.5,
                 color=colors[color % len(colors)], label=curve.label)
      color += 1
    for group in bands[axis]:
      c = colors[color % len(colors)]
      panel.fill_between(group.x / scale, group.low, group.high, color=c, alpha=0.25,
                         linewidth=0)
      panel.plot(group.x / scale, group.mean, color=c, linewidth=2,
                 label=f'{group.label} (mean, min-max of {group.num_runs} runs)')
      color += 1
    if target is not None:
      panel.axhline(target, color='black', linestyle='--', linewidth=1,
                    label=f'target {target:g}')
    if axis == 'env_steps':
      panel.set_xlabel('environment steps (collected by all actors)')
      panel.xaxis.set_major_formatter(ticker.EngFormatter(sep=''))
    else:
      panel.set_xlabel(f'wall-clock time ({unit})')
    panel.set_ylabel('average return per episode (greedy eval)')
    panel.grid(True, alpha=0.3)
    panel.legend(fontsize='small', loc='best')
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  # No creation date in an SVG, so the same data gives the same file.
  metadata = {'Date': None} if image_format == 'svg' else None
  try:
    files.write_atomically(
        out, lambda tmp: figure.savefig(tmp, format=image_format, dpi=dpi, metadata=metadata))
  finally:
    plt.close(figure)
  return out
