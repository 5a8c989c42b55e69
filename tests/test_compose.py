"""End to end against a real Docker engine: build the image, `docker-compose up --scale actor=8`
on a small DQN CartPole budget, then `down` and `up` again.

Needs a reachable Docker engine and docker-compose (1.29, or Compose v2 as `docker compose`);
without them every test here is skipped, with the reason (set REQUIRE_DOCKER=1 to fail instead).
`.ci/docker_setup.sh` installs and starts both, and builds the base image
reverb-fleet-base:py3.11-bookworm that the build uses where no registry can be reached.

What proves what:
* 8 distinct actors: each replica `actor_<n>` logs `container: actor task <n-1>`, then
  `actor <n-1>: collecting ... (seed=<1000 (n-1)>)` and `actor <n-1>: env_steps=<k>` lines; the
  replay server's own insert counter covers the env steps that the 8 of them report.
* The learner's `learner stopped at train step N` line and its exit status 0.
* eval.csv, read from eval's own volume inside the eval container.
* The hardening of every running container, from `docker inspect`.
* `docker-compose down`: every process logs its SIGTERM stop line (final checkpoints written) and
  no container of the project is left; `up` then restores the replay checkpoint and resumes the
  learner from its train step.

Environment:
  BASE_IMAGE      base image for the build (default: reverb-fleet-base:py3.11-bookworm if it
                  exists, else the Dockerfile's default, which needs a registry)
  BUILD_NETWORK   network of the build (default host: this sandbox's dockerd has no NAT)
  REQUIRE_DOCKER  1: fail, not skip, when no engine is reachable
  COMPOSE         the compose command (default docker-compose, else `docker compose`)
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid

import portpicker
import pytest

from tests.conftest import REPO
from tests.conftest import wait_until

# The module's fixture builds the image and starts the project inside the first test's budget.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(3000)]

LOCAL_BASE_IMAGE = 'reverb-fleet-base:py3.11-bookworm'
TEST_IMAGE = 'reverb-fleet:compose-test'
NUM_ACTORS = 8
TRAIN_STEPS = 200
EVAL_INTERVAL = 50
# A build argument that must not reach the final image (a stand-in for an index credential).
BUILD_ARG_MARKER = 'build-arg-marker.invalid'
# The machine's CA bundle: where pip's index is reached through a TLS-intercepting proxy, the
# build trusts the index only with it (docker/certs/).
HOST_CA_BUNDLES = (os.environ.get('PIP_CERT', ''), os.environ.get('SSL_CERT_FILE', ''),
                   '/etc/ssl/certs/ca-certificates.crt')
BUILD_CA_FILE = os.path.join(REPO, 'docker', 'certs', 'host-ca-bundle.pem')

GIN_BINDINGS = '; '.join((
    'ReplayConfig.min_size = 64',
    'LearnerConfig.iterations_per_call = 5',
    'LearnerConfig.push_interval = 10',
    'LearnerConfig.checkpoint_interval = 50',
    'LearnerConfig.policy_export_interval = 100',
    'LearnerConfig.log_interval = 10',
    'ActorConfig.steps_per_run = 20',
    'ActorConfig.variable_update_interval = 50',
    'ActorConfig.log_interval_s = 5.0',
    'EvalConfig.num_episodes = 2',
    f'EvalConfig.interval = {EVAL_INTERVAL}',
))

BUILD_TIMEOUT_S = 1800  # A cold build downloads ~600 MB of wheels; ~10 min on a loaded 2-core box.
UP_TIMEOUT_S = 600      # Includes the replay server's health check (TensorFlow import, loaded box).
STEP_TIMEOUT_S = 600    # Each condition below: 11 TensorFlow processes share 2 cores.

_LOG_LINE = re.compile(r'^(?P<service>[a-z_]+?)[-_](?P<replica>\d+)\s+\|\s?(?P<text>.*)$')


def _engine_problem():
  """Why no Docker engine and compose can be used here, or None."""
  if not shutil.which('docker'):
    return 'the docker CLI is not installed'
  try:
    info = subprocess.run(['docker', 'info', '--format', '{{.ServerVersion}}'],
                          capture_output=True, text=True, timeout=30, check=False)
  except subprocess.TimeoutExpired:
    return '`docker info` did not answer within 30 s'
  if info.returncode != 0:
    detail = (info.stderr or info.stdout).strip().splitlines()
    return f'`docker info` failed: {detail[-1] if detail else f"exit status {info.returncode}"}'
  if os.environ.get('COMPOSE') or shutil.which('docker-compose') or _compose_v2():
    return None
  return 'neither docker-compose nor `docker compose` is installed'


def _compose_command():
  if os.environ.get('COMPOSE'):
    return os.environ['COMPOSE'].split()
  return ['docker-compose'] if shutil.which('docker-compose') else ['docker', 'compose']


def _compose_v2() -> bool:
  try:
    return subprocess.run(['docker', 'compose', 'version'], capture_output=True,
                          timeout=30, check=False).returncode == 0
  except subprocess.TimeoutExpired:
    return False


class Compose:
  """One compose project: commands with a deadline, logs parsed per container replica."""

  def __init__(self, project: str, env: dict):
    self.project = project
    self.env = env
    base = _compose_command()
    self._argv = base + ['-p', project, '-f', os.path.join(REPO, 'docker-compose.yml')]

  def run(self, *args, timeout_s: float = 120.0, check: bool = True, log_path=None):
    """Runs `docker-compose ARGS`; returns its stdout (all output to `log_path` if given).

    Stderr is kept apart: Compose v2 writes warnings there that must not mix with the output.
    """
    out = open(log_path, 'w') if log_path else subprocess.PIPE  # pylint: disable=consider-using-with
    try:
      result = subprocess.run(self._argv + list(args), cwd=REPO, env=self.env, stdout=out,
                              stderr=subprocess.STDOUT if log_path else subprocess.PIPE,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
      pytest.fail(f'`docker-compose {" ".join(args)}` did not finish within {timeout_s:g} s')
    finally:
      if log_path:
        out.close()
    if log_path:
      with open(log_path) as f:
        output, errors = f.read(), ''
    else:
      output, errors = result.stdout, result.stderr
    if check and result.returncode != 0:
      pytest.fail(f'`docker-compose {" ".join(args)}` exited with {result.returncode}:\n'
                  f'{output[-3000:]}\n{errors[-3000:]}')
    return output or ''

  def popen(self, *args, log_path: str) -> subprocess.Popen:
    out = open(log_path, 'w')  # pylint: disable=consider-using-with
    return subprocess.Popen(self._argv + list(args), cwd=REPO, env=self.env, stdout=out,
                            stderr=subprocess.STDOUT, text=True)

  def logs(self, *services) -> dict:
    """{(service, replica): [line, ...]} of the containers that exist now."""
    text = self.run('logs', '--no-color', *services, timeout_s=120, check=False)
    return parse_logs(text)

  def container_ids(self, *services):
    """Ids of the project's containers (of `services`), running or exited."""
    return self.run('ps', '-a', '-q', *services, timeout_s=60).split()

  def exec(self, service: str, *command, timeout_s: float = 120.0, check: bool = True):
    return self.run('exec', '-T', service, *command, timeout_s=timeout_s, check=check)

  def tail(self) -> str:
    return self.run('logs', '--no-color', '--tail=40', timeout_s=120, check=False)[-12000:]


def parse_logs(text: str) -> dict:
  lines = {}
  for raw in text.splitlines():
    match = _LOG_LINE.match(raw)
    if match:
      key = (match.group('service'), int(match.group('replica')))
      lines.setdefault(key, []).append(match.group('text'))
  return lines


def _docker(*args, timeout_s: float = 120.0) -> str:
  result = subprocess.run(['docker'] + list(args), capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  assert result.returncode == 0, f'docker {" ".join(args)}: {result.stderr.strip()}'
  return result.stdout


def _wait(compose: Compose, predicate, timeout_s: float, what: str):
  """Polls `predicate` every 2 s; fails with the last log lines after `timeout_s`."""
  return wait_until(predicate, timeout_s, what, interval_s=2.0,
                    detail=lambda: f'last log lines:\n{compose.tail()}')


def _base_image() -> str:
  if os.environ.get('BASE_IMAGE'):
    return os.environ['BASE_IMAGE']
  inspect = subprocess.run(['docker', 'image', 'inspect', LOCAL_BASE_IMAGE],
                           capture_output=True, timeout=60, check=False)
  return LOCAL_BASE_IMAGE if inspect.returncode == 0 else ''


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
  """Builds the image and brings up the project with 8 actors; `down -v` at the end."""
  problem = _engine_problem()
  if problem:
    message = f'no Docker engine reachable ({problem}): run `sudo bash .ci/docker_setup.sh`'
    if os.environ.get('REQUIRE_DOCKER') == '1':
      pytest.fail(message)
    pytest.skip(message)
  logs_dir = tmp_path_factory.mktemp('compose')
  project = f'rftest{uuid.uuid4().hex[:8]}'
  env = dict(os.environ,
             REVERB_FLEET_IMAGE=TEST_IMAGE,
             BASE_IMAGE=_base_image(),
             BUILD_NETWORK=os.environ.get('BUILD_NETWORK', 'host'),
             PIP_TRUSTED_HOST=BUILD_ARG_MARKER,
             PIP_INDEX_URL='', PIP_EXTRA_INDEX_URL='', TENSORFLOW_EXTRAS='',
             EXPERIMENT='dqn_cartpole',
             GIN_BINDINGS=GIN_BINDINGS,
             MAX_TRAIN_STEPS=str(TRAIN_STEPS),
             TENSORBOARD_PORT=str(portpicker.pick_unused_port()))
  compose = Compose(project, env)

  ca_bundle = next((p for p in HOST_CA_BUNDLES if p and os.path.isfile(p)), None)
  if ca_bundle:
    shutil.copyfile(ca_bundle, BUILD_CA_FILE)
  start = time.monotonic()
  try:
    compose.run('build', 'replay_server', timeout_s=BUILD_TIMEOUT_S,
                log_path=str(logs_dir / 'build.log'))
  finally:
    if os.path.exists(BUILD_CA_FILE):
      os.unlink(BUILD_CA_FILE)
  timings = {'build_s': time.monotonic() - start}

  up = time.monotonic()
  try:
    compose.run('up', '-d', '--no-build', '--scale', f'actor={NUM_ACTORS}',
                timeout_s=UP_TIMEOUT_S)
    compose.up_time = up
    compose.timings = timings
    compose.logs_dir = logs_dir
    yield compose
  finally:
    compose.run('down', '-v', '--remove-orphans', '--timeout', '60', timeout_s=600,
                check=False)


def test_every_container_runs_hardened_and_the_fleet_network_is_internal(stack):
  ids = stack.container_ids()
  assert len(ids) >= 5
  for info in json.loads(_docker('inspect', *ids)):
    name, host = info['Name'], info['HostConfig']
    assert host['ReadonlyRootfs'] is True, name
    assert host['CapDrop'] == ['ALL'] or host['CapDrop'] == ['all'], (name, host['CapDrop'])
    assert 'no-new-privileges:true' in host['SecurityOpt'], name
    assert host['Memory'] > 0 and host['NanoCpus'] > 0 and host['PidsLimit'] > 0, name
    assert host['LogConfig']['Type'] == 'json-file', name
    assert host['LogConfig']['Config']['max-size'] and host['LogConfig']['Config']['max-file']
    assert set(host['Tmpfs']) >= {'/tmp', '/home/fleet'}, name
    networks = set(info['NetworkSettings']['Networks'])
    if '_tensorboard_' in name or '-tensorboard-' in name:
      assert networks == {f'{stack.project}_published'}, (name, networks)
      assert info['NetworkSettings']['Ports'], name  # Published, on 127.0.0.1.
    else:
      assert networks == {f'{stack.project}_fleet'}, (name, networks)
  fleet = json.loads(_docker('network', 'inspect', f'{stack.project}_fleet'))[0]
  assert fleet['Internal'] is True
  # Eval writes its own volume; the run's is not even mounted there.
  eval_info = json.loads(_docker('inspect', *stack.container_ids('eval')))[0]
  mounts = {m['Destination']: m for m in eval_info['Mounts']}
  assert '/data/run' not in mounts and mounts['/data/eval']['RW'] is True
  assert mounts['/data/keys']['RW'] is False


def test_image_runs_as_non_root_with_exec_entrypoint_and_no_build_secrets(stack):
  config = _docker('image', 'inspect', TEST_IMAGE, '--format',
                   '{{.Config.User}}|{{json .Config.Entrypoint}}')
  user, entrypoint = config.strip().split('|')
  assert user == 'fleet'
  assert entrypoint == '["python","-m","launcher.container"]'
  history = _docker('history', '--no-trunc', '--format', '{{.CreatedBy}}', TEST_IMAGE)
  inspect = _docker('image', 'inspect', TEST_IMAGE)
  for text in (history, inspect):
    assert BUILD_ARG_MARKER not in text
    assert 'PIP_TRUSTED_HOST' not in text
  # The stack precedes the project: editing the source reuses the TensorFlow layer.
  layers = history.splitlines()[::-1]  # Oldest first.
  venv = next(i for i, line in enumerate(layers) if '/opt/venv' in line and 'COPY' in line)
  package = next(i for i, line in enumerate(layers)
                 if 'COPY' in line and line.rstrip().endswith(' /opt/venv/bin/reverb-fleet'))
  assert venv < package
  # The project is installed, with its command and its gin files.
  result = subprocess.run(['docker', 'run', '--rm', '--entrypoint', 'reverb-fleet', TEST_IMAGE,
                           'run', '--gin_file=gin/not_a_file.gin'],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2 and 'does not exist' in result.stderr, result.stderr[-2000:]
  result = subprocess.run(['docker', 'run', '--rm', '--entrypoint', 'python', TEST_IMAGE, '-c',
                           'from common import gin_config; print(gin_config.resolve_gin_files('
                           '["gin/dqn_cartpole.gin"])[0])'],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.stdout.strip().endswith('/site-packages/reverb_fleet_gin/dqn_cartpole.gin'), (
      result.stdout + result.stderr[-2000:])
  # Nothing from the build stage (CA bundle, requirements) is in the image.
  result = subprocess.run(['docker', 'run', '--rm', '--entrypoint', 'ls', TEST_IMAGE,
                           '/tmp/stack'], capture_output=True, timeout=120, check=False)
  assert result.returncode != 0


def test_replay_server_is_healthy_and_not_published(stack):
  (server,) = stack.container_ids('replay_server')
  _wait(stack, lambda: _docker('inspect', '-f', '{{.State.Health.Status}}', server).strip()
        == 'healthy', 60, 'the replay server health check')
  assert _docker('inspect', '-f', '{{json .HostConfig.PortBindings}}', server).strip() in (
      '{}', 'null')


def _actor_reports(compose: Compose):
  """{replica: (task from name, task and seed from collect line, last env_steps)}."""
  reports = {}
  for (service, replica), lines in compose.logs('actor').items():
    if service != 'actor':
      continue
    named = [int(m.group(1)) for m in map(re.compile(r'container: actor task (\d+) ').search,
                                           lines) if m]
    collecting = [(int(m.group(1)), int(m.group(2))) for m in map(
        re.compile(r'actor (\d+): collecting .*\(seed=(\d+),').search, lines) if m]
    steps = [(int(m.group(1)), int(m.group(2))) for m in map(
        re.compile(r'actor (\d+): env_steps=(\d+) ').search, lines) if m]
    reports[replica] = (named, collecting, steps)
  return reports


def test_eight_actors_with_distinct_tasks_and_seeds_insert(stack):
  def all_collecting():
    reports = _actor_reports(stack)
    ready = {r: rep for r, rep in reports.items() if rep[2] and rep[2][-1][1] >= 100}
    return reports if len(ready) == NUM_ACTORS else None

  reports = _wait(stack, all_collecting, STEP_TIMEOUT_S,
                  f'{NUM_ACTORS} actors each reporting >= 100 env steps')
  assert sorted(reports) == list(range(1, NUM_ACTORS + 1))
  tasks = set()
  reported_steps = 0
  for replica, (named, collecting, steps) in reports.items():
    task = replica - 1
    assert named == [task], f'actor_{replica} derived tasks {named}'
    assert collecting == [(task, 1000 * task)], f'actor_{replica}: {collecting}'
    assert {t for t, _ in steps} == {task}
    tasks.add(task)
    reported_steps += steps[-1][1]
  assert tasks == set(range(NUM_ACTORS))
  # The replay server counted at least the inserts the actors reported (1 item per env step;
  # the counter is read after the log lines, and a margin covers episode ends).
  status = stack.exec('replay_server', 'python', '-m', 'launcher.container', 'status',
                      timeout_s=300)
  inserts = int(re.search(r'([\d,]+) inserted and', status).group(1).replace(',', ''))
  assert inserts >= 0.9 * reported_steps, (inserts, reported_steps)
  # The fleet status view: every actor publishes its status records to the server.
  assert f'actors    {NUM_ACTORS} reporting' in status, status


def test_learner_reaches_train_steps(stack):
  stopped = f'learner stopped at train step {TRAIN_STEPS}'

  def first_step_and_stop():
    lines = stack.logs('learner').get(('learner', 1), [])
    return lines if any(stopped in line for line in lines) else None

  lines = _wait(stack, first_step_and_stop, STEP_TIMEOUT_S, f'"{stopped}"')
  assert any('learner: starting at train step 0' in line for line in lines)
  (learner,) = stack.container_ids('learner')
  _wait(stack, lambda: _docker('inspect', '-f', '{{.State.Status}}', learner).strip()
        == 'exited', 120, 'the learner to exit')
  assert _docker('inspect', '-f', '{{.State.ExitCode}}', learner).strip() == '0'


def _eval_rows(compose: Compose):
  text = compose.exec('eval', 'cat', '/data/eval/eval/eval.csv', check=False)
  if not text.startswith('train_step,'):
    return []
  return list(csv.DictReader(io.StringIO(text)))


def test_eval_writes_results(stack):
  rows = _wait(stack, lambda: [r for r in _eval_rows(stack) if int(r['train_step']) > 0],
               STEP_TIMEOUT_S, 'an eval.csv row for learned weights')
  row = rows[-1]
  assert int(row['num_episodes']) == 2
  assert 8.0 <= float(row['average_return']) <= 200.0  # CartPole-v0 returns.
  assert int(row['env_steps']) > 0


def test_tensorboard_answers_on_localhost_only(stack):
  binding = stack.run('port', 'tensorboard', '6006', timeout_s=60).strip().splitlines()[-1]
  assert binding == f'127.0.0.1:{stack.env["TENSORBOARD_PORT"]}'

  def answers():
    try:
      with urllib.request.urlopen(f'http://{binding}/', timeout=5) as response:
        return response.status == 200
    except OSError:
      return False

  _wait(stack, answers, 180, f'TensorBoard at http://{binding}/')


def test_actor_keeps_its_task_across_a_restart(stack):
  ids = stack.container_ids('actor')
  names = {_docker('inspect', '-f', '{{.Name}}', c).strip().lstrip('/'): c for c in ids}
  name = next(n for n in names if re.search(r'[-_]3$', n))
  _wait(stack, lambda: _actor_reports(stack).get(3, ([], [], []))[1], STEP_TIMEOUT_S,
        f'{name} to collect')
  _docker('restart', '-t', '30', names[name], timeout_s=120)

  def restarted():
    named, collecting, _ = _actor_reports(stack).get(3, ([], [], []))
    return (named, collecting) if len(collecting) >= 2 else None

  named, collecting = _wait(stack, restarted, STEP_TIMEOUT_S, f'{name} to collect again')
  assert named == [2, 2]
  assert collecting == [(2, 2000), (2, 2000)]


def test_down_stops_cleanly_and_up_resumes(stack):
  # The learner must have finished its budget, so that the resume has a step to resume from.
  _wait(stack, lambda: any(f'learner stopped at train step {TRAIN_STEPS}' in line for line in
                           stack.logs('learner').get(('learner', 1), [])),
        STEP_TIMEOUT_S, 'the learner to finish its budget')
  # Follow every container's output with `docker logs -f`, which ends when the container
  # stops, after its last line (the compose command's own follower may end earlier).
  followers = {}
  for container_id in stack.container_ids():
    labels = _docker('inspect', '-f', '{{index .Config.Labels "com.docker.compose.service"}} '
                     '{{index .Config.Labels "com.docker.compose.container-number"}}',
                     container_id).split()
    path = stack.logs_dir / f'down-{labels[0]}-{labels[1]}.log'
    out = open(path, 'w')  # pylint: disable=consider-using-with
    followers[(labels[0], int(labels[1]))] = (path, out, subprocess.Popen(
        ['docker', 'logs', '-f', container_id], stdout=out, stderr=subprocess.STDOUT))
  try:
    started = time.monotonic()
    stack.run('down', timeout_s=600)
    down_s = time.monotonic() - started
    for _, _, process in followers.values():
      process.wait(timeout=60)
  finally:
    for _, out, process in followers.values():
      if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
      out.close()
  text = {key: path.read_text() for key, (path, _, _) in followers.items()}
  assert 'replay_server stopped: final checkpoint' in text[('replay_server', 1)]
  assert 'eval stopped after' in text[('eval', 1)]
  for replica in range(1, NUM_ACTORS + 1):
    assert f'actor stopped: actor {replica - 1} after' in text[('actor', replica)], replica
  left = _docker('ps', '-a', '-q', '--filter', f'label=com.docker.compose.project={stack.project}')
  assert not left.strip(), f'containers left after down: {left}'
  volumes = _docker('volume', 'ls', '-q', '--filter',
                    f'label=com.docker.compose.project={stack.project}').split()
  assert sorted(volumes) == [f'{stack.project}_eval', f'{stack.project}_keys',
                             f'{stack.project}_replay', f'{stack.project}_run']

  # Up again with one actor and a larger budget: both checkpoints come back from the volumes.
  stack.env['MAX_TRAIN_STEPS'] = str(TRAIN_STEPS + 50)
  stack.run('up', '-d', '--no-build', '--scale', 'actor=1', timeout_s=UP_TIMEOUT_S)
  resumed = re.compile(r'learner: resumed at train step (\d+)')

  def resumed_step():
    lines = stack.logs('learner', 'replay_server')
    learner = [m for m in map(resumed.search, lines.get(('learner', 1), [])) if m]
    restored = any('Restored replay checkpoint' in line
                   for line in lines.get(('replay_server', 1), []))
    return int(learner[0].group(1)) if learner and restored else None

  step = _wait(stack, resumed_step, STEP_TIMEOUT_S, 'the learner to resume')
  assert step >= TRAIN_STEPS
  _wait(stack, lambda: any(f'learner stopped at train step {TRAIN_STEPS + 50}' in line
                           for line in stack.logs('learner').get(('learner', 1), [])),
        STEP_TIMEOUT_S, 'the resumed learner to finish')
  print(f'compose timings: build {stack.timings["build_s"]:.0f} s, down {down_s:.0f} s')


CATCH_DIR = os.path.join(REPO, 'examples', 'catch')
CATCH_TRAIN_STEPS = 100


def test_the_worked_example_runs_under_compose_with_its_package_mounted(stack):
  """The user's package and gin file, mounted by examples/catch/docker-compose.catch.yml into the
  project's image, which does not contain them: the fleet trains Catch and eval scores it."""
  stack.run('down', '--timeout', '60', timeout_s=600)  # The first project's run is over.
  env = dict(stack.env, MAX_TRAIN_STEPS=str(CATCH_TRAIN_STEPS), EXPERIMENT='unused')
  catch = Compose(f'{stack.project}catch', env)
  catch._argv += ['-f', os.path.join(CATCH_DIR, 'docker-compose.catch.yml')]  # pylint: disable=protected-access
  result = subprocess.run(['docker', 'run', '--rm', '--entrypoint', 'python', TEST_IMAGE, '-c',
                           'import catch_env'], capture_output=True, text=True, timeout=120,
                          check=False)
  assert result.returncode != 0 and "No module named 'catch_env'" in result.stderr
  try:
    catch.run('up', '-d', '--no-build', '--scale', 'actor=2', timeout_s=UP_TIMEOUT_S)
    stopped = f'learner stopped at train step {CATCH_TRAIN_STEPS}'
    _wait(catch, lambda: any(stopped in line for line in
                             catch.logs('learner').get(('learner', 1), [])),
          STEP_TIMEOUT_S, f'"{stopped}"')
    rows = _wait(catch, lambda: [r for r in _eval_rows(catch) if int(r['train_step']) > 0],
                 STEP_TIMEOUT_S, 'an eval.csv row for learned weights')
    assert -1.0 <= float(rows[-1]['average_return']) <= 1.0  # Catch's returns.
    assert float(rows[-1]['average_episode_length']) == 7.0  # An 8-row board: 7 steps.
    # The learner has exited at its budget: its volume, read by a container of its own.
    recorded = _docker('run', '--rm', '-v', f'{catch.project}_run:/data/run:ro', '--entrypoint',
                       'cat', TEST_IMAGE, '/data/run/learner/operative_config.gin')
    assert "entry_point = 'catch_env:CatchEnv'" in recorded
  finally:
    catch.run('down', '-v', '--remove-orphans', '--timeout', '60', timeout_s=600, check=False)


def test_the_worked_examples_dockerfile_carries_the_package(stack, tmp_path):
  image = f'{TEST_IMAGE}-catch'
  _docker('build', '--build-arg', f'BASE={TEST_IMAGE}', '-f', os.path.join(CATCH_DIR,
          'Dockerfile'), '-t', image, CATCH_DIR, timeout_s=600)
  try:
    result = subprocess.run(
        ['docker', 'run', '--rm', '--entrypoint', 'python', image, '-c',
         'import common; from common import builders, environments, gin_config; '
         "gin_config.load_gin(['gin/catch.gin']); environments.check_environment(); "
         "print(environments.make_environment().observation_spec().shape)"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == '(8, 5)'
  finally:
    subprocess.run(['docker', 'rmi', '-f', image], capture_output=True, timeout=120,
                   check=False)
