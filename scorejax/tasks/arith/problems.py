"""Arithmetic problems: difficulty knobs, sampling, phrasing and the train / dev / eval splits.

A problem is a start value and a short chain of integer operations applied
left to right, phrased with symbols (default) or as a tiny word problem:

    Start at 7. Apply +5 *3 -4.
    Ann has 7 pens. Ann gets 5 more. Ann then has 3 times as many. Ann gives away 4. How many pens now?

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
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

OPS = ("+", "-", "*")
SPLITS = ("train", "dev", "eval")
PHRASINGS = ("symbols", "words")

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

