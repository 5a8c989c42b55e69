"""Stops the memory leak of every eager tensor that TensorFlow 2.15 has on Python 3.11.

On Python 3.11, `object.__new__` gives each new instance of a class whose `__dict__` CPython
manages a block of inline attribute values, which the class's `tp_dealloc` must free.
`EagerTensor` (tensorflow/python/eager/pywrap_tensor.cc) inherits `object.__new__` from its
Python base class `_EagerTensorBase`, and its C `tp_dealloc` never frees that block. So every
eager tensor the process makes leaks about 50 bytes (tensorflow/tensorflow#62551: TF 2.15 on
Python >= 3.11). A collect actor makes tens of tensors per weight pull, and a TF policy makes
several per env step, so a long-lived actor grew without bound (17 MiB an hour in the 2-hour
chaos run of docs/fault_tolerance.md).

`install()` gives `EagerTensor` CPython's `PyType_GenericNew` as its constructor. That is the
same allocation without the inline values. CPython makes the attribute storage on demand the
first time an attribute is set on an instance, which is rare for a tensor, and that case leaks
as before. Nothing else changes:
- tensors made earlier keep their values;
- `tp_init` and `tp_dealloc` are untouched;
- `tests/test_eager_tensors.py` measures the leak with and without the fix, in fresh processes.

Before it writes anything, `install()` reads back the type object's basic size, flags, dict
offset and constructor through the offsets it will use. It patches nothing unless all four
match, the constructor is `object.__new__`'s, and the Python is 3.11.
"""

import ctypes
import sys

# Offsets, in pointer-sized words, of the PyTypeObject fields read or written here (CPython 3.11,
# Include/cpython/object.h), all verified against what Python reports before any write.
_TP_BASICSIZE = 4
_TP_FLAGS = 21
_TP_DICTOFFSET = 36
_TP_NEW = 39
_WORDS = _TP_NEW + 1
_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT


def _slots(cls) -> ctypes.Array:
  return (ctypes.c_ssize_t * _WORDS).from_address(id(cls))


def _generic_new() -> int:
  return ctypes.cast(ctypes.pythonapi.PyType_GenericNew, ctypes.c_void_p).value


def install() -> bool:
  """Applies the fix once per process (imports TensorFlow); returns whether it is in place.

  Returns False, and changes nothing, where it does not apply: another Python than 3.11, or a
  TensorFlow whose `EagerTensor` does not have the layout checked in the module docstring.
  """
  if sys.version_info[:2] != (3, 11):
    return False
  from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
  cls = ops.EagerTensor
  slots, generic = _slots(cls), _generic_new()
  if slots[_TP_NEW] == generic:
    return True
  layout_known = (slots[_TP_BASICSIZE] == cls.__basicsize__
                  and slots[_TP_FLAGS] == cls.__flags__
                  and slots[_TP_DICTOFFSET] == cls.__dictoffset__
                  and cls.__flags__ & _MANAGED_DICT
                  and cls.__new__ is object.__new__
                  and slots[_TP_NEW] == _slots(object)[_TP_NEW])
  if not layout_known:
    return False
  slots[_TP_NEW] = generic
  return True
