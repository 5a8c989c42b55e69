r"""Plots learning curves of one or more runs: average eval return against env steps and time.

  python -m results.plot --run_dir=runs/dqn_cartpole --out=plots/cartpole.png
  python -m results.plot --run_dir=runs/a --run_dir=runs/b --label=A --label=B --out=ab.svg
  python -m results.plot --group="DQN CartPole=runs/cp_seed*" --target=195 --out=cp.png

Each --run_dir is drawn as its own line; each --group (LABEL=DIR[,DIR...], wildcards allowed)
as the mean of its runs with a min-max band. Data comes from root_dir/eval/eval.csv, or from the
eval TensorBoard event files where there is no CSV (see results/curves.py).
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags

from common import main_utils
from common.errors import UserError
from results import curves
from results import figure

flags.DEFINE_multi_string('run_dir', [], 'Run directory (--root_dir of a run), eval.csv or '
                          'folder of eval event files; one line each. Wildcards allowed.')
flags.DEFINE_multi_string('label', [], 'Legend names of the --run_dir lines, in order '
                          '(default: the directory names).')
flags.DEFINE_multi_string('group', [], 'LABEL=DIR[,DIR...]: runs drawn as mean and min-max.')
flags.DEFINE_string('out', None, 'Output image, .png or .svg.')
flags.DEFINE_multi_enum('x', list(figure.AXES), list(figure.AXES),
                        'x axes, one panel each: env_steps, wall_s.')
flags.DEFINE_string('title', None, 'Figure title.')
flags.DEFINE_float('target', None, 'Draw a dashed line at this return (the solved threshold).')
flags.mark_flag_as_required('out')
FLAGS = flags.FLAGS


def main(argv):
  def _run():
    if len(argv) > 1:
      raise UserError(f'unexpected arguments {argv[1:]}: pass run directories as --run_dir=DIR')
    figure.check_out_path(FLAGS.out)
    run_dirs = curves.expand(FLAGS.run_dir)
    if FLAGS.label and len(FLAGS.label) != len(run_dirs):
      raise UserError(f'{len(FLAGS.label)} --label for {len(run_dirs)} --run_dir: give one '
                      'label per run directory, or none')
    labels = FLAGS.label or [None] * len(run_dirs)
    runs = [curves.load_run(d, label) for d, label in zip(run_dirs, labels)]
    groups = []
    for spec in FLAGS.group:
      label, paths = curves.parse_group(spec)
      groups.append((label, [curves.load_run(p) for p in paths]))
    out = figure.plot_curves(FLAGS.out, runs, groups, axes=FLAGS.x, title=FLAGS.title,
                             target=FLAGS.target)
    print(f'wrote {out}')
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
