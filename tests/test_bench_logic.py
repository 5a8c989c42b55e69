"""The benchmark suite's pure logic: targets, the regression comparison, the profile split.

The benchmarks themselves measure speed and run outside the tests (`python -m bench.run`).
"""

import sys

import pytest

from bench import actor_profile
from bench import harness
from bench import run
from bench import sb3


def test_record_states_ratio_target_and_shortfall():
  met = harness.make_record('actor', 300.0, 'env steps/s', 'sac_minitaur', stock=100.0,
                            target=2.0)
  assert met['ratio'] == 3.0 and met['met'] is True and met['versus'] == 'stock TF-Agents'
  short = harness.make_record('actor', 150.0, 'env steps/s', 'sac_minitaur', stock=100.0,
                              target=2.0)
  assert short['met'] is False and short['shortfall'] == '75% of target'
  # Lower is better (time to solve): the ratio must stay under the target.
  late = harness.make_record('solve', 30.0, 's', 'dqn_cartpole', stock=42.0, target=0.5,
                             higher_is_better=False)
  assert late['met'] is False and late['ratio'] == 30.0 / 42.0


def test_comparison_reports_changes_beyond_the_tolerance_in_the_right_direction():
  old = [harness.make_record('rate', 100.0, 'steps/s', 'a'),
         harness.make_record('time', 10.0, 's', 'a', higher_is_better=False),
         harness.make_record('steady', 50.0, 'steps/s', 'a')]
  new = [harness.make_record('rate', 60.0, 'steps/s', 'a'),
         harness.make_record('time', 5.0, 's', 'a', higher_is_better=False),
         harness.make_record('steady', 55.0, 'steps/s', 'a'),
         harness.make_record('new figure', 1.0, 'steps/s', 'a')]
  lines = run.compare(new, old, tolerance=0.25)
  assert len(lines) == 3  # A figure with no predecessor is not compared.
  assert lines[0].strip().startswith('POSSIBLE REGRESSION') and 'rate' in lines[0]
  assert lines[1].strip().startswith('improved') and 'time' in lines[1]
  assert lines[2].strip().startswith('ok') and 'steady' in lines[2]


def test_profile_split_assigns_collect_loop_samples_to_their_part():
  loop = 'main (actor/main.py:40);run_actor (actor/collect.py:200);run (actor/collect.py:110)'
  raw = '\n'.join([
      f'{loop};step (actor/vector_env.py:150);step (pybullet_envs/x.py:9) 50',
      f'{loop};step (actor/vector_env.py:150);_reset_slot (actor/vector_env.py:120) 20',
      f'{loop};__call__ (actor/inference.py:60) 15',
      f'{loop};write (common/replay.py:160) 10',
      f'{loop};update (actor/collect.py:65) 3',
      f'{loop} 2',
      'thread (threading.py:1);watch (common/watchdog.py:50) 99',  # Outside the loop.
  ])
  parts = actor_profile.classify(raw)
  assert parts == {'environment steps': 50, 'environment resets': 20, 'policy inference': 15,
                   'replay writes': 10, 'metrics': 3, 'loop and trajectory': 2}


def test_stock_example_solve_counts_evaluations_and_env_steps(monkeypatch):
  # The stock example logs each evaluation as TF-Agents' Actor.log_metrics does.
  from bench import solve  # pylint: disable=g-import-not-at-top
  lines = ['eval_actor \n\t\t AverageReturn = 9.5', 'AverageReturn = 120.0',
           'AverageReturn = 195.0', 'AverageReturn = 200.0']

  def fake_run(argv, pattern, budget_s, log_path, accept):
    assert argv[1:3] == ['-m', solve.STOCK_MODULE]
    for line in lines:
      match = pattern.search(line)
      if match and accept(match):
        return 12.5, match
    return None

  monkeypatch.setattr(solve, '_run', fake_run)
  # Solved at the third evaluation: train step 2000, after 1000 random + 2000 env steps.
  assert solve.run_stock('/tmp/x', 60.0) == (12.5, 3000, 2000)
  lines[:] = lines[:2]
  assert solve.run_stock('/tmp/x', 60.0) is None


def test_chaos_rss_growth_is_the_slope_of_the_second_half_per_hour():
  from bench import chaos  # pylint: disable=g-import-not-at-top
  # Start-up growth (first half) is left out; then 1 MiB per 60 s is 60 MiB per hour.
  points = [[0, 100.0], [60, 400.0], [120, 500.0], [180, 501.0], [240, 502.0], [300, 503.0],
            [360, 504.0]]
  assert chaos._slope_per_hour(points) == pytest.approx(60.0)  # pylint: disable=protected-access
  assert chaos._slope_per_hour(points[:4]) is None  # pylint: disable=protected-access


def test_sb3_timed_run_times_each_pattern_and_the_exit(tmp_path):
  # A real child that prints the lines both sides print; each pattern's first line is timed.
  script = ('import time\nprint("EVAL env_steps=2048 return=150.0", flush=True)\n'
            'time.sleep(0.3)\nprint("SOLVED env_steps=4096", flush=True)\ntime.sleep(0.3)\n')
  result = sb3.timed_run([sys.executable, '-c', script], {'solved': sb3._SB3_SOLVED}, 60,
                         str(tmp_path / 'child.log'))
  summary = sb3._summary(result, None)
  assert summary['env_steps'] == 4096 and result['returncode'] == 0
  assert 0.3 <= summary['solved_s'] < summary['exit_s'] < 30
  assert 0.25 <= summary['solved_to_exit_s'] < summary['exit_s']


def test_sb3_medians_count_an_unsolved_run_as_the_budget():
  runs = [dict(solved_s=10.0, exit_s=12.0), dict(solved_s=None, exit_s=None),
          dict(solved_s=20.0, exit_s=21.0)]
  assert sb3.median_or_budget(runs, 'solved_s', 240.0) == 20.0
  assert sb3.median_or_budget(runs[1:2], 'exit_s', 240.0) == 240.0
  unsolved = sb3._summary({'exit_s': 3.0, 'returncode': 1}, 'first')
  assert unsolved == dict(solved_s=None, env_steps=None, exit_s=None, first_train_s=None)


def test_delay_relay_passes_bytes_in_order_and_holds_the_replies_for_their_delay():
  import socket  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from bench import latency  # pylint: disable=g-import-not-at-top
  echo = socket.socket()
  echo.bind(('127.0.0.1', 0))
  echo.listen()

  def _serve():
    conn, _ = echo.accept()
    with conn:
      while data := conn.recv(1 << 16):
        conn.sendall(data)
  threading.Thread(target=_serve, daemon=True).start()
  relay = latency.DelayRelay(echo.getsockname()[1], delay_s=0.05, jitter_s=0.01, seed=1)
  try:
    with socket.create_connection(('127.0.0.1', relay.port), timeout=10) as client:
      sent = bytes(range(256)) * 64
      round_trips, received = [], b''
      for i in range(0, len(sent), 1024):  # Chunks whose delays differ: none may overtake.
        started = time.monotonic()
        client.sendall(sent[i:i + 1024])
        while len(received) < i + 1024:
          received += client.recv(1 << 16)
        round_trips.append(time.monotonic() - started)
      assert received == sent
      assert min(round_trips) >= 0.04  # The delay less the jitter, at the least.
  finally:
    relay.close()
    echo.close()
  with pytest.raises(ValueError, match='jitter'):
    latency.DelayRelay(1, delay_s=0.01, jitter_s=0.02)
