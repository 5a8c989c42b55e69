"""Integration tests against a real in-process Reverb server."""

import logging
import os
import re
import threading
import time

import numpy as np
import pytest
import reverb
import tensorflow as tf

from actor import collect
from actor import evaluate
from actor import policy_client as policy_client_lib
from common import agents
from common import builders
from common import constants
from common import replay
from common import session as session_lib
from common import variables as variables_lib
from common import weights_key
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.config import validated_configs
from learner import dataset as learner_dataset
from learner import divergence
from learner import train
from replay_server import checkpoints as checkpoints_lib
from replay_server import server as server_lib
from replay_server import tables as tables_lib
from tests.conftest import FAST_BINDINGS
from tests.conftest import parse_gin
from tests.conftest import wait_until


def _inserted(address):
  info = reverb.Client(address).server_info()[constants.REPLAY_TABLE]
  return replay.inserted_env_steps(info)


def _fresh_variables():
  train_step = tf.Variable(0, dtype=tf.int64)
  agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  return agents.policy_variables(agent, train_step)


@pytest.fixture
def key_file(tmp_path):
  """A run's weights key, as the learner makes it."""
  path = str(tmp_path / 'weights.key')
  weights_key.ensure(path)
  return path


def _signer(key_file):
  return weights_key.Signer(weights_key.read(key_file))


def _variable_client(address, variables, key_file, **kwargs):
  return variables_lib.VariableClient(session_lib.unchecked(address), variables,
                                      _signer(key_file), **kwargs)


def _policy_client(address, key_file):
  client = policy_client_lib.PolicyClient(address, ReplayConfig(), 'actor 0', 30,
                                          weights_key.KeySource(key_file, 'actor 0'))
  client.connect()
  return client


def test_actor_thread_and_learner_train_together(cartpole_server, root_dir):
  stop = threading.Event()
  result = {}
  actor_thread = threading.Thread(
      target=lambda: result.update(steps=collect.run_actor(
          root_dir, cartpole_server, task=0, max_env_steps=3000, stop_event=stop,
              configs=validated_configs())))
  actor_thread.start()
  try:
    final_step = train.run_learner(root_dir, cartpole_server, max_train_steps=60,
        configs=validated_configs())
  finally:
    stop.set()
    actor_thread.join(timeout=60)
  assert not actor_thread.is_alive()
  assert final_step == 60
  assert result['steps'] >= 64  # at least the table's min_size before the learner could start
  assert _inserted(cartpole_server) >= 64
  # The learner pushed its final weights.
  info = reverb.Client(cartpole_server).server_info()
  assert info[constants.VARIABLE_TABLE].current_size == 1
  # It checkpointed and exported both policies.
  assert os.path.isdir(os.path.join(root_dir, 'learner', 'train', 'checkpoints'))
  for name in ('greedy_policy', 'collect_policy'):
    assert os.path.isfile(os.path.join(root_dir, constants.POLICY_DIR, name, 'saved_model.pb'))


def test_actor_stops_at_max_env_steps_and_writes_every_step(cartpole_server, root_dir):
  steps = collect.run_actor(root_dir, cartpole_server, task=1, max_env_steps=200,
      configs=validated_configs())
  # It stops at the budget, at most one (batched) step past it.
  assert 200 <= steps <= 201
  # A 2-step item for every step but the first of each episode: 200 steps, >= ~180 items.
  assert 150 <= _inserted(cartpole_server) <= steps


def test_batched_actor_collects_from_every_environment(cartpole_server, root_dir):
  parse_gin(bindings=('ActorConfig.num_envs = 4', 'ActorConfig.steps_per_run = 40',
                      'ReplayConfig.min_size = 64'))
  steps = collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=400,
      configs=validated_configs())
  # The batch steps in lockstep, so the actor stops within one run past the budget.
  assert 400 <= steps < 400 + 40 + 4
  # Every environment writes its own items: with only one writing, ~1/4 of this would arrive.
  assert 0.75 * steps <= _inserted(cartpole_server) <= steps


def test_pushed_weights_equal_pulled_weights(cartpole_server, key_file):
  parse_gin()
  source = _fresh_variables()
  target = _fresh_variables()
  for variable in tf.nest.flatten(source[constants.POLICY_KEY]):
    variable.assign(tf.random.normal(variable.shape, dtype=variable.dtype))
  source[constants.TRAIN_STEP_KEY].assign(1234)
  _variable_client(cartpole_server, source, key_file).push()
  step = _variable_client(cartpole_server, target, key_file).pull()
  assert step == 1234
  for key in (constants.POLICY_KEY, constants.TRAIN_STEP_KEY):
    for pushed, pulled in zip(tf.nest.flatten(source[key]), tf.nest.flatten(target[key])):
      np.testing.assert_array_equal(pushed.numpy(), pulled.numpy())


class _SignsSomethingElse:
  """A pusher without the run's key: signs with `key`, over values other than those it pushes
  when `alter` (an item altered after signing), or leaves the signature zero when `key` is
  None (an unsigned item)."""

  def __init__(self, key=None, alter=False):
    self._signer = weights_key.Signer(key) if key else None
    self._alter = alter

  def digest(self, values):
    if self._signer is None:
      return np.zeros(weights_key.SIGNATURE_WORDS, np.int64)
    if self._alter:
      values = [values[0] + 1] + list(values[1:])
    return self._signer.digest(values)


def test_forged_unsigned_and_altered_weights_are_refused_and_the_learners_load(
    cartpole_server, key_file, caplog):
  parse_gin()
  client = _policy_client(cartpole_server, key_file)
  source = _fresh_variables()

  def push(step, value, signer):
    for variable in tf.nest.flatten(source[constants.POLICY_KEY]):
      variable.assign(tf.fill(variable.shape, tf.cast(value, variable.dtype)))
    source[constants.TRAIN_STEP_KEY].assign(step)
    variables_lib.VariableClient(session_lib.unchecked(cartpole_server), source, signer).push()

  def first_weight():
    return float(tf.nest.flatten(client.agent.policy.variables())[0].numpy().ravel()[0])

  untouched = first_weight()
  with caplog.at_level(logging.WARNING):
    # A huge train step would make the actors refuse the learner's weights from then on.
    push(10**12, 7.0, _SignsSomethingElse(weights_key.new_key()))
    assert client.pull() is None
    push(10**12, 7.0, _SignsSomethingElse())
    assert client.pull() is None
    push(10**12, 7.0, _SignsSomethingElse(weights_key.read(key_file), alter=True))
    assert client.pull() is None
  assert client.refused == 3 and client.train_step == -1 and first_weight() == untouched
  refused = [r.getMessage() for r in caplog.records if 'not signed' in r.getMessage()]
  assert len(refused) == 1 and refused[0].startswith(
      "actor 0: the variable table holds an item that is not signed with this run's weights key")
  push(60, 6.0, _signer(key_file))
  assert client.pull() == 60 and first_weight() == 6.0 and client.refused == 3


def test_without_a_key_nothing_is_loaded_until_the_learner_makes_it(cartpole_server, tmp_path,
                                                                    caplog, monkeypatch):
  parse_gin()
  monkeypatch.delenv(weights_key.ENV_VAR, raising=False)
  path = str(tmp_path / 'run' / 'weights.key')
  client = policy_client_lib.PolicyClient(cartpole_server, ReplayConfig(), 'eval', 30,
                                          weights_key.KeySource(path, 'eval'))
  client.connect()
  with caplog.at_level(logging.WARNING):
    assert client.pull() is None and client.pull() is None
  said = [r.getMessage() for r in caplog.records if 'no weights key yet' in r.getMessage()]
  assert len(said) == 1 and path in said[0] and weights_key.ENV_VAR in said[0]
  weights_key.ensure(path)  # The learner starts.
  _variable_client(cartpole_server, _fresh_variables(), path).push()
  assert client.pull() == 0


def _insert_non_finite_copies(address, copies):
  """Inserts `copies` of a sampled replay item with NaN in its first floating-point column, as
  a peer on the network could."""
  client = reverb.Client(address)
  sample = next(client.sample(constants.REPLAY_TABLE, num_samples=1, emit_timesteps=False))
  columns = [np.array(column) for column in sample.data]
  bad = next(i for i, column in enumerate(columns) if column.dtype.kind == 'f')
  columns[bad][...] = np.nan
  length = len(columns[0])
  with client.trajectory_writer(num_keep_alive_refs=length, validate_items=False) as writer:
    for _ in range(copies):
      for t in range(length):
        writer.append([column[t] for column in columns])
      writer.create_item(constants.REPLAY_TABLE, priority=1.0,
                         trajectory=[column[-length:] for column in writer.history])
    writer.flush()


def test_the_learner_skips_and_counts_replay_items_that_hold_nan(cartpole_server, root_dir,
                                                                 caplog):
  # A foreign item is a fault to skip, not a divergence that ends the run.
  collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=200,
                    configs=validated_configs())
  _insert_non_finite_copies(cartpole_server, 100)
  _, specs = builders.make_agent_and_specs(ReplayConfig())
  before = learner_dataset.SKIPPED.count
  dataset = learner_dataset.make_dataset(cartpole_server, specs.collect_data_spec, batch_size=16,
                                         sequence_length=specs.sequence_length,
                                         rate_limiter_timeout_ms=5000)
  with caplog.at_level(logging.WARNING):
    for experience, _ in dataset.take(20):
      for column in tf.nest.flatten(experience):
        if column.dtype.is_floating:
          assert np.isfinite(column.numpy()).all()
  skipped = learner_dataset.SKIPPED.count - before
  assert skipped > 20  # About a third of 320 samples, and every one of them.
  lines = [r.getMessage() for r in caplog.records if 'holds inf or NaN' in r.getMessage()]
  assert 1 <= len(lines) <= 2 and 'docs/security.md' in lines[-1]


def test_an_actor_never_loads_weights_older_than_its_own(cartpole_server, caplog, key_file):
  # A replay server restored from an old checkpoint holds the weights of that time.
  parse_gin()
  source = _fresh_variables()
  pusher = _variable_client(cartpole_server, source, key_file)
  client = _policy_client(cartpole_server, key_file)

  def push(step, value):
    for variable in tf.nest.flatten(source[constants.POLICY_KEY]):
      variable.assign(tf.fill(variable.shape, tf.cast(value, variable.dtype)))
    source[constants.TRAIN_STEP_KEY].assign(step)
    pusher.push()

  def first_weight():
    return float(tf.nest.flatten(client.agent.policy.variables())[0].numpy().ravel()[0])

  push(30, 3.0)
  assert client.pull() == 30 and first_weight() == 3.0
  push(10, 1.0)
  with caplog.at_level(logging.WARNING):
    assert client.pull() is None
    assert client.pull() is None
  assert client.train_step == 30 and first_weight() == 3.0
  older = [r.getMessage() for r in caplog.records if 'older than' in r.getMessage()]
  assert older == ['actor 0: the variable table holds the weights of train step 10, older than '
                   'those in use (30); keeping these until newer ones are pushed']
  push(30, 3.0)
  assert client.pull() == 30  # The same step again is loaded (nothing goes backwards).
  push(40, 4.0)
  assert client.pull() == 40 and first_weight() == 4.0


def test_an_actor_reads_the_weights_only_when_a_push_came_since_its_last_load(
    cartpole_server, monkeypatch, key_file):
  parse_gin()
  source = _fresh_variables()
  pusher = _variable_client(cartpole_server, source, key_file)
  client = _policy_client(cartpole_server, key_file)
  client.pull()  # Makes its variable client.
  reads = []
  read = client._client.pull  # pylint: disable=protected-access
  monkeypatch.setattr(client._client, 'pull',  # pylint: disable=protected-access
                      lambda **kwargs: reads.append(1) or read(**kwargs))
  source[constants.TRAIN_STEP_KEY].assign(5)
  pusher.push()
  assert client.pull() == 5 and len(reads) == 1
  assert client.pull() is None and client.pull() is None  # Nothing new: nothing read.
  assert len(reads) == 1 and client.train_step == 5
  source[constants.TRAIN_STEP_KEY].assign(6)
  pusher.push()
  assert client.pull() == 6 and len(reads) == 2


def test_push_watch_counts_and_logs_inserts_that_are_not_its_own(cartpole_server, key_file,
                                                                   caplog):
  # Anyone who reaches the port can insert into the variable table: a fault to report, never a
  # reason for the learner to stop (that would hand them a way to end the run).
  parse_gin()
  own = _variable_client(cartpole_server, _fresh_variables(), key_file)
  other = _variable_client(cartpole_server, _fresh_variables(), key_file)
  slept = []
  now = [0.0]
  watch = variables_lib.PushWatch(session_lib.unchecked(cartpole_server), window_s=10,
                                  sleep=slept.append, clock=lambda: now[0], log_every_s=60)
  watch.check_start()  # Nothing ever pushed to this server: no learner to wait for.
  assert slept == []
  with caplog.at_level(logging.WARNING):
    for _ in range(3):
      watch.before_push()
      own.push()
      watch.after_push()
    assert watch.foreign == 0 and not caplog.records
    other.push()
    watch.before_push()
    own.push()
    watch.after_push()
    other.push()
    other.push()
    now[0] = 30.0
    watch.before_push()  # Counted, not logged: the last line is 30 s old.
    now[0] = 100.0
    other.push()
    watch.before_push()
  assert watch.foreign == 4
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 2, lines
  assert re.match(r'learner: the variable table at localhost:\d+ took 1 insert\(s\) since its '
                  r'previous push that are not this learner\'s \(1 in all\)', lines[0])
  assert '(4 in all)' in lines[1] and 'stop it' in lines[1]
  # A server that has seen pushes may have a running learner: the rest of the window is
  # waited out, and a push in it is counted.
  waited = variables_lib.PushWatch(session_lib.unchecked(cartpole_server),
                                   window_s=10, sleep=slept.append)
  waited.check_start()
  assert len(slept) == 1 and 9 < slept[0] <= 10 and waited.foreign == 0
  starting = variables_lib.PushWatch(session_lib.unchecked(cartpole_server),
                                     window_s=10, sleep=lambda _: other.push())
  starting.check_start()
  assert starting.foreign == 1


def test_pull_from_an_empty_variable_table_returns_none_within_its_timeout(cartpole_server,
                                                                           key_file):
  parse_gin()
  client = _variable_client(cartpole_server, _fresh_variables(), key_file, pull_timeout_s=0.5)
  start = time.monotonic()
  assert client.pull() is None
  assert time.monotonic() - start < 5
  # The read that outlived its pull still waits on the empty table: later pulls return at
  # once, and start no second one.
  for _ in range(3):
    assert client.pull() is None
  readers = [t for t in threading.enumerate() if t.name == 'weights pull']
  assert len(readers) == 1
  # The learner pushes: the waiting read gets that item and is dropped, and the next pull
  # reads the table afresh and loads it.
  source = _fresh_variables()
  source[constants.TRAIN_STEP_KEY].assign(77)
  _variable_client(cartpole_server, source, key_file).push()
  wait_until(lambda: client.pull() == 77, 10, 'the pushed weights loaded')
  wait_until(lambda: not [t for t in threading.enumerate() if t.name == 'weights pull'], 10,
             'no read left waiting')


def test_min_size_limiter_blocks_sampling_until_min_size(cartpole_server, tmp_path):
  parse_gin()
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  dataset = learner_dataset.make_dataset(cartpole_server, specs.collect_data_spec, batch_size=8,
                                sequence_length=2, rate_limiter_timeout_ms=300)
  # Empty table: the sample waits 300 ms on the limiter, then the dataset ends (no hang).
  with pytest.raises(StopIteration):
    next(iter(dataset))
  collect.run_actor(str(tmp_path), cartpole_server, task=0, max_env_steps=120,
      configs=validated_configs())
  experience, _ = next(iter(dataset))
  assert experience.observation.shape == (8, 2, 4)


def test_sample_to_insert_ratio_holds_samples_and_inserts_together(port, tmp_path):
  parse_gin(bindings=('ReplayConfig.min_size = 20', 'ReplayConfig.samples_per_insert = 2.0',
                      'ReplayConfig.samples_per_insert_tolerance = 0.1'))
  config = ReplayConfig()
  _, specs = builders.make_agent_and_specs(config)
  server = reverb.Server(tables_lib.make_tables(specs, config, LearnerConfig()), port=port)
  address = f'localhost:{port}'
  stop = threading.Event()
  actor = threading.Thread(target=collect.run_actor, args=(str(tmp_path), address, 0),
                           kwargs=dict(max_env_steps=200, stop_event=stop,
                                       configs=validated_configs()))
  try:
    actor.start()
    dataset = learner_dataset.make_dataset(address, specs.collect_data_spec, batch_size=1,
                                  sequence_length=2, rate_limiter_timeout_ms=2000)
    sampled = 0
    # The sampler is held back to the inserts, and the actor (blocked on inserts whenever the
    # sampler lags) finishes only because the sampler keeps up; the dataset ends 2 s after the
    # last insert allowed its last sample.
    for _ in dataset:
      sampled += 1
      assert sampled < 2000, 'the ratio limiter never stopped sampling'
    actor.join(timeout=60)
    assert not actor.is_alive()
    inserted = _inserted(address)
    error_buffer = max(0.1 * 20 * 2.0, 2.0)
    target = 2.0 * (inserted - 20)
    assert inserted > 150
    assert target - error_buffer - 2 <= sampled <= target + error_buffer
  finally:
    stop.set()
    actor.join(timeout=60)
    server.stop()


@pytest.mark.slow  # Waits out rate-limiter timeouts or trains to a checkpoint: seconds each.
def test_learner_logs_table_state_while_starved(cartpole_server, root_dir, caplog):
  parse_gin(bindings=('LearnerConfig.rate_limiter_timeout_s = 0.3',))
  stop = threading.Event()
  thread = threading.Thread(target=train.run_learner,
                            args=(root_dir, cartpole_server),
                            kwargs=dict(max_train_steps=10, stop_event=stop,
                                        configs=validated_configs()))
  with caplog.at_level(logging.INFO):
    thread.start()
    try:
      wait_until(lambda: any('no replay sample' in r.getMessage() for r in caplog.records),
                 60, 'the learner stall log line')
    finally:
      stop.set()
      thread.join(timeout=60)
  line = next(r.getMessage() for r in caplog.records if 'no replay sample' in r.getMessage())
  assert f'table {constants.REPLAY_TABLE}: size=0/' in line
  assert 'min_size_to_sample=64' in line


def test_learner_resumes_from_its_checkpoint(cartpole_server, root_dir):
  collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=200,
      configs=validated_configs())
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=50,
      configs=validated_configs()) == 50
  parse_gin()
  # A new learner on the same root_dir continues from step 50 rather than from 0.
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=70,
      configs=validated_configs()) == 70
  checkpoints = os.listdir(os.path.join(root_dir, 'learner', 'train', 'checkpoints'))
  assert any('70' in name for name in checkpoints)


@pytest.mark.slow  # Waits out rate-limiter timeouts or trains to a checkpoint: seconds each.
def test_diverged_learner_stops_before_saving_or_pushing_non_finite_weights(cartpole_server,
                                                                            root_dir, caplog):
  collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=200,
      configs=validated_configs())
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=20,
      configs=validated_configs()) == 20
  checkpoint_dir = os.path.join(root_dir, 'learner', 'train', 'checkpoints')
  policy_dir = os.path.join(root_dir, constants.POLICY_DIR, 'greedy_policy')
  exported_at = os.stat(policy_dir).st_mtime_ns
  parse_gin(bindings=FAST_BINDINGS + ('dqn_agent.learning_rate = 1e30',))
  with caplog.at_level(logging.WARNING):
    with pytest.raises(divergence.DivergedError) as e:
      train.run_learner(root_dir, cartpole_server, max_train_steps=500, configs=validated_configs())
  # Its watchdog stopped with the loop: left running, it would end this process (os._exit(3))
  # once the server is gone for its deadline.
  assert not [t.name for t in threading.enumerate() if t.name == 'learner watchdog']
  # The resumed learner runs the configured learning rate, not the checkpoint's.
  assert ('learner: the checkpoint was trained with other settings; applying the configuration '
          '(optimizer.learning_rate 0.001 -> 1e+30)') in caplog.text
  message = str(e.value)
  # DQN's own check_numerics on the loss fails before that step's gradients are applied.
  assert re.match(r"learner diverged at train step 2\d: the agent's own check failed \(Loss is "
                  r'inf or nan\); nothing non-finite was saved, exported or pushed', message)
  assert 'the newest checkpoint, ckpt-20 in ' in message and 'lower the learning rate' in message
  assert os.path.basename(tf.train.latest_checkpoint(checkpoint_dir)) == 'ckpt-20'
  assert os.stat(policy_dir).st_mtime_ns == exported_at
  pushed = reverb.Client(cartpole_server).sample(constants.VARIABLE_TABLE, 1)
  weights = [np.asarray(w) for w in next(pushed)[0].data]
  assert all(np.isfinite(w).all() for w in weights if w.dtype.kind == 'f')
  # The last good checkpoint still loads: a learner with the old settings resumes from it.
  parse_gin()
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=30,
      configs=validated_configs()) == 30


def test_finite_check_names_the_first_non_finite_variable(tmp_path):
  check = divergence.FiniteCheck(
      [tf.Variable([1.0], name='q/kernel'), tf.Variable(3, name='step'),
       tf.Variable([0.0, np.nan], name='q/bias'), tf.Variable([np.inf], name='target/bias')],
      str(tmp_path))
  with pytest.raises(divergence.DivergedError,
                     match=r'^learner diverged at train step 7: variable q/bias:0 and 1 more '
                           r'holds inf or NaN; .* and no checkpoint was written: lower'):
    check(7)
  with pytest.raises(divergence.DivergedError, match='train step 8: the loss is inf'):
    divergence.FiniteCheck([tf.Variable([1.0])], str(tmp_path))(8, float('inf'))
  divergence.FiniteCheck([tf.Variable([1.0])], str(tmp_path))(9, 0.5)  # Finite: no error.


@pytest.mark.slow  # Waits out rate-limiter timeouts or trains to a checkpoint: seconds each.
def test_learner_falls_back_past_a_truncated_checkpoint(cartpole_server, root_dir, caplog):
  collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=200,
      configs=validated_configs())
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=20,
      configs=validated_configs()) == 20
  parse_gin()
  assert train.run_learner(root_dir, cartpole_server, max_train_steps=30,
      configs=validated_configs()) == 30
  checkpoint_dir = os.path.join(root_dir, 'learner', 'train', 'checkpoints')
  data = tf.io.gfile.glob(os.path.join(checkpoint_dir, 'ckpt-30.data-*'))[0]
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)
  parse_gin()
  with caplog.at_level(logging.WARNING):
    assert train.run_learner(root_dir, cartpole_server, max_train_steps=25,
        configs=validated_configs()) == 25
  assert 'learner checkpoint ckpt-30 is unreadable (' in caplog.text
  assert 'falling back to ckpt-20' in caplog.text
  corrupt = os.listdir(os.path.join(root_dir, 'learner', 'corrupt'))
  assert sorted(n.split('.')[0] for n in corrupt) == ['ckpt-30', 'ckpt-30']


def test_eval_writes_a_csv_row_for_the_pushed_weights(cartpole_server, root_dir):
  collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=100,
      configs=validated_configs())
  parse_gin()
  train.run_learner(root_dir, cartpole_server, max_train_steps=10, configs=validated_configs())
  parse_gin()
  assert evaluate.run_eval(root_dir, cartpole_server, max_evals=1, configs=validated_configs()) == 1
  rows = evaluate.read_csv(os.path.join(root_dir, constants.EVAL_CSV))
  assert len(rows) == 1
  assert rows[0]['train_step'] == 10
  assert rows[0]['num_episodes'] == 2
  assert 8 <= rows[0]['average_return'] <= 200
  assert rows[0]['env_steps'] >= 64


def test_replay_server_checkpoints_on_stop_and_restores(root_dir, port, tmp_path):
  parse_gin()
  stop, ready = threading.Event(), threading.Event()
  thread = threading.Thread(target=server_lib.serve,
                            args=(root_dir, port, validated_configs(), 0),
                            kwargs=dict(stop_event=stop, ready_event=ready))
  thread.start()
  assert ready.wait(60)
  address = f'localhost:{port}'
  collect.run_actor(str(tmp_path), address, task=0, max_env_steps=150, configs=validated_configs())
  size = reverb.Client(address).server_info()[constants.REPLAY_TABLE].current_size
  stop.set()
  thread.join(timeout=60)
  checkpoints = checkpoints_lib.complete_checkpoints(
      os.path.join(root_dir, constants.REPLAY_CHECKPOINT_DIR))
  assert len(checkpoints) == 1

  stop, ready = threading.Event(), threading.Event()
  thread = threading.Thread(target=server_lib.serve,
                            args=(root_dir, port, validated_configs(), 0),
                            kwargs=dict(stop_event=stop, ready_event=ready))
  thread.start()
  try:
    assert ready.wait(60)
    restored = reverb.Client(address).server_info()[constants.REPLAY_TABLE].current_size
    assert restored == size > 100
  finally:
    stop.set()
    thread.join(timeout=60)


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
  for name in ('a', 'b', 'c', 'd'):
    (tmp_path / name).mkdir()
    if name != 'd':
      (tmp_path / name / 'DONE').write_text('')
  checkpoints_lib.prune_checkpoints(str(tmp_path), keep=2)
  assert sorted(os.listdir(tmp_path)) == ['b', 'c', 'd']
  assert checkpoints_lib.complete_checkpoints(str(tmp_path)) == [str(tmp_path / 'b'),
                                                             str(tmp_path / 'c')]


def test_a_push_to_a_server_that_is_away_fails_within_its_deadline(port, key_file):
  # Reverb's own writers wait for the server however long it takes; a learner that lost its
  # server during a push would hang there, outside every deadline.
  parse_gin()
  client = _variable_client(f'localhost:{port}', _fresh_variables(), key_file,
                            push_timeout_s=1.0)
  outcome = []

  def push():
    try:
      client.push()
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  start = time.monotonic()
  pusher = threading.Thread(target=push, daemon=True)
  pusher.start()
  pusher.join(20)
  assert not pusher.is_alive(), 'the push to an absent server hung'
  assert isinstance(outcome[0], tf.errors.DeadlineExceededError), outcome
  assert 'not confirmed within 1 s' in str(outcome[0])
  assert time.monotonic() - start < 10
  watch = variables_lib.PushWatch(session_lib.unchecked(f'localhost:{port}'), window_s=0)
  with pytest.raises(tf.errors.UnavailableError, match='not answering'):
    watch.before_push()
