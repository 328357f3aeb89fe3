"""Multi-turn continuation: attempt 2 decoded from attempt 1's cache.

SCoRe's second attempt (and a critique-guided refinement) conditions on
[x, y1, p]: the prompt, the first attempt and an instruction or critique.
Attempt 1 left the keys and values of x and y1 in the cache, so attempt 2
prefills only p:

    r1 = sample(lm, params, x_BxT, x_mask, key1, rule, config, cache_length=episode_length)
    r2 = continue_sampling(lm, params, r1.context, p_BxT, p_mask, key2, rule, config)

The new turn is written for every row at the cache's shared end. A row that
finished attempt 1 early left invalid slots behind it; its positions continue
from its own real length, so to the model the row reads exactly as the packed
sequence [x, y1, p] would. Hence r2 equals, token for token and log-prob for
log-prob, `sample` run from scratch on `packed_context(...)` with key2 and the
same row ids -- the property tests/test_continuation.py checks.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from scorejax.models.lm import LM, Params
from scorejax.sampling.buckets import left_pad, unpad
from scorejax.sampling.rules import Rule
from scorejax.sampling.sampler import (
    Context,
    Rollout,
    SamplerConfig,
    check_token_batch,
    grow_cache,
    pack_left,
    pad_rows,
    run_turn,
    sample,
)


def continue_sampling(lm: LM, params: Params, context: Context, turn_BxT, turn_mask_BxT,
                      key: jax.Array, rule: Rule, config: SamplerConfig, *,
                      mesh: Mesh | None = None) -> Rollout:
  """Appends one turn of tokens to every row of `context` and samples the next attempt.

  Only the turn's tokens are prefilled. `context` is consumed: its cache is
  donated to this turn (use the returned rollout's context for a third turn).
  When the cache cannot hold this turn, it is copied once into a larger
  bucket. Row keys reuse the context's (prompt id, sample index).
  """
  if context.cache.k_LxBxKxSxH.is_deleted():
    raise ValueError("continue_sampling: this context was already continued (its cache was donated "
                     "to that turn); continue from the context of the rollout that turn returned")
  vocab = lm.config.vocab_size
  tokens_BxT, mask_BxT = check_token_batch("continue_sampling: turn", turn_BxT, turn_mask_BxT, vocab)
  if tokens_BxT.shape[0] != context.batch:
    raise ValueError(f"continue_sampling: the turn has {tokens_BxT.shape[0]} rows but the context "
                     f"holds {context.batch}")
  length = config.buckets(int(mask_BxT.sum(axis=1).max()))
  tokens_BxT, mask_BxT = pack_left(tokens_BxT, mask_BxT, length, config.pad_id)
  rows = context.active_B.shape[0]
  needed = context.max_end + length + config.max_new_tokens
  cache = grow_cache(lm, context.cache, config.buckets(needed), mesh)
  return run_turn(lm, params, cache, pad_rows(tokens_BxT, rows, config.pad_id),
                  pad_rows(mask_BxT, rows, False), context.positions_B, context.active_B,
                  context.prompt_ids_B, context.sample_index_B, key, rule, config,
                  batch=context.batch, max_end=context.max_end, mesh=mesh)


def packed_context(prompt_BxT, prompt_mask_BxT, rollout: Rollout, turn_BxT, turn_mask_BxT) -> list[list[int]]:
  """Each row's real tokens [x, y1, p]: the context a from-scratch attempt 2 would read."""
  lengths_B = np.asarray(rollout.lengths_B)
  generated = [row[:n].tolist() for row, n in zip(np.asarray(rollout.tokens_BxN), lengths_B)]
  return [x + y + p for x, y, p in zip(unpad(prompt_BxT, prompt_mask_BxT), generated,
                                       unpad(turn_BxT, turn_mask_BxT))]


def resample_from_scratch(lm: LM, params: Params, prompt_BxT, prompt_mask_BxT, rollout: Rollout,
                          turn_BxT, turn_mask_BxT, key: jax.Array, rule: Rule, config: SamplerConfig,
                          **kwargs) -> Rollout:
  """Attempt 2 the slow way: re-prefill the whole packed context (the reference for reuse).

  `rollout.context` is not touched, so it can still be continued.
  """
  context = packed_context(prompt_BxT, prompt_mask_BxT, rollout, turn_BxT, turn_mask_BxT)
  tokens_BxT, mask_BxT = left_pad(context, config.pad_id, buckets=config.buckets)
  ctx = rollout.context
  return sample(lm, params, tokens_BxT, mask_BxT, key, rule, config,
                prompt_ids_B=np.asarray(ctx.prompt_ids_B)[:ctx.batch],
                sample_index_B=np.asarray(ctx.sample_index_B)[:ctx.batch], **kwargs)
