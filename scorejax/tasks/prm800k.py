"""PRM800K (Lightman et al., "Let's Verify Step by Step"): step-rated solutions.

Published rows (openai/prm800k, phase{1,2}_{train,test}.jsonl) look like

  {"labeler": ..., "timestamp": ..., "generation": 9,
   "is_quality_control_question": false, "is_initial_screening_question": false,
   "question": {"problem": ..., "ground_truth_answer": ...,
                "pre_generated_steps": [...], "pre_generated_answer": ...},
   "label": {"steps": [{"completions": [{"text": ..., "rating": -1 | 0 | 1 | null,
                                          "flagged": ...}],
                        "human_completion": null | {"text": ..., "rating": ...},
                        "chosen_completion": 0 | null}, ...],
             "total_time": ..., "finish_reason": "solution" | "found_error" | ...}}

The labelled solution is the path the labeler followed: at each step the
chosen completion, else the human completion, else the only completion, else
(where the labeler stopped at an error) the first completion rated -1. Its label is the first
step rated -1 on that path (ProcessBench semantics), or -1. Rating 0
("neutral") counts as correct unless `neutral_is_error`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

from scorejax.rewards import answers
from scorejax.tasks.processbench import LabelledSolution
from scorejax.tasks.records import RecordError, field, iter_records

DEFAULT_FINISH_REASONS = ("solution", "found_error")  # rows whose labels are complete


@dataclasses.dataclass(frozen=True)
class Prm800kSolution:
  """One labelled path through a PRM800K row."""

  solution: LabelledSolution
  ratings: tuple[int | None, ...]  # labeler rating of each step on the path
  finish_reason: str
  ground_truth_answer: str | None
  # At each step of the path, every rated alternative the labeler saw there ((text, rating), the path's own
  # step among them): a step rated 1 and one rated -1 after the same prefix are a right step and a wrong one.
  options: tuple[tuple[tuple[str, int | None], ...], ...] = ()


def _completion(entry, where: str, what: str) -> tuple[str, int | None]:
  if not isinstance(entry, dict):
    raise RecordError(f"{where}: {what} must be an object, got {entry!r:.80}")
  text = field(entry, "text", str, f"{where}: {what}")
  rating = field(entry, "rating", int, f"{where}: {what}", optional=True)
  if rating is not None and rating not in (-1, 0, 1):
    raise RecordError(f"{where}: {what} rating must be -1, 0 or 1, got {rating}")
  return text, rating


def _path(steps: Sequence, where: str) -> tuple[list[str], list[int | None], list[tuple]]:
  texts, ratings, options = [], [], []
  for i, step in enumerate(steps):
    at = f"{where}: label.steps[{i}]"
    if not isinstance(step, dict):
      raise RecordError(f"{at}: must be an object, got {step!r:.80}")
    completions = field(step, "completions", list, at, optional=True) or []
    chosen = field(step, "chosen_completion", int, at, optional=True)
    human = step.get("human_completion")
    rated = [_completion(c, at, f"completions[{j}]") for j, c in enumerate(completions)]
    seen = rated + ([_completion(human, at, "human_completion")] if human is not None else [])
    if chosen is not None:
      if not 0 <= chosen < len(completions):
        raise RecordError(
            f"{at}: chosen_completion {chosen} but only {len(completions)} completions"
        )
      text, rating = _completion(completions[chosen], at, f"completions[{chosen}]")
    elif human is not None:
      text, rating = _completion(human, at, "human_completion")
    else:
      errors = [(t, r) for t, r in rated if r == -1]
      if len(rated) == 1:
        text, rating = rated[0]  # nothing to choose between: the one rated step is the path
      elif errors:
        text, rating = errors[0]
      else:
        break  # the labeler stopped among alternatives without choosing: the path ends
    texts.append(text)
    ratings.append(rating)
    options.append(tuple(r for r in seen if r[1] is not None))
    if rating == -1:
      break  # nothing after the first error is part of the labelled path
  return texts, ratings, options


def parse_row(
    record: dict,
    where: str,
    neutral_is_error: bool = False,
    subset: str = "prm800k",
    check_answers: bool = True,
) -> Prm800kSolution:
  """One row; `check_answers` compares pre_generated_answer with the ground truth."""
  question = field(record, "question", dict, where)
  label = field(record, "label", dict, where)
  problem = field(question, "problem", str, f"{where}: question")
  steps = field(label, "steps", list, f"{where}: label")
  finish_reason = field(label, "finish_reason", str, f"{where}: label")
  texts, ratings, options = _path(steps, where)
  bad = {-1, 0} if neutral_is_error else {-1}
  first_error = next((i for i, r in enumerate(ratings) if r in bad), -1)
  truth = field(question, "ground_truth_answer", str, f"{where}: question", optional=True)
  given = field(question, "pre_generated_answer", str, f"{where}: question", optional=True)
  final_correct = None
  if check_answers and truth is not None and given is not None:
    final_correct = answers.answers_equivalent(given, truth)
  labeler = field(record, "labeler", str, where, optional=True) or ""
  timestamp = field(record, "timestamp", str, where, optional=True) or where
  solution = LabelledSolution(
      id=f"{labeler}:{timestamp}",
      generator=str(record.get("generation", "")),
      problem=problem,
      steps=tuple(texts),
      final_answer_correct=final_correct,
      label=first_error,
      subset=subset,
  )
  return Prm800kSolution(solution, tuple(ratings), finish_reason, truth, tuple(options))


def read_prm800k(
    path: str | os.PathLike,
    finish_reasons: Sequence[str] = DEFAULT_FINISH_REASONS,
    include_screening: bool = False,
    neutral_is_error: bool = False,
    subset: str = "prm800k",
    check_answers: bool = True,
) -> Iterator[Prm800kSolution]:
  """Stream labelled paths from a PRM800K .jsonl / .parquet file.

  Rows whose labeler gave up or flagged the problem (finish_reason not in
  `finish_reasons`), quality-control and screening rows (unless
  `include_screening`) and rows with an empty path are skipped.
  `check_answers=False` skips the math-verify comparison that sets
  `final_answer_correct` (then None), e.g. off the main thread.
  """
  for where, record in iter_records(path):
    screening = record.get("is_quality_control_question") or record.get(
        "is_initial_screening_question"
    )
    if screening and not include_screening:
      continue
    row = parse_row(record, where, neutral_is_error, subset, check_answers)
    if row.finish_reason in finish_reasons and row.solution.steps:
      yield row
