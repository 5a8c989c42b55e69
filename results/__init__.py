"""Results people can see: learning-curve plots and videos of saved or random policies.

  python -m results.plot --run_dir=runs/dqn_cartpole --out=plots/cartpole.png
  python -m results.video --root_dir=runs/dqn_cartpole --out=videos/cartpole
"""
