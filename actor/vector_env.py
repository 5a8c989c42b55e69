"""A batch of Python environments stepped in lockstep, as flat numpy batches.

TF-Agents' BatchedPyEnvironment stacks every time step with nest utilities that walk the
TimeStep structure per environment and per field; on a cheap environment such as CartPole that
costs more than the physics. `VectorEnv` keeps the flat field order of the time-step spec once
and stacks each field with one `np.stack`, so the per-step cost is the environments' own.
"""

from typing import List, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.environments import py_environment
from tf_agents.trajectories import time_step as ts


class VectorEnv:
  """`num_envs` PyEnvironments (each auto-resetting) behind one batched step.

  `reset()` and `step(actions)` return a TimeStep whose fields have a leading `num_envs`
  dimension. An environment whose previous step was LAST starts a new episode on this step
  (its FIRST step comes back), exactly like TF-Agents' auto-reset environments.
  """

  def __init__(self, envs: Sequence[py_environment.PyEnvironment]):
    if not envs:
      raise ValueError('VectorEnv needs at least one environment')
    self._envs: List[py_environment.PyEnvironment] = list(envs)
    self.num_envs = len(self._envs)
    self._time_step_spec = self._envs[0].time_step_spec()
    self._action_spec = self._envs[0].action_spec()
    self._flat_observation = not tf.nest.is_nested(self._time_step_spec.observation) and (
        not tf.nest.is_nested(self._time_step_spec.reward))

  def time_step_spec(self):
    return self._time_step_spec

  def action_spec(self):
    return self._action_spec

  def _stack(self, steps: Sequence[ts.TimeStep]) -> ts.TimeStep:
    if self._flat_observation:
      return ts.TimeStep(np.stack([s.step_type for s in steps]),
                         np.stack([s.reward for s in steps]),
                         np.stack([s.discount for s in steps]),
                         np.stack([s.observation for s in steps]))
    flats = [tf.nest.flatten(s) for s in steps]
    stacked = [np.stack(column) for column in zip(*flats)]
    return tf.nest.pack_sequence_as(self._time_step_spec, stacked)

  def reset(self) -> ts.TimeStep:
    return self._stack([env.reset() for env in self._envs])

  def step(self, actions) -> ts.TimeStep:
    """Steps environment i with `actions[i]` (a batched action nest)."""
    flat_actions = tf.nest.flatten(actions)
    if len(flat_actions) == 1:
      column = flat_actions[0]
      steps = [env.step(column[i]) for i, env in enumerate(self._envs)]
    else:
      steps = [env.step(tf.nest.pack_sequence_as(self._action_spec,
                                                  [a[i] for a in flat_actions]))
               for i, env in enumerate(self._envs)]
    return self._stack(steps)

  def close(self) -> None:
    for env in self._envs:
      env.close()
