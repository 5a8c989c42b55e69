"""Dict and Tuple observations, flattened into one vector for the MLP agents.

Every agent here takes one observation array. An environment that observes a Dict or a Tuple
(Gymnasium's, gym's, or a dm_env's nest of arrays) is wrapped in `FlatObservation`: its leaves,
in `tf.nest.flatten` order (Dict keys sorted, Tuple parts in order), are concatenated into one
float32 vector. A Discrete leaf (a bounded integer scalar) becomes a one-hot block of its n
values, any other leaf is flattened and cast. `layout(spec)` says which slice holds which leaf;
the learner records it in the run (`observation_layout.json`), so that a user who serves the
exported policy can build its input. A leaf of rank 3 or more (an image) is refused with one
line that names its key: an MLP over raw pixels does not train, and the convolutional agents
take a single image observation.
"""

import json
from typing import Dict, List

import numpy as np
import tensorflow as tf
from tf_agents.environments import wrappers
from tf_agents.specs import array_spec
from tf_agents.utils import nest_utils


class UnflattenableObservation(ValueError):
  """A nested observation leaf that cannot join the flat vector; the message names its key."""


def _is_discrete(spec) -> bool:
  return (isinstance(spec, array_spec.BoundedArraySpec) and np.issubdtype(spec.dtype, np.integer)
          and tuple(spec.shape) == ())


def layout(spec) -> List[Dict[str, object]]:
  """One record per leaf of a nested observation spec: its key path, shape, dtype, encoding
  ('one_hot' or 'flat') and its [offset, offset + size) slice of the flat vector.

  Raises:
    UnflattenableObservation: a leaf of rank 3 or more.
  """
  records, offset = [], 0
  for path, leaf in nest_utils.flatten_with_joined_paths(spec):
    if len(leaf.shape) >= 3:
      raise UnflattenableObservation(
          f'observation key {path!r} is an image (shape {tuple(leaf.shape)}), which the MLP '
          'agents cannot take inside a Dict or Tuple observation: drop the key (for example '
          'with gymnasium.wrappers.FilterObservation) or observe the image alone and bind '
          'conv_layer_params')
    if _is_discrete(leaf):
      size, encoding = int(leaf.maximum) - int(leaf.minimum) + 1, 'one_hot'
    else:
      size, encoding = int(np.prod(leaf.shape, dtype=np.int64)), 'flat'
    records.append(dict(key=path, shape=list(leaf.shape), dtype=np.dtype(leaf.dtype).name,
                        encoding=encoding, offset=offset, size=size))
    offset += size
  return records


def layout_json(spec) -> str:
  """`layout(spec)` as the JSON text the learner records."""
  leaves = layout(spec)
  return json.dumps(dict(flat_size=sum(r['size'] for r in leaves), leaves=leaves),
                    indent=2) + '\n'


class FlatObservation(wrappers.PyEnvironmentBaseWrapper):
  """Presents a nested observation as one float32 vector (see the module docstring).

  Raises:
    UnflattenableObservation: at construction, for a leaf that cannot be flattened.
  """

  def __init__(self, env):
    super().__init__(env)
    nested = env.observation_spec()
    self._layout = layout(nested)
    self._leaves = tf.nest.flatten(nested)
    size = sum(r['size'] for r in self._layout)
    self._observation_spec = array_spec.ArraySpec((size,), np.float32, name='observation')

  @property
  def observation_layout(self) -> List[Dict[str, object]]:
    return self._layout

  def observation_spec(self):
    return self._observation_spec

  def _flatten(self, observation) -> np.ndarray:
    out = np.zeros(self._observation_spec.shape, np.float32)
    for record, leaf, value in zip(self._layout, self._leaves, tf.nest.flatten(observation)):
      start = record['offset']
      if record['encoding'] == 'one_hot':
        out[start + int(value) - int(leaf.minimum)] = 1.0
      else:
        out[start:start + record['size']] = np.asarray(value, np.float32).reshape(-1)
    return out

  def _convert(self, time_step):
    return time_step._replace(observation=self._flatten(time_step.observation))

  def _reset(self):
    return self._convert(self._env.reset())

  def _step(self, action):
    return self._convert(self._env.step(action))
