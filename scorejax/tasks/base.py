"""The task protocol: what an experiment asks of its data, and data streams seeded by name.

Whole-answer tasks (the built-in task, GSM8K, MATH) give prompts and a
verifiable reward:

  tokenizer                      pad_id / eos_id / encode / decode
  templates                      the task's `templates.TemplateSet`
  instruction_ids                SCoRe's second-turn instruction p, tokenized
  stop_ids                       tokens that end an answer
  eval_problems                  held-out problems for the tables
  dev_problems(n)                n fixed problems held out from training, for interval evaluations and tuning
  train_problems(seed, stream, step, n)  a function of its arguments only (resumable)
  prompt_ids(problem)            x, tokenized (chat template applied when there is one)
  messages_ids(messages)         any conversation of the task's templates, as a prompt
  answer_ids(text)               a reference answer as trained tokens, its end token included
  text(ids), reward(problem, ids)  r(y, y*) in {0, 1}

Step tasks also know the steps of a solution and which is the first wrong
one (the built-in task exactly; ProcessBench / PRM800K records by their
labels, `tasks.processbench.LabelledSolution`):

  steps(text)                    a solution's steps
  earliest_error(problem, steps) 0-indexed first wrong step, -1 when all are right
  reference_steps(problem)       a right solution
  is_complete(steps)             the solution reaches a final answer (a cut-off one is never "all correct")
  prefix_ids(steps)              the first steps of an answer as tokens, for a completion to continue
  solution_text(steps)           the steps joined as the policy writes a solution
  parse_critique(text, n)        the 0-indexed step a critique's \\boxed{} names, -1, or `templates.Invalid`

A task may also give `rewards(problems, ids)` for a whole batch at once
(`batch_rewards` uses it): the code task (`tasks.code`, MBPP / HumanEval)
runs its programs concurrently in the sandbox.

MATH and GSM8K (`tasks.math_task`) give every step method but the two that
need a checker (earliest_error, reference_steps): their labels come from
records (ProcessBench, PRM800K) or from Monte Carlo estimation.

`stream_seed(seed, stream, step)` seeds a training stream by its name ("base",
"sft", "rl", "round2/critic"), never by a position in a phase list.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import ml_collections
import numpy as np

# The streams of the SCoRe experiment keep the ids they had as positions in its phase list
# (base, stage1, stage2), so that its measured runs replay exactly; every other name is hashed.
_FIXED_STREAM_IDS = {"base": 0, "stage1": 1, "stage2": 2}


class MissingData(FileNotFoundError):
  """A data set named by the config is not on disk; the message says how to get it."""


def stream_id(stream: str) -> int:
  """A stable integer for a stream name, the same in every process and run."""
  if stream in _FIXED_STREAM_IDS:
    return _FIXED_STREAM_IDS[stream]
  return 1000 + zlib.crc32(stream.encode())


def stream_seed(seed: int, stream: str, step: int) -> int:
  """One integer seed per (run seed, stream name, step)."""
  return int(np.random.SeedSequence([seed, stream_id(stream), step]).generate_state(1)[0])


def endless_shuffle(items: Sequence, seed: int, stream: str, step: int, n: int) -> list:
  """Items step*n .. step*n+n-1 of an endless sequence of seeded shuffles of `items` (epoch after epoch).

  A function of its arguments only: each epoch is a permutation seeded by
  (seed, stream, epoch), so a resumed run replays the same batches.
  """
  size = len(items)
  if not size:
    raise ValueError(f"stream {stream!r}: nothing to draw from")
  orders, out = {}, []
  for i in range(step * n, step * n + n):
    epoch, j = divmod(i, size)
    if epoch not in orders:
      orders[epoch] = np.random.default_rng([seed, stream_id(stream), epoch]).permutation(size)
    out.append(items[orders[epoch][j]])
  return out


@runtime_checkable
class WholeAnswerTask(Protocol):
  tokenizer: object
  stop_ids: tuple[int, ...]
  eval_problems: list

  def dev_problems(self, n: int) -> list: ...
  def train_problems(self, seed: int, stream: str, step: int, n: int) -> list: ...
  def prompt_ids(self, problem) -> list[int]: ...
  def messages_ids(self, messages: Sequence[dict]) -> list[int]: ...
  def answer_ids(self, text: str) -> list[int]: ...
  def text(self, ids) -> str: ...
  def reward(self, problem, ids) -> float: ...


@runtime_checkable
class StepTask(WholeAnswerTask, Protocol):
  def steps(self, text: str) -> tuple[str, ...]: ...
  def earliest_error(self, problem, steps: Sequence[str]) -> int: ...
  def reference_steps(self, problem) -> tuple[str, ...]: ...
  def is_complete(self, steps: Sequence[str]) -> bool: ...
  def prefix_ids(self, steps: Sequence[str]) -> list[int]: ...
  def solution_text(self, steps: Sequence[str]) -> str: ...
  def parse_critique(self, text: str, num_steps: int): ...


def batch_rewards(task, problems: Sequence, ids: Sequence) -> np.ndarray:
  """r(y, y*) of each sample, [B] float32: the task's batched `rewards` where it has one (a code task runs
  its programs concurrently in the sandbox), else `reward` one sample at a time."""
  if hasattr(task, "rewards"):
    return np.asarray(task.rewards(problems, ids), np.float32)
  return np.array([task.reward(p, y) for p, y in zip(problems, ids)], np.float32)


def make_task(config: ml_collections.ConfigDict, needs_train: bool = True):
  """The task named by config.name ("arith", "gsm8k", "math", "code"), built from the rest of config.

  `needs_train=False`: a run that draws no training problems (a critic
  trained on labelled files) may leave MATH's train_path empty.
  """
  if config.name == "arith":
    from scorejax.tasks.arith.task import ArithTask
    return ArithTask(config)
  if config.name in ("gsm8k", "math"):
    from scorejax.tasks.math_task import MathTask
    return MathTask(config, needs_train)
  if config.name == "code":
    from scorejax.tasks.code import CodeTask
    return CodeTask(config, needs_train)
  raise ValueError(f"config.task.name={config.name!r}; expected one of ['arith', 'gsm8k', 'math', 'code']")
