"""Actor throughput against a real replay server: ours alone and beside a learner, and stock.

Per task, with an in-process replay server holding the task's tables:

  1. our actor (`python -m actor.main`, the shipped gin file) collects with the random policy
     (no weights pushed yet), then with the learned policy after one weight push: "alone";
     then the same actor with `ActorConfig.inference='tf'` (the TensorFlow policy call instead
     of the default, the NumPy forward pass where there is one), alone as well;
  2. a learner (`python -m learner.main`) starts training from the table and pushes weights
     every `push_interval`; our actor and the stock collect job (bench/stock_collect.py:
     TF-Agents Actor, PyTFEagerPolicy, ReverbAddTrajectoryObserver, a weight pull after every
     step) then take turns beside it, `--rounds` windows each, the other one paused with
     SIGSTOP: "beside a learner", the median of each one's windows.

Rates are items inserted into the replay table per second over a window, measured at the server
for both actors (an item per env step, less one per episode: the ratios are unaffected). The raw
env rate is measured here, just before the actor's windows (or read from bench/env_rate.py's
--json_out with --raw_rates), so that the load of a shared machine is about the same for both.

  python -m bench.actor_bench [--tasks=dqn_cartpole_fast,sac_minitaur,sac_halfcheetah] [--window_s=4]
      [--rounds=3]
"""

import argparse
import json
import os
import re
import statistics
import tempfile

from bench import env_rate
from bench import harness
from bench import stock_collect

# Bench overrides: a small warm-up so the learner trains within seconds; no insert limiter (a
# SampleToInsertRatio would hold the actor to the learner's pace); no checkpoints or policy
# exports (their cost is the same for both actors and only adds noise); frequent logs.
BINDINGS = (
    'ReplayConfig.min_size = 500',
    'ReplayConfig.samples_per_insert = None',  # Measure the actor, not the learner's pace.
    'LearnerConfig.checkpoint_interval = 100000000',
    'LearnerConfig.policy_export_interval = 100000000',
    'LearnerConfig.log_interval = 50',
    'ActorConfig.log_interval_s = 2.0',
)
# Targets of our actor beside a learner, as a multiple of the stock collect job there.
BESIDE_TARGET = {'dqn_cartpole': 5.0, 'dqn_cartpole_fast': 5.0, 'sac_minitaur': 2.0, 'sac_halfcheetah': 4.0}
LEARNED_TARGET = 0.8  # Of the random-policy rate (SAC tasks).
# Of the raw env.step rate, with the learned policy (issue targets: cheap CartPole 0.3x).
RAW_TARGET = {'dqn_cartpole': 0.3, 'dqn_cartpole_fast': 0.3, 'sac_minitaur': 0.9,
              'sac_halfcheetah': 0.8}
_RESETS = re.compile(r'env_resets=(\d+)%')


def _gin_args(task):
  return [f'--gin_file={harness.GIN[task]}'] + [f'--gin_bindings={b}' for b in BINDINGS]


def _window_with_resets(server, actor, window_s: float):
  """(items/s over the window, the actor's mean `env_resets` share logged in it, or None)."""
  logged = len(actor.log_text())
  rate = harness.rate(server.inserted, window_s)
  shares = [float(m) / 100 for m in _RESETS.findall(actor.log_text()[logged:])]
  return rate, (sum(shares) / len(shares) if shares else None)


def bench_task(task: str, window_s: float, raw_rates: dict, startup_timeout_s: float,
               rounds: int = 3):
  env_name = harness.TASK_ENV[task]
  harness.load_task(task, BINDINGS)
  from common.config import ActorConfig  # pylint: disable=g-import-not-at-top
  num_envs = ActorConfig().num_envs
  raw = raw_rates.get(env_name)
  if raw is None:
    raw = env_rate.measure(env_name, window_s, harness.TASK_SUITE.get(task, 'gym'))[0]
  root = tempfile.mkdtemp(prefix=f'bench_actor_{task}_')
  server = harness.ReplayServer()
  # env.step under the actions of the weights the actor will get (server.push_weights).
  policy_raw = (env_rate.policy_action_rate(server.agent, window_s)
                if task.startswith('sac_') else None)
  children = []
  try:
    address = server.address
    go_file = os.path.join(root, 'go')
    ours = harness.Child('actor.main', _gin_args(task) + [
        f'--replay_server_address={address}', f'--root_dir={root}/ours', '--task=0'],
        os.path.join(root, 'ours.log'))
    children.append(ours)
    stock = harness.Child('bench.stock_collect', [
        f'--task={task}', f'--address={address}', f'--root_dir={root}/stock',
        f'--go_file={go_file}'] + [f'--bindings={b}' for b in BINDINGS],
        os.path.join(root, 'stock.log'))
    children.append(stock)
    harness.wait_for(lambda: server.inserted() > 0, startup_timeout_s, f'{task}: our actor')
    rates, resets = {}, {}
    harness.rate(server.inserted, 1.0)  # Past the first policy traces.
    rates['random'], resets['random'] = _window_with_resets(server, ours, window_s)
    server.push_weights()
    ours.wait_line('first weights arrived', startup_timeout_s)
    harness.rate(server.inserted, 1.0)
    rates['learned'], resets['learned'] = _window_with_resets(server, ours, window_s)
    # The same actor with the TensorFlow policy call (ActorConfig.inference='tf'), alone too:
    # ours is paused meanwhile, so the two windows see the same machine.
    ours.pause()
    ours_tf = harness.Child('actor.main', _gin_args(task) + [
        "--gin_bindings=ActorConfig.inference='tf'", f'--replay_server_address={address}',
        f'--root_dir={root}/ours_tf', '--task=1'], os.path.join(root, 'ours_tf.log'))
    children.append(ours_tf)
    ours_tf.wait_line('first weights arrived', startup_timeout_s)
    harness.rate(server.inserted, 1.0)
    rates['learned_tf'] = harness.rate(server.inserted, window_s)
    ours_tf.stop()
    children.remove(ours_tf)
    ours.resume()
    harness.log(f'{task}: ours alone random={rates["random"]:.0f} '
                f'learned={rates["learned"]:.0f} learned with TF inference='
                f'{rates["learned_tf"]:.0f} items/s; starting the learner')
    learner = harness.Child('learner.main', _gin_args(task) + [
        f'--replay_server_address={address}', f'--root_dir={root}/learner'],
        os.path.join(root, 'learner.log'), gpu=True)
    children.append(learner)
    learner.wait_line('learner: train_step=', startup_timeout_s)
    # Both actors beside the same learner, one at a time: the other is paused (SIGSTOP), and
    # the windows alternate so that both see the learner in the same phases (tracing, the
    # first pushes, steady training). Each figure is the median of its windows.
    with open(go_file, 'w'):
      pass
    stock.wait_line(stock_collect.COLLECTING_LINE, startup_timeout_s)
    harness.rate(server.inserted, 1.0)  # Past the stock policy's first traces.
    beside, stock_rates = [], []
    for _ in range(rounds):
      for running, paused, out in ((ours, stock, beside), (stock, ours, stock_rates)):
        paused.pause()
        running.resume()
        harness.rate(server.inserted, 1.0)  # Settle: in-flight items of the paused one land.
        out.append(harness.rate(server.inserted, window_s))
    rates['beside'] = statistics.median(beside)
    rates['stock'] = statistics.median(stock_rates)
    harness.log(f'{task}: beside the learner ours={rates["beside"]:.0f} '
                f'stock={rates["stock"]:.0f} items/s (medians of '
                f'{", ".join(f"{r:.0f}" for r in beside)} and '
                f'{", ".join(f"{r:.0f}" for r in stock_rates)})')
  finally:
    harness.stop_all(children)
    server.stop()
  detail = dict(num_envs=num_envs, window_s=window_s, cores=os.cpu_count())
  beside_detail = dict(detail, rounds=rounds, ours_windows=beside, stock_windows=stock_rates)
  sac = task.startswith('sac_')
  harness.emit(harness.make_record(
      'actor env steps/s, random policy, alone', rates['random'], 'env steps/s', task, **detail))
  harness.emit(harness.make_record(
      'actor env steps/s, learned policy, alone', rates['learned'], 'env steps/s', task,
      stock=raw, versus='raw env.step', target=RAW_TARGET.get(task), **detail))
  harness.emit(harness.make_record(
      'actor env steps/s, learned policy, alone, default inference vs TF', rates['learned'],
      'env steps/s', task, stock=rates['learned_tf'],
      versus="the same actor with ActorConfig.inference='tf'", **detail))
  if policy_raw:
    # The same, against env.step under the untrained policy's own actions (the weights the
    # actor runs here), which cost the physics more than uniform random actions.
    harness.emit(harness.make_record(
        'actor env steps/s, learned policy, alone, vs env.step under its actions',
        rates['learned'], 'env steps/s', task, stock=policy_raw,
        versus='raw env.step, same policy\'s actions', **detail))
  harness.emit(harness.make_record(
      'actor learned / random policy rate', rates['learned'], 'env steps/s', task,
      stock=rates['random'], versus='our random policy',
      target=LEARNED_TARGET if sac else None, reset_share_learned=resets['learned'],
      reset_share_random=resets['random'], **detail))
  if None not in resets.values() and max(resets.values()) < 1:
    # The same two windows with the time spent in environment resets taken out: how much the
    # learned policy costs the actor, apart from how often it ends episodes.
    harness.emit(harness.make_record(
        'actor learned / random policy rate, env resets excluded',
        rates['learned'] / (1 - resets['learned']), 'env steps/s', task,
        stock=rates['random'] / (1 - resets['random']), versus='our random policy',
        reset_share_learned=resets['learned'], reset_share_random=resets['random'], **detail))
  harness.emit(harness.make_record(
      'actor env steps/s beside learner + server', rates['beside'], 'env steps/s', task,
      stock=rates['stock'], target=BESIDE_TARGET.get(task), **beside_detail))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tasks', default='dqn_cartpole_fast,sac_minitaur,sac_halfcheetah')
  parser.add_argument('--window_s', type=float, default=4.0)
  parser.add_argument('--raw_rates', default='', help='JSON from bench.env_rate --json_out.')
  parser.add_argument('--startup_timeout_s', type=float, default=180.0)
  parser.add_argument('--rounds', type=int, default=3,
                      help='Alternating windows of ours and the stock job beside the learner.')
  args = parser.parse_args(argv)
  raw_rates = {}
  if args.raw_rates and os.path.exists(args.raw_rates):
    with open(args.raw_rates) as f:
      raw_rates = json.load(f)
  for task in args.tasks.split(','):
    bench_task(task, args.window_s, raw_rates, args.startup_timeout_s, args.rounds)


if __name__ == '__main__':
  main()
