"""The actor's env steps/s with a recurrent policy, against the same actor with a feed-forward
policy of about the same size, on the same task.

For each pair, each actor (`python -m actor.main`) runs against its own in-process replay server,
holding that agent's tables and its initial weights; the feed-forward actor is the recurrent
gin file with its agent switched (`FEED_FORWARD`), so that the environments, the batch and
every ActorConfig value are the same. The two take turns, `--rounds` windows each, the other one
paused with SIGSTOP, and each figure is the median of its windows. A window's rate is the
actor's own env-step count (its log lines, one a second) over the window, so items of different
lengths count alike. On-policy actors hand each item to the learner's queue before they go on:
here a thread drains the queue, so that they never wait for it.

  python -m bench.recurrent_actor [--pairs=dqn,ppo] [--window_s=8] [--rounds=3] [--out=FILE.json]
"""

import argparse
import datetime
import os
import re
import statistics
import tempfile
import threading
import time

from bench import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECURRENT_GIN = {
    'dqn': os.path.join(REPO, 'gin', 'dqn_rnn_cartpole_no_velocity.gin'),
    'ppo': os.path.join(REPO, 'gin', 'ppo_rnn_cartpole_no_velocity.gin'),
}
# The feed-forward twin of each recurrent agent: about as many weights (the collect policy's,
# counted and reported with each record), the LSTM's width in a dense layer instead.
FEED_FORWARD = {
    'dqn': ('make_agent.agent_fn = @dqn_agent', 'dqn_agent.fc_layer_params = (50, 80, 20)',
            'dqn_agent.epsilon_greedy = 0.1'),
    'ppo': ('make_agent.agent_fn = @ppo_agent', 'ppo_agent.actor_fc_layer_params = (64, 256, 64)',
            'ppo_agent.value_fc_layer_params = (64, 256, 64)',
            'ppo_agent.collect_sequence_length = 128', 'ppo_agent.minibatch_size = 128'),
}
BINDINGS = {
    'dqn': ('ActorConfig.log_interval_s = 1.0',
            'ReplayConfig.samples_per_insert = None'),  # No learner: inserts are not held.
    'ppo': ('ActorConfig.log_interval_s = 1.0',),
}
_LINE = re.compile(r'I\d{4} (\d\d:\d\d:\d\d\.\d+) .*: env_steps=(\d+) env_steps/s=')


def _steps_log(actor) -> list:
  """(seconds of the day, cumulative env steps) of each of the actor's log lines."""
  points = []
  for clock, steps in _LINE.findall(actor.log_text()):
    t = datetime.datetime.strptime(clock, '%H:%M:%S.%f')
    points.append((t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6, int(steps)))
  return points


def _window(actor, window_s: float) -> float:
  """The actor's env steps/s between its first and last log lines of a `window_s` window."""
  seen = len(_steps_log(actor))
  harness.wait_for(lambda: len(_steps_log(actor)) > seen, 30, f'a log line of {actor.name}')
  start = len(_steps_log(actor)) - 1
  time.sleep(window_s)
  points = _steps_log(actor)[start:]
  if len(points) < 2 or points[-1][0] <= points[0][0]:
    raise RuntimeError(f'{actor.name}: fewer than two log lines in a {window_s:g} s window')
  return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def _policy_weights(agent) -> int:
  return int(sum(v.shape.num_elements() for v in agent.collect_policy.variables()
                 if v.dtype.is_floating and v.trainable))


def _drain(address: str, stop: threading.Event) -> None:
  """Takes every item from an on-policy queue as it arrives (the learner's part)."""
  import reverb  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  client = reverb.Client(address)
  while not stop.is_set():
    try:
      for _ in client.sample(constants.REPLAY_TABLE, num_samples=64):
        pass
    except Exception:  # pylint: disable=broad-except
      if stop.is_set():
        return
      raise


def bench_pair(pair: str, window_s: float, rounds: int, startup_timeout_s: float) -> dict:
  # pylint: disable=g-import-not-at-top
  from common import builders  # noqa: F401  pylint: disable=unused-import  (the configurables)
  from common import gin_config
  from common.config import ActorConfig
  recurrent_gin = RECURRENT_GIN[pair]
  root = tempfile.mkdtemp(prefix=f'bench_recurrent_actor_{pair}_')
  stop = threading.Event()
  servers, children, sizes = {}, {}, {}
  try:
    for kind, extra in (('recurrent', ()), ('feed_forward', FEED_FORWARD[pair])):
      bindings = BINDINGS[pair] + extra
      gin_config.load_gin([recurrent_gin], list(bindings))
      num_envs = ActorConfig().num_envs
      server = servers[kind] = harness.ReplayServer()  # Its own tables, for its own specs.
      sizes[kind] = _policy_weights(server.agent)
      server.push_weights()
      if server.specs.family.is_queue:
        threading.Thread(target=_drain, args=(server.address, stop), daemon=True).start()
      children[kind] = harness.Child('actor.main', [f'--gin_file={recurrent_gin}'] + [
          f'--gin_bindings={b}' for b in bindings] + [
          f'--replay_server_address={server.address}', f'--root_dir={root}/{kind}',
          '--task=0'], os.path.join(root, f'{kind}.log'))
    for child in children.values():
      harness.wait_for(lambda c=child: len(_steps_log(c)) >= 3, startup_timeout_s,
                       f'{child.name} collecting')
    windows = {kind: [] for kind in children}
    for _ in range(rounds):
      for kind, other in (('recurrent', 'feed_forward'), ('feed_forward', 'recurrent')):
        children[other].pause()
        children[kind].resume()
        windows[kind].append(_window(children[kind], window_s))
    rates = {kind: statistics.median(w) for kind, w in windows.items()}
    harness.log(f'{pair}: recurrent={rates["recurrent"]:.0f} feed-forward='
                f'{rates["feed_forward"]:.0f} env steps/s (windows {windows})')
  finally:
    stop.set()
    for child in children.values():
      child.resume()
    harness.stop_all(list(children.values()))
    for server in servers.values():
      server.stop()
  return harness.emit(harness.make_record(
      'actor env steps/s, recurrent policy vs feed-forward', rates['recurrent'],
      'env steps/s', os.path.basename(recurrent_gin)[:-len('.gin')],
      stock=rates['feed_forward'], versus='the same actor, feed-forward policy',
      recurrent_weights=sizes['recurrent'], feed_forward_weights=sizes['feed_forward'],
      num_envs=num_envs, window_s=window_s, rounds=rounds, recurrent_windows=windows['recurrent'],
      feed_forward_windows=windows['feed_forward'], cores=os.cpu_count()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--pairs', default='dqn,ppo')
  parser.add_argument('--window_s', type=float, default=8.0)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--startup_timeout_s', type=float, default=180.0)
  parser.add_argument('--out', default='', help='Also write the records, the command, the date '
                      'and the machine to this JSON file.')
  args = parser.parse_args(argv)
  records = [bench_pair(pair, args.window_s, args.rounds, args.startup_timeout_s)
             for pair in args.pairs.split(',')]
  if args.out:
    harness.write_results(args.out, 'bench.recurrent_actor', argv, records)


if __name__ == '__main__':
  main()
