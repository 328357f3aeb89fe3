"""Episodes as training arrays, and a small turn driver over the sampler.

An episode row is a list of tagged segments, e.g. SCoRe's [x, y1, p, y2]
(prompt, first attempt, instruction, second attempt) or DeepCritic's
[prompt, critique]. `to_batch` packs rows to the left and right-pads them,
so the valid tokens of a row are contiguous (what teacher-forced log-probs
need), with one loss mask per trained tag and, where segments carry them,
the sampler's per-token log-probs at the same positions (what PPO-style
ratios need). Lengths round up to a multiple of `length_multiple`, so a run
compiles a handful of shapes.

The turn driver: `first_turn` samples from prompts (`sample`), `next_turn`
appends a turn to the same rows and samples again from their KV cache
(`continue_sampling`); a turn of another model is a fresh `first_turn` on
that model's prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from scorejax.sampling import Buckets, Rollout, Rule, SamplerConfig, continue_sampling, left_pad, sample

COMPACT_EVERY = 16  # sample_batched: decode steps between compactions of the batch


class Segment(NamedTuple):
  ids: Sequence[int]  # token ids
  tag: str | None = None  # the loss mask it belongs to; None: context only
  logprobs: Sequence[float] | None = None  # the sampler's log-prob of each token, when it was sampled


def bucket(length: int, multiple: int) -> int:
  return max(multiple, -(-length // multiple) * multiple)


def to_batch(rows: Sequence[Sequence[Segment | tuple]], pad_id: int, tags: Sequence[str],
             length_multiple: int = 32, max_length: int | None = None) -> dict[str, np.ndarray]:
  """Packs rows of segments into right-padded arrays.

  Returns tokens_BxT, positions_BxT, mask_BxT and, for each tag in `tags`,
  `mask_<tag>_BxT` marking the tokens of the segments with that tag (the
  tokens a loss trains on). When any segment carries log-probs, also
  `sampler_logp_BxT`: log-prob of token t at column t (the convention of
  `objectives.logprobs.sequence_logprobs`), 0 where none was given.
  """
  rows = [[Segment(*s) for s in row] for row in rows]
  lengths = [sum(len(s.ids) for s in row) for row in rows]
  longest = max(lengths)
  if max_length is not None and longest > max_length:
    raise ValueError(f"an episode row has {longest} tokens, more than max_length={max_length}")
  length = bucket(longest, length_multiple)
  b = len(rows)
  out = {"tokens_BxT": np.full((b, length), pad_id, np.int32), "mask_BxT": np.zeros((b, length), bool)}
  for tag in tags:
    out[f"mask_{tag}_BxT"] = np.zeros((b, length), bool)
  with_logp = any(s.logprobs is not None for row in rows for s in row)
  if with_logp:
    out["sampler_logp_BxT"] = np.zeros((b, length), np.float32)
  for i, row in enumerate(rows):
    t = 0
    for seg in row:
      n = len(seg.ids)
      out["tokens_BxT"][i, t:t + n] = seg.ids
      if seg.tag is not None:
        if seg.tag not in tags:
          raise ValueError(f"segment tag {seg.tag!r} is not one of {tuple(tags)}")
        out[f"mask_{seg.tag}_BxT"][i, t:t + n] = True
      if seg.logprobs is not None:
        if len(seg.logprobs) != n:
          raise ValueError(f"a segment of {n} tokens carries {len(seg.logprobs)} log-probs")
        out["sampler_logp_BxT"][i, t:t + n] = seg.logprobs
      t += n
    out["mask_BxT"][i, :t] = True
  out["positions_BxT"] = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy()
  return out


def generated_ids(tokens_BxN: np.ndarray, lengths_B: np.ndarray) -> list[list[int]]:
  """Each row's sampled tokens, its stop token included when it emitted one."""
  return [row[:n].tolist() for row, n in zip(np.asarray(tokens_BxN), np.asarray(lengths_B))]


# ----------------------------------------------------------------------------
# The turn driver
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Turn:
  """One sampled turn for B rows, as host lists, with the rollout a next turn continues."""

  ids: list[list[int]]  # each row's tokens, its stop token included when it emitted one
  logprobs: list[list[float]]  # log pi(token | context) at temperature 1, one per token of `ids`
  finished: np.ndarray  # bool [B]: the row emitted a stop token (False: it ran out of budget)
  rollout: Rollout  # its context is consumed by `next_turn`


def _turn(r: Rollout) -> Turn:
  lengths = np.asarray(r.lengths_B)
  return Turn(generated_ids(r.tokens_BxN, lengths),
              [row[:n].tolist() for row, n in zip(np.asarray(r.logprobs_BxN), lengths)],
              np.asarray(r.finished_B), r)


def padded_width(prompts: Sequence[Sequence[int]]) -> int:
  """The width `first_turn` pads these prompts to (the bucket of the longest)."""
  return Buckets()(max(len(x) for x in prompts))


def first_turn(lm, params, prompts: Sequence[Sequence[int]], key: jax.Array, rule: Rule, sampler: SamplerConfig,
               mesh, *, pad_id: int, cache_length: int | None = None, prompt_ids_B=None,
               sample_index_B=None, samples_per_prompt: int = 1) -> Turn:
  """Samples one turn from each prompt (`samples_per_prompt` rows each, prompt-major, one prefill each).

  `cache_length`: KV-cache slots; give the whole episode's (e.g.
  `padded_width(prompts)` + every later turn's tokens) when `next_turn`
  will follow, so that it need not grow the cache. `prompt_ids_B` /
  `sample_index_B`: the row key ids (see `sample`).
  """
  x_BxT, x_mask = left_pad(prompts, pad_id)
  return _turn(sample(lm, params, x_BxT, x_mask, key, rule, sampler, cache_length=cache_length, mesh=mesh,
                      prompt_ids_B=prompt_ids_B, sample_index_B=sample_index_B,
                      samples_per_prompt=samples_per_prompt))


def next_turn(lm, params, turn: Turn, appended: Sequence[Sequence[int]], key: jax.Array, rule: Rule,
              sampler: SamplerConfig, mesh, *, pad_id: int) -> Turn:
  """Appends `appended[b]` after row b's last turn and samples the next turn from the same cache."""
  p_BxT, p_mask = left_pad(appended, pad_id)
  return _turn(continue_sampling(lm, params, turn.rollout.context, p_BxT, p_mask, key, rule, sampler, mesh=mesh))


def sample_batched(lm, params, prompts: Sequence[Sequence[int]], key: jax.Array, rule: Rule,
                   sampler: SamplerConfig, mesh, *, pad_id: int, batch_size: int,
                   n: int = 1) -> tuple[list[list[int]], list[list[float]]]:
  """n samples of each prompt (rows prompt-major), decoded about `batch_size` rows at a time.

  Row (i, j) is keyed by (prompt i, sample j), so a sample does not depend on
  the batch it lands in. No later turn follows, so finished rows leave the
  batch as it decodes (`SamplerConfig.compact_every`, COMPACT_EVERY unless
  set): the same tokens, without paying for the longest row on every row.
  Returns each row's ids and log-probs.
  """
  sampler = sampler if sampler.compact_every else dataclasses.replace(sampler, compact_every=COMPACT_EVERY)
  per_batch = max(1, batch_size // n)  # prompts per batch: each prefilled once for its n samples
  ids, logprobs = [], []
  for start in range(0, len(prompts), per_batch):
    chunk = range(start, min(start + per_batch, len(prompts)))
    turn = first_turn(lm, params, [prompts[i] for i in chunk], key, rule, sampler, mesh, pad_id=pad_id,
                      prompt_ids_B=np.array(chunk), samples_per_prompt=n)
    ids += turn.ids
    logprobs += turn.logprobs
  return ids, logprobs
