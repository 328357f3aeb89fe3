"""Code tasks: MBPP to train on, HumanEval or MBPP's test split held out, MBPP-R as offline repair.

The reward of a program is 1 when it passes its task's tests, run in the
sandbox (`scorejax.sandbox`: a worker process with time, memory and output
limits, no network, a fresh directory), else 0; `outcomes` says why not.

Files are read locally, in their published fields (nothing is downloaded):

  MBPP       (Austin et al. 2021, github.com/google-research/google-research/tree/master/mbpp,
             mbpp.jsonl): task_id, text, code, test_list, test_setup_code. The sanitized
             release's `prompt` and `test_imports` are read as text and setup. Splits by
             task_id as published: 11-510 test, 511-600 validation (the dev set here),
             601-974 train (1-10 are few-shot prompts, unused).
  HumanEval  (Chen et al. 2021, github.com/openai/human-eval, HumanEval.jsonl.gz unpacked):
             task_id, prompt, canonical_solution, test, entry_point.
  MBPP-R     SCoRe's offline repair evaluation: first attempts known to be wrong, given to
             the policy to fix. JSONL rows of `task_id` (an MBPP id, or "mbpp/<id>") and
             `completion` (the wrong attempt's text); attempts that pass their tests are
             dropped and counted (`repair_pairs`).

The policy sees MBPP's prompt with the tests it must pass (HumanEval: the
function's signature and docstring) and writes a program, in a ```python
block or bare. The program run is the task's setup, the extracted code and
the tests; a HumanEval completion that does not define its entry point is
read as the body continuing the prompt's stub.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Sequence

import ml_collections
import numpy as np

from scorejax.sandbox import Outcome, Sandbox, sandbox_config
from scorejax.tasks import templates
from scorejax.tasks.base import MissingData, endless_shuffle
from scorejax.tasks.chat import TurnsTask, task_turns
from scorejax.tasks.records import RecordError, field, iter_records, string_list
from scorejax.tokenizers import HFTokenizer

MBPP_SPLITS = {"test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}
EVAL_SETS = ("humaneval", "mbpp")
HOW_TO_GET = (
    "code tasks read local files (nothing is downloaded): task.mbpp_path: mbpp.jsonl of "
    "github.com/google-research/google-research/tree/master/mbpp (all 974 problems; split by task_id); "
    "task.humaneval_path: HumanEval.jsonl from github.com/openai/human-eval (gunzip data/HumanEval.jsonl.gz); "
    "task.repair_path (optional): MBPP-R first attempts, rows of task_id and completion")


@dataclasses.dataclass(frozen=True)
class CodeProblem:
  """A programming problem as the experiment sees it."""

  id: str  # "mbpp/11", "HumanEval/0"
  text: str  # what the policy is shown (inside the template's solve prompt)
  setup: str  # code run before the program (MBPP's test_setup_code); "" for none
  tests: str  # code run after it: a failing assertion is a failed test
  entry_point: str  # the function the tests call
  stub: str = ""  # code a completion may continue (HumanEval's prompt); "" for MBPP


# ----------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------

_DEF_RE = r"^\s*def\s+{}\s*\("


def _first_def(code: str) -> str | None:
  found = re.search(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, re.MULTILINE)
  return found[1] if found else None


def mbpp_problem(record: dict, where: str) -> tuple[int, CodeProblem]:
  """(task_id, problem) of one MBPP row, original or sanitized release."""
  task_id = field(record, "task_id", int, where)
  text = field(record, "text", str, where, optional=True) or field(record, "prompt", str, where)
  tests = string_list(record, "test_list", where)
  if not tests:
    raise RecordError(f"{where}: field 'test_list' is empty; an MBPP problem needs its tests")
  setup = field(record, "test_setup_code", str, where, optional=True) or ""
  if "test_imports" in record:
    setup = "\n".join(string_list(record, "test_imports", where)) + ("\n" + setup if setup else "")
  code = field(record, "code", str, where, optional=True) or ""
  entry = _first_def(code) or _called_function(tests[0])
  if entry is None:
    raise RecordError(f"{where}: cannot tell which function the tests call (no `def` in 'code', none called "
                      f"in {tests[0]!r:.80})")
  shown = "\n".join(tests)
  return task_id, CodeProblem(f"mbpp/{task_id}", f"{text} Your code should pass these tests:\n\n{shown}",
                              setup, shown + "\n", entry)


def _called_function(test: str) -> str | None:
  found = re.search(r"([A-Za-z_]\w*)\s*\(", test.removeprefix("assert").strip())
  return found[1] if found else None


def humaneval_problem(record: dict, where: str) -> CodeProblem:
  task_id = field(record, "task_id", str, where)
  prompt, test = field(record, "prompt", str, where), field(record, "test", str, where)
  entry = field(record, "entry_point", str, where)
  if "def check" not in test:
    raise RecordError(f"{where}: field 'test' defines no check(candidate) function")
  text = f"Complete the following Python function.\n\n```python\n{prompt}```"
  return CodeProblem(task_id, text, "", f"{test}\n\ncheck({entry})\n", entry, stub=prompt)


def read_mbpp(path: str, key: str = "mbpp_path") -> dict[str, list[CodeProblem]]:
  """MBPP's problems by split (train, validation, test), or MissingData naming config.task.<key>."""
  if not path or not os.path.isfile(path):
    raise MissingData(f"config.task.{key}={path!r} is not a file. {HOW_TO_GET}")
  splits: dict[str, list[CodeProblem]] = {name: [] for name in MBPP_SPLITS}
  for where, record in iter_records(path):
    task_id, problem = mbpp_problem(record, where)
    split = next((name for name, ids in MBPP_SPLITS.items() if task_id in ids), None)
    if split is not None:
      splits[split].append(problem)
  return splits


def read_humaneval(path: str, key: str = "humaneval_path") -> list[CodeProblem]:
  if not path or not os.path.isfile(path):
    raise MissingData(f"config.task.{key}={path!r} is not a file. {HOW_TO_GET}")
  return [humaneval_problem(record, where) for where, record in iter_records(path)]


def read_code_problems(path: str) -> list[CodeProblem]:
  """Problems of a file in either format, told apart row by row (HumanEval rows have `entry_point`)."""
  out = []
  for where, record in iter_records(path):
    out.append(humaneval_problem(record, where) if "entry_point" in record else mbpp_problem(record, where)[1])
  if not out:
    raise RecordError(f"{path}: no records")
  return out


def problem_key(task_id) -> str:
  """The id a completion or repair row names its problem by: MBPP's integers as "mbpp/<id>"."""
  return f"mbpp/{task_id}" if isinstance(task_id, int) and not isinstance(task_id, bool) else str(task_id)


def read_completions(path: str, problems: dict[str, CodeProblem]) -> list[tuple[CodeProblem, str]]:
  """(problem, completion) rows of a JSONL of task_id and completion, each naming a known problem."""
  rows = []
  for where, record in iter_records(path):
    task_id = field(record, "task_id", (int, str), where)
    if problem_key(task_id) not in problems:
      raise RecordError(f"{where}: task_id {task_id!r} is not a problem of the tasks file")
    rows.append((problems[problem_key(task_id)], field(record, "completion", str, where)))
  if not rows:
    raise RecordError(f"{path}: no records")
  return rows


# ----------------------------------------------------------------------------
# Programs
# ----------------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str, entry_point: str = "") -> str:
  """The program in a reply: the last ```python block that defines `entry_point` (else the last block; a
  block cut off by the token budget counts), or the whole text when it has no block."""
  blocks = [b for b in _FENCE_RE.findall(text) if b.strip()]
  if not blocks:
    return text
  defining = [b for b in blocks if entry_point and re.search(_DEF_RE.format(re.escape(entry_point)), b, re.M)]
  return (defining or blocks)[-1]


def program(problem: CodeProblem, reply: str) -> str:
  """What the sandbox runs for a reply: setup, the extracted code (after the stub when it continues it), tests."""
  code = extract_code(reply, problem.entry_point)
  if problem.stub and not re.search(_DEF_RE.format(re.escape(problem.entry_point)), code, re.MULTILINE):
    code = problem.stub + code
  return "\n\n".join(part for part in (problem.setup, code, problem.tests) if part)


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class CodeTask(TurnsTask):
  """MBPP (train / validation as dev) with HumanEval or MBPP's test split held out, on an HF tokenizer."""

  config: ml_collections.ConfigDict
  needs_train: bool = True

  def __post_init__(self):
    c = self.config
    if c.eval not in EVAL_SETS:
      raise ValueError(f"config.task.eval={c.eval!r}; expected one of {EVAL_SETS}")
    splits = read_mbpp(c.mbpp_path)
    self.train = splits["train"]
    if not self.train and self.needs_train:
      raise ValueError(f"config.task.mbpp_path={c.mbpp_path!r} holds no training problems (task_id 601-974)")
    self.dev = splits["validation"][:c.dev_size]
    held_out = read_humaneval(c.humaneval_path) if c.eval == "humaneval" else splits["test"]
    self.eval_problems = held_out[:c.eval_size] if c.eval_size else held_out
    if not self.eval_problems:
      raise ValueError(f"config.task.eval={c.eval!r}: no held-out problems (MBPP's test split is task_id 11-510)")
    self.repairs = read_completions(c.repair_path, {p.id: p for p in sum(splits.values(), [])}) \
        if c.repair_path else []
    if not c.tokenizer_dir:
      raise ValueError("config.task.tokenizer_dir is empty; set it or config.model.hf_dir")
    self.tokenizer = HFTokenizer(c.tokenizer_dir)
    self.templates = templates.get_templates(c.templates)
    self.turns = task_turns(self.tokenizer, self.templates, c.chat_template and self.tokenizer.has_chat_template,
                            self.eval_problems[0].text)
    self.stop_ids, self.instruction_ids = self.turns.stop_ids, self.turns.instruction_ids
    self.sandbox = Sandbox(sandbox_config(c.sandbox))

  def outcomes(self, problems: Sequence[CodeProblem], replies: Sequence[str]) -> list[Outcome]:
    """Each reply's program run against its problem's tests, concurrently in the sandbox."""
    return self.sandbox.run_many([program(p, r) for p, r in zip(problems, replies)])

  def rewards(self, problems: Sequence[CodeProblem], ids: Sequence) -> np.ndarray:
    return np.array([o.passed for o in self.outcomes(problems, [self.text(y) for y in ids])], np.float32)

  def reward(self, problem: CodeProblem, ids) -> float:
    return float(self.rewards([problem], [ids])[0])

  def train_problems(self, seed: int, stream: str, step: int, n: int) -> list[CodeProblem]:
    return endless_shuffle(self.train, seed, stream, step, n)

  def dev_problems(self, n: int) -> list[CodeProblem]:
    """n of MBPP's validation problems (config.task.dev_size): what settings are tuned on."""
    if n > len(self.dev):
      raise ValueError(f"{n} dev problems asked (config.eval.interval_problems), but config.task.dev_size="
                       f"{self.config.dev_size} with {len(self.dev)} MBPP validation problems read")
    return self.dev[:n]

  @functools.cached_property
  def repair_pairs(self) -> tuple[list[CodeProblem], list[str], int]:
    """MBPP-R: (problems, wrong first attempts, attempts dropped because they pass their tests)."""
    if not self.repairs:
      return [], [], 0
    passed = [o.passed for o in self.outcomes([p for p, _ in self.repairs], [a for _, a in self.repairs])]
    kept = [pair for pair, ok in zip(self.repairs, passed) if not ok]
    return [p for p, _ in kept], [a for _, a in kept], sum(passed)
