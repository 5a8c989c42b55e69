r"""The Docker image's entrypoint: one image, the role chosen by the first argument.

  python -m launcher.container ROLE [FLAGS...]

Roles that run a process (the entrypoint execs it, so it becomes the container's main process
and receives `docker stop`'s SIGTERM itself):

  replay_server  python -m replay_server.main FLAGS
  learner        python -m learner.main FLAGS
  actor          python -m actor.main --mode=collect FLAGS  (+ --task from the container name)
  eval           python -m actor.main --mode=eval FLAGS
  tensorboard    python -m tensorboard.main FLAGS

Roles that answer and exit:

  healthcheck [HOST:PORT]     exit 0 if the Reverb server answers a ServerInfo call that lists
                              the replay table, 1 otherwise (gRPC only, no TensorFlow import)
  status [HOST:PORT] [FLAGS]  the fleet status view (launcher/fleet_status.py; --watch, ...)

Two container conveniences:

* An actor with no `--task` takes its task id from its container's name. Compose names the
  replicas of a scaled service `<project>_actor_<n>` (Compose v2: `<project>-actor-<n>`) with
  n = 1, 2, ..., and keeps the name when the container restarts; Docker's DNS answers the
  reverse lookup of the container's own address with that name. Task = n - 1, so
  `--scale actor=8` gives tasks 0..7, hence distinct seeds (ActorConfig.seed + 1000 * task).
* A `--gin_bindings` value may hold several bindings separated by ';' (one environment
  variable in docker-compose.yml carries them all); they are passed on one per flag.
"""

import os
import re
import socket
import sys
from typing import List, Optional, Sequence

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.reversename

from common import constants
from launcher import processes

DEFAULT_ADDRESS = f'localhost:{constants.DEFAULT_PORT}'
RESOLV_CONF = '/etc/resolv.conf'
_DNS_PORT = 53
_DNS_TIMEOUT_S = 2.0
_DNS_ATTEMPTS = 3
_REPLICA = re.compile(r'^(?P<base>.+?)[_-](?P<number>[0-9]+)$')
# gRPC method of Reverb's service that `reverb.Client.server_info` calls.
_HEALTH_TIMEOUT_S = 3.0


class ContainerError(Exception):
  """The container's arguments or surroundings do not allow the role to start."""


# ---- Task ids from container names ----------------------------------------------------------


def replica_number(name: str) -> int:
  """The replica number at the end of a Compose container name.

  Args:
    name: A container name (`proj_actor_3`, `proj-actor-3`), or the DNS name Docker gives it
      (`proj_actor_3.proj_default`).

  Returns:
    The number n >= 1.

  Raises:
    ContainerError: the name does not end in `_<n>` or `-<n>`.
  """
  short = name.rstrip('.').split('.')[0]
  match = _REPLICA.match(short)
  if not match or int(match.group('number')) < 1:
    raise ContainerError(
        f'container name {short!r} does not end in a replica number (_1, -2, ...), so the '
        'actor task id cannot be derived from it: start actors with docker-compose, or pass '
        '--task=N')
  return int(match.group('number'))


def ptr_name(response) -> Optional[str]:
  """The first PTR name of a DNS response (`dns.message.Message`), without the root dot; None
  when it has none (NXDOMAIN, no answer)."""
  for rrset in response.answer:
    if rrset.rdtype == dns.rdatatype.PTR and len(rrset):
      return rrset[0].target.to_text(omit_final_dot=True)
  return None


def nameserver(resolv_conf: str = RESOLV_CONF) -> str:
  """The first nameserver in resolv.conf (Docker's embedded DNS, 127.0.0.11, on Compose)."""
  try:
    with open(resolv_conf) as f:
      for line in f:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == 'nameserver':
          return fields[1]
  except OSError:
    pass
  raise ContainerError(f'no nameserver in {resolv_conf}: cannot look up this container\'s name; '
                       'pass --task=N')


def reverse_lookup(address: str, server: str, timeout_s: float = _DNS_TIMEOUT_S,
                   attempts: int = _DNS_ATTEMPTS, port: int = _DNS_PORT) -> Optional[str]:
  """Asks DNS `server` (UDP `port`) for the PTR name of `address`; None if it has none.

  dnspython builds the query and reads the answer; a stray or malformed packet on the socket is
  skipped while the attempt's `timeout_s` lasts.

  Raises:
    ContainerError: the server did not answer in `attempts` tries of `timeout_s` each.
  """
  query = dns.message.make_query(dns.reversename.from_address(address), dns.rdatatype.PTR)
  for attempt in range(1, attempts + 1):
    try:
      response = dns.query.udp(query, server, timeout=timeout_s, port=port,
                               ignore_unexpected=True, ignore_errors=True)
    except (dns.exception.Timeout, OSError) as e:
      print(f'container: DNS server {server} did not answer the reverse lookup of {address} '
            f'(attempt {attempt}/{attempts}: {type(e).__name__})', file=sys.stderr, flush=True)
      continue
    return ptr_name(response)
  raise ContainerError(f'DNS server {server} did not answer in {attempts} tries of '
                       f'{timeout_s:g} s: cannot look up this container\'s name; pass --task=N')


def container_name() -> str:
  """This container's name, from Docker's DNS (reverse lookup of its own address).

  /etc/hosts maps the address to the container id, so the lookup goes to the DNS server
  directly, not through the C library's resolver.

  Raises:
    ContainerError: the name cannot be found (no user-defined network, no DNS answer).
  """
  try:
    address = socket.gethostbyname(socket.gethostname())
  except OSError as e:
    raise ContainerError(f'cannot resolve this container\'s own address ({e}); pass --task=N'
                         ) from None
  server = nameserver()
  name = reverse_lookup(address, server)
  if not name:
    raise ContainerError(
        f'DNS server {server} has no name for this container\'s address {address}: run actors '
        'on a user-defined network (docker-compose does), or pass --task=N')
  return name


def task_from_container_name(name: str) -> int:
  """Task id of a scaled Compose replica: its replica number minus one."""
  return replica_number(name) - 1


# ---- Command lines --------------------------------------------------------------------------


def split_gin_bindings(args: Sequence[str]) -> List[str]:
  """Expands each `--gin_bindings=a; b` into one flag per binding and drops empty ones."""
  result = []
  for arg in args:
    if arg.startswith('--gin_bindings='):
      for binding in arg[len('--gin_bindings='):].split(';'):
        if binding.strip():
          result.append(f'--gin_bindings={binding.strip()}')
    else:
      result.append(arg)
  return result


def has_flag(args: Sequence[str], name: str) -> bool:
  return any(a == f'--{name}' or a.startswith(f'--{name}=') for a in args)


def command(role: str, args: Sequence[str], task: Optional[int] = None) -> List[str]:
  """The argv a process role runs (without the interpreter).

  Args:
    role: One of `processes.ROLES`.
    args: The flags given after the role.
    task: For `actor` without --task in `args`: the task id to add.

  Raises:
    ContainerError: unknown role, or an actor with neither --task nor `task`.
  """
  if role not in processes.ROLES:
    raise ContainerError(f'unknown role {role!r}: use one of '
                         f'{", ".join(list(processes.ROLES) + ["healthcheck", "status"])}')
  argv = processes.module_argv(role) + split_gin_bindings(args)
  if role == 'actor' and not has_flag(args, 'task'):
    if task is None:
      raise ContainerError('an actor needs --task=N, or a container name to derive it from')
    argv.append(f'--task={task}')
  return argv


# ---- Probes ---------------------------------------------------------------------------------


def healthy(address: str, timeout_s: float = _HEALTH_TIMEOUT_S) -> bool:
  """Whether a Reverb server at `address` answers ServerInfo and holds the replay table."""
  from common import reverb_rpc  # pylint: disable=import-outside-toplevel  (probes only)
  try:
    return constants.REPLAY_TABLE in reverb_rpc.server_info(address, timeout_s)
  except reverb_rpc.RpcError:
    return False


# ---- Entrypoint -----------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
  """Runs a probe role, or execs the process of a process role (never returns then)."""
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(__doc__)
    return 0 if argv else 2
  role, args = argv[0], list(argv[1:])
  try:
    if role == 'healthcheck':
      return 0 if healthy(args[0] if args else DEFAULT_ADDRESS) else 1
    if role == 'status':
      if not args or args[0].startswith('-'):
        args.insert(0, DEFAULT_ADDRESS)
      os.execv(sys.executable, [sys.executable, '-m', 'launcher.fleet_status', *args])
    task = None
    if role == 'actor' and not has_flag(args, 'task'):
      name = container_name()
      task = task_from_container_name(name)
      print(f'container: actor task {task} from container name {name}', file=sys.stderr,
            flush=True)
    argv = command(role, args, task)
  except ContainerError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  os.execv(sys.executable, [sys.executable] + argv)
  return 0  # Not reached.


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
