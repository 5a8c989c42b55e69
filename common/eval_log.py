"""The eval CSV (`constants.EVAL_CSV`): one row per evaluation, read without TensorFlow."""

import csv
import os
from typing import Dict, List


def read_csv(path: str) -> List[Dict[str, float]]:
  """Rows of an eval CSV as dicts of floats (empty if the file does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
