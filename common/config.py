"""The run's configs: the algorithm's knobs that every process reads the same way from gin.

Flags carry deployment (addresses, ports, directories, budgets); gin carries the algorithm
(environment, networks, hyperparameters, table sizes, rate limits, intervals). The configs below
are frozen dataclasses bound only through gin, and every process reads the same ones, so the
replay server, the actors, eval and the learner agree on specs and table layout. Each main reads
them once (`validated_configs`) and passes them down. Loading gin files is `gin_files`'; type
checks are `typecheck`'s.
"""

import dataclasses
import typing
from typing import ClassVar, Dict, Optional

import gin

from common.typecheck import NON_NEGATIVE
from common.typecheck import POSITIVE
from common.typecheck import Range
from common.typecheck import UNIT_INTERVAL
from common.typecheck import check_ranges
from common.typecheck import check_types
from common.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """The replay table.

  Attributes:
    max_size: Items kept; FIFO eviction past it.
    min_size: Items inserted before the learner may sample.
    samples_per_insert: If set, a SampleToInsertRatio rate limiter holds the learner and the
      actors to this many sampled items per inserted item; if None, MinSize(min_size).
    samples_per_insert_tolerance: Allowed drift of that ratio, as a fraction of
      `min_size * samples_per_insert` (the error buffer; TF-Agents uses 0.1).
    sequence_length: Env steps per item. The agent builder derives it (`AgentBuild`; the
      table in docs/configuration.md); None takes that, and a different value is refused.
    prioritized: Sample items by priority (Reverb's Prioritized selector) instead of uniformly;
      the learner weights the loss by importance and writes back |TD error| + priority_epsilon
      as each sampled item's new priority.
    priority_exponent: alpha: an item is sampled with probability p_i^alpha / sum p^alpha.
    importance_exponent: beta at train step 0: importance weights (N * P(i))^-beta, divided by
      the batch's largest.
    importance_exponent_final: beta after `importance_anneal_steps` train steps (linear).
    importance_anneal_steps: Train steps over which beta anneals; 0 keeps importance_exponent.
    priority_epsilon: Added to |TD error| so that no item's priority is 0.
    store_frames_once: For an environment whose observation is a stack of frames (Atari):
      store each frame once, instead of in every stacked observation that holds it (a quarter
      of the bytes with 4 stacked frames; `actor.writer.BatchedTrajectoryObserver`). None: wherever
      the agent's items stay within episodes (off-policy feed-forward agents); True: the same,
      and a config where it cannot apply (an on-policy or recurrent agent, or no frame stack) is
      refused; False: store whole observations.
  """
  max_size: int = 100_000
  min_size: int = 1_000
  samples_per_insert: Optional[float] = None
  samples_per_insert_tolerance: float = 0.1
  sequence_length: Optional[int] = None
  prioritized: bool = False
  priority_exponent: float = 0.6
  importance_exponent: float = 0.4
  importance_exponent_final: float = 1.0
  importance_anneal_steps: int = 0
  priority_epsilon: float = 1e-6
  store_frames_once: Optional[bool] = None

  # Every numeric field's range (`typecheck.check_ranges`; tests/test_config_ranges.py checks
  # that none is missing).
  RANGES: ClassVar[Dict[str, Range]] = {
      'max_size': Range(1), 'min_size': Range(1), 'samples_per_insert': POSITIVE,
      'samples_per_insert_tolerance': POSITIVE, 'sequence_length': Range(2),
      'priority_exponent': NON_NEGATIVE, 'importance_exponent': UNIT_INTERVAL,
      'importance_exponent_final': UNIT_INTERVAL, 'importance_anneal_steps': NON_NEGATIVE,
      'priority_epsilon': POSITIVE,
  }

  def validate(self) -> None:
    check_types(self)
    check_ranges(self)
    if self.min_size > self.max_size:
      raise UserError(f'ReplayConfig.min_size={self.min_size} exceeds ReplayConfig.max_size='
                      f'{self.max_size}, so the learner could never sample: make min_size <= '
                      'max_size')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """The learner's schedule. Intervals are in train steps unless named otherwise.

  Attributes:
    batch_size: Global batch, split evenly over the replicas of the strategy.
    iterations_per_call: Train steps run inside one `tf.function` call.
    push_interval: Train steps between weight pushes to the variable table.
    checkpoint_interval: Train steps between learner checkpoints.
    max_checkpoints_to_keep: Learner checkpoints kept on disk.
    policy_export_interval: Train steps between SavedModel policy exports.
    summary_interval: Train steps between TensorBoard summaries.
    log_interval: Train steps between log lines (steps/s and loss).
    rate_limiter_timeout_s: Seconds a sample may wait on the rate limiter before the learner
      logs the table state and waits again; it never hangs silently.
    use_xla: Compile the train step with XLA (`jit_compile`).
    foreign_push_window_s: Seconds a starting learner watches the variable table for another
      learner's pushes before its first push (`variables.PushWatch`); a running learner
      pushes every few seconds. Not waited on a server that never had a push.
  """
  batch_size: int = 64
  iterations_per_call: int = 10
  push_interval: int = 100
  checkpoint_interval: int = 1_000
  max_checkpoints_to_keep: int = 3
  policy_export_interval: int = 1_000
  summary_interval: int = 100
  log_interval: int = 1_000
  rate_limiter_timeout_s: float = 5.0
  use_xla: bool = False
  foreign_push_window_s: float = 10.0

  RANGES: ClassVar[Dict[str, Range]] = {
      'batch_size': POSITIVE, 'iterations_per_call': POSITIVE, 'push_interval': POSITIVE,
      'checkpoint_interval': POSITIVE, 'max_checkpoints_to_keep': POSITIVE,
      'policy_export_interval': POSITIVE, 'summary_interval': POSITIVE, 'log_interval': POSITIVE,
      'rate_limiter_timeout_s': POSITIVE, 'foreign_push_window_s': NON_NEGATIVE,
  }

  def validate(self) -> None:
    check_types(self)
    check_ranges(self)


INFERENCE_MODES = ('auto', 'tf', 'numpy')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ActorConfig:
  """The collect actors.

  Attributes:
    num_envs: Environments stepped in lockstep by one actor, with one batched policy call.
    steps_per_run: Env steps (summed over the batch) between checks for new weights and logs.
    variable_update_interval: Env steps (summed over the batch) between weight pulls.
    log_interval_s: Seconds between log lines and TensorBoard summaries.
    seed: Base seed; actor `task` t uses seed + 1000 * t (+ env index), so no two are alike.
    inference: How the collect policy (and eval's greedy policy) runs. 'auto': where the
      policy has a NumPy twin (actor/numpy_policy.py: DQN, DDQN and SAC over dense networks),
      whichever of NumPy and TensorFlow the process measures faster at start-up
      (`inference.make_policy`), else TensorFlow; 'tf': always TensorFlow (`CompiledPolicy`);
      'numpy': NumPy, refused for a policy without a twin.
  """
  num_envs: int = 1
  steps_per_run: int = 100
  variable_update_interval: int = 1_000
  log_interval_s: float = 10.0
  seed: int = 0
  inference: str = 'auto'

  RANGES: ClassVar[Dict[str, Range]] = {
      'num_envs': POSITIVE, 'steps_per_run': POSITIVE, 'variable_update_interval': POSITIVE,
      'log_interval_s': POSITIVE, 'seed': Range(0, 2 ** 32 - 1),
  }

  def validate(self) -> None:
    check_types(self)
    check_ranges(self)
    if self.inference not in INFERENCE_MODES:
      raise UserError(f'ActorConfig.inference={self.inference!r} is not one of '
                      f'{", ".join(map(repr, INFERENCE_MODES))}: bind one of them in the gin file')

  def check_task(self, task: int) -> int:
    """Returns the seed of actor `task` (seed + 1000 * task); its environments take the next
    num_envs - 1 seeds.

    Raises:
      UserError: a seed falls outside NumPy's [0, 2**32).
    """
    seed = self.seed + 1000 * task
    if task < 0 or seed + self.num_envs > 2 ** 32:
      highest = (2 ** 32 - self.num_envs - self.seed) // 1000
      raise UserError(f'--task={task} cannot seed its environments (ActorConfig.seed + 1000 * '
                      f'task must be in [0, 2**32)): pass a task id in 0..{highest}')
    return seed


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The eval process.

  Attributes:
    num_episodes: Greedy episodes per evaluation.
    interval: Train steps between evaluations.
    target_return: The task's solved return; the local launcher stops the run there.
    seed: Seed of the eval environment.
  """
  num_episodes: int = 10
  interval: int = 1_000
  target_return: Optional[float] = None
  seed: int = 12345

  RANGES: ClassVar[Dict[str, Range]] = {
      'num_episodes': POSITIVE, 'interval': POSITIVE, 'target_return': Range(),
      'seed': Range(0, 2 ** 32 - 1),
  }

  def validate(self) -> None:
    check_types(self)
    check_ranges(self)


class Configs(typing.NamedTuple):
  """The run's configs, read from gin once in each main and passed down to the roles."""
  replay: ReplayConfig
  learner: LearnerConfig
  actor: ActorConfig
  eval: EvalConfig


def validated_configs() -> Configs:
  """The gin-bound configs, each validated (`Configs`, a tuple in that order)."""
  configs = Configs(ReplayConfig(), LearnerConfig(), ActorConfig(), EvalConfig())
  for config in configs:
    config.validate()
  return configs
