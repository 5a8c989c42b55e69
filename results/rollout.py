"""Rolling out a saved or a random policy with frames, and writing them as MP4 and GIF.

Rendering is headless: PyBullet tasks draw with their `rgb_array` camera (TinyRenderer, no
window), and gym 0.23's CartPole draws with pygame, which needs a display unless SDL is told to
use its dummy driver. This module sets SDL_VIDEODRIVER=dummy (and SDL_AUDIODRIVER=dummy) when
they are unset, before pygame opens anything.
"""

import os

os.environ.setdefault('SDL_VIDEODRIVER', 'dummy')
os.environ.setdefault('SDL_AUDIODRIVER', 'dummy')

import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import List, Sequence  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_agents.policies import py_tf_eager_policy  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_agents.policies import random_py_policy  # pylint: disable=g-import-not-at-top,wrong-import-position

from common.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position
from common import files  # pylint: disable=g-import-not-at-top,wrong-import-position

_SAVED_MODEL_FILE = 'saved_model.pb'
_SPECS_FILE = 'policy_specs.pbtxt'


@dataclasses.dataclass
class Episode:
  """One recorded episode: its undiscounted return, its length and the kept frames."""
  episode_return: float
  length: int
  frames: List[np.ndarray]


def load_saved_policy(policy_dir: str):
  """Loads a policy SavedModel (PolicySaver layout) as a Python policy.

  Only TensorFlow and TF-Agents are needed: the specs come from the SavedModel's own
  policy_specs.pbtxt.

  Raises:
    UserError: `policy_dir` is not a policy SavedModel.
  """
  for name in (_SAVED_MODEL_FILE, _SPECS_FILE):
    if not os.path.isfile(os.path.join(policy_dir, name)):
      raise UserError(
          f'{policy_dir!r} is not a policy SavedModel (no {name}): pass the --root_dir of a run '
          'whose learner has exported a policy (root_dir/learner/policies/greedy_policy), or '
          '--policy_dir=<such a directory>')
  return py_tf_eager_policy.SavedModelPyTFEagerPolicy(
      policy_dir, load_specs_from_pbtxt=True)


def random_policy(env, seed: int = 0):
  """Uniformly random actions within the environment's action spec, seeded."""
  return random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=seed)


def check_compatible(policy, env) -> None:
  """Raises UserError unless `policy` was made for `env`'s observations and actions."""
  def shapes(spec):
    return (tuple(spec.shape), np.dtype(spec.dtype).name)
  pairs = ((policy.time_step_spec.observation, env.observation_spec(), 'observation'),
           (policy.action_spec, env.action_spec(), 'action'))
  for policy_spec, env_spec, what in pairs:
    if shapes(policy_spec) != shapes(env_spec):
      raise UserError(f'the policy expects {what}s {shapes(policy_spec)} but the environment '
                      f'gives {shapes(env_spec)}: pass the --gin_file the policy was trained '
                      'with')


def record(env, policy, num_episodes: int, frame_stride: int = 1,
           max_frames: int = 0) -> List[Episode]:
  """Runs `num_episodes` full episodes and keeps frames of each.

  Args:
    env: An unbatched PyEnvironment that renders 'rgb_array'.
    policy: A Python policy for `env`.
    num_episodes: Episodes to run.
    frame_stride: Keep every frame_stride-th frame (the first and last are always kept).
    max_frames: Keep at most this many frames per episode (0: all); the episode still runs to
      its end, so the return is the full episode's.

  Returns:
    One Episode per episode run.
  """
  episodes = []
  for _ in range(num_episodes):
    time_step = env.reset()
    policy_state = policy.get_initial_state(batch_size=None)
    frames = [render_first(env)] if not episodes else [env.render('rgb_array')]
    total, length = 0.0, 0
    while not time_step.is_last():
      step = policy.action(time_step, policy_state)
      policy_state = step.state
      time_step = env.step(step.action)
      total += float(np.sum(time_step.reward))
      length += 1
      keep = length % frame_stride == 0 or time_step.is_last()
      if keep and (not max_frames or len(frames) < max_frames):
        frames.append(env.render('rgb_array'))
    episodes.append(Episode(total, length, frames))
  return episodes


def render_first(env) -> np.ndarray:
  """The environment's first frame; a renderer that cannot start is one line with the fix.

  MuJoCo renders through OpenGL, which a machine without a display has only through EGL (a
  GPU) or OSMesa (software).

  Raises:
    UserError: the environment cannot render.
  """
  try:
    frame = env.render('rgb_array')
  except Exception as e:  # pylint: disable=broad-except  (GL back ends fail in many ways)
    raise UserError(
        f'the environment cannot render ({type(e).__name__}: {" ".join(str(e).split())[:200]}): '
        'for MuJoCo on a machine without a display, set MUJOCO_GL=egl (a GPU) or '
        'MUJOCO_GL=osmesa (apt-get install libosmesa6)') from None
  if frame is None:
    raise UserError('the environment rendered nothing: make it with render_mode=\'rgb_array\' '
                    '(an entry point gets it if it takes a render_mode argument)')
  return frame


def write_mp4(path: str, frames: Sequence[np.ndarray], fps: float) -> str:
  """H.264 MP4 through the ffmpeg binary that the imageio-ffmpeg wheel ships."""
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top

  def _write(tmp):
    # macro_block_size=2: keep the frame size (H.264 with yuv420p needs even sides only).
    with imageio.get_writer(tmp, format='FFMPEG', fps=fps, codec='libx264', quality=7,
                            macro_block_size=2, ffmpeg_log_level='error') as writer:
      for frame in frames:
        writer.append_data(_even(frame))
  return files.write_atomically(path, _write)


def write_gif(path: str, frames: Sequence[np.ndarray], fps: float, width: int = 240,
              stride: int = 2) -> str:
  """A looping GIF of every stride-th frame, scaled to `width` pixels (kept small for docs)."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  kept = list(frames[::stride])
  if frames and kept[-1] is not frames[-1]:
    kept.append(frames[-1])
  small = [_resize(f, width) for f in kept]

  def _write(tmp):
    iio.imwrite(tmp, np.stack(small), extension='.gif', duration=1000.0 * stride / fps,
                loop=0)
  return files.write_atomically(path, _write)


def _even(frame: np.ndarray) -> np.ndarray:
  height, width = frame.shape[:2]
  return frame[:height - height % 2, :width - width % 2]


def _resize(frame: np.ndarray, width: int) -> np.ndarray:
  height = max(2, round(frame.shape[0] * width / frame.shape[1]))
  return np.asarray(Image.fromarray(frame).resize((width, height), Image.LANCZOS))


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray], left_label: str,
                 right_label: str, gap: int = 8) -> List[np.ndarray]:
  """Two frame sequences as one, left beside right, each under its label; the shorter one
  holds its last frame until the longer one ends."""
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  height = max(left[0].shape[0], right[0].shape[0])
  width = left[0].shape[1] + gap + right[0].shape[1]
  font_size = max(10, height // 16)  # Legible when the video is scaled down with the frames.
  caption = font_size + font_size // 2
  font = ImageFont.load_default(size=font_size)
  banner = Image.new('RGB', (width, caption), (255, 255, 255))
  draw = ImageDraw.Draw(banner)
  draw.text((2, font_size // 4), left_label, fill=(0, 0, 0), font=font)
  draw.text((left[0].shape[1] + gap + 2, font_size // 4), right_label, fill=(0, 0, 0),
            font=font)
  top = np.asarray(banner)
  frames = []
  for i in range(max(len(left), len(right))):
    canvas = np.full((height, width, 3), 255, np.uint8)
    a, b = left[min(i, len(left) - 1)], right[min(i, len(right) - 1)]
    canvas[:a.shape[0], :a.shape[1]] = a[..., :3]
    canvas[:b.shape[0], a.shape[1] + gap:] = b[..., :3]
    frames.append(np.concatenate([top, canvas]))
  return frames


def frames_per_second(env, default: float = 30.0) -> float:
  """The environment's own playback rate (render_fps, or video.frames_per_second), from its gym
  or Gymnasium metadata."""
  inner = getattr(env, 'gym', None) or getattr(env, 'gymnasium', None)
  metadata = getattr(inner, 'metadata', None) or {}
  return float(metadata.get('render_fps') or metadata.get('video.frames_per_second')
               or default)


def record_videos(out_stem: str, policy_dir: str = '', num_episodes: int = 1,
                  formats: Sequence[str] = ('mp4', 'gif'), seed: int = 0,
                  frame_stride: int = 1, max_frames: int = 0, gif_width: int = 240,
                  gif_stride: int = 2, log=print, beside_random: bool = False) -> List[Episode]:
  """Renders a saved policy, or a random one, on the gin-configured task and writes videos.

  The gin config must be loaded (it names the environment). Episodes are played one after
  another in one video per format: out_stem + '.mp4' and/or out_stem + '.gif'. With
  `beside_random`, the random policy plays as many episodes from the same seed, and each
  video shows the policy (left) beside it (right), each labelled with its average return.

  Args:
    out_stem: Output path without extension.
    policy_dir: A policy SavedModel directory; '' renders uniformly random actions.
    num_episodes: Episodes to record (K).
    formats: Any of 'mp4' and 'gif'.
    seed: Seed of the environment (and of the random policy).
    frame_stride: Keep every frame_stride-th frame (both formats).
    max_frames: Frames kept per episode (0: all); episodes still run to their end.
    gif_width: Width of the GIF in pixels.
    gif_stride: The GIF keeps every gif_stride-th kept frame.
    log: Called with one line per episode ("episode 1/3: return=... length=...") and per file.
    beside_random: Also play the random policy and show it beside the saved one.

  Returns:
    The recorded episodes.

  Raises:
    UserError: bad arguments, or a policy that does not fit the environment.
  """
  from common import environments  # pylint: disable=g-import-not-at-top
  if num_episodes < 1:
    raise UserError(f'--num_episodes={num_episodes} must be >= 1')
  if frame_stride < 1 or gif_stride < 1 or gif_width < 16 or max_frames < 0:
    raise UserError('--frame_stride and --gif_stride must be >= 1, --gif_width >= 16 and '
                    '--max_frames >= 0')
  unknown = sorted(set(formats) - {'mp4', 'gif'})
  if unknown or not formats:
    raise UserError(f'unknown video format(s) {unknown or formats}: use mp4 and/or gif')
  if beside_random and not policy_dir:
    raise UserError('--beside_random shows a saved policy beside the random one: pass '
                    '--root_dir or --policy_dir, without --random')
  saved = load_saved_policy(policy_dir) if policy_dir else None

  def play(policy_dir: str):
    """(episodes, frames per second) of the saved policy, or of the random one for ''."""
    env = environments.make_environment(seed=seed, training=False)
    try:
      if policy_dir:
        check_compatible(saved, env)
      policy = saved if policy_dir else random_policy(env, seed)
      return (record(env, policy, num_episodes, frame_stride, max_frames),
              frames_per_second(env) / frame_stride)
    finally:
      env.close()

  episodes, fps = play(policy_dir)
  frames = _log_episodes(episodes, policy_dir or 'random policy', log)
  if beside_random:
    random_episodes, _ = play('')
    random_frames = _log_episodes(random_episodes, 'random policy', log)
    frames = side_by_side(
        frames, random_frames,
        f'trained: {np.mean([e.episode_return for e in episodes]):.1f}',
        f'random: {np.mean([e.episode_return for e in random_episodes]):.1f}')
  if 'mp4' in formats:
    log(f'wrote {write_mp4(out_stem + ".mp4", frames, fps)}')
  if 'gif' in formats:
    log(f'wrote {write_gif(out_stem + ".gif", frames, fps, gif_width, gif_stride)}')
  return episodes


def _log_episodes(episodes: Sequence[Episode], what: str, log) -> List[np.ndarray]:
  """Logs each episode's return and length and the average; returns all their frames."""
  for i, episode in enumerate(episodes):
    log(f'episode {i + 1}/{len(episodes)}: return={episode.episode_return:.2f} '
        f'length={episode.length} ({what})')
  returns = [e.episode_return for e in episodes]
  log(f'average return over {len(episodes)} episode(s): {np.mean(returns):.2f} ({what})')
  return [f for e in episodes for f in e.frames]
