"""Frames stored once: Atari replay items hold each frame once and the learner gets the stacks.

Real Pong emulators, the real observer and a real Reverb server with the tables `make_tables`
derives from `gin/dqn_pong.gin`. The server's own memory is measured in a separate process.
"""

import os

import numpy as np
import pytest
import reverb
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from actor import writer as writer_lib
from bench import harness
from common import builders
from common import gin_config
from common import constants
from common import environments
from common.config import LearnerConfig
from common.config import ReplayConfig
from common.errors import UserError
from learner import dataset as learner_dataset
from replay_server import tables as tables_lib
from tests.conftest import GIN_DIR

PONG_GIN = os.path.join(GIN_DIR, 'dqn_pong.gin')
OPEN_TABLE = ('ReplayConfig.samples_per_insert = None', 'ReplayConfig.min_size = 1',
              'ReplayConfig.prioritized = False')


def _specs(*bindings):
  gin_config.load_gin([PONG_GIN], list(OPEN_TABLE) + list(bindings))
  replay_config = ReplayConfig()
  return builders.build(replay_config).specs, replay_config


def _play(num_envs, steps, episode_steps, seed=0):
  """Random play on real Pong emulators whose episodes end after `episode_steps` agent steps:
  the batched Trajectory of every step, as the actor writes them."""
  gin_config.load_gin([PONG_GIN], [f'make_environment.max_episode_steps = {episode_steps}'])
  envs = [environments.make_environment(seed=seed + i) for i in range(num_envs)]
  rng = np.random.RandomState(seed)
  time_steps = [env.reset() for env in envs]
  trajectories = []
  for _ in range(steps):
    actions = rng.randint(0, 6, num_envs).astype(np.int64)
    next_steps = [env.step(a) for env, a in zip(envs, actions)]
    trajectories.append(trajectory_lib.Trajectory(
        step_type=np.stack([t.step_type for t in time_steps]),
        observation=np.stack([t.observation for t in time_steps]),
        action=actions,
        policy_info=(),
        next_step_type=np.stack([t.step_type for t in next_steps]),
        reward=np.stack([t.reward for t in next_steps]).astype(np.float32),
        discount=np.stack([t.discount for t in next_steps]).astype(np.float32)))
    time_steps = next_steps
  return trajectories


def _windows(trajectories, env, length):
  """Every item the actor writes for one environment: `length` consecutive steps within an
  episode (a boundary step, LAST -> FIRST, ends one), as (observations, actions)."""
  windows, episode = [], []
  for trajectory in trajectories:
    episode.append(trajectory)
    if len(episode) >= length:
      window = episode[-length:]
      windows.append((np.stack([t.observation[env] for t in window]),
                      np.array([t.action[env] for t in window])))
    if trajectory.is_boundary()[env]:
      episode = []
  return windows


def test_frames_stored_once_rebuild_every_observation_the_actor_saw():
  specs, replay_config = _specs()
  assert specs.frame_stack == 4
  obs_spec = specs.replay_signature.observation
  assert tuple(obs_spec.shape) == (specs.sequence_length + 3, 84, 84)  # 3 frames of context
  trajectories = _play(num_envs=2, steps=70, episode_steps=25)
  assert any(t.is_boundary().any() for t in trajectories)  # items start again after an end
  specs, replay_config = _specs()
  server = reverb.Server(tables_lib.make_tables(specs, replay_config, LearnerConfig()))
  address = f'localhost:{server.port}'
  try:
    observer = writer_lib.BatchedTrajectoryObserver(
        reverb.Client(address), 2, specs.sequence_length, step_spec=specs.collect_data_spec,
        frame_stack=specs.frame_stack)
    for trajectory in trajectories:
      observer(trajectory)
    assert observer.flush(timeout_s=30)
    observer.close()
    written = {env: _windows(trajectories, env, specs.sequence_length) for env in (0, 1)}
    expected = sum(len(w) for w in written.values())
    info = reverb.Client(address).server_info()[constants.REPLAY_TABLE]
    assert info.current_size == expected
    keys = {(obs.tobytes(), actions.tobytes())
            for windows in written.values() for obs, actions in windows}
    dataset = learner_dataset.make_dataset(address, specs.collect_data_spec, 64,
                                           specs.sequence_length, 5000, specs.frame_stack)
    seen = set()
    for experience, _ in dataset.take(4):
      assert experience.observation.shape == (64, specs.sequence_length, 84, 84, 4)
      assert experience.observation.dtype == np.uint8
      for obs, actions in zip(experience.observation.numpy(), experience.action.numpy()):
        key = (obs.tobytes(), actions.tobytes())
        assert key in keys, 'a sampled item is no window of steps the actor wrote'
        seen.add(key)
    assert len(seen) > expected // 2  # Sampled widely, episode starts included.
  finally:
    server.stop()


def test_store_frames_once_follows_the_agent_and_is_refused_where_it_cannot_apply():
  assert _specs('ReplayConfig.store_frames_once = False')[0].frame_stack == 0
  assert _specs('ReplayConfig.store_frames_once = True')[0].frame_stack == 4
  gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_cartpole.gin')],
                  ['ReplayConfig.store_frames_once = True'])
  with pytest.raises(UserError, match='not frame stacks'):
    builders.build(ReplayConfig())
  gin_config.load_gin([os.path.join(GIN_DIR, 'dqn_cartpole.gin')], [])
  assert builders.build(ReplayConfig()).specs.frame_stack == 0  # None: where it applies
  gin_config.load_gin([os.path.join(GIN_DIR, 'ppo_pong.gin')],
                  ['ReplayConfig.store_frames_once = True'])
  with pytest.raises(UserError, match='across episode ends'):
    builders.build(ReplayConfig())
  gin_config.load_gin([os.path.join(GIN_DIR, 'ppo_pong.gin')], [])
  assert builders.build(ReplayConfig()).specs.frame_stack == 0


def _server_bytes_per_transition(bindings, transitions):
  """Bytes the server's memory grew by per transition written, for random (incompressible)
  frames: each step's newest frame is new, the older ones are the previous steps' frames."""
  with harness.MeasuredServer(PONG_GIN, OPEN_TABLE + tuple(bindings)) as server:
    specs, _ = _specs(*bindings)
    observer = writer_lib.BatchedTrajectoryObserver(
        reverb.Client(server.address), 1, specs.sequence_length,
        step_spec=specs.collect_data_spec, frame_stack=specs.frame_stack)
    rng = np.random.RandomState(0)
    stack = rng.randint(0, 256, (1, 84, 84, 4), dtype=np.uint8)
    before = server.rss()
    for t in range(transitions):
      stack = np.concatenate([stack[..., 1:], rng.randint(0, 256, (1, 84, 84, 1), np.uint8)], -1)
      observer(trajectory_lib.Trajectory(
          step_type=np.array([ts.StepType.FIRST if t == 0 else ts.StepType.MID], np.int32),
          observation=stack, action=np.array([t % 6], np.int64), policy_info=(),
          next_step_type=np.array([ts.StepType.MID], np.int32),
          reward=np.zeros(1, np.float32), discount=np.ones(1, np.float32)))
    assert observer.flush(timeout_s=60)
    observer.close()
    return (server.rss() - before) / transitions


def test_the_server_holds_each_frame_once_not_two_stacks_per_transition():
  transitions = 2000
  naive = 2 * 84 * 84 * 4  # An observation and a next observation of 4 frames per transition.
  once = _server_bytes_per_transition(['ReplayConfig.max_size = 5000'], transitions)
  stacked = _server_bytes_per_transition(
      ['ReplayConfig.max_size = 5000', 'ReplayConfig.store_frames_once = False'], transitions)
  # Incompressible frames, so Reverb's chunk compression cannot hide a copy. Whole
  # observations: Reverb already shares steps between overlapping items (one stack per
  # transition, 0.5x naive; measured 0.66x with the server's own overhead); frames once: one
  # 84x84 frame per transition (0.125x naive; measured 0.22x).
  assert once < naive / 3.5, (once, stacked, naive)
  assert stacked / once > 2.5, (once, stacked, naive)
