"""Tokenizers with one interface: a local HF tokenizer, or characters for the built-in task.

Every model, sampler and data pipeline in scorejax talks to a `Tokenizer`:

    tok.encode("7+5=12")            -> list[int]  (no special tokens added)
    tok.decode(ids)                 -> str        (pad ids skipped)
    tok.apply_chat_template(msgs)   -> str        (the model's chat template, or a
                                                   plain concatenation of the
                                                   contents when it has none)
    tok.vocab_size, tok.pad_id, tok.eos_id, tok.bos_id (None when the model has none)

`encode` never adds BOS/EOS: callers that need them add `bos_id` / `eos_id`
themselves, so that prompt and response pieces can be concatenated exactly.

`HFTokenizer(path)` wraps a tokenizer directory saved by `save_pretrained`
(local files only; nothing is downloaded). `CharTokenizer()` is the fixed
character vocabulary of the built-in arithmetic task (`scorejax.tasks.arith`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


# Llama 3.x chat templates write a date into the system header, today's unless
# `date_string` is given: a fixed one keeps prompts (and a resumed run's
# episodes) the same on every day. It is the templates' own fallback date.
CHAT_TEMPLATE_DATE = "26 Jul 2024"


@runtime_checkable
class Tokenizer(Protocol):
  """What scorejax needs from a tokenizer."""

  vocab_size: int
  pad_id: int
  eos_id: int
  bos_id: int | None

  @property
  def has_chat_template(self) -> bool:
    ...

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    ...

  def apply_chat_template(
      self, messages: list[dict], add_generation_prompt: bool = True
  ) -> str:
    ...


def plain_concatenation(messages: Sequence[dict]) -> str:
  """The contents of `messages` joined as they are: the no-chat-template rendering.

  Templates in `scorejax.tasks.templates` carry their own separators, so
  nothing is inserted between turns here.
  """
  parts = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
      raise ValueError(
          f"message {i} must be a dict with a string 'content', got {message!r}"
      )
    parts.append(message["content"])
  return "".join(parts)


def _ids_as_list(ids) -> list[int]:
  return [int(i) for i in np.asarray(ids).reshape(-1)]


# ------------------------------------------------------------------ characters

# Printable ASCII plus newline: everything the arithmetic task, its templates
# and the verbatim SCoRe instruction can emit. The order is part of the
# vocabulary, so token ids never change between runs or machines.
CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>")
CHAR_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
  """A fixed character vocabulary: ids 0/1/2 are pad/bos/eos, then one id per character.

  An unknown character is an error that names the character and its
  position; nothing is silently mapped to an unknown token.
  """

  def __init__(self, alphabet: str = CHAR_ALPHABET):
    if len(set(alphabet)) != len(alphabet):
      raise ValueError(f"CharTokenizer alphabet has repeated characters: {alphabet!r}")
    self.pad_id = 0
    self.bos_id = 1
    self.eos_id = 2
    self._alphabet = alphabet
    self._char_to_id = {c: i + len(CHAR_SPECIALS) for i, c in enumerate(alphabet)}
    self.vocab_size = len(CHAR_SPECIALS) + len(alphabet)

  @property
  def has_chat_template(self) -> bool:
    return False

  def encode(self, text: str) -> list[int]:
    ids = []
    for position, char in enumerate(text):
      token = self._char_to_id.get(char)
      if token is None:
        raise ValueError(
            f"CharTokenizer: character {char!r} (U+{ord(char):04X}) at position "
            f"{position} of the text is not in the vocabulary (printable ASCII "
            "and newline)"
        )
      ids.append(token)
    return ids

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    pieces = []
    for token in _ids_as_list(ids):
      if token == self.pad_id:
        continue
      if token < len(CHAR_SPECIALS):
        if not skip_special_tokens:
          pieces.append(CHAR_SPECIALS[token])
        continue
      if token >= self.vocab_size:
        raise ValueError(
            f"CharTokenizer: token id {token} is outside the vocabulary of size "
            f"{self.vocab_size}"
        )
      pieces.append(self._alphabet[token - len(CHAR_SPECIALS)])
    return "".join(pieces)

  def apply_chat_template(
      self, messages: list[dict], add_generation_prompt: bool = True
  ) -> str:
    del add_generation_prompt  # a plain concatenation has no generation cue
    return plain_concatenation(messages)


# ------------------------------------------------------------------ HF

# Any one of these marks a directory that AutoTokenizer can load offline.
_HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)


class HFTokenizer:
  """A tokenizer directory on local disk, loaded with `transformers.AutoTokenizer`.

  The pad id falls back to the EOS id when the tokenizer defines no pad token
  (Llama and Qwen base models); a tokenizer without an EOS token is an error,
  because generation could never stop.
  """

  def __init__(self, path: str | os.PathLike):
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise FileNotFoundError(
          f"HFTokenizer: tokenizer directory {path!r} does not exist; pass the "
          "local directory written by `save_pretrained` (nothing is downloaded)"
      )
    if not any(os.path.exists(os.path.join(path, f)) for f in _HF_TOKENIZER_FILES):
      raise FileNotFoundError(
          f"HFTokenizer: {path!r} holds no tokenizer: expected one of "
          f"{', '.join(_HF_TOKENIZER_FILES)}"
      )
    from transformers import AutoTokenizer  # heavy import, only when used

    self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    self.path = path
    if self._tok.eos_token_id is None:
      raise ValueError(f"HFTokenizer: the tokenizer in {path!r} has no EOS token")
    self.eos_id = int(self._tok.eos_token_id)
    pad = self._tok.pad_token_id
    self.pad_id = int(pad) if pad is not None else self.eos_id
    bos = self._tok.bos_token_id
    self.bos_id = int(bos) if bos is not None else None
    self.vocab_size = len(self._tok)

  @property
  def has_chat_template(self) -> bool:
    return bool(getattr(self._tok, "chat_template", None))

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False))

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    kept = [t for t in _ids_as_list(ids) if t != self.pad_id]
    return self._tok.decode(kept, skip_special_tokens=skip_special_tokens)

  def apply_chat_template(
      self, messages: list[dict], add_generation_prompt: bool = True
  ) -> str:
    if not self.has_chat_template:
      return plain_concatenation(messages)
    return self._tok.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt,
        date_string=CHAT_TEMPLATE_DATE,
    )
