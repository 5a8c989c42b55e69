r"""Renders a saved policy, or a random one, for K episodes to MP4 and GIF; headless.

  python -m results.video --root_dir=runs/dqn_cartpole --out=videos/cartpole_trained
  python -m results.video --root_dir=runs/dqn_cartpole --random --out=videos/cartpole_random
  python -m results.video --root_dir=runs/pong --beside_random --max_frames=600 --out=v/pong
  python -m results.video --gin_file=gin/sac_inverted_pendulum.gin \
      --policy_dir=runs/pendulum/learner/policies/greedy_policy --num_episodes=3 --out=v/pend

With --root_dir the policy is the learner's export, root_dir/learner/policies/greedy_policy,
and the environment comes from the learner's recorded config, root_dir/learner/
operative_config.gin, unless --gin_file is given. The return of every episode is printed.
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

import os

from absl import app
from absl import flags

from common import builders  # pylint: disable=unused-import  (registers every configurable)
from common import constants
from common import gin_config
from common import main_utils
from common.errors import UserError
from learner import export
from results import rollout

flags.DEFINE_string('root_dir', None, 'Run directory: its greedy policy and its recorded gin '
                    'config are used.')
flags.DEFINE_string('policy_dir', None, 'Policy SavedModel directory (overrides --root_dir\'s).')
flags.DEFINE_bool('random', False, 'Render uniformly random actions instead of a policy.')
flags.DEFINE_bool('beside_random', False, 'Show the policy beside a random one, each with its '
                  'average return, in one video.')
flags.DEFINE_multi_string('gin_file', [], 'Gin files naming the task (default: the run\'s '
                          'learner/operative_config.gin).')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
flags.DEFINE_string('out', None, 'Output path without extension; .mp4 and .gif are added.')
flags.DEFINE_multi_enum('format', ['mp4', 'gif'], ['mp4', 'gif'], 'Formats to write.')
flags.DEFINE_integer('num_episodes', 1, 'Episodes to record (K).', lower_bound=1)
flags.DEFINE_integer('seed', 0, 'Environment seed.', lower_bound=0)
flags.DEFINE_integer('frame_stride', 1, 'Keep every n-th frame.', lower_bound=1)
flags.DEFINE_integer('max_frames', 0, 'Frames kept per episode (0: all); returns are always '
                     'of the full episode.', lower_bound=0)
flags.DEFINE_integer('gif_width', 240, 'GIF width in pixels.', lower_bound=16)
flags.DEFINE_integer('gif_stride', 2, 'The GIF keeps every n-th kept frame.', lower_bound=1)
flags.mark_flag_as_required('out')
FLAGS = flags.FLAGS


def main(_):
  def _run():
    policy_dir = FLAGS.policy_dir or ''
    gin_files = gin_config.resolve_gin_files(FLAGS.gin_file)
    if FLAGS.root_dir:
      if not os.path.isdir(FLAGS.root_dir):
        raise UserError(f'--root_dir={FLAGS.root_dir!r} does not exist: pass the --root_dir '
                        'of a run')
      if not policy_dir and not FLAGS.random:
        policy_dir = os.path.join(FLAGS.root_dir, constants.POLICY_DIR, export.GREEDY_POLICY)
      if not gin_files:
        gin_files = [os.path.join(FLAGS.root_dir, constants.LEARNER_DIR,
                                  'operative_config.gin')]
    if FLAGS.random and FLAGS.policy_dir:
      raise UserError('--random and --policy_dir exclude each other: pass one')
    if not policy_dir and not FLAGS.random:
      raise UserError('nothing to render: pass --root_dir, --policy_dir or --random')
    if not gin_files:
      raise UserError('no task: pass --gin_file (or --root_dir of a run)')
    gin_config.load_gin(gin_files, FLAGS.gin_bindings)
    rollout.record_videos(FLAGS.out, '' if FLAGS.random else policy_dir,
                          num_episodes=FLAGS.num_episodes, formats=FLAGS.format,
                          seed=FLAGS.seed, frame_stride=FLAGS.frame_stride,
                          max_frames=FLAGS.max_frames, gif_width=FLAGS.gif_width,
                          gif_stride=FLAGS.gif_stride, beside_random=FLAGS.beside_random)
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
