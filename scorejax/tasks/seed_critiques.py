"""DeepCritic-style seed critiques from local files: the SFT data of a critic on real problems.

One record per solution (.jsonl, .json or .parquet):

  {"id": "...",                      optional
   "problem": "...",
   "steps": ["...", "..."],          the solution, one string per step
   "critique": "... \\boxed{2}",     step-wise critique ending with the earliest wrong step, numbered from 1
   "label": 1}                       0-indexed earliest wrong step, -1 when every step is right

A missing field or a label that names no step stops the reader with the
file, line and field. DeepCritic keeps a seed critique only when its final
judgement matches the label; `agrees_with_label` is that filter (steps
numbered from `first_index` in the critique).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from scorejax.tasks import templates
from scorejax.tasks.processbench import check_label
from scorejax.tasks.records import RecordError, field, iter_records, string_list


@dataclasses.dataclass(frozen=True)
class SeedCritique:
  id: str
  problem: str
  steps: tuple[str, ...]
  critique: str
  label: int  # 0-indexed earliest wrong step, -1 when all are right
  where: str  # file:line it came from


def read_seed_critiques(path: str | os.PathLike) -> Iterator[SeedCritique]:
  for i, (where, record) in enumerate(iter_records(path)):
    steps = string_list(record, "steps", where)
    if not steps:
      raise RecordError(f"{where}: field 'steps' is empty; a solution has at least one step")
    label = field(record, "label", int, where)
    check_label(label, len(steps), where)
    record_id = field(record, "id", (str, int), where, optional=True)
    yield SeedCritique(id=str(i) if record_id is None else str(record_id), problem=field(record, "problem", str, where),
                       steps=steps, critique=field(record, "critique", str, where), label=label, where=where)


def agrees_with_label(seed: SeedCritique, first_index: int = 1) -> bool:
  """The critique's boxed earliest-error step equals the label (an unparseable one never does)."""
  return templates.parse_critique_index(seed.critique, len(seed.steps), first_index) == seed.label
