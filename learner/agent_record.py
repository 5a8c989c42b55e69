"""What agent a learner checkpoint holds, recorded beside it and checked before a restore.

TF-Agents' Checkpointer restores object-based checkpoints leniently: a checkpoint of another
network may restore partly, silently, or fail with a long TensorFlow error. So the learner
records its agent (class and trainable-variable shapes) next to its checkpoints, and a learner
started on a `root_dir` whose checkpoints hold another agent stops with one line instead.
"""

import json
import os

from absl import logging
import tensorflow as tf

from common import files
from common.errors import UserError

RECORD_FILE = 'agent.json'
CHECKPOINT_SUBDIR = os.path.join('train', 'checkpoints')  # tf_agents Learner's layout.


def describe(agent) -> dict:
  """The agent's class and the dtype and shape of each trainable variable, in order."""
  return {
      'agent': type(agent).__name__,
      'variables': [f'{v.dtype.name}{list(v.shape)}' for v in agent.trainable_variables],
  }


def has_checkpoint(learner_dir: str) -> bool:
  return tf.train.latest_checkpoint(os.path.join(learner_dir, CHECKPOINT_SUBDIR)) is not None


def check(learner_dir: str, agent) -> None:
  """Checks that the checkpoints under `learner_dir` are of `agent`; writes nothing.

  Raises:
    UserError: the recorded agent differs from `agent` while a checkpoint exists.
  """
  current = describe(agent)
  path = os.path.join(learner_dir, RECORD_FILE)
  if has_checkpoint(learner_dir) and os.path.isfile(path):
    with open(path) as f:
      recorded = json.load(f)
    if recorded != current:
      raise UserError(
          f'{learner_dir} holds a checkpoint of another agent or network ({_short(recorded)}; '
          f'this config builds {_short(current)}): pass a fresh --root_dir, or the gin file '
          'that run used')


def check_and_record(learner_dir: str, agent) -> None:
  """`check`, then records `agent` beside the checkpoints. Call before the Learner restores.

  Raises:
    UserError: see `check`; nothing is written then.
  """
  check(learner_dir, agent)
  record(learner_dir, agent)


def record(learner_dir: str, agent) -> None:
  """Records `agent` beside the checkpoints (after `check`)."""
  files.atomic_write(os.path.join(learner_dir, RECORD_FILE),
                          json.dumps(describe(agent), indent=1) + '\n')


CORRUPT_SUBDIR = 'corrupt'


def _read_all(prefix: str) -> None:
  """Reads every tensor of the checkpoint at `prefix`; raises if any cannot be read."""
  reader = tf.train.load_checkpoint(prefix)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


def set_aside_unreadable(learner_dir: str) -> None:
  """Moves unreadable newest checkpoints to learner_dir/corrupt/, newest first, so that the
  restore takes the newest complete one; says so in one warning line each.

  A checkpoint cut short (a full disk, a crash of the machine while it was written) would
  otherwise end the restore with a TensorFlow DataLossError.

  Raises:
    UserError: every checkpoint is unreadable (a fresh start would lose the run silently).
  """
  directory = os.path.join(learner_dir, CHECKPOINT_SUBDIR)
  state = tf.train.get_checkpoint_state(directory)
  if state is None:
    return
  paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  while paths:
    try:
      _read_all(paths[-1])
      break
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:  # IndexError:
      # the reader's "Read less bytes than requested" (OUT_OF_RANGE) on a cut data file.
      reason = ' '.join(str(getattr(e, 'message', e)).split())[:200]
      bad = paths.pop()
      corrupt_dir = os.path.join(learner_dir, CORRUPT_SUBDIR)
      os.makedirs(corrupt_dir, exist_ok=True)
      for path in tf.io.gfile.glob(bad + '.*'):
        os.replace(path, os.path.join(corrupt_dir, os.path.basename(path)))
      tf.compat.v1.train.update_checkpoint_state(directory, paths[-1] if paths else bad,
                                                 all_model_checkpoint_paths=paths)
      logging.warning('learner checkpoint %s is unreadable (%s): set aside in %s; %s',
                      os.path.basename(bad), reason, corrupt_dir,
                      f'falling back to {os.path.basename(paths[-1])}' if paths
                      else 'no other checkpoint is left')
  if not paths:
    raise UserError(f'no readable learner checkpoint is left in {directory} (the unreadable '
                    f'ones are in {os.path.join(learner_dir, CORRUPT_SUBDIR)}): restore one, or '
                    'pass a fresh --root_dir to start over')


def _optimizers(agent) -> dict:
  """The agent's Keras optimizers by attribute name ('optimizer', 'actor_optimizer', ...)."""
  found = {}
  for name, value in sorted(vars(agent).items()):
    if isinstance(value, tf.keras.optimizers.Optimizer) and isinstance(
        getattr(value, 'learning_rate', None), tf.Variable):
      found[name.lstrip('_')] = value
  return found


def configured_learning_rates(agent) -> dict:
  """The learning rate of each optimizer as configured; read it before the restore."""
  return {name: float(o.learning_rate.numpy()) for name, o in _optimizers(agent).items()}


def apply_learning_rates(agent, configured: dict) -> None:
  """Sets each optimizer's learning rate back to `configured` after a restore, in one line.

  A Keras optimizer keeps its learning rate in a variable, which the checkpoint restores: a
  learner resumed with a new learning rate would otherwise keep the old one, silently.
  """
  changed = []
  for name, optimizer in _optimizers(agent).items():
    restored = float(optimizer.learning_rate.numpy())
    if name in configured and restored != configured[name]:
      optimizer.learning_rate.assign(configured[name])
      changed.append(f'{name}.learning_rate {restored:g} -> {configured[name]:g}')
  if changed:
    logging.warning('learner: the checkpoint was trained with other settings; applying the '
                    'configuration (%s)', ', '.join(changed))


def _short(record: dict) -> str:
  variables = record.get('variables', [])
  return f"{record.get('agent')} with {len(variables)} variables {' '.join(variables[:6])}" + (
      ' ...' if len(variables) > 6 else '')
