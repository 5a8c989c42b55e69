"""Process control, written once: each role's command line, and start, SIGTERM, wait and kill.

Every launcher (the local run, the container entrypoint, the Ray cluster launcher), the bench and
the tests start the project's processes through this module:

* `role_argv(role, ...)` is the command line a user would type for one role (`ROLES`), built
  from the deployment values; nothing else in the project spells a role's flags.
* `Process` is one started child. Its output goes to a log file, to a per-line callback, or both.
  `stop()` sends SIGTERM (the mains checkpoint and exit on it), waits a bounded grace, then
  SIGKILLs; `stop_all()` signals a whole group first so that their graces overlap.
* `die_with_parent=True` makes the child exit (SIGTERM) when the process that started it dies by
  any signal, kill -9 included: a main started that way reads $REVERB_FLEET_PARENT_PID at start
  and asks the kernel for a parent-death signal (`main_utils.block_stop_signals`). Start such
  children from a thread that lives as long as the parent (Linux ties the signal to the
  thread that forked).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO

from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARENT_PID_ENV = 'REVERB_FLEET_PARENT_PID'

# Role -> (python module, the flags that select the role).
ROLES: Dict[str, tuple] = {
    'replay_server': ('replay_server.main', ()),
    'learner': ('learner.main', ()),
    'actor': ('actor.main', ('--mode=collect',)),
    'eval': ('actor.main', ('--mode=eval',)),
    'tensorboard': ('tensorboard.main', ()),
}


# How each role stops, under every launcher: (stage, seconds after SIGTERM before SIGKILL).
# Stage 0, the server's clients, stops before stage 1, the replay server, so that the learner's
# last weight push and checkpoint and the actors' last items still reach the server. The graces
# cover each role's final saves: the learner's checkpoint, export and push; the server's replay
# checkpoint; an actor's unconfirmed items. `stop_in_stages` (the local launcher), the Ray
# controller and docker-compose.yml (stop_grace_period, and depends_on for the order; checked by
# tests/test_processes.py) all follow it.
STOPS: Dict[str, tuple] = {
    'learner': (0, 180.0),
    'actor': (0, 60.0),
    'eval': (0, 60.0),
    'tensorboard': (0, 60.0),
    'replay_server': (1, 120.0),
}


def stop_of(name: str) -> tuple:
  """(stage, grace in seconds) of a process named by its role (`learner`, `actor/3`)."""
  return STOPS[name.split('/')[0]]


class RoleError(ValueError):
  """An unknown role, or flags that do not fit the role."""


def module_argv(role: str) -> List[str]:
  """`['-m', module, role flags...]` for `role` (the interpreter not included)."""
  if role not in ROLES:
    raise RoleError(f'unknown role {role!r}: use one of {", ".join(ROLES)}')
  module, fixed = ROLES[role]
  return ['-m', module, *fixed]


def role_flags(role: str, *, gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = (),
               root_dir: Optional[str] = None, address: Optional[str] = None,
               port: Optional[int] = None, task: Optional[int] = None,
               server_timeout_s: Optional[float] = None,
               extra: Sequence[str] = ()) -> List[str]:
  """The flags of one role's main, in the order a user would type them.

  Args:
    role: One of ROLES.
    gin_files, gin_bindings: The experiment, passed to every role alike.
    root_dir: The run directory.
    address: `host:port` of the replay server (every role but the server).
    port: The server's gRPC port (the server only).
    task: The actor's task id (actors only).
    server_timeout_s: Deadline for reaching the server (every role but the server).
    extra: Further flags, appended as given (`--max_train_steps=100`, ...).

  Raises:
    RoleError: a flag given to a role that has no such flag.
  """
  if role not in ROLES:
    raise RoleError(f'unknown role {role!r}: use one of {", ".join(ROLES)}')
  if role == 'replay_server' and (address is not None or server_timeout_s is not None):
    raise RoleError('the replay server takes --port, not a server address or timeout')
  if role != 'replay_server' and port is not None:
    raise RoleError(f'--port is the replay server\'s flag, not the {role}\'s')
  if task is not None and role != 'actor':
    raise RoleError(f'--task is an actor\'s flag, not the {role}\'s')
  flags = [f'--gin_file={f}' for f in gin_files] + [f'--gin_bindings={b}' for b in gin_bindings]
  if root_dir is not None:
    flags.append(f'--root_dir={root_dir}')
  if port is not None:
    flags.append(f'--port={port}')
  if address is not None:
    flags.append(f'--replay_server_address={address}')
  if server_timeout_s is not None:
    flags.append(f'--server_timeout_s={server_timeout_s:g}')
  if task is not None:
    flags.append(f'--task={task}')
  return flags + list(extra)


def role_argv(role: str, **kwargs) -> List[str]:
  """The full command line of one role: this interpreter, the module and `role_flags`."""
  return [sys.executable] + module_argv(role) + role_flags(role, **kwargs)


def child_env(cpu_only: bool = True, die_with_parent: bool = False,
              extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of a child: unbuffered output, no GPU unless asked, the parent's pid.

  Relative PYTHONPATH entries are made absolute from this process's working directory: the
  children run in the repository (`Process`'s cwd), and a user's `PYTHONPATH=.` or
  `PYTHONPATH=src` names their own project's directory, where their environment's package is.
  """
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  if env.get('PYTHONPATH'):
    env['PYTHONPATH'] = os.pathsep.join(
        os.path.abspath(p) if p else os.getcwd() for p in env['PYTHONPATH'].split(os.pathsep))
  if cpu_only:
    env['CUDA_VISIBLE_DEVICES'] = ''
  if die_with_parent:
    env[PARENT_PID_ENV] = str(os.getpid())
  else:
    env.pop(PARENT_PID_ENV, None)
  env.update(extra or {})
  return env


class Process:
  """One child process of the project, with bounded stops.

  Args:
    argv: The full command line (`role_argv(...)`, or any other).
    name: What log lines call it (`learner`, `actor/3`).
    log_path: File that receives the child's output (appended, so restarts keep history).
    on_line: Called with each output line (without its newline) from a reader thread.
    cpu_only: Hide every GPU from the child (`CUDA_VISIBLE_DEVICES=''`).
    die_with_parent: See the module docstring.
    env: Extra environment variables.
    cwd: Working directory (the repository by default, so `-m` finds the packages).
    new_session: Start the child in its own session, so a Ctrl-C on the terminal reaches
      only the launcher, which then stops the children in order.
  """

  def __init__(self, argv: Sequence[str], name: str, *, log_path: Optional[str] = None,
               on_line: Optional[Callable[[str], None]] = None, cpu_only: bool = True,
               die_with_parent: bool = False, env: Optional[Dict[str, str]] = None,
               cwd: str = REPO, new_session: bool = True):
    self.name = name
    self.argv = list(argv)
    self.log_path = log_path
    self._log: Optional[TextIO] = None
    if log_path:
      os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
      self._log = open(log_path, 'a', buffering=1)  # pylint: disable=consider-using-with
    piped = on_line is not None
    self.popen = subprocess.Popen(
        self.argv, cwd=cwd, env=child_env(cpu_only, die_with_parent, env),
        stdout=subprocess.PIPE if piped else (self._log or subprocess.DEVNULL),
        stderr=subprocess.STDOUT, text=piped, errors='replace' if piped else None,
        start_new_session=new_session)
    self._reader = None
    if piped:
      self._reader = threading.Thread(target=self._pump, args=(on_line,), daemon=True,
                                      name=f'output of {name}')
      self._reader.start()

  def _pump(self, on_line: Callable[[str], None]) -> None:
    for raw in self.popen.stdout:
      line = raw.rstrip('\n')
      if self._log:
        self._log.write(line + '\n')
      on_line(line)

  @property
  def pid(self) -> int:
    return self.popen.pid

  @property
  def returncode(self) -> Optional[int]:
    return self.popen.returncode

  def poll(self) -> Optional[int]:
    return self.popen.poll()

  def alive(self) -> bool:
    return self.popen.poll() is None

  def signal(self, signum: int) -> None:
    """Sends `signum` if the child still runs (a stopped child is continued for SIGTERM)."""
    if self.popen.poll() is None:
      if signum in (signal.SIGTERM, signal.SIGINT):
        self.popen.send_signal(signal.SIGCONT)
      self.popen.send_signal(signum)

  def terminate(self) -> None:
    self.signal(signal.SIGTERM)

  def kill(self) -> None:
    """SIGKILL, and waits for the child to be reaped."""
    self.signal(signal.SIGKILL)
    self.popen.wait(timeout=30)

  def pause(self) -> None:
    """SIGSTOP: the child keeps its state and connections but takes no CPU."""
    self.signal(signal.SIGSTOP)

  def resume(self) -> None:
    self.signal(signal.SIGCONT)

  def wait(self, timeout_s: Optional[float] = None) -> Optional[int]:
    """The exit status, or None if the child still runs after `timeout_s`."""
    try:
      return self.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      return None

  def stop(self, grace_s: float = 60.0) -> int:
    """SIGTERM, a bounded wait, then SIGKILL (logged); returns the exit status."""
    self.terminate()
    if self.wait(grace_s) is None:
      logging.warning('%s ignored SIGTERM for %.0f s; killing it', self.name, grace_s)
      self.kill()
    self.close()
    return self.popen.returncode

  def close(self) -> None:
    """Waits for the output to be read and closes the log (the child must have exited)."""
    if self._reader is not None:
      self._reader.join(timeout=5)
    if self._log is not None and not self._log.closed:
      self._log.close()

  def log_text(self) -> str:
    """What the child wrote to `log_path` so far ('' without one)."""
    if not self.log_path or not os.path.exists(self.log_path):
      return ''
    with open(self.log_path, errors='replace') as f:
      return f.read()


def stop_all(processes: Iterable[Process], grace_s: float = 60.0) -> Dict[str, int]:
  """SIGTERM to every process first, then a bounded wait for each; returns exit statuses."""
  processes = list(processes)
  for process in processes:
    process.terminate()
  deadline = time.monotonic() + grace_s
  return {process.name: process.stop(max(deadline - time.monotonic(), 0.1))
          for process in processes}


def stop_in_stages(processes: Iterable[Process]) -> Dict[str, int]:
  """Stops the project's processes (named by role) stage by stage (`STOPS`): SIGTERM to every
  process of a stage, then each waited for up to its own grace; returns exit statuses."""
  by_stage: Dict[int, List[Process]] = {}
  for process in processes:
    by_stage.setdefault(stop_of(process.name)[0], []).append(process)
  codes = {}
  for stage in sorted(by_stage):
    group = by_stage[stage]
    for process in group:
      process.terminate()
    start = time.monotonic()
    for process in group:
      left = stop_of(process.name)[1] - (time.monotonic() - start)
      codes[process.name] = process.stop(max(left, 0.1))
  return codes