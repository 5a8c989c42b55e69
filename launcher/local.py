"""The local run: the replay server, N actors, the learner and eval as child processes.

Children are started with exactly the flags a user would type (see `commands`). Their output is
prefixed with their role. The run stops on Ctrl-C, at the time budget, or when eval reaches the
task's target return (`EvalConfig.target_return`). Every child then gets SIGTERM, so that each
writes its final checkpoint, in the stages and with the graces of `processes.STOPS`: the
server's clients (learner, actors, eval) first, while the server still answers the learner's
final weight push and the actors' last items, and the replay server last. A client that lost
its server mid-sample would wait out its own deadline and exit without its saves.
"""

import os
import re
import signal
import sys
import threading
import time
from typing import List, Optional, Sequence, TextIO, Tuple

from common import constants
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


def run_local(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
              num_actors: int, target: Optional[float], budget_s: float = 0.0,
              max_train_steps: int = 0, server_timeout_s: float = 300.0,
              learner_gpus: Optional[str] = None, out: TextIO = sys.stdout) -> int:
  """Runs the whole system locally until the target return, the budget, or Ctrl-C.

  `target` is the task's `EvalConfig.target_return` (None: the task has none). The children
  stop with the launcher whatever ends it, kill -9 included (`die_with_parent`).
  `learner_gpus` is the learner's `CUDA_VISIBLE_DEVICES` (`learner_devices`: None inherits this
  process's environment); every other child gets `CUDA_VISIBLE_DEVICES=''`.

  Returns:
    0 when the target return was reached (or, with no target, the budget or the train-step
    budget ran out); 1 when a child failed or the budget ran out first; 130 on Ctrl-C.
  """
  status = StatusLine(out, f'localhost:{port}', os.path.join(root_dir, constants.EVAL_CSV),
                      budget_s, max_train_steps)
  interrupted = threading.Event()
  previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
  signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
  start = time.monotonic()
  status.print_child_line(f'[local] root_dir={root_dir} port={port} actors={num_actors} '
                          f'target_return={target} budget_s={budget_s or "none"}')
  status.print_child_line(f'[local] fleet status view: reverb-fleet status localhost:{port} '
                          f'--root_dir={root_dir} --watch')
  status.print_child_line('[local] learner: ' + describe_devices(
      learner_gpus, os.environ.get('CUDA_VISIBLE_DEVICES')) + '; the other roles: no GPU')

  def _printer(name):
    def _print(line):
      status.observe_line(name, line)
      status.print_child_line(f'[{name}] {line}')
    return _print

  def _start(name, argv):
    if name != 'learner':
      return processes.Process(argv, name, on_line=_printer(name), die_with_parent=True)
    return processes.Process(
        argv, name, on_line=_printer(name), die_with_parent=True, cpu_only=learner_gpus == '',
        env=None if learner_gpus is None else {'CUDA_VISIBLE_DEVICES': learner_gpus})

  children = [_start(name, argv)
              for name, argv in commands(gin_files, gin_bindings, root_dir, port, num_actors,
                                         max_train_steps, server_timeout_s)]
  learner = children[1]
  code, reason = None, ''
  try:
    while code is None:
      time.sleep(1.0)
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
    signal.signal(signal.SIGINT, previous)
  status.print_child_line(f'[local] done ({reason}); exit status {code}')
  return code
