"""Every numeric field of every config declares its range, and a value just outside it is
refused in one line naming the field (generated from the declarations, so a new field cannot
be added unchecked). The mains run `validate()` before anything waits or is written
(tests/test_bad_input.py runs them)."""

import dataclasses
import typing

import pytest

from common import config
from common.errors import UserError
from common.typecheck import numeric_fields

CONFIGS = [config.ReplayConfig, config.LearnerConfig, config.ActorConfig, config.EvalConfig]


@pytest.mark.parametrize('config_type', CONFIGS, ids=lambda c: c.__name__)
def test_every_numeric_field_declares_its_range(config_type):
  assert sorted(config_type.RANGES) == sorted(numeric_fields(config_type))
  config_type().validate()  # The defaults are in range.


def _out_of_range(allowed, is_int):
  """Values just outside `allowed`, of the field's type."""
  step = 1 if is_int else 0.5
  values = []
  if allowed.low is not None:
    values.append(allowed.low if allowed.open_low else allowed.low - step)
  if allowed.high is not None:
    values.append(allowed.high + step)
  return [int(v) if is_int else float(v) for v in values]


def _is_int(config_type, name):
  hint = typing.get_type_hints(config_type)[name]
  return int in (typing.get_args(hint) or (hint,))


CASES = [(c, name, value) for c in CONFIGS for name, allowed in c.RANGES.items()
         for value in _out_of_range(allowed, _is_int(c, name))]


@pytest.mark.parametrize('config_type, name, value', CASES,
                         ids=[f'{c.__name__}.{n}={v}' for c, n, v in CASES])
def test_a_value_outside_its_range_is_refused_in_one_line(config_type, name, value):
  bad = dataclasses.replace(config_type(), **{name: value})
  with pytest.raises(UserError) as raised:
    bad.validate()
  message = str(raised.value)
  assert message.startswith(f'{config_type.__name__}.{name}={value} must be '), message
  assert '\n' not in message


def test_the_ranges_the_issue_found_unchecked_are_now_refused():
  for bad in (dataclasses.replace(config.ActorConfig(), log_interval_s=0.0),
              dataclasses.replace(config.EvalConfig(), seed=-1)):
    with pytest.raises(UserError):
      bad.validate()
