"""Algorithm families: how a family writes, keeps and consumes its data, for every role.

A family supplies the behaviour that differs between kinds of algorithm, so that the roles only
assemble and loop, and never ask which family they hold:

| role    | what the family supplies                                                 |
|---------|--------------------------------------------------------------------------|
| server  | `replay_table`: the table's sampler, remover, size and rate limiter      |
| actor   | `make_writer` (the observer), `collects_before_weights`,                 |
|         | `checks_weights_every_item`, `new_item_priority` (on each weights pull)   |
| learner | `make_iterator_fn` (the dataset), `make_trainer`, `push_interval`        |

The agent builder chooses its family: `AgentBuild.family`, or None for `OffPolicy`, which
`select` makes `Prioritized` when `ReplayConfig.prioritized` says so. Four families exist:
- `OffPolicy`: uniform replay of overlapping items (DQN, C51, SAC, TD3, DDPG, DQN-RNN);
- `Prioritized`: the same items, sampled by priority, with importance weights and priority
  updates from the learner (Schaul et al., 2016);
- `OnPolicy`: a queue, each item consumed once by the weights that produced it (PPO);
- `Impala`: a queue, each item consumed once by whatever weights the learner holds then, the
  lag corrected by V-trace (IMPALA).

A new algorithm that fits none of these is one new family class (its table, writer, dataset
and trainer); docs/architecture.md walks through one.

A family's role methods import that role's modules when called, so that each process loads only
its own role's code (an actor never imports the learner's trainers); at module level this
module imports only `common`.
"""

import dataclasses
from typing import Callable, Optional

import reverb
import tensorflow as tf

from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class OffPolicy:
  """Off-policy replay: a FIFO table of overlapping items, sampled uniformly.

  Actors collect with the random policy until the first weights arrive, write one item per
  step (stride 1) and check for new weights every `ActorConfig.variable_update_interval` steps;
  the learner samples batches under the distribution strategy.

  Attributes:
    items_span_episodes: Items are windows at stride 1 that run on across episode ends, as
      TF-Agents' replay buffers sample them (recurrent networks restart from the zero state at
      each FIRST step inside an item); otherwise an item lies within one episode.
  """
  items_span_episodes: bool = False

  name = 'off-policy'
  # Actors collect with the random policy until the first weights arrive.
  collects_before_weights = True
  # Actors check for new weights after each replay item, not every variable_update_interval.
  checks_weights_every_item = False
  # The replay table is a queue the learner drains: actors report their wait for it.
  is_queue = False

  def check(self, replay_config) -> None:
    """Refuses a `ReplayConfig` this family cannot honour (UserError)."""
    del replay_config

  def stores_frames_once(self) -> Optional[str]:
    """Why observations cannot be stored as single frames, or None when they can."""
    if self.items_span_episodes:
      return ('this agent\'s items run on across episode ends (an on-policy or recurrent '
              'agent), where a stack cannot be rebuilt from the frames of its item')
    return None

  def make_max_priority(self) -> Optional[tf.Variable]:
    """The variable that carries new items' priority with the weights, or None."""
    return None

  # The replay server.
  def replay_table(self, specs, replay_config, learner_config):
    """The replay table (a `reverb.Table`) of `specs` (`builders.Specs`)."""
    del learner_config
    from replay_server import tables  # pylint: disable=g-import-not-at-top
    return tables.make_replay_table(specs.collect_data_spec, replay_config,
                                    specs.sequence_length, specs.frame_stack,
                                    sampler=self.sampler(replay_config))

  def sampler(self, replay_config):
    """The replay table's sampler (`reverb.selectors`)."""
    del replay_config
    return reverb.selectors.Uniform()

  # The actors.
  def make_writer(self, client, num_envs: int, specs, is_running: Callable[[], bool]):
    """The actor's observer (`writer.BatchedTrajectoryObserver`) for `num_envs` environments."""
    from actor import writer  # pylint: disable=g-import-not-at-top
    return writer.BatchedTrajectoryObserver(
        client, num_envs, specs.sequence_length, is_running=is_running,
        step_spec=specs.collect_data_spec, end_to_end=self.is_queue,
        span_episodes=self.items_span_episodes, frame_stack=specs.frame_stack)

  def new_item_priority(self, weights_step: int,
                        max_priority: Optional[float]) -> Optional[float]:
    """The priority of the items written after a pull of weights `weights_step` that carried
    `max_priority`; None keeps the writer's."""
    del weights_step, max_priority
    return None

  # The learner.
  def make_iterator_fn(self, strategy, server_address: str, specs, learner_config):
    """A function that makes a fresh iterator over the replay table (after a reconnect too)."""
    from learner import dataset  # pylint: disable=g-import-not-at-top
    return dataset.distributed_iterator_fn(strategy, server_address, specs, learner_config)

  def push_interval(self, learner_config) -> int:
    """Train steps between weight pushes."""
    return learner_config.push_interval

  def make_trainer(self, inputs):
    """The learner's trainer (`learner.trainers.Trainer`) from `learner.trainers.Inputs`."""
    from learner import trainers  # pylint: disable=g-import-not-at-top
    return trainers.off_policy_trainer(inputs)


@dataclasses.dataclass(frozen=True)
class Prioritized(OffPolicy):
  """Off-policy replay sampled by priority (Schaul et al., 2016).

  The learner weights each sampled item's loss by its importance weight and writes each item's
  new priority back; every push carries the largest recent priority, which the actors give new
  items, so that every new item is sampled soon.
  """

  name = 'prioritized'

  def make_max_priority(self) -> tf.Variable:
    return tf.Variable(1.0, dtype=tf.float64, trainable=False, name='max_priority')

  def sampler(self, replay_config):
    return reverb.selectors.Prioritized(priority_exponent=replay_config.priority_exponent)

  def new_item_priority(self, weights_step, max_priority):
    del weights_step
    return max_priority

  def make_trainer(self, inputs):
    from learner import trainers  # pylint: disable=g-import-not-at-top
    return trainers.prioritized_trainer(inputs)


@dataclasses.dataclass(frozen=True)
class _Queue(OffPolicy):
  """What the queue families share: items end to end across episode ends, consumed once from
  a queue in the order written; actors that never collect with the random policy, tag each
  item with its weights' train step and check for new weights after every item."""
  items_span_episodes: bool = True

  collects_before_weights = False
  checks_weights_every_item = True
  is_queue = True

  def check(self, replay_config) -> None:
    if replay_config.prioritized or replay_config.samples_per_insert is not None:
      raise UserError(
          f'this agent ({self.name}) consumes each item once from a queue, in the order '
          'written, so ReplayConfig.prioritized and ReplayConfig.samples_per_insert cannot '
          'apply: remove those bindings')

  def new_item_priority(self, weights_step, max_priority):
    del max_priority
    return float(weights_step)


@dataclasses.dataclass(frozen=True)
class OnPolicy(_Queue):
  """On-policy data: a queue whose items are consumed once, by the weights that produced them.

  - the replay table is a queue (Fifo sampler and remover, each item sampled once, inserts held
    while it is full) of `capacity(LearnerConfig.batch_size)` items;
  - actors write fixed-length items end to end (across episode ends, which the agent masks),
    never collect with the random policy, give each item the train step of the weights that
    produced it as its priority (its policy version), and check for newer weights after every
    item;
  - the learner gathers `LearnerConfig.batch_size` items of at most `max_policy_lag` versions
    back, drops the others and counts them, runs `num_epochs` epochs over the batch, and pushes
    the weights after every iteration.

  Attributes:
    num_epochs: Passes over each gathered batch (TF-Agents' `PPOLearner`).
    minibatch_size: Steps per train step; None trains on whole items (recurrent networks).
    max_policy_lag: Versions (learner iterations) an item may be behind the learner's weights;
      0 is strictly on-policy.
  """
  num_epochs: int = 1
  minibatch_size: Optional[int] = None
  max_policy_lag: int = 0

  name = 'on-policy'

  @staticmethod
  def capacity(batch_size: int) -> int:
    """Queue size: one batch. While the learner trains, the actors fill the queue with the
    next batch and then wait; the learner reads the oldest items first, so room for more
    would only hold items that are staler still when read (measured: bench/on_policy_sync.py,
    docs/algorithms.md)."""
    return batch_size

  def replay_table(self, specs, replay_config, learner_config):
    del replay_config
    from replay_server import tables  # pylint: disable=g-import-not-at-top
    return tables.make_queue_table(specs.collect_data_spec, specs.sequence_length,
                                   self.capacity(learner_config.batch_size))

  def make_iterator_fn(self, strategy, server_address, specs, learner_config):
    from learner import dataset  # pylint: disable=g-import-not-at-top
    return dataset.item_iterator_fn(server_address, specs, learner_config)

  def push_interval(self, learner_config) -> int:
    del learner_config
    return 1  # After every iteration: actors must not collect with stale weights.

  def make_trainer(self, inputs):
    from learner import trainers  # pylint: disable=g-import-not-at-top
    return trainers.on_policy_trainer(inputs)


@dataclasses.dataclass(frozen=True)
class Impala(_Queue):
  """IMPALA's data: a queue of fixed-length trajectories, each trained on once, whatever its lag.

  - the replay table is a queue (each item sampled once, inserts held while it is full) of
    `queue_batches * LearnerConfig.batch_size` items;
  - actors never collect with the random policy, write items of `sequence_length` steps end to
    end across episode ends, each item starting with the previous one's last step (its
    bootstrap), give each item the train step of the weights that produced it as its priority
    (its policy version), and check for newer weights after every item;
  - the learner samples batches under the distribution strategy like an off-policy learner,
    measures each item's lag (its train step minus the item's version), drops and counts items
    beyond `max_policy_lag` if that is set, and pushes every `LearnerConfig.push_interval`
    train steps.

  Attributes:
    max_policy_lag: Train steps an item may be behind the learner; None: no limit.
    queue_batches: Learner batches the queue holds.
  """
  max_policy_lag: Optional[int] = None
  queue_batches: int = 2

  name = 'impala'

  def replay_table(self, specs, replay_config, learner_config):
    del replay_config
    from replay_server import tables  # pylint: disable=g-import-not-at-top
    return tables.make_queue_table(specs.collect_data_spec, specs.sequence_length,
                                   self.queue_batches * learner_config.batch_size)

  def make_writer(self, client, num_envs, specs, is_running):
    from actor import writer  # pylint: disable=g-import-not-at-top
    return writer.BatchedTrajectoryObserver(
        client, num_envs, specs.sequence_length, is_running=is_running,
        step_spec=specs.collect_data_spec, end_to_end=True, overlap=1)

  def make_trainer(self, inputs):
    from learner import trainers  # pylint: disable=g-import-not-at-top
    return trainers.impala_trainer(inputs)


def select(declared: Optional[OffPolicy], replay_config,
           items_span_episodes: bool = False) -> OffPolicy:
  """The family of a build: the agent builder's `declared` one, else off-policy replay,
  prioritized when `ReplayConfig.prioritized` is set. Checks `replay_config` against it.

  Raises:
    UserError: the family cannot honour `replay_config` (`OffPolicy.check`).
  """
  if declared is None:
    kind = Prioritized if replay_config.prioritized else OffPolicy
    declared = kind(items_span_episodes=items_span_episodes)
  declared.check(replay_config)
  return declared
