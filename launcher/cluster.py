"""The fleet on a Ray cluster: each role's main runs as a child of a Ray actor that Ray places,
restarts and scales.

Nothing about the processes changes: a `RoleProcess` actor runs exactly the main and flags that
`launcher.processes.role_argv` gives the local launcher, as a child process that keeps its own
signal handling, watchdog and exit codes. What Ray adds:

* **Placement.** The replay server and the learner are pinned, by a custom resource that one node
  offers (`ray start --resources='{"reverb_server": 1}'`) or, without one, to the head node. Their `--root_dir` is that node's own disk, and a restart lands on the same
  node, so it finds its checkpoints there. Actors and eval are spread over the nodes (`SPREAD`)
  and ask for no GPU; the learner asks for `learner_gpus` and runs MirroredStrategy over them.
* **Addresses.** The server's address is its node's IP and a port chosen on that node at the
  first start and kept (in the server's own directory) across restarts; every other role gets
  it as `--replay_server_address`, never localhost.
* **Restarts.** When a main dies by a signal or a crash, its `RoleProcess` exits too, and Ray
  restarts the actor (`max_restarts=-1`), which starts the same main again: an actor keeps its
  task id, the learner resumes from its checkpoint, the server restores its replay checkpoint.
  When a node is lost, Ray places its actors on the other nodes. A main that exits with a
  status the error contract does not restart (`errors.restarted`: 2 bad input, 4 diverged) is
  not restarted: the run ends with its error line.
* **Files.** The gin files are read once by the launch command and shipped with the fleet's
  spec; each role writes them under its own directory (`<role dir>/launch/`), so no node needs
  the launch machine's disk.
* **The user's code.** The modules that the gin config names (its `import` lines, the
  environment's entry point, a Gymnasium id's `package:` prefix) and that the launch machine
  has outside its installed packages (on PYTHONPATH, or an editable install) travel with the run
  as Ray's runtime environment (`py_modules`, `user_modules`). Ray uploads local modules only
  for a whole job, so the launch command connects with them (`connect(py_modules=...)`); the
  detached controller it starts inherits them, and so does every role's Ray actor, and each
  main finds them on the PYTHONPATH Ray sets: the worker nodes need not have them.

The fleet is **detached**: a named `FleetController` actor on the head node (namespace
`reverb-fleet`) owns the
roles and enforces the run's end (target return, `--budget_s`, the learner's train steps), so
a launch command that dies, kill -9 included, leaves a fleet that still stops at its budget
and that a later command can attach to, scale or stop. Stopping the controller stops every
role: SIGTERM first (checkpoints are written), then the actors are killed, and each main also
gets SIGTERM from the kernel when its actor's process dies (`die_with_parent`).
"""

import collections
import dataclasses
import importlib.util
import json
import os
import re
import socket
import sysconfig
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import ray

from common import constants
from common import errors
from common import files
from common import weights_key
from launcher import processes
from launcher import ray_auth
from launcher import status as status_lib

NAMESPACE = 'reverb-fleet'
_LINES_KEPT = 20000  # Output lines the controller keeps for a (re)attaching launch command.
_POLL_S = 1.0  # Seconds between the controller's polls of its roles (and the watch's).
_SAMPLE_S = 5.0  # Seconds between reads of the replay table and the eval CSV.
_CALL_TIMEOUT_S = 10.0
_LINGER_S = 300.0  # How long a finished controller waits for a launch command to read it.


@dataclasses.dataclass(frozen=True)
class FleetSpec:
  """Everything a fleet is started from; sent to the controller and to every role.

  Attributes:
    name: The fleet's name (Ray actor names are `<name>/<role>`).
    gin_files: (file name, text) of each gin file, read on the launch machine.
    gin_bindings: Extra bindings, after the files.
    root_dir: The run directory, on each node's own disk (or a shared filesystem).
    num_actors: Collect actors (task ids 0..num_actors-1).
    budget_s: Wall-clock budget of the run (0: none).
    max_train_steps: Learner train-step budget (0: none).
    target_return: Eval return that ends the run (None: no target), from the gin config.
    server_timeout_s: Passed to every client role.
    port: The server's gRPC port; 0 picks a free one on its node at the first start.
    server_resource, learner_resource: Custom Ray resource that pins the role to the node
      offering it; '' pins it to the head node.
    actor_resource: Custom Ray resource that the actors and eval may run only where it is
      offered (a group of actor nodes, not the head or a GPU node); '' lets them go wherever
      `actor_cpus` fit.
    learner_gpus: GPUs the learner asks for (MirroredStrategy over them).
    actor_cpus: Logical CPUs each actor and eval ask for.
    checkpoint_interval_s: The replay server's checkpoint interval.
    weights_key: The run's weights key, hex (`common.weights_key`); the learner, the actors
      and eval get it as $REVERB_FLEET_WEIGHTS_KEY. Not in the spec's repr, nor in snapshots.
  """
  name: str
  gin_files: Tuple[Tuple[str, str], ...]
  gin_bindings: Tuple[str, ...]
  root_dir: str
  num_actors: int
  budget_s: float = 0.0
  max_train_steps: int = 0
  target_return: Optional[float] = None
  server_timeout_s: float = 300.0
  port: int = 0
  server_resource: str = ''
  learner_resource: str = ''
  actor_resource: str = ''
  learner_gpus: float = 0.0
  actor_cpus: float = 1.0
  checkpoint_interval_s: float = 60.0
  weights_key: str = dataclasses.field(default='', repr=False)


_IMPORT_LINE = re.compile(r'^\s*(?:import\s+([\w.]+)|from\s+([\w.]+)\s+import\b)', re.MULTILINE)


def user_modules(gin_texts: Sequence[Tuple[str, str]], entry_point: Optional[str] = None,
                 env_name: Optional[str] = None) -> Tuple[str, ...]:
  """Local paths of the user's modules that the run needs on every node.

  Named by the gin files' `import` lines (gin's own import statement), the environment's entry
  point (`package.module:callable`) and a Gymnasium id's `package:Env-v0` prefix. For each
  top-level package found here, its directory (or a single module's file) is returned, unless it
  is an installed package (under site-packages: the nodes' image has what the project installs,
  and a user's package installed the same way), part of the standard library, or this project.
  """
  names = set()
  for _, text in gin_texts:
    for match in _IMPORT_LINE.finditer(text):
      module = match.group(1) or match.group(2)
      if not module.startswith('__gin__'):
        names.add(module)
  if entry_point and ':' in entry_point:
    names.add(entry_point.split(':', 1)[0])
  if env_name and ':' in env_name:
    names.add(env_name.split(':', 1)[0])
  installed = {os.path.realpath(p) for p in (sysconfig.get_paths()['purelib'],
                                             sysconfig.get_paths()['platlib'],
                                             sysconfig.get_paths()['stdlib'])}
  project = os.path.realpath(processes.REPO)
  paths = []
  for top in sorted({n.split('.')[0] for n in names}):
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
      path = list(spec.submodule_search_locations)[0]  # A package: its directory.
    elif spec is not None and spec.origin and os.path.isfile(spec.origin):
      path = spec.origin  # A single module's file.
    else:
      continue  # Not found here, or built into the interpreter.
    real = os.path.realpath(path)
    if any(real == d or real.startswith(d + os.sep) for d in installed):
      continue
    if real == project or os.path.dirname(real) == project:
      continue
    paths.append(real)
  return tuple(paths)


def role_name(role: str, task: Optional[int] = None) -> str:
  """`actor/3` for actors, the role itself otherwise (the prefix of its output lines)."""
  return f'actor/{task}' if role == 'actor' else role


def role_dir(root_dir: str, role: str, task: Optional[int] = None) -> str:
  """The role's own sub-directory of the run directory (what it may write)."""
  sub = {'replay_server': constants.REPLAY_DIR, 'learner': constants.LEARNER_DIR,
         'eval': constants.EVAL_DIR}.get(role) or os.path.join(constants.ACTOR_DIR, str(task))
  return os.path.join(root_dir, sub)


def actor_name(fleet: str, name: str) -> str:
  return f'{fleet}/{name}'


# Every Ray cluster's head node offers this resource (Ray's own cluster-wide actors use it).
HEAD_RESOURCE = 'node:__internal_head__'


def placement_options(spec: FleetSpec, role: str) -> Dict[str, object]:
  """Ray actor options of one role: its resources and where it may run."""
  if role in ('replay_server', 'learner'):
    resource = spec.server_resource if role == 'replay_server' else spec.learner_resource
    options = dict(num_cpus=1, num_gpus=spec.learner_gpus if role == 'learner' else 0)
    options['resources'] = {resource: 1} if resource else {HEAD_RESOURCE: 0.001}
    return options
  options = dict(num_cpus=spec.actor_cpus, num_gpus=0, scheduling_strategy='SPREAD')
  if spec.actor_resource:
    options['resources'] = {spec.actor_resource: 0.001}  # A thousand actors per unit.
  return options


@ray.remote(max_restarts=-1, max_task_retries=0)
class RoleProcess:
  """One role's main as a child process of this Ray actor (see the module docstring)."""

  def __init__(self, spec: FleetSpec, role: str, task: Optional[int] = None,
               address: Optional[str] = None):
    context = ray.get_runtime_context()
    self._spec, self._role, self._task = spec, role, task
    self.name = role_name(role, task)
    self._dir = role_dir(spec.root_dir, role, task)
    launch_dir = os.path.join(self._dir, 'launch')
    os.makedirs(launch_dir, exist_ok=True)
    self._node_id = context.get_node_id()
    self._node_ip = ray.util.get_node_ip_address()
    self._restarted = context.was_current_actor_reconstructed
    self._lines = collections.deque(maxlen=_LINES_KEPT)
    self._seq = 0
    self._lock = threading.Lock()
    self._stopping = False
    self._fatal = None
    gin_paths = []
    for i, (file_name, text) in enumerate(spec.gin_files):
      path = os.path.join(launch_dir, f'{i}-{os.path.basename(file_name)}')
      with open(path, 'w') as f:
        f.write(text)
      gin_paths.append(path)
    flags = dict(gin_files=gin_paths, gin_bindings=spec.gin_bindings, root_dir=spec.root_dir)
    if role == 'replay_server':
      self._port = self._server_port(launch_dir)
      self.address = f'{self._node_ip}:{self._port}'
      argv = processes.role_argv(role, port=self._port, **flags, extra=[
          f'--checkpoint_interval_s={spec.checkpoint_interval_s:g}',
          f'--stop_grace_s={processes.stop_of("replay_server")[1]:g}'])
    else:
      self.address = address
      extra = {'learner': [f'--max_train_steps={spec.max_train_steps}'],
               'actor': [f'--num_actors={spec.num_actors}']}.get(role, [])
      argv = processes.role_argv(role, task=task, address=address,
                                 server_timeout_s=spec.server_timeout_s, extra=extra, **flags)
    self._add(f'[ray] {self.name} {"restarted" if self._restarted else "started"} on node '
              f'{self._node_ip} ({self._node_id[:8]})')
    env = {weights_key.ENV_VAR: spec.weights_key} if role != 'replay_server' else {}
    self._process = processes.Process(
        argv, self.name, log_path=os.path.join(launch_dir, 'output.log'), on_line=self._add,
        cpu_only=not (role == 'learner' and spec.learner_gpus), die_with_parent=True,
        cwd=processes.REPO, env=env)
    threading.Thread(target=self._watch, daemon=True, name=f'watch {self.name}').start()

  def _server_port(self, launch_dir: str) -> int:
    """The port of the first start, kept in the server's directory for its restarts."""
    if self._spec.port:
      return self._spec.port
    path = os.path.join(launch_dir, 'port')
    if os.path.exists(path):
      with open(path) as f:
        return int(f.read())
    import portpicker  # pylint: disable=g-import-not-at-top
    port = portpicker.pick_unused_port()
    files.atomic_write(path, str(port))
    return port

  def _add(self, line: str) -> None:
    with self._lock:
      self._seq += 1
      self._lines.append((self._seq, line))

  def _watch(self) -> None:
    code = self._process.wait()
    self._process.close()
    if self._stopping or code == 0:
      return
    if not errors.restarted(code):
      why = 'bad input' if code == errors.EXIT_BAD_INPUT else 'diverged'
      self._fatal = f'{self.name} exited with status {code} ({why}; not restarted)'
      self._add(f'[ray] {self._fatal}')
      return
    # Dying with the child hands the restart to Ray (max_restarts), which reruns __init__.
    logging.warning('%s exited with status %s: exiting so that Ray restarts it', self.name, code)
    os._exit(1)  # pylint: disable=protected-access

  def poll(self, after: int = 0) -> Dict[str, object]:
    """The role's state, and its output lines numbered above `after`."""
    with self._lock:
      lines = [(s, l) for s, l in self._lines if s > after]
    return dict(name=self.name, role=self._role, task=self._task, node_id=self._node_id,
                node_ip=self._node_ip, pid=self._process.pid, actor_pid=os.getpid(),
                returncode=self._process.poll(), fatal=self._fatal, address=self.address,
                restarted=self._restarted, lines=lines)

  def server_address(self) -> str:
    return self.address

  def recorded_flags(self) -> Optional[Dict[str, object]]:
    """The flags the main recorded under its directory (None until it has)."""
    path = os.path.join(self._dir, 'flags.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def last_eval(self) -> Optional[Dict[str, float]]:
    """The newest row of the eval CSV on this node (eval only)."""
    from common import eval_log  # pylint: disable=g-import-not-at-top
    rows = eval_log.read_csv(os.path.join(self._spec.root_dir, constants.EVAL_CSV))
    return rows[-1] if rows else None

  def stop(self) -> Optional[int]:
    """SIGTERM to the main, a wait of its role's grace (`processes.STOPS`), then SIGKILL;
    returns its exit status."""
    self._stopping = True
    return self._process.stop(processes.stop_of(self._role)[1])


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=16)
class FleetController:
  """Owns a fleet's roles: starts them, relays their output, scales them, ends the run."""

  def __init__(self, spec: FleetSpec):
    self._spec = spec
    self._lock = threading.Lock()
    self._roles: Dict[str, object] = {}  # name -> RoleProcess handle
    self._state: Dict[str, Dict[str, object]] = {}  # name -> last poll (without lines)
    self._cursor: Dict[str, int] = collections.defaultdict(int)
    self._pending: Dict[str, object] = {}  # name -> poll ref in flight
    self._lines = collections.deque(maxlen=_LINES_KEPT)
    self._seq = 0
    self._address = None
    self._num_actors = 0
    self._start = time.monotonic()
    self._started_at = time.time()
    self._done: Optional[Tuple[int, str]] = None
    self._stop_request: Optional[str] = None
    self._last_eval = None
    self._table = (None, None)
    self._client = None
    self._stopped = threading.Event()
    self._delivered = threading.Event()
    threading.Thread(target=self._supervise, daemon=True, name='supervise').start()

  # ---- output --------------------------------------------------------------------------------

  def _say(self, name: str, line: str) -> None:
    with self._lock:
      self._seq += 1
      self._lines.append((self._seq, name, line))

  # ---- roles ---------------------------------------------------------------------------------

  def _create(self, role: str, task: Optional[int] = None) -> None:
    name = role_name(role, task)
    options = placement_options(self._spec, role)
    handle = RoleProcess.options(name=actor_name(self._spec.name, name), namespace=NAMESPACE,
                                 **options).remote(self._spec, role, task, self._address)
    with self._lock:
      self._roles[name] = handle

  def _start_fleet(self) -> None:
    spec = self._spec
    self._say('ray', f'fleet {spec.name}: root_dir={spec.root_dir} actors={spec.num_actors} '
              f'target_return={spec.target_return} budget_s={spec.budget_s or "none"}')
    self._create('replay_server')
    ref = self._roles['replay_server'].server_address.remote()
    waited = 0.0
    while True:
      ready, _ = ray.wait([ref], timeout=10.0)
      if ready:
        self._address = ray.get(ref)
        break
      waited += 10.0
      if self._stop_request:
        return
      self._say('ray', f'waiting for the replay server to be placed ({waited:.0f} s so far): '
                'check `ray status` for a node with the resources it asks for')
    self._say('ray', f'replay server at {self._address}')
    self._create('learner')
    for task in range(spec.num_actors):
      self._create('actor', task)
    self._num_actors = spec.num_actors
    self._create('eval')

  def _poll_roles(self) -> None:
    with self._lock:
      roles = dict(self._roles)
    for name, handle in roles.items():
      if name not in self._pending:
        self._pending[name] = handle.poll.remote(self._cursor[name])
    refs = {ref: name for name, ref in self._pending.items()}
    if not refs:
      return
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=_POLL_S)
    for ref in ready:
      name = refs[ref]
      self._pending.pop(name, None)
      if name not in roles:
        continue
      try:
        state = ray.get(ref)
      except ray.exceptions.RayError as e:  # Restarting, or gone for good.
        previous = self._state.get(name)
        if previous is not None and previous.get('up'):
          self._say('ray', f'{name} is down ({type(e).__name__}); Ray restarts it')
          previous['up'] = False
        continue
      previous = self._state.get(name)
      if previous is not None and previous['actor_pid'] != state['actor_pid']:
        # A new incarnation numbers its lines from 1 again: read them all on the next poll.
        self._cursor[name] = 0
        previous.update(actor_pid=state['actor_pid'], restarts=previous['restarts'] + 1,
                        up=False)
        continue
      state['restarts'] = previous['restarts'] if previous else 0
      for seq, line in state.pop('lines'):
        self._cursor[name] = max(self._cursor[name], seq)
        self._say(name, line)
      state['up'] = True
      self._state[name] = state

  def _sample(self) -> None:
    """Reads the replay table's counters and the newest eval row (every `_SAMPLE_S`)."""
    # pylint: disable=g-import-not-at-top  (Reverb and TensorFlow in the controller only)
    import reverb
    from common import replay
    if self._address and self._client is None:
      self._client = reverb.Client(self._address)
    try:
      info = self._client.server_info(timeout=2) if self._client else None
    except Exception:  # pylint: disable=broad-except  (down or restarting: no figures now)
      info = None
    table = info.get(constants.REPLAY_TABLE) if info else None
    self._table = ((int(table.current_size), replay.inserted_env_steps(table))
                   if table is not None else (None, None))
    handle = self._roles.get('eval')
    if handle is not None:
      try:
        self._last_eval = ray.get(handle.last_eval.remote(), timeout=_CALL_TIMEOUT_S)
      except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
        pass

  def _supervise(self) -> None:
    try:
      self._start_fleet()
      sampled_at = -float('inf')
      while self._done is None:
        started = time.monotonic()
        self._poll_roles()
        if started - sampled_at >= _SAMPLE_S:
          self._sample()
          sampled_at = started
        elapsed = time.monotonic() - self._start
        fatal = next((s['fatal'] for s in self._state.values() if s.get('fatal')), None)
        learner = self._state.get('learner') or {}
        result = status_lib.outcome(self._spec.target_return, self._last_eval, elapsed,
                                    self._spec.budget_s, self._spec.max_train_steps,
                                    learner.get('returncode') == 0, fatal)
        if self._stop_request:
          result = (130, self._stop_request)
        if result:
          self._finish(*result)
        else:
          time.sleep(max(_POLL_S - (time.monotonic() - started), 0.0))
    except Exception as e:  # pylint: disable=broad-except  (the run must still stop its roles)
      logging.exception('fleet controller failed')
      self._finish(1, f'fleet controller failed: {type(e).__name__}: {e}')

  def _finish(self, code: int, reason: str) -> None:
    self._say('ray', f'stopping: {reason}')
    with self._lock:
      roles = dict(self._roles)
    codes = {}
    for stage in sorted({processes.stop_of(name)[0] for name in roles}):
      # The server's clients first, the server last (`processes.STOPS`).
      names = [name for name in roles if processes.stop_of(name)[0] == stage]
      grace = max(processes.stop_of(name)[1] for name in names)
      codes.update(self._call_all('stop', timeout_s=grace + 30, names=names))
    self._poll_roles()  # The last lines (final checkpoints, stop lines).
    for handle in roles.values():
      ray.kill(handle, no_restart=True)
    self._say('ray', f'done ({reason}); exit status {code}; roles: '
              + ', '.join(f'{n}={c}' for n, c in codes.items()))
    self._done = (code, reason)
    self._stopped.set()
    # A launch command attached now reads the last lines within seconds; nobody attached
    # within the linger time means nobody will: the detached controller removes itself.
    self._delivered.wait(timeout=_LINGER_S)
    time.sleep(2 * _POLL_S)
    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

  # ---- what a launch command calls ------------------------------------------------------------

  def snapshot(self, after: int = 0) -> Dict[str, object]:
    """Output lines numbered above `after`, the replay table, the last eval, where roles run."""
    with self._lock:
      lines = [l for l in self._lines if l[0] > after]
      if self._done is not None:
        self._delivered.set()
    size, inserted = self._table
    return dict(lines=lines, size=size, inserted=inserted, last_eval=self._last_eval,
                done=self._done, address=self._address, num_actors=self._num_actors,
                roles={n: dict(s) for n, s in self._state.items()},
                elapsed_s=time.monotonic() - self._start, started_at=self._started_at,
                spec=dict(dataclasses.asdict(self._spec), weights_key=None))

  def _call_all(self, method: str, timeout_s: float,
                names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Calls `method` on every role (or those `names`) at once; name -> its result, or the
    error's type name."""
    with self._lock:
      roles = {n: h for n, h in self._roles.items() if names is None or n in names}
    refs = {name: getattr(handle, method).remote() for name, handle in roles.items()}
    deadline = time.monotonic() + timeout_s
    results = {}
    for name, ref in refs.items():
      try:
        results[name] = ray.get(ref, timeout=max(deadline - time.monotonic(), 0.1))
      except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
        results[name] = type(e).__name__
    return results

  def recorded_flags(self) -> Dict[str, object]:
    """Each role's recorded flags (flags.json), read on its own node (None where unread)."""
    return {name: value if isinstance(value, dict) else None
            for name, value in self._call_all('recorded_flags', _CALL_TIMEOUT_S).items()}

  def scale(self, num_actors: int) -> str:
    """Adds actors (task ids from the current count up) or removes the highest task ids."""
    if num_actors < 0:
      raise ValueError(f'--num_actors must be >= 0, not {num_actors}')
    if self._done or self._address is None:
      return 'the fleet is not running: nothing scaled'
    before = self._num_actors
    for task in range(before, num_actors):
      self._create('actor', task)
    for task in range(before - 1, num_actors - 1, -1):
      name = role_name('actor', task)
      with self._lock:
        handle = self._roles.pop(name)
      try:
        ray.get(handle.stop.remote(), timeout=90)
      except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
        pass
      ray.kill(handle, no_restart=True)
      self._state.pop(name, None)
      self._pending.pop(name, None)
    self._num_actors = num_actors
    message = f'scaled actors from {before} to {num_actors}'
    self._say('ray', message)
    return message

  def stop(self, reason: str = 'stop requested') -> Tuple[int, str]:
    """Ends the run (SIGTERM to every role, then their actors are killed); waits for it."""
    self._stop_request = self._stop_request or reason
    self._stopped.wait(timeout=300)
    return self._done

  def done(self) -> Optional[Tuple[int, str]]:
    return self._done


# ---- the launch command's side ------------------------------------------------------------------


def wait_for_port(address: str, timeout_s: float, log_every_s: float = 10.0) -> None:
  """Polls a TCP connect to `host:port` until it succeeds, logging while it waits.

  Raises:
    ConnectionError: nothing accepted a connection within `timeout_s`.
  """
  host, _, port = address.rpartition(':')
  start, last_log = time.monotonic(), time.monotonic()
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        return
    except OSError as e:
      error = e
    waited = time.monotonic() - start
    if waited >= timeout_s:
      raise ConnectionError(f'nothing answered within {timeout_s:g} s: {error}')
    if time.monotonic() - last_log >= log_every_s:
      print(f'[ray] waiting for the Ray cluster at {address} ({waited:.0f} s so far, deadline '
            f'{timeout_s:g} s)', flush=True)
      last_log = time.monotonic()
    time.sleep(1.0)


def connect(address: str, num_cpus: int = 0, timeout_s: float = 60.0,
            py_modules: Sequence[str] = ()) -> None:
  """Connects to the cluster at `address`; `local` starts a throwaway one on this machine.

  A `host:port` address is first polled with plain TCP connects for up to `timeout_s` (Ray's
  own connect retries for minutes without a word), then must demand Ray's token and take this
  process's (`ray_auth.require_token_auth`) before anything is sent to it. A cluster found
  otherwise (`local`, `auto`) is checked the same way once connected, and left at once if it
  is open. `py_modules` (`user_modules`) are uploaded as this job's runtime environment, which
  the fleet's actors inherit.

  Raises:
    ConnectionError: no cluster answers at `address`.
    UserError: the cluster runs without authentication, or this process has not its token.
  """
  os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
  if ':' in address:
    wait_for_port(address, timeout_s)
    ray_auth.require_token_auth(address)
  runtime_env = {'py_modules': list(py_modules)} if py_modules else None
  mode = os.environ.get('RAY_AUTH_MODE')
  if address == 'local' and mode is not None and mode.lower() != 'token':
    raise errors.UserError(f'--address=local with RAY_AUTH_MODE={mode} would start a Ray '
                           'cluster on which anyone who reaches this machine runs code: unset '
                           'RAY_AUTH_MODE (Ray then makes a token for it), or set it to token')
  if address == 'local':
    # address='local': always a new cluster, never one found in /tmp/ray. Ray turns token
    # authentication on for it unless RAY_AUTH_MODE says otherwise (checked below).
    ray.init(address='local', num_cpus=num_cpus or None, namespace=NAMESPACE,
             include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
  else:
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
             runtime_env=runtime_env)
  if ':' not in address:
    try:
      ray_auth.require_token_auth(ray.get_runtime_context().gcs_address)
    except errors.UserError:
      ray.shutdown()
      raise


def controller(name: str):
  """The controller of the running fleet `name`.

  Raises:
    ValueError: no such fleet on this cluster.
  """
  return ray.get_actor(actor_name(name, 'controller'), namespace=NAMESPACE)


def start_fleet(spec: FleetSpec):
  """Starts the fleet's detached controller, which starts the roles; returns its handle."""
  # On the head: it lives as long as the cluster, whichever worker node is lost.
  return FleetController.options(name=actor_name(spec.name, 'controller'), namespace=NAMESPACE,
                                 lifetime='detached',
                                 resources={HEAD_RESOURCE: 0.001}).remote(spec)


def missing_resources(spec: FleetSpec) -> List[str]:
  """The custom resources the spec pins roles with that no node of the cluster offers."""
  offered = ray.cluster_resources()
  return [r for r in (spec.server_resource, spec.learner_resource, spec.actor_resource)
          if r and r not in offered]


def watch(handle, budget_s: float, max_train_steps: int, out, stop_on_interrupt: bool = True,
          interrupted: Optional[threading.Event] = None, elapsed_s: float = 0.0) -> int:
  """Shows the fleet's output and status line until the run ends; returns its exit status.

  Ctrl-C (`interrupted` set) stops the fleet when `stop_on_interrupt`, and detaches otherwise.
  `elapsed_s` is the fleet's age when the watch starts (for the status line's clock).
  """
  cursor = 0
  snapshot = {}
  stopping = False

  def _sampler():
    return snapshot.get('size'), snapshot.get('inserted'), snapshot.get('last_eval')

  status = status_lib.StatusLine(out, '', '', budget_s, max_train_steps, sampler=_sampler,
                                 started_s_ago=elapsed_s)
  interrupted = interrupted or threading.Event()
  while True:
    try:
      snapshot = ray.get(handle.snapshot.remote(cursor), timeout=30)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
      status.close()
      status.print_child_line(f'[ray] lost the fleet controller ({type(e).__name__}): see '
                              '`ray list actors` on the cluster')
      return 1
    for seq, name, line in snapshot['lines']:
      cursor = max(cursor, seq)
      status.observe_line(name, line)
      status.print_child_line(f'[{name}] {line}')
    if snapshot['done']:
      status.close()
      return snapshot['done'][0]
    if interrupted.is_set() and not stopping:
      if not stop_on_interrupt:
        status.close()
        status.print_child_line('[ray] detached; the fleet runs on (`python -m launcher.ray '
                                'stop` ends it)')
        return 0
      status.print_child_line('[ray] interrupted: stopping the fleet')
      handle.stop.remote('interrupted')
      stopping = True
    status.refresh()
    time.sleep(_POLL_S)


def stop(name: str, reason: str) -> Tuple[int, str]:
  """Stops fleet `name` and removes its controller."""
  handle = controller(name)
  done = ray.get(handle.stop.remote(reason), timeout=400)
  ray.kill(handle, no_restart=True)
  return done


def gin_texts(paths: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
  """(path, text) of each gin file, read here for shipping to the nodes."""
  result = []
  for path in paths:
    with open(path) as f:
      result.append((path, f.read()))
  return tuple(result)
