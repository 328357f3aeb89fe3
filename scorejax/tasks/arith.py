"""The built-in arithmetic reasoning task: every step of every solution is checkable.

A problem is a start value and a short chain of integer operations applied
left to right, phrased with symbols (default) or as a tiny word problem:

    Start at 7. Apply +5 *3 -4.
    Ann has 7 pens. Ann gets 5 more. Ann then has 3 times as many. Ann gives away 4. How many pens now?

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

Difficulty knobs (`ArithConfig`; `PRESETS` holds the three rows). Character
counts are median / max over 2,000 sampled problems; the word phrasing makes
problems about 3x longer (default: median 100, max 146 characters):

| preset  | steps | start | +/- operand | * operand | values | ops   | problem | solution |
|---------|-------|-------|-------------|-----------|--------|-------|---------|----------|
| easy    | 1-2   | 1-9   | 1-9         | -         | 0-20   | + -   | 24 / 24 | 21 / 25  |
| default | 2-4   | 1-20  | 1-20        | 2-5       | 0-99   | + - * | 28 / 35 | 34 / 46  |
| hard    | 3-6   | 1-50  | 1-50        | 2-9       | 0-999  | + - * | 35 / 43 | 51 / 75  |

Splits: a problem's split is a hash of its arithmetic (start and operations,
not its phrasing) with `split_salt`, so train and eval are disjoint for any
seeds and sizes; `eval_fraction` of the problem space belongs to eval, and
`dev_fraction` (default none) to a dev split that training never draws from,
for tuning without reading eval.

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
import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from scorejax.rewards import answers
from scorejax.tasks import processbench, templates

OPS = ("+", "-", "*")
ERROR_TYPES = (
    "wrong_result",
    "wrong_operand",
    "wrong_operator",
    "wrong_previous",
    "dropped_step",
    "wrong_answer",
    "dropped_carry",
)
SPLITS = ("train", "dev", "eval")
PHRASINGS = ("symbols", "words")

# Small slips, so that a wrong line is plausible rather than absurd.
_SLIPS = (-10, -2, -1, 1, 2, 10)
_OPERAND_SLIPS = (-2, -1, 1, 2)
_NAMES = ("Ann", "Bob", "Cy", "Dee", "Eve", "Max", "Sam", "Tom")
_ITEMS = ("pens", "coins", "cards", "eggs", "books", "stamps")
_WORDS = {
    "+": "{name} gets {n} more.",
    "-": "{name} gives away {n}.",
    "*": "{name} then has {n} times as many.",
}
_MAX_ATTEMPTS = 1000  # problem resamples before a config is declared infeasible


@dataclasses.dataclass(frozen=True)
class ArithConfig:
  """Difficulty knobs and split settings of the arithmetic task."""

  min_steps: int = 2  # fewest operations in a problem
  max_steps: int = 4  # most operations in a problem
  max_start: int = 20  # start value drawn from 1..max_start
  max_add: int = 20  # + and - operands drawn from 1..max_add
  max_mul: int = 5  # * operands drawn from 2..max_mul
  max_value: int = 99  # every intermediate result of a problem stays in 0..max_value
  ops: tuple[str, ...] = OPS  # operations a problem may use
  phrasing: str = "symbols"  # "symbols" or "words"
  eval_fraction: float = 0.1  # share of the problem space that is eval
  dev_fraction: float = 0.0  # share that is dev: held out from training, for tuning
  split_salt: str = "arith-v1"  # changing it redraws which problems are eval

  def __post_init__(self):
    object.__setattr__(self, "ops", tuple(self.ops))  # configs may hand over a list
    if not 1 <= self.min_steps <= self.max_steps:
      raise ValueError(
          f"ArithConfig: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}"
      )
    if not self.ops or any(op not in OPS for op in self.ops):
      raise ValueError(f"ArithConfig.ops must be a non-empty subset of {OPS}, got {self.ops}")
    if not 1 <= self.max_start <= self.max_value:
      raise ValueError(
          f"ArithConfig: need 1 <= max_start <= max_value, got {self.max_start}, {self.max_value}"
      )
    if self.max_add < 1 or self.max_mul < 2:
      raise ValueError(
          f"ArithConfig: need max_add >= 1 and max_mul >= 2, got {self.max_add}, {self.max_mul}"
      )
    if self.phrasing not in PHRASINGS:
      raise ValueError(f"ArithConfig.phrasing must be one of {PHRASINGS}, got {self.phrasing!r}")
    if not 0.0 < self.eval_fraction < 1.0:
      raise ValueError(f"ArithConfig.eval_fraction must be in (0, 1), got {self.eval_fraction}")
    if not 0.0 <= self.dev_fraction < 1.0 - self.eval_fraction:
      raise ValueError(f"ArithConfig.dev_fraction must be in [0, 1 - eval_fraction), got {self.dev_fraction}")


PRESETS: dict[str, ArithConfig] = {
    "easy": ArithConfig(
        min_steps=1, max_steps=2, max_start=9, max_add=9, max_mul=2, max_value=20, ops=("+", "-")
    ),
    "default": ArithConfig(),
    "hard": ArithConfig(
        min_steps=3, max_steps=6, max_start=50, max_add=50, max_mul=9, max_value=999
    ),
}


def apply_op(op: str, left: int, right: int) -> int:
  if op == "+":
    return left + right
  if op == "-":
    return left - right
  if op == "*":
    return left * right
  raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


@dataclasses.dataclass(frozen=True)
class ArithProblem:
  """A start value and the operations applied to it in order."""

  start: int
  ops: tuple[tuple[str, int], ...]  # (operator, operand) per step
  text: str  # the question as shown to the model

  @property
  def values(self) -> tuple[int, ...]:
    """The running value before each operation and after the last: len(ops) + 1 entries."""
    out = [self.start]
    for op, n in self.ops:
      out.append(apply_op(op, out[-1], n))
    return tuple(out)

  @property
  def answer(self) -> int:
    return self.values[-1]

  @property
  def key(self) -> str:
    """The arithmetic alone: the same for every phrasing, and what splits hash."""
    return " ".join([str(self.start)] + [f"{op}{n}" for op, n in self.ops])


# ------------------------------------------------------------------ problems


def _operand_range(op: str, value: int, config: ArithConfig) -> tuple[int, int] | None:
  """Inclusive operand range keeping the result in 0..max_value, or None."""
  if op == "+":
    hi = min(config.max_add, config.max_value - value)
    return (1, hi) if hi >= 1 else None
  if op == "-":
    hi = min(config.max_add, value)
    return (1, hi) if hi >= 1 else None
  hi = min(config.max_mul, config.max_value // value) if value >= 1 else 0
  return (2, hi) if hi >= 2 else None


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


def _dropped_carry_line(left: int, op: str, right: int) -> str | None:
  """The step written with its carry or borrow dropped; None when it has neither."""
  slip = carry_slip(op, left, right)
  return step_line(left, op, right, apply_op(op, left, right) + slip) if slip else None


def render_problem(start: int, ops: Sequence[tuple[str, int]], phrasing: str, rng) -> str:
  if phrasing == "symbols":
    return f"Start at {start}. Apply " + " ".join(f"{op}{n}" for op, n in ops) + "."
  name = _NAMES[int(rng.integers(len(_NAMES)))]
  item = _ITEMS[int(rng.integers(len(_ITEMS)))]
  sentences = [f"{name} has {start} {item}."]
  sentences += [_WORDS[op].format(name=name, n=n) for op, n in ops]
  sentences.append(f"How many {item} now?")
  return " ".join(sentences)


def sample_problem(rng: np.random.Generator, config: ArithConfig) -> ArithProblem:
  """One problem from the whole problem space (either split)."""
  for _ in range(_MAX_ATTEMPTS):
    k = int(rng.integers(config.min_steps, config.max_steps + 1))
    start = int(rng.integers(1, config.max_start + 1))
    value, ops = start, []
    for _ in range(k):
      feasible = [op for op in config.ops if _operand_range(op, value, config)]
      if not feasible:
        break
      op = feasible[int(rng.integers(len(feasible)))]
      lo, hi = _operand_range(op, value, config)
      n = int(rng.integers(lo, hi + 1))
      value = apply_op(op, value, n)
      ops.append((op, n))
    if len(ops) == k:
      text = render_problem(start, ops, config.phrasing, rng)
      return ArithProblem(start=start, ops=tuple(ops), text=text)
  raise ValueError(
      f"ArithConfig {config} cannot chain {config.min_steps}..{config.max_steps} operations "
      f"inside 0..{config.max_value}; allow '-' or raise max_value"
  )


def split_of(problem: ArithProblem, config: ArithConfig) -> str:
  digest = hashlib.blake2b(f"{config.split_salt}|{problem.key}".encode(), digest_size=8).digest()
  unit = int.from_bytes(digest, "big") / 2.0**64
  if unit < config.eval_fraction:
    return "eval"
  return "dev" if unit < config.eval_fraction + config.dev_fraction else "train"


def iter_problems(config: ArithConfig, split: str, seed: int) -> Iterator[ArithProblem]:
  """An endless seeded stream of problems of one split (repeats are possible)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  misses = 0
  while True:
    problem = sample_problem(rng, config)
    if split_of(problem, config) == split:
      misses = 0
      yield problem
      continue
    misses += 1
    if misses >= _MAX_ATTEMPTS:
      raise ValueError(
          f"no {split!r} problem in {_MAX_ATTEMPTS} draws: eval_fraction={config.eval_fraction}, "
          f"dev_fraction={config.dev_fraction} leave that split (almost) empty for this config"
      )


def make_problems(config: ArithConfig, split: str, n: int, seed: int) -> list[ArithProblem]:
  """`n` distinct problems of one split, the same list for the same arguments."""
  out, seen = [], set()
  draws = 0
  for problem in iter_problems(config, split, seed):
    draws += 1
    if problem.key not in seen:
      seen.add(problem.key)
      out.append(problem)
      if len(out) == n:
        return out
    if draws >= _MAX_ATTEMPTS * max(n, 10):
      raise ValueError(
          f"only {len(out)} distinct {split!r} problems found in {draws} draws, {n} asked: "
          "the problem space of this config is too small; raise the difficulty knobs"
      )
  raise AssertionError("unreachable: iter_problems is endless")


# ------------------------------------------------------------------ lines

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


def _running_value(problem: ArithProblem, previous_lines: Sequence[str]) -> int:
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
  left = _running_value(problem, previous_lines)
  if i < k:
    op, n = problem.ops[i]
    return step_line(left, op, n)
  return answer_line(left)


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


# ------------------------------------------------------------------ errors


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
  left = _running_value(problem, previous_lines)
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
    slipped = _dropped_carry_line(left, op, n)
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
  value = _running_value(problem, lines)
  while True:
    if j < len(problem.ops):
      op, n = problem.ops[j]
      line = step_line(value, op, n)
      slipped = _dropped_carry_line(value, op, n) if carry_slip_rate > 0.0 and op in slip_ops else None
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


# ------------------------------------------------------------------ critiques


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
