"""A local run closed to the network: the fleet in a network namespace of its own.

Reverb takes a port, not a bind address: its server listens on every interface of the host and
serves every RPC to whoever connects (docs/security.md). The local launcher therefore moves
itself, before it starts any child, into a new network namespace whose only interface is its
own loopback (`enter`). The children inherit it: they reach each other on localhost as before,
and nothing outside the namespace can reach them, another process of this host included. The
run directory, TensorBoard (it reads files) and the terminal are unchanged.

Where the user may not own namespaces (a kernel or container that forbids unprivileged user
namespaces, or not Linux), `enter` says why and the launcher runs on the host's network, with
one line that says so and how to fix it.

`reverb-fleet status ADDRESS --root_dir=RUN` joins the namespace of the run's launcher first
(`join`), found by the pid in the run directory's lock file.

Mechanism: `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (a non-root user; root needs only the
network namespace), this user's id mapped to itself (so files keep their owner and nothing
runs as root), and loopback brought up with the capability the new user namespace grants its
creator. No setuid helper and no binary beyond libc are involved.
"""

import ctypes
import ctypes.util
import fcntl
import os
import re
import socket
import struct
import threading
from typing import Optional

from common import ownership

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = '16sH22x'  # struct ifreq: the name, then ifr_flags in the union (40 bytes).


def _libc():
  return ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True)


def _call(name: str, *args) -> None:
  if getattr(_libc(), name)(*args) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, os.strerror(errno))


def _write(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)


def _loopback_up() -> None:
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    request = struct.pack(_IFREQ, b'lo', 0)
    flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b'lo', flags | _IFF_UP))


def enter() -> Optional[str]:
  """Moves this process into a new network namespace with loopback up.

  Call before any thread or child is started: children started afterwards share the namespace.

  Returns:
    None when the process is in its own namespace now; else why it could not be (it is still
    on the host's network then).
  """
  if not os.path.exists('/proc/self/ns/net'):
    return 'network namespaces are Linux only'
  if threading.active_count() > 1:
    raise RuntimeError('closed_network.enter() must run before any thread starts')
  uid, gid = os.getuid(), os.getgid()
  flags = CLONE_NEWNET if uid == 0 else CLONE_NEWNET | CLONE_NEWUSER
  try:
    _call('unshare', flags)
  except OSError as e:
    return (f'this system does not let this user make a network namespace ({e.strerror}; '
            'unprivileged user namespaces are off: kernel.unprivileged_userns_clone or '
            'user.max_user_namespaces, or a container\'s seccomp profile)')
  if flags & CLONE_NEWUSER:
    _write('/proc/self/setgroups', 'deny')
    _write('/proc/self/uid_map', f'{uid} {uid} 1')
    _write('/proc/self/gid_map', f'{gid} {gid} 1')
  _loopback_up()
  return None


def namespace(pid: int, kind: str) -> str:
  """The namespace `kind` ('net', 'user') of process `pid`, as the kernel names it."""
  return os.readlink(f'/proc/{pid}/ns/{kind}')


def join(pid: int) -> bool:
  """Moves this process into the network namespace of process `pid` (and first its user
  namespace, if that differs); False when it is in it already.

  Call before any thread starts (a process with threads cannot change its user namespace).

  Raises:
    OSError: the namespace cannot be joined (another user's, or `pid` is gone).
  """
  if namespace(pid, 'net') == namespace(os.getpid(), 'net'):
    return False
  for kind, flag in (('user', CLONE_NEWUSER), ('net', CLONE_NEWNET)):
    if kind == 'user' and namespace(pid, 'user') == namespace(os.getpid(), 'user'):
      continue
    fd = os.open(f'/proc/{pid}/ns/{kind}', os.O_RDONLY | os.O_CLOEXEC)
    try:
      _call('setns', fd, flag)
    finally:
      os.close(fd)
  return True


def launcher_pid(root_dir: str) -> Optional[int]:
  """The pid of the local launcher that holds `root_dir` (its lock file, `common.ownership`),
  if it runs on this host; else None."""
  try:
    with open(os.path.join(root_dir, ownership.LOCK_FILE)) as f:
      text = f.read()
  except OSError:
    return None
  match = re.match(r'pid (\d+) on (\S+)', text)
  if not match or match.group(2) != socket.gethostname():
    return None
  pid = int(match.group(1))
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      command = f.read()
  except OSError:
    return None  # Gone: the lock file outlives its holder.
  return pid if b'launcher' in command or b'reverb-fleet' in command else None
