"""Error makers and noisy writers: wrong lines of known types, continuations, labelled solutions.

Error types (`ERROR_TYPES`) rewrite one correct line into a wrong one:
  wrong_result    the operation is right, the result is off (12*3=35)
  wrong_operand   the problem's operand is misread, arithmetic consistent (12*4=48)
  wrong_operator  another operator is used, arithmetic consistent (12+3=15)
  wrong_previous  the previous result is miscopied, arithmetic consistent (13*3=39)
  dropped_step    the operation is skipped: the next one is applied (12-4=8),
                  or the answer comes early (Answer: 12)
  wrong_answer    the answer line misstates the last result (Answer: 33)
  dropped_carry   the carry of + (or the borrow of -) out of the units digit is
                  not applied (18+14=22, 42-17=35): the classic systematic bug
                  of written arithmetic

The noisy writers make random slips (`error_rate`: one wrong line of a random
type) and can also have a habit (`carry_slip_rate`: every step that carries or
borrows drops it with that probability). A model trained on a habit above one
half reproduces it under greedy decoding, yet has seen the right carries too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from scorejax.rewards import answers
from scorejax.tasks.arith.check import (AnswerLine, Step, answer_line, dropped_carry_line, earliest_error,
                                        format_solution, parse_line, running_value, solution_lines, step_line)
from scorejax.tasks.arith.problems import OPS, ArithProblem, apply_op

ERROR_TYPES = (
    "wrong_result",
    "wrong_operand",
    "wrong_operator",
    "wrong_previous",
    "dropped_step",
    "wrong_answer",
    "dropped_carry",
)

# Small slips, so that a wrong line is plausible rather than absurd.
_SLIPS = (-10, -2, -1, 1, 2, 10)
_OPERAND_SLIPS = (-2, -1, 1, 2)


def _choice(rng: np.random.Generator, options: Sequence):
  return options[int(rng.integers(len(options)))]


def _corruptions(
    problem: ArithProblem, previous_lines: Sequence[str], error_type: str
) -> list[str]:
  """Every wrong line of one error type at this position (empty: not applicable)."""
  i = len(previous_lines)
  k = len(problem.ops)
  if i > k:
    return []
  left = running_value(problem, previous_lines)
  if i == k:
    if error_type != "wrong_answer":
      return []
    return [answer_line(left + d) for d in _SLIPS if left + d >= 0]
  op, n = problem.ops[i]
  right = apply_op(op, left, n)
  if error_type == "wrong_result":
    out = [step_line(left, op, n, right + d) for d in _SLIPS if right + d >= 0]
  elif error_type == "wrong_operand":
    out = [step_line(left, op, n + d) for d in _OPERAND_SLIPS if n + d >= 1]
  elif error_type == "wrong_operator":
    out = [step_line(left, other, n) for other in OPS if other != op]
  elif error_type == "wrong_previous":
    out = [step_line(left + d, op, n) for d in _SLIPS if left + d >= 0]
  elif error_type == "dropped_step":
    if i + 1 < k:
      out = [step_line(left, *problem.ops[i + 1])]
    else:
      out = [answer_line(left)]
  elif error_type == "dropped_carry":
    slipped = dropped_carry_line(left, op, n)
    out = [slipped] if slipped else []
  elif error_type == "wrong_answer":
    out = []
  else:
    raise ValueError(f"unknown error type {error_type!r}; expected one of {ERROR_TYPES}")
  expected = parse_line(step_line(left, op, n))
  # Keep only lines the checker rejects and no negative numbers the task never shows.
  return [
      line for line in out if parse_line(line) != expected and "=-" not in line and line[0] != "-"
  ]


def error_type_of(problem: ArithProblem, previous_lines: Sequence[str], line: str) -> str | None:
  """The error type of a written line (None when it is right), read from the first part that differs from the
  right line: the next operation written in its place ("dropped_step"), the value it starts from
  ("wrong_previous"), the operator, the operand, or the result (a dropped carry or borrow, or another slip);
  "wrong_answer" for a wrong answer line; "other" for a line that cannot be read, the answer written before its
  place, a line after the answer, and a computation line in the answer's place."""
  i, k = len(previous_lines), len(problem.ops)
  written = parse_line(line)
  if i > k or written is None:
    return "other"
  left = running_value(problem, previous_lines)
  if i == k:
    return None if written == AnswerLine(left) else "wrong_answer" if isinstance(written, AnswerLine) else "other"
  op, n = problem.ops[i]
  next_line = step_line(left, *problem.ops[i + 1]) if i + 1 < k else answer_line(left)
  if written == parse_line(next_line):
    return "dropped_step"
  if isinstance(written, AnswerLine):
    return "other"
  for error_type, differs in (("wrong_previous", written.left != left), ("wrong_operator", written.op != op),
                              ("wrong_operand", written.right != n)):
    if differs:
      return error_type
  if written.result == apply_op(op, left, n):
    return None
  return "dropped_carry" if written == parse_line(dropped_carry_line(left, op, n) or "") else "wrong_result"


def applicable_error_types(problem: ArithProblem, previous_lines: Sequence[str]) -> tuple[str, ...]:
  return tuple(t for t in ERROR_TYPES if _corruptions(problem, previous_lines, t))


def corrupt_step(
    problem: ArithProblem,
    previous_lines: Sequence[str],
    error_type: str,
    rng: np.random.Generator,
) -> str:
  """Rewrite the right line after `previous_lines` into a wrong one of `error_type`."""
  if error_type not in ERROR_TYPES:
    raise ValueError(f"unknown error type {error_type!r}; expected one of {ERROR_TYPES}")
  options = _corruptions(problem, previous_lines, error_type)
  if not options:
    raise ValueError(
        f"error type {error_type!r} does not apply to line {len(previous_lines)} of "
        f"{problem.key!r}; applicable: {applicable_error_types(problem, previous_lines)}"
    )
  return _choice(rng, options)


def _next_op_index(problem: ArithProblem, previous_lines: Sequence[str]) -> int | None:
  """Which operation a continuation applies next; None once an answer line is written.

  A line that applies the operation after the expected one is read as a
  dropped step, so a continuation does not redo the skipped operation.
  """
  j = 0
  ops = problem.ops
  for line in previous_lines:
    parsed = parse_line(line)
    if isinstance(parsed, AnswerLine):
      return None
    if (
        isinstance(parsed, Step)
        and j + 1 < len(ops)
        and (parsed.op, parsed.right) == ops[j + 1]
        and (parsed.op, parsed.right) != ops[j]
    ):
      j += 2
    else:
      j += 1
  return j


def continue_solution(
    problem: ArithProblem,
    previous_lines: Sequence[str],
    rng: np.random.Generator | None = None,
    step_error_rate: float = 0.0,
    error_types: Sequence[str] = ERROR_TYPES,
    carry_slip_rate: float = 0.0,
    slip_ops: str = "+-",
) -> tuple[str, ...]:
  """Complete a solution from a prefix, trusting the results written in it.

  Each new step of an operation in `slip_ops` that carries (+) or borrows (-)
  drops it with probability `carry_slip_rate`; each new line is then
  corrupted with probability `step_error_rate`, with a type drawn from the
  applicable `error_types` (either needs `rng`). A prefix that already ends in an answer line is
  returned as it is.
  """
  if (step_error_rate > 0.0 or carry_slip_rate > 0.0) and rng is None:
    raise ValueError("continue_solution: step_error_rate > 0 or carry_slip_rate > 0 needs an rng")
  lines = list(previous_lines)
  j = _next_op_index(problem, lines)
  if j is None:
    return tuple(lines)
  value = running_value(problem, lines)
  while True:
    if j < len(problem.ops):
      op, n = problem.ops[j]
      line = step_line(value, op, n)
      slipped = dropped_carry_line(value, op, n) if carry_slip_rate > 0.0 and op in slip_ops else None
      if slipped and rng.random() < carry_slip_rate:
        line = slipped
    else:
      line = answer_line(value)
    if step_error_rate > 0.0 and rng.random() < step_error_rate:
      kinds = [t for t in error_types if _corruptions(problem, lines, t)]
      if kinds:
        line = corrupt_step(problem, lines, _choice(rng, kinds), rng)
    lines.append(line)
    parsed = parse_line(line)
    if isinstance(parsed, AnswerLine):
      return tuple(lines)
    # After a dropped step the continuation moves past the skipped operation.
    j = _next_op_index(problem, lines)
    value = parsed.result


# ------------------------------------------------------------------ writers


@dataclasses.dataclass(frozen=True)
class ArithSolution:
  """A written solution with its exact label."""

  problem: ArithProblem
  lines: tuple[str, ...]
  label: int  # earliest wrong line, -1 when all are right
  error_type: str | None  # the injected error, None for a clean solution

  @property
  def text(self) -> str:
    return format_solution(self.lines)

  @property
  def answer_correct(self) -> bool:
    return answers.extract_arith_answer(self.text) == self.problem.answer


def inject_error(
    problem: ArithProblem,
    index: int,
    error_type: str,
    rng: np.random.Generator,
    lines: Sequence[str] | None = None,
    carry_slip_rate: float = 0.0,
    slip_ops: str = "+-",
) -> ArithSolution:
  """`lines` (default: the reference solution) up to line `index`, wrong there with
  `error_type`, continued from it with carries slipping at `carry_slip_rate` (in `slip_ops`)."""
  prefix = tuple(solution_lines(problem) if lines is None else lines)[:index]
  bad = corrupt_step(problem, prefix, error_type, rng)
  written = continue_solution(problem, prefix + (bad,), rng, carry_slip_rate=carry_slip_rate, slip_ops=slip_ops)
  return _labelled(problem, written, {index: error_type})


def write_solution(
    problem: ArithProblem,
    rng: np.random.Generator,
    error_rate: float,
    error_types: Sequence[str] = ERROR_TYPES,
    carry_slip_rate: float = 0.0,
    slip_ops: str = "+-",
) -> ArithSolution:
  """A noisy solver: with probability `error_rate` the solution has a random error.

  The solver first writes its own solution, in which every step that carries
  or borrows drops it with probability `carry_slip_rate` (a habit: 0 writes
  the reference solution), in the operations of `slip_ops` ("+": carries
  only). The random error's line is uniform over the lines where some allowed
  type applies, the type uniform over those that apply there; the rest of the
  solution follows every wrong line consistently, as a solver that trusts
  itself would. `error_type` names the earliest error.
  """
  if not 0.0 <= error_rate <= 1.0 or not 0.0 <= carry_slip_rate <= 1.0:
    raise ValueError(f"error_rate and carry_slip_rate must be in [0, 1], got {error_rate}, {carry_slip_rate}")
  unknown = set(error_types) - set(ERROR_TYPES)
  if unknown:
    raise ValueError(f"unknown error types {sorted(unknown)}; expected some of {ERROR_TYPES}")
  if set(slip_ops) - {"+", "-"}:
    raise ValueError(f"slip_ops={slip_ops!r}: the habit drops carries of '+' and borrows of '-'; expected a "
                     "subset of '+-'")
  own = continue_solution(problem, (), rng, carry_slip_rate=carry_slip_rate, slip_ops=slip_ops)
  if rng.random() >= error_rate:
    return _labelled(problem, own, {})
  sites = []
  for i in range(len(own)):
    kinds = [t for t in error_types if _corruptions(problem, own[:i], t)]
    if kinds:
      sites.append((i, kinds))
  if not sites:
    return _labelled(problem, own, {})
  index, kinds = _choice(rng, sites)
  return inject_error(problem, index, _choice(rng, kinds), rng, own, carry_slip_rate, slip_ops)


def _labelled(problem: ArithProblem, lines: tuple[str, ...], injected: dict[int, str]) -> ArithSolution:
  """The solution with its label; an earliest error that was not injected is a dropped carry."""
  label = earliest_error(problem, lines)
  return ArithSolution(problem, lines, label, None if label < 0 else injected.get(label, "dropped_carry"))


@dataclasses.dataclass(frozen=True)
class TwoAttempt:
  """A first attempt and a correct second attempt: Pair-SFT / STaR style data."""

  first: ArithSolution
  second: ArithSolution


def two_attempt_examples(
    problems: Sequence[ArithProblem],
    rng: np.random.Generator,
    first_error_rate: float = 0.5,
    error_types: Sequence[str] = ERROR_TYPES,
    carry_slip_rate: float = 0.0,
) -> list[TwoAttempt]:
  """For each problem a (noisy first, correct second) pair.

  A share `first_error_rate` of the first attempts carries a random error,
  and their carries slip at `carry_slip_rate` (see `write_solution`); the
  second attempt is the reference solution, which repeats a right first
  attempt, so that the model also learns not to break a correct solution.
  """
  out = []
  for problem in problems:
    first = write_solution(problem, rng, first_error_rate, error_types, carry_slip_rate)
    second = ArithSolution(problem, solution_lines(problem), -1, None)
    out.append(TwoAttempt(first, second))
  return out


