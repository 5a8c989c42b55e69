"""common/eager_tensors.py: eager tensors stop leaking, and still behave as tensors.

Each measurement runs in a fresh interpreter, since the fix is process-wide. Memory is what
tracemalloc traces (Python's allocator, where the leaked block lives), which does not depend on
the allocator's caching as RSS does.
"""

import json
import subprocess
import sys

import pytest

from tests import conftest

_PROBE = r'''
import json, sys, tracemalloc
import common
import numpy as np
import tensorflow as tf
from common import eager_tensors
installed = eager_tensors.install() if sys.argv[1] == 'fix' else False
x = tf.constant(np.ones((4,), np.float32))
v = tf.Variable(np.ones((4,), np.float32))
def make(n):
  for _ in range(n):
    tf.add(x, x)                                # an op's output
    v.read_value()                              # a variable read
    tf.constant(np.ones((4,), np.float32))      # a tensor from numpy (EagerTensor.__init__)
make(500)
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
make(3000)
grown = tracemalloc.get_traced_memory()[0] - before
tracemalloc.stop()
t = tf.constant([1.0, 2.0])
t.note = 'attribute'
print(json.dumps(dict(installed=installed, per_tensor=grown / 9000,
                      again=eager_tensors.install() if installed else None,
                      value=(t * 2).numpy().tolist(), attribute=t.note,
                      is_eager=type(t + 1).__name__)))
'''


def _measure(mode: str) -> dict:
  out = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True,
                       cwd=conftest.REPO, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason='the leak and the fix are 3.11\'s')
def test_eager_tensors_leak_without_the_fix_and_not_with_it():
  plain, fixed = _measure('plain'), _measure('fix')
  # The leak this module exists for, on the pinned TensorFlow: tens of bytes per tensor.
  assert plain['per_tensor'] > 20, plain
  assert fixed['installed'] and fixed['again'], fixed
  assert fixed['per_tensor'] < 2, fixed
  # Tensors still compute, take attributes, and are EagerTensors.
  assert fixed['value'] == [2.0, 4.0] and fixed['attribute'] == 'attribute'
  assert fixed['is_eager'] == 'EagerTensor'
