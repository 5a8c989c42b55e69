"""V-trace off-policy targets (Espeholt et al., 2018, section 4.1), in TensorFlow.

For a trajectory x_s, a_s, r_s (s = 0 .. T-1) collected by a behaviour policy mu and a target
policy pi with value function V:

  rho_s = min(rho_bar, pi(a_s | x_s) / mu(a_s | x_s)),  c_s = min(c_bar, pi / mu)
  delta_s = rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s))
  v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1})),  v_T = V(x_T) (the bootstrap)

and the policy-gradient advantage of step s is

  A_s = min(rho_bar_pg, pi / mu) (r_s + gamma_s v_{s+1} - V(x_s)).

`gamma_s` is the discount of step s (the agent's gamma times the environment's discount: 0 at a
termination). A step whose `mask` is 0 is no transition at all (in a trajectory written across
episode ends, the step from an episode's LAST observation to the next one's FIRST): its
v_s is V(x_s), its advantage 0, and it passes nothing back to the steps before it (their
discount into it must be 0, or V(x_{s+1}) is a truncated episode's bootstrap).

Tensors are batch-major, [B, T]; the recursion runs backwards over time with `tf.scan`. No
gradient flows through the targets (they are stopped), as in the paper.
"""

from typing import NamedTuple, Optional

import tensorflow as tf


class VTraceReturns(NamedTuple):
  """vs: the V-trace value targets v_s [B, T]; pg_advantages: A_s [B, T]."""
  vs: tf.Tensor
  pg_advantages: tf.Tensor


def vtrace(log_rhos: tf.Tensor, discounts: tf.Tensor, rewards: tf.Tensor, values: tf.Tensor,
           bootstrap_value: tf.Tensor, mask: Optional[tf.Tensor] = None,
           clip_rho_threshold: Optional[float] = 1.0,
           clip_c_threshold: Optional[float] = 1.0,
           clip_pg_rho_threshold: Optional[float] = 1.0) -> VTraceReturns:
  """V-trace targets and advantages.

  Args:
    log_rhos: log pi(a_s | x_s) - log mu(a_s | x_s), [B, T].
    discounts: gamma_s, [B, T].
    rewards: r_s, [B, T].
    values: V(x_s), [B, T].
    bootstrap_value: V(x_T), [B].
    mask: 1 for a transition, 0 for a step that is none (see the module docstring); [B, T].
    clip_rho_threshold: rho_bar; None: no clipping.
    clip_c_threshold: c_bar; None: no clipping.
    clip_pg_rho_threshold: rho_bar of the advantages; None: no clipping.

  Returns:
    `VTraceReturns`, float32, gradients stopped.
  """
  log_rhos = tf.cast(log_rhos, tf.float32)
  discounts = tf.cast(discounts, tf.float32)
  rewards = tf.cast(rewards, tf.float32)
  values = tf.cast(values, tf.float32)
  bootstrap_value = tf.cast(bootstrap_value, tf.float32)
  mask = tf.ones_like(rewards) if mask is None else tf.cast(mask, tf.float32)
  rhos = tf.exp(log_rhos)
  clipped_rhos = rhos if clip_rho_threshold is None else tf.minimum(clip_rho_threshold, rhos)
  cs = rhos if clip_c_threshold is None else tf.minimum(clip_c_threshold, rhos)
  next_values = tf.concat([values[:, 1:], bootstrap_value[:, None]], axis=1)
  deltas = mask * clipped_rhos * (rewards + discounts * next_values - values)
  decays = mask * discounts * cs

  def backward(acc, step):
    delta, decay = step
    return delta + decay * acc

  # Time-major for the scan, from the last step back to the first.
  corrections = tf.scan(backward, (tf.transpose(deltas), tf.transpose(decays)),
                        initializer=tf.zeros_like(bootstrap_value), reverse=True)
  vs = values + tf.transpose(corrections)
  next_vs = tf.concat([vs[:, 1:], bootstrap_value[:, None]], axis=1)
  pg_rhos = rhos if clip_pg_rho_threshold is None else tf.minimum(clip_pg_rho_threshold, rhos)
  pg_advantages = mask * pg_rhos * (rewards + discounts * next_vs - values)
  return VTraceReturns(vs=tf.stop_gradient(vs), pg_advantages=tf.stop_gradient(pg_advantages))
