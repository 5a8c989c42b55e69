"""Atari 2600 games for gym 0.23, over ale-py's `ALEInterface`, with the ROMs its wheel ships.

ale-py >= 0.9 registers its environments with gymnasium only, so `gym.make('PongNoFrameskip-v4')`
fails with gym 0.23. `AleEnv` is a small gym `Env` over `ale_py.ALEInterface` that exposes
`.ale`, which is all TF-Agents' `AtariPreprocessing` needs, so `suite_atari.load` loads it as it
loads the old gym Atari environments. `register(env_name)` registers `<Game>NoFrameskip-v4` ids on
first use, for every game whose ROM the wheel holds (`Pong`, `Breakout`, `SpaceInvaders`, ...):
one emulator frame per step, the minimal action set, and an episode cap of 108,000 frames (30
minutes of play, Machado et al., 2018). `load` adds the DQN preprocessing.
"""

import re
from typing import Optional

import gym
import numpy as np

# `<Game>NoFrameskip-v4`: the id the DQN literature and TF-Agents' Atari examples use.
_ATARI_ID = re.compile(r'^([A-Z][A-Za-z0-9]*)NoFrameskip-v4$')
MAX_EPISODE_FRAMES = 108_000
FRAME_STACK = 4  # Frames per observation (TF-Agents' FrameStack4, which `load` applies).
# ale-py 0.10's `act(action)` without a strength leaves the paddle games' paddles where they are
# (Pong's RIGHT and LEFT do not move it); its own gymnasium environment always passes one.
PADDLE_STRENGTH = 1.0


def rom_name(game: str) -> str:
  """'SpaceInvaders' -> 'space_invaders', the ROM id of ale_py.roms."""
  return re.sub(r'(?<!^)(?=[A-Z])', '_', game).lower()


def game_of(env_name: str) -> Optional[str]:
  """The game of an Atari id ('PongNoFrameskip-v4' -> 'Pong'), or None for another id."""
  match = _ATARI_ID.match(env_name)
  return match.group(1) if match else None


class AleEnv(gym.Env):
  """One Atari game on the Arcade Learning Environment: RGB frames, the minimal action set.

  Args:
    game: The ROM id (`rom_name`), e.g. 'pong'.
    repeat_action_probability: Sticky actions: the chance, each frame, that the emulator repeats
      the previous action instead of the new one (0.25 in Machado et al.; 0 in the classic
      NoFrameskip-v4 protocol).
    noop_max: No-op starts: each `reset` plays a random number of no-op frames, 0 to
      `noop_max`, drawn from the environment's seed, so that a deterministic policy does not
      replay one game (the emulator is deterministic without sticky actions). 30 in Mnih et
      al. (2015); 0 turns it off.
    observe_screen: If False, `reset` and `step` return None instead of the RGB screen, for a
      wrapper that reads the screen from `.ale` itself (TF-Agents' `AtariPreprocessing` reads
      the grayscale screen of the last two frames of each step and drops the rest). Copying
      out an RGB screen on every emulator frame took over a quarter of a Pong actor's
      environment time.
  """

  metadata = {'render.modes': ['rgb_array']}

  def __init__(self, game: str, repeat_action_probability: float = 0.0,
               observe_screen: bool = True, noop_max: int = 0):
    self._observe_screen = observe_screen
    self._noop_max = int(noop_max)
    self._rng = np.random.RandomState(0)
    import ale_py  # pylint: disable=g-import-not-at-top
    from ale_py import roms  # pylint: disable=g-import-not-at-top
    self._rom = roms.get_rom_path(game)
    self._repeat_action_probability = float(repeat_action_probability)
    # Static, and before the first emulator: its constructor prints ALE's banner otherwise.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale = ale_py.ALEInterface()
    self._noop = ale_py.Action.NOOP
    self._load(seed=0)
    self._actions = self.ale.getMinimalActionSet()
    height, width = self.ale.getScreenDims()
    self.action_space = gym.spaces.Discrete(len(self._actions))
    self.observation_space = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)

  def _load(self, seed: int) -> None:
    self.ale.setInt('random_seed', int(seed) % (2 ** 31))
    self.ale.setFloat('repeat_action_probability', self._repeat_action_probability)
    self.ale.setInt('max_num_frames_per_episode', MAX_EPISODE_FRAMES)
    self.ale.loadROM(self._rom)

  def seed(self, seed=None):
    """Reseeds the emulator (its sticky-action randomness) and the no-op starts."""
    self._load(0 if seed is None else seed)
    self._rng = np.random.RandomState(0 if seed is None else int(seed) % (2 ** 31))
    return [seed]

  def reset(self):
    self.ale.reset_game()
    if self._noop_max:
      for _ in range(self._rng.randint(0, self._noop_max + 1)):
        self.ale.act(self._noop, PADDLE_STRENGTH)
        if self.ale.game_over():
          self.ale.reset_game()
    return self.ale.getScreenRGB() if self._observe_screen else None

  def step(self, action):
    reward = self.ale.act(self._actions[int(action)], PADDLE_STRENGTH)
    done = self.ale.game_over()
    observation = self.ale.getScreenRGB() if self._observe_screen else None
    return observation, float(reward), done, {'lives': self.ale.lives()}

  def render(self, mode='rgb_array'):
    return self.ale.getScreenRGB()

  def get_action_meanings(self):
    return [str(action).split('.')[-1] for action in self._actions]

  def close(self):
    pass


def register(env_name: str, repeat_action_probability: float = 0.0) -> None:
  """Registers `env_name` with gym if it is `<Game>NoFrameskip-v4` for a ROM ale-py holds.

  Any other id is left alone. A sticky-action probability other than the registered one
  re-registers the id, so every environment of a process is made with the same value.
  """
  game = game_of(env_name)
  if game is None:
    return
  from ale_py import roms  # pylint: disable=g-import-not-at-top
  rom = rom_name(game)
  if rom not in roms.get_all_rom_ids():
    return
  registry = gym.envs.registry.env_specs
  try:
    existing = registry[env_name]
  except gym.error.Error:  # gym 0.23 raises for an unknown id (and points at ale-py).
    existing = None
  if existing is not None:
    if existing.kwargs.get('repeat_action_probability') == repeat_action_probability:
      return
    del registry[env_name]
  # No gym step limit: the emulator ends the game at MAX_EPISODE_FRAMES frames itself.
  gym.register(id=env_name, entry_point=AleEnv,
               kwargs={'game': rom, 'repeat_action_probability': repeat_action_probability})


def load(env_name: str, max_episode_steps: int = 0, terminal_on_life_loss: bool = False,
         noop_max: int = 0):
  """A registered Atari id as TF-Agents' `suite_atari.load` loads it with
  `DEFAULT_ATARI_GYM_WRAPPERS_WITH_STACKING`, but auto-resetting like every other environment
  here (`suite_atari.load` fixes `auto_reset=False`), and with up to `noop_max` no-op frames
  at each start (`AleEnv`).

  `max_episode_steps` counts agent steps (4 frames each), 0 for none.
  """
  # pylint: disable=g-import-not-at-top
  from tf_agents.environments import atari_preprocessing
  from tf_agents.environments import atari_wrappers
  from tf_agents.environments import suite_gym
  # pylint: enable=g-import-not-at-top
  return suite_gym.wrap_env(
      # AtariPreprocessing reads the screens it needs from `.ale` itself.
      gym.spec(env_name).make(observe_screen=False, noop_max=noop_max),
      discount=1.0,
      max_episode_steps=max_episode_steps,
      gym_env_wrappers=(
          lambda env: atari_preprocessing.AtariPreprocessing(
              env, terminal_on_life_loss=terminal_on_life_loss),
          atari_wrappers.FrameStack4),
      time_limit_wrapper=atari_wrappers.AtariTimeLimit,
      spec_dtype_map={gym.spaces.Box: np.uint8},
      auto_reset=True)
