"""Tokenizers: the character vocabulary of the built-in task and a local HF tokenizer."""

import numpy as np
import pytest

from scorejax import tokenizers
from scorejax.tasks import arith, templates


def test_char_tokenizer_ids_are_fixed():
  tok = tokenizers.CharTokenizer()
  assert isinstance(tok, tokenizers.Tokenizer)
  # pad/bos/eos, newline, then printable ASCII from space (32) to '~' (126).
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == 3 + 1 + 95
  assert tok.encode("\n") == [3]
  assert tok.encode(" ") == [4]
  # '7' is ASCII 55 -> 4 + (55 - 32); a vocabulary built from a set would not
  # give the same id on every machine.
  assert tok.encode("7+") == [4 + 55 - 32, 4 + 43 - 32]


def test_char_tokenizer_round_trip_and_decode_rules():
  tok = tokenizers.CharTokenizer()
  text = "Q: Start at 7. Apply +5 *3.\nA:\n7+5=12\n12*3=36\nAnswer: 36"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  padded = np.array([tok.bos_id] + ids + [tok.eos_id, tok.pad_id, tok.pad_id])
  assert tok.decode(padded) == "<bos>" + text + "<eos>"
  assert tok.decode(padded, skip_special_tokens=True) == text


def test_char_tokenizer_unknown_character_names_it_and_its_position():
  tok = tokenizers.CharTokenizer()
  with pytest.raises(ValueError, match=r"'é'.*position 3"):
    tok.encode("caf\u00e9")


def test_char_tokenizer_covers_everything_the_task_and_templates_emit():
  tok = tokenizers.CharTokenizer()
  rng = np.random.default_rng(0)
  for phrasing in ("symbols", "words"):
    config = arith.ArithConfig(phrasing=phrasing)
    for _ in range(50):
      problem = arith.sample_problem(rng, config)
      solution = arith.write_solution(problem, rng, error_rate=0.5)
      for ts in templates.TEMPLATES.values():
        messages = templates.two_attempt_messages(ts, problem.text, solution.text, solution.text)
        messages += templates.critique_messages(ts, problem.text, solution.lines)
        messages += templates.step_critic_messages(ts, problem.text, solution.lines[:1], "x")
        messages += templates.sneaky_messages(ts, problem.text, (), "x", arith.ERROR_TYPES)
        messages += templates.refine_messages(ts, problem.text, solution.text, "c")
        text = tok.apply_chat_template(messages)
        assert tok.decode(tok.encode(text)) == text
      critique = arith.solution_critique(problem, solution.lines)
      assert tok.decode(tok.encode(critique)) == critique


def test_char_tokenizer_chat_template_is_plain_concatenation():
  tok = tokenizers.CharTokenizer()
  messages = [{"role": "user", "content": "Q: 1\nA:\n"}, {"role": "assistant", "content": "1"}]
  assert not tok.has_chat_template
  assert tok.apply_chat_template(messages) == "Q: 1\nA:\n1"


def _save_tiny_hf_tokenizer(path, chat_template=None):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3}
  for c in "abcdefghijklmnopqrstuvwxyz0123456789+-*=: \n<>":
    vocab[c] = len(vocab)
  backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
  backend.decoder = decoders.Fuse()
  tok = PreTrainedTokenizerFast(
      tokenizer_object=backend,
      pad_token="[PAD]",
      bos_token="[BOS]",
      eos_token="[EOS]",
      unk_token="[UNK]",
  )
  if chat_template is not None:
    tok.chat_template = chat_template
  tok.save_pretrained(str(path))
  return len(vocab)


def test_hf_tokenizer_wraps_a_local_directory(tmp_path):
  size = _save_tiny_hf_tokenizer(tmp_path)
  tok = tokenizers.HFTokenizer(tmp_path)
  assert isinstance(tok, tokenizers.Tokenizer)
  assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (size, 0, 1, 2)
  ids = tok.encode("ab 12")
  # One id per character and no BOS: encode never adds special tokens.
  assert ids == [4, 5, 45, 31, 32]  # a b, space after a-z 0-9 + - * = :, 1 2
  assert tok.decode(ids + [tok.pad_id, tok.pad_id]) == "ab 12"
  messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
  assert not tok.has_chat_template
  assert tok.apply_chat_template(messages) == "ab"


def test_hf_tokenizer_applies_its_chat_template(tmp_path):
  template = (
      "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}"
  )
  _save_tiny_hf_tokenizer(tmp_path, chat_template=template)
  tok = tokenizers.HFTokenizer(tmp_path)
  assert tok.has_chat_template
  messages = [{"role": "user", "content": "1+1"}]
  assert tok.apply_chat_template(messages) == "<user>1+1<assistant>"
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == "<user>1+1"
  rendered = templates.render(tok, templates.solve_messages(templates.TEMPLATES["arith"], "x"))
  assert rendered == "<user>Q: x\nA:\n<assistant>"


def test_hf_chat_template_dates_are_fixed_not_today(tmp_path):
  template = (  # the shape of Llama 3.x's system header
      "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
      "Today Date: {{ date_string }}|{% for m in messages %}{{ m['content'] }}{% endfor %}"
  )
  _save_tiny_hf_tokenizer(tmp_path, chat_template=template)
  tok = tokenizers.HFTokenizer(tmp_path)
  rendered = tok.apply_chat_template([{"role": "user", "content": "1+1"}])
  assert rendered == f"Today Date: {tokenizers.CHAT_TEMPLATE_DATE}|1+1"


def test_hf_tokenizer_errors_name_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenizers.HFTokenizer(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
    tokenizers.HFTokenizer(tmp_path / "empty")
