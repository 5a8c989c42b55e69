"""Reverb's ServerInfo and SampleStream calls over plain gRPC, without TensorFlow.

`reverb.Client` imports TensorFlow, which takes seconds; `reverb-fleet status` must answer in
under 2 s. Reverb's service is gRPC with protobuf messages, so this module speaks it directly:
it encodes the two requests by hand and decodes only the response fields it needs (field
numbers from Reverb 0.14's `reverb_service.proto` and `schema.proto`; unknown fields are
skipped, as protobuf itself does).

`server_info(own_connection=True)` opens a connection of its own (a local subchannel pool):
Reverb's clients in one process share gRPC's connection to an address, and after a network
partition heals that shared connection stays dead until TCP retransmits on it (up to 2 minutes
later), so a new `reverb.Client` cannot tell whether the server answers now. Such a call can
(`connection.answers`).

What can be read this way:
- every table's size, limits and rate-limiter counters (`server_info`);
- sampled items' priority, times sampled and insertion time, and string tensors, which Reverb
  stores uncompressed (`sample`). Numeric tensors are zstd-compressed and are not decoded.

Kept over the libraries that could do it, because each costs what this module exists to avoid:
Reverb's generated protobuf modules import TensorFlow's (`from reverb.cc import schema_pb2`
takes 2.6 to 2.9 s on this project's 2-core machine, this module 0.07 s); code generated from
Reverb's `.proto` files needs the TensorFlow protos they import as well, and protoc; and a
status endpoint served by the replay server would open a second port on it.
`tests/test_fleet_status.py::test_status_shows_the_fleet_without_tensorflow` checks that the
status view never loads TensorFlow.
"""

import dataclasses
import struct
from typing import Dict, Iterator, List, Tuple

import grpc

_METHOD = '/deepmind.reverb.ReverbService/'
_DT_STRING = 7


class RpcError(Exception):
  """The server did not answer, or answered with an error; the message says which."""


# --- protobuf wire format -------------------------------------------------------------------

def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
  result = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def fields(data: bytes) -> Dict[int, List]:
  """A message's fields: number -> values (ints for varints, bytes otherwise)."""
  out: Dict[int, List] = {}
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(data, pos)
    elif wire == 1:
      value, pos = data[pos:pos + 8], pos + 8
    elif wire == 2:
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
    elif wire == 5:
      value, pos = data[pos:pos + 4], pos + 4
    else:
      raise ValueError(f'unsupported protobuf wire type {wire}')
    out.setdefault(number, []).append(value)
  return out


def _one(msg: Dict[int, List], number: int, default=None):
  values = msg.get(number)
  return values[-1] if values else default


def _int(msg, number: int) -> int:
  value = _one(msg, number, 0)
  return value - (1 << 64) if value >= 1 << 63 else value  # int64 two's complement


def _double(msg, number: int) -> float:
  raw = _one(msg, number)
  return struct.unpack('<d', raw)[0] if raw else 0.0


def _message(msg, number: int) -> Dict[int, List]:
  return fields(_one(msg, number, b''))


def _string(msg, number: int) -> str:
  return _one(msg, number, b'').decode('utf-8', 'replace')


# --- decoded results ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RateLimiterInfo:
  samples_per_insert: float
  min_diff: float
  max_diff: float
  min_size_to_sample: int
  inserts: int  # Inserts completed since the server started (restored with a checkpoint).
  samples: int  # Samples completed since the server started.


@dataclasses.dataclass(frozen=True)
class TableInfo:
  name: str
  max_size: int
  current_size: int
  max_times_sampled: int
  num_unique_samples: int
  rate_limiter: RateLimiterInfo


@dataclasses.dataclass(frozen=True)
class SampledItem:
  key: int
  priority: float
  times_sampled: int
  inserted_at_s: float  # Unix time of the insert.
  strings: Tuple[str, ...]  # Every string tensor element of the item, in order.


def _table_info(data: bytes) -> TableInfo:
  msg = fields(data)
  limiter = _message(msg, 5)
  return TableInfo(
      name=_string(msg, 8), max_size=_int(msg, 3), current_size=_int(msg, 7),
      max_times_sampled=_int(msg, 4), num_unique_samples=_int(msg, 11),
      rate_limiter=RateLimiterInfo(
          samples_per_insert=_double(limiter, 1), min_diff=_double(limiter, 2),
          max_diff=_double(limiter, 3), min_size_to_sample=_int(limiter, 4),
          inserts=_int(_message(limiter, 5), 2), samples=_int(_message(limiter, 6), 2)))


def _tensor_strings(data: bytes) -> List[str]:
  """The elements of a DT_STRING TensorProto (string_val, or TF's tensor_content encoding)."""
  msg = fields(data)
  if _one(msg, 1, 0) != _DT_STRING:
    return []
  if msg.get(8):
    return [v.decode('utf-8', 'replace') for v in msg[8]]
  content = _one(msg, 4, b'')
  count = 1
  for dim in fields(_one(msg, 2, b'')).get(2, []):
    count *= _int(fields(dim), 1)
  lengths, pos = [], 0
  for _ in range(count):
    length, pos = _read_varint(content, pos)
    lengths.append(length)
  out = []
  for length in lengths:
    out.append(content[pos:pos + length].decode('utf-8', 'replace'))
    pos += length
  return out


# --- calls ----------------------------------------------------------------------------------

def _channel(address: str, own_connection: bool = False) -> grpc.Channel:
  options = [('grpc.max_receive_message_length', -1)]
  if own_connection:
    options.append(('grpc.use_local_subchannel_pool', 1))
  return grpc.insecure_channel(address, options=options)


def _rpc_error(address: str, e: grpc.RpcError) -> RpcError:
  code = e.code() if hasattr(e, 'code') else None
  details = e.details() if hasattr(e, 'details') else str(e)
  if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
    return RpcError(f'no replay server answers at {address} ({code.name.lower()}): check the '
                    'address, and that the server runs')
  return RpcError(f'the replay server at {address} answered {code}: {details}')


def server_info(address: str, timeout_s: float = 2.0,
                own_connection: bool = False) -> Dict[str, TableInfo]:
  """Every table of the server at `address`, by name.

  With `own_connection`, on a new connection that no other channel of this process shares.

  Raises:
    RpcError: no answer within `timeout_s`, or an error answer.
  """
  with _channel(address, own_connection) as channel:
    call = channel.unary_unary(_METHOD + 'ServerInfo', request_serializer=lambda x: x,
                               response_deserializer=lambda x: x)
    try:
      response = call(b'', timeout=timeout_s)
    except grpc.RpcError as e:
      raise _rpc_error(address, e) from None
  return {info.name: info for info in map(_table_info, fields(response).get(2, []))}


def sample(address: str, table: str, num_samples: int = 1,
           timeout_s: float = 2.0) -> List[SampledItem]:
  """Up to `num_samples` items sampled from `table`; [] when the table has none to give now.

  The rate limiter is waited on for 1 ms only (Reverb reads 0 as no deadline), so an empty
  table answers at once.

  Raises:
    RpcError: no answer within `timeout_s`, or an error other than the rate limiter's.
  """
  request = (b'\x0a' + _varint(len(table.encode())) + table.encode()
             + b'\x10' + _varint(num_samples)
             + b"\x1a\x02\x08\x01")  # rate_limiter_timeout { milliseconds: 1 } (0: no limit)
  items: List[SampledItem] = []
  with _channel(address) as channel:
    call = channel.stream_stream(_METHOD + 'SampleStream', request_serializer=lambda x: x,
                                 response_deserializer=lambda x: x)
    responses: Iterator[bytes] = call(iter([request]), timeout=timeout_s)
    info, strings = None, []
    try:
      for response in responses:
        for entry_data in fields(response).get(1, []):
          entry = fields(entry_data)
          if 1 in entry:
            info = _message(_message(entry, 1), 1)
          for chunk in entry.get(2, []):
            for tensor in fields(_one(fields(chunk), 5, b'')).get(1, []):
              strings.extend(_tensor_strings(tensor))
          if _one(entry, 3, 0) and info is not None:
            inserted = _message(info, 7)
            items.append(SampledItem(
                key=_int(info, 1), priority=_double(info, 5), times_sampled=_int(info, 6),
                inserted_at_s=_int(inserted, 1) + _int(inserted, 2) * 1e-9,
                strings=tuple(strings)))
            info, strings = None, []
        if len(items) >= num_samples:
          break
    except grpc.RpcError as e:
      if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and 'Rate Limiter' in (e.details() or ''):
        return items  # Nothing more to sample now.
      raise _rpc_error(address, e) from None
    finally:
      responses.cancel()
  return items
