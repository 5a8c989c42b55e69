"""Replay checkpoints on disk: which are complete, which to keep, and restoring one into the
configured tables.

Reverb restores a table from a checkpoint with the settings recorded in the checkpoint (size,
rate limiter, selectors), whatever tables the server was given: a server restarted with another
gin config would run the old one without a word. `reconcile` compares the newest complete
checkpoint with the configured tables before the server starts and:
- leaves it alone when they agree;
- applies the configured settings when only settings differ. It writes a new checkpoint
  beside the old one that shares its chunk file (a hard link) and records the new settings. A
  smaller `max_size` keeps the newest items, as FIFO eviction would. A changed ratio limiter
  starts from the middle of its window. The old checkpoint stays as the fallback;
- refuses, naming the values, when a signature differs (another environment or agent): no
  setting makes those items usable;
- renames a table that an earlier version named otherwise (`constants.FORMER_TABLE_NAMES`),
  the same way, so that existing runs' checkpoints still restore.

The server restores only checkpoints it wrote itself. Reverb serves its Checkpoint RPC to
anyone who reaches the port, and deletes every checkpoint but its newest when it writes one: a
Reset followed by a Checkpoint from elsewhere would write an empty checkpoint and delete the
good one, and the next start would restore the empty one. So after each checkpoint it writes,
the server links it into `own/` beside the checkpoint directory (`record_own`; hard links, no
copy), where Reverb neither looks nor deletes, and keeps the newest few there. Before a start,
`select_own` moves every complete checkpoint that is not one of those to `foreign/` and puts
the newest own one back in the checkpoint directory, which is the one Reverb restores. The same
links are what a truncated newest checkpoint falls back on: a checkpoint that cannot be read is
moved to `corrupt/` (`set_aside`), and the next newest own one takes its place.
"""

import datetime
import os
import shutil
from typing import Dict, List, Sequence

from absl import logging
import tensorflow as tf

from common import constants
from common.errors import UserError

_TABLES_FILE = 'tables.tfrecord'
_ITEMS_FILE = 'items.tfrecord'
_CHUNKS_FILE = 'chunks.tfrecord'
_DONE_FILE = 'DONE'
_COMPRESSION = 'ZLIB'  # Reverb's TFRecordCheckpointer writes every file ZLIB-compressed.
CORRUPT_DIR = 'corrupt'
OWN_DIR = 'own'
FOREIGN_DIR = 'foreign'
# Where earlier versions kept the checkpoint before the newest; adopted as own (`select_own`).
_FORMER_PREVIOUS_DIR = 'previous'
_FOREIGN_KEPT = 2  # Foreign checkpoints kept for a look, newest first.


class UnreadableCheckpointError(Exception):
  """A checkpoint's files could not be read."""


def complete_checkpoints(checkpoint_dir: str) -> List[str]:
  """Checkpoint directories that Reverb finished (those with its DONE marker), oldest first."""
  if not os.path.isdir(checkpoint_dir):
    return []
  names = sorted(n for n in os.listdir(checkpoint_dir)
                 if os.path.isfile(os.path.join(checkpoint_dir, n, _DONE_FILE)))
  return [os.path.join(checkpoint_dir, n) for n in names]


def prune_checkpoints(checkpoint_dir: str, keep: int) -> None:
  """Deletes all but the newest `keep` complete checkpoints, and any incomplete one (a write
  that failed, for example on a full disk; Reverb never loads those)."""
  complete = complete_checkpoints(checkpoint_dir)
  for path in complete[:-keep]:
    shutil.rmtree(path, ignore_errors=True)
  newest = complete[-1] if complete else ''
  for name in os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else ():
    path = os.path.join(checkpoint_dir, name)
    # Only those older than the newest complete one: a newer one may be in the making.
    if os.path.isdir(path) and path not in complete and path < newest:
      shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(checkpoint_dir: str) -> None:
  """Deletes every incomplete checkpoint, newer ones included: call only after a failed write,
  when no write is in the making, so that the space it took is free for the next try."""
  complete = complete_checkpoints(checkpoint_dir)
  for name in os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else ():
    path = os.path.join(checkpoint_dir, name)
    if os.path.isdir(path) and path not in complete:
      shutil.rmtree(path, ignore_errors=True)


def _sibling(checkpoint_dir: str, name: str) -> str:
  return os.path.join(os.path.dirname(os.path.abspath(checkpoint_dir)), name)


def _link_checkpoint(source: str, target: str) -> None:
  """Hard-links the files of checkpoint `source` into a new directory `target`, DONE last, and
  renames it into place, so that `target` is complete or absent."""
  if os.path.isdir(target):
    return
  staging = target + '.partial'
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  for name in sorted(os.listdir(source), key=lambda n: n == _DONE_FILE):
    os.link(os.path.join(source, name), os.path.join(staging, name))
  os.rename(staging, target)


def _same(a: str, b: str) -> bool:
  try:
    return os.path.samefile(os.path.join(a, _TABLES_FILE), os.path.join(b, _TABLES_FILE))
  except OSError:
    return False


def record_own(checkpoint_dir: str, path: str, keep: int = 0) -> str:
  """Records `path`, a complete checkpoint this server just wrote, as its own (a link in
  `own/`); with `keep`, deletes all but the newest `keep` own checkpoints. Returns the link."""
  own_dir = _sibling(checkpoint_dir, OWN_DIR)
  os.makedirs(own_dir, exist_ok=True)
  target = os.path.join(own_dir, os.path.basename(path))
  _link_checkpoint(path, target)
  if keep:
    own = complete_checkpoints(own_dir)
    for old in own[:max(0, len(own) - keep)]:
      shutil.rmtree(old, ignore_errors=True)
  return target


def select_own(checkpoint_dir: str) -> None:
  """Leaves the newest own checkpoint as the newest complete one in `checkpoint_dir`: complete
  checkpoints there that this server did not write are moved to `foreign/`, and the newest one
  of `own/` is linked back in if it is not there. A run directory of an earlier version, which
  has no `own/`, has its checkpoints (and those of `previous/`) adopted as own first."""
  own_dir = _sibling(checkpoint_dir, OWN_DIR)
  if not os.path.isdir(own_dir):
    former = _sibling(checkpoint_dir, _FORMER_PREVIOUS_DIR)
    for path in complete_checkpoints(former) + complete_checkpoints(checkpoint_dir):
      record_own(checkpoint_dir, path)
    os.makedirs(own_dir, exist_ok=True)
    shutil.rmtree(former, ignore_errors=True)
  own = {os.path.basename(p): p for p in complete_checkpoints(own_dir)}
  foreign_dir = _sibling(checkpoint_dir, FOREIGN_DIR)
  for path in complete_checkpoints(checkpoint_dir):
    name = os.path.basename(path)
    if name in own and _same(path, own[name]):
      continue
    os.makedirs(foreign_dir, exist_ok=True)
    target = os.path.join(foreign_dir, name)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(path, target)
    logging.warning('replay server: checkpoint %s was not written by this server (a Checkpoint '
                    'RPC from elsewhere); moved it to %s, it is not restored', path, target)
  foreign = complete_checkpoints(foreign_dir)
  for old in foreign[:max(0, len(foreign) - _FOREIGN_KEPT)]:
    shutil.rmtree(old, ignore_errors=True)
  if own:
    newest = own[max(own)]
    target = os.path.join(checkpoint_dir, os.path.basename(newest))
    if not os.path.isdir(target):
      os.makedirs(checkpoint_dir, exist_ok=True)
      _link_checkpoint(newest, target)
      logging.warning('replay server: falling back to this server\'s newest own checkpoint %s',
                      target)


def set_aside(path: str, reason: str) -> str:
  """Moves an unreadable checkpoint out of the checkpoint directory; returns where to."""
  target_dir = _sibling(os.path.dirname(path), CORRUPT_DIR)
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, os.path.basename(path))
  own = os.path.join(_sibling(os.path.dirname(path), OWN_DIR), os.path.basename(path))
  if _same(own, path):
    shutil.rmtree(own, ignore_errors=True)  # Not to be linked back in by `select_own`.
  shutil.move(path, target)
  logging.warning('replay checkpoint %s is unreadable (%s); moved it to %s', path, reason,
                  target)
  return target


def _read(path: str, proto_class) -> list:
  try:
    return [proto_class.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path, compression_type=_COMPRESSION)]
  except (tf.errors.OpError, ValueError, OSError) as e:
    raise UnreadableCheckpointError(f'{os.path.basename(path)}: '
                                    f'{str(e).splitlines()[0][:200]}') from None


def read_tables(path: str) -> Dict[str, object]:
  """The table records of checkpoint `path`, by name (`PriorityTableCheckpoint` protos).

  Raises:
    UnreadableCheckpointError: the file is missing, truncated or not a checkpoint.
  """
  from reverb.cc.checkpointing import checkpoint_pb2  # pylint: disable=g-import-not-at-top
  return {t.table_name: t for t in _read(os.path.join(path, _TABLES_FILE),
                                         checkpoint_pb2.PriorityTableCheckpoint)}


def recorded_sizes(path: str) -> Dict[str, int]:
  """Items per table that checkpoint `path` holds: its rate limiters' inserts minus deletes.

  Reverb restores a checkpoint whose chunk file was cut at a record boundary without an error,
  and without the items whose chunks are missing; comparing the restored table sizes with these
  finds that.

  Raises:
    UnreadableCheckpointError: the table file cannot be read.
  """
  return {name: r.rate_limiter.insert_count - r.rate_limiter.delete_count
          for name, r in read_tables(path).items()}


def _flat_signature(signature) -> list:
  return [(s.dtype.name, tuple(s.shape.as_list())) for s in tf.nest.flatten(signature)]


def _checkpoint_signature(record):
  from tensorflow.python.saved_model import nested_structure_coder  # pylint: disable=g-import-not-at-top
  if not record.HasField('signature'):
    return None
  return nested_structure_coder.decode_proto(record.signature)


def _describe_signature(flat) -> str:
  return '[' + ', '.join(f'{dtype}{list(shape)}' for dtype, shape in flat) + ']'


def _describe_limiter(limiter) -> str:
  return (f'samples_per_insert={limiter.samples_per_insert:g} min_size='
          f'{limiter.min_size_to_sample} window=[{limiter.min_diff:g}, {limiter.max_diff:g}]')


def _settings(max_size, max_times_sampled, sampler, remover, limiter) -> Dict[str, str]:
  """What is compared between a checkpointed and a configured table, as display strings."""
  one_line = lambda proto: ' '.join(str(proto).split())
  return {'max_size': str(max_size), 'max_times_sampled': str(max_times_sampled),
          'sampler': one_line(sampler), 'remover': one_line(remover),
          'rate_limiter': _describe_limiter(limiter)}


def differences(record, table) -> Dict[str, tuple]:
  """{setting: (checkpointed, configured)} for the settings in which they differ."""
  info = table.info
  old = _settings(record.max_size, record.max_times_sampled, record.sampler, record.remover,
                  record.rate_limiter)
  new = _settings(info.max_size, info.max_times_sampled, info.sampler_options,
                  info.remover_options, info.rate_limiter_info)
  return {k: (old[k], new[k]) for k in old if old[k] != new[k]}


def check_signatures(records: Dict[str, object], tables: Sequence[object], path: str) -> None:
  """Raises UserError when a checkpointed table holds items of another signature (but the
  variable table: see `_resigned`)."""
  for table in tables:
    record = records.get(table.name)
    if record is None or table.name == constants.VARIABLE_TABLE:
      continue
    old = _flat_signature(_checkpoint_signature(record))
    new = _flat_signature(table.info.signature)
    if old != new:
      raise UserError(
          f'the replay checkpoint {path} holds table {table.name!r} of another environment or '
          f'agent (checkpoint {_describe_signature(old)}, this config '
          f'{_describe_signature(new)}): start with the gin file of that run, or with a fresh '
          '--root_dir')


def _resigned(records: Dict[str, object], tables: Sequence[object]) -> Dict[str, tuple]:
  """{table: (checkpointed, configured)} signatures of the variable table, if they differ.

  Its one item is the learner's latest push, which the learner makes again at its start, so a
  change of its layout (a checkpoint of an earlier version, before the `signature` column) is
  a setting to apply, with the item dropped, not a reason to refuse the replay.
  """
  for table in tables:
    record = records.get(table.name)
    if table.name == constants.VARIABLE_TABLE and record is not None:
      old = _flat_signature(_checkpoint_signature(record))
      new = _flat_signature(table.info.signature)
      if old != new:
        return {table.name: (_describe_signature(old), _describe_signature(new))}
  return {}


def _checkpoint_name() -> str:
  """A name after every existing one: Reverb's format, an RFC 3339 time in UTC."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return now.strftime('%Y-%m-%dT%H:%M:%S.%f000+00:00')


def _apply(path: str, records: Dict[str, object], tables: Sequence[object],
           renamed: Dict[str, str], resigned: Sequence[str] = ()) -> str:
  """Writes a checkpoint with `tables`' settings and `path`'s items, its tables renamed by
  `renamed` (old name -> new name; `records` are already renamed), and the tables in
  `resigned` with the configured signature and none of their items; returns its path."""
  from reverb.cc import schema_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.saved_model import nested_structure_coder  # pylint: disable=g-import-not-at-top
  infos = {t.name: t.info for t in tables}
  items = _read(os.path.join(path, _ITEMS_FILE), schema_pb2.PrioritizedItem)
  for item in items:
    item.table = renamed.get(item.table, item.table)
  kept = []
  for name, record in records.items():
    info = infos.get(name)
    table_items = [i for i in items if i.table == name]
    if info is None:
      kept.extend(table_items)
      continue
    table_items.sort(key=lambda i: (i.inserted_at.seconds, i.inserted_at.nanos))
    dropped = max(0, len(table_items) - info.max_size)
    if name in resigned:
      dropped = len(table_items)
      record.signature.CopyFrom(nested_structure_coder.encode_structure(info.signature))
    kept.extend(table_items[dropped:])
    limiter = record.rate_limiter
    changed_limiter = _describe_limiter(limiter) != _describe_limiter(info.rate_limiter_info)
    record.max_size = info.max_size
    record.max_times_sampled = info.max_times_sampled
    record.sampler.CopyFrom(info.sampler_options)
    record.remover.CopyFrom(info.remover_options)
    for field in ('samples_per_insert', 'min_diff', 'max_diff', 'min_size_to_sample'):
      setattr(limiter, field, getattr(info.rate_limiter_info, field))
    limiter.delete_count += dropped
    if changed_limiter and abs(limiter.min_diff) < 1e300 and abs(limiter.max_diff) < 1e300:
      # Counts of the old ratio would put the new one far outside its window, blocking one
      # side for as long as the run has lasted: start from the middle of the window.
      middle = (limiter.min_diff + limiter.max_diff) / 2
      limiter.sample_count = max(0, int(limiter.insert_count * limiter.samples_per_insert
                                        - middle))
  target = os.path.join(os.path.dirname(path), _checkpoint_name())
  os.makedirs(target)
  try:
    os.link(os.path.join(path, _CHUNKS_FILE), os.path.join(target, _CHUNKS_FILE))
    for name, protos in ((_ITEMS_FILE, kept), (_TABLES_FILE, list(records.values()))):
      with tf.io.TFRecordWriter(os.path.join(target, name), _COMPRESSION) as writer:
        for proto in protos:
          writer.write(proto.SerializeToString())
    with open(os.path.join(target, _DONE_FILE), 'w'):
      pass
  except BaseException:
    shutil.rmtree(target, ignore_errors=True)
    raise
  return target


def _rename_former_tables(records: Dict[str, object], tables: Sequence[object]) -> Dict[str, str]:
  """Renames, in `records`, each table an earlier version named otherwise whose current name is
  configured and not yet in the checkpoint; returns {old name: new name}."""
  configured = {t.name for t in tables}
  renamed = {}
  for old, new in constants.FORMER_TABLE_NAMES.items():
    if old in records and new in configured and new not in records:
      record = records.pop(old)
      record.table_name = new
      records[new] = record
      renamed[old] = new
  return renamed


def reconcile(checkpoint_dir: str, tables: Sequence[object]) -> List[str]:
  """Makes the newest complete checkpoint restore into `tables`' settings (see the module doc).

  Unreadable checkpoints are set aside, newest first, until a readable one is found.

  Returns:
    [] when there is no checkpoint; else the checkpoint Reverb will restore first, then the
    one it was made from, if any: what to set aside if Reverb cannot load it after all.

  Raises:
    UserError: a table's signature differs from the checkpoint's.
  """
  while True:
    select_own(checkpoint_dir)
    complete = complete_checkpoints(checkpoint_dir)
    if not complete:
      return []
    path = complete[-1]
    try:
      records = read_tables(path)
      break
    except UnreadableCheckpointError as e:
      set_aside(path, str(e))
  renamed = _rename_former_tables(records, tables)
  check_signatures(records, tables, path)
  resigned = _resigned(records, tables)
  changes = {f'{new}.name': (old, new) for old, new in renamed.items()}
  for name, (old, new) in resigned.items():
    changes[f'{name}.signature'] = (old, f'{new} (its item dropped: the learner pushes again)')
  for table in tables:
    if table.name in records:
      for setting, values in differences(records[table.name], table).items():
        changes[f'{table.name}.{setting}'] = values
  if not changes:
    return [path]
  try:
    applied = _apply(path, records, tables, renamed, tuple(resigned))
  except UnreadableCheckpointError as e:
    set_aside(path, str(e))
    return reconcile(checkpoint_dir, tables)
  record_own(checkpoint_dir, applied)
  shown = '; '.join(f'{name}: {old} -> {new}' for name, (old, new) in sorted(changes.items()))
  logging.warning('replay server: the configured tables differ from checkpoint %s; applying '
                  'the configuration (%s); the old checkpoint is kept', path, shown)
  return [applied, path]
