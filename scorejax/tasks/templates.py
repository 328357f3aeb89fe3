"""Prompt templates as data, the message lists built from them, and their output parsers.

A `TemplateSet` holds every prompt one task needs, as format strings:

  solve         first attempt at a problem                       {problem}
  self_correct  SCoRe's second-turn instruction (Kumar et al., arXiv 2409.12917)
  step_critic   SPC step critic (Chen et al., arXiv 2504.19162):  {problem} {previous_steps} {step}
                answer ends in <Answer>Correct</Answer> / <Answer>Incorrect</Answer>
  critique      whole-solution critique, ProcessBench (Zheng et al., arXiv 2412.06559)
                and DeepCritic (Yang et al., arXiv 2505.00662):  {problem} {steps}
                answer ends in \\boxed{index of the earliest wrong step, or -1}
  refine        critique-guided refinement (Xi et al., arXiv 2411.16579):
                                                                  {problem} {solution} {critique}
  sneaky        SPC sneaky generator: names an error type, then writes the wrong step:
                                                                  {problem} {previous_steps} {step} {error_types}
  annotate      a critique written with what is known about the solution (MathCritique's
                annotator, given the right answer and where / what the error is), in the
                critique's own format:                    {problem} {answer} {steps} {known}

Sets: "math" (the SCoRe instruction verbatim, ProcessBench's paragraph tags
indexed from 0), "deepcritic" (the same, steps numbered from 1 as DeepCritic
does), "code" (MBPP's prompt, SCoRe's instruction for code) and "arith" (short prompts for the character-level built-in task,
steps numbered from 1). A custom set is `dataclasses.replace(TEMPLATES[name], ...)`.

Separators live inside the contents: rendered without a chat template (plain
concatenation), a conversation still reads as one well-formed document.
With a chat template, `render` applies it through the tokenizer.

Every parser returns a value or an `Invalid(reason)`, never a silent default.
Careful with indices: ProcessBench labels are 0-indexed while DeepCritic and
the arith set number steps from 1; `parse_critique_index` always returns the
0-indexed step (or -1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from scorejax.rewards import answers


@dataclasses.dataclass(frozen=True)
class Invalid:
  """A model output that does not follow its format; counted, never mapped to a class."""

  reason: str


def is_invalid(value) -> bool:
  return isinstance(value, Invalid)


# As published in SCoRe (Kumar et al. 2024), section on MATH; used verbatim.
SCORE_MATH_INSTRUCTION = (
    "There might be an error in the solution above because of lack of "
    "understanding of the question. Please correct the error, if any, and "
    "rewrite the solution. Only output the final solution! At the end of the "
    "Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)

# SCoRe's math instruction with "solution" read as "code" (the second turn on MBPP / HumanEval).
SCORE_CODE_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding "
    "of the question. Please correct the error, if any, and rewrite the solution. "
    "Only output the final correct Python program!"
)

CORRECT_VERDICT = "<Answer>Correct</Answer>"
INCORRECT_VERDICT = "<Answer>Incorrect</Answer>"


@dataclasses.dataclass(frozen=True)
class TemplateSet:
  """All prompts of one task; fields are `str.format` templates (see module docstring)."""

  name: str  # key in TEMPLATES
  answer_kind: str  # "math" (extracted string), "arith" (the integer on the Answer: line) or "code" (none: tests)
  solve: str  # first attempt; {problem}
  self_correct: str  # SCoRe second-turn user message; no fields
  step_critic: str  # {problem} {previous_steps} {step}
  previous_step: str  # one earlier step inside step_critic/sneaky; {index} {step}
  critique: str  # {problem} {steps}
  critique_step: str  # one step inside critique; {index} {step}
  critique_first_index: int  # number shown for the first step: 0 ProcessBench, 1 DeepCritic
  refine: str  # {problem} {solution} {critique}
  sneaky: str  # {problem} {previous_steps} {step} {error_types}
  annotate: str = ""  # {problem} {answer} {steps} {known}; empty: the set has no model annotator


_MATH_FINAL_FORM = (
    'At the end of the Solution, when you give your final answer, write it in '
    'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)

_MATH_STEP_CRITIC = (
    "The following is a math problem and a partial solution, split into steps. "
    "Your task is to check whether the last step is correct, given the problem "
    "and the steps before it.\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Previous Steps]\n\n{previous_steps}\n"
    "[Step to Check]\n\n{step}\n\n"
    "Analyse the step, then end your answer with <Answer>Correct</Answer> if "
    "the step is correct or <Answer>Incorrect</Answer> if it is not.\n"
)

_MATH_SNEAKY = (
    "The following is a math problem, the steps of a solution so far, and its "
    "next step, which is correct.\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Previous Steps]\n\n{previous_steps}\n"
    "[Correct Step]\n\n{step}\n\n"
    "Rewrite the correct step into a subtly incorrect one. First name the error "
    "type, one of: {error_types}. Answer in the form\n"
    "Error type: <type>\nStep: <the incorrect step>\n"
)

_MATH_REFINE = (
    "Problem:\n{problem}\n\n"
    "Solution:\n{solution}\n\n"
    "Critique:\n{critique}\n\n"
    "The critique above reviews the solution step by step. Please refine the "
    "solution according to the critique: keep the steps it judges correct and "
    "fix the first incorrect step and everything after it. "
    + _MATH_FINAL_FORM
    + "\n\nRefined Solution:\n"
)

# MathCritique's annotator prompt, in the deliberate critique format: what is known about the solution (the right
# final answer; where the earliest error is and what kind, when known) is given, and the critique is to read as
# if it had been found.
_MATH_ANNOTATE = (
    "The following is a math problem, its correct final answer, and a solution split into numbered steps.\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Correct Final Answer]\n\n{answer}\n\n"
    "[Solution]\n\n{steps}"
    "[What Is Known About the Solution]\n\n{known}\n\n"
    "Critique the solution step by step: for each step in turn, check it carefully, write your critique and "
    "judge whether the step is correct. At the first incorrect step, explain what is wrong and how to fix it, "
    "then stop. Do not mention the correct final answer or what you were told; find it in the steps. Finally, "
    "put the number of the earliest incorrect step in \\boxed{{}}, or \\boxed{{-1}} if every step is correct.\n"
)

# ProcessBench's official critique prompt (Qwen/ProcessBench, code/run_eval.py).
_PROCESSBENCH_CRITIQUE = (
    "The following is a math problem and a solution (split into paragraphs, "
    "enclosed with tags and indexed from 0):\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Solution]\n\n{steps}"
    "Your task is to review and critique the solution paragraph by paragraph. "
    "Once you identify an error in a paragraph, return the index of the "
    "paragraph where the earliest error occurs. Otherwise, return the index of "
    '-1 (which typically denotes "not found").\n\n'
    "Please put your final answer (i.e., the index) in \\boxed{{}}."
)

_DEEPCRITIC_CRITIQUE = (
    "The following is a math problem and a solution, split into steps numbered "
    "from 1.\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Solution]\n\n{steps}"
    "Critique the solution step by step: for each step in turn, check it "
    "carefully, write your critique and judge whether the step is correct. "
    "Stop at the first incorrect step. Finally, put the number of the earliest "
    "incorrect step in \\boxed{{}}, or \\boxed{{-1}} if every step is correct.\n"
)

_MATH = TemplateSet(
    name="math",
    answer_kind="math",
    solve=(
        "Solve the following math problem step by step. "
        + _MATH_FINAL_FORM
        + "\n\nProblem:\n{problem}\n\nSolution:\n"
    ),
    self_correct="\n\n" + SCORE_MATH_INSTRUCTION + "\n\nSolution:\n",
    step_critic=_MATH_STEP_CRITIC,
    previous_step="Step {index}: {step}\n",
    critique=_PROCESSBENCH_CRITIQUE,
    critique_step="<paragraph_{index}>\n{step}\n</paragraph_{index}>\n\n",
    critique_first_index=0,
    refine=_MATH_REFINE,
    sneaky=_MATH_SNEAKY,
    annotate=_MATH_ANNOTATE,
)

_DEEPCRITIC = dataclasses.replace(
    _MATH,
    name="deepcritic",
    critique=_DEEPCRITIC_CRITIQUE,
    critique_step="Step {index}: {step}\n\n",
    critique_first_index=1,
)

# MBPP's prompt (Austin et al. 2021) around a problem whose text carries its shown tests (`tasks.code`). No
# critic method runs on code: the critic fields are the math set's.
_CODE = dataclasses.replace(
    _MATH,
    name="code",
    answer_kind="code",
    solve=("You are an expert Python programmer, and here is your task: {problem}\n\n"
           "Write the whole program in one ```python code block.\n"),
    self_correct="\n\n" + SCORE_CODE_INSTRUCTION + "\n\n",
)

# Short prompts: the built-in task is read by character-level models on a CPU.
_ARITH = TemplateSet(
    name="arith",
    answer_kind="arith",
    solve="Q: {problem}\nA:\n",
    self_correct="\nCheck and rewrite.\nA:\n",
    step_critic="Q: {problem}\n{previous_steps}Check: {step}\n",
    previous_step="{step}\n",
    critique="Q: {problem}\n{steps}Find the first wrong line:\n",
    critique_step="{index}: {step}\n",
    critique_first_index=1,
    refine="Q: {problem}\n{solution}\nReview:\n{critique}\nFix it.\nA:\n",
    sneaky="Q: {problem}\n{previous_steps}Step: {step}\nErrors: {error_types}\n",
)

TEMPLATES: dict[str, TemplateSet] = {t.name: t for t in (_MATH, _DEEPCRITIC, _CODE, _ARITH)}


def get_templates(name: str) -> TemplateSet:
  if name not in TEMPLATES:
    raise KeyError(f"unknown template set {name!r}; expected one of {sorted(TEMPLATES)}")
  return TEMPLATES[name]


# ------------------------------------------------------------------ messages


def _user(content: str) -> dict:
  return {"role": "user", "content": content}


def _assistant(content: str) -> dict:
  return {"role": "assistant", "content": content}


def _previous_steps(ts: TemplateSet, steps: Sequence[str]) -> str:
  return "".join(
      ts.previous_step.format(index=i + ts.critique_first_index, step=s)
      for i, s in enumerate(steps)
  )


def solve_messages(ts: TemplateSet, problem: str) -> list[dict]:
  return [_user(ts.solve.format(problem=problem))]


def self_correct_messages(ts: TemplateSet, problem: str, first_attempt: str) -> list[dict]:
  """[x, y1, p]: SCoRe's second turn; p never says whether y1 was right."""
  return solve_messages(ts, problem) + [_assistant(first_attempt), _user(ts.self_correct)]


def two_attempt_messages(
    ts: TemplateSet, problem: str, first_attempt: str, second_attempt: str
) -> list[dict]:
  """A full two-attempt conversation, the data of Pair-SFT / STaR baselines."""
  return self_correct_messages(ts, problem, first_attempt) + [_assistant(second_attempt)]


def step_critic_messages(
    ts: TemplateSet, problem: str, previous_steps: Sequence[str], step: str
) -> list[dict]:
  return [
      _user(
          ts.step_critic.format(
              problem=problem, previous_steps=_previous_steps(ts, previous_steps), step=step
          )
      )
  ]


def critique_messages(ts: TemplateSet, problem: str, steps: Sequence[str]) -> list[dict]:
  shown = "".join(
      ts.critique_step.format(index=i + ts.critique_first_index, step=s)
      for i, s in enumerate(steps)
  )
  return [_user(ts.critique.format(problem=problem, steps=shown))]


def refine_messages(ts: TemplateSet, problem: str, solution: str, critique: str) -> list[dict]:
  return [_user(ts.refine.format(problem=problem, solution=solution, critique=critique))]


def sneaky_messages(
    ts: TemplateSet,
    problem: str,
    previous_steps: Sequence[str],
    step: str,
    error_types: Sequence[str],
) -> list[dict]:
  return [
      _user(
          ts.sneaky.format(
              problem=problem,
              previous_steps=_previous_steps(ts, previous_steps),
              step=step,
              error_types=", ".join(error_types),
          )
      )
  ]


def annotate_messages(ts: TemplateSet, problem: str, answer: str, steps: Sequence[str], known: str) -> list[dict]:
  """The annotator's prompt: the solution shown as the critique shows it, with what is known about it."""
  if not ts.annotate:
    raise ValueError(f"template set {ts.name!r} has no annotator prompt (TemplateSet.annotate)")
  shown = "".join(ts.critique_step.format(index=i + ts.critique_first_index, step=s) for i, s in enumerate(steps))
  return [_user(ts.annotate.format(problem=problem, answer=answer, steps=shown, known=known))]


def render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
  """The prompt text: the tokenizer's chat template, or the plain concatenation."""
  return tokenizer.apply_chat_template(
      list(messages), add_generation_prompt=add_generation_prompt
  )


# ------------------------------------------------------------------ outputs


def format_step_verdict(correct: bool) -> str:
  return CORRECT_VERDICT if correct else INCORRECT_VERDICT


def format_critique_index(label: int, first_index: int) -> str:
  """The boxed answer for a 0-indexed label (-1: no error) in a set numbering from first_index."""
  shown = -1 if label == -1 else label + first_index
  return "\\boxed{" + str(shown) + "}"


def format_sneaky(error_type: str, step: str) -> str:
  return f"Error type: {error_type}\nStep: {step}"


_VERDICT_RE = re.compile(r"<answer>\s*(correct|incorrect)\s*</answer>", re.IGNORECASE)
_INDEX_RE = re.compile(r"-?\d{1,9}")
_SNEAKY_TYPE_RE = re.compile(r"^[ \t]*error type:[ \t]*(\S[^\n]*)$", re.IGNORECASE | re.MULTILINE)
_SNEAKY_STEP_RE = re.compile(r"^[ \t]*step:[ \t]*(\S[^\n]*)$", re.IGNORECASE | re.MULTILINE)


def parse_step_verdict(text: str) -> bool | Invalid:
  """True for <Answer>Correct</Answer>, False for Incorrect (last tag wins, any case)."""
  matches = _VERDICT_RE.findall(text)
  if not matches:
    return Invalid("no <Answer>Correct</Answer> or <Answer>Incorrect</Answer> tag")
  return matches[-1].lower() == "correct"


def parse_critique_index(
    text: str, num_steps: int | None = None, first_index: int = 0
) -> int | Invalid:
  """The 0-indexed earliest wrong step named in the last \\boxed{}, or -1.

  `first_index` is the number the prompt gave the first step (0 for
  ProcessBench, 1 for DeepCritic). With `num_steps`, an index naming no step
  is invalid.
  """
  boxed = answers.extract_boxed(text)
  if boxed is None:
    return Invalid("no \\boxed{} answer")
  content = boxed.strip().strip("$").strip()
  if not _INDEX_RE.fullmatch(content):
    return Invalid(f"\\boxed{{{boxed[:40]}}} is not an integer")
  shown = int(content)
  if shown == -1:
    return -1
  index = shown - first_index
  if index < 0 or (num_steps is not None and index >= num_steps):
    return Invalid(f"\\boxed{{{shown}}} names no step (steps are numbered from {first_index})")
  return index


def parse_final_answer(text: str, kind: str = "math") -> str | int | Invalid:
  """The final answer of a solution: a string for "math", the integer for "arith"."""
  if kind == "arith":
    value = answers.extract_arith_answer(text)
    return Invalid("no 'Answer: <integer>' line") if value is None else value
  if kind == "math":
    value = answers.extract_final_answer(text)
    return Invalid("no final answer found") if value is None else value
  if kind == "code":
    return Invalid("a program states no final answer: its tests decide")
  raise ValueError(f"unknown answer kind {kind!r}; expected 'math', 'arith' or 'code'")


def parse_sneaky(text: str, error_types: Sequence[str]) -> tuple[str, str] | Invalid:
  """(error type, incorrect step) from 'Error type: ...' then 'Step: ...'."""
  types = list(_SNEAKY_TYPE_RE.finditer(text))
  if not types:
    return Invalid("no 'Error type:' line")
  last_type = types[-1]
  error_type = last_type.group(1).strip()
  if error_type not in error_types:
    return Invalid(f"error type {error_type[:40]!r} is not one of {list(error_types)}")
  step = _SNEAKY_STEP_RE.search(text, last_type.end())
  if step is None:
    return Invalid("no 'Step:' line after the error type")
  return error_type, step.group(1).strip()
