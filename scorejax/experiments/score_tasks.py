"""Tasks of the SCoRe experiment: tokenized prompts, the second-turn instruction, rewards.

A task gives the experiment everything that depends on the data:

  tokenizer                      pad_id / eos_id / encode / decode
  instruction_ids                the second-turn instruction p, tokenized
  stop_ids                       tokens that end an attempt
  eval_problems                  held-out problems for the tables
  prompt_ids(problem)            x, tokenized (chat template applied when there is one)
  answer_ids(text)               a reference answer as trained tokens, EOS included
  text(ids), reward(problem, ids)  r(y, y*) in {0, 1}
  train_problems(seed, phase, step, n)  a function of its arguments only (resumable)
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from scorejax.tasks import arith, templates
from scorejax.tokenizers import CharTokenizer

PHASES = ("base", "stage1", "stage2")


def stream_seed(seed: int, phase: str, step: int) -> int:
  """One integer seed per (run seed, phase, step), stable across processes."""
  return int(np.random.SeedSequence([seed, PHASES.index(phase), step]).generate_state(1)[0])


# ----------------------------------------------------------------------------
# Task: prompts, the instruction, rewards
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ArithTask:
  """The built-in arithmetic task, tokenized for the model."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    c = self.config
    knobs = dict(c.difficulty)
    knobs["ops"] = tuple(knobs["ops"])
    self.arith = arith.ArithConfig(phrasing=c.phrasing, **knobs)
    self.tokenizer = CharTokenizer()
    self.templates = templates.get_templates("arith")
    self.instruction_ids = self.tokenizer.encode(self.templates.self_correct)
    self.stop_ids = (self.tokenizer.eos_id,)
    self.eval_problems = arith.make_problems(self.arith, "eval", c.eval_size, seed=c.eval_seed)

  def prompt_ids(self, problem) -> list[int]:
    text = templates.render(self.tokenizer, templates.solve_messages(self.templates, problem.text))
    return self.tokenizer.encode(text)

  def answer_ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text) + [self.tokenizer.eos_id]

  def text(self, ids) -> str:
    return self.tokenizer.decode([t for t in ids if t != self.tokenizer.eos_id])

  def reward(self, problem, ids) -> float:
    return arith.reward(problem, self.text(ids))

  def train_problems(self, seed: int, phase: str, step: int, n: int):
    """n training problems, a function of (seed, phase, step) only."""
    stream = arith.iter_problems(self.arith, "train", seed=stream_seed(seed, phase, step))
    return [next(stream) for _ in range(n)]


TASKS = {"arith": ArithTask}


def make_task(config: ml_collections.ConfigDict):
  """The task named by config.name, built from the rest of config."""
  if config.name not in TASKS:
    raise ValueError(f"config.task.name={config.name!r}; expected one of {sorted(TASKS)}")
  return TASKS[config.name](config)
