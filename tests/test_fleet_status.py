"""`reverb-fleet status`: the fleet view, read from a real replay server without TensorFlow."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import reverb

from actor import evaluate
from actor import status as status_lib
from common import agents
from common import constants
from common.config import validated_configs
from common import session as session_lib
from launcher import fleet_status
from launcher import processes
from common import reverb_rpc
from tests.conftest import REPO
from tests.conftest import wait_until

# Runs the status main and reports whether TensorFlow was imported on the way.
_STATUS_MAIN = r'''
import atexit, runpy, sys
sys.path.insert(0, {repo!r})
atexit.register(lambda: print('TENSORFLOW_LOADED=%s' % ('tensorflow' in sys.modules)))
sys.argv = ['status'] + {args!r}
runpy.run_module('launcher.fleet_status', run_name='__main__', alter_sys=True)
'''


def _run_status(*args, timeout_s=60):
  return subprocess.run(
      [sys.executable, '-c', _STATUS_MAIN.format(repo=REPO, args=list(args))],
      capture_output=True, text=True, timeout=timeout_s, env=processes.child_env())


def _push_weights(address: str, train_step: int) -> None:
  # pylint: disable=g-import-not-at-top
  from common import builders
  from common import variables
  from common import weights_key
  from common.config import ReplayConfig
  agent, _ = builders.make_agent_and_specs(ReplayConfig())
  train_step_var = agent.train_step_counter
  train_step_var.assign(train_step)
  client = variables.VariableClient(session_lib.unchecked(address),
                                    agents.policy_variables(agent, train_step_var),
                                    weights_key.Signer(weights_key.new_key()))
  client.push()


def _insert_replay_items(address: str, count: int, root_dir: str) -> None:
  """Items through a real actor run, so the replay table's counters move."""
  from actor import collect  # pylint: disable=g-import-not-at-top
  collect.run_actor(root_dir, address, task=0, max_env_steps=count, configs=validated_configs())


def test_status_shows_the_fleet_without_tensorflow(cartpole_server, root_dir):
  client = reverb.Client(cartpole_server)
  _insert_replay_items(cartpole_server, 120, root_dir)
  _push_weights(cartpole_server, 1234)
  assert status_lib.publish_status(client, {'role': 'actor', 'task': 0, 'env_steps': 5000,
                                        'env_steps_per_s': 480.0, 'weights_step': 1200})
  assert status_lib.publish_status(client, {'role': 'actor', 'task': 1, 'env_steps': 4000,
                                        'env_steps_per_s': 420.0, 'weights_step': 1230})
  os.makedirs(os.path.join(root_dir, constants.EVAL_DIR), exist_ok=True)
  evaluate.append_csv_row(os.path.join(root_dir, constants.EVAL_CSV), dict(
      train_step=1000, env_steps=9000, timestamp=0.0, average_return=187.5,
      average_episode_length=187.5, num_episodes=2))

  result = _run_status(cartpole_server, f'--root_dir={root_dir}')
  assert result.returncode == 0, result.stderr
  out = result.stdout
  size = reverb_rpc.server_info(cartpole_server)[constants.REPLAY_TABLE].current_size
  assert size > 0
  assert f'{constants.REPLAY_TABLE}: {size:,} of ' in out
  assert 'learner   train_step 1,234' in out
  assert 'actors    2 reporting, 900 env steps/s; policy lag (train steps) min 4' in out
  assert 'max 34' in out
  assert 'actor 0   policy lag 34 (weights of step 1200)' in out
  assert 'actor 1   policy lag 4 (weights of step 1230)' in out
  assert 'eval      return 187.5 at train step 1,000' in out
  assert 'ratio     samples per insert:' in out
  assert 'TENSORFLOW_LOADED=False' in out


def test_status_of_an_empty_fleet_says_what_is_missing(cartpole_server):
  result = _run_status(cartpole_server, '--window_s=0')
  assert result.returncode == 0, result.stderr
  assert 'learner   no weights pushed yet' in result.stdout
  assert 'actors    no status records' in result.stdout
  assert f'{constants.REPLAY_TABLE}: 0 of ' in result.stdout


def test_status_without_a_server_is_one_line_and_status_1(port):
  result = _run_status(f'localhost:{port}', '--timeout_s=0.5')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: no replay server answers at localhost:{port} (unavailable): check the address, '
      'and that the server runs']


def test_status_refuses_a_bad_address():
  result = _run_status('localhost')
  assert result.returncode == 2
  assert result.stderr.strip().startswith('error:')


def test_rates_come_from_the_two_reads(cartpole_server, root_dir):
  before = fleet_status.look(cartpole_server, window_s=0)
  _insert_replay_items(cartpole_server, 100, root_dir)
  after = fleet_status.look(cartpole_server, previous=before)
  inserted = (after.tables[constants.REPLAY_TABLE].rate_limiter.inserts
              - before.tables[constants.REPLAY_TABLE].rate_limiter.inserts)
  assert inserted > 0
  span = after.time - before.time
  text = fleet_status.render(after)
  rate = fleet_status._rate(after, constants.REPLAY_TABLE, 'inserts')
  assert abs(rate - inserted / span) < 1e-6
  assert f'over the last {span:.1f} s' in text


def test_watch_redraws_until_interrupted(cartpole_server):
  # Ctrl-C as a terminal delivers it, whatever this process inherited: a shell that starts
  # pytest in the background sets SIGINT to ignored, and children keep that.
  watcher = subprocess.Popen(
      [sys.executable, '-m', 'launcher.fleet_status', cartpole_server, '--watch',
       '--interval_s=0.2'], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=processes.child_env(),
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  lines = []

  def _two_views():
    lines.append(watcher.stdout.readline())
    return sum('reverb-fleet status' in line for line in lines) >= 2

  try:
    wait_until(_two_views, 60, 'two status views')
  finally:
    watcher.send_signal(2)  # SIGINT, as Ctrl-C.
    try:
      _, err = watcher.communicate(timeout=60)  # Drains both pipes: a full one blocks it.
    except subprocess.TimeoutExpired:
      watcher.kill()
      _, err = watcher.communicate()
      pytest.fail(f'the view did not end on Ctrl-C within 60 s; its stderr: {err[-2000:]}')
  assert watcher.returncode == 0, err[-2000:]


def _limiter(spi, min_diff, max_diff, inserts, samples):
  return reverb_rpc.RateLimiterInfo(samples_per_insert=spi, min_diff=min_diff,
                                    max_diff=max_diff, min_size_to_sample=100, inserts=inserts,
                                    samples=samples)


def _snapshot(limiter, previous_limiter=None):
  def _tables(lim):
    return {constants.REPLAY_TABLE: reverb_rpc.TableInfo(
        name=constants.REPLAY_TABLE, max_size=1000, current_size=500, max_times_sampled=0,
        num_unique_samples=0, rate_limiter=lim)}
  return fleet_status.Snapshot(
      address='h:1', time=10.0, tables=_tables(limiter), previous_time=8.0,
      previous=_tables(previous_limiter or limiter), train_step=None, weights_age_s=None,
      actors=[])


def test_ratio_line_names_the_side_that_waits():
  # diff = inserts * spi - samples against Reverb's [min_diff, max_diff].
  full = _snapshot(_limiter(8.0, 700.0, 900.0, 1000, 7000), _limiter(8.0, 700.0, 900.0, 900,
                                                                      6200))
  text = fleet_status.render(full)
  assert 'samples per insert: 8.00 now, 7.00 since the server started; target 8' in text
  assert 'with 1,000 now: inserts wait for the learner' in text
  assert 'inserts/s 50, samples/s 400 (over the last 2.0 s)' in text
  starved = fleet_status.render(_snapshot(_limiter(8.0, 700.0, 900.0, 1000, 7400)))
  assert 'with 600 now: the learner waits for inserts' in starved
  balanced = fleet_status.render(_snapshot(_limiter(8.0, 700.0, 900.0, 1000, 7200)))
  assert 'with 800 now: neither side waits' in balanced
  unlimited = fleet_status.render(_snapshot(_limiter(1.0, -1.8e308, 1.8e308, 10, 5)))
  assert 'no ratio limit (MinSize: sampling starts at 100 items)' in unlimited


def test_newest_record_of_each_actor_wins_and_silent_actors_are_counted():
  def item(record):
    return reverb_rpc.SampledItem(key=0, priority=1.0, times_sampled=1, inserted_at_s=0.0,
                                  strings=(json.dumps(record),))
  now = time.time()
  records = [{'role': 'actor', 'task': 1, 'weights_step': 5, 'time': now - 3},
             {'role': 'actor', 'task': 1, 'weights_step': 9, 'time': now - 1,
              'weights_refused': 2},
             {'role': 'actor', 'task': 0, 'weights_step': 7, 'time': now - 100},
             {'role': 'learner', 'time': now}]
  actors = fleet_status._actors([item(r) for r in records] + [
      reverb_rpc.SampledItem(0, 1.0, 1, 0.0, ('not json',))])
  assert [(a['task'], a['weights_step']) for a in actors] == [(0, 7), (1, 9)]
  snapshot = _snapshot(_limiter(1.0, -1.8e308, 1.8e308, 10, 5))
  snapshot.time, snapshot.train_step, snapshot.weights_age_s, snapshot.actors = (
      now, 10, 1.0, actors)
  text = fleet_status.render(snapshot)
  assert '1 reporting, 1 silent for over 60 s' in text
  assert 'policy lag (train steps) min 1, median 2, max 3' in text
  refused = [line for line in text.splitlines() if 'REFUSED' in line]
  assert len(refused) == 1 and refused[0].startswith('  actor 1 ')
  assert "REFUSED 2 weight item(s) not signed with the run's key" in refused[0]


def test_string_tensors_decode_as_reverb_stores_them(cartpole_server):
  client = reverb.Client(cartpole_server)
  with client.trajectory_writer(num_keep_alive_refs=1) as writer:
    writer.append([np.array('{"role": "actor", "task": 7}'.encode(), dtype=object)])
    writer.create_item(constants.STATUS_TABLE, 3.5, [writer.history[0][-1]])
    writer.flush()
  items = reverb_rpc.sample(cartpole_server, constants.STATUS_TABLE, 4)
  assert len(items) == 4
  assert {item.strings for item in items} == {('{"role": "actor", "task": 7}',)}
  assert {item.priority for item in items} == {3.5}
  assert abs(items[0].inserted_at_s - time.time()) < 60


def test_container_status_role_is_the_fleet_view(cartpole_server):
  result = subprocess.run([sys.executable, '-m', 'launcher.container', 'status', cartpole_server,
                           '--window_s=0'], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=processes.child_env())
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'reverb-fleet status {cartpole_server} at ')
  assert ' inserted and ' in result.stdout
