"""The agent registry: checks the gin-selected builder's arguments and builds the agent, and the
policies and variables every role takes from it."""

import inspect
import math
import typing
from typing import Callable, Optional

import gin
import tensorflow as tf
from tf_agents.policies import greedy_policy as greedy_policy_lib
from tf_agents.utils import common as tfa_common

from common import typecheck
from common import constants
from common import weights_key
from common.agents.seam import ActorSlot
from common.agents.seam import AgentBuild
from common.errors import UserError


# Every builder's arguments but these four are gin's; they are checked before the builder runs.
_BUILDER_INPUTS = ('time_step_spec', 'action_spec', 'train_step', 'actor')

# Ranges the builders' hyperparameters share, by name: (applies to name, holds for value, what
# it must be). A name may meet several.
_RANGES = (
    (lambda n: n.endswith('learning_rate'), lambda v: 0 < v < math.inf, 'must be > 0'),
    (lambda n: n in ('gamma', 'discount_factor', 'lambda_value'), lambda v: 0 <= v <= 1,
     'must be in [0, 1]'),
    (lambda n: n.endswith('tau'), lambda v: 0 < v <= 1, 'must be in (0, 1]'),
    (lambda n: n.endswith('_period'), lambda v: v >= 1, 'must be >= 1'),
    (lambda n: n == 'epsilon_greedy', lambda v: 0 <= v <= 1, 'must be in [0, 1]'),
    (lambda n: n.endswith(('_std', '_clip')), lambda v: 0 <= v < math.inf, 'must be >= 0'),
    (lambda n: n.endswith('fc_layer_params') or n == 'lstm_size',
     lambda v: all(u > 0 for u in v), 'must be positive layer widths'),
    (lambda n: n == 'conv_layer_params',
     lambda v: all(len(layer) == 3 and min(layer) > 0 for layer in v),
     'must be (filters, kernel, stride) triples of positive integers'),
    (lambda n: n == 'reward_scale_factor', math.isfinite, 'must be finite'),
    (lambda n: n in ('num_epochs', 'minibatch_size'), lambda v: v >= 1, 'must be >= 1'),
    (lambda n: n == 'collect_sequence_length', lambda v: v >= 2,
     'must be >= 2 (advantages need a next step to bootstrap from)'),
    (lambda n: n == 'max_policy_lag', lambda v: v >= 0, 'must be >= 0 (0: strictly on-policy)'),
    (lambda n: n in ('unroll_length', 'queue_batches'), lambda v: v >= 1, 'must be >= 1'),
    (lambda n: n == 'decay_steps', lambda v: v >= 0, 'must be >= 0'),
    (lambda n: n.endswith('_cost'), lambda v: 0 <= v < math.inf, 'must be >= 0'),
)


def check_builder_arguments(agent_fn: Callable) -> None:
  """Checks an agent builder's gin-bound arguments against its annotations and shared ranges.

  Runs before the builder, so that `dqn_agent.learning_rate = '1e-3'` (a string),
  `fc_layer_params = 100` (not a sequence) or `gamma = 1.5` is one line naming the binding,
  not a TensorFlow error from inside the agent or a run that trains on a wrong value. Types come
  from the builder's annotations (`typecheck.check_type`); ranges from `_RANGES`, by argument
  name, so a new builder that names its arguments as the others do is checked as they are.

  Raises:
    UserError: naming `<builder>.<argument>`, the value and what it must be.
  """
  fn = inspect.unwrap(agent_fn)
  hints = typing.get_type_hints(fn)
  bound = gin.get_bindings(agent_fn)
  for parameter in inspect.signature(fn).parameters.values():
    if parameter.name in _BUILDER_INPUTS:
      continue
    value = bound.get(parameter.name, parameter.default)
    if value is inspect.Parameter.empty:
      continue
    name = f'{fn.__name__}.{parameter.name}'
    default = None if parameter.default is inspect.Parameter.empty else parameter.default
    if parameter.name in hints:
      typecheck.check_type(name, value, hints[parameter.name], default)
    for applies, holds, must in _RANGES:
      if applies(parameter.name) and isinstance(value, (int, float, list, tuple)) and (
          not holds(value)):
        raise UserError(f'{name}={value!r} {must}: fix it in the gin file'
                        + (f' (the default is {default!r})' if default is not None else ''))


@gin.configurable(allowlist=['agent_fn'])
def make_agent(time_step_spec, action_spec, train_step=None,
               actor: Optional[ActorSlot] = None,
               agent_fn: Callable = gin.REQUIRED) -> AgentBuild:
  """Makes the gin-selected agent and initializes its variables.

  Args:
    time_step_spec: From `environments.environment_specs()`.
    action_spec: From `environments.environment_specs()`.
    train_step: The int64 train-step variable; a new one at 0 if None.
    actor: The collect actor building it, or None.
    agent_fn: An agent builder (gin), e.g. `@dqn_agent`, `@c51_agent`, `@td3_agent`.

  Returns:
    The builder's AgentBuild; the agent's variables exist (so their shapes give the
    variable-table signature).

  Raises:
    UserError: a builder argument of the wrong type or range (`check_builder_arguments`).
  """
  check_builder_arguments(agent_fn)
  if train_step is None:
    train_step = tfa_common.create_variable('train_step')
  build = agent_fn(time_step_spec, action_spec, train_step, actor)
  build.agent.initialize()
  return build


def greedy_policy(agent):
  """The agent's deterministic policy: what eval plays and the learner exports.

  DQN's and C51's `agent.policy` are already greedy (argmax Q), DDPG's and TD3's are the
  deterministic actor; SAC's `agent.policy` is the same stochastic actor policy as its collect
  policy, so every policy that is not greedy already is wrapped to play the mode.
  """
  policy = agent.policy
  if not isinstance(policy, greedy_policy_lib.GreedyPolicy):
    policy = greedy_policy_lib.GreedyPolicy(policy)
  return policy


def policy_variables(agent, train_step, max_priority: Optional[tf.Variable] = None):
  """The nest pushed to and pulled from the variable table (ReverbVariableContainer's keys,
  and the push's signature).

  The greedy and the collect policy share these variables, so eval and the actors load the same
  nest. With prioritized replay, `max_priority` (the priority actors give new items) travels in
  the same item. `signature` holds the HMAC of the item's other values (`common.weights_key`);
  the pusher fills it in the item, and the variable only gives the table its column.
  """
  nest = {
      constants.POLICY_KEY: agent.collect_policy.variables(),
      constants.TRAIN_STEP_KEY: train_step,
      constants.SIGNATURE_KEY: tf.Variable(tf.zeros([weights_key.SIGNATURE_WORDS], tf.int64),
                                           trainable=False, name='weights_signature'),
  }
  if max_priority is not None:
    nest[constants.MAX_PRIORITY_KEY] = max_priority
  return nest


def variables_signature(variables):
  """TensorSpecs of a variables nest: the variable table's signature."""
  return tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), variables)
