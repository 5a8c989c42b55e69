r"""Runs everything locally: replay server, actors, learner and eval as child processes.

  reverb-fleet run                              # DQN CartPole-v0, 1 actor, until return 195
  python -m launcher.main                       # the same
  python -m launcher.main --gin_file=gin/sac_inverted_pendulum.gin --num_actors=1

This process imports no TensorFlow: the children check the config while they start, and wait
for its go before writing anything (`local.run_local`).
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

import os
import sys

from absl import app
from absl import flags
import portpicker

from common import console
from common import main_utils
from launcher import closed_network
from launcher import local

flags.DEFINE_multi_string('gin_file', ['gin/dqn_cartpole_fast.gin'], 'Gin files (see gin/); the '
                          'default is the fastest measured way to solve CartPole (see the file).')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, passed to every process.')
flags.DEFINE_string('root_dir', 'runs/dqn_cartpole', 'Run directory (resumed if it exists).')
flags.DEFINE_integer('num_actors', 1, 'Collect actors to start (one actor of 8 environments is the '
                     'fastest measured CartPole default on 2 cores).', lower_bound=1)
flags.DEFINE_integer('port', 0, 'Replay server port (0: a free one).',
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_float('budget_s', 1800.0, 'Wall-clock budget in seconds (0: none).', lower_bound=0.0)
flags.DEFINE_integer('max_train_steps', 0, 'Learner train-step budget (0: none).', lower_bound=0)
flags.DEFINE_float('server_timeout_s', 300.0, 'Passed to every child (see actor.main).',
                   lower_bound=0.0)
flags.DEFINE_enum('network', 'closed', ['closed', 'host'],
                  'closed: the fleet runs in a network namespace of its own, reachable from this '
                  'launcher only (`reverb-fleet status ... --root_dir` joins it); host: on the '
                  'host\'s network, where its replay server answers anyone who reaches the port '
                  '(docs/security.md).')
flags.DEFINE_string('learner_gpus', 'all', 'GPUs the learner runs MirroredStrategy over: all '
                    '(every GPU this shell sees), none, or a number N (the first N of them; '
                    'CUDA_VISIBLE_DEVICES picks which). The replay server, the actors and eval '
                    'see no GPU.')
FLAGS = flags.FLAGS


def main(_):
  console.start(FLAGS['verbosity'].present)

  def _run():
    learner_gpus = local.learner_devices(FLAGS.learner_gpus,
                                         os.environ.get('CUDA_VISIBLE_DEVICES'))
    from common import files  # pylint: disable=g-import-not-at-top
    from common import gin_config  # pylint: disable=g-import-not-at-top
    from common import preflight  # pylint: disable=g-import-not-at-top
    # The default file is the project's, never one of the working directory's.
    gin_files = gin_config.resolve_gin_files(FLAGS.gin_file,
                                             project_only=not FLAGS['gin_file'].present)
    preflight.check_gin_syntax(gin_files, FLAGS.gin_bindings)
    root_dir = os.path.abspath(FLAGS.root_dir)  # The children run in the project directory.
    files.check_writable_dir(root_dir)
    network = _network()
    port = FLAGS.port or portpicker.pick_unused_port()
    from common import ownership  # pylint: disable=g-import-not-at-top
    sys.exit(local.run_local(gin_files, FLAGS.gin_bindings, root_dir, port,
                             FLAGS.num_actors, lambda: ownership.own(root_dir, 'local launcher'),
                             budget_s=FLAGS.budget_s,
                             max_train_steps=FLAGS.max_train_steps,
                             server_timeout_s=FLAGS.server_timeout_s,
                             learner_gpus=learner_gpus, notes=[network]))
  main_utils.exit_on_error(_run)


def _network() -> str:
  """Closes the fleet's network (`closed_network.enter`) unless --network=host; returns the
  line that says where the fleet listens."""
  if FLAGS.network == 'host':
    return ('[local] network: the host\'s (--network=host); the replay server answers anyone '
            'who reaches its port (docs/security.md)')
  why_not = closed_network.enter()
  if why_not is None:
    return ('[local] network: closed; the fleet is reachable from this launcher\'s own '
            'namespace only (reverb-fleet status joins it with --root_dir)')
  return (f'[local] network: NOT closed, the replay server answers anyone who reaches its '
          f'port: {why_not}. Allow unprivileged user namespaces, or pass --network=host to '
          'run open on purpose')


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
