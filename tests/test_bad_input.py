"""Bad input: each case runs a real main and expects one line naming the problem and the fix,
a non-zero exit within the time budget, and nothing written under --root_dir.

The budget is 15 s on a machine where importing the TensorFlow stack takes the few seconds it
takes on an idle CPU. On a loaded machine the import alone may take longer, so the budget for
cases that need TensorFlow grows with the import time measured in the same session; cases
caught before the heavy imports always get 15 s.
"""

from http import server as http_server
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

import portpicker
import pytest
import reverb

from common import builders
from common import constants
from common.config import LearnerConfig
from common.config import ReplayConfig
from replay_server import tables as tables_lib
from tests.conftest import CARTPOLE_GIN
from tests.conftest import FAST_BINDINGS
from tests.conftest import REPO
from tests.conftest import parse_gin

pytestmark = pytest.mark.slow  # Each case starts a real main.

BUDGET_S = 15.0
# What a main needs once TensorFlow is imported, on an idle CPU.
_IMPORT_HEADROOM_S = 7.0
GIN = [f'--gin_file={CARTPOLE_GIN}'] + [f'--gin_bindings={b}' for b in FAST_BINDINGS]


@pytest.fixture(scope='module')
def tf_budget_s():
  """15 s, or 1.5 x the measured heavy-import time plus headroom where that is larger (the
  load that slowed the import can rise while the case runs)."""
  start = time.monotonic()
  subprocess.run([sys.executable, '-c', 'import common, common.builders, reverb'], cwd=REPO,
                 check=True, capture_output=True, env=_env())
  return max(BUDGET_S, 1.5 * (time.monotonic() - start) + _IMPORT_HEADROOM_S)


def _env():
  env = dict(os.environ, PYTHONUNBUFFERED='1', CUDA_VISIBLE_DEVICES='')
  for name in ('RAY_AUTH_MODE', 'RAY_AUTH_TOKEN_PATH'):  # The cluster test's, not a local run's.
    env.pop(name, None)
  return env


def _run_main(module, *args, root_dir, prefix=()):
  """Runs a main to its end; returns (exit status, stderr error lines, seconds).

  `prefix`: a command that runs the main (`_WITHOUT_DAC_OVERRIDE`).
  """
  start = time.monotonic()
  result = subprocess.run([*prefix, sys.executable, '-m', module, f'--root_dir={root_dir}', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
  elapsed = time.monotonic() - start
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  print(f'{module} exit={result.returncode} {elapsed:.1f} s: {errors}')
  return result.returncode, errors, elapsed, result.stderr


def _assert_refused(module, args, root_dir, budget_s, *expected, prefix=(), status=2):
  """Checks one error line containing every `expected` text, the exit status (2: bad input),
  the budget, no files."""
  code, errors, elapsed, stderr = _run_main(module, *args, root_dir=root_dir, prefix=prefix)
  assert code == status, stderr[-3000:]
  assert len(errors) == 1, stderr[-3000:]
  for text in expected:
    assert text in errors[0], errors[0]
  assert elapsed < budget_s, f'{elapsed:.1f} s > {budget_s:.1f} s'
  assert not os.path.exists(root_dir) or not os.listdir(root_dir), os.listdir(root_dir)
  return errors[0]


@pytest.fixture
def fresh_root(tmp_path):
  return str(tmp_path / 'fresh' / 'run')  # Does not exist: must stay absent.


def test_missing_gin_file(fresh_root):
  _assert_refused('learner.main', ['--gin_file=/no/such/file.gin'], fresh_root, BUDGET_S,
                  "gin file '/no/such/file.gin' does not exist", 'pass --gin_file')


def test_malformed_gin_file(fresh_root, tmp_path):
  bad = tmp_path / 'bad.gin'
  bad.write_text("make_environment.env_name = 'CartPole-v0'\nReplayConfig.min_size = (1,\n"
                 'LearnerConfig.batch_size = 3\n')
  _assert_refused('actor.main', [f'--gin_file={bad}'], fresh_root, BUDGET_S,
                  f'malformed gin in {bad}', 'line 3', 'fix the syntax')


def test_binding_to_a_parameter_that_does_not_exist(fresh_root, tf_budget_s):
  _assert_refused('learner.main', GIN + ['--gin_bindings=LearnerConfig.batch_sizes = 3'],
                  fresh_root, tf_budget_s,
                  "'LearnerConfig' doesn't have a parameter named 'batch_sizes'",
                  'fix the gin file or --gin_bindings')


def test_unknown_environment_id(fresh_root, tf_budget_s):
  _assert_refused('replay_server.main',
                  GIN + ["--gin_bindings=make_environment.env_name = 'CartPol-v9'",
                         f'--port={portpicker.pick_unused_port()}'],
                  fresh_root, tf_budget_s, "unknown gym id 'CartPol-v9'",
                  "'CartPole-v0'",
                  'bind make_environment.env_name to a registered gym id')


_ENTRY = 'make_environment.env_name = None'


@pytest.mark.parametrize('bindings,expected', [
    ([_ENTRY, "make_environment.entry_point = 'tests.no_such_module:Env'"],
     "cannot import 'tests.no_such_module'"),
    ([_ENTRY, "make_environment.entry_point = 'tests.envs:NOT_CALLABLE'"], 'not callable'),
    ([_ENTRY, "make_environment.entry_point = 'tests.envs:raises'"], 'raised RuntimeError'),
    ([_ENTRY, "make_environment.entry_point = 'tests.envs:not_an_environment'"],
     'which is not an environment'),
    ([_ENTRY, "make_environment.entry_point = 'tests.envs:WrongShape'"],
     'observation has shape (2,)'),
    ([_ENTRY, "make_environment.entry_point = 'tests.envs:action_space'",
      "make_environment.env_kwargs = {'kind': 'multi_discrete'}"], 'MultiDiscrete'),
    (["make_environment.env_name = 'HalfCheetah-v6'", "make_environment.suite = 'gymnasium'"],
     "unknown Gymnasium id 'HalfCheetah-v6': did you mean 'HalfCheetah-v5'"),
], ids=['no-import', 'not-callable', 'raises', 'not-an-env', 'wrong-shape', 'multi-discrete',
        'unknown-gymnasium-id'])
def test_a_bad_environment_is_refused_before_any_child_starts(bindings, expected, fresh_root,
                                                               tf_budget_s):
  # Four children import TensorFlow at once, on two cores: twice one import's budget.
  _assert_refused('launcher.main', GIN + [f'--gin_bindings={b}' for b in bindings], fresh_root,
                  2 * tf_budget_s, expected)


def test_an_environment_package_that_is_not_installed_names_the_extra(fresh_root, tmp_path,
                                                                      tf_budget_s):
  # A `mujoco` that fails to import as an absent one does, first on the path.
  stub = tmp_path / 'no_mujoco' / 'mujoco'
  stub.mkdir(parents=True)
  (stub / '__init__.py').write_text(
      "raise ModuleNotFoundError(\"No module named 'mujoco'\", name='mujoco')\n")
  args = [f'--gin_file={os.path.join(REPO, "gin", "sac_halfcheetah_v5.gin")}']
  start = time.monotonic()
  result = subprocess.run([sys.executable, '-m', 'launcher.main', f'--root_dir={fresh_root}',
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(_env(), PYTHONPATH=str(stub.parent)))
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
  assert "HalfCheetah-v5' needs the package 'mujoco'" in errors[0], errors[0]
  assert "pip install 'reverb-fleet[mujoco]'" in errors[0], errors[0]
  assert time.monotonic() - start < tf_budget_s
  assert not os.path.exists(fresh_root)


@pytest.mark.parametrize('module', ['learner.main', 'actor.main'])
def test_batch_size_not_positive(module, fresh_root, tf_budget_s):
  _assert_refused(module, GIN + ['--gin_bindings=LearnerConfig.batch_size = 0'], fresh_root,
                  tf_budget_s, 'LearnerConfig.batch_size=0 must be > 0')


def test_min_size_above_max_size_would_deadlock(fresh_root, tf_budget_s):
  _assert_refused('replay_server.main',
                  GIN + ['--gin_bindings=ReplayConfig.samples_per_insert = 4.0',
                         '--gin_bindings=ReplayConfig.max_size = 100',
                         '--gin_bindings=ReplayConfig.min_size = 200',
                         f'--port={portpicker.pick_unused_port()}'],
                  fresh_root, tf_budget_s, 'ReplayConfig.min_size=200 exceeds',
                  'make min_size <= max_size')


def test_samples_per_insert_not_positive(fresh_root, tf_budget_s):
  _assert_refused('replay_server.main',
                  GIN + ['--gin_bindings=ReplayConfig.samples_per_insert = 0.0',
                         f'--port={portpicker.pick_unused_port()}'],
                  fresh_root, tf_budget_s, 'ReplayConfig.samples_per_insert=0.0 must be > 0')


def test_port_already_in_use(fresh_root):
  port = portpicker.pick_unused_port()
  with socket.socket(socket.AF_INET6) as holder:
    holder.bind(('', port))
    holder.listen()
    _assert_refused('replay_server.main', GIN + [f'--port={port}'], fresh_root, BUDGET_S,
                    f'port {port} is already in use', 'pass another --port')


def test_root_dir_under_a_file(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  root = str(blocker / 'run')
  _assert_refused('replay_server.main', GIN + [f'--port={portpicker.pick_unused_port()}'],
                  root, BUDGET_S, 'is not a directory', 'pass a writable --root_dir')
  assert blocker.read_text() == ''


# Root ignores a directory's permission bits through CAP_DAC_OVERRIDE; a main started without
# it (and without CAP_DAC_READ_SEARCH) meets them as any other user would.
_WITHOUT_DAC_OVERRIDE = ('setpriv', '--bounding-set=-dac_override,-dac_read_search',
                         '--inh-caps=-dac_override,-dac_read_search', '--')


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which('setpriv'),
                    reason='running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE')
def test_read_only_root_dir(tmp_path):
  parent = tmp_path / 'read_only'
  parent.mkdir()
  parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
  prefix = _WITHOUT_DAC_OVERRIDE if os.geteuid() == 0 else ()
  try:
    _assert_refused('learner.main', GIN, str(parent / 'run'), BUDGET_S,
                    'cannot write to --root_dir', 'pass a writable --root_dir', prefix=prefix)
  finally:
    parent.chmod(stat.S_IRWXU)


def test_server_address_that_never_answers(fresh_root, tf_budget_s):
  port = portpicker.pick_unused_port()
  _assert_refused('actor.main', GIN + [f'--replay_server_address=localhost:{port}',
                                       '--server_timeout_s=2'],
                  fresh_root, tf_budget_s + 2,
                  f'replay server localhost:{port} did not answer within 2 s',
                  'raise --server_timeout_s', status=3)  # Unavailable: a launcher restarts it.


@pytest.mark.parametrize('module', ['learner.main', 'actor.main'])
def test_a_weights_key_open_to_others_is_refused_before_any_wait(module, fresh_root, tmp_path):
  key = tmp_path / 'weights.key'
  key.write_text('ab' * 32 + '\n')
  key.chmod(0o644)
  port = portpicker.pick_unused_port()  # Nothing answers there: a wait would show.
  _assert_refused(module, GIN + [f'--replay_server_address=localhost:{port}',
                                 f'--weights_key_file={key}'],
                  fresh_root, BUDGET_S, f'the weights key {key} is open to others (mode 644)',
                  f'run `chmod 600 {key}`')


@pytest.mark.parametrize('module', ['learner.main', 'actor.main'])
def test_server_address_of_another_kind_of_server(module, fresh_root, tf_budget_s):
  # An HTTP server where the replay server should be: refused at its first reply, long before
  # the deadline (Reverb's own client would only time out, as for a server not up yet).
  http = http_server.HTTPServer(('localhost', 0), _QuietHandler)
  threading.Thread(target=http.serve_forever, daemon=True).start()
  try:
    _assert_refused(module, GIN + [f'--replay_server_address=localhost:{http.server_port}',
                                   '--server_timeout_s=300'],
                    fresh_root, tf_budget_s + 2,
                    f'localhost:{http.server_port} is not a replay server: it answers, but not '
                    'as a gRPC server (it replied ', 'pass the host:port that replay_server.main')
  finally:
    http.shutdown()
    http.server_close()


class _QuietHandler(http_server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass


def _server(bindings=FAST_BINDINGS):
  parse_gin(CARTPOLE_GIN, bindings)
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  port = portpicker.pick_unused_port()
  return reverb.Server(tables_lib.make_tables(specs, config, LearnerConfig()), port=port), port


def _refused_by_cartpole_server(module, bindings, root_dir, budget_s, *expected):
  """`_assert_refused` for `module` built with `bindings`, against a CartPole server."""
  server, port = _server()
  try:
    return _assert_refused(
        module, GIN + [f'--gin_bindings={b}' for b in bindings] + [
            f'--replay_server_address=localhost:{port}', '--server_timeout_s=10'],
        root_dir, budget_s, *expected)
  finally:
    server.stop()


def test_actor_built_for_another_environment(fresh_root, tf_budget_s):
  line = _refused_by_cartpole_server(
      'actor.main', ["make_environment.env_name = 'Acrobot-v1'"], fresh_root, tf_budget_s,
      "table 'replay_table' signature mismatch", 'start every process with the same --gin_file')
  # The server's CartPole observations and this actor's Acrobot ones, side by side.
  assert 'server has [int32[2], float32[2, 4]' in line
  assert 'this process expects [int32[2], float32[2, 6]' in line


def test_learner_built_for_another_network(fresh_root, tf_budget_s):
  line = _refused_by_cartpole_server(
      'learner.main', ['dqn_agent.fc_layer_params = (32,)'], fresh_root, tf_budget_s,
      "table 'variables' signature mismatch")
  assert 'float32[4, 100]' in line and 'float32[4, 32]' in line


def test_learner_on_a_checkpoint_of_another_network(tmp_path, tf_budget_s):
  """A learner checkpoint of the (100, 50) network, then a learner configured with (32,)."""
  from tf_agents.utils import common as tfa_common  # pylint: disable=g-import-not-at-top
  from learner import agent_record  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / 'run')
  learner_dir = os.path.join(root, constants.LEARNER_DIR)
  parse_gin()
  train_step = tfa_common.create_variable('train_step')
  agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  agent_record.check_and_record(learner_dir, agent)
  tfa_common.Checkpointer(os.path.join(learner_dir, agent_record.CHECKPOINT_SUBDIR),
                          agent=agent, train_step=train_step).save(train_step)
  assert agent_record.has_checkpoint(learner_dir)
  before = sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)

  small = list(FAST_BINDINGS) + ['dqn_agent.fc_layer_params = (32,)']
  server, port = _server(small)
  try:
    code, errors, elapsed, stderr = _run_main(
        'learner.main', f'--gin_file={CARTPOLE_GIN}',
        *[f'--gin_bindings={b}' for b in small],
        f'--replay_server_address=localhost:{port}', '--server_timeout_s=10', root_dir=root)
  finally:
    server.stop()
  assert code == 2, stderr[-3000:]
  assert len(errors) == 1, stderr[-3000:]
  assert 'holds a checkpoint of another agent or network' in errors[0]
  assert 'float32[4, 100]' in errors[0] and 'float32[4, 32]' in errors[0]
  assert 'pass a fresh --root_dir' in errors[0]
  assert elapsed < tf_budget_s, f'{elapsed:.1f} s'
  after = sorted(os.path.relpath(os.path.join(d, f), root)
                 for d, _, files in os.walk(root) for f in files)
  assert after == before  # Nothing new, nothing removed.


# ---- The Ray launcher: refused before any fleet exists, one line each. ----------------------

_RAY_CASES = {
    'unknown command': (['frobnicate'], ['unknown command', 'frobnicate', 'use one of']),
    'unknown binding': (['--gin_bindings=Nope.x = 1'], ['bad gin config', 'Nope']),
    'unreachable cluster': (['--address=127.0.0.1:{free}', '--connect_timeout_s=2'],
                            ['no Ray cluster answers at 127.0.0.1:', 'ray start --head']),
    'no such fleet to scale': (['scale', '--address=local', '--name=nosuchfleet'],
                               ["no fleet named 'nosuchfleet'", '--name']),
    'a pinning resource no node offers': (
        ['--address=local', '--server_resource=no_such_node'],
        ["resource 'no_such_node'", 'ray start --resources']),
}


@pytest.mark.parametrize('case', list(_RAY_CASES), ids=list(_RAY_CASES))
def test_ray_launcher_refuses_bad_input(case, fresh_root, tf_budget_s):
  if importlib.util.find_spec('ray') is None:  # Not imported here: see tests/test_ray_cluster.py.
    pytest.skip('ray is not installed: pip install -e ".[ray]"')
  args, expected = _RAY_CASES[case]
  args = [a.replace('{free}', str(portpicker.pick_unused_port())) for a in args]
  # A throwaway local Ray cluster takes seconds to start (and to stop) on top of the imports.
  budget = tf_budget_s + (30 if '--address=local' in args else 0)
  _assert_refused('launcher.ray', GIN + args, fresh_root, budget, *expected)


# One line per case: (main, extra flags, gin bindings, texts the error line must hold).
BAD_VALUES = [
    ('replay_server.main', [], ['ReplayConfig.max_size = 1e5'],
     ['ReplayConfig.max_size=100000.0 is not an integer', 'bind an integer in the gin file']),
    ('learner.main', [], ["LearnerConfig.batch_size = '64'"],
     ["LearnerConfig.batch_size='64' is not an integer"]),
    ('actor.main', [], ['ActorConfig.num_envs = -2'], ['ActorConfig.num_envs=-2 must be > 0']),
    ('actor.main', [], ['ActorConfig.log_interval_s = "often"'],
     ["ActorConfig.log_interval_s='often' is not a number"]),
    ('actor.main', ['--task=-1'], [], ['flag --task=-1: -1 is not a non-negative integer',
                                       'fix the flag']),
    ('actor.main', ['--task=99999999'], [], ['--task=99999999 cannot seed its environments',
                                             'pass a task id in 0..']),
    ('actor.main', ['--task=abc'], [], ["flag --task=abc: invalid literal for int()",
                                        'fix the flag']),
    ('replay_server.main', ['--keep_checkpoints=0'], [],
     ['flag --keep_checkpoints=0: 0 is not a positive integer']),
    ('learner.main', ['--no_such_flag=1'], [], ['Unknown command line flag', 'no_such_flag']),
    # An agent builder's arguments: types from its annotations, ranges by argument name.
    ('learner.main', [], ["dqn_agent.learning_rate = '1e-3'"],
     ["dqn_agent.learning_rate='1e-3' is not a number", 'for example 0.001']),
    ('actor.main', [], ['dqn_agent.gamma = 1.5'], ['dqn_agent.gamma=1.5 must be in [0, 1]']),
    # The local launcher checks the config, the environment and the agent before it starts
    # any child.
    ('launcher.main', [], ['EvalConfig.interval = 2.5'],
     ['EvalConfig.interval=2.5 is not an integer']),
    ('launcher.main', [], ['dqn_agent.fc_layer_params = 100'],
     ['dqn_agent.fc_layer_params=100 is not a sequence of integers']),
    ('launcher.main', [], ['ReplayConfig.sequence_length = 3'],
     ['ReplayConfig.sequence_length=3, but this agent trains on 2-step items']),
]


@pytest.mark.parametrize('module, args, bindings, expected', BAD_VALUES,
                         ids=[f'{m}:{" ".join(a + b)}' for m, a, b, _ in BAD_VALUES])
def test_bad_values_are_refused_before_anything_starts(module, args, bindings, expected,
                                                       fresh_root, tf_budget_s):
  if module == 'replay_server.main':
    args = args + [f'--port={portpicker.pick_unused_port()}']
  _assert_refused(module, GIN + args + [f'--gin_bindings={b}' for b in bindings], fresh_root,
                  tf_budget_s, *expected)


@pytest.mark.parametrize('address, expected', [
    ('http://localhost:8008', 'is a URL, not host:port'),
    ('bad host:8008', "'bad host' is not a host name or an IP address"),
    ('300.1.2.3:8008', "'300.1.2.3' is not a host name or an IP address"),
])
def test_an_address_that_can_never_work_is_refused_at_once(address, expected, fresh_root):
  # A deadline of an hour: waiting it out would fail the budget.
  _assert_refused('actor.main', GIN + [f'--replay_server_address={address}',
                                       '--server_timeout_s=3600'], fresh_root, BUDGET_S,
                  expected, 'pass host:port')


# Every main that takes flags, with what it needs besides the flag under test. A numeric flag
# without bounds must be listed here with the reason any value works.
MAINS = {
    'actor.main': ['--root_dir=/nonexistent/run'], 'learner.main': ['--root_dir=/nonexistent/run'],
    'replay_server.main': ['--root_dir=/nonexistent/run'], 'launcher.main': [],
    'launcher.ray': [], 'launcher.fleet_status': [], 'results.video': [], 'results.plot': [],
}
UNBOUNDED = {('results.plot', 'target'): 'a return to draw a line at: any number'}
_LIST_NUMERIC_FLAGS = """
import importlib, json, sys
from absl import flags
importlib.import_module(sys.argv[1])
found = {}
for name, flag in flags.FLAGS._flags().items():
  module = flags.FLAGS.find_module_defining_flag(name) or ''
  if module.split('.')[0] in ('actor', 'learner', 'replay_server', 'launcher', 'common',
                              'results') and flag.parser.flag_type() in ('int', 'float'):
    found[name] = (flag.parser.flag_type(), getattr(flag.parser, 'lower_bound', None),
                   getattr(flag.parser, 'upper_bound', None))
print(json.dumps(found))
"""


def _numeric_flags(module):
  result = subprocess.run([sys.executable, '-c', _LIST_NUMERIC_FLAGS, module], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=_env(), check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('module', sorted(MAINS))
def test_every_numeric_flag_is_bounded_and_refuses_a_value_out_of_its_range(module, tmp_path):
  """Generated from the flags' declarations: each int or float flag of each main declares its
  range (absl's lower_bound/upper_bound), and a value just outside it ends the main at flag
  parsing, in one line that names the flag, with exit status 2 and nothing written."""
  declared = _numeric_flags(module)
  assert declared, f'{module} declares no numeric flag: the listing is broken'
  unbounded = sorted(name for name, (_, low, high) in declared.items()
                     if low is None and high is None and (module, name) not in UNBOUNDED)
  assert not unbounded, f'{module}: numeric flags without a declared range: {unbounded}'
  for name, (kind, low, high) in sorted(declared.items()):
    bad = [b for b in ((low - 1 if low is not None else None),
                       (high + 1 if high is not None else None)) if b is not None]
    for value in bad:
      text = f'{int(value)}' if kind == 'int' else f'{value:g}'
      start = time.monotonic()
      result = subprocess.run([sys.executable, '-m', module, *MAINS[module], f'--{name}={text}'],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env=dict(_env(), PYTHONPATH=REPO))
      errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
      assert result.returncode == 2, (module, name, text, result.stderr[-2000:])
      assert len(errors) == 1 and f'--{name}={text}' in errors[0], (module, name, errors)
      assert time.monotonic() - start < BUDGET_S
      assert not os.listdir(tmp_path), os.listdir(tmp_path)


def test_ray_launchers_default_gin_file_is_the_projects_from_any_directory(tmp_path):
  # A `gin/` where the command runs is not the default's: the launcher goes past the gin
  # checks with the project's file and stops only at the cluster it cannot reach.
  if importlib.util.find_spec('ray') is None:
    pytest.skip('ray is not installed: pip install -e ".[ray]"')
  (tmp_path / 'gin').mkdir()
  (tmp_path / 'gin' / 'dqn_cartpole.gin').write_text('this is not gin\n')
  result = subprocess.run(
      [sys.executable, '-m', 'launcher.ray', f'--root_dir={tmp_path / "run"}',
       f'--address=127.0.0.1:{portpicker.pick_unused_port()}', '--connect_timeout_s=2'],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env=dict(_env(), PYTHONPATH=REPO))
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
  assert 'no Ray cluster answers at 127.0.0.1:' in errors[0], errors[0]
