"""Tasks of the SCoRe experiment: tokenized prompts, the second-turn instruction, rewards.

A task gives the experiment everything that depends on the data:

  tokenizer                      pad_id / eos_id / encode / decode
  instruction_ids                the second-turn instruction p, tokenized
  stop_ids                       tokens that end an attempt
  eval_problems                  held-out problems for the tables
  dev_problems(n)                n fixed problems held out from training, for interval evaluations and tuning
  prompt_ids(problem)            x, tokenized (chat template applied when there is one)
  answer_ids(text)               a reference answer as trained tokens, EOS included
  text(ids), reward(problem, ids)  r(y, y*) in {0, 1}
  train_problems(seed, phase, step, n)  a function of its arguments only (resumable)

Tasks: "arith" (the built-in task, character tokenizer) and "gsm8k" / "math"
(`MathTask`: GSM8K or MATH / MATH500 on an HF tokenizer, rendered through its
chat template, r = `rewards.answers.math_reward`).
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from scorejax.rewards import answers
from scorejax.tasks import arith, gsm8k, math_data, templates
from scorejax.tokenizers import CharTokenizer, HFTokenizer, plain_concatenation

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

  def dev_problems(self, n: int):
    """n distinct problems of the dev split (never trained on), the same for every run: what settings are tuned on."""
    if not self.arith.dev_fraction:
      raise ValueError("config.task.difficulty.dev_fraction=0: the arithmetic task has no dev split for interval "
                       "evaluations; set it (e.g. 0.1) or --config.eval.every=0")
    return arith.make_problems(self.arith, "dev", n, seed=self.config.dev_seed)


# ----------------------------------------------------------------------------
# GSM8K and MATH on an HF tokenizer
# ----------------------------------------------------------------------------


class MissingData(FileNotFoundError):
  """A data set named by the config is not on disk; the message says how to get it."""


class ChatTemplateError(ValueError):
  """The chat template does not render [x, y1, p, y2] as prompt + attempt + p + attempt."""


MATH_HOW_TO_GET = (
    "MATH / MATH500 are read from local .jsonl, .json or .parquet files (nothing is downloaded): "
    "eval_path: MATH500's test.jsonl (huggingface.co/datasets/HuggingFaceH4/MATH-500); train_path: "
    "the MATH train split, e.g. the train files of huggingface.co/datasets/EleutherAI/hendrycks_math "
    "concatenated into one .jsonl (fields problem, solution, level, type); pass them with "
    "--config.task.train_path=... --config.task.eval_path=...")

# Two stand-in first attempts: p must not depend on what the attempt says.
_PROBE_ATTEMPTS = ("Final Answer: The final answer is $1$. I hope it is correct.",
                   "So x = 2, and the answer is \\boxed{2}.")


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


def load_problems(config: ml_collections.ConfigDict) -> tuple[list[MathProblem], list[MathProblem]]:
  """(train, eval) problems of config.name, both checked before the tokenizer or model load."""
  if config.name == "math":
    return read_math_problems(config.train_path, "train_path"), read_math_problems(config.eval_path, "eval_path")
  if config.name == "gsm8k":
    return (read_gsm8k_problems(config.train_split, config.data_dir),
            read_gsm8k_problems(config.eval_split, config.data_dir))
  raise ValueError(f"config.task.name={config.name!r}; MathTask reads 'math' or 'gsm8k'")


def turn_end_id(render, tokenizer, ts: templates.TemplateSet, problem: str) -> int | None:
  """The special token a chat template closes an assistant turn with (Qwen's <|im_end|>).

  Found by rendering [x, y] and reading the token right after y's tokens;
  None without a chat template (an attempt then ends with EOS alone).
  """
  if render is None:
    return None
  x = templates.solve_messages(ts, problem)
  head = tokenizer.encode(render(x, True)) + tokenizer.encode(_PROBE_ATTEMPTS[0])
  full = tokenizer.encode(render(x + [{"role": "assistant", "content": _PROBE_ATTEMPTS[0]}], False))
  if full[:len(head)] != head or len(full) == len(head):
    raise ChatTemplateError(
        "the chat template does not render [user x, assistant y] as the prompt of x followed by y's "
        f"tokens and an end-of-turn token: prompt + y = {head[-8:]} (last 8 ids), rendered "
        f"{full[len(head) - 8:len(head) + 4]}; a policy sampled from the prompt could not reproduce it")
  token = full[len(head)]
  if tokenizer.decode([token], skip_special_tokens=True):
    raise ChatTemplateError(
        f"the chat template closes an assistant turn with the ordinary token {token} "
        f"({tokenizer.decode([token])!r}), not a special end-of-turn token, so an attempt has no "
        "token to stop at")
  return token


def instruction_ids(render, tokenizer, ts: templates.TemplateSet, problem: str,
                    attempt_end: list[int]) -> list[int]:
  """p: the token ids between the end of attempt 1 (`attempt_end` included) and attempt 2.

  Rendered [x, y1, p] + generation prompt must start with the tokens the
  policy saw and produced, prompt(x) + y1 + attempt_end; p is what follows.
  Checked with two different y1, so p cannot depend on the first attempt.
  """
  x = templates.solve_messages(ts, problem)
  prompt = tokenizer.encode(render(x, True))
  found = set()
  for attempt in _PROBE_ATTEMPTS:
    head = prompt + tokenizer.encode(attempt) + attempt_end
    full = tokenizer.encode(render(templates.self_correct_messages(ts, problem, attempt), True))
    if full[:len(head)] != head:
      at = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), min(len(head), len(full)))
      raise ChatTemplateError(
          "the rendered conversation [user x, assistant y1, user p] does not start with the sampled "
          f"tokens prompt(x) + y1 + end of turn: they differ at token {at} (expected "
          f"{head[at:at + 4]}, rendered {full[at:at + 4]}); the second-turn instruction cannot be "
          "appended to a sampled first attempt with this chat template (set "
          "--config.task.chat_template=False to render plain text)")
    found.add(tuple(full[len(head):]))
  if len(found) != 1:
    raise ChatTemplateError(f"the chat template renders the second-turn instruction differently after "
                            f"different first attempts: {sorted(found)}")
  p = list(found.pop())
  if not p:
    raise ChatTemplateError("the chat template renders no tokens for the second-turn instruction")
  return p


@dataclasses.dataclass
class MathTask:
  """GSM8K or MATH / MATH500 (config.name "gsm8k" / "math") on an HF tokenizer."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    c = self.config
    train, eval_problems = load_problems(c)
    if not train:
      raise ValueError(f"config.task.name={c.name!r}: the training split has no problems")
    if not 0 <= c.dev_size < len(train):
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
    use_chat = c.chat_template and self.tokenizer.has_chat_template
    self._render = self.tokenizer.apply_chat_template if use_chat else None
    turn_end = turn_end_id(self._render, self.tokenizer, self.templates, probe)
    # The token the policy is trained and expected to close an attempt with.
    self.attempt_end = [self.tokenizer.eos_id if turn_end is None else turn_end]
    self.stop_ids = tuple(dict.fromkeys([self.tokenizer.eos_id] + self.attempt_end))
    if use_chat:
      self.instruction_ids = instruction_ids(self._render, self.tokenizer, self.templates, probe,
                                             self.attempt_end)
    else:  # plain text: the sampled y1 ends with EOS and p follows it
      self.instruction_ids = self.tokenizer.encode(self.templates.self_correct)

  def prompt_ids(self, problem: MathProblem) -> list[int]:
    messages = templates.solve_messages(self.templates, problem.text)
    text = self._render(messages, True) if self._render else plain_concatenation(messages)
    return self.tokenizer.encode(text)

  def answer_ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text) + self.attempt_end

  def text(self, ids) -> str:
    return self.tokenizer.decode([t for t in ids if t not in self.stop_ids], skip_special_tokens=True)

  def reward(self, problem: MathProblem, ids) -> float:
    return answers.math_reward(self.text(ids), problem.answer)

  def train_problems(self, seed: int, phase: str, step: int, n: int) -> list[MathProblem]:
    """Problems step*n .. step*n+n-1 of an endless sequence of seeded shuffles of the train set.

    A function of (seed, phase, step, n) only: each epoch is a permutation
    seeded by (seed, phase, epoch), so a resumed run replays the same batches.
    """
    size = len(self.train)
    orders = {}
    out = []
    for i in range(step * n, step * n + n):
      epoch, j = divmod(i, size)
      if epoch not in orders:
        orders[epoch] = np.random.default_rng([seed, PHASES.index(phase), epoch]).permutation(size)
      out.append(self.train[orders[epoch][j]])
    return out

  def dev_problems(self, n: int) -> list[MathProblem]:
    """n of the train rows held out as the dev set (config.task.dev_size): what settings are tuned on."""
    if n > len(self.dev):
      raise ValueError(f"{n} dev problems asked (config.eval.interval_problems), but config.task.dev_size="
                       f"{self.config.dev_size} holds out {len(self.dev)}")
    return self.dev[:n]


TASKS = {"arith": ArithTask, "gsm8k": MathTask, "math": MathTask}


def make_task(config: ml_collections.ConfigDict):
  """The task named by config.name, built from the rest of config."""
  if config.name not in TASKS:
    raise ValueError(f"config.task.name={config.name!r}; expected one of {sorted(TASKS)}")
  return TASKS[config.name](config)
