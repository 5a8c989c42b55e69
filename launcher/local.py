"""The local run: the replay server, N actors, the learner and eval as child processes.

Children are started with exactly the flags a user would type (see `commands`). Their output is
prefixed with their role. The run stops on Ctrl-C, at the time budget, or when eval reaches the
task's target return (`EvalConfig.target_return`). Every child then gets SIGTERM, so that each
writes its final checkpoint: the server's clients (learner, actors, eval) first, while the
server still answers the learner's final weight push and the actors' last items, and the
replay server last, as docker-compose stops services before those they depend on. A client
that lost its server mid-sample would wait out its own deadline and exit without its saves.
"""

import os
import signal
import sys
import threading
import time
from typing import List, Optional, Sequence, TextIO, Tuple

from common import constants
from launcher import processes
from launcher.status import StatusLine
from launcher.status import outcome

# Seconds each child may take to stop after SIGTERM before it is killed: the learner's saves on
# stop (checkpoint, export, a last push) after the step it is in, as in docker-compose.yml.
STOP_GRACE_S = 180.0


def commands(gin_files: Sequence[str], gin_bindings: Sequence[str], root_dir: str, port: int,
             num_actors: int, max_train_steps: int = 0,
             server_timeout_s: float = 300.0) -> List[Tuple[str, List[str]]]:
  """(name, argv) of each child of a local run, with the command line a user would type."""
  shared = dict(gin_files=gin_files, gin_bindings=gin_bindings, root_dir=root_dir)
  client = dict(shared, address=f'localhost:{port}', server_timeout_s=server_timeout_s)
  children = [('replay_server', processes.role_argv(
                  'replay_server', port=port, **shared,
                  extra=[f'--stop_grace_s={STOP_GRACE_S:g}'])),
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
              out: TextIO = sys.stdout) -> int:
  """Runs the whole system locally until the target return, the budget, or Ctrl-C.

  `target` is the task's `EvalConfig.target_return` (None: the task has none). The children
  stop with the launcher whatever ends it, kill -9 included (`die_with_parent`).

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

  def _printer(name):
    def _print(line):
      status.observe_line(name, line)
      status.print_child_line(f'[{name}] {line}')
    return _print

  children = [processes.Process(argv, name, on_line=_printer(name), die_with_parent=True)
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
    server = children[0]
    processes.stop_all([child for child in children if child is not server],
                       grace_s=STOP_GRACE_S)
    server.stop(STOP_GRACE_S)
    signal.signal(signal.SIGINT, previous)
  status.print_child_line(f'[local] done ({reason}); exit status {code}')
  return code
