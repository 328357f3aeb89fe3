"""The built-in task for the model: character tokens, the arith templates, exact rewards and steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections

from scorejax.tasks import templates
from scorejax.tasks.arith import check, critiques, noise, problems
from scorejax.tasks.base import stream_seed
from scorejax.tokenizers import CharTokenizer


@dataclasses.dataclass
class ArithTask:
  """The built-in arithmetic task, tokenized for the model."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    c = self.config
    knobs = dict(c.difficulty)
    knobs["ops"] = tuple(knobs["ops"])
    self.arith = problems.ArithConfig(phrasing=c.phrasing, **knobs)
    self.tokenizer = CharTokenizer()
    self.templates = templates.get_templates("arith")
    self.instruction_ids = self.tokenizer.encode(self.templates.self_correct)
    self.stop_ids = (self.tokenizer.eos_id,)
    self.step_stop_ids = (self.tokenizer.eos_id, *self.tokenizer.encode("\n"))  # a step ends its line
    self.eval_problems = problems.make_problems(self.arith, "eval", c.eval_size, seed=c.eval_seed)

  def messages_ids(self, messages: Sequence[dict]) -> list[int]:
    return self.tokenizer.encode(templates.render(self.tokenizer, messages))

  def prompt_ids(self, problem) -> list[int]:
    return self.messages_ids(templates.solve_messages(self.templates, problem.text))

  def answer_ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text) + [self.tokenizer.eos_id]

  def text(self, ids) -> str:
    return self.tokenizer.decode([t for t in ids if t != self.tokenizer.eos_id])

  def reward(self, problem, ids) -> float:
    return check.reward(problem, self.text(ids))

  def train_problems(self, seed: int, stream: str, step: int, n: int):
    """n training problems, a function of (seed, stream, step) only."""
    drawn = problems.iter_problems(self.arith, "train", seed=stream_seed(seed, stream, step))
    return [next(drawn) for _ in range(n)]

  def dev_problems(self, n: int):
    """n distinct problems of the dev split (never trained on), the same for every run: what settings are tuned on."""
    if not self.arith.dev_fraction:
      raise ValueError("config.task.difficulty.dev_fraction=0: the arithmetic task has no dev split for interval "
                       "evaluations; set it (e.g. 0.1) or --config.eval.every=0")
    return problems.make_problems(self.arith, "dev", n, seed=self.config.dev_seed)

  # The step protocol, exact: every line is a step, checked by `arith.check`.

  def steps(self, text: str) -> tuple[str, ...]:
    return check.split_lines(text)

  def earliest_error(self, problem, steps: Sequence[str]) -> int:
    return check.earliest_error(problem, steps)

  def critique_redo(self, text: str) -> str | None:
    """The step a critique says should stand where it flags one (`critiques.flagged_redo`)."""
    return critiques.flagged_redo(text)

  def step_kind(self, problem, previous_steps: Sequence[str]) -> str:
    """The kind of position a step is written at: "carry" where the right step carries or borrows, else "plain"."""
    return "carry" if check.carries(problem, previous_steps) else "plain"

  def error_type(self, problem, previous_steps: Sequence[str], step: str) -> str | None:
    """The kind of error a step makes (`noise.error_type_of`), None when it is right."""
    return noise.error_type_of(problem, previous_steps, step)

  def reference_steps(self, problem) -> tuple[str, ...]:
    return check.solution_lines(problem)

  def is_complete(self, steps: Sequence[str]) -> bool:
    return bool(steps) and isinstance(check.parse_line(steps[-1]), check.AnswerLine)

  def prefix_ids(self, steps: Sequence[str]) -> list[int]:
    """The tokens of the first steps of an answer, as the policy writes them: a completion continues them."""
    return self.tokenizer.encode("".join(f"{line}\n" for line in steps))

  def solution_text(self, steps: Sequence[str]) -> str:
    return "\n".join(steps)

  def parse_critique(self, text: str, num_steps: int):
    """Strict: the deliberate format of `arith.critiques`, step by step, then the boxed number."""
    return critiques.parse_critique(text, num_steps)
