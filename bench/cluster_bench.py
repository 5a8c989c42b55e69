"""The fleet on a multi-node Ray cluster against the local launcher, in one run.

Both sides run the same experiment (DQN CartPole-v0 from its gin file, actors free of the learner,
`LearnerConfig.log_interval = 10` so the first train step shows at once) with the same number of
actors, one after the other on the same machine:

  cluster  `python -m launcher.ray` on a `bench.netns_cluster` cluster: the head in this network
           namespace, three worker nodes in their own, the server pinned to node1, the learner
           to node2, actors and eval spread over the three;
  local    `python -m launcher.main`.

Reported: seconds from the launch command to the first train step, and the aggregate env
steps/s of the actors (the replay server's insert counter over `--window_s`, after `--warmup_s`)
with the cluster/local ratio (target >= 0.9x). Then, on the cluster, node3's raylet is killed
and the time until the insert rate is back at 90% of its rate before the loss is reported.

  python -m bench.cluster_bench [--num_actors=4] [--window_s=60] [--warmup_s=30]

Needs root (network namespaces); `ray` installed (`pip install -e '.[ray]'`).
"""

import argparse
import os
import re
import signal
import sys
import tempfile
import time

from bench import harness
from bench import netns_cluster

BINDINGS = ['ReplayConfig.samples_per_insert = None', 'LearnerConfig.log_interval = 10',
            'EvalConfig.target_return = None']
_FIRST_STEP = re.compile(r'\[learner\] .*train_step=(\d+)')


def _inserted(address: str):
  from common import connection  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  from common import replay  # pylint: disable=g-import-not-at-top
  info = connection.probe(address, timeout_s=2)
  if not info:
    return None
  return replay.inserted_env_steps(info[constants.REPLAY_TABLE])


def _cpu_seconds():
  """CPU seconds used so far by each kind of process on the machine."""
  import psutil  # pylint: disable=g-import-not-at-top
  kinds = {}
  for proc in psutil.process_iter(['name', 'cmdline', 'cpu_times']):
    cmdline = ' '.join(proc.info['cmdline'] or [])
    times = proc.info['cpu_times']
    if times is None:
      continue
    if re.search(r'(actor|learner|replay_server)\.main', cmdline):
      kind = re.search(r'(actor|learner|replay_server)\.main', cmdline).group(0)
      kind += ' --mode=eval' if '--mode=eval' in cmdline else ''
    elif 'ray::' in (proc.info['name'] or '') or 'ray::' in cmdline:
      kind = 'ray worker (' + (cmdline.split()[0] if cmdline else proc.info['name']) + ')'
    elif 'ray' in cmdline or proc.info['name'] in ('raylet', 'gcs_server'):
      kind = 'ray services'
    elif 'launcher.' in cmdline:
      kind = 'launch command'
    else:
      kind = 'other'
    kinds[kind] = kinds.get(kind, 0.0) + times.user + times.system
  return kinds


def _rate(address: str, window_s: float, profile: bool = False):
  n0, t0 = _inserted(address), time.monotonic()
  cpu0, c0 = (_cpu_seconds(), time.monotonic()) if profile else (None, None)
  time.sleep(window_s)
  n1, t1 = _inserted(address), time.monotonic()
  rate = (n1 - n0) / (t1 - t0)
  if not profile:
    return rate
  cpu1, c1 = _cpu_seconds(), time.monotonic()
  shares = {k: (cpu1[k] - cpu0.get(k, 0.0)) / (c1 - c0) for k in cpu1}
  return rate, {k: round(v, 3) for k, v in sorted(shares.items(), key=lambda x: -x[1]) if v > 0.005}


def _launch(argv, log_path):
  from launcher import processes  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  process = processes.Process(argv, argv[2], log_path=log_path, new_session=False)
  harness.wait_for(lambda: _FIRST_STEP.search(process.log_text()) or (
      process.poll() is not None and _fail(process)), 900, f'the first train step ({log_path})',
                   interval_s=0.5)
  return process, time.monotonic() - started


def _fail(process):
  raise RuntimeError(f'{process.name} exited with {process.returncode}:\n'
                     + process.log_text()[-3000:])


def _address(log_text: str, pattern: str) -> str:
  return re.search(pattern, log_text).group(1)


def run_cluster(args, tmp: str):
  disk = f'/tmp/rf-bench-disk-{os.getpid()}'
  token = os.path.join(tmp, 'auth_token')
  os.environ.update(netns_cluster.client_env(token))
  cluster = netns_cluster.NetnsCluster(
      [(4, {'reverb_server': 1}), (4, {'reverb_learner': 1}), (4, {})], disk=disk,
      log_dir=os.path.join(tmp, 'ray'), subnet=9, token_path=token).start()
  try:
    idle, i0 = _cpu_seconds(), time.monotonic()
    time.sleep(20)
    idle = {k: round((v - idle.get(k, 0.0)) / (time.monotonic() - i0), 3)
            for k, v in _cpu_seconds().items() if v - idle.get(k, 0.0) > 0.05}
    harness.log(f'cluster: cores used with no fleet: {idle}')
    argv = [sys.executable, '-m', 'launcher.ray', f'--address={cluster.address}',
            '--name=bench', f'--gin_file={harness.GIN["dqn_cartpole"]}',
            f'--root_dir={disk}/run', f'--num_actors={args.num_actors}',
            '--server_resource=reverb_server', '--learner_resource=reverb_learner',
            '--budget_s=3600'] + [f'--gin_bindings={b}' for b in BINDINGS]
    process, first_step_s = _launch(argv, os.path.join(tmp, 'cluster.log'))
    address = _address(process.log_text(), r'\[ray\] replay server at (\S+)')
    harness.log(f'cluster: first train step after {first_step_s:.1f} s; server {address}')
    time.sleep(args.warmup_s)
    rate, cpu = _rate(address, args.window_s, profile=True)
    harness.log(f'cluster: {rate:,.0f} env steps/s; cores used by kind: {cpu}')
    cluster.kill_raylet(cluster.workers[2])
    lost_at = time.monotonic()
    recovered = harness.wait_for(lambda: _rate(address, 10) >= 0.9 * rate and time.monotonic(),
                                 600, 'the insert rate to recover', interval_s=0)
    recovery_s = recovered - lost_at
    harness.log(f'cluster: node3 lost; insert rate back at 90% after {recovery_s:.1f} s')
    stop = [sys.executable, '-m', 'launcher.ray', 'stop', f'--address={cluster.address}',
            '--name=bench']
    from launcher import processes  # pylint: disable=g-import-not-at-top
    processes.Process(stop, 'stop', new_session=False).wait(400)
    process.stop(120)
    return first_step_s, rate, recovery_s, dict(cpu, idle_cluster=idle)
  finally:
    cluster.stop()


def run_local(args, tmp: str):
  port = harness.free_port()
  # On the host's network: its rate is read from here.
  argv = [sys.executable, '-m', 'launcher.main', f'--gin_file={harness.GIN["dqn_cartpole"]}',
          f'--root_dir={tmp}/local', f'--num_actors={args.num_actors}', f'--port={port}',
          '--budget_s=3600', '--network=host'] + [f'--gin_bindings={b}' for b in BINDINGS]
  process, first_step_s = _launch(argv, os.path.join(tmp, 'local.log'))
  harness.log(f'local: first train step after {first_step_s:.1f} s')
  time.sleep(args.warmup_s)
  rate, cpu = _rate(f'localhost:{port}', args.window_s, profile=True)
  harness.log(f'local: {rate:,.0f} env steps/s; cores used by kind: {cpu}')
  process.stop(120)
  return first_step_s, rate, cpu


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_actors', type=int, default=4)
  parser.add_argument('--window_s', type=float, default=60.0)
  parser.add_argument('--warmup_s', type=float, default=30.0)
  args = parser.parse_args(argv)
  reason = netns_cluster.available()
  if reason:
    raise SystemExit(f'cluster_bench: cannot make the cluster here: {reason}')
  # SIGTERM unwinds like Ctrl-C, so the cluster's nodes and namespaces are removed.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  tmp = tempfile.mkdtemp(prefix='cluster_bench.')
  local_first, local_rate, local_cpu = run_local(args, tmp)
  cluster_first, cluster_rate, recovery_s, cluster_cpu = run_cluster(args, tmp)
  task = 'dqn_cartpole'
  harness.emit(harness.make_record('launch to first train step, 3-worker Ray cluster',
                                   cluster_first, 's', task, stock=local_first,
                                   versus='local launcher', higher_is_better=False))
  harness.emit(harness.make_record(
      f'aggregate env steps/s, {args.num_actors} actors over the worker nodes', cluster_rate,
      'env steps/s', task, stock=local_rate, versus=f'local launcher, {args.num_actors} actors',
      target=0.9, window_s=args.window_s, cores_by_kind_cluster=cluster_cpu,
      cores_by_kind_local=local_cpu))
  harness.emit(harness.make_record('worker node lost: insert rate back at 90%', recovery_s, 's',
                                   task, higher_is_better=False))
  harness.log(f'logs in {tmp}')


if __name__ == '__main__':
  main()
