r"""Runs the fleet on a Ray cluster: the replay server, the learner, N actors and eval.

  python -m launcher.ray --address=HEAD:6379 --gin_file=gin/dqn_cartpole.gin --num_actors=16 \
      --root_dir=/data/runs/cp [--server_resource=reverb_server --learner_resource=reverb_learner
      --actor_resource=reverb_actor]
  python -m launcher.ray --address=local ...        # a throwaway one-machine cluster, to try it
  python -m launcher.ray attach --address=HEAD:6379 # the status view of a running fleet again
  python -m launcher.ray scale  --address=HEAD:6379 --num_actors=32
  python -m launcher.ray status --address=HEAD:6379 # where each role runs, its restarts
  python -m launcher.ray stop   --address=HEAD:6379

The fleet is detached (see launcher/cluster.py): Ctrl-C on `run` stops it, Ctrl-C on `attach`
only detaches, and a `run` command that dies leaves a fleet that still ends at its budget.
`--name` tells fleets on one cluster apart.
"""

import common  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

import dataclasses
import json
import os
import signal
import sys
import threading
import time

from absl import app
from absl import flags

from common import config
from common import gin_config
from common import main_utils
from common.errors import UserError

_COMMANDS = ('run', 'attach', 'scale', 'status', 'stop')

flags.DEFINE_string('address', 'local', 'Ray cluster address (HEAD:PORT, or auto); local: a '
                    'throwaway cluster on this machine that lives as long as this command.')
flags.DEFINE_string('name', 'fleet', 'Name of the fleet on the cluster.')
flags.DEFINE_float('connect_timeout_s', 60.0, 'Deadline for reaching the Ray cluster at '
                   '--address.', lower_bound=1.0)
flags.DEFINE_multi_string('gin_file', ['gin/dqn_cartpole.gin'], 'Gin files (see gin/); read '
                          'here and shipped to the nodes.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, passed to every process.')
flags.DEFINE_string('root_dir', 'runs/dqn_cartpole', 'Run directory, on each node\'s own disk '
                    '(or a shared filesystem).')
flags.DEFINE_integer('num_actors', 2, 'Collect actors (run), or the new count (scale).',
                     lower_bound=0)
flags.DEFINE_float('budget_s', 1800.0, 'Wall-clock budget in seconds (0: none).', lower_bound=0.0)
flags.DEFINE_integer('max_train_steps', 0, 'Learner train-step budget (0: none).', lower_bound=0)
flags.DEFINE_float('server_timeout_s', 300.0, 'Passed to every client role.', lower_bound=0.0)
flags.DEFINE_integer('port', 0, 'Replay server port (0: a free one on its node, kept across '
                     'its restarts).', lower_bound=0, upper_bound=65535)
flags.DEFINE_float('learner_gpus', 0, 'GPUs the learner asks Ray for; MirroredStrategy runs '
                   'over them.', lower_bound=0.0)
flags.DEFINE_float('actor_cpus', 1, 'Logical CPUs each actor and eval ask Ray for.',
                   lower_bound=0.0)
flags.DEFINE_string('server_resource', '', 'Custom Ray resource of the node that runs the replay '
                    'server (empty: the head node).')
flags.DEFINE_string('learner_resource', '', 'Custom Ray resource of the node that runs the '
                    'learner (empty: the head node).')
flags.DEFINE_string('actor_resource', '', 'Custom Ray resource of the nodes the actors and eval '
                    'may run on (empty: any node with room for --actor_cpus).')
flags.DEFINE_float('checkpoint_interval_s', 60.0, 'Seconds between replay checkpoints.',
                   lower_bound=0.0)
flags.DEFINE_bool('detach', False, 'run: start the fleet and return at once.')
FLAGS = flags.FLAGS


def _spec(cluster, gin_files, target_return):
  """The fleet's spec from the flags, the gin files' (name, text) and the task's target return
  (`EvalConfig.target_return` of the gin config, loaded and checked before)."""
  return cluster.FleetSpec(
      name=FLAGS.name, gin_files=gin_files,
      gin_bindings=tuple(FLAGS.gin_bindings), root_dir=FLAGS.root_dir,
      num_actors=FLAGS.num_actors, budget_s=FLAGS.budget_s,
      max_train_steps=FLAGS.max_train_steps, target_return=target_return,
      server_timeout_s=FLAGS.server_timeout_s, port=FLAGS.port,
      server_resource=FLAGS.server_resource, learner_resource=FLAGS.learner_resource,
      actor_resource=FLAGS.actor_resource, learner_gpus=FLAGS.learner_gpus,
      actor_cpus=FLAGS.actor_cpus,
      checkpoint_interval_s=FLAGS.checkpoint_interval_s)


def _weights_key() -> bytes:
  """$REVERB_FLEET_WEIGHTS_KEY (a Kubernetes Secret, say), else the launch machine's
  <root_dir>/weights.key, made when missing, so that a resumed run keeps its key."""
  from common import weights_key  # pylint: disable=g-import-not-at-top
  key = weights_key.from_environment()
  return key if key is not None else weights_key.ensure(
      weights_key.default_path(FLAGS.root_dir))


def _controller(cluster):
  try:
    return cluster.controller(FLAGS.name)
  except ValueError:
    raise UserError(f'no fleet named {FLAGS.name!r} runs on the cluster at {FLAGS.address}: '
                    'start one with `python -m launcher.ray`, or pass its --name') from None


def _exists(cluster, name: str) -> bool:
  try:
    cluster.controller(name)
    return True
  except ValueError:
    return False


def _interrupt_event() -> threading.Event:
  event = threading.Event()
  signal.signal(signal.SIGINT, lambda *_: event.set())
  signal.signal(signal.SIGTERM, lambda *_: event.set())
  return event


def main(argv):
  command = argv[1] if len(argv) > 1 else 'run'

  def _run():
    if command not in _COMMANDS or len(argv) > 2:
      raise UserError(f'unknown command {" ".join(argv[1:])!r}: use one of '
                      f'{", ".join(_COMMANDS)}')
    if FLAGS.address == 'local':
      # A cluster this command starts always demands a token (`launcher.ray_auth`); said before
      # Ray is imported, so Ray does not warn that it turned that on, nor offer to turn it off.
      os.environ.setdefault('RAY_AUTH_MODE', 'token')
    # pylint: disable=g-import-not-at-top  (Ray only after the argument checks)
    import ray
    from launcher import cluster
    py_modules, gin_files, target_return = (), (), None
    if command == 'run':
      from common import builders
      from common import environments
      from common import weights_key
      # As `reverb-fleet run`: gin/... from any directory; the default is the project's own.
      gin_paths = gin_config.resolve_gin_files(FLAGS.gin_file,
                                               project_only=not FLAGS['gin_file'].present)
      gin_config.load_gin(gin_paths, FLAGS.gin_bindings)  # Bad input ends here, before Ray.
      # The environment (made, reset and stepped once), the agent's arguments and the item
      # length, as every role checks them.
      environments.check_environment()
      configs = config.validated_configs()
      builders.make_agent_and_specs(configs.replay)
      target_return = configs.eval.target_return
      weights_key.check(weights_key.default_path(FLAGS.root_dir))  # Made once Ray answers.
      gin_files = cluster.gin_texts(gin_paths)  # Read once: shipped in the spec too.
      py_modules = cluster.user_modules(gin_files,
                                        environments.bound_parameter('entry_point'),
                                        environments.bound_parameter('env_name'))
      for path in py_modules:
        print(f'[ray] the user module {path} travels with the run to every node', flush=True)
    needed = 2 + FLAGS.num_actors + 1  # Server, learner, actors and eval, 1 logical CPU each.
    try:
      cluster.connect(FLAGS.address, num_cpus=int(needed * max(FLAGS.actor_cpus, 1)),
                      timeout_s=FLAGS.connect_timeout_s, py_modules=py_modules)
    except ConnectionError as e:
      raise UserError(f'no Ray cluster answers at {FLAGS.address} ({e}): start one with '
                      '`ray start --head`, or pass --address=local') from None
    if command == 'run':
      if FLAGS.address == 'local' and FLAGS.detach:
        raise UserError('--detach needs a cluster that outlives this command: start one with '
                        '`ray start --head` and pass its --address')
      spec = _spec(cluster, gin_files, target_return)
      missing = cluster.missing_resources(spec)
      if missing:
        raise UserError(f'no node of the cluster offers the resource {missing[0]!r}: start '
                        f'that node with `ray start --resources=\'{{"{missing[0]}": 1}}\'`, or '
                        'leave the flag empty (the server and the learner then run on the head '
                        'node, the actors wherever they fit)')
      try:
        previous = cluster.controller(FLAGS.name)
      except ValueError:
        previous = None
      if previous is not None:
        if ray.get(previous.done.remote(), timeout=60) is None:
          raise UserError(f'a fleet named {FLAGS.name!r} already runs on this cluster: attach '
                          'to it, stop it, or pick another --name')
        ray.kill(previous, no_restart=True)  # A finished fleet waiting to be read: replaced.
        deadline = time.monotonic() + 60
        while _exists(cluster, FLAGS.name):
          if time.monotonic() > deadline:
            raise UserError(f'the finished fleet {FLAGS.name!r} did not go away within 60 s: '
                            'run `python -m launcher.ray stop`, or pick another --name')
          time.sleep(0.5)
      # Made (or read) only now that every check passed: a refused start leaves no file.
      spec = dataclasses.replace(spec, weights_key=_weights_key().hex())
      handle = cluster.start_fleet(spec)
      print(f'[ray] fleet {FLAGS.name} started on {FLAGS.address} '
            f'({len(ray.nodes())} nodes)', flush=True)
      if FLAGS.detach:
        return 0
      return cluster.watch(handle, FLAGS.budget_s, FLAGS.max_train_steps, sys.stdout,
                           stop_on_interrupt=True, interrupted=_interrupt_event())
    handle = _controller(cluster)
    if command == 'attach':
      snapshot = ray.get(handle.snapshot.remote(1 << 62), timeout=60)
      spec = snapshot['spec']
      return cluster.watch(handle, spec['budget_s'], spec['max_train_steps'], sys.stdout,
                           stop_on_interrupt=False, interrupted=_interrupt_event(),
                           elapsed_s=snapshot['elapsed_s'])
    if command == 'scale':
      print(f'[ray] {ray.get(handle.scale.remote(FLAGS.num_actors), timeout=600)}', flush=True)
      return 0
    if command == 'status':
      snapshot = ray.get(handle.snapshot.remote(1 << 62), timeout=60)
      for name, role in sorted(snapshot['roles'].items()):
        print(json.dumps(dict(name=name, node_ip=role['node_ip'], node_id=role['node_id'],
                              pid=role['pid'], restarts=role['restarts'], up=role['up'],
                              returncode=role['returncode'])), flush=True)
      return 0
    code, reason = cluster.stop(FLAGS.name, 'stopped by `launcher.ray stop`')
    print(f'[ray] fleet {FLAGS.name} stopped ({reason}); exit status {code}', flush=True)
    return 0

  main_utils.exit_on_error(lambda: sys.exit(_run()))


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
