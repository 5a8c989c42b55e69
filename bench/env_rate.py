"""Raw environment rate: `env.step` with random actions, no policy, no replay, one process.

This is the physical limit of one core for each task, the reference of the actor figures. It
reports the gym environment's own `step` (the physical limit) and, for reference, the same
environment behind the TF-Agents PyEnvironment wrappers that the stock actor steps through, and
in our actor's `VectorEnv`, which steps the gym environment under those wrappers directly. The
random actions are drawn the same way (numpy, `RandomPolicy`) for the last two.

  python -m bench.env_rate [--envs=CartPole-v0,MinitaurBulletEnv-v0,HalfCheetahBulletEnv-v0]
      [--gymnasium_envs=HalfCheetah-v5]

Gymnasium ids (`--gymnasium_envs`) are measured the same way: the raw figure is the Gymnasium
env's own `step`, the wrapped one goes through `common.gymnasium_env.GymnasiumEnvironment`.
"""

import argparse
import json
import os
import time

from bench import harness

DEFAULT_ENVS = 'CartPole-v0,MinitaurBulletEnv-v0,HalfCheetahBulletEnv-v0'
DEFAULT_GYMNASIUM_ENVS = 'HalfCheetah-v5'


class _Raw:
  """The raw environment under a PyEnvironment made by `make_environment`: gym 0.23's or
  Gymnasium's, with `reset()`, `step(action) -> done` and a seeded `sample()`."""

  def __init__(self, env, seed: int = 0):
    inner = getattr(env, 'gymnasium', None)
    self.is_gymnasium = inner is not None
    self.env = inner if self.is_gymnasium else env.gym
    self.env.action_space.seed(seed)
    self.sample = self.env.action_space.sample

  def reset(self):
    observation = self.env.reset()
    return observation[0] if self.is_gymnasium else observation

  def step(self, action):
    """(observation, done)."""
    if self.is_gymnasium:
      observation, _, terminated, truncated, _ = self.env.step(action)
      return observation, terminated or truncated
    observation, _, done, _ = self.env.step(action)
    return observation, done

  def close(self):
    self.env.close()


def _steps_per_s(step, reset, window_s: float) -> float:
  reset()
  steps, start = 0, time.monotonic()
  while True:
    for _ in range(20):
      if step():
        reset()
    steps += 20
    elapsed = time.monotonic() - start
    if elapsed >= window_s:
      return steps / elapsed


def measure(env_name: str, window_s: float, suite: str = 'gym'):
  """Returns steps/s of `env_name`: raw gym (or Gymnasium), behind PyEnvironment, in our
  VectorEnv (1 env)."""
  from common import environments  # pylint: disable=g-import-not-at-top
  env = environments.make_environment(env_name=env_name, suite=suite, seed=0)
  raw_env = _Raw(env)

  def gym_step():
    return raw_env.step(raw_env.sample())[1]

  raw = _steps_per_s(gym_step, raw_env.reset, window_s)
  action_spec = env.action_spec()
  from actor import inference  # pylint: disable=g-import-not-at-top
  random_policy = inference.RandomPolicy(action_spec, (), 1, 0)

  def py_step():
    action = random_policy(None)[0]
    env.step(action[0])
    return False  # PyEnvironments reset themselves.

  wrapped = _steps_per_s(py_step, env.reset, window_s)
  from actor import vector_env  # pylint: disable=g-import-not-at-top
  batch = vector_env.VectorEnv([env])

  def vector_step():
    batch.step(random_policy(None)[0])
    return False  # Resets itself, like the PyEnvironment.

  ours = _steps_per_s(vector_step, batch.reset, window_s)
  env.close()
  return raw, wrapped, ours


def policy_action_rate(agent, window_s: float, seed: int = 0) -> float:
  """env.step/s of the loaded task under `agent`'s collect policy's actions (only env.step timed).

  Physics cost depends on the actions: an untrained SAC policy's actions drive the PyBullet
  bodies harder than uniform random ones. This is the raw rate to hold an actor that runs that
  policy against. Episode ends reset the environment, untimed.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from actor import inference  # pylint: disable=g-import-not-at-top
  from common import environments  # pylint: disable=g-import-not-at-top
  from tf_agents.trajectories import time_step as ts  # pylint: disable=g-import-not-at-top
  policy = inference.CompiledPolicy(agent.collect_policy, 1)
  gym_env = _Raw(environments.make_environment(seed=seed), seed)
  observation = gym_env.reset()
  stepping, steps, start = 0.0, 0, time.monotonic()
  while time.monotonic() - start < window_s:
    time_step = ts.TimeStep(np.ones(1, np.int32), np.zeros(1, np.float32),
                            np.ones(1, np.float32), np.asarray(observation, np.float32)[None])
    action = policy(time_step)[0][0]
    began = time.perf_counter()
    observation, done = gym_env.step(action)
    stepping += time.perf_counter() - began
    steps += 1
    if done:
      observation = gym_env.reset()
  gym_env.close()
  return steps / stepping


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--envs', default=DEFAULT_ENVS, help='gym 0.23 ids ("" for none)')
  parser.add_argument('--gymnasium_envs', default=DEFAULT_GYMNASIUM_ENVS,
                      help='Gymnasium ids ("" for none)')
  parser.add_argument('--window_s', type=float, default=3.0)
  parser.add_argument('--json_out', default='',
                      help='Also write {env: raw steps/s} here (for other benchmarks).')
  args = parser.parse_args(argv)
  raw_rates = {}
  names = [(n, 'gym') for n in args.envs.split(',') if n] + [
      (n, 'gymnasium') for n in args.gymnasium_envs.split(',') if n]
  for env_name, suite in names:
    raw, wrapped, ours = measure(env_name, args.window_s, suite)
    raw_rates[env_name] = raw
    harness.emit(harness.make_record('raw env.step rate', raw, 'steps/s', env_name,
                                     window_s=args.window_s))
    harness.emit(harness.make_record('env.step through TF-Agents PyEnvironment', wrapped,
                                     'steps/s', env_name, stock=raw, versus='raw env.step',
                                     window_s=args.window_s))
    harness.emit(harness.make_record('env.step through our VectorEnv (1 env)', ours,
                                     'steps/s', env_name, stock=raw, versus='raw env.step',
                                     window_s=args.window_s))
  if args.json_out:
    os.makedirs(os.path.dirname(args.json_out) or '.', exist_ok=True)
    with open(args.json_out, 'w') as f:
      json.dump(raw_rates, f)


if __name__ == '__main__':
  main()
