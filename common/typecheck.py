"""Type checks of gin-bound values against their annotations, with one-line errors."""

import collections.abc
import dataclasses
import math
import typing

from common.errors import UserError


def _type_name(hint) -> str:
  if typing.get_origin(hint) is typing.Union:
    return ' or '.join(_type_name(a) for a in typing.get_args(hint))
  if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
    args = typing.get_args(hint)
    if not args:
      return 'a sequence'
    inner = _type_name(args[0])
    if inner.startswith('a sequence'):  # Nested: 'a sequence of sequences of integers'.
      return 'a sequence of sequences' + inner[len('a sequence'):]
    return f'a sequence of {inner.split(" ", 1)[1]}s'
  return {type(None): 'None', int: 'an integer', float: 'a number', str: 'a string',
          bool: 'True or False'}.get(hint, getattr(hint, '__name__', str(hint)))


def _matches(value, hint) -> bool:
  if typing.get_origin(hint) is typing.Union:
    return any(_matches(value, a) for a in typing.get_args(hint))
  if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
    args = typing.get_args(hint)
    return (isinstance(value, (list, tuple))
            and (not args or args[-1] is Ellipsis or len(args) > 1
                 or all(_matches(v, args[0]) for v in value)))
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not math.isnan(value))
  if hint is str:
    return isinstance(value, str)
  return True  # Other annotations are checked by the config's own validate().


def check_type(name: str, value, hint, example=None) -> None:
  """Raises UserError unless `value` fits the annotation `hint`.

  Checked: int (not bool), float (an int too, not NaN), bool, str, None, Optional/Union of
  those, and sequences of them (`Sequence[int]`: a gin tuple or list of integers). Other
  annotations pass.

  Args:
    name: What the value is bound to, as the gin file spells it (`ReplayConfig.max_size`).
    value: The bound value.
    hint: Its annotation.
    example: A good value for the message (the default), or None.
  """
  if not _matches(value, hint):
    raise UserError(f'{name}={value!r} is not {_type_name(hint)}: bind {_type_name(hint)} in '
                    'the gin file' + (f' (for example {example!r})' if example is not None
                                      else ''))


def check_types(config) -> None:
  """Checks every field of a config dataclass against its annotation, before its ranges.

  A gin binding of the wrong type (`ReplayConfig.max_size = 1e5`, a float; or a quoted
  number) would otherwise fail deep inside Reverb or NumPy, or pass silently.

  Raises:
    UserError: naming the field, its value and the type it needs.
  """
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    default = field.default if field.default is not dataclasses.MISSING else None
    check_type(f'{type(config).__name__}.{field.name}', getattr(config, field.name),
               hints[field.name], default)


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric config field may take: `low` and `high` (None: unbounded), `low`
  exclusive when `open_low`. `Range()` declares that any number is valid. None, where the
  field's annotation admits it, is checked by the type, not the range."""
  low: typing.Optional[float] = None
  high: typing.Optional[float] = None
  open_low: bool = False

  def holds(self, value) -> bool:
    if self.low is not None and (value <= self.low if self.open_low else value < self.low):
      return False
    return self.high is None or value <= self.high

  def __str__(self) -> str:
    if self.low is not None and self.high is not None:
      return f'in {"(" if self.open_low else "["}{self.low:g}, {self.high:g}]'
    if self.low is not None:
      return f'{">" if self.open_low else ">="} {self.low:g}'
    return f'<= {self.high:g}' if self.high is not None else 'any number'


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
UNIT_INTERVAL = Range(0, 1)


def numeric_fields(config_type) -> typing.List[str]:
  """The fields of a config dataclass annotated int or float (Optional included, bool not)."""
  hints = typing.get_type_hints(config_type)
  names = []
  for field in dataclasses.fields(config_type):
    hint = hints[field.name]
    args = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    if any(a in (int, float) for a in args):
      names.append(field.name)
  return names


def check_ranges(config) -> None:
  """Checks every numeric field of a config dataclass against its declared range
  (`RANGES`, a class attribute {field: Range}), after `check_types`.

  Raises:
    UserError: naming the field, its value and its range.
  """
  for name, allowed in type(config).RANGES.items():
    value = getattr(config, name)
    if value is not None and not allowed.holds(value):
      raise UserError(f'{type(config).__name__}.{name}={value} must be {allowed}: bind a value '
                      'in that range in the gin file')
