r"""Starts a collect actor (`reverb-fleet actor`), or the eval process with --mode=eval
(`reverb-fleet eval`).

  python -m actor.main --gin_file=gin/dqn_cartpole.gin --replay_server_address=localhost:8008 \
      --task=0 --root_dir=runs/cp
  python -m actor.main --mode=eval --gin_file=gin/dqn_cartpole.gin \
      --replay_server_address=localhost:8008 --root_dir=runs/cp
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

import os

from absl import app
from absl import flags

from common import main_utils

main_utils.define_common_flags()
flags.DEFINE_enum('mode', 'collect', ['collect', 'eval'],
                  'collect: write trajectories; eval: run the greedy policy periodically.')
flags.DEFINE_integer('task', 0, 'Actor id; seeds its environments and exploration.', lower_bound=0)
flags.DEFINE_integer('num_actors', 0, 'Actors in the fleet, for per-actor exploration such as '
                     'Ape-X\'s epsilon ladder (0: unknown; the gin file\'s ladder size is used).',
                     lower_bound=0)
flags.DEFINE_integer('max_env_steps', 0, 'Stop after this many env steps (0: never).',
                     lower_bound=0)
flags.DEFINE_integer('max_evals', 0, 'Eval mode: stop after this many evaluations (0: never).',
                     lower_bound=0)
FLAGS = flags.FLAGS


def main(_):
  # One BLAS thread, before numpy loads: the NumPy policy's matrices are small, and OpenBLAS's
  # spinning worker threads take the core that the environments and the learner need
  # (HalfCheetah's actor beside a learner: 491 env steps/s with one thread, 323 without;
  # bench/actor_bench.py, docs/performance.md).
  os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
  os.environ.setdefault('MKL_NUM_THREADS', '1')
  main_utils.start_process()

  def _run():
    main_utils.preflight()
    # pylint: disable=g-import-not-at-top  (TensorFlow only after the cheap checks)
    from actor import collect
    from actor import evaluate
    configs = main_utils.load_and_check_config()
    stop = main_utils.stop_event_on_signals()
    if FLAGS.mode == 'eval':
      evaluate.run_eval(FLAGS.root_dir, FLAGS.replay_server_address, configs,
                        max_evals=FLAGS.max_evals, server_timeout_s=FLAGS.server_timeout_s,
                        stop_event=stop, weights_key_file=FLAGS.weights_key_file)
    else:
      collect.run_actor(FLAGS.root_dir, FLAGS.replay_server_address, FLAGS.task, configs,
                        max_env_steps=FLAGS.max_env_steps,
                        server_timeout_s=FLAGS.server_timeout_s, stop_event=stop,
                        num_actors=FLAGS.num_actors, weights_key_file=FLAGS.weights_key_file)
    # Everything is written and flushed; the interpreter's teardown of TensorFlow and Reverb
    # would only add a second to every stop.
    main_utils.exit_now(0)
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
