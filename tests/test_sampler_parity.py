"""Greedy sampling equals transformers `generate` (greedy), token for token, on left-padded batches."""

import numpy as np
import pytest

from hf_fixtures import build_hf_model
from scorejax.models import hf
from scorejax.sampling import Greedy, SamplerConfig, left_pad, sample

NEW_TOKENS = 10


def _hf_greedy(model, tokens, mask, eos):
  import torch
  model.generation_config.eos_token_id = eos
  model.generation_config.pad_token_id = 0
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(tokens, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long),
                         max_new_tokens=NEW_TOKENS, do_sample=False)
  new = out[:, tokens.shape[1]:].numpy()
  return np.pad(new, ((0, 0), (0, NEW_TOKENS - new.shape[1])))  # generate stops when all rows have


def varied_model(family):
  """A random model whose greedy continuations vary: a wider init than the checkpoint default; for Gemma
  also post-norms far from 1, since its tied embeddings scaled by sqrt(D) make a random model repeat its
  last token."""
  import torch
  model = build_hf_model(family, initializer_range=0.3)
  if family.startswith("gemma"):
    torch.manual_seed(1)
    with torch.no_grad():
      for name, p in model.named_parameters():
        if ".post_" in name:
          p.add_(30.0 * torch.randn_like(p))
  return model


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_greedy_equals_transformers_generate(family, tmp_path):
  import jax
  model = varied_model(family)
  model.save_pretrained(tmp_path)
  lm, params = hf.load_hf(str(tmp_path))
  rng = np.random.default_rng(0)
  prompts = [rng.integers(4, lm.config.vocab_size, n).tolist() for n in (9, 4, 1)]
  tokens, mask = left_pad(prompts, pad_id=0, buckets=None)  # exactly HF's input, no bucket padding

  free = _hf_greedy(model, tokens, mask, eos=None)
  # Varied enough to mean something: every row changes token, and the rows share few of theirs.
  assert all(len(set(row)) > 1 for row in free.tolist()) and len(set(free.ravel().tolist())) > 6, free
  ours = sample(lm, params, tokens, mask, jax.random.key(0), Greedy(),
                SamplerConfig(max_new_tokens=NEW_TOKENS, stop_tokens=()))
  np.testing.assert_array_equal(np.asarray(ours.tokens_BxN), free)

  # With row 1's 4th token as EOS, row 1 (at least) stops early and pads after it, as in HF.
  eos = int(free[1, 3])
  stopped = _hf_greedy(model, tokens, mask, eos=eos)
  ours = sample(lm, params, tokens, mask, jax.random.key(0), Greedy(),
                SamplerConfig(max_new_tokens=NEW_TOKENS, stop_tokens=(eos,)))
  np.testing.assert_array_equal(np.asarray(ours.tokens_BxN), stopped)
  lengths = np.asarray(ours.lengths_B)
  assert lengths[1] <= 4 and bool(ours.finished_B[1])
  assert (stopped[1, lengths[1]:] == 0).all()
