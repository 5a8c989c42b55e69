"""The Catch environment (after the bsuite and DeepMind "catch" tasks), in plain Gymnasium."""

from typing import Optional

import gymnasium
import numpy as np


class CatchEnv(gymnasium.Env):
  """A ball starts in a random column of the top row and falls one row per step. The paddle,
  on the bottom row, moves left, stays or moves right (actions 0, 1, 2). When the ball reaches
  the bottom row the episode is terminated, with reward +1 if the paddle is under it and -1
  otherwise; every other step has reward 0.

  Observation: the board, a float32 array of shape (rows, columns), 1 where the ball and the
  paddle are. Episodes last rows - 1 steps; a random policy averages about -0.5 on the default
  board, a perfect one +1.

  Args:
    rows, columns: The board's size.
    render_mode: None, or 'rgb_array' for `render()` frames (what `reverb-fleet video` uses).
  """

  metadata = {'render_modes': ['rgb_array'], 'render_fps': 8}

  def __init__(self, rows: int = 8, columns: int = 5, render_mode: Optional[str] = None):
    if rows < 2 or columns < 1:
      raise ValueError(f'the board needs rows >= 2 and columns >= 1, not {rows}x{columns}')
    self.rows, self.columns = int(rows), int(columns)
    self.render_mode = render_mode
    self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (self.rows, self.columns),
                                                  np.float32)
    self.action_space = gymnasium.spaces.Discrete(3)
    self._ball = (0, 0)
    self._paddle = 0

  def _board(self) -> np.ndarray:
    board = np.zeros((self.rows, self.columns), np.float32)
    board[self._ball] = 1.0
    board[self.rows - 1, self._paddle] = 1.0
    return board

  def reset(self, *, seed: Optional[int] = None, options=None):
    super().reset(seed=seed)
    self._ball = (0, int(self.np_random.integers(self.columns)))
    self._paddle = self.columns // 2
    return self._board(), {}

  def step(self, action):
    if not self.action_space.contains(action):
      raise ValueError(f'action {action!r} is not in {self.action_space}')
    self._paddle = int(np.clip(self._paddle + int(action) - 1, 0, self.columns - 1))
    row, column = self._ball
    self._ball = (row + 1, column)
    terminated = self._ball[0] == self.rows - 1
    reward = (1.0 if column == self._paddle else -1.0) if terminated else 0.0
    return self._board(), reward, terminated, False, {}

  def render(self):
    if self.render_mode != 'rgb_array':
      return None
    cell = 16
    board = np.kron(self._board(), np.ones((cell, cell), np.float32))
    image = np.full(board.shape + (3,), 235, np.uint8)
    image[board > 0] = (30, 90, 200)
    return image
