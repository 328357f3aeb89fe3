"""Deliberate step-wise critiques of the built-in task (DeepCritic format), their writer and parser.

A critique judges the numbered steps in turn, each from two angles, stops at
the first wrong step and ends with that step's number (from 1), or -1:

    1: 7+5=12 ; 12-5=7 ok ; right
    2: 12+3=15 ; 16-4=12 ok ; differ: wrong
    \\boxed{2}

  redo   the step recomputed from the problem and the line before it (the
         right line, `check.expected_line`);
  back   the written line checked by the inverse operation: its result
         undone by its operand must give the previous line's result
         (`12-5=7 ok`); the answer line is checked against the last result
         (`last 12 ok`). A line that cannot be read fails it (`unreadable no`).
  verdict  `right` when the redo equals the written line; `wrong` when both
         angles reject it; `differ: wrong` when the back check holds but the
         redo does not (a misread operand or operator, a skipped step: the
         line's arithmetic is consistent, but it does not follow the
         problem), so the disagreement is named and settled by the redo.

`write_step_judgement` is SPC's single-step form: the same two angles for
one line given the lines before it, ending in <Answer>Correct</Answer> or
<Answer>Incorrect</Answer>.

This is the built-in analog of DeepCritic's initial critique + in-depth
re-check + merged judgement (arXiv 2505.00662, Sec. 3.1).

The seed annotator (`AnnotatorConfig`) writes critiques with controllable
mistakes, as the paper's seed critiques come from a larger model that is
not always right: its redo slips (`slip_rate`: a result off by 1, 2 or 10)
and it is blind to carries (`carry_blind_rate`: it drops the carry or
borrow of a carrying step in its own redo, the writers' habit). Either
makes it misjudge steps; `annotate` keeps only critiques whose final index
equals the label (the paper's filter), so the kept critiques end right but
may contain a wrong redo, and some kinds of error (carries) are kept less
often than others.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from scorejax.tasks import templates
from scorejax.tasks.arith.check import (AnswerLine, Step, carry_slip, check_step, earliest_error, expected_line,
                                        parse_line, running_value, step_line)
from scorejax.tasks.arith.problems import ArithProblem, apply_op

RIGHT, WRONG, DIFFER = "right", "wrong", "differ: wrong"
_ANNOTATOR_SLIPS = (-10, -2, -1, 1, 2, 10)


def _inverse(line: str, previous: int) -> tuple[str, bool]:
  """The back check of a written line: (what is shown, whether it holds)."""
  parsed = parse_line(line)
  if isinstance(parsed, AnswerLine):
    return f"last {previous}", parsed.value == previous
  if not isinstance(parsed, Step):
    return "unreadable", False
  if parsed.op == "*":
    if parsed.right == 0 or parsed.result % parsed.right:
      return f"{parsed.result}/{parsed.right}=?", False
    undone = parsed.result // parsed.right
    return f"{parsed.result}/{parsed.right}={undone}", undone == previous
  op = "-" if parsed.op == "+" else "+"
  undone = apply_op(op, parsed.result, parsed.right)
  return f"{parsed.result}{op}{parsed.right}={undone}", undone == previous


def _judge(redo: str, line: str, previous: int) -> tuple[str, bool]:
  """'redo ; back ok|no ; verdict' for one written line, and whether it judges the line right."""
  back, holds = _inverse(line, previous)
  right = parse_line(redo) == parse_line(line)
  verdict = RIGHT if right else DIFFER if holds else WRONG
  return f"{redo} ; {back} {'ok' if holds else 'no'} ; {verdict}", right


def critique_step(k: int, redo: str, line: str, previous: int) -> tuple[str, bool]:
  """One step's critique line (numbered k) and whether it judges the step right."""
  text, right = _judge(redo, line, previous)
  return f"{k}: {text}", right


def write_critique(problem: ArithProblem, lines: Sequence[str], redo_of=None) -> str:
  """A deliberate critique of `lines`; `redo_of(i, right_line) -> line` lets an annotator get redos wrong.

  With the default (exact redos) the boxed index is `earliest_error(problem, lines)` + 1, or -1.
  """
  lines = tuple(lines)
  out, index = [], -1
  for i, line in enumerate(lines):
    right_line = expected_line(problem, lines[:i])
    if right_line is None:  # a line after the answer: nothing should be there
      out.append(f"{i + 1}: END ; after answer no ; {WRONG}")
      index = i
      break
    redo = right_line if redo_of is None else redo_of(i, right_line)
    text, right = critique_step(i + 1, redo, line, running_value(problem, lines[:i]))
    out.append(text)
    if not right:
      index = i
      break
  out.append(templates.format_critique_index(index, 1))
  return "\n".join(out)


def write_step_judgement(problem: ArithProblem, previous_lines: Sequence[str], line: str, redo_of=None) -> str:
  """SPC's single-step judgement of `line` after `previous_lines`: the same two angles, then the verdict tag.

    12*3=36 ; 36/3=12 ok ; right
    <Answer>Correct</Answer>

  With the default (exact redos) the verdict is `check.check_step`'s.
  """
  previous_lines = tuple(previous_lines)
  right_line = expected_line(problem, previous_lines)
  if right_line is None:
    return f"END ; after answer no ; {WRONG}\n{templates.format_step_verdict(False)}"
  redo = right_line if redo_of is None else redo_of(len(previous_lines), right_line)
  text, right = _judge(redo, line, running_value(problem, previous_lines))
  return f"{text}\n{templates.format_step_verdict(right)}"


# ------------------------------------------------------------------ the seed annotator


@dataclasses.dataclass(frozen=True)
class AnnotatorConfig:
  slip_rate: float = 0.0  # per step: the annotator's redo result is off by a small slip
  carry_blind_rate: float = 0.0  # per carrying step: the annotator's redo drops the carry / borrow

  def __post_init__(self):
    for name in ("slip_rate", "carry_blind_rate"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"AnnotatorConfig.{name}={getattr(self, name)}: expected a probability in [0, 1]")


def _annotator_redo(config: AnnotatorConfig, rng: np.random.Generator):
  def redo_of(i: int, right_line: str) -> str:
    del i
    parsed = parse_line(right_line)
    if not isinstance(parsed, Step):
      return right_line
    result = parsed.result
    slip = carry_slip(parsed.op, parsed.left, parsed.right)
    if slip and rng.random() < config.carry_blind_rate:
      result += slip
    if rng.random() < config.slip_rate:
      result += int(_ANNOTATOR_SLIPS[int(rng.integers(len(_ANNOTATOR_SLIPS)))])
    return step_line(parsed.left, parsed.op, parsed.right, result)
  return redo_of


def annotator_critique(problem: ArithProblem, lines: Sequence[str], config: AnnotatorConfig,
                       rng: np.random.Generator) -> str:
  """The annotator's critique of `lines`, mistakes and all (nothing filtered)."""
  return write_critique(problem, lines, _annotator_redo(config, rng))


def annotate(problem: ArithProblem, lines: Sequence[str], config: AnnotatorConfig,
             rng: np.random.Generator) -> str | None:
  """The seed annotator's critique of `lines`, or None when its final index misses the label (filtered)."""
  text = annotator_critique(problem, lines, config, rng)
  label = earliest_error(problem, lines)
  return text if parse_critique(text, len(lines)) == label else None


def annotate_step(problem: ArithProblem, previous_lines: Sequence[str], line: str, config: AnnotatorConfig,
                  rng: np.random.Generator) -> str | None:
  """The seed annotator's judgement of one step, or None when its verdict misses the step's label (filtered)."""
  text = write_step_judgement(problem, previous_lines, line, _annotator_redo(config, rng))
  return text if templates.parse_step_verdict(text) == check_step(problem, previous_lines, line) else None


# ------------------------------------------------------------------ parsing


_STEP_RE = re.compile(r"(\d{1,3}): (.+) ; (.+) (ok|no) ; (right|wrong|differ: wrong)")
_BOXED_RE = re.compile(r"\\boxed\{(-?\d{1,3})\}")


def flagged_redo(text: str) -> str | None:
  """The redo a critique writes for the step it flags (its last judged line), or None when it flags none."""
  lines = [line.strip() for line in text.strip().split("\n")]
  m = _STEP_RE.fullmatch(lines[-2]) if len(lines) >= 2 else None
  return m.group(2) if m and m.group(5) != RIGHT else None


def parse_critique(text: str, num_steps: int) -> int | templates.Invalid:
  """The 0-indexed earliest wrong step a deliberate critique names, -1, or an Invalid saying why.

  Strict: the steps must be judged in order from 1 in the format above,
  stop at the first one judged wrong (or judge all `num_steps`), and the
  last line must be the \\boxed{} number of that step (or -1).
  """
  lines = [line.strip() for line in text.strip().split("\n")]
  if not lines or not _BOXED_RE.fullmatch(lines[-1]):
    return templates.Invalid("the critique does not end with a \\boxed{step number} line")
  boxed = int(_BOXED_RE.fullmatch(lines[-1]).group(1))
  judged = lines[:-1]
  wrong_at = None
  for i, line in enumerate(judged):
    m = _STEP_RE.fullmatch(line)
    if not m:
      return templates.Invalid(f"critique line {i + 1} is not 'k: redo ; back ok|no ; verdict': {line[:60]!r}")
    if int(m.group(1)) != i + 1:
      return templates.Invalid(f"critique line {i + 1} judges step {m.group(1)}: steps go in order from 1")
    if m.group(5) != RIGHT:
      wrong_at = i
      if i + 1 != len(judged):
        return templates.Invalid(f"the critique goes on after step {i + 1}, which it judged wrong")
  if wrong_at is None:
    if len(judged) != num_steps:
      return templates.Invalid(f"the critique judges {len(judged)} of {num_steps} steps and finds no error")
    expected = -1
  else:
    expected = wrong_at + 1
  if boxed != expected:
    return templates.Invalid(f"\\boxed{{{boxed}}} does not match the judgements (expected \\boxed{{{expected}}})")
  if wrong_at is not None and wrong_at >= num_steps:
    return templates.Invalid(f"step {wrong_at + 1} does not exist: the solution has {num_steps} steps")
  return -1 if wrong_at is None else wrong_at
