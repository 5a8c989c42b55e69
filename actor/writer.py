"""The actors' replay writer: a batch of environments' trajectories, written as replay items."""

import collections
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.utils import nest_utils

from common import constants
from common.errors import ItemRejectedError


class BatchedTrajectoryObserver:
  """Writes a batch of environments' trajectories to the replay table, one writer per environment.

  Items are what TF-Agents' `ReverbAddTrajectoryObserver(sequence_length, stride_length=1)` writes
  for each environment on its own: once an environment has `sequence_length` steps of the current
  episode, every step creates an item of its last `sequence_length` steps; a boundary step
  (LAST -> FIRST) ends the episode, so no item spans two episodes. With `span_episodes` the
  windows run on across episode ends (every step after the first `sequence_length` creates
  one), as TF-Agents' replay buffers sample sequences for recurrent agents; with `end_to_end`
  consecutive items run on across episode ends and share `overlap` steps (stride = length -
  overlap: IMPALA's items start with the previous item's bootstrap step). The
  stock observer takes one unbatched trajectory per call, walks the trajectory nest several
  times per step and ends each episode with `end_episode()`, a blocking round trip to the
  server; this one takes the whole
  batch as flat numpy columns (`write`), appends each environment's slice to that environment's
  Reverb writer as a flat list, builds items from the cell references it keeps, and ends episodes
  by its own step count. At each episode end and every `max_pending_items / 2` steps it waits
  until the environment's writer has at most `max_pending_items / 2` items the server has not
  confirmed, so no writer ever holds more than `max_pending_items`: that is the back-pressure of
  a rate limiter holding inserts, which bounds the writer's memory and keeps a
  SampleToInsertRatio honest. bench/replay_bench.py measures both.

  The writers skip Reverb's client-side item validation, and the server does not check an item
  against the table's signature either: it stores what it is sent (a float64 observation in a
  float32 table, for one), not what the learner's dataset was built to read. So, given
  `step_spec`, every `write` checks each column's dtype and shape (a few comparisons per batched
  step) and refuses a mismatch, before anything is sent. A priority the table cannot take
  (negative, NaN or infinite) is refused when set: Reverb stops the table's worker on a negative
  one, after which every writer of every actor waits for ever on a server that still answers.

  With `frame_stack` (an observation that is a stack of that many frames, oldest first, as
  FrameStack4 makes it), each step sends only its newest frame, so every frame is stored once
  instead of in `frame_stack` observations. When an item's context starts (an episode's first
  step, or the first step after the writers were reopened or reset) the observation's older
  frames are appended first as steps that carry nothing else; each item then references its
  steps and the `frame_stack - 1` frames before them, from which `restack_frames` rebuilds every
  step's observation exactly. Items must not span episodes.
  """

  def __init__(self, py_client: reverb.Client, num_envs: int, sequence_length: int,
               table: str = constants.REPLAY_TABLE, max_pending_items: int = 32,
               is_running: Callable[[], bool] = lambda: True, step_spec=None,
               end_to_end: bool = False, span_episodes: bool = False, frame_stack: int = 0,
               overlap: int = 0):
    """
    Args:
      py_client: Client of the replay server.
      num_envs: Environments in the batch.
      sequence_length: Steps per item.
      table: Replay table name.
      max_pending_items: Unconfirmed items per writer before `write` waits for the server.
      is_running: Polled every second while `write` waits; the wait ends when it is False.
      step_spec: The spec nest of one step (the agent's collect data spec); if given, every
        `write` checks its columns against it.
      end_to_end: Write consecutive items across episode ends (on-policy agents).
      span_episodes: Write stride-1 windows across episode ends (recurrent off-policy agents).
      frame_stack: Store observations as single frames (`Specs.frame_stack`); needs
        `step_spec`, and neither `end_to_end` nor `span_episodes`.
      overlap: With `end_to_end`, steps each item shares with the one before it (less than
        `sequence_length`).
    """
    if overlap and not (end_to_end and 0 <= overlap < sequence_length):
      raise ValueError('overlap needs end_to_end and must be less than sequence_length')
    self._overlap = overlap
    if frame_stack and (end_to_end or span_episodes or step_spec is None):
      raise ValueError('frame_stack needs step_spec and items within episodes')
    self._frame_stack = frame_stack
    self._end_to_end = end_to_end
    self._span_episodes = span_episodes or end_to_end
    self.wait_seconds = 0.0  # Time `write` waited for the server to take items.
    self._client = py_client
    self._is_running = is_running
    self._max_pending = max_pending_items
    # Checked every half of the bound and drained to the other half, so that a writer never
    # holds more than `max_pending_items` unconfirmed items (Reverb logs a warning per step
    # above about 50).
    self._check_interval = max(1, max_pending_items // 2)
    self._since_check = np.zeros(num_envs, np.int64)
    self._num_envs = num_envs
    self._sequence_length = sequence_length
    self._table = table
    self._writers = [None] * num_envs
    self._recent = [None] * num_envs  # Per environment: cell references of its last steps.
    self._frames = [None] * num_envs  # Per environment: its last frames' cell references.
    self._cached = np.zeros(num_envs, np.int64)
    self._columns = None
    self._frame_column = None
    if step_spec is not None:
      paths = [_path_name(path) for path, _ in nest_utils.flatten_with_joined_paths(step_spec)]
      self._columns = [(name, spec.dtype.as_numpy_dtype, (num_envs,) + tuple(spec.shape))
                       for name, spec in zip(paths, tf.nest.flatten(step_spec))]
      if frame_stack:
        self._frame_column = paths.index('observation')
    self._priority = 1.0
    self.open()

  @property
  def priority(self) -> float:
    """The priority of new items; a prioritized table's actors follow the learner's max."""
    return self._priority

  @priority.setter
  def priority(self, value: float) -> None:
    value = float(value)
    if not 0 <= value < math.inf:
      raise ItemRejectedError(
          f'new items would get priority {value}, which the replay table cannot take (it must '
          'be finite and >= 0): the learner published it as max_priority, so its TD errors are '
          'not finite; see the learner log')
    self._priority = value

  def open(self) -> None:
    """Opens one fresh writer per environment (at start and after the server came back)."""
    context = max(self._frame_stack - 1, 0)
    for i in range(self._num_envs):
      self._writers[i] = self._client.trajectory_writer(
          num_keep_alive_refs=self._sequence_length + context + 1, validate_items=False)
      self._recent[i] = collections.deque(maxlen=self._sequence_length)
      self._frames[i] = collections.deque(maxlen=self._sequence_length + context)
    self._cached[:] = 0

  def reopen(self, client: Optional[reverb.Client] = None) -> None:
    """Opens fresh writers after a reconnect, through `client` (the session's new one) if given."""
    if client is not None:
      self._client = client
    self.open()

  def write(self, flat_columns: Sequence[np.ndarray], boundary: np.ndarray) -> int:
    """Appends one step of every environment and creates the items that became complete.

    Args:
      flat_columns: `tf.nest.flatten` of a batched Trajectory: arrays with a leading
        `num_envs` dimension, in the order of the collect data spec.
      boundary: bool [num_envs], True where the step is a boundary (LAST -> FIRST).

    Returns:
      Items created.
    """
    if self._columns is not None:
      self._check(flat_columns)
    created = 0
    length = self._sequence_length
    frame_column = self._frame_column
    if frame_column is not None:
      stacks = flat_columns[frame_column]
      flat_columns = list(flat_columns)
      flat_columns[frame_column] = np.ascontiguousarray(stacks[..., -1])  # The newest frames.
    for i in range(self._num_envs):
      # The Python TrajectoryWriter's append and create_item re-flatten and re-validate the
      # step on every call; the columns here are already flat and in signature order, so go
      # to the C++ writer (pinned dm-reverb) and keep the last steps' cell references here.
      writer = self._writers[i]._writer  # pylint: disable=protected-access
      recent = self._recent[i]
      if frame_column is not None and not self._cached[i]:
        self._append_context(i, writer, stacks[i], len(flat_columns))
      cells = writer.Append([column[i] for column in flat_columns])
      recent.append(cells)
      if frame_column is not None:
        self._frames[i].append(cells[frame_column])
      self._cached[i] += 1
      if self._cached[i] >= length:
        columns = [list(cells) for cells in zip(*recent)]
        if frame_column is not None:
          columns[frame_column] = list(self._frames[i])
        writer.CreateItem(self._table, self.priority, columns, [False] * len(flat_columns))
        created += 1
        if self._end_to_end:
          self._cached[i] = self._overlap  # The last `overlap` steps begin the next item.
          self._wait_for_server(self._writers[i], pending=0)
          self._since_check[i] = 0
          continue
      self._since_check[i] += 1
      if boundary[i] and not self._span_episodes:
        self._cached[i] = 0  # The next item starts with the next episode's steps.
      if boundary[i] or self._since_check[i] >= self._check_interval:
        self._wait_for_server(self._writers[i])
        self._since_check[i] = 0
    return created

  def _append_context(self, i: int, writer, stack: np.ndarray, num_columns: int) -> None:
    """Appends the older frames of environment i's stack as frame-only steps: the context of
    the first items after an episode start (FrameStack4 repeats the first frame there)."""
    step = [None] * num_columns
    for k in range(self._frame_stack - 1):
      step[self._frame_column] = np.ascontiguousarray(stack[..., k])
      self._frames[i].append(writer.Append(step)[self._frame_column])

  def _check(self, flat_columns: Sequence[np.ndarray]) -> None:
    if len(flat_columns) != len(self._columns):
      raise ItemRejectedError(
          f'a step has {len(flat_columns)} columns, the replay table {len(self._columns)}: '
          'start every process with the same --gin_file')
    for column, (name, dtype, shape) in zip(flat_columns, self._columns):
      if column.dtype != dtype or column.shape[1:] != shape[1:]:
        raise ItemRejectedError(
            f'a step\'s {name} is {column.dtype.name}{list(column.shape[1:])}, the replay table '
            f'takes {np.dtype(dtype).name}{list(shape[1:])}: the environment does not produce '
            'what its spec says; nothing of it was written')
      if column.shape[:1] != shape[:1]:
        raise ItemRejectedError(
            f'a step\'s {name} has {column.shape[0] if column.ndim else "no"} rows for '
            f'{shape[0]} environments: the batch does not match ActorConfig.num_envs; nothing '
            'of it was written')

  def _wait_for_server(self, writer, pending: Optional[int] = None) -> None:
    """Returns once at most `pending` (default: half of max_pending) items are unconfirmed,
    or once `is_running()` is False. Silent: the actor's watchdog says what a long wait waits
    for (a rate limiter, or a server that does not answer)."""
    pending = self._max_pending - self._check_interval if pending is None else pending
    start = time.monotonic()
    try:
      while self._is_running():
        try:
          writer.flush(block_until_num_items=pending, timeout_ms=1000)
          return
        except reverb.errors.DeadlineExceededError:
          pass
    finally:
      self.wait_seconds += time.monotonic() - start

  def __call__(self, trajectory) -> None:
    """Writes a (batched when num_envs > 1) Trajectory nest."""
    flat = [np.asarray(x) for x in tf.nest.flatten(trajectory)]
    boundary = np.asarray(trajectory.is_boundary())
    if self._num_envs == 1 and boundary.ndim == 0:
      flat = [x[np.newaxis] for x in flat]
      boundary = boundary[np.newaxis]
    self.write(flat, boundary)

  def flush(self, timeout_s: Optional[float] = None) -> bool:
    """Waits until the server confirmed every item; False if `timeout_s` passed first.

    A SampleToInsertRatio limiter holds inserts while nobody samples, so an unbounded flush can
    wait for ever; with a timeout the unconfirmed items stay queued in the writer.
    """
    timeout_ms = None if timeout_s is None else max(1, int(timeout_s * 1000))
    for writer in self._writers:
      try:
        writer.flush(timeout_ms=timeout_ms)
      except reverb.errors.DeadlineExceededError:
        return False
    return True

  def reset(self) -> None:
    """Forgets the current episodes (used when the environments are reset mid-episode)."""
    self._cached[:] = 0
    for recent in self._recent:
      recent.clear()

  def close(self) -> None:
    for writer in self._writers:
      try:
        writer.close()
      except Exception:  # pylint: disable=broad-except
        pass  # The server may be gone; the writer is discarded either way.


def _path_name(path: str) -> str:
  return path.replace('/', '.') or 'column'
