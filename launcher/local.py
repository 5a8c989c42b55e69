"""The local run: the replay server, N actors, the learner and eval as child processes.

Children are started with exactly the flags a user would type (see `commands`). Their output is
prefixed with their role. The run stops on Ctrl-C, at the time budget, or when eval reaches the
task's target return (`EvalConfig.target_return`), and every child gets SIGTERM first, so the
learner and the replay server write their final checkpoints.
"""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence, TextIO

from absl import logging

from actor import evaluate
from common import connection
from common import constants
from common import replay
from common.config import EvalConfig

_STEP_PATTERNS = (re.compile(r'train_step=(\d+)'), re.compile(r'Step: (\d+),'))


@dataclasses.dataclass
class Child:
  role: str
  argv: List[str]
  process: Optional[subprocess.Popen] = None
  reader: Optional[threading.Thread] = None


def commands(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
             num_actors: int, max_train_steps: int = 0,
             server_timeout_s: float = 300.0) -> List[Child]:
  """The children of a local run, each with the command line a user would type."""
  python = [sys.executable, '-m']
  shared = [f'--gin_file={f}' for f in gin_files] + [f'--gin_bindings={b}' for b in gin_bindings]
  shared.append(f'--root_dir={root_dir}')
  address = f'--replay_server_address=localhost:{port}'
  timeout = f'--server_timeout_s={server_timeout_s:g}'
  children = [Child('replay_server', python + ['replay_server.main', f'--port={port}'] + shared)]
  children.append(Child('learner', python + ['learner.main', address, timeout,
                                            f'--max_train_steps={max_train_steps}'] + shared))
  for task in range(num_actors):
    children.append(Child(f'actor/{task}', python + ['actor.main', address, timeout,
                                                      f'--task={task}'] + shared))
  children.append(Child('eval', python + ['actor.main', '--mode=eval', address, timeout] + shared))
  return children


class StatusLine:
  """One live line (on a terminal) or a periodic plain line: progress of the run."""

  def __init__(self, out: TextIO, address: str, eval_csv: str, budget_s: float,
               max_train_steps: int, plain_interval_s: float = 30.0):
    self._out = out
    self._tty = out.isatty()
    self._address = address
    self._eval_csv = eval_csv
    self._budget_s = budget_s
    self._max_train_steps = max_train_steps
    self._plain_interval_s = plain_interval_s
    self._start = time.monotonic()
    self._last_plain = self._start
    self._lock = threading.Lock()
    self._shown = False
    self.train_step = 0
    self._inserts = []  # (time, inserts) for the env steps/s estimate.
    self.last_eval = None

  def observe_line(self, role: str, line: str) -> None:
    if role == 'learner':
      for pattern in _STEP_PATTERNS:
        match = pattern.search(line)
        if match:
          self.train_step = max(self.train_step, int(match.group(1)))

  def print_child_line(self, text: str) -> None:
    with self._lock:
      if self._tty and self._shown:
        self._out.write('\r\x1b[K')
      self._out.write(text + '\n')
      self._shown = False
      self._out.flush()

  def text(self) -> str:
    now = time.monotonic()
    elapsed = now - self._start
    info = connection.probe(self._address, timeout_s=1)
    size, rate = '?', 0.0
    if info is not None:
      table = info[constants.REPLAY_TABLE]
      size = str(table.current_size)
      self._inserts.append((now, replay.inserted_items(table)))
      self._inserts = [p for p in self._inserts if now - p[0] <= 10.0]
      if len(self._inserts) > 1 and self._inserts[-1][0] > self._inserts[0][0]:
        (t0, n0), (t1, n1) = self._inserts[0], self._inserts[-1]
        rate = (n1 - n0) / (t1 - t0)
    rows = evaluate.read_csv(self._eval_csv)
    if rows:
      self.last_eval = rows[-1]
    last_return = f'{self.last_eval["average_return"]:.1f}' if self.last_eval else '-'
    eta = []
    if self._budget_s:
      eta.append(f'budget left {_duration(max(self._budget_s - elapsed, 0))}')
    if self._max_train_steps and self.train_step:
      per_step = elapsed / self.train_step
      eta.append(f'ETA {_duration(per_step * max(self._max_train_steps - self.train_step, 0))}')
    return (f'train_step={self.train_step} env_steps/s={rate:.0f} replay_size={size} '
            f'eval_return={last_return} elapsed={_duration(elapsed)}'
            + (' ' + ' '.join(eta) if eta else ''))

  def refresh(self) -> None:
    text = self.text()
    with self._lock:
      if self._tty:
        self._out.write('\r\x1b[K' + text)
        self._shown = True
        self._out.flush()
      elif time.monotonic() - self._last_plain >= self._plain_interval_s:
        self._out.write(f'[status] {text}\n')
        self._out.flush()
        self._last_plain = time.monotonic()


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 60}m{seconds % 60:02d}s'


def _pump(child: Child, status: StatusLine) -> None:
  for raw in child.process.stdout:
    line = raw.rstrip('\n')
    status.observe_line(child.role, line)
    status.print_child_line(f'[{child.role}] {line}')


def _stop_all(children: Sequence[Child], grace_s: float = 60.0) -> None:
  for child in children:
    if child.process and child.process.poll() is None:
      child.process.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  for child in children:
    if not child.process:
      continue
    try:
      child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      logging.warning('local: %s ignored SIGTERM for %.0f s; killing it', child.role, grace_s)
      child.process.kill()
      child.process.wait()
  for child in children:
    if child.reader:
      child.reader.join(timeout=5)


def run_local(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
              num_actors: int, budget_s: float = 0.0, max_train_steps: int = 0,
              server_timeout_s: float = 300.0, out: TextIO = sys.stdout) -> int:
  """Runs the whole system locally until the target return, the budget, or Ctrl-C.

  The gin config must already be loaded (to read `EvalConfig.target_return`).

  Returns:
    0 when the target return was reached (or, with no target, the budget or the train-step
    budget ran out); 1 when a child failed or the budget ran out first; 130 on Ctrl-C.
  """
  target = EvalConfig().target_return
  children = commands(gin_files, gin_bindings, root_dir, port, num_actors, max_train_steps,
                      server_timeout_s)
  status = StatusLine(out, f'localhost:{port}', os.path.join(root_dir, constants.EVAL_CSV),
                      budget_s, max_train_steps)
  interrupted = threading.Event()
  previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
  signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  start = time.monotonic()
  status.print_child_line(f'[local] root_dir={root_dir} port={port} actors={num_actors} '
                          f'target_return={target} budget_s={budget_s or "none"}')
  for child in children:
    child.process = subprocess.Popen(child.argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
    child.reader = threading.Thread(target=_pump, args=(child, status), daemon=True)
    child.reader.start()

  code, reason = None, ''
  try:
    while code is None:
      time.sleep(1.0)
      status.refresh()
      failed = [c for c in children if c.process.poll() not in (None, 0)]
      if interrupted.is_set():
        code, reason = 130, 'interrupted'
      elif failed:
        code, reason = 1, (f'{failed[0].role} exited with status '
                           f'{failed[0].process.returncode}')
      elif target is not None and status.last_eval and (
          status.last_eval['average_return'] >= target):
        code, reason = 0, (f'eval return {status.last_eval["average_return"]:.1f} >= target '
                           f'{target:g} at train step {int(status.last_eval["train_step"])}, '
                           f'{int(status.last_eval["env_steps"])} env steps, '
                           f'{time.monotonic() - start:.0f} s')
      elif budget_s and time.monotonic() - start >= budget_s:
        code = 1 if target is not None else 0
        reason = f'time budget of {budget_s:g} s used up'
      elif children[1].process.poll() == 0:
        code = 1 if target is not None else 0
        reason = f'learner finished its {max_train_steps} train steps'
  finally:
    status.print_child_line(f'[local] stopping: {reason or "error"}')
    _stop_all(children)
    signal.signal(signal.SIGINT, previous)
  status.print_child_line(f'[local] done ({reason}); exit status {code}')
  return code
