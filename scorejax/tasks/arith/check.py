"""Solution lines and the exact checker: parsing, the right next line, labels, rewards.

A solution writes one step per line, each applying the next operation to the
result written on the line before, then the final answer line:

    7+5=12
    12*3=36
    36-4=32
    Answer: 32

Every line is a step (the answer line too), so the exact checker labels a
solution the way ProcessBench does: the 0-indexed earliest wrong line, or -1.
A line is right when it equals `expected_line(problem, previous_lines)`: the
problem's next operation applied to the previous line's written result, with
exact arithmetic; a critic can re-check it from that line and the one before.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from scorejax.rewards import answers
from scorejax.tasks.arith.problems import ArithProblem, apply_op

def carry_slip(op: str, left: int, right: int) -> int:
  """What dropping the units digit's carry (+) or borrow (-) adds to the result; 0 without one.

  18+14: 8+4 carries, so 22 is written for 32 (-10); 42-17: 2-7 borrows, so
  35 is written for 25 (+10). A negative left value (a noisy solution's) has
  no units digit to carry from.
  """
  if left < 0:
    return 0
  if op == "+" and left % 10 + right % 10 >= 10:
    return -10
  if op == "-" and left % 10 < right % 10:
    return 10
  return 0


def dropped_carry_line(left: int, op: str, right: int) -> str | None:
  """The step written with its carry or borrow dropped; None when it has neither."""
  slip = carry_slip(op, left, right)
  return step_line(left, op, right, apply_op(op, left, right) + slip) if slip else None




# Numbers are capped at 18 digits: longer ones are never right here, and
# Python refuses to parse integers past 4,300 digits.
_NUM = r"-?\d{1,18}"
_STEP_RE = re.compile(rf"\s*({_NUM})\s*([+\-*])\s*(\d{{1,18}})\s*=\s*({_NUM})\s*")
_ANSWER_RE = re.compile(rf"\s*Answer:\s*({_NUM})\s*")


@dataclasses.dataclass(frozen=True)
class Step:
  left: int
  op: str
  right: int
  result: int


@dataclasses.dataclass(frozen=True)
class AnswerLine:
  value: int


def parse_line(line: str) -> Step | AnswerLine | None:
  """A computation line, the answer line, or None when the line is neither."""
  m = _STEP_RE.fullmatch(line)
  if m:
    return Step(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))
  m = _ANSWER_RE.fullmatch(line)
  if m:
    return AnswerLine(int(m.group(1)))
  return None


def step_line(left: int, op: str, right: int, result: int | None = None) -> str:
  if result is None:
    result = apply_op(op, left, right)
  return f"{left}{op}{right}={result}"


def answer_line(value: int) -> str:
  return f"Answer: {value}"


def solution_lines(problem: ArithProblem) -> tuple[str, ...]:
  values = problem.values
  lines = [step_line(values[i], op, n) for i, (op, n) in enumerate(problem.ops)]
  return tuple(lines) + (answer_line(problem.answer),)


def format_solution(lines: Sequence[str]) -> str:
  return "\n".join(lines)


def split_lines(text: str) -> tuple[str, ...]:
  """The steps of a solution text: its non-blank lines, stripped."""
  return tuple(line.strip() for line in text.split("\n") if line.strip())


def running_value(problem: ArithProblem, previous_lines: Sequence[str]) -> int:
  """The value the next line starts from: the last written result when there is one."""
  i = len(previous_lines)
  if i == 0:
    return problem.start
  last = parse_line(previous_lines[-1])
  if isinstance(last, Step):
    return last.result
  # A garbled previous line gives nothing to follow: fall back to the true chain.
  return problem.values[min(i, len(problem.ops))]


def expected_line(problem: ArithProblem, previous_lines: Sequence[str]) -> str | None:
  """The only right line after `previous_lines`, or None past the answer line."""
  i = len(previous_lines)
  k = len(problem.ops)
  if i > k:
    return None
  left = running_value(problem, previous_lines)
  if i < k:
    op, n = problem.ops[i]
    return step_line(left, op, n)
  return answer_line(left)


def carries(problem: ArithProblem, previous_lines: Sequence[str]) -> bool:
  """Does the right line after `previous_lines` carry or borrow in its units digit (where a carry habit slips)?"""
  expected = parse_line(expected_line(problem, previous_lines) or "")
  return isinstance(expected, Step) and carry_slip(expected.op, expected.left, expected.right) != 0


def check_step(problem: ArithProblem, previous_lines: Sequence[str], line: str) -> bool:
  """Is `line` right, given the problem and the lines written before it?"""
  expected = expected_line(problem, previous_lines)
  return expected is not None and parse_line(line) == parse_line(expected)


def earliest_error(problem: ArithProblem, lines: Sequence[str]) -> int:
  """ProcessBench label: index of the first wrong line, -1 when every line is right."""
  lines = tuple(lines)
  for i, line in enumerate(lines):
    if not check_step(problem, lines[:i], line):
      return i
  return -1


@dataclasses.dataclass(frozen=True)
class SolutionCheck:
  """Everything the exact checker knows about one solution."""

  lines: tuple[str, ...]
  label: int  # earliest wrong line, -1 when none
  final_answer: int | None  # value of the last Answer: line, None when there is none
  answer_correct: bool
  complete: bool  # the last line is an answer line


def check_solution(problem: ArithProblem, solution: str | Sequence[str]) -> SolutionCheck:
  lines = split_lines(solution) if isinstance(solution, str) else tuple(solution)
  final = answers.extract_arith_answer(format_solution(lines))
  complete = bool(lines) and isinstance(parse_line(lines[-1]), AnswerLine)
  return SolutionCheck(
      lines=lines,
      label=earliest_error(problem, lines),
      final_answer=final,
      answer_correct=final is not None and final == problem.answer,
      complete=complete,
  )


def carry_profile(texts: Sequence[str]) -> dict[str, dict[str, float]]:
  """How the + and - lines of some solutions were computed, each judged on its own operands.

  Lines whose step carries or borrows (`carry_slip` != 0; 2-3 borrows too) and
  plain ones are counted apart, as right, carry dropped (the habit's result:
  4+8=2, 12-3=19) or otherwise wrong. A model's habit and its arithmetic show
  here even where a wrong earlier line has already sunk the answer.
  {"carry": {"lines": n, "right": share, "dropped": share, "other": share}, "plain": {...}}
  """
  counts = {kind: dict(right=0, dropped=0, other=0) for kind in ("carry", "plain")}
  for text in texts:
    for line in split_lines(text):
      step = parse_line(line)
      if not isinstance(step, Step) or step.op == "*":
        continue
      right = apply_op(step.op, step.left, step.right)
      slip = carry_slip(step.op, step.left, step.right)
      outcome = "right" if step.result == right else "dropped" if slip and step.result == right + slip else "other"
      counts["carry" if slip else "plain"][outcome] += 1
  out = {}
  for kind, c in counts.items():
    n = sum(c.values())
    out[kind] = dict(lines=n, **{k: v / n if n else 0.0 for k, v in c.items()})
  return out


def reward(problem: ArithProblem, text: str) -> float:
  """r(y, y*): 1.0 when the last 'Answer:' line states the right integer."""
  return float(answers.extract_arith_answer(text) == problem.answer)


