r"""The fleet at a glance, from its replay server, without TensorFlow.

  reverb-fleet status localhost:8008                      # one view, in under 2 s
  reverb-fleet status localhost:8008 --root_dir=runs/cp   # ... with the last eval return
  reverb-fleet status localhost:8008 --watch              # refreshed in place every 2 s
  docker-compose exec replay_server python -m launcher.container status   # (its entrypoint)

It shows the replay table's size and fill; inserts/s and samples/s over the last `--window_s`
(two ServerInfo calls that far apart; in --watch mode, over the refresh interval); the
samples-per-insert ratio against the rate limiter's target and its error window; the learner's
train step (the variable table's item carries it as its priority); each actor's policy lag (the
learner's step minus the step of the weights the actor collects with, from the status records
the actors publish when new weights arrive, `replay.publish_status`); and, with --root_dir, the
last eval return. With --root_dir of a local run, whose fleet is closed in a network namespace
of its own (`launcher.closed_network`), the view joins that namespace first.

Everything is read with `common.reverb_rpc` (plain gRPC). Exit status: 0, or 1 when no server
answers (the line says so), 2 on a bad flag.
"""

import common  # pylint: disable=unused-import  (the quiet console)

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, TextIO

from absl import app
from absl import flags

from common import constants
from common import eval_log
from common import main_utils
from common import reverb_rpc
from common.errors import UserError

flags.DEFINE_string('root_dir', None, 'Run directory of the fleet, for the last eval return '
                    '(root_dir/eval/eval.csv), and to join a local run\'s closed network; '
                    'optional.')
flags.DEFINE_bool('watch', False, 'Refresh the view in place until Ctrl-C.')
flags.DEFINE_float('interval_s', 2.0, '--watch: seconds between refreshes.', lower_bound=0.1)
flags.DEFINE_float('window_s', 0.5, 'Seconds between the two reads that give the rates.',
                   lower_bound=0.0)
flags.DEFINE_float('timeout_s', 1.5, 'Deadline of each call to the server.', lower_bound=0.1)
FLAGS = flags.FLAGS

_STATUS_SAMPLES = 4 * constants.STATUS_TABLE_SIZE  # Sampled with replacement: see _actors.
_STALE_S = 60.0  # An actor whose newest record is older than this is shown as silent.


@dataclasses.dataclass
class Snapshot:
  """What one look at the server found; `previous` is the look `window_s` before."""
  address: str
  time: float
  tables: Dict[str, reverb_rpc.TableInfo]
  previous_time: float
  previous: Dict[str, reverb_rpc.TableInfo]
  train_step: Optional[int]
  weights_age_s: Optional[float]
  actors: List[dict]


def look(address: str, previous: Optional[Snapshot] = None, window_s: float = 1.0,
         timeout_s: float = 1.5) -> Snapshot:
  """Reads the server; without `previous`, reads its tables twice, `window_s` apart.

  Raises:
    reverb_rpc.RpcError: the server did not answer.
  """
  if previous is None:
    first_time, first = time.time(), reverb_rpc.server_info(address, timeout_s)
  else:
    first_time, first = previous.time, previous.tables
  train_step = weights_age_s = None
  if constants.VARIABLE_TABLE in first:
    items = reverb_rpc.sample(address, constants.VARIABLE_TABLE, 1, timeout_s)
    if items:
      train_step = int(items[0].priority)
      weights_age_s = max(time.time() - items[0].inserted_at_s, 0.0)
  actors = []
  if constants.STATUS_TABLE in first:
    actors = _actors(reverb_rpc.sample(address, constants.STATUS_TABLE, _STATUS_SAMPLES,
                                       timeout_s))
  if previous is None:  # The samples above took part of the window already.
    time.sleep(max(window_s - (time.time() - first_time), 0.0))
  now, tables = time.time(), reverb_rpc.server_info(address, timeout_s)
  return Snapshot(address, now, tables, first_time, first, train_step, weights_age_s, actors)


def _actors(items: List[reverb_rpc.SampledItem]) -> List[dict]:
  """The newest record of each actor among the sampled ones.

  The table holds the newest STATUS_TABLE_SIZE records; sampling 4x that many with replacement
  misses a given record with probability e^-4 (under 2%), and an actor publishes one when new
  weights arrive and every `ActorConfig.log_interval_s`, so its newest sampled record is at
  most a few pushes old.
  """
  newest: Dict[int, dict] = {}
  for item in items:
    for text in item.strings:
      try:
        record = json.loads(text)
      except ValueError:
        continue
      if record.get('role') != 'actor' or 'task' not in record:
        continue
      task = int(record['task'])
      if task not in newest or record.get('time', 0) > newest[task].get('time', 0):
        newest[task] = record
  return [newest[task] for task in sorted(newest)]


def _rate(snapshot: Snapshot, table: str, field: str) -> Optional[float]:
  now, before = snapshot.tables.get(table), snapshot.previous.get(table)
  span = snapshot.time - snapshot.previous_time
  if now is None or before is None or span <= 0:
    return None
  return max(getattr(now.rate_limiter, field) - getattr(before.rate_limiter, field), 0) / span


def _number(value: float) -> str:
  return f'{value:,.0f}' if abs(value) >= 100 else f'{value:.3g}'


def _ratio_line(snapshot: Snapshot) -> str:
  table = snapshot.tables[constants.REPLAY_TABLE]
  limiter = table.rate_limiter
  inserts, samples = _rate(snapshot, table.name, 'inserts'), _rate(snapshot, table.name,
                                                                    'samples')
  window = f'{samples / inserts:.2f} now' if inserts and samples is not None else '- now'
  overall = (f'{limiter.samples / limiter.inserts:.2f} since the server started'
             if limiter.inserts else 'no inserts yet')
  if limiter.max_diff > 1e300 and limiter.min_diff < -1e300:
    limit = (f'no ratio limit (MinSize: sampling starts at {limiter.min_size_to_sample:,} '
             'items)')
  else:
    diff = limiter.inserts * limiter.samples_per_insert - limiter.samples
    if diff >= limiter.max_diff:
      state = 'inserts wait for the learner'
    elif diff <= limiter.min_diff:
      state = 'the learner waits for inserts'
    else:
      state = 'neither side waits'
    limit = (f'target {limiter.samples_per_insert:g}, window [{_number(limiter.min_diff)}, '
             f'{_number(limiter.max_diff)}] with {_number(diff)} now: {state}')
  return f'{window}, {overall}; {limit}'


def render(snapshot: Snapshot, root_dir: Optional[str] = None) -> str:
  """The view as text: one labelled line per fact, actors one line each."""
  when = time.strftime('%H:%M:%S', time.localtime(snapshot.time))
  lines = [f'reverb-fleet status {snapshot.address} at {when}']
  table = snapshot.tables.get(constants.REPLAY_TABLE)
  if table is None:
    lines.append(f'replay    no table {constants.REPLAY_TABLE!r} on this server (tables: '
                 f'{", ".join(sorted(snapshot.tables)) or "none"}): not a reverb-fleet server?')
  else:
    fill = 100.0 * table.current_size / table.max_size if table.max_size else 0.0
    span = snapshot.time - snapshot.previous_time
    inserts = _rate(snapshot, table.name, 'inserts')
    samples = _rate(snapshot, table.name, 'samples')
    lines.append(f'replay    {table.name}: {table.current_size:,} of {table.max_size:,} items '
                 f'({fill:.1f}% full)')
    lines.append(f'rates     inserts/s {_number(inserts or 0)}, samples/s '
                 f'{_number(samples or 0)} (over the last {span:.1f} s); '
                 f'{table.rate_limiter.inserts:,} inserted and {table.rate_limiter.samples:,} '
                 'sampled since the server started')
    lines.append(f'ratio     samples per insert: {_ratio_line(snapshot)}')
  if snapshot.train_step is None:
    lines.append('learner   no weights pushed yet')
  else:
    lines.append(f'learner   train_step {snapshot.train_step:,} (weights pushed '
                 f'{snapshot.weights_age_s:.0f} s ago)')
  if not snapshot.actors:
    lines.append('actors    no status records (actors publish one when new weights arrive and '
                 'every ActorConfig.log_interval_s)')
  else:
    lags = [snapshot.train_step - a['weights_step'] for a in snapshot.actors
            if snapshot.train_step is not None and a.get('weights_step', -1) >= 0]
    live = [a for a in snapshot.actors if snapshot.time - a.get('time', 0) <= _STALE_S]
    summary = f'{len(live)} reporting'
    if len(live) < len(snapshot.actors):
      summary += f', {len(snapshot.actors) - len(live)} silent for over {_STALE_S:.0f} s'
    summary += f', {_number(sum(a.get("env_steps_per_s", 0) for a in live))} env steps/s'
    if lags:
      summary += (f'; policy lag (train steps) min {min(lags)}, median '
                  f'{statistics.median(lags):g}, max {max(lags)}')
    lines.append(f'actors    {summary}')
    for actor in snapshot.actors:
      step = actor.get('weights_step', -1)
      if step < 0:
        lag = 'random policy (no weights yet)'
      elif snapshot.train_step is None:
        lag = f'weights of step {step}'
      else:
        lag = f'policy lag {snapshot.train_step - step} (weights of step {step})'
      age = snapshot.time - actor.get('time', 0)
      refused = actor.get('weights_refused', 0)
      refused = (f', REFUSED {refused} weight item(s) not signed with the run\'s key'
                 if refused else '')
      lines.append(f'  actor {actor["task"]:<3} {lag}, {actor.get("env_steps", 0):,} env steps, '
                   f'{_number(actor.get("env_steps_per_s", 0))}/s, reported {age:.0f} s ago'
                   f'{refused}')
  if root_dir:
    path = os.path.join(root_dir, constants.EVAL_CSV)
    rows = eval_log.read_csv(path)
    if rows:
      last = rows[-1]
      age = snapshot.time - os.path.getmtime(path)
      lines.append(f'eval      return {last["average_return"]:.1f} at train step '
                   f'{int(last["train_step"]):,} ({age:.0f} s ago, {len(rows)} evaluations)')
    else:
      lines.append(f'eval      no evaluation yet in {path}')
  return '\n'.join(lines)


def watch(address: str, root_dir: Optional[str], interval_s: float, window_s: float,
          timeout_s: float, out: TextIO = sys.stdout) -> None:
  """Redraws the view every `interval_s` until Ctrl-C; a terminal is redrawn in place."""
  tty = out.isatty()
  snapshot = None
  while True:
    try:
      snapshot = look(address, snapshot, window_s, timeout_s)
      text = render(snapshot, root_dir)
    except reverb_rpc.RpcError as e:
      snapshot = None
      text = f'reverb-fleet status {address}: {e} (still trying; Ctrl-C to stop)'
    out.write(('\x1b[H\x1b[2J' if tty else '\n') + text + '\n')
    out.flush()
    time.sleep(interval_s)


def _join_closed_network(root_dir: str) -> None:
  """Joins the network namespace of the local launcher that runs `root_dir`, if it runs one
  (`launcher.closed_network`): its replay server answers there only."""
  from launcher import closed_network  # pylint: disable=g-import-not-at-top
  pid = closed_network.launcher_pid(root_dir)
  if pid is None:
    return
  try:
    closed_network.join(pid)
  except OSError as e:
    raise UserError(f'cannot join the closed network of the run in {root_dir} (its launcher, '
                    f'pid {pid}: {e.strerror}): run the status view as the launcher\'s user, '
                    'on its host') from None


def main(argv):
  def _run():
    if len(argv) != 2:
      raise UserError('give the replay server as HOST:PORT, for example '
                      '`reverb-fleet status localhost:8008`')
    from common import preflight  # pylint: disable=g-import-not-at-top
    preflight.check_address(argv[1])
    if FLAGS.interval_s <= 0 or FLAGS.window_s < 0 or FLAGS.timeout_s <= 0:
      raise UserError('--interval_s and --timeout_s must be > 0 and --window_s >= 0')
    if FLAGS.root_dir:
      _join_closed_network(FLAGS.root_dir)
    if FLAGS.watch:
      try:
        watch(argv[1], FLAGS.root_dir, FLAGS.interval_s, FLAGS.window_s, FLAGS.timeout_s)
      except KeyboardInterrupt:
        # Ctrl-C may land inside a gRPC call; tearing its channel down at interpreter exit can
        # then wait for ever, so the view ends without the teardown.
        main_utils.exit_now(0)
    try:
      snapshot = look(argv[1], window_s=FLAGS.window_s, timeout_s=FLAGS.timeout_s)
    except reverb_rpc.RpcError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
    print(render(snapshot, FLAGS.root_dir))
  main_utils.exit_on_error(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=main_utils.parse_flags)
