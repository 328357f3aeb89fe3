"""`python -m scorejax.sample`: ids line, text line, and bad input reported without a traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest

from hf_fixtures import ALPHABET, VOCAB, build_hf_model, save_char_tokenizer

_ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")


def _checkpoint(tmp_path_factory, family):
  """A tiny `family` model (EOS 2) with a character tokenizer of its vocabulary, and transformers' greedy output."""
  import torch
  path = tmp_path_factory.mktemp(f"{family}_tok")
  model = build_hf_model(family, initializer_range=0.3, vocab_size=VOCAB, eos_token_id=2)
  model.save_pretrained(path)
  save_char_tokenizer(path)
  prompt_ids = [ALPHABET.index(c) + 4 for c in "12+3="]
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False,
                         eos_token_id=2, pad_token_id=0)
  return str(path), prompt_ids, out[0, len(prompt_ids):].tolist()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return _checkpoint(tmp_path_factory, "llama")


@pytest.fixture(scope="module")
def qwen3_checkpoint(tmp_path_factory):
  return _checkpoint(tmp_path_factory, "qwen3")


@pytest.fixture(scope="module")
def gemma2_checkpoint(tmp_path_factory):
  return _checkpoint(tmp_path_factory, "gemma2")


def _run(*args):
  return subprocess.run([sys.executable, "-m", "scorejax.sample", *args], capture_output=True, text=True,
                        env=_ENV, timeout=300)


@pytest.mark.parametrize("which", ["checkpoint", "qwen3_checkpoint", "gemma2_checkpoint"])
def test_prompt_text_prints_greedy_ids_then_text(which, request):
  path, _, expected = request.getfixturevalue(which)
  proc = _run(f"--hf_dir={path}", "--prompt=12+3=", "--max_new_tokens=6", "--greedy")
  assert proc.returncode == 0, proc.stderr[-2000:]
  # transformers' greedy tokens, cut after EOS (2) if it came; the text skips special tokens.
  ids = expected[:expected.index(2) + 1] if 2 in expected else expected
  text = "".join(ALPHABET[t - 4] for t in ids if t >= 4)
  assert proc.stdout.endswith("ids=" + ",".join(map(str, ids)) + "\n" + text + "\n"), proc.stdout


def test_bad_input_exits_with_a_message(checkpoint):
  path, prompt_ids, _ = checkpoint
  ids = ",".join(map(str, prompt_ids))
  proc = _run(f"--hf_dir={path}", f"--prompt_ids={ids}", "--max_new_tokens=6", "--stop_ids=500")
  assert proc.returncode == 1
  assert f"error: stop token 500 is outside the model's vocabulary [0, {VOCAB})" in proc.stderr
  assert "Traceback" not in proc.stderr
  proc = _run(f"--hf_dir={path}", "--prompt_ids=1,x", "--max_new_tokens=6")
  assert proc.returncode != 0 and "'x' is not an integer token id" in proc.stderr


def test_prompt_ids_work_without_a_tokenizer(checkpoint, tmp_path):
  import jax
  from scorejax.models import hf
  from scorejax.sampling import Sample, SamplerConfig, left_pad, sample
  path, prompt_ids, _ = checkpoint
  for name in ("config.json", "model.safetensors"):
    with open(os.path.join(path, name), "rb") as f, open(tmp_path / name, "wb") as g:
      g.write(f.read())
  proc = _run(f"--hf_dir={tmp_path}", "--prompt_ids=" + ",".join(map(str, prompt_ids)),
              "--max_new_tokens=6", "--temperature=0.8", "--top_p=0.9", "--seed=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  # The same draw in process: key(seed), the model's EOS (2) as stop token, pad 0.
  lm, params = hf.load_hf(str(tmp_path))
  tokens, mask = left_pad([prompt_ids], 0)
  r = sample(lm, params, tokens, mask, jax.random.key(3), Sample(temperature=0.8, top_p=0.9),
             SamplerConfig(max_new_tokens=6))
  ids = np.asarray(r.tokens_BxN)[0, :int(r.lengths_B[0])].tolist()
  assert proc.stdout.endswith("ids=" + ",".join(map(str, ids)) + "\n"), proc.stdout  # no text line
