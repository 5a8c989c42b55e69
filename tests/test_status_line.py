"""The local run's status line: live on a terminal, plain `[status]` lines otherwise.

The replay numbers come from a real in-process Reverb server filled by a real actor; the clock
is injected so that intervals and rates are exact without sleeping.
"""

import io
import os

from actor import collect
from actor import evaluate
from common import constants
from common.config import validated_configs
from launcher import status as status_lib


class _Terminal(io.StringIO):
  """An output stream that says it is a terminal."""

  def isatty(self):
    return True


class _Clock:

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def _status(out, address, root_dir, clock, **kwargs):
  kwargs.setdefault('budget_s', 600.0)
  kwargs.setdefault('max_train_steps', 0)
  return status_lib.StatusLine(out, address, os.path.join(root_dir, constants.EVAL_CSV),
                          clock=clock, **kwargs)


def _eval_row(root_dir, train_step, average_return):
  os.makedirs(os.path.join(root_dir, constants.EVAL_DIR), exist_ok=True)
  evaluate.append_csv_row(os.path.join(root_dir, constants.EVAL_CSV), dict(
      train_step=train_step, env_steps=500, timestamp=0.0, average_return=average_return,
      average_episode_length=average_return, num_episodes=2))


def test_terminal_mode_redraws_one_line_and_keeps_it_below_child_output(cartpole_server,
                                                                        root_dir):
  out, clock = _Terminal(), _Clock()
  status = _status(out, cartpole_server, root_dir, clock, width=200)
  assert status.is_tty
  status.refresh()
  first = out.getvalue()
  assert first.startswith('\r\x1b[K') and '\n' not in first
  assert 'train_step=0 env_steps/s=? replay_size=0 eval_return=- elapsed=0m00s/10m00s' in first

  # Real inserts between two samples 2 s apart give the env-step rate.
  inserted = collect.run_actor(root_dir, cartpole_server, task=0, max_env_steps=120,
      configs=validated_configs())
  clock.now += 2.0
  status.observe_line('learner', 'I1121 learner: train_step=40 loss=0.5')
  _eval_row(root_dir, 40, 23.5)
  status.refresh()
  line = out.getvalue()[len(first):]
  assert line.startswith('\r\x1b[K') and '\n' not in line
  size = int(line.split('replay_size=')[1].split()[0])
  assert 0 < size <= inserted
  assert f'env_steps/s={size / 2:.0f}' in line
  assert 'train_step=40' in line and 'eval_return=23.5@40' in line
  assert 'elapsed=0m02s/10m00s budget_left=9m58s' in line and 'eta' not in line

  # A child's line clears the live line, is printed whole, and the live line comes back.
  before = out.getvalue()
  status.print_child_line('[learner] hello')
  after = out.getvalue()[len(before):]
  live = line[len('\r\x1b[K'):]
  assert after == '\r\x1b[K[learner] hello\n' + live

  # close() leaves the final state as a permanent line and stops redrawing.
  status.close()
  assert out.getvalue().endswith('\n') and '[status] train_step=40' in out.getvalue()
  closed = out.getvalue()
  status.refresh()
  status.print_child_line('[local] done')
  assert out.getvalue() == closed + '[local] done\n'


def test_terminal_line_is_cut_to_the_terminal_width(cartpole_server, root_dir):
  out = _Terminal()
  status = _status(out, cartpole_server, root_dir, _Clock(), width=40)
  status.refresh()
  drawn = out.getvalue()[len('\r\x1b[K'):]
  assert len(drawn) == 39  # One column spare, so the cursor never wraps.
  assert status.text().startswith(drawn)


def test_plain_mode_prints_status_lines_at_the_interval(cartpole_server, root_dir):
  out, clock = io.StringIO(), _Clock()
  status = _status(out, cartpole_server, root_dir, clock, plain_interval_s=30.0,
                   budget_s=0.0, max_train_steps=1000)
  assert not status.is_tty
  status.refresh()
  assert out.getvalue() == ''  # Nothing until the first interval has passed.
  status.observe_line('learner', 'Step: 100, 12.5 steps/sec')
  clock.now += 10.0
  status.print_child_line('[actor/0] collecting')
  clock.now += 20.0
  status.observe_line('learner', 'Step: 400, 30.0 steps/sec')
  status.observe_line('eval', 'eval: train_step=900000 AverageReturn=1')  # Not the learner.
  status.refresh()
  lines = out.getvalue().splitlines()
  assert lines[0] == '[actor/0] collecting'
  # 300 steps in the 30 s since step 100 was first seen: 10 steps/s, 600 steps to go.
  assert lines[1] == ('[status] train_step=400 env_steps/s=? replay_size=0 eval_return=- '
                      'elapsed=0m30s eta_max_train_steps=1m00s')
  assert '\r' not in out.getvalue() and '\x1b' not in out.getvalue()
  clock.now += 29.0
  status.refresh()
  assert len(out.getvalue().splitlines()) == 2  # Not due yet.
  clock.now += 1.0
  status.refresh()
  assert len(out.getvalue().splitlines()) == 3
  status.close()
  assert out.getvalue().splitlines()[-1].startswith('[status] train_step=400')


def test_status_without_a_server_shows_unknowns(root_dir, port):
  out = io.StringIO()
  status = _status(out, f'localhost:{port}', root_dir, _Clock(), budget_s=0.0)
  status.sample()
  assert status.text() == ('train_step=0 env_steps/s=? replay_size=? eval_return=- '
                           'elapsed=0m00s')


def test_durations_read_as_minutes_and_hours():
  assert status_lib._duration(5) == '0m05s'  # pylint: disable=protected-access
  assert status_lib._duration(3723) == '1h02m03s'  # pylint: disable=protected-access
