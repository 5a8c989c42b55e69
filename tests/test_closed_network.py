"""A local run is closed to the network: its replay server answers inside the launcher's own
network namespace only, and the status view joins it (real launcher, real processes)."""

import errno
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from common import reverb_rpc
from launcher import closed_network
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import REPO
from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def _host_addresses():
  """This host's addresses outside loopback, as another machine on its network would use."""
  addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None,
                                                         socket.AF_INET)}
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
    try:
      probe.connect(('192.0.2.1', 9))  # No packet is sent: it only picks the route's address.
      addresses.add(probe.getsockname()[0])
    except OSError:
      pass
  return sorted(a for a in addresses if not a.startswith('127.'))


def _launch(root_dir, port, log_path, *extra):
  args = [sys.executable, '-m', 'launcher.main', f'--root_dir={root_dir}', f'--port={port}',
          '--num_actors=1', '--budget_s=300', f'--gin_file={CARTPOLE_GIN}',
          '--gin_bindings=EvalConfig.target_return = None', *extra]
  args += [f'--gin_bindings={b}' for b in FAST_BINDINGS]
  log = open(log_path, 'w')
  return subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES='')), log


def _status(address, *extra):
  return subprocess.run([sys.executable, '-m', 'launcher.fleet_status', address, *extra],
                        cwd=REPO, capture_output=True, text=True, timeout=60)


def _stop(launcher, log):
  if launcher.poll() is None:
    launcher.send_signal(signal.SIGTERM)
    try:
      launcher.wait(120)
    except subprocess.TimeoutExpired:
      launcher.kill()
  log.close()


def test_the_local_fleet_answers_only_inside_its_namespace(root_dir, port, tmp_path):
  log_path = tmp_path / 'launcher.log'
  launcher, log = _launch(root_dir, port, log_path)
  try:
    wait_until(lambda: 'train_step=' in log_path.read_text(), 300, 'the learner to train',
               detail=lambda: log_path.read_text()[-3000:])
    text = log_path.read_text()
    assert '[local] network: closed' in text, text[-3000:]
    fleet = closed_network.namespace(launcher.pid, 'net')
    assert fleet != closed_network.namespace(os.getpid(), 'net')
    roles = [int(pid) for pid in subprocess.run(['pgrep', '-P', str(launcher.pid), '-f', r'\.main'],
                                                capture_output=True, text=True).stdout.split()]
    assert len(roles) == 4, roles  # The server, the learner, the actor and eval.
    for pid in roles:
      assert closed_network.namespace(pid, 'net') == fleet, pid

    # From this process's namespace (the host's), on loopback and on the host's addresses:
    # nothing listens on the port.
    for host in ['127.0.0.1'] + _host_addresses():
      with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((host, port)) == errno.ECONNREFUSED, host
      with pytest.raises(reverb_rpc.RpcError):
        reverb_rpc.server_info(f'{host}:{port}', 2.0, own_connection=True)
    refused = _status(f'localhost:{port}')
    assert refused.returncode == 1 and 'no replay server answers' in refused.stderr

    # The status view joins the fleet's namespace with the run directory.
    view = _status(f'localhost:{port}', f'--root_dir={root_dir}')
    assert view.returncode == 0, view.stderr[-2000:]
    assert re.search(r'learner\s+train_step \d+', view.stdout), view.stdout
    assert 'actors    1 reporting' in view.stdout, view.stdout
  finally:
    _stop(launcher, log)


def test_network_host_is_the_open_choice_said_at_start(root_dir, port, tmp_path):
  log_path = tmp_path / 'launcher.log'
  launcher, log = _launch(root_dir, port, log_path, '--network=host')
  try:
    wait_until(lambda: 'train_step=' in log_path.read_text(), 300, 'the learner to train',
               detail=lambda: log_path.read_text()[-3000:])
    assert "[local] network: the host's (--network=host)" in log_path.read_text()
    assert closed_network.namespace(launcher.pid, 'net') == closed_network.namespace(
        os.getpid(), 'net')
    view = _status(f'localhost:{port}')
    assert view.returncode == 0 and 'train_step' in view.stdout, view.stderr[-2000:]
  finally:
    _stop(launcher, log)


def test_where_no_namespace_can_be_made_the_reason_is_said():
  # In a fresh process, whose unshare call fails as on such a system: the reason comes back,
  # and the process is still on the host's network.
  code = ('import errno, os\n'
          'from launcher import closed_network\n'
          'def refuse(name, *args):\n'
          '  raise OSError(errno.EPERM, os.strerror(errno.EPERM))\n'
          'before = closed_network.namespace(os.getpid(), "net")\n'
          'closed_network._call = refuse\n'
          'print(closed_network.enter())\n'
          'print(closed_network.namespace(os.getpid(), "net") == before)\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
  reason, unmoved = result.stdout.strip().splitlines()
  assert reason.startswith('this system does not let this user make a network namespace '
                           '(Operation not permitted; unprivileged user namespaces are off')
  assert unmoved == 'True'
