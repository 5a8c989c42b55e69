"""Chaos: the local fleet on one task for a stated time, with a random process kill -9'd every
few minutes and restarted at once (as `restart: always` would).

  python -m bench.chaos [--gin_file=gin/dqn_cartpole.gin] [--duration_s=7200]
      [--kill_every_s=300] [--num_actors=2] [--seed=0] [--out=bench/results/DATE-vm-chaos.json]

The fleet is `launcher.local.commands` (the processes and flags of `python -m launcher.main`),
each child started by this script with its output in a log file of its own. Every
`--kill_every_s` (+-20%), one of them, picked at random (an actor, the learner, the replay
server or eval), is killed with SIGKILL and started again with the same command. Reported:
- every kill, and whether the fleet recovered (and any process that ended on its own, which
  is restarted and counted as a failure): the restarted process back at work (an actor's
  next env-step line, the learner's next train-step line, eval's start line; for the replay
  server, the learner training again) and the learner's train step past its value at the kill;
- recovery times, median and max, per role and in all;
- train steps lost per learner kill: its last logged train step before the kill minus the
  step it resumed at (a lower bound: it logs every `LearnerConfig.log_interval` steps);
- the eval returns, and whether the run reached `EvalConfig.target_return`;
- the RSS of every process every 30 s, with its growth per hour (least squares, per
  incarnation, over the second half of its life, so start-up and first traces do not count);
- the disk used under the run directory over time.
Figures, not a test: see docs/fault_tolerance.md for a long run's.
"""

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

from bench import harness
from common import constants
from common import eval_log
from launcher import local
from launcher import processes

_TRAIN_STEP = re.compile(r'learner: train_step=(\d+)')
_RESUMED = re.compile(r'learner: (?:resumed|starting) at train step (\d+)')
_READY = {  # What a restarted process logs once it is back at work.
    'replay_server': re.compile(re.escape(constants.SERVER_READY_LINE)),
    'learner': _TRAIN_STEP,
    'actor': re.compile(r'env_steps=\d+ env_steps/s'),
    'eval': re.compile(r'eval: \d+ greedy episodes every'),
}
_SAMPLE_S = 30.0


def _read(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def _rss_mib(pid: int) -> Optional[float]:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _disk_mib(path: str) -> float:
  total = 0
  for directory, _, files in os.walk(path):
    for name in files:
      try:
        total += os.lstat(os.path.join(directory, name)).st_size
      except OSError:
        pass
  return total / 2**20


def _slope_per_hour(points: List[List[float]]) -> Optional[float]:
  """Least-squares slope of (seconds, MiB) points over their second half, in MiB per hour."""
  points = points[len(points) // 2:]
  if len(points) < 3:
    return None
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  mx, my = statistics.fmean(xs), statistics.fmean(ys)
  den = sum((x - mx) ** 2 for x in xs)
  return None if not den else 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


class Fleet:
  """The children of a local run, each restartable, with one log file per incarnation."""

  def __init__(self, commands, log_dir: str):
    self._argv = dict(commands)
    self._log_dir = log_dir
    self.children: Dict[str, processes.Process] = {}
    self.starts: Dict[str, int] = {}
    self.rss: Dict[str, List[List[float]]] = {}  # 'name#incarnation' -> [[t, MiB], ...]

  def log_path(self, name: str) -> str:
    return os.path.join(self._log_dir, f'{name.replace("/", "_")}.{self.starts[name]}.log')

  def log(self, name: str) -> str:
    return _read(self.log_path(name))

  def start(self, name: str) -> None:
    self.starts[name] = self.starts.get(name, -1) + 1
    self.children[name] = processes.Process(self._argv[name], name,
                                            log_path=self.log_path(name), die_with_parent=True)

  def kill(self, name: str) -> None:
    self.children[name].kill()

  def sample_rss(self, now: float) -> None:
    for name, child in self.children.items():
      mib = _rss_mib(child.pid)
      if mib is not None:
        self.rss.setdefault(f'{name}#{self.starts[name]}', []).append([round(now, 1),
                                                                         round(mib, 1)])

  def train_step(self) -> int:
    """The learner's newest train step in its current log (its resume step before that)."""
    text = self.log('learner')
    steps = _TRAIN_STEP.findall(text) or _RESUMED.findall(text)
    return int(steps[-1]) if steps else 0

  def stop(self) -> Dict[str, int]:
    return processes.stop_in_stages(self.children.values())


def _role(name: str) -> str:
  return 'actor' if name.startswith('actor/') else name


def _wait(predicate, timeout_s: float) -> Optional[float]:
  start = time.monotonic()
  while time.monotonic() - start < timeout_s:
    if predicate():
      return time.monotonic() - start
    time.sleep(0.5)
  return None


def run(args) -> Dict:
  rng = random.Random(args.seed)
  root = args.root_dir or tempfile.mkdtemp(prefix='chaos-')
  run_dir = os.path.join(root, 'run')
  log_dir = os.path.join(root, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  port = harness.free_port()
  from common import gin_config  # pylint: disable=g-import-not-at-top
  gin_files = gin_config.resolve_gin_files([args.gin_file])
  commands = local.commands(gin_files, args.gin_bindings, run_dir, port, args.num_actors,
                            server_timeout_s=args.server_timeout_s)
  fleet = Fleet(commands, log_dir)
  harness.log(f'chaos: {args.gin_file}, {args.num_actors} actors, {args.duration_s:.0f} s, a kill '
              f'every ~{args.kill_every_s:.0f} s; logs in {log_dir}')
  start = time.monotonic()
  for name, _ in commands:
    fleet.start(name)
  kills, disk, exits = [], [], []
  last_sample = -_SAMPLE_S
  next_kill = args.first_kill_s
  try:
    while time.monotonic() - start < args.duration_s:
      now = time.monotonic() - start
      if now - last_sample >= _SAMPLE_S:
        fleet.sample_rss(now)
        disk.append([round(now, 1), round(_disk_mib(run_dir), 1)])
        last_sample = now
      for name, child in fleet.children.items():
        if child.poll() is not None:  # Ended on its own: a failure the run did not survive.
          exits.append(dict(at_s=round(now, 1), process=name, status=child.poll(),
                            log=fleet.log_path(name)))
          harness.log(f'chaos: {name} exited with status {child.poll()} on its own; restarting')
          fleet.start(name)
      if now < next_kill:
        time.sleep(1.0)
        continue
      victim = rng.choice([name for name, _ in commands])
      kills.append(_kill_and_recover(fleet, victim, now, args.recover_s))
      harness.log(f'chaos: {kills[-1]}')
      next_kill = time.monotonic() - start + args.kill_every_s * rng.uniform(0.8, 1.2)
  finally:
    codes = fleet.stop()
  elapsed = time.monotonic() - start
  rows = eval_log.read_csv(os.path.join(run_dir, constants.EVAL_CSV))
  target = _target(gin_files, args.gin_bindings)
  return _report(args, kills, exits, fleet, disk, rows, target, elapsed, codes, root)


def _kill_and_recover(fleet: Fleet, victim: str, at_s: float, recover_s: float) -> Dict:
  role = _role(victim)
  step_before = fleet.train_step()
  last_logged = step_before
  fleet.kill(victim)
  fleet.start(victim)
  started = time.monotonic()
  back = _wait(lambda: _READY[role].search(fleet.log(victim)), recover_s)
  if role == 'replay_server' and back is not None:  # Training again, on the new server.
    mark = len(fleet.log('learner'))
    back = _wait(lambda: _TRAIN_STEP.search(fleet.log('learner')[mark:]), recover_s)
    back = None if back is None else time.monotonic() - started
  resumed = None
  if role == 'learner':
    found = _RESUMED.findall(fleet.log('learner'))
    resumed = int(found[-1]) if found else None
  past = _wait(lambda: fleet.train_step() > step_before, recover_s)
  record = dict(at_s=round(at_s, 1), victim=victim, train_step_at_kill=step_before,
                recovered=back is not None and past is not None,
                recovery_s=None if back is None else round(back, 1),
                train_step_recovery_s=None if past is None else round(
                    time.monotonic() - started, 1))
  if role == 'learner':
    record.update(resumed_at=resumed, train_steps_lost=None if resumed is None
                  else max(0, last_logged - resumed))
  return record


def _target(gin_files, bindings) -> Optional[float]:
  from common import builders  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from common import config  # pylint: disable=g-import-not-at-top
  from common import gin_config  # pylint: disable=g-import-not-at-top
  gin_config.load_gin(gin_files, bindings)
  return config.EvalConfig().target_return


def _report(args, kills, exits, fleet, disk, rows, target, elapsed, codes, root) -> Dict:
  recoveries = [k['recovery_s'] for k in kills if k['recovery_s'] is not None]
  by_role = {}
  for k in kills:
    if k['recovery_s'] is not None:
      by_role.setdefault(_role(k['victim']), []).append(k['recovery_s'])
  lost = [k['train_steps_lost'] for k in kills if k.get('train_steps_lost') is not None]
  returns = [r['average_return'] for r in rows]
  growth = {name: (None if (s := _slope_per_hour(points)) is None else round(s, 1))
            for name, points in fleet.rss.items()}
  report = dict(
      command=' '.join(['python -m bench.chaos'] + sys.argv[1:]), date=time.strftime('%Y-%m-%d'),
      machine=harness.machine(), gin_file=args.gin_file, num_actors=args.num_actors,
      duration_s=round(elapsed), kill_every_s=args.kill_every_s, kills=len(kills),
      survived=sum(k['recovered'] for k in kills), unexpected_exits=exits,
      recovery_s=dict(median=statistics.median(recoveries) if recoveries else None,
                      max=max(recoveries) if recoveries else None,
                      by_role={r: dict(kills=len(v), median=statistics.median(v), max=max(v))
                               for r, v in sorted(by_role.items())}),
      train_steps_lost_per_learner_kill=dict(
          values=lost, median=statistics.median(lost) if lost else None,
          max=max(lost) if lost else None),
      final_train_step=fleet.train_step(),
      eval=dict(evaluations=len(rows), best_return=max(returns) if returns else None,
                last_return=returns[-1] if returns else None, target_return=target,
                reached_target=bool(returns and target is not None and max(returns) >= target),
                curve=[[r['train_step'], r['env_steps'], r['average_return']] for r in rows]),
      rss_mib_growth_per_hour=growth, rss_mib=fleet.rss, disk_mib=disk,
      exit_codes_at_stop=codes, kill_log=kills, logs=os.path.join(root, 'logs'))
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--gin_file', default='gin/dqn_cartpole.gin')
  parser.add_argument('--gin_bindings', action='append', default=[])
  parser.add_argument('--duration_s', type=float, default=7200.0)
  parser.add_argument('--kill_every_s', type=float, default=300.0)
  parser.add_argument('--first_kill_s', type=float, default=180.0,
                      help='Seconds before the first kill (start-up, first traces).')
  parser.add_argument('--recover_s', type=float, default=300.0,
                      help='How long a kill may take to recover before it counts as not.')
  parser.add_argument('--num_actors', type=int, default=2)
  parser.add_argument('--server_timeout_s', type=float, default=600.0)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--root_dir', default=None)
  parser.add_argument('--out', default=None, help='JSON report path.')
  args = parser.parse_args(argv)
  report = run(args)
  text = json.dumps(report, indent=1)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  summary = {k: report[k] for k in ('kills', 'survived', 'unexpected_exits', 'recovery_s',
                                    'train_steps_lost_per_learner_kill', 'final_train_step',
                                    'rss_mib_growth_per_hour')}
  summary['eval'] = {k: v for k, v in report['eval'].items() if k != 'curve'}
  print(json.dumps(summary, indent=1))
  return 0 if report['survived'] == report['kills'] and not report['unexpected_exits'] else 1


if __name__ == '__main__':
  sys.exit(main())
