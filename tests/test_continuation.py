"""Multi-turn continuation from the cache equals sampling from scratch on the packed context."""

import functools

import jax
import numpy as np
import pytest

from scorejax.models import LM, ModelConfig
from scorejax.sampling import (
    Sample,
    SamplerConfig,
    continue_sampling,
    left_pad,
    packed_context,
    resample_from_scratch,
    sample,
)

VOCAB = 16
STOP = 7


MODELS = {
    "qwen2": dict(family="qwen2", qkv_bias=True),
    # A sliding window of 4 positions: the continuation's queries are further than that from most of the
    # context, and the gaps a stopped row leaves in the cache must not count as positions.
    "gemma3": dict(family="gemma3", qk_norm=True, sandwich_norms=True, norm_offset=1.0, scale_embeddings=True,
                   mlp_activation="gelu_tanh", sliding_window=4, layer_types=("sliding_attention", "full_attention"),
                   rope_theta=1_000_000.0, rope_local_theta=10_000.0, query_pre_attn_scalar=16.0),
}


@functools.lru_cache(maxsize=None)
def _model(family="qwen2"):
  config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                       tie_embeddings=True, initializer_range=0.3, **MODELS[family])
  lm = LM.from_config(config)
  return lm, lm.init(jax.random.key(1))


def _episode():
  """Prompts of ragged lengths and turn-2 instructions of other ragged lengths."""
  rng = np.random.default_rng(0)
  prompts = [rng.integers(4, VOCAB, n).tolist() for n in (6, 2, 9, 4)]
  turns = [rng.integers(4, VOCAB, n).tolist() for n in (3, 7, 1, 4)]
  return left_pad(prompts, 0), left_pad(turns, 0)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("cache_length", [80, None], ids=["episode_cache", "grown_cache"])
def test_continuation_equals_sampling_from_scratch(cache_length, family):
  lm, params = _model(family)
  (x, x_mask), (p, p_mask) = _episode()
  rule = Sample(temperature=1.0)
  config = SamplerConfig(max_new_tokens=12, stop_tokens=(STOP,), sampling_logprobs=True)
  key1, key2 = jax.random.key(10), jax.random.key(11)
  first = sample(lm, params, x, x_mask, key1, rule, config, cache_length=cache_length)
  lengths1 = np.asarray(first.lengths_B)
  # Rows end attempt 1 at different steps, so the cache holds gaps of invalid slots.
  assert len(set(lengths1.tolist())) > 1 and np.asarray(first.finished_B).any(), lengths1
  np.testing.assert_array_equal(np.asarray(first.context.positions_B), x_mask.sum(1) + lengths1)

  scratch = resample_from_scratch(lm, params, x, x_mask, first, p, p_mask, key2, rule, config)
  reused = continue_sampling(lm, params, first.context, p, p_mask, key2, rule, config)
  np.testing.assert_array_equal(np.asarray(reused.tokens_BxN), np.asarray(scratch.tokens_BxN))
  np.testing.assert_array_equal(np.asarray(reused.lengths_B), np.asarray(scratch.lengths_B))
  np.testing.assert_array_equal(np.asarray(reused.finished_B), np.asarray(scratch.finished_B))
  np.testing.assert_allclose(np.asarray(reused.logprobs_BxN), np.asarray(scratch.logprobs_BxN), atol=1e-5)
  np.testing.assert_allclose(np.asarray(reused.sampling_logprobs_BxN),
                             np.asarray(scratch.sampling_logprobs_BxN), atol=1e-5)
  # Attempt 2 is not attempt 1 again: a continuation that lost the cache, or reused key1's
  # draws, would not match the from-scratch run above; a different key gives other tokens.
  other = resample_from_scratch(lm, params, x, x_mask, first, p, p_mask, jax.random.key(12), rule, config)
  assert not np.array_equal(np.asarray(other.tokens_BxN), np.asarray(scratch.tokens_BxN))
  # Only the new turn was written after attempt 1 (16 columns: the bucket of 7 tokens).
  end1 = 16 + lengths1.max()
  assert int(reused.context.cache.end) == end1 + 16 + int(np.asarray(reused.lengths_B).max())
  expected_length = 80 if cache_length else 64  # 16 + 12 + 16 + 12 = 56 -> bucket 64
  assert reused.context.cache.length == expected_length


def test_packed_context_is_prompt_then_attempt_then_turn():
  lm, params = _model()
  (x, x_mask), (p, p_mask) = _episode()
  first = sample(lm, params, x, x_mask, jax.random.key(10), Sample(),
                 SamplerConfig(max_new_tokens=12, stop_tokens=(STOP,)))
  rows = packed_context(x, x_mask, first, p, p_mask)
  tokens1, lengths1 = np.asarray(first.tokens_BxN), np.asarray(first.lengths_B)
  assert rows[1] == x[1][x_mask[1]].tolist() + tokens1[1, :lengths1[1]].tolist() + p[1][p_mask[1]].tolist()
  assert [len(r) for r in rows] == (x_mask.sum(1) + lengths1 + p_mask.sum(1)).tolist()


def test_continuation_rejects_a_turn_of_another_batch_or_an_empty_row():
  lm, params = _model()
  (x, x_mask), (p, p_mask) = _episode()
  config = SamplerConfig(max_new_tokens=12, stop_tokens=(STOP,))
  first = sample(lm, params, x, x_mask, jax.random.key(10), Sample(), config)
  with pytest.raises(ValueError, match=r"the turn has 3 rows but the context holds 4"):
    continue_sampling(lm, params, first.context, p[:3], p_mask[:3], jax.random.key(1), Sample(), config)
  empty = p_mask.copy()
  empty[2] = False
  with pytest.raises(ValueError, match=r"continue_sampling: turn: row 2 has no tokens"):
    continue_sampling(lm, params, first.context, p, empty, jax.random.key(1), Sample(), config)
  continue_sampling(lm, params, first.context, p, p_mask, jax.random.key(1), Sample(), config)
  with pytest.raises(ValueError, match=r"this context was already continued"):
    continue_sampling(lm, params, first.context, p, p_mask, jax.random.key(1), Sample(), config)
