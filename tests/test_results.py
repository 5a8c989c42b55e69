"""The plot and video commands: curves from real eval files, images, and headless videos."""

import os
import subprocess
import sys
import time

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from actor import evaluate
from common import builders
from common import constants
from common.config import ReplayConfig
from common.errors import UserError
from learner import export
from results import curves
from results import figure
from results import rollout
from tests.conftest import REPO
from tests.conftest import parse_gin

START = 1_800_000_000.0  # Unix seconds of the fake run starts below.


def _write_run(run_dir, points, start=START, csv=True, events=True):
  """Writes a run's eval output the way run_eval does: eval.csv rows and TensorBoard scalars.

  `points` are (train_step, env_steps, seconds since start, average_return).
  """
  eval_dir = os.path.join(run_dir, constants.EVAL_DIR)
  os.makedirs(eval_dir, exist_ok=True)
  if events:
    # TensorBoard names the file after its creation time; this is how the run start is known.
    writer = tf.summary.create_file_writer(eval_dir, filename_suffix='.test')
    with writer.as_default():
      for step, env_steps, _, average_return in points:
        tf.summary.scalar(curves.ENV_STEPS_TAG, average_return, step=env_steps)
        tf.summary.scalar('Metrics/AverageReturn', average_return, step=step)
    writer.close()
    real = [f for f in os.listdir(eval_dir) if f.startswith('events.out.tfevents.')][0]
    fake = real.split('.')
    fake[3] = str(int(start))
    os.rename(os.path.join(eval_dir, real), os.path.join(eval_dir, '.'.join(fake)))
  if csv:
    for step, env_steps, seconds, average_return in points:
      evaluate.append_csv_row(os.path.join(run_dir, constants.EVAL_CSV), dict(
          train_step=step, env_steps=env_steps, timestamp=start + seconds,
          average_return=average_return, average_episode_length=average_return,
          num_episodes=10))
  return run_dir


RUN_A = [(0, 1000, 30.0, 10.0), (500, 6000, 90.0, 50.0), (1000, 11000, 150.0, 200.0)]
RUN_B = [(0, 800, 20.0, 20.0), (500, 5000, 80.0, 100.0), (1000, 12000, 160.0, 180.0)]


def test_load_run_reads_the_csv_and_times_from_the_eval_start(tmp_path):
  run = _write_run(str(tmp_path / 'cartpole_a'), RUN_A)
  curve = curves.load_run(run)
  assert curve.label == 'cartpole_a'
  np.testing.assert_array_equal(curve.env_steps, [1000, 6000, 11000])
  np.testing.assert_allclose(curve.wall_s, [30, 90, 150])
  np.testing.assert_allclose(curve.returns, [10, 50, 200])
  # The CSV itself may be named, too.
  same = curves.load_run(os.path.join(run, constants.EVAL_CSV), label='A')
  assert same.label == 'A'
  np.testing.assert_allclose(same.returns, curve.returns)


def test_load_run_falls_back_to_tensorboard_events(tmp_path):
  # The events carry real wall times (now); the file name says the run began 100 s ago.
  run = _write_run(str(tmp_path / 'tb_only'), RUN_B, start=time.time() - 100, csv=False)
  curve = curves.load_run(run)
  np.testing.assert_array_equal(curve.env_steps, [800, 5000, 12000])
  np.testing.assert_allclose(curve.returns, [20, 100, 180])
  assert 99 <= curve.wall_s[0] <= 160
  assert np.all(np.diff(curve.wall_s) >= 0)


def test_load_run_errors_name_the_problem(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    curves.load_run(str(tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='no evaluations under'):
    curves.load_run(str(tmp_path / 'empty'))
  header_only = tmp_path / 'header' / 'eval'
  header_only.mkdir(parents=True)
  (header_only / 'eval.csv').write_text(','.join(evaluate.CSV_FIELDS) + '\n')
  with pytest.raises(UserError, match='holds no evaluation yet'):
    curves.load_run(str(tmp_path / 'header'))
  with pytest.raises(UserError, match='LABEL=DIR'):
    curves.parse_group('no-equals-sign')


def test_band_is_mean_min_max_over_the_shared_range():
  a = curves.Curve('a', np.array([0., 10.]), np.array([0., 10.]), np.array([0., 10.]))
  b = curves.Curve('b', np.array([0., 5., 20.]), np.array([0., 5., 20.]),
                   np.array([10., 10., 40.]))
  band = curves.band('g', [a, b], 'env_steps', points=3)
  np.testing.assert_allclose(band.x, [0, 5, 10])  # Only where both runs have data.
  np.testing.assert_allclose(band.low, [0, 5, 10])
  np.testing.assert_allclose(band.high, [10, 10, 20])
  np.testing.assert_allclose(band.mean, [5, 7.5, 15])
  assert band.num_runs == 2
  late = curves.Curve('c', np.array([50., 60.]), np.array([50., 60.]), np.array([1., 2.]))
  with pytest.raises(UserError, match='share no env_steps range'):
    curves.band('g', [a, late], 'env_steps')


def test_unknown_env_steps_are_left_out_of_the_env_step_axis():
  curve = curves.Curve('a', np.array([100., -1., 300.]), np.array([1., 2., 3.]),
                       np.array([5., 6., 7.]))
  x, y = curve.xy('env_steps')
  np.testing.assert_array_equal(x, [100, 300])
  np.testing.assert_array_equal(y, [5, 7])
  x, y = curve.xy('wall_s')
  np.testing.assert_array_equal(y, [5, 6, 7])


def test_plot_writes_png_with_both_panels(tmp_path):
  run_a = curves.load_run(_write_run(str(tmp_path / 'a'), RUN_A))
  out = figure.plot_curves(str(tmp_path / 'plots' / 'curves.png'), runs=[run_a], target=195)
  with Image.open(out) as image:
    assert image.format == 'PNG'
    width, height = image.size
  assert width > 1.8 * height  # Two panels side by side: env steps and wall-clock time.
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # Not mkstemp's private 0600.
  assert not [f for f in os.listdir(tmp_path / 'plots') if f.startswith('.')]


def test_plot_svg_overlays_runs_and_groups_with_labelled_axes(tmp_path):
  runs = [curves.load_run(_write_run(str(tmp_path / name), points), label)
          for name, points, label in (('a', RUN_A, 'run A'), ('b', RUN_B, 'run B'))]
  seeds = [curves.load_run(_write_run(str(tmp_path / f'seed{i}'), RUN_A)) for i in range(3)]
  out = figure.plot_curves(str(tmp_path / 'curves.svg'), runs=runs,
                           groups=[('seeds', seeds)], title='CartPole')
  svg = open(out).read()
  # Matplotlib writes text as glyph paths but keeps each string in a comment.
  for text in ('run A', 'run B', 'seeds (mean, min-max of 3 runs)', 'CartPole',
               'environment steps (collected by all actors)', 'wall-clock time (seconds)',
               'average return per episode (greedy eval)'):
    assert text in svg, text


def test_plot_rejects_an_unknown_format_and_writes_nothing(tmp_path):
  run = curves.load_run(_write_run(str(tmp_path / 'a'), RUN_A))
  with pytest.raises(UserError, match='must end in .png or .svg'):
    figure.plot_curves(str(tmp_path / 'curves.jpg'), runs=[run])
  assert not os.path.exists(tmp_path / 'curves.jpg')


@pytest.mark.slow
def test_plot_main_end_to_end_and_one_line_errors(tmp_path):
  _write_run(str(tmp_path / 'cp_seed1'), RUN_A)
  _write_run(str(tmp_path / 'cp_seed2'), RUN_B)
  out = tmp_path / 'cp.png'
  command = [sys.executable, '-m', 'results.plot', f'--run_dir={tmp_path}/cp_seed1',
             f'--group=DQN={tmp_path}/cp_seed*', '--target=195', f'--out={out}']
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert f'wrote {out}' in done.stdout
  with Image.open(out) as image:
    assert image.format == 'PNG'
  bad = subprocess.run([sys.executable, '-m', 'results.plot', f'--run_dir={tmp_path}/nope',
                        f'--out={tmp_path}/bad.png'], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith('error: run directory')
  assert not os.path.exists(tmp_path / 'bad.png')


def _export_untrained_cartpole_policy(root_dir):
  """A real greedy-policy SavedModel (PolicySaver layout) of a freshly built DQN agent."""
  parse_gin()
  train_step = tf.Variable(0, dtype=tf.int64)
  agent, _ = builders.make_agent_and_specs(ReplayConfig(), train_step)
  trigger = export.PolicyExportTrigger(os.path.join(root_dir, constants.POLICY_DIR), agent,
                                       train_step, interval=1)
  trigger(1, force_trigger=True)  # Forced triggers skip the start value (0).
  return os.path.join(root_dir, constants.POLICY_DIR, export.GREEDY_POLICY)


def test_video_of_a_saved_cartpole_policy_headless(tmp_path):
  policy_dir = _export_untrained_cartpole_policy(str(tmp_path / 'run'))
  lines = []
  episodes = rollout.record_videos(str(tmp_path / 'v' / 'cartpole'), policy_dir,
                                   num_episodes=1, seed=3, log=lines.append)
  assert len(episodes) == 1
  episode = episodes[0]
  assert episode.episode_return == episode.length  # CartPole pays 1 per step.
  assert len(episode.frames) == episode.length + 1  # The reset frame and one per step.
  assert episode.frames[0].shape == (400, 600, 3)
  assert lines[0] == (f'episode 1/1: return={episode.episode_return:.2f} '
                      f'length={episode.length} ({policy_dir})')
  num_frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / 'v' /
                                                                  'cartpole.mp4'))
  assert num_frames == episode.length + 1
  assert seconds == pytest.approx(num_frames / 50, abs=0.1)  # CartPole's 50 fps.
  gif = iio.imread(str(tmp_path / 'v' / 'cartpole.gif'), index=None)
  assert gif.shape[1:] == (160, 240, 3)
  # The pole is drawn: not every GIF frame is blank white.
  assert gif.min() < 128


def test_video_beside_random_shows_both_policies_labelled_with_their_returns(tmp_path):
  policy_dir = _export_untrained_cartpole_policy(str(tmp_path / 'run'))
  lines = []
  episodes = rollout.record_videos(str(tmp_path / 'both'), policy_dir, num_episodes=1,
                                   formats=('gif',), seed=3, max_frames=6, gif_width=400,
                                   gif_stride=1, log=lines.append, beside_random=True)
  averages = [line for line in lines if line.startswith('average return')]
  assert len(averages) == 2 and averages[0].endswith(f'({policy_dir})')
  assert averages[1].endswith('(random policy)')
  gif = iio.imread(str(tmp_path / 'both.gif'), index=None)
  # Two 600x400 CartPole frames and a gap of 8 pixels, under a 37-pixel label strip (a 25-pixel
  # font), at 400 pixels wide.
  assert gif.shape[2] == 400 and gif.shape[1] == round((400 + 37) * 400 / (2 * 600 + 8))
  # Frames beyond the shorter episode repeat its last one (the GIF writer may merge repeats).
  assert 2 <= len(gif) <= max(len(episodes[0].frames), 6)
  first = gif[0]
  strip = round(37 * 400 / (2 * 600 + 8))
  assert first[:strip].min() < 128  # The labels are drawn.
  assert first[strip:, :195].min() < 128 and first[strip:, 205:].min() < 128  # Both carts.
  with pytest.raises(UserError, match='--beside_random shows a saved policy'):
    rollout.record_videos(str(tmp_path / 'none'), '', beside_random=True)


def test_video_of_a_random_pybullet_policy_uses_rgb_array(tmp_path):
  parse_gin(os.path.join(REPO, 'gin', 'sac_inverted_pendulum.gin'), ())
  lines = []
  episodes = rollout.record_videos(str(tmp_path / 'pendulum'), '', num_episodes=1,
                                   formats=('gif',), max_frames=5, log=lines.append)
  assert 'random policy' in lines[0]
  assert episodes[0].length >= 1
  assert len(episodes[0].frames) <= 5
  assert episodes[0].frames[0].shape == (240, 320, 3)
  assert not os.path.exists(tmp_path / 'pendulum.mp4')
  assert iio.imread(str(tmp_path / 'pendulum.gif'), index=None).shape[2] == 240


def test_video_rejects_a_policy_for_another_task(tmp_path):
  policy_dir = _export_untrained_cartpole_policy(str(tmp_path / 'run'))
  parse_gin(os.path.join(REPO, 'gin', 'sac_inverted_pendulum.gin'), ())
  with pytest.raises(UserError, match='pass the --gin_file the policy was trained with'):
    rollout.record_videos(str(tmp_path / 'x'), policy_dir, num_episodes=1)
  with pytest.raises(UserError, match='is not a policy SavedModel'):
    rollout.load_saved_policy(str(tmp_path))
  assert not os.path.exists(tmp_path / 'x.mp4')


@pytest.mark.slow
def test_video_main_renders_the_runs_policy_and_prints_returns(tmp_path):
  root_dir = str(tmp_path / 'run')
  _export_untrained_cartpole_policy(root_dir)
  # The learner's recorded config names the task, as in a real run directory.
  import gin  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(root_dir, constants.LEARNER_DIR), exist_ok=True)
  with open(os.path.join(root_dir, constants.LEARNER_DIR, 'operative_config.gin'), 'w') as f:
    f.write(gin.config_str())
  out = tmp_path / 'videos' / 'cp'
  done = subprocess.run([sys.executable, '-m', 'results.video', f'--root_dir={root_dir}',
                         '--num_episodes=2', '--max_frames=10', f'--out={out}'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  returns = [line for line in done.stdout.splitlines() if line.startswith('episode ')]
  assert [r.split(':')[0] for r in returns] == ['episode 1/2', 'episode 2/2']
  assert os.path.getsize(f'{out}.mp4') > 0 and os.path.getsize(f'{out}.gif') > 0
  missing = subprocess.run([sys.executable, '-m', 'results.video',
                            f'--root_dir={tmp_path}/none', f'--out={out}'], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1].startswith('error: --root_dir=')
