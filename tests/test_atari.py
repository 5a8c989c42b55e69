"""Atari games through `make_environment`: real ALE emulators and ROMs from ale-py's wheel.

The environment must be what TF-Agents' `suite_atari.load` with its stacking wrappers makes
(specs, dtypes, the preprocessing wrappers and their values), auto-resetting like every other
task here, with the life-loss terminal for training only and sticky actions as an option.
"""

import subprocess
import sys

import gym
import numpy as np
import pytest
from tf_agents.environments import suite_atari
from tf_agents.trajectories import time_step as ts

from actor import vector_env
from common import atari
from common import environments
from common.errors import UserError
from tests.conftest import REPO

PONG = 'PongNoFrameskip-v4'


def _gym(env):
  return env.gym  # GymWrapper's gym env: FrameStack4(AtariPreprocessing(AleEnv)).


def _chain(env):
  """The gym wrappers under a GymWrapper, outermost first, with their preprocessing values."""
  chain, layer = [], env.gym
  while hasattr(layer, 'env'):
    chain.append((type(layer), getattr(layer, 'frame_skip', None),
                  getattr(layer, 'screen_size', None),
                  getattr(layer, 'terminal_on_life_loss', None)))
    layer = layer.env
  return chain + [type(layer)]


def test_pong_specs_and_preprocessing_are_suite_atari_loads():
  ours = environments.make_environment(PONG, seed=3)
  stock = suite_atari.load(
      PONG, gym_env_wrappers=suite_atari.DEFAULT_ATARI_GYM_WRAPPERS_WITH_STACKING)
  assert ours.observation_spec() == stock.observation_spec()
  assert ours.observation_spec().shape == (84, 84, 4)
  assert ours.observation_spec().dtype == np.uint8
  assert ours.action_spec() == stock.action_spec() and ours.action_spec().maximum == 5
  assert ours.time_step_spec() == stock.time_step_spec()
  # The same preprocessing wrappers with the same values, over the same emulator class.
  assert _chain(ours) == _chain(stock)
  assert _chain(ours)[1][1:] == (4, 84, False)  # AtariPreprocessing: skip 4, 84x84.
  # The one difference: ours resets itself, as every environment here does.
  # pylint: disable=protected-access
  assert ours._handle_auto_reset and not stock._handle_auto_reset
  # pylint: enable=protected-access
  # And the same frames and rewards, step by step (without sticky actions or no-op starts, the
  # seed does not change the game).
  mine, theirs = ours.reset(), stock.reset()
  np.testing.assert_array_equal(mine.observation, theirs.observation)
  rng = np.random.RandomState(0)
  for _ in range(300):
    action = rng.randint(6)
    mine, theirs = ours.step(action), stock.step(action)
    np.testing.assert_array_equal(mine.observation, theirs.observation)
    assert mine.reward == theirs.reward and mine.step_type == theirs.step_type
  assert mine.observation.std() > 0  # Real frames, not a blank screen.
  # 4 emulator frames per step.
  assert _gym(ours).unwrapped.ale.getEpisodeFrameNumber() == 4 * 300
  ours.close()
  stock.close()


def test_an_atari_episode_resets_itself_and_steps_on_the_fast_path():
  env = vector_env.VectorEnv([environments.make_environment(PONG, seed=0)])
  assert env.uses_gym_directly
  env.reset()
  # A game of Pong under random play ends (one side reaches 21) in a few thousand steps.
  for step in range(20_000):
    time_step = env.step(np.zeros(1, np.int64))
    if time_step.step_type[0] == ts.StepType.LAST:
      break
  assert time_step.step_type[0] == ts.StepType.LAST and time_step.discount[0] == 0, step
  assert env.step(np.zeros(1, np.int64)).step_type[0] == ts.StepType.FIRST
  env.close()


_PADDLE_HEIGHTS = f"""
import common
from common import environments
env = environments.make_environment({PONG!r}, seed=0)
ale = env.gym.unwrapped.ale
env.reset()
heights = []
for action in (2, 3) * 3:  # RIGHT moves the paddle up, LEFT down; RAM byte 51 is its height.
  for _ in range(20):
    env.step(action)
  heights.append(int(ale.getRAM()[51]))
print(heights)
"""


def test_the_paddle_follows_the_actions_in_a_fresh_process():
  # ale-py 0.10's `act(action)` without a paddle strength leaves Pong's paddle still, or moves
  # it one way only, depending on the process: in a fresh one, as an actor is, this check
  # failed every time (6 of 6) before `AleEnv` passed a strength. Every policy then loses 21-0,
  # and no agent can learn.
  done = subprocess.run([sys.executable, '-c', _PADDLE_HEIGHTS], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  heights = eval(done.stdout.strip().splitlines()[-1])  # pylint: disable=eval-used
  for up, down in zip(heights[0::2], heights[1::2]):
    assert down - up > 100, heights  # The top is about 38, the bottom about 203.


def test_a_policy_that_tracks_the_ball_wins_points():
  env = environments.make_environment(PONG, seed=0)
  ale = _gym(env).unwrapped.ale
  env.reset()
  # Up towards the ball (RAM byte 54) when it is above the paddle (byte 51), down when below.
  for step in range(5000):
    paddle, ball = int(ale.getRAM()[51]), int(ale.getRAM()[54])
    time_step = env.step(2 if ball < paddle + 4 else 3 if ball > paddle + 12 else 0)
    if time_step.reward > 0:
      break
  assert time_step.reward > 0, f'no point won in {step + 1} steps'
  env.close()


def _first_episode_lives(training: bool):
  env = environments.make_environment('BreakoutNoFrameskip-v4', seed=1,
                                      terminal_on_life_loss=True, training=training)
  env.reset()
  rng = np.random.RandomState(0)
  for _ in range(50_000):
    if env.step(rng.randint(4)).is_last():
      return _gym(env).unwrapped.ale.lives()
  raise AssertionError('no episode end in 50,000 steps')


def test_a_lost_life_ends_the_episode_for_training_only():
  assert _first_episode_lives(training=True) == 4  # Breakout starts with 5 lives.
  assert _first_episode_lives(training=False) == 0  # Eval plays the whole game.


def test_sticky_actions_are_a_gin_option_of_the_emulator():
  envs = {}
  for name, sticky in (('plain', 0.0), ('sticky', 0.25)):
    envs[name] = environments.make_environment('BreakoutNoFrameskip-v4', seed=5,
                                               sticky_actions=sticky)
    assert _gym(envs[name]).unwrapped.ale.getFloat('repeat_action_probability') == (
        pytest.approx(sticky))
    envs[name].reset()
  streams = {name: [] for name in envs}
  rng = np.random.RandomState(0)
  for _ in range(500):
    action = rng.randint(4)
    for name, env in envs.items():
      streams[name].append(env.step(action).observation)
  for env in envs.values():
    env.close()
  assert not np.array_equal(np.stack(streams['plain']), np.stack(streams['sticky']))


@pytest.mark.parametrize('kwargs, fragment', [
    (dict(env_name=PONG, sticky_actions=1.5), 'sticky_actions=1.5 must be a probability'),
    (dict(env_name='CartPole-v0', sticky_actions=0.25), 'apply to Atari games only'),
    (dict(env_name='CartPole-v0', terminal_on_life_loss=True), 'apply to Atari games only'),
    (dict(env_name='CartPole-v0', noop_max=30), 'apply to Atari games only'),
    (dict(env_name=PONG, noop_max=-1), 'make_environment.noop_max=-1 must be an integer >= 0'),
    (dict(env_name='NoSuchGameNoFrameskip-v4'), "unknown gym id 'NoSuchGameNoFrameskip"),
])
def test_atari_options_that_cannot_apply_are_refused(kwargs, fragment):
  with pytest.raises(UserError, match=fragment):
    environments.make_environment(**kwargs)


def test_any_game_the_wheel_ships_is_an_id():
  assert atari.rom_name('SpaceInvaders') == 'space_invaders'
  assert atari.game_of('BreakoutNoFrameskip-v4') == 'Breakout'
  assert atari.game_of('CartPole-v0') is None
  env = environments.make_environment('SpaceInvadersNoFrameskip-v4', seed=0)
  assert env.observation_spec().shape == (84, 84, 4) and env.action_spec().maximum == 5
  env.close()


def test_the_emulator_under_the_preprocessing_copies_out_no_rgb_screens():
  env = environments.make_environment(PONG, seed=0)
  inner = _gym(env).unwrapped
  assert inner.step(0)[0] is None and inner.reset() is None  # AtariPreprocessing reads .ale.
  assert env.step(np.array(0)).observation.shape == (84, 84, 4)
  # Made on its own, the gym environment observes the RGB screen, as gym's Atari ids do.
  atari.register(PONG)
  screen = gym.make(PONG).unwrapped.reset()
  assert screen.shape == (210, 160, 3) and screen.dtype == np.uint8


def test_noop_starts_vary_where_each_game_starts_and_follow_the_seed():
  def start_frames(noop_max, seed):
    env = environments.make_environment(PONG, seed=seed, noop_max=noop_max, training=False)
    ale = _gym(env).unwrapped.ale
    frames = []
    for _ in range(8):
      env.reset()
      frames.append(ale.getEpisodeFrameNumber())
    return frames

  assert start_frames(0, 1) == [0] * 8  # Every game from the same state.
  with_noops = start_frames(30, 1)
  assert all(0 <= f <= 30 for f in with_noops) and len(set(with_noops)) > 3, with_noops
  assert start_frames(30, 1) == with_noops  # Drawn from the seed.
  assert start_frames(30, 2) != with_noops


def test_making_an_atari_environment_prints_no_emulator_banner():
  script = ('import common; from common import environments; '
            f'environments.make_environment({PONG!r}, seed=0).reset()')
  done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  output = done.stdout + done.stderr
  assert 'A.L.E' not in output and 'Stella' not in output, output[-2000:]
