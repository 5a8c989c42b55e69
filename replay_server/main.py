r"""Starts the replay server (`reverb-fleet server`).

  python -m replay_server.main --gin_file=gin/dqn_cartpole.gin --port=8008 --root_dir=runs/cp
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags

from common import constants
from common import main_utils

main_utils.define_common_flags(server_address=False)
flags.DEFINE_integer('port', constants.DEFAULT_PORT, 'gRPC port to serve on.',
                     lower_bound=1, upper_bound=65535)
flags.DEFINE_float('checkpoint_interval_s', 300.0,
                   'Seconds between replay checkpoints (0: only on stop).', lower_bound=0.0)
flags.DEFINE_integer('keep_checkpoints', 2, 'Complete replay checkpoints kept on disk: the '
                     'newest, and the ones before it to fall back on if it is unreadable.',
                     lower_bound=1)
flags.DEFINE_float('stop_grace_s', 120.0, 'Seconds the orchestrator waits after SIGTERM '
                   'before it kills the server (docker-compose\'s stop_grace_period); a replay '
                   'checkpoint that takes over half of it is warned about (0: no check).',
                   lower_bound=0.0)
FLAGS = flags.FLAGS


def main(_):
  main_utils.start_process()

  def _run():
    main_utils.preflight(port=FLAGS.port)
    from common import builders  # pylint: disable=g-import-not-at-top
    from common import replay  # pylint: disable=g-import-not-at-top
    from replay_server import server  # pylint: disable=g-import-not-at-top
    configs = main_utils.load_and_check_config(gate=False)
    # The agent's arguments are checked here, before the launcher's go: the tables' specs.
    _, specs = builders.make_agent_and_specs(configs.replay)
    main_utils.wait_for_start_gate(
        configs, report={'env_steps_per_item': replay.env_steps_per_item(specs)})
    stop = main_utils.stop_event_on_signals()
    server.serve(FLAGS.root_dir, FLAGS.port, configs, FLAGS.checkpoint_interval_s,
                 FLAGS.keep_checkpoints, stop_event=stop, stop_grace_s=FLAGS.stop_grace_s,
                 specs=specs)
    main_utils.exit_now(0)  # The final checkpoint is written and the server stopped.
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
