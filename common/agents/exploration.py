"""Per-actor exploration: the epsilon of each actor's epsilon-greedy collect policy."""

from typing import Callable, Optional, Union

import gin
import numpy as np

from common.agents.seam import ActorSlot


@gin.configurable(module='common')
def apex_epsilon(epsilon: float, actor: Optional[ActorSlot], alpha: float = 7.0,
                 num_actors: int = 8) -> Union[float, np.ndarray]:
  """Ape-X's per-actor exploration: slot i of N explores with epsilon ** (1 + alpha * i / (N-1)).

  Horgan et al. (2018) use epsilon = 0.4 and alpha = 7 with one environment per actor, so the
  slots span epsilon 0.4 down to 0.4 ** 8 = 0.00066. Here every environment is a slot: actor t
  stepping E environments holds slots t * E .. t * E + E - 1 of N = actors * E, and its batched
  collect policy gets one epsilon per environment. The actor count is the fleet's when the
  launcher passes it (`--num_actors`), else `num_actors` here; a slot past N - 1 takes the
  least exploring rung.

  Args:
    epsilon: The base epsilon (the agent's `epsilon_greedy`).
    actor: The actor building its collect policy; None (learner, eval, server) returns epsilon.
    alpha: The exponent's spread.
    num_actors: The actor count when the launcher does not give the fleet's.

  Returns:
    A float for one environment (or no actor), else float32 [num_envs].
  """
  if actor is None:
    return epsilon
  envs = max(1, actor.num_envs)
  slots = (actor.num_actors or num_actors) * envs
  if slots <= 1:
    return epsilon
  rungs = np.minimum(actor.task * envs + np.arange(envs), slots - 1)
  ladder = (epsilon ** (1.0 + alpha * rungs / (slots - 1))).astype(np.float32)
  return float(ladder[0]) if envs == 1 else ladder


@gin.configurable(module='common', allowlist=['schedule'])
def collect_epsilon(epsilon: float, actor: Optional[ActorSlot],
                    schedule: Optional[Callable] = None) -> Union[float, np.ndarray]:
  """The epsilon of an actor's epsilon-greedy collect policy.

  `schedule` is None (every actor uses `epsilon`) or `@apex_epsilon` (gin).
  """
  if schedule is None:
    return epsilon
  return schedule(epsilon, actor)
