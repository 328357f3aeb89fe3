"""ProcessBench (Zheng et al., arXiv 2412.06559): reading, writing and step items.

Record fields, as published (Qwen/ProcessBench): id, generator, problem,
steps (list of strings), final_answer_correct, label (0-indexed earliest
wrong step, -1 when every step is right). The subset (gsm8k, math,
olympiadbench, omnimath) is the file it came from; a `subset` or
`data_type` field, when present, takes precedence.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence

from scorejax import files
from scorejax.tasks.records import RecordError, field, iter_records, string_list

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")


@dataclasses.dataclass(frozen=True)
class LabelledSolution:
  """A solution split into steps, with the ProcessBench label."""

  id: str
  generator: str
  problem: str
  steps: tuple[str, ...]
  final_answer_correct: bool | None  # None where the source does not say
  label: int  # 0-indexed earliest wrong step, -1 when all are right
  subset: str

  def to_record(self) -> dict:
    """The published field names (plus `subset`), ready for JSON."""
    return {
        "id": self.id,
        "generator": self.generator,
        "problem": self.problem,
        "steps": list(self.steps),
        "final_answer_correct": self.final_answer_correct,
        "label": self.label,
        "subset": self.subset,
    }


def check_label(label: int, num_steps: int, where: str) -> None:
  if not -1 <= label < num_steps:
    raise RecordError(
        f"{where}: label {label} is not -1 or a 0-indexed step of the {num_steps} steps"
    )


def parse_record(record: dict, where: str, default_subset: str) -> LabelledSolution:
  steps = string_list(record, "steps", where)
  label = field(record, "label", int, where)
  check_label(label, len(steps), where)
  subset = field(record, "subset", str, where, optional=True)
  if subset is None:
    subset = field(record, "data_type", str, where, optional=True)
  record_id = field(record, "id", (str, int), where)
  return LabelledSolution(
      id=str(record_id),
      generator=field(record, "generator", str, where, optional=True) or "",
      problem=field(record, "problem", str, where),
      steps=steps,
      final_answer_correct=field(record, "final_answer_correct", bool, where, optional=True),
      label=label,
      subset=subset or default_subset,
  )


def read_processbench(
    path: str | os.PathLike, subset: str | None = None
) -> Iterator[LabelledSolution]:
  """Stream a ProcessBench file (.jsonl, .json or .parquet).

  `subset` defaults to the file's name without extension (gsm8k.jsonl ->
  "gsm8k"), as the published files are one subset each.
  """
  default = subset or os.path.splitext(os.path.basename(os.fspath(path)))[0]
  for where, record in iter_records(path):
    yield parse_record(record, where, default)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
  """Write records as JSON Lines; returns how many were written."""
  lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
  files.write_text(os.fspath(path), "".join(lines))
  return len(lines)


@dataclasses.dataclass(frozen=True)
class StepItem:
  """One step judgement to make: is `step` right after `previous_steps`?"""

  problem: str
  previous_steps: tuple[str, ...]
  step: str
  correct: bool
  subset: str


def step_items(solution: LabelledSolution) -> list[StepItem]:
  """The steps whose correctness the label decides, as SPC evaluates critics.

  Steps before the label are right and the labelled step is wrong; steps
  after the earliest error are not labelled and yield nothing. With label
  -1 every step is right.
  """
  last = len(solution.steps) - 1 if solution.label == -1 else solution.label
  return [
      StepItem(
          problem=solution.problem,
          previous_steps=solution.steps[:i],
          step=solution.steps[i],
          correct=i != solution.label,
          subset=solution.subset,
      )
      for i in range(last + 1)
  ]


def by_subset(solutions: Sequence[LabelledSolution]) -> dict[str, list[LabelledSolution]]:
  out: dict[str, list[LabelledSolution]] = {}
  for s in solutions:
    out.setdefault(s.subset, []).append(s)
  return out
