"""MATH (Hendrycks et al. 2021) and MATH500 from local JSONL / parquet files.

Published fields:
  MATH500 (HuggingFaceH4/MATH-500, test.jsonl): problem, solution, answer,
      subject, level (1-5), unique_id ("test/precalculus/807.json")
  MATH (hendrycks_math / competition_math): problem, level ("Level 5"),
      type ("Algebra"), solution; the answer is the last \\boxed{} of the
      solution.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator

from scorejax.rewards import answers
from scorejax.tasks.records import RecordError, field, iter_records

_LEVEL_RE = re.compile(r"(?:level\s*)?([1-5])", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class MathExample:
  problem: str
  solution: str  # reference solution ("" when the file has only answers)
  answer: str  # reference final answer y*
  subject: str  # MATH500 `subject` / MATH `type` ("" when absent)
  level: int | None  # 1..5; None when absent or "Level ?"
  unique_id: str  # MATH500 `unique_id`, else the file location of the row


def _level(value, where: str) -> int | None:
  if value is None:
    return None
  if isinstance(value, bool):
    raise RecordError(f"{where}: field 'level' must be 1-5 or 'Level N', got {value!r}")
  if isinstance(value, int):
    if not 1 <= value <= 5:
      raise RecordError(f"{where}: field 'level' must be 1-5, got {value}")
    return value
  if isinstance(value, str):
    m = _LEVEL_RE.fullmatch(value.strip())
    # MATH has a few "Level ?" rows: their level is unknown, not malformed.
    return int(m.group(1)) if m else None
  raise RecordError(f"{where}: field 'level' must be 1-5 or 'Level N', got {value!r:.80}")


def parse_record(record: dict, where: str) -> MathExample:
  problem = field(record, "problem", str, where)
  solution = field(record, "solution", str, where, optional=True) or ""
  answer = field(record, "answer", (str, int), where, optional=True)
  if answer is None:
    answer = answers.extract_boxed(solution)
    if answer is None:
      raise RecordError(f"{where}: no field 'answer' and no \\boxed{{}} in 'solution'")
  subject = field(record, "subject", str, where, optional=True)
  if subject is None:
    subject = field(record, "type", str, where, optional=True) or ""
  return MathExample(
      problem=problem,
      solution=solution,
      answer=str(answer).strip(),
      subject=subject,
      level=_level(record.get("level"), where),
      unique_id=field(record, "unique_id", str, where, optional=True) or where,
  )


def read_math(path: str | os.PathLike) -> Iterator[MathExample]:
  """Stream MATH or MATH500 examples from a .jsonl, .json or .parquet file."""
  for where, record in iter_records(path):
    yield parse_record(record, where)
