"""The actors' status records, written to the replay server's status table."""

import json
import time

from absl import logging
import numpy as np
import reverb
import tensorflow as tf

from common import constants


def publish_status(client: reverb.Client, record: dict, timeout_s: float = 2.0) -> bool:
  """Inserts one status record (a JSON object; `time` is added) into the status table.

  Never raises, and waits at most `timeout_s` for the server's confirmation: the status view
  is a convenience, collection is not. Returns whether the insert was confirmed.
  """
  payload = json.dumps(dict(record, time=round(time.time(), 3)), sort_keys=True)
  try:
    # Not while the server is away: a writer closed with its item unconfirmed is left to
    # Reverb's stream worker, and an actor that did so every log interval through a server
    # restart once aborted with a corrupted heap inside the next writer's `append`.
    client.server_info(timeout=max(1, int(timeout_s)))
    writer = client.trajectory_writer(num_keep_alive_refs=1)
    try:
      writer.append([np.array(payload.encode(), dtype=object)])
      writer.create_item(constants.STATUS_TABLE, 1.0, [writer.history[0][-1]])
      writer.flush(timeout_ms=int(timeout_s * 1000))
    finally:
      writer.close()
  except (RuntimeError, ValueError, reverb.errors.ReverbError, tf.errors.OpError) as e:
    logging.log_every_n_seconds(logging.INFO, 'status record not published: %s', 600,
                                str(e).splitlines()[0] if str(e) else type(e).__name__)
    return False
  return True
