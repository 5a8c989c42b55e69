r"""Starts the learner (`reverb-fleet learner`).

  python -m learner.main --gin_file=gin/dqn_cartpole.gin --replay_server_address=localhost:8008 \
      --root_dir=runs/cp
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags

from common import main_utils

main_utils.define_common_flags()
flags.DEFINE_integer('max_train_steps', 0, 'Stop at this train step (0: never).', lower_bound=0)
FLAGS = flags.FLAGS


def main(_):
  main_utils.start_process(uses_gpu=True)

  def _run():
    main_utils.preflight()
    from learner import train  # pylint: disable=g-import-not-at-top
    configs = main_utils.load_and_check_config()
    stop = main_utils.stop_event_on_signals()
    train.run_learner(FLAGS.root_dir, FLAGS.replay_server_address, configs,
                      max_train_steps=FLAGS.max_train_steps,
                      server_timeout_s=FLAGS.server_timeout_s, stop_event=stop,
                      weights_key_file=FLAGS.weights_key_file)
    main_utils.exit_now(0)  # Everything is saved; see `train.RETIRED_ITERATORS`.
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
