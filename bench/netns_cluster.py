"""A real multi-node Ray cluster on one machine, for the cluster tests and benchmarks.

The head node runs in this network namespace on a bridge address; each worker node runs in a
network namespace of its own, with its own IP address on that bridge (a veth pair), and its own
private disk: a tmpfs mounted at `disk` inside the node's mount namespace, so the same path on
two nodes holds different files and nothing is shared but what crosses the network. A process
that assumes localhost or a shared disk fails there as it would across machines.

Needs root (network namespaces, mounts) and iproute2. Addresses are in 10.231.<subnet>.0/24 on
a bridge this module creates and deletes; no traffic leaves the machine.
"""

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import psutil

from bench import harness

RAY = os.path.join(os.path.dirname(sys.executable), 'ray')
_NO_SUCH_MAC = '02:00:5e:00:de:ad'  # Locally administered; no interface of the cluster has it.


def client_env(token_path: str) -> Dict[str, str]:
  """What a process needs in its environment to join or use the cluster.

  Ray reads these when it is imported, so a client process must have them set before its first
  `import ray`.
  """
  return dict(RAY_USAGE_STATS_ENABLED='0', RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=token_path)


def available() -> Optional[str]:
  """None when network namespaces can be made here, or the reason they cannot."""
  if os.geteuid() != 0:
    return 'network namespaces need root'
  if not shutil.which('ip'):
    return 'iproute2 (`ip`) is not installed'
  if not os.path.exists(RAY):
    return f'ray is not installed in this environment ({RAY}): pip install -e ".[ray]"'
  name = f'rfprobe{os.getpid() % 10000}'
  done = subprocess.run(['ip', 'netns', 'add', name], capture_output=True, text=True,
                        check=False)
  if done.returncode:
    return f'`ip netns add` failed: {done.stderr.strip()}'
  subprocess.run(['ip', 'netns', 'del', name], check=False)
  return None


@dataclasses.dataclass
class Node:
  name: str
  ip: str
  num_cpus: int
  resources: Dict[str, float]
  netns: Optional[str] = None
  process: Optional[subprocess.Popen] = None
  log_path: str = ''


class NetnsCluster:
  """Head + worker nodes, each `ray start --block` in its own namespace (see module docstring).

  Args:
    workers: (num_cpus, custom resources) of each worker node.
    disk: Path mounted as each worker node's private tmpfs (created here if missing).
    log_dir: Where each node's `ray start` output goes.
    subnet: Third octet of the 10.231.x.0/24 network (tests and benches use different ones).
    head_cpus: Logical CPUs of the head (0: it only runs the fleet's controller).
    token_path: Where the cluster's Ray auth token is written (see `client_env`).
  """

  def __init__(self, workers, disk: str, log_dir: str, subnet: int = 0, head_cpus: int = 0,
               token_path: Optional[str] = None):
    tag = f'{os.getpid() % 1000}x{subnet}'
    self.bridge = f'rfbr{tag}'
    self.disk = disk
    self.log_dir = log_dir
    self.port = harness.free_port()
    self.head = Node('head', f'10.231.{subnet}.1', head_cpus, {})
    self.workers = [Node(f'node{i + 1}', f'10.231.{subnet}.{11 + i}', cpus, dict(res),
                         netns=f'rfns{tag}n{i + 1}')
                    for i, (cpus, res) in enumerate(workers)]
    self.address = f'{self.head.ip}:{self.port}'
    # Ray's token authentication, with a token of this cluster's own: every node and every
    # client (`client_env`) presents it.
    self.token_path = token_path or os.path.join(log_dir, 'auth_token')
    self.client_env = client_env(self.token_path)
    self._env = dict(os.environ, **self.client_env,
                     # A lost node is declared dead within seconds, not the default ~30 s.
                     RAY_health_check_period_ms='1000', RAY_health_check_failure_threshold='3',
                     RAY_health_check_initial_delay_ms='1000')

  @property
  def nodes(self) -> List[Node]:
    return [self.head] + self.workers

  def _ip(self, *args: str, netns: Optional[str] = None) -> None:
    argv = (['ip', 'netns', 'exec', netns] if netns else []) + ['ip', *args]
    subprocess.run(argv, check=True, capture_output=True, text=True)

  def _network(self) -> None:
    self._ip('link', 'add', self.bridge, 'type', 'bridge')
    self._ip('addr', 'add', f'{self.head.ip}/24', 'dev', self.bridge)
    self._ip('link', 'set', self.bridge, 'up')
    for i, node in enumerate(self.workers):
      host_end, node_end = f'{self.bridge}v{i + 1}', 'eth1'
      subprocess.run(['ip', 'netns', 'add', node.netns], check=True)
      self._ip('link', 'add', host_end, 'type', 'veth', 'peer', 'name', f'{host_end}p')
      self._ip('link', 'set', f'{host_end}p', 'netns', node.netns)
      self._ip('link', 'set', host_end, 'master', self.bridge, 'up')
      self._ip('link', 'set', f'{host_end}p', 'name', node_end, netns=node.netns)
      self._ip('addr', 'add', f'{node.ip}/24', 'dev', node_end, netns=node.netns)
      self._ip('link', 'set', node_end, 'up', netns=node.netns)
      self._ip('link', 'set', 'lo', 'up', netns=node.netns)

  def _ray_start(self, node: Node) -> None:
    argv = [RAY, 'start', '--block', '--disable-usage-stats', f'--node-ip-address={node.ip}',
            f'--num-cpus={node.num_cpus}', '--num-gpus=0', '--object-store-memory=200000000',
            f'--resources={json.dumps(node.resources)}']
    if node is self.head:
      argv += ['--head', f'--port={self.port}', '--include-dashboard=false']
      command = argv
    else:
      argv += [f'--address={self.address}']
      os.makedirs(self.disk, exist_ok=True)
      script = f'mount -t tmpfs -o size=4g tmpfs {self.disk} && exec "$@"'
      command = ['ip', 'netns', 'exec', node.netns, 'sh', '-c', script, 'ray-node', *argv]
    node.log_path = os.path.join(self.log_dir, f'ray-{node.name}.log')
    with open(node.log_path, 'w') as log:
      node.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                      env=self._env, start_new_session=True)

  def start(self, timeout_s: float = 120.0) -> 'NetnsCluster':
    """Creates the network, starts the head and the workers, waits until all are alive."""
    os.makedirs(self.log_dir, exist_ok=True)
    with open(os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as f:
      f.write(secrets.token_hex(32))
    self._network()
    self._ray_start(self.head)
    harness.wait_for(lambda: self._head_up(), timeout_s, 'the Ray head node')
    # One node at a time: raylets starting together on one machine race for the same socket
    # names in the shared session directory.
    for count, node in enumerate(self.workers, start=2):
      self._ray_start(node)
      harness.wait_for(lambda c=count: len(self.alive_node_ips()) >= c, timeout_s,
                       f'{count} Ray nodes alive; logs in {self.log_dir}')
    return self

  def _head_up(self) -> bool:
    if self.head.process.poll() is not None:
      raise RuntimeError(f'the Ray head exited: {open(self.head.log_path).read()[-2000:]}')
    return 'Ray runtime started' in open(self.head.log_path).read()

  def alive_node_ips(self) -> List[str]:
    """IPs of the nodes the cluster reports alive (asked through `ray list nodes`-free GCS)."""
    done = subprocess.run([sys.executable, '-c', (
        'import json, ray; ray.init(address=%r, log_to_driver=False); '
        'print(json.dumps([n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]))'
    ) % self.address], capture_output=True, text=True, env=self._env, timeout=60, check=False)
    lines = [l for l in done.stdout.splitlines() if l.startswith('[')]
    return json.loads(lines[-1]) if lines else []

  def raylet_pid(self, node: Node) -> int:
    for child in psutil.Process(node.process.pid).children(recursive=True):
      if child.name() == 'raylet':
        return child.pid
    raise RuntimeError(f'no raylet under {node.name}')

  def kill_raylet(self, node: Node) -> None:
    """kill -9 of the node's raylet: the node is lost, and its workers die with it."""
    os.kill(self.raylet_pid(node), signal.SIGKILL)

  def partition(self, a: Node, b: Node) -> None:
    """Drops every packet between worker nodes `a` and `b`, in both directions, silently.

    Each side's neighbour entry for the other is pinned to a MAC address no node has, so the
    bridge floods their frames and no interface takes them: to both nodes the other looks as
    a cable pulled out would (no refusal, no reset, no error on send), while both still reach
    the head and every other node. Works without iptables or nftables; `heal` undoes it.
    """
    for here, there in ((a, b), (b, a)):
      self._ip('neigh', 'replace', there.ip, 'lladdr', _NO_SUCH_MAC, 'dev', 'eth1', 'nud',
               'permanent', netns=here.netns)

  def heal(self, a: Node, b: Node) -> None:
    """Ends `partition(a, b)`: each side resolves the other's address again."""
    for here, there in ((a, b), (b, a)):
      subprocess.run(['ip', 'netns', 'exec', here.netns, 'ip', 'neigh', 'del', there.ip, 'dev',
                      'eth1'], capture_output=True, check=False)

  def node_of_ip(self, ip: str) -> Node:
    return next(n for n in self.nodes if n.ip == ip)

  def read_node_file(self, node: Node, path: str) -> Optional[str]:
    """A file on `node`'s private disk (through a process of that node's mount namespace)."""
    for proc in [psutil.Process(node.process.pid)] + psutil.Process(
        node.process.pid).children(recursive=True):
      try:
        with open(f'/proc/{proc.pid}/root{path}') as f:
          return f.read()
      except FileNotFoundError:
        return None
      except (PermissionError, ProcessLookupError, psutil.Error):
        continue
    return None

  def list_node_dir(self, node: Node, path: str) -> List[str]:
    try:
      return os.listdir(f'/proc/{self.raylet_pid(node)}/root{path}')
    except (FileNotFoundError, RuntimeError, psutil.Error):
      return []

  def stop(self) -> None:
    """Stops every node, kills what is left of its processes, removes the network."""
    for node in reversed(self.nodes):
      if node.process is None:
        continue
      try:
        tree = psutil.Process(node.process.pid).children(recursive=True)
      except psutil.Error:
        tree = []
      if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
          node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
          node.process.kill()
          node.process.wait(timeout=10)
      _, alive = psutil.wait_procs(tree, timeout=10)
      for proc in alive:
        try:
          proc.kill()
        except psutil.Error:
          pass
    for node in self.workers:
      subprocess.run(['ip', 'netns', 'del', node.netns], capture_output=True, check=False)
    subprocess.run(['ip', 'link', 'del', self.bridge], capture_output=True, check=False)
    for i in range(len(self.workers)):
      subprocess.run(['ip', 'link', 'del', f'{self.bridge}v{i + 1}'], capture_output=True,
                     check=False)
    try:
      os.rmdir(self.disk)  # The mount point; each node's files were on its own tmpfs.
    except OSError:
      pass
