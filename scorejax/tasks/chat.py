"""Chat templates: the tokens that close an assistant turn, and an instruction appended after a turn.

A multi-turn episode is sampled turn by turn: the policy writes y1 from
prompt(x), then p is appended and the policy writes y2. That is only the
conversation the chat template renders when the rendered [x, y1, p] starts
with exactly the tokens the policy saw and produced. These probes check it
once per task, with stand-in attempts, and say what differs when it fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from scorejax.tasks import templates
from scorejax.tokenizers import plain_concatenation


class ChatTemplateError(ValueError):
  """The chat template does not render [x, y1, p, y2] as prompt + attempt + p + attempt."""


# Two stand-in first attempts: p must not depend on what the attempt says.
_PROBE_ATTEMPTS = ("Final Answer: The final answer is $1$. I hope it is correct.",
                   "So x = 2, and the answer is \\boxed{2}.")


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


@dataclasses.dataclass(frozen=True)
class Turns:
  """How a task on an HF tokenizer writes conversations as tokens: what every such task shares.

  `render` is the chat template (None: plain concatenation of the contents);
  an attempt is closed by `attempt_end` (the template's end-of-turn token, or
  EOS), sampling stops at any of `stop_ids`, and `instruction_ids` are the
  tokens of SCoRe's second-turn instruction p after a closed attempt.
  """

  tokenizer: object
  render: Callable | None
  attempt_end: list[int]
  stop_ids: tuple[int, ...]
  instruction_ids: list[int]

  def messages_ids(self, messages: Sequence[dict]) -> list[int]:
    text = self.render(list(messages), True) if self.render else plain_concatenation(messages)
    return self.tokenizer.encode(text)

  def answer_ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text) + self.attempt_end

  def text(self, ids) -> str:
    return self.tokenizer.decode([t for t in ids if t not in self.stop_ids], skip_special_tokens=True)


class TurnsTask:
  """The token methods every task on an HF tokenizer shares, read through its `turns` and `templates`
  (MathTask, CodeTask); a problem has the `text` the solve prompt shows."""

  turns: Turns
  templates: templates.TemplateSet

  def messages_ids(self, messages: Sequence[dict]) -> list[int]:
    return self.turns.messages_ids(messages)

  def prompt_ids(self, problem) -> list[int]:
    return self.messages_ids(templates.solve_messages(self.templates, problem.text))

  def answer_ids(self, text: str) -> list[int]:
    return self.turns.answer_ids(text)

  def text(self, ids) -> str:
    return self.turns.text(ids)


def task_turns(tokenizer, ts: templates.TemplateSet, use_chat: bool, probe: str) -> Turns:
  """The Turns of a task whose prompts are `ts`, through the tokenizer's chat template when `use_chat`
  (checked on the problem text `probe`: `turn_end_id`, `instruction_ids`)."""
  render = tokenizer.apply_chat_template if use_chat else None
  turn_end = turn_end_id(render, tokenizer, ts, probe)
  # The token the policy is trained and expected to close an attempt with.
  attempt_end = [tokenizer.eos_id if turn_end is None else turn_end]
  stop_ids = tuple(dict.fromkeys([tokenizer.eos_id] + attempt_end))
  if use_chat:
    p = instruction_ids(render, tokenizer, ts, probe, attempt_end)
  else:  # plain text: the sampled y1 ends with EOS and p follows it
    p = tokenizer.encode(ts.self_correct)
  return Turns(tokenizer, render, attempt_end, stop_ids, p)
