"""The image entrypoint (launcher/container.py): task ids from container names, command lines,
the DNS reverse lookup, and the Reverb health probe against a real in-process server."""

import socket
import threading

import dns.message
import dns.rcode
import dns.reversename
import dns.rrset
import portpicker
import pytest

from launcher import container

# A real answer of Docker's embedded DNS (127.0.0.11) to the PTR query of 172.19.0.2 from a
# container named ptr_actor_3 on the user-defined network ptrtest (query id 0xa541).
DOCKER_PTR_ANSWER = (
    b'\xa5A\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x012\x010\x0219\x03172\x07in-addr\x04arpa'
    b'\x00\x00\x0c\x00\x01\x012\x010\x0219\x03172\x07in-addr\x04arpa\x00\x00\x0c\x00\x01\x00'
    b'\x00\x02X\x00\x15\x0bptr_actor_3\x07ptrtest\x00')


@pytest.mark.parametrize('name, number', [
    ('proj_actor_1', 1),                      # docker-compose 1.x
    ('proj-actor-8', 8),                      # Compose v2
    ('proj_actor_12.proj_default', 12),       # Docker's DNS name: <container>.<network>
    ('my-proj_2_actor-3.my-proj_2_default.', 3),
])
def test_replica_number_from_compose_names(name, number):
  assert container.replica_number(name) == number
  assert container.task_from_container_name(name) == number - 1


@pytest.mark.parametrize('name', ['actor', 'proj_actor_0', 'proj_actor_x', '3'])
def test_replica_number_rejects_names_without_one(name):
  with pytest.raises(container.ContainerError, match='--task=N'):
    container.replica_number(name)


def test_ptr_name_reads_docker_answer():
  assert container.ptr_name(dns.message.from_wire(DOCKER_PTR_ANSWER)) == 'ptr_actor_3.ptrtest'


def test_ptr_name_of_an_error_answer_is_none():
  query = dns.message.make_query(dns.reversename.from_address('10.0.0.9'), 'PTR')
  nxdomain = dns.message.make_response(query)
  nxdomain.set_rcode(dns.rcode.NXDOMAIN)
  assert container.ptr_name(dns.message.from_wire(nxdomain.to_wire())) is None


def _one_shot_dns(answer_name: str):
  """A UDP socket on localhost that answers one PTR query with `answer_name`, after a stray
  packet that the lookup must skip."""
  sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  sock.bind(('127.0.0.1', 0))
  sock.settimeout(10)

  def serve():
    packet, peer = sock.recvfrom(512)
    query = dns.message.from_wire(packet)
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text(query.question[0].name, 600, 'IN', 'PTR',
                                             answer_name + '.'))
    sock.sendto(b'\x00', peer)  # A stray packet first: it must be skipped.
    sock.sendto(answer.to_wire(), peer)

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  return sock, thread


def test_reverse_lookup_over_udp():
  sock, thread = _one_shot_dns('proj_actor_5.proj_default')
  try:
    name = container.reverse_lookup('10.0.0.9', '127.0.0.1', timeout_s=5,
                                    port=sock.getsockname()[1])
  finally:
    thread.join(timeout=10)
    sock.close()
  assert name == 'proj_actor_5.proj_default'
  assert container.task_from_container_name(name) == 4


def test_reverse_lookup_gives_up_after_bounded_tries(capsys):
  silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  silent.bind(('127.0.0.1', 0))
  try:
    with pytest.raises(container.ContainerError, match='did not answer in 2 tries'):
      container.reverse_lookup('10.0.0.9', '127.0.0.1', timeout_s=0.2, attempts=2,
                               port=silent.getsockname()[1])
  finally:
    silent.close()
  assert capsys.readouterr().err.count('did not answer the reverse lookup') == 2


def test_nameserver_from_resolv_conf(tmp_path):
  path = tmp_path / 'resolv.conf'
  path.write_text('# generated\nsearch example\nnameserver 127.0.0.11\nnameserver 8.8.8.8\n')
  assert container.nameserver(str(path)) == '127.0.0.11'
  path.write_text('search example\n')
  with pytest.raises(container.ContainerError, match='no nameserver'):
    container.nameserver(str(path))


def test_command_for_each_role():
  assert container.command('replay_server', ['--port=8008']) == [
      '-m', 'replay_server.main', '--port=8008']
  assert container.command('eval', ['--root_dir=/r']) == [
      '-m', 'actor.main', '--mode=eval', '--root_dir=/r']
  assert container.command('actor', ['--root_dir=/r'], task=3) == [
      '-m', 'actor.main', '--mode=collect', '--root_dir=/r', '--task=3']
  # An explicit --task wins over the container name.
  assert container.command('actor', ['--task=7'], task=3) == [
      '-m', 'actor.main', '--mode=collect', '--task=7']
  with pytest.raises(container.ContainerError, match='needs --task'):
    container.command('actor', [])
  with pytest.raises(container.ContainerError, match="unknown role 'trainer'"):
    container.command('trainer', [])


def test_gin_bindings_split_on_semicolons():
  args = ['--gin_file=gin/dqn_cartpole.gin',
          '--gin_bindings=ReplayConfig.min_size = 64; EvalConfig.interval = 50;',
          '--gin_bindings=', "--gin_bindings=make_environment.env_name = 'CartPole-v1'"]
  assert container.split_gin_bindings(args) == [
      '--gin_file=gin/dqn_cartpole.gin',
      '--gin_bindings=ReplayConfig.min_size = 64',
      '--gin_bindings=EvalConfig.interval = 50',
      "--gin_bindings=make_environment.env_name = 'CartPole-v1'"]


def test_unknown_role_is_a_one_line_error(capsys):
  assert container.main(['trainer']) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: unknown role 'trainer'") and err.count('\n') == 1


def test_healthcheck_probes_a_real_reverb_server(cartpole_server):
  assert container.healthy(cartpole_server)
  assert container.main(['healthcheck', cartpole_server]) == 0
  nobody = f'localhost:{portpicker.pick_unused_port()}'
  assert not container.healthy(nobody, timeout_s=1)
  assert container.main(['healthcheck', nobody]) == 1
