"""Streaming rows out of local JSONL, JSON or parquet files, with their locations.

Every reader in scorejax.tasks goes through `iter_records`, so a malformed
row is always reported the same way: `path:line` for JSON Lines, `path: row
N` for parquet and `path: record N` for a JSON array (all counted from 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

PARQUET_BATCH_ROWS = 256  # rows decoded at a time, so a large file is never held whole


class RecordError(ValueError):
  """A row that is not what its published format says; the message names file and row."""


def _iter_jsonl(path: str) -> Iterator[tuple[str, dict]]:
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      where = f"{path}:{line_number}"
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
      yield where, record


def _iter_json_array(path: str) -> Iterator[tuple[str, dict]]:
  # A JSON array cannot be streamed with the standard library; it is read whole.
  with open(path, encoding="utf-8") as f:
    try:
      records = json.load(f)
    except json.JSONDecodeError as e:
      raise RecordError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  for i, record in enumerate(records, start=1):
    where = f"{path}: record {i}"
    if not isinstance(record, dict):
      raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    yield where, record


def _iter_parquet(path: str) -> Iterator[tuple[str, dict]]:
  import pyarrow.parquet as pq  # only parquet readers pay for pyarrow

  try:
    parquet = pq.ParquetFile(path)
  except Exception as e:  # pyarrow raises ArrowInvalid and OSError variants
    raise RecordError(f"{path}: not a readable parquet file ({e})") from None
  row = 0
  for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
    for record in batch.to_pylist():
      row += 1
      yield f"{path}: row {row}", record


def iter_records(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
  """(location, record) for every row of a .jsonl, .json or .parquet file, streamed.

  A .json file holding an array is read whole; one that holds JSON Lines is
  streamed like .jsonl.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data file {path!r} does not exist")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".parquet":
    return _iter_parquet(path)
  if suffix == ".jsonl":
    return _iter_jsonl(path)
  if suffix == ".json":
    with open(path, encoding="utf-8") as f:
      head = f.read(4096).lstrip()
    return _iter_json_array(path) if head.startswith("[") else _iter_jsonl(path)
  raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .jsonl, .json or .parquet")


_TYPE_NAMES = {
    str: "a string", bool: "a boolean", int: "an integer", list: "a list", dict: "an object"
}


def field(
    record: dict, key: str, kind: type | tuple[type, ...], where: str, optional: bool = False
):
  """record[key], checked to be of `kind`; a missing or mistyped field names its row.

  Booleans are not accepted where integers are expected.
  """
  if key not in record or record[key] is None:
    if optional:
      return None
    raise RecordError(f"{where}: missing field {key!r}")
  value = record[key]
  kinds = kind if isinstance(kind, tuple) else (kind,)
  ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
  if not ok:
    expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
    raise RecordError(f"{where}: field {key!r} must be {expected}, got {value!r:.80}")
  return value


def string_list(record: dict, key: str, where: str) -> tuple[str, ...]:
  value = field(record, key, list, where)
  if not all(isinstance(s, str) for s in value):
    raise RecordError(f"{where}: field {key!r} must be a list of strings")
  return tuple(value)
