"""Reference outputs written from the exact checker: critiques and ProcessBench records."""

from __future__ import annotations

from collections.abc import Sequence

from scorejax.tasks import processbench, templates
from scorejax.tasks.arith.check import check_step, earliest_error, expected_line
from scorejax.tasks.arith.noise import ArithSolution
from scorejax.tasks.arith.problems import ArithProblem

def step_critique(problem: ArithProblem, previous_lines: Sequence[str], line: str) -> str:
  """Reference step-critic output (SPC format): the expected line, then the verdict."""
  expected = expected_line(problem, previous_lines)
  shown = expected if expected is not None else "END"
  return f"{shown}\n{templates.format_step_verdict(check_step(problem, previous_lines, line))}"


def solution_critique(
    problem: ArithProblem, lines: Sequence[str], first_index: int = 1
) -> str:
  """Reference whole-solution critique (DeepCritic style).

  Each line in turn is re-derived and judged, stopping at the first wrong
  one; the boxed index counts from `first_index` (-1 when all are right).
  """
  lines = tuple(lines)
  out = []
  for i, line in enumerate(lines):
    expected = expected_line(problem, lines[:i])
    ok = check_step(problem, lines[:i], line)
    shown = expected if expected is not None else "END"
    out.append(f"{i + first_index}: {shown} {'ok' if ok else 'wrong'}")
    if not ok:
      break
  out.append(templates.format_critique_index(earliest_error(problem, lines), first_index))
  return "\n".join(out)


def processbench_record(
    solution: ArithSolution, record_id: str, generator: str, subset: str = "arith"
) -> dict:
  """One labelled solution in ProcessBench's fields (plus `subset`)."""
  return {
      "id": record_id,
      "generator": generator,
      "problem": solution.problem.text,
      "steps": list(solution.lines),
      "final_answer_correct": solution.answer_correct,
      "label": earliest_error(solution.problem, solution.lines),
      "subset": subset,
  }


def export_processbench(
    path,
    solutions: Sequence[ArithSolution],
    generator: str = "arith-noisy-writer",
    id_prefix: str = "arith",
) -> int:
  """Write labelled solutions as ProcessBench JSONL; returns the number of records."""
  return processbench.write_jsonl(
      path,
      (processbench_record(s, f"{id_prefix}-{i}", generator) for i, s in enumerate(solutions)),
  )
