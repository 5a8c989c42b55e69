"""Stable-Baselines3 with the RL Baselines3 Zoo's hyperparameters, until it solves a task.

Run by `bench.sb3` with the Python of the benchmark's own virtual environment (SB3, PyTorch and
Gymnasium, never the project's); it imports nothing of the project.

  <sb3 venv>/bin/python bench/sb3_solve.py --algo=dqn --seed=0 [--target=195]

The task is Gymnasium's CartPole-v0 (CartPole-v1's dynamics with a 200-step limit), which is
the task of our CartPole gin files. Every `--eval_every` env steps it runs 10 deterministic
episodes on its own environment and prints `EVAL env_steps=N return=R`; at the first average
>= --target it prints `SOLVED env_steps=N` and exits 0. It exits 1 when --total_steps pass first.

The hyperparameters are the Zoo's CartPole-v1 entries (rl-baselines3-zoo,
hyperparams/dqn.yml at commit ce95481b and hyperparams/ppo.yml at commit 208b6fdf), with the
Zoo's n_timesteps as the schedules' length.
"""

import argparse
import sys


def _linear(initial: float):
  """The Zoo's `lin_<value>`: from `initial` down to 0 over the run."""
  return lambda progress_remaining: progress_remaining * initial


def _model(algo: str, seed: int):
  # pylint: disable=import-outside-toplevel  (the imports are part of the measured start-up)
  from stable_baselines3 import DQN
  from stable_baselines3 import PPO
  from stable_baselines3.common.env_util import make_vec_env
  if algo == 'dqn':  # hyperparams/dqn.yml, CartPole-v1 ("Almost Tuned").
    env = make_vec_env('CartPole-v0', n_envs=1, seed=seed)
    return DQN('MlpPolicy', env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
               learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
               gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
               policy_kwargs=dict(net_arch=[256, 256]), seed=seed, verbose=0), 50_000
  if algo == 'ppo':  # hyperparams/ppo.yml, CartPole-v1 ("Tuned").
    env = make_vec_env('CartPole-v0', n_envs=8, seed=seed)
    return PPO('MlpPolicy', env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
               n_epochs=20, ent_coef=0.0, learning_rate=_linear(1e-3),
               clip_range=_linear(0.2), seed=seed, verbose=0), 100_000
  raise SystemExit(f'error: --algo={algo!r}: choose dqn or ppo')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--algo', required=True, choices=('dqn', 'ppo'))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--target', type=float, default=195.0)
  parser.add_argument('--eval_every', type=int, default=2048)
  parser.add_argument('--eval_episodes', type=int, default=10)
  args = parser.parse_args(argv)
  # pylint: disable=import-outside-toplevel
  import gymnasium as gym
  from stable_baselines3.common.callbacks import BaseCallback
  from stable_baselines3.common.evaluation import evaluate_policy

  model, total_steps = _model(args.algo, args.seed)
  eval_env = gym.make('CartPole-v0')
  eval_env.reset(seed=10_000 + args.seed)

  class _Evaluate(BaseCallback):
    """Evaluates every `eval_every` env steps; stops training at the target."""

    def __init__(self):
      super().__init__()
      self.next_eval = args.eval_every
      self.solved = False

    def _on_step(self) -> bool:
      if self.num_timesteps < self.next_eval:
        return True
      self.next_eval += args.eval_every
      mean, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=args.eval_episodes,
                                deterministic=True)
      print(f'EVAL env_steps={self.num_timesteps} return={mean:.1f}', flush=True)
      if mean >= args.target:
        print(f'SOLVED env_steps={self.num_timesteps}', flush=True)
        self.solved = True
        return False
      return True

  callback = _Evaluate()
  model.learn(total_timesteps=total_steps, callback=callback)
  return 0 if callback.solved else 1


if __name__ == '__main__':
  sys.exit(main())
