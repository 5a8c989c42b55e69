"""Live ReLU units of a running fleet's networks, from the weights its learner pushes.

Every `--interval_s` the probe pulls the newest weights from the replay server's variable table
and runs the agent's networks on `--num_observations` observations of the task (random play,
seeded). For each convolution and dense layer of each network's torso it prints the share of
units (position and channel) that fire on at least one observation. A layer whose share falls
to zero and stays there is dead: it gets no gradient back, and the network's output no longer
depends on its input.

  python -m bench.live_units --server=localhost:PORT --gin_file=gin/ppo_pong.gin \
      --weights_key_file=RUN/weights.key [--gin_bindings=...] [--duration_s=300] [--interval_s=20]

The gin file and bindings must be the fleet's, and the key its run's. Lines: `train_step=N <network> live=a/b/c/d`.
"""

import argparse
import time

import numpy as np

import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-order

from common import builders  # pylint: disable=g-import-not-at-top
from common import config
from common import gin_config
from common import environments
from common import session as session_lib
from common import variables as variables_lib
from common import weights_key


def observations(count: int, seed: int) -> np.ndarray:
  """`count` observations of the gin-configured task under random play, every 4th step."""
  env = environments.make_environment(seed=seed)
  rng = np.random.default_rng(seed)
  spec = env.action_spec()
  time_step, seen = env.reset(), []
  while len(seen) < count:
    for _ in range(4):
      action = np.asarray(rng.integers(spec.minimum, spec.maximum + 1), spec.dtype)
      time_step = env.step(action)
    seen.append(time_step.observation)
  env.close()
  return np.stack(seen)


def live_shares(encoder, batch: tf.Tensor) -> list:
  """Per convolution and dense layer of `encoder`: the share of units firing on any input."""
  shares, x = [], batch
  for layer in encoder.layers:
    x = layer(x)
    if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
      units = x.numpy().reshape(x.shape[0], -1)
      shares.append(float((units.max(axis=0) > 0).mean()))
  return shares


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--server', required=True, help='host:port of the fleet\'s replay server')
  parser.add_argument('--gin_file', required=True)
  parser.add_argument('--gin_bindings', action='append', default=[])
  parser.add_argument('--weights_key_file', required=True, help='the run\'s weights.key')
  parser.add_argument('--duration_s', type=float, default=300.0)
  parser.add_argument('--interval_s', type=float, default=20.0)
  parser.add_argument('--num_observations', type=int, default=32)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  gin_config.load_gin([args.gin_file], args.gin_bindings)
  built = builders.build(config.ReplayConfig())
  batch = tf.constant(observations(args.num_observations, args.seed))
  client = variables_lib.VariableClient(
      session_lib.unchecked(args.server), built.variables,
      weights_key.Signer(weights_key.read(args.weights_key_file)))
  # pylint: disable=protected-access
  networks = {'policy': built.agent._actor_net, 'value': built.agent._value_net}
  deadline = time.monotonic() + args.duration_s
  while time.monotonic() < deadline:
    step = client.pull()
    if step is None:
      print(f'no weights at {args.server} within the pull timeout', flush=True)
    else:
      line = [f'train_step={step}']
      for name, net in networks.items():
        encoder = getattr(net, '_encoder', None)
        if encoder is not None:
          line.append(f'{name} live=' + '/'.join(f'{s:.2f}' for s in live_shares(encoder,
                                                                                   batch)))
      print(' '.join(line), flush=True)
    time.sleep(max(0.0, min(args.interval_s, deadline - time.monotonic())))


if __name__ == '__main__':
  main()
