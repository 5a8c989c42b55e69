"""The local run: the replay server, N actors, the learner and eval as child processes.

Children are started with exactly the flags a user would type (see `commands`), all at once:
each checks the config while the others import TensorFlow, and waits at the start gate until
every one has passed (`run_local`). Their output is prefixed with their role. The run stops
on Ctrl-C, at the time budget, or when eval reaches the task's target return
(`EvalConfig.target_return`). Every child then gets SIGTERM, so that each
writes its final checkpoint, in the stages and with the graces of `processes.STOPS`: the
server's clients (learner, actors, eval) first, while the server still answers the learner's
final weight push and the actors' last items, and the replay server last. A client that lost
its server mid-sample would wait out its own deadline and exit without its saves.
"""

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from common import constants
from common import errors
from common import weights_key
from common.main_utils import GATE_CHECKED
from common.main_utils import GATE_OPEN
from common.main_utils import START_GATE_ENV
from common.errors import UserError
from launcher import processes
from launcher.status import StatusLine
from launcher.status import outcome



def learner_devices(learner_gpus: str, inherited: Optional[str]) -> Optional[str]:
  """The learner's `CUDA_VISIBLE_DEVICES` for `--learner_gpus`, given the launcher's own
  (`inherited`, None when unset): None to inherit it ('all': every GPU this shell sees), ''
  for none ('none' or '0'), or the first N of the GPUs this shell sees (a count N, as the Ray
  launcher's `--learner_gpus`).

  The replay server, the actors and eval never see a GPU: TensorFlow would take most of each
  GPU's memory in every process that touched it, and only the learner computes on one.

  Raises:
    UserError: a value that is none of these, or more GPUs than `inherited` names.
  """
  value = learner_gpus.strip().lower()
  if value == 'all':
    return None
  if value == 'none':
    return ''
  if not re.fullmatch(r'\d+', value):
    raise UserError(f'--learner_gpus={learner_gpus!r} must be all, none or a number of GPUs: '
                    'fix the flag (CUDA_VISIBLE_DEVICES picks which ones)')
  count = int(value)
  if inherited is None:
    return ','.join(str(i) for i in range(count))
  visible = [device.strip() for device in inherited.split(',') if device.strip()]
  if count > len(visible):
    raise UserError(f'--learner_gpus={count} but CUDA_VISIBLE_DEVICES={inherited!r} names '
                    f'{len(visible)} GPU(s): ask for at most {len(visible)}, or unset it')
  return ','.join(visible[:count])


def describe_devices(devices: Optional[str], inherited: Optional[str]) -> str:
  """What the learner sees, for the launcher's first lines."""
  if devices is None:
    return ('every GPU (CUDA_VISIBLE_DEVICES unset)' if inherited is None else
            f'CUDA_VISIBLE_DEVICES={inherited!r}, inherited')
  return 'no GPU' if devices == '' else f'GPUs {devices}'


def commands(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
             num_actors: int, max_train_steps: int = 0,
             server_timeout_s: float = 300.0) -> List[Tuple[str, List[str]]]:
  """(name, argv) of each child of a local run, with the command line a user would type."""
  shared = dict(gin_files=gin_files, gin_bindings=gin_bindings, root_dir=root_dir)
  client = dict(shared, address=f'localhost:{port}', server_timeout_s=server_timeout_s)
  children = [('replay_server', processes.role_argv(
                  'replay_server', port=port, **shared,
                  extra=[f'--stop_grace_s={processes.stop_of("replay_server")[1]:g}'])),
              ('learner', processes.role_argv('learner', **client,
                                              extra=[f'--max_train_steps={max_train_steps}']))]
  for task in range(num_actors):
    children.append((f'actor/{task}', processes.role_argv(
        'actor', task=task, **client, extra=[f'--num_actors={num_actors}'])))
  children.append(('eval', processes.role_argv('eval', **client)))
  return children


class _ChildRefused(errors.FleetError):
  """A child refused the run at its start (its one error line), before anything was written."""

  def __init__(self, line: str, exit_status: int):
    super().__init__(line)
    self.exit_status = exit_status


class _Gate:
  """The start gate of a local run (`main_utils.START_GATE_ENV`): a directory where each child
  reports that its checks passed and then waits for the go, and the children's lines, held
  until the go."""

  _PREFIX = 'reverb_fleet_gate_'

  def __init__(self):
    _Gate.remove_stale()
    self.dir = tempfile.mkdtemp(prefix=f'{_Gate._PREFIX}{os.getpid()}_')
    self._lock = threading.Lock()
    self._held: Optional[List[Tuple[Callable[[str], None], str]]] = []
    self.errors: Dict[str, str] = {}  # Each child's newest "error: " line.

  def hold(self, name: str, show: Callable[[str], None]) -> Callable[[str], None]:
    """`show`, called at once after the go, and for the lines before it at the go."""
    def _line(line):
      if line.startswith('error: '):
        self.errors[name] = line[len('error: '):]
      with self._lock:
        if self._held is not None:
          self._held.append((show, line))
          return
      show(line)
    return _line

  def reports(self) -> List[str]:
    """The reports of the children whose checks passed (`main_utils.wait_for_start_gate`)."""
    return [os.path.join(self.dir, name) for name in os.listdir(self.dir)
            if name.startswith(GATE_CHECKED)]

  def wait_for_checks(self, children, interrupted: threading.Event,
                      timeout_s: float = 600.0) -> dict:
    """Waits until every child reported its checks passed; returns their reports, merged
    (`main_utils.wait_for_start_gate`: the target return, and the replay server's
    `env_steps_per_item`).

    Raises:
      _ChildRefused: a child exited first (its error line and exit status).
      StopRequested: Ctrl-C or SIGTERM came first.
      UserError: no report from every child within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
      for child in children:
        if child.poll() is not None:
          child.close()  # Its last lines are read.
          raise _ChildRefused(
              self.errors.get(child.name) or
              f'{child.name} exited with status {child.returncode} at its start: see its lines '
              'with --verbosity=1', child.returncode or 1)
      reports = self.reports()
      if len(reports) == len(children):
        merged = {}
        for path in reports:
          with open(path) as f:
            merged.update(json.load(f))
        return merged
      if interrupted.is_set():
        raise errors.StopRequested('interrupted before the run started')
      if time.monotonic() >= deadline:
        raise errors.UserError(
            f'{len(children) - len(reports)} of the {len(children)} processes did not finish '
            f'their start-up checks within {timeout_s:g} s: see their lines with --verbosity=1')
      time.sleep(0.05)

  def open(self) -> None:
    with open(os.path.join(self.dir, GATE_OPEN), 'w'):
      pass
    with self._lock:
      held, self._held = self._held, None
    for show, line in held:
      show(line)

  def remove(self) -> None:
    shutil.rmtree(self.dir, ignore_errors=True)

  @staticmethod
  def remove_stale() -> None:
    """Removes the gate directories of launchers that are gone (killed with -9)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
      if not name.startswith(_Gate._PREFIX):
        continue
      pid = name[len(_Gate._PREFIX):].split('_', 1)[0]
      if pid.isdigit() and not os.path.exists(f'/proc/{pid}'):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def run_local(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
              num_actors: int, claim: Callable[[], None], budget_s: float = 0.0,
              max_train_steps: int = 0, server_timeout_s: float = 300.0,
              learner_gpus: Optional[str] = None, out: TextIO = sys.stdout,
              notes: Sequence[str] = ()) -> int:
  """Runs the whole system locally until the target return, the budget, or Ctrl-C.

  Every child starts at once and checks the config itself (the gin files, the config's
  values, the environment; the replay server also builds the agent), then waits at the start
  gate before it writes anything (`main_utils.wait_for_start_gate`); their lines are held
  meanwhile. Once every child passed, `claim()` claims `root_dir` (`ownership`), the run's
  weights key is made if missing (`common.weights_key`), and the gate opens. If a child refuses
  the config, or `claim()` raises, every child is killed, their lines are dropped, and the
  error is this process's one line (with the child's exit status):
  nothing was written. The target return is the task's `EvalConfig.target_return`, as the
  children report it (None: the task has none).
  The children stop with the launcher whatever ends it, kill -9 included (`die_with_parent`).
  `learner_gpus` is the learner's `CUDA_VISIBLE_DEVICES` (`learner_devices`: None inherits this
  process's environment); every other child gets `CUDA_VISIBLE_DEVICES=''`. `notes` are lines
  printed with the run's first status lines, once every child passed its checks.

  Returns:
    0 when the target return was reached (or, with no target, the budget or the train-step
    budget ran out); 1 when a child failed or the budget ran out first; 130 on Ctrl-C. Ctrl-C
    or SIGTERM before the go raises `StopRequested` (exit 0: nothing was started or written).
  """
  status = StatusLine(out, f'localhost:{port}', os.path.join(root_dir, constants.EVAL_CSV),
                      budget_s, max_train_steps)
  interrupted = threading.Event()
  news = threading.Event()  # An eval result or a stop request: the loop looks at once.

  def _interrupt(*_):
    interrupted.set()
    news.set()

  previous = signal.signal(signal.SIGINT, _interrupt)
  signal.signal(signal.SIGTERM, _interrupt)
  start = time.monotonic()
  gate = _Gate()

  def _printer(name):
    def _print(line):
      status.observe_line(name, line)
      status.print_child_line(f'[{name}] {line}')
      if name == 'eval':
        news.set()
    return gate.hold(name, _print)

  def _start(name, argv):
    env = {START_GATE_ENV: gate.dir}
    if name == 'learner' and learner_gpus is not None:
      env['CUDA_VISIBLE_DEVICES'] = learner_gpus
    return processes.Process(argv, name, on_line=_printer(name), die_with_parent=True,
                             cpu_only=name != 'learner' or learner_gpus == '', env=env)

  children = []
  try:
    children = [_start(name, argv)
                for name, argv in commands(gin_files, gin_bindings, root_dir, port, num_actors,
                                           max_train_steps, server_timeout_s)]
    report = gate.wait_for_checks(children, interrupted)
    claim()
    # Before the gate opens, so that actors and eval find the key the learner signs with.
    weights_key.ensure(weights_key.default_path(root_dir))
  except BaseException:
    for child in children:
      child.kill()
      child.close()
    gate.remove()
    signal.signal(signal.SIGINT, previous)
    raise  # Before any status line: the error is the run's only line.
  target = report['target_return']
  status.env_steps_per_item = report.get('env_steps_per_item', 1)
  status.print_child_line(f'[local] root_dir={root_dir} port={port} actors={num_actors} '
                          f'target_return={target} budget_s={budget_s or "none"}')
  status.print_child_line(f'[local] fleet status view: reverb-fleet status localhost:{port} '
                          f'--root_dir={root_dir} --watch')
  for note in notes:
    status.print_child_line(note)
  status.print_child_line('[local] learner: ' + describe_devices(
      learner_gpus, os.environ.get('CUDA_VISIBLE_DEVICES')) + '; the other roles: no GPU')
  gate.open()
  learner = children[1]
  code, reason = None, ''
  try:
    while code is None:
      news.wait(1.0)
      news.clear()
      status.refresh()
      failed = [c for c in children if c.poll() not in (None, 0)]
      if interrupted.is_set():
        code, reason = 130, 'interrupted'
        break
      result = outcome(target, status.last_eval, time.monotonic() - start, budget_s,
                       max_train_steps, learner.poll() == 0,
                       failed and f'{failed[0].name} exited with status {failed[0].returncode}')
      if result:
        code, reason = result
  finally:
    status.close()
    status.print_child_line(f'[local] stopping: {reason or "error"}')
    processes.stop_in_stages(children)
    gate.remove()
    signal.signal(signal.SIGINT, previous)
  status.print_child_line(f'[local] done ({reason}); exit status {code}')
  return code
