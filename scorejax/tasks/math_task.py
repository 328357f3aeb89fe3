"""GSM8K and MATH / MATH500 as whole-answer tasks on an HF tokenizer (the `tasks.base` protocol).

Prompts go through the tokenizer's chat template (checked by `tasks.chat`),
r = `rewards.answers.math_reward`; the dev set is `dev_size` train rows
held out from training. Steps are paragraphs (ProcessBench splits solutions
on blank lines); which one is wrong comes from labelled records or Monte
Carlo estimation, never from the task.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from scorejax.rewards import answers
from scorejax.tasks import gsm8k, math_data, templates
from scorejax.tasks.base import MissingData, endless_shuffle
from scorejax.tasks.chat import TurnsTask, task_turns
from scorejax.tokenizers import HFTokenizer

MATH_HOW_TO_GET = (
    "MATH / MATH500 are read from local .jsonl, .json or .parquet files (nothing is downloaded): "
    "eval_path: MATH500's test.jsonl (huggingface.co/datasets/HuggingFaceH4/MATH-500); train_path: "
    "the MATH train split, e.g. the train files of huggingface.co/datasets/EleutherAI/hendrycks_math "
    "concatenated into one .jsonl (fields problem, solution, level, type); pass them with "
    "--config.task.train_path=... --config.task.eval_path=...")

@dataclasses.dataclass(frozen=True)
class MathProblem:
  """A problem as the experiment sees it: the text shown to the policy and y*."""

  text: str
  answer: str  # reference final answer, compared by rewards.answers.math_reward
  id: str  # where it came from (MATH500 unique_id, file:line, or gsm8k/<split>/<index>)


def read_math_problems(path: str, key: str) -> list[MathProblem]:
  """MATH or MATH500 problems from config.task.<key>, or MissingData before any compute."""
  if not path or not os.path.isfile(path):
    raise MissingData(f"config.task.{key}={path!r} is not a file. {MATH_HOW_TO_GET}")
  return [MathProblem(e.problem, e.answer, e.unique_id) for e in math_data.read_math(path)]


def read_gsm8k_problems(split: str, data_dir: str) -> list[MathProblem]:
  """One GSM8K split from a prepared tfds data_dir, or MissingData saying how to prepare it."""
  if not data_dir:
    raise MissingData(f"config.task.data_dir is empty; {gsm8k.how_to_prepare('DATA_DIR')}")
  try:
    examples = list(gsm8k.read_gsm8k(split, data_dir))
  except gsm8k.Gsm8kNotPrepared as e:
    raise MissingData(f"config.task.data_dir: {e}") from None
  return [MathProblem(e.question, e.answer, f"gsm8k/{split}/{i}") for i, e in enumerate(examples)]


def load_problems(config: ml_collections.ConfigDict, needs_train: bool = True
                  ) -> tuple[list[MathProblem], list[MathProblem]]:
  """(train, eval) problems of config.name, both checked before the tokenizer or model load.

  Without `needs_train`, an empty MATH train_path gives no training problems.
  """
  if config.name == "math":
    train = read_math_problems(config.train_path, "train_path") if config.train_path or needs_train else []
    return train, read_math_problems(config.eval_path, "eval_path")
  if config.name == "gsm8k":
    return (read_gsm8k_problems(config.train_split, config.data_dir),
            read_gsm8k_problems(config.eval_split, config.data_dir))
  raise ValueError(f"config.task.name={config.name!r}; MathTask reads 'math' or 'gsm8k'")


@dataclasses.dataclass
class MathTask(TurnsTask):
  """GSM8K or MATH / MATH500 (config.name "gsm8k" / "math") on an HF tokenizer."""

  config: ml_collections.ConfigDict
  needs_train: bool = True  # False: a run that draws no training problems may leave train_path empty

  def __post_init__(self):
    c = self.config
    train, eval_problems = load_problems(c, self.needs_train)
    if not train and self.needs_train:
      raise ValueError(f"config.task.name={c.name!r}: the training split has no problems")
    if train and not 0 <= c.dev_size < len(train):
      raise ValueError(f"config.task.dev_size={c.dev_size}: the training split has {len(train)} problems; "
                       "the dev set must leave some to train on")
    # The dev set: dev_size train rows, one fixed shuffle's first, never drawn for training.
    order = np.random.default_rng(c.dev_seed).permutation(len(train))
    self.dev = [train[i] for i in order[:c.dev_size]]
    self.train = [train[i] for i in np.sort(order[c.dev_size:])]
    self.eval_problems = eval_problems[:c.eval_size] if c.eval_size else eval_problems
    if not c.tokenizer_dir:
      raise ValueError("config.task.tokenizer_dir is empty; set it or config.model.hf_dir")
    self.tokenizer = HFTokenizer(c.tokenizer_dir)
    self.templates = templates.get_templates(c.templates)
    probe = self.eval_problems[0].text if self.eval_problems else self.train[0].text
    self.turns = task_turns(self.tokenizer, self.templates, c.chat_template and self.tokenizer.has_chat_template,
                            probe)
    self.stop_ids, self.instruction_ids = self.turns.stop_ids, self.turns.instruction_ids

  def reward(self, problem: MathProblem, ids) -> float:
    return answers.math_reward(self.text(ids), problem.answer)

  def train_problems(self, seed: int, stream: str, step: int, n: int) -> list[MathProblem]:
    """Problems step*n .. step*n+n-1 of an endless sequence of seeded shuffles of the train set."""
    if not self.train:
      raise MissingData(f"stream {stream!r} draws training problems, but config.task.train_path is empty. "
                        f"{MATH_HOW_TO_GET}")
    return endless_shuffle(self.train, seed, stream, step, n)

  def dev_problems(self, n: int) -> list[MathProblem]:
    """n of the train rows held out as the dev set (config.task.dev_size): what settings are tuned on."""
    if n > len(self.dev):
      raise ValueError(f"{n} dev problems asked (config.eval.interval_problems), but config.task.dev_size="
                       f"{self.config.dev_size} holds out {len(self.dev)}")
    return self.dev[:n]

  # The step protocol on real solutions: a step is a paragraph.

  def steps(self, text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split("\n\n") if p.strip())

  def solution_text(self, steps: Sequence[str]) -> str:
    return "\n\n".join(steps)

  def is_complete(self, steps: Sequence[str]) -> bool:
    """The last step states a final answer (\\boxed{}, "The final answer is", PRM800K's "# Answer", ...)."""
    return bool(steps) and answers.extract_final_answer(steps[-1]) is not None

  @functools.cached_property
  def step_stop_ids(self) -> tuple[int, ...]:
    """What ends one sampled step (step-level search): the answer's stop tokens, then every token whose text
    holds a paragraph break (a BPE vocabulary merges "\n\n" with what comes before it)."""
    breaks = [i for i in range(self.tokenizer.vocab_size) if "\n\n" in self.tokenizer.decode([i])]
    if not breaks:
      raise ValueError(f"the tokenizer in {self.config.tokenizer_dir} has no token holding a paragraph break "
                       "('\\n\\n'): step-level search could not stop at the end of a step")
    return (*self.stop_ids, *[i for i in breaks if i not in self.stop_ids])

  def prefix_ids(self, steps: Sequence[str]) -> list[int]:
    """The first steps of an answer as tokens, each closed by its blank line: a completion continues them."""
    return self.tokenizer.encode("".join(f"{s}\n\n" for s in steps))

  def parse_critique(self, text: str, num_steps: int):
    return templates.parse_critique_index(text, num_steps, self.templates.critique_first_index)
