"""What every benchmark shares: records, the machine, replay servers, synthetic data, children.

A benchmark emits records. Each record is one measured figure with its unit, and optionally the
stock figure measured in the same run, their ratio, and the target that ratio must reach.
`emit` prints the record as one JSON line (prefixed with `BENCH `) and one markdown table row,
and appends it to the JSON-lines file named by $BENCH_RECORDS, which `bench.run` collects.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
import time
from typing import Callable, Dict, List, Optional, Sequence

import common  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from launcher import processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = {
    'dqn_cartpole': os.path.join(REPO, 'gin', 'dqn_cartpole.gin'),
    'dqn_cartpole_fast': os.path.join(REPO, 'gin', 'dqn_cartpole_fast.gin'),
    'sac_minitaur': os.path.join(REPO, 'gin', 'sac_minitaur.gin'),
    'sac_halfcheetah': os.path.join(REPO, 'gin', 'sac_halfcheetah.gin'),
    'sac_halfcheetah_v5': os.path.join(REPO, 'gin', 'sac_halfcheetah_v5.gin'),
}
TASK_ENV = {
    'dqn_cartpole': 'CartPole-v0',
    'dqn_cartpole_fast': 'CartPole-v0',
    'sac_minitaur': 'MinitaurBulletEnv-v0',
    'sac_halfcheetah': 'HalfCheetahBulletEnv-v0',
    'sac_halfcheetah_v5': 'HalfCheetah-v5',
}
# The registry of each task's environment ('gym' unless listed).
TASK_SUITE = {'sac_halfcheetah_v5': 'gymnasium'}
RECORDS_ENV = 'BENCH_RECORDS'
TABLE_HEADER = ('| benchmark | task | ours | unit | versus | their figure | ratio | target | met |\n'
                '|---|---|---:|---|---|---:|---:|---|---|')


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    if abs(value) >= 100:
      return f'{value:,.0f}'
    if abs(value) >= 10:
      return f'{value:.1f}'
    return f'{value:.2f}'
  return str(value)


def markdown_row(record: Dict) -> str:
  """One row of TABLE_HEADER's table."""
  met = record.get('met')
  met_text = '-' if met is None else ('yes' if met else f'no ({record.get("shortfall", "")})')
  ratio = record.get('ratio')
  return (f'| {record["name"]} | {record.get("task", "-")} | {_fmt(record["value"])} | '
          f'{record["unit"]} | {record.get("versus") or "-"} | {_fmt(record.get("stock"))} | '
          f'{"-" if ratio is None else f"{ratio:.2f}x"} | {record.get("target_text", "-")} | '
          f'{met_text} |')


def make_record(name: str, value: float, unit: str, task: str = '-', *,
                stock: Optional[float] = None, versus: Optional[str] = None,
                ratio: Optional[float] = None, target: Optional[float] = None, target_text: Optional[str] = None,
                higher_is_better: bool = True, **extra) -> Dict:
  """A benchmark record.

  Args:
    name: Benchmark id, stable across runs (the regression comparison keys on name + task).
    value: Our figure.
    unit: Of `value` (and `stock`).
    task: The gin task or environment.
    stock: The figure `value` is compared with (by default the stock TF-Agents figure
      measured in the same run), if any.
    versus: What `stock` is ('stock TF-Agents' unless told otherwise).
    ratio: The figure the target applies to; defaults to value / stock when stock is given.
    target: Minimum ratio (or, with higher_is_better=False, maximum).
    target_text: How the target reads in the table (default: '>= {target}x').
    higher_is_better: Direction of `value` and `ratio`, for targets and the regression check.
    **extra: Anything else worth keeping (windows, counts, notes).
  """
  if ratio is None and stock:
    ratio = value / stock
  if stock is not None and versus is None:
    versus = 'stock TF-Agents'
  record = dict(name=name, task=task, value=float(value), unit=unit, versus=versus,
                stock=None if stock is None else float(stock),
                ratio=None if ratio is None else float(ratio),
                higher_is_better=higher_is_better, **extra)
  if target is not None and ratio is not None:
    met = ratio >= target if higher_is_better else ratio <= target
    record.update(target=float(target), met=bool(met),
                  target_text=target_text or (f'>= {target:g}x' if higher_is_better
                                              else f'<= {target:g}x'))
    if not met:
      record['shortfall'] = (f'{ratio / target:.0%} of target' if higher_is_better
                             else f'{ratio / target:.2f}x over target')
  return record


def emit(record: Dict) -> Dict:
  """Prints the record (JSON line + markdown row) and appends it to $BENCH_RECORDS."""
  line = json.dumps(record, sort_keys=True)
  print(f'BENCH {line}', flush=True)
  print(markdown_row(record), flush=True)
  path = os.environ.get(RECORDS_ENV)
  if path:
    with open(path, 'a') as f:
      f.write(line + '\n')
  return record


def log(message: str) -> None:
  print(f'[bench {time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def machine() -> Dict:
  """The machine the figures come from: cores, CPU model, load, accelerators, versions."""
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    model = platform.processor()
  gpus = []
  try:
    out = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total', '--format=csv,noheader'],
                         capture_output=True, text=True, timeout=10, check=False)
    gpus = [l.strip() for l in out.stdout.splitlines() if l.strip()]
  except (OSError, subprocess.SubprocessError):
    pass
  mem_gib = None
  try:
    mem_gib = round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1)
  except (ValueError, OSError):
    pass
  return dict(host=socket.gethostname(), cpu_model=model, cores=os.cpu_count(),
              usable_cores=len(os.sched_getaffinity(0)), memory_gib=mem_gib, gpus=gpus,
              load_average=list(os.getloadavg()), python=platform.python_version(),
              platform=platform.platform())


def load_task(task: str, bindings: Sequence[str] = ()) -> None:
  """Parses the task's shipped gin file plus `bindings` (bench overrides)."""
  load_task_file(GIN[task], bindings)


def load_task_file(gin_file: str, bindings: Sequence[str] = ()) -> None:
  """Parses `gin_file` plus `bindings` (bench overrides)."""
  from common import builders  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from common import gin_config  # pylint: disable=g-import-not-at-top
  gin_config.load_gin([gin_file], list(bindings))


def free_port() -> int:
  import portpicker  # pylint: disable=g-import-not-at-top
  return portpicker.pick_unused_port()


def bench_signer():
  """The signer of this bench's weights; the key goes to every role the bench starts after
  this call, as $REVERB_FLEET_WEIGHTS_KEY (made here if the environment has none)."""
  from common import weights_key  # pylint: disable=g-import-not-at-top
  if weights_key.from_environment() is None:
    os.environ[weights_key.ENV_VAR] = weights_key.new_key().hex()
  return weights_key.Signer(weights_key.from_environment())


class ReplayServer:
  """An in-process Reverb server with the task's replay and variable tables; the bench's
  weights key is in the environment from its construction on (`bench_signer`)."""

  def __init__(self):
    import reverb  # pylint: disable=g-import-not-at-top
    from common import builders  # pylint: disable=g-import-not-at-top
    from common.config import LearnerConfig  # pylint: disable=g-import-not-at-top
    from common.config import ReplayConfig  # pylint: disable=g-import-not-at-top
    from replay_server import tables as tables_lib  # pylint: disable=g-import-not-at-top
    self.replay_config = ReplayConfig()
    self.built = builders.build(self.replay_config)
    self.agent, self.specs = self.built.agent, self.built.specs
    self.port = free_port()
    self.server = reverb.Server(
        tables_lib.make_tables(self.specs, self.replay_config, LearnerConfig()),
        port=self.port)
    self.address = f'localhost:{self.port}'
    self.client = reverb.Client(self.address)
    self.signer = bench_signer()

  def inserted(self) -> int:
    from common import constants  # pylint: disable=g-import-not-at-top
    from common import replay  # pylint: disable=g-import-not-at-top
    return replay.inserted_env_steps(self.client.server_info()[constants.REPLAY_TABLE])

  def size(self) -> int:
    from common import constants  # pylint: disable=g-import-not-at-top
    return int(self.client.server_info()[constants.REPLAY_TABLE].current_size)

  def push_weights(self) -> None:
    """Writes the (freshly initialized) policy weights, as the learner's first push does."""
    from common import session as session_lib  # pylint: disable=g-import-not-at-top
    from common import variables  # pylint: disable=g-import-not-at-top
    variables.VariableClient(session_lib.unchecked(self.address), self.built.variables,
                             self.signer).push()

  def stop(self) -> None:
    self.server.stop()


# The tables of a gin config in a Reverb server of their own process, so that its resident
# memory is the tables' and Reverb's, not the writer's. It prints its port, then its resident
# bytes (after `malloc_trim`, so that memory the allocator keeps for reuse is not counted)
# whenever it reads a line.
_MEASURED_SERVER = textwrap.dedent('''
    import ctypes, sys
    import common
    from common import builders, gin_config
    from common.config import LearnerConfig, ReplayConfig
    from replay_server import tables as tables_lib
    gin_config.load_gin([sys.argv[1]], sys.argv[2:])
    import reverb
    replay_config = ReplayConfig()
    server = reverb.Server(tables_lib.make_tables(builders.build(replay_config).specs,
                                                replay_config, LearnerConfig()))
    print(server.port, flush=True)
    libc = ctypes.CDLL('libc.so.6')
    for line in sys.stdin:
      libc.malloc_trim(0)
      with open('/proc/self/status') as status:
        rss = [l for l in status if l.startswith('VmRSS')][0].split()[1]
      print(int(rss) * 1024, flush=True)
''')


class MeasuredServer:
  """A replay server in its own process with the tables of `gin_file` + `bindings`, whose
  resident memory `rss()` reads; a context manager that kills it on exit."""

  def __init__(self, gin_file: str, bindings: Sequence[str] = ()):
    self._process = subprocess.Popen(
        [sys.executable, '-c', _MEASURED_SERVER, gin_file, *bindings], cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = self._process.stdout.readline()
    if not line.strip().isdigit():
      self.close()
      raise RuntimeError(f'the measured replay server did not start (exit status '
                         f'{self._process.returncode}); run it for its error: python -c ... '
                         f'{gin_file} {" ".join(bindings)}')
    self.address = f'localhost:{int(line)}'

  def rss(self) -> int:
    """The server process's resident bytes."""
    self._process.stdin.write('\n')
    self._process.stdin.flush()
    return int(self._process.stdout.readline())

  def close(self) -> None:
    self._process.kill()
    self._process.wait(timeout=30)

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()


def write_results(path: str, module: str, argv: Optional[Sequence[str]],
                  records: Sequence[Dict]) -> None:
  """Writes a benchmark's records with its command line, the date and the machine (JSON)."""
  with open(path, 'w') as f:
    json.dump({'command': f'python -m {module} ' + ' '.join(
        argv if argv is not None else sys.argv[1:]), 'date': time.strftime('%Y-%m-%d'),
               'machine': machine(), 'records': list(records)}, f, indent=1)


def synthetic_steps(collect_data_spec, count: int, seed: int = 0):
  """`count` trajectory steps (a nest of numpy arrays with a leading count dim) that fit the spec.

  Observations and actions are uniform within their bounds (actions kept 5% inside them, so
  that SAC's tanh inverse stays finite), every step is MID with discount 1.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def one(spec):
    shape = (count,) + tuple(spec.shape)
    dtype = spec.dtype.as_numpy_dtype
    if spec.dtype.is_integer:
      low = int(getattr(spec, 'minimum', 0))
      high = int(getattr(spec, 'maximum', 1))
      return rng.integers(low, high + 1, size=shape).astype(dtype)
    low = np.broadcast_to(np.asarray(getattr(spec, 'minimum', -1.0), np.float64), spec.shape)
    high = np.broadcast_to(np.asarray(getattr(spec, 'maximum', 1.0), np.float64), spec.shape)
    low = np.where(np.isfinite(low) & (low > -1e6), low, -1.0)
    high = np.where(np.isfinite(high) & (high < 1e6), high, 1.0)
    middle, half = (low + high) / 2, (high - low) / 2 * 0.95
    return (middle + half * rng.uniform(-1, 1, size=shape)).astype(dtype)

  steps = tf.nest.map_structure(one, collect_data_spec)
  mid = np.ones((count,), np.int32)
  return steps._replace(step_type=mid, next_step_type=mid,
                        discount=np.ones((count,), np.float32))


def write_items(address: str, collect_data_spec, count: int, sequence_length: int,
                seed: int = 0, deadline_s: float = 120.0) -> float:
  """Inserts `count` items the way an actor does (one writer, stride 1); returns items/s."""
  import reverb  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from common import constants  # pylint: disable=g-import-not-at-top
  steps = synthetic_steps(collect_data_spec, min(count + sequence_length, 4096), seed)
  flat = tf.nest.flatten(steps)
  n = len(flat[0])
  client = reverb.Client(address)
  start = time.monotonic()
  with client.trajectory_writer(num_keep_alive_refs=sequence_length + 1,
                                validate_items=False) as writer:
    written = 0
    i = 0
    while written < count:
      writer.append(tf.nest.pack_sequence_as(steps, [x[i % n] for x in flat]))
      i += 1
      if i >= sequence_length:
        writer.create_item(constants.REPLAY_TABLE, 1.0,
                           tf.nest.map_structure(lambda c: c[-sequence_length:],
                                                 writer.history))
        written += 1
      if time.monotonic() - start > deadline_s:
        raise TimeoutError(f'inserting {count} items took over {deadline_s:g} s')
    writer.flush()
  return count / (time.monotonic() - start)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str,
             interval_s: float = 0.2):
  """Polls `predicate` until truthy; raises TimeoutError naming `what` after `timeout_s`."""
  deadline = time.monotonic() + timeout_s
  while True:
    value = predicate()
    if value:
      return value
    if time.monotonic() > deadline:
      raise TimeoutError(f'timed out after {timeout_s:g} s waiting for {what}')
    time.sleep(interval_s)


def rate(counter: Callable[[], float], window_s: float) -> float:
  """Increase of `counter()` per second over `window_s` seconds."""
  n0, t0 = counter(), time.monotonic()
  time.sleep(window_s)
  n1, t1 = counter(), time.monotonic()
  return (n1 - n0) / (t1 - t0)


class Child(processes.Process):
  """A child process (`python -m module args`), output to a log file, stopped with SIGTERM."""

  def __init__(self, module: str, args: Sequence[str], log_path: str, gpu: bool = False):
    super().__init__([sys.executable, '-m', module, *args], module, log_path=log_path,
                     cpu_only=not gpu, env={RECORDS_ENV: ''}, new_session=False)

  def wait_line(self, text: str, timeout_s: float) -> None:
    """Waits until `text` appears in the log; raises if the child exits or the time runs out."""
    def _seen():
      if text in self.log_text():
        return True
      if self.poll() is not None:
        raise RuntimeError(f'{self.name} exited with {self.returncode} before logging '
                           f'{text!r}; log: {self.log_path}\n' + self.log_text()[-2000:])
      return False
    wait_for(_seen, timeout_s, f'{text!r} in {self.log_path}')


def stop_all(children: List[Child]) -> None:
  processes.stop_all(children, grace_s=30.0)
