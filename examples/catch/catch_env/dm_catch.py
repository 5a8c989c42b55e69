"""Catch as a `dm_env.Environment`: the same game as `CatchEnv`, in DeepMind's interface.

reverb-fleet takes it through an entry point (`catch_env.dm_catch:CatchDmEnv`); it is seeded
through its `seed` argument, which reverb-fleet passes, since dm_env has no seeding call.
"""

from typing import Optional

import dm_env
from dm_env import specs
import numpy as np


class CatchDmEnv(dm_env.Environment):
  """Catch (see `catch_env.catch.CatchEnv`) with dm_env's time steps: the ball's landing step
  is LAST with discount 0; the observation is the board, float32 (rows, columns)."""

  def __init__(self, rows: int = 8, columns: int = 5, seed: Optional[int] = None):
    self._rows, self._columns = int(rows), int(columns)
    self._rng = np.random.default_rng(seed)
    self._ball = (0, 0)
    self._paddle = 0
    self._needs_reset = True

  def _board(self) -> np.ndarray:
    board = np.zeros((self._rows, self._columns), np.float32)
    board[self._ball] = 1.0
    board[self._rows - 1, self._paddle] = 1.0
    return board

  def reset(self) -> dm_env.TimeStep:
    self._ball = (0, int(self._rng.integers(self._columns)))
    self._paddle = self._columns // 2
    self._needs_reset = False
    return dm_env.restart(self._board())

  def step(self, action) -> dm_env.TimeStep:
    if self._needs_reset:
      return self.reset()
    self._paddle = int(np.clip(self._paddle + int(action) - 1, 0, self._columns - 1))
    row, column = self._ball
    self._ball = (row + 1, column)
    if self._ball[0] == self._rows - 1:
      self._needs_reset = True
      return dm_env.termination(1.0 if column == self._paddle else -1.0, self._board())
    return dm_env.transition(0.0, self._board())

  def observation_spec(self):
    return specs.BoundedArray((self._rows, self._columns), np.float32, 0.0, 1.0, 'board')

  def action_spec(self):
    return specs.DiscreteArray(3, name='action')
