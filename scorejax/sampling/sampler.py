"""The in-JAX sampler: one prefill, then a `lax.while_loop` decode, under one `jax.jit`.

    rollout = sample(lm, params, prompt_BxT, mask_BxT, key, Sample(temperature=1.0),
                     SamplerConfig(max_new_tokens=256))
    rollout.tokens_BxN, rollout.logprobs_BxN, rollout.lengths_B, rollout.finished_B

No token makes a round trip to the host: the loop runs until every row has
emitted a stop token or `max_new_tokens` tokens, and the KV cache is donated
to the jitted turn, so its buffers are updated in place.

Layout. Prompts are left-padded, so the last column holds every row's last
token and its logits predict the first new token. Positions are explicit:
each row counts from 0 at its first real token, and a row that is done stops
advancing while the others go on; the slots it leaves behind are marked
invalid and nobody attends to them. All rows share one cache write index, which
is what lets a later turn be appended for the whole batch at once (see
`continuation.py`).

Randomness. Row b draws step t with fold_in(fold_in(fold_in(key, prompt_id),
sample_index), t). A row's tokens therefore depend on the key and its own ids,
never on its position in the batch, the batch size or the mesh; and a later
turn restarts t at 0, so it draws exactly what a from-scratch run on the
concatenated context would.

Shapes are bucketed (`buckets.py`); `max_new_tokens`, the temperature, top_p,
the stop tokens and the pad id are traced values, so changing them inside a
bucket does not recompile.

Compaction (`SamplerConfig.compact_every`). The loop runs while any row is
live, so a batch whose rows mostly stopped early still pays for its longest
one. With compaction the loop pauses every `compact_every` steps; once the
live rows fit in three quarters of the batch, they are gathered (cache
included) into a batch of their number rounded up to a multiple of 16, and
decoding goes on there. A row's draws depend only on its key and step, so
the tokens are the same as without it. The compacted rows' cache can hold
no later turn: the result carries no context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from scorejax import parallel
from scorejax.models.lm import LM, Params
from scorejax.models.transformer import KVCache, softcap
from scorejax.sampling.buckets import Buckets
from scorejax.sampling.rules import Greedy, Rule, model_logprobs

# ----------------------------------------------------------------------------
# Settings and results
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """What to generate; the sampling rule (temperature, top-k, top-p) is passed separately."""

  max_new_tokens: int  # N: budget per turn; traced, only its bucket is compiled in
  stop_tokens: tuple[int, ...] | None = None  # tokens that end a row; None: the model's eos_token_id
  pad_id: int = 0  # written after a row ends, and fed (masked out) to finished rows
  sampling_logprobs: bool = False  # also return log-probs under the sampling rule
  buckets: Buckets = Buckets()  # rounding of prompt, buffer and cache lengths
  compact_every: int = 0  # > 0: every this many steps, finished rows may leave the batch (then no context)

  def __post_init__(self):
    if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
      raise ValueError(f"SamplerConfig.max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
    if self.stop_tokens is not None:
      object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))
    if self.compact_every < 0:
      raise ValueError(f"SamplerConfig.compact_every must be >= 0, got {self.compact_every}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Context:
  """What a later turn needs to continue these rows without reading them again.

  Bp >= B rows: trailing rows pad the batch to a multiple of the mesh's
  data-parallel size and never generate.
  """

  cache: KVCache  # keys/values of every token so far; consumed (donated) by the next turn
  positions_B: jax.Array  # int32 [Bp]: each row's real length so far = position of its next token
  active_B: jax.Array  # bool [Bp]: False for the rows that only pad the batch
  prompt_ids_B: jax.Array  # int32 [Bp]: first id folded into each row's key
  sample_index_B: jax.Array  # int32 [Bp]: second id folded into each row's key
  batch: int = dataclasses.field(metadata=dict(static=True))  # B, rows the caller passed
  max_end: int = dataclasses.field(metadata=dict(static=True))  # host-side bound on cache.end


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rollout:
  """One turn of generation for B rows, N = max_new_tokens columns."""

  tokens_BxN: jax.Array  # int32: sampled tokens, stop token included, pad_id after it
  logprobs_BxN: jax.Array  # fp32: log pi(token | context) at temperature 1; 0 after the end
  sampling_logprobs_BxN: jax.Array | None  # fp32: under the rule that drew it; None unless asked
  lengths_B: jax.Array  # int32: tokens generated, stop token included
  finished_B: jax.Array  # bool: the row emitted a stop token (False: it ran out of budget)
  context: Context | None  # the state after this turn, for `continue_sampling`; None after compaction


# ----------------------------------------------------------------------------
# The decode loop
# ----------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
  """Carry of the decode loop; fixed shapes, so the body compiles once."""

  step: jax.Array  # int32 []: tokens decoded in this turn = the column written next
  hidden_BxD: jax.Array  # [B, D] final-norm hidden state of each row's last token (predicts the next)
  cache: KVCache  # [L, B, K, S, H] keys/values of every token fed so far; writes go to slot `end`
  positions_B: jax.Array  # int32 [B]: position of each row's next token (its real length so far)
  done_B: jax.Array  # bool [B]: the row emitted a stop token, or only pads the batch
  tokens_BxN: jax.Array  # int32 [B, N]: sampled tokens; pad_id once the row is done
  logprobs_BxN: jax.Array  # fp32 [B, N]: model log-probs at temperature 1; 0 once done
  sampling_logprobs_BxN: jax.Array | None  # fp32 [B, N]: under the rule; None unless asked
  lengths_B: jax.Array  # int32 [B]: tokens sampled by the row, its stop token included


class _Static:
  """A hashable handle on an LM for jit's static arguments.

  LM itself may not hash (a config whose eos_token_id is a list); two models
  with equal configs share one compiled program, as they should.
  """

  def __init__(self, lm: LM):
    self.lm = lm

  def __hash__(self):
    return hash(repr(self.lm.config))

  def __eq__(self, other):
    return isinstance(other, _Static) and other.lm.config == self.lm.config


def _constrain_cache(cache: KVCache, n_kv_heads: int) -> KVCache:
  """Rows over the data-parallel axes, kv heads over `tensor` (as the k/v projections are)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return cache
  rows = tuple(a for a in parallel.BATCH_AXES if a in mesh.axis_names)
  heads = "tensor" if "tensor" in mesh.axis_names and n_kv_heads % mesh.shape["tensor"] == 0 else None
  kv = P(None, rows, heads, None, None)
  wsc = jax.lax.with_sharding_constraint
  return KVCache(wsc(cache.k_LxBxKxSxH, kv), wsc(cache.v_LxBxKxSxH, kv),
                 wsc(cache.valid_BxS, P(rows, None)), cache.end, wsc(cache.positions_BxS, P(rows, None)))


@functools.partial(jax.jit, static_argnames=("model", "batch", "length"))
def _empty_cache(model: _Static, batch: int, length: int) -> KVCache:
  return _constrain_cache(model.lm.init_cache(batch, length), model.lm.config.n_kv_heads)


@functools.partial(jax.jit, static_argnames=("model", "length"))
def _grow_cache(model: _Static, cache: KVCache, length: int) -> KVCache:
  """The same cache with `length` slots: one copy, instead of re-reading the context."""
  extra = length - cache.length
  pad_kv = ((0, 0), (0, 0), (0, 0), (0, extra), (0, 0))
  pad_rows = ((0, 0), (0, extra))
  grown = KVCache(jnp.pad(cache.k_LxBxKxSxH, pad_kv), jnp.pad(cache.v_LxBxKxSxH, pad_kv),
                  jnp.pad(cache.valid_BxS, pad_rows), cache.end, jnp.pad(cache.positions_BxS, pad_rows))
  return _constrain_cache(grown, model.lm.config.n_kv_heads)


def _logits_VxB(lm: LM, params: Params, hidden_BxD: jax.Array) -> jax.Array:
  """fp32 next-token logits, vocabulary-major.

  The same product as `Transformer.logits`, laid out [V, B]: on CPU the
  [V, D] x [D, B] matmul takes about 2/3 of the time of [B, D] x [D, V]
  (19 vs 30 ms at V = 151,936, D = 512, B = 16), whose result is a
  transpose of it; the reductions over V then run down the columns.
  """
  w_VxD = lm.unembedding(params).astype(lm.config.jnp_dtype)
  logits_VxB = jnp.einsum("vd,bd->vb", w_VxD, hidden_BxD.astype(lm.config.jnp_dtype),
                          preferred_element_type=jnp.float32)
  return softcap(logits_VxB, lm.config.final_logit_softcap)


def _logsumexp_VxB(logits_VxB: jax.Array, max_B: jax.Array) -> jax.Array:
  """log sum_v exp(logits[v, b]) given each column's max (finite logits)."""
  return max_B + jnp.log(jnp.sum(jnp.exp(logits_VxB - max_B), axis=0))


def _argmax_VxB(logits_VxB: jax.Array, max_B: jax.Array) -> jax.Array:
  """First index of each column's max, as jnp.argmax.

  jnp.argmax lowers to a (value, index) reduction that costs as much as the
  logsumexp pass on CPU; a max is shared with the logsumexp, and the index
  of its first occurrence is one cheap pass more.
  """
  vocab = logits_VxB.shape[0]
  first_B = jnp.min(jnp.where(logits_VxB == max_B, jnp.arange(vocab)[:, None], vocab), axis=0)
  return jnp.minimum(first_B, vocab - 1).astype(jnp.int32)  # NaN logits: a valid id, not V


def _decode_step(lm: LM, params: Params, rule: Rule, row_keys_B, stop_K, pad_id,
                 state: DecodeState, logits_VxB: jax.Array | None = None) -> DecodeState:
  """Draws one token per live row from its hidden state, records it, and feeds it to the model.

  `logits_VxB`: the rows' next-token logits when the caller has them already (rows that share a
  prompt share their first token's logits); by default they are computed from `state.hidden_BxD`.
  """
  keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys_B, state.step)
  live_B = ~state.done_B
  if logits_VxB is None:
    logits_VxB = _logits_VxB(lm, params, state.hidden_BxD)
  max_B = jnp.max(logits_VxB, axis=0)
  sampling_logprobs_BxN = state.sampling_logprobs_BxN
  if isinstance(rule, Greedy):  # the argmax needs no [B, V] copy of the logits
    drawn_B, rule_logp_B = _argmax_VxB(logits_VxB, max_B), 0.0
  elif sampling_logprobs_BxN is None:
    drawn_B = rule.choose(logits_VxB.T, keys_B)
  else:
    rule_logits_BxV = rule.sampling_logits(logits_VxB.T)
    drawn_B = rule.draw(rule_logits_BxV, keys_B)
    rule_logp_B = model_logprobs(rule_logits_BxV, drawn_B)
  if sampling_logprobs_BxN is not None:
    sampling_logprobs_BxN = sampling_logprobs_BxN.at[:, state.step].set(
        jnp.where(live_B, rule_logp_B, 0.0))
  token_B = jnp.where(live_B, drawn_B, pad_id)
  chosen_B = logits_VxB[token_B, jnp.arange(token_B.shape[0])]
  logp_B = jnp.where(live_B, chosen_B - _logsumexp_VxB(logits_VxB, max_B), 0.0)
  stopped_B = live_B & jnp.any(token_B[:, None] == stop_K[None, :], axis=-1)

  # The token just drawn is fed even on the last step: a later turn needs its keys and values.
  h_Bx1xD, cache = lm.hidden(params, token_B[:, None], state.positions_B[:, None], live_B[:, None],
                             state.cache)
  return DecodeState(
      step=state.step + 1,
      hidden_BxD=h_Bx1xD[:, 0],
      cache=_constrain_cache(cache, lm.config.n_kv_heads),
      positions_B=state.positions_B + live_B.astype(jnp.int32),
      done_B=state.done_B | stopped_B,
      tokens_BxN=state.tokens_BxN.at[:, state.step].set(token_B),
      logprobs_BxN=state.logprobs_BxN.at[:, state.step].set(logp_B),
      sampling_logprobs_BxN=sampling_logprobs_BxN,
      lengths_B=state.lengths_B + live_B.astype(jnp.int32))


def _row_keys(key, prompt_ids_B, sample_index_B):
  return jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(key, p), s))(prompt_ids_B, sample_index_B)


def _turn_impl(model: _Static, params: Params, cache: KVCache, tokens_UxT, mask_UxT, start_U, active_B,
          prompt_ids_B, sample_index_B, key, rule: Rule, stop_K, pad_id, max_new_tokens, *,
          buffer_length: int, sampling_logprobs: bool, group: int = 1) -> DecodeState:
  """Prefills one turn's tokens at the cache's end, then decodes up to max_new_tokens.

  `group` > 1: the U prefilled rows are U prompts of `group` samples each;
  their cache is copied to the B = U * group decoded rows (prompt-major).
  """
  lm = model.lm
  b = tokens_UxT.shape[0] * group

  # PREFILL: positions continue from each row's length; padding is written but never valid.
  positions_UxT = start_U[:, None] + jnp.maximum(jnp.cumsum(mask_UxT, axis=1) - 1, 0)
  h_UxTxD, cache = lm.hidden(params, tokens_UxT, positions_UxT, mask_UxT, cache)
  start_B = start_U + jnp.sum(mask_UxT, axis=1, dtype=jnp.int32)
  h_UxD = h_UxTxD[:, -1]
  h_BxD = h_UxD
  if group > 1:
    cache, start_B, h_BxD = _repeat_rows(cache, group), jnp.repeat(start_B, group), jnp.repeat(h_UxD, group, axis=0)

  # DECODE
  row_keys_B = _row_keys(key, prompt_ids_B, sample_index_B)
  state = DecodeState(
      step=jnp.zeros((), jnp.int32),
      hidden_BxD=h_BxD,
      cache=_constrain_cache(cache, lm.config.n_kv_heads),
      positions_B=start_B,
      done_B=~active_B,
      tokens_BxN=jnp.full((b, buffer_length), pad_id, jnp.int32),
      logprobs_BxN=jnp.zeros((b, buffer_length), jnp.float32),
      sampling_logprobs_BxN=jnp.zeros((b, buffer_length), jnp.float32) if sampling_logprobs else None,
      lengths_B=jnp.zeros((b,), jnp.int32))
  if group > 1:  # the first token's logits depend on the prompt alone: one unembedding per prompt, not per row
    first_VxB = jnp.repeat(_logits_VxB(lm, params, h_UxD), group, axis=1)
    state = _decode_step(lm, params, rule, row_keys_B, stop_K, pad_id, state, first_VxB)
  return _decode_until(lm, params, state, row_keys_B, rule, stop_K, pad_id, max_new_tokens)


def _decode_until(lm: LM, params: Params, state: DecodeState, row_keys_B, rule: Rule, stop_K, pad_id,
                  until) -> DecodeState:
  """The decode loop: one token per live row per step, while a row is live and step < until."""
  def keep_going(s: DecodeState):
    return (s.step < until) & ~jnp.all(s.done_B)

  step = functools.partial(_decode_step, lm, params, rule, row_keys_B, stop_K, pad_id)
  return jax.lax.while_loop(keep_going, step, state)


def _cache_rows(cache: KVCache, index_R) -> KVCache:
  """Rows `index_R` of a cache (repeated, reordered or a subset); the write index stays shared."""
  return KVCache(jnp.take(cache.k_LxBxKxSxH, index_R, axis=1), jnp.take(cache.v_LxBxKxSxH, index_R, axis=1),
                 jnp.take(cache.valid_BxS, index_R, axis=0), cache.end, jnp.take(cache.positions_BxS, index_R, axis=0))


def _repeat_rows(cache: KVCache, group: int) -> KVCache:
  """Each row of a cache `group` times in a row (prompt-major), as a broadcast: on a 2-core CPU it writes
  768 MiB (16 prompts x 8 rows, 12 layers, 256 slots) in 43 ms, a row gather (`_cache_rows`) in 90 ms."""
  rows = functools.partial(jnp.repeat, repeats=group)
  return KVCache(rows(cache.k_LxBxKxSxH, axis=1), rows(cache.v_LxBxKxSxH, axis=1), rows(cache.valid_BxS, axis=0),
                 cache.end, rows(cache.positions_BxS, axis=0))


_TURN_STATIC = ("model", "buffer_length", "sampling_logprobs", "group")
_turn = jax.jit(_turn_impl, static_argnames=_TURN_STATIC, donate_argnames=("cache",))  # the cache updated in place
_shared_prefill_turn = jax.jit(_turn_impl, static_argnames=_TURN_STATIC)  # group > 1: a new, larger cache


@functools.partial(jax.jit, static_argnames=("model",), donate_argnames=("state",))
def _decode_more(model: _Static, params: Params, state: DecodeState, row_keys_B, rule: Rule, stop_K, pad_id,
                 until) -> DecodeState:
  """Decodes on from a paused, perhaps compacted, turn."""
  return _decode_until(model.lm, params, state, row_keys_B, rule, stop_K, pad_id, until)


@functools.partial(jax.jit, static_argnames=("model",))
def _gather_rows(model: _Static, state: DecodeState, row_keys_B, index_R, idle_R) -> tuple[DecodeState, jax.Array]:
  """Rows `index_R` of a paused turn (cache included); `idle_R` rows only pad the batch (done)."""
  take = functools.partial(jnp.take, indices=index_R, axis=0)
  rule_logp = state.sampling_logprobs_BxN
  return DecodeState(
      step=state.step, hidden_BxD=take(state.hidden_BxD),
      cache=_constrain_cache(_cache_rows(state.cache, index_R), model.lm.config.n_kv_heads),
      positions_B=take(state.positions_B), done_B=take(state.done_B) | idle_R,
      tokens_BxN=take(state.tokens_BxN), logprobs_BxN=take(state.logprobs_BxN),
      sampling_logprobs_BxN=None if rule_logp is None else take(rule_logp),
      lengths_B=take(state.lengths_B)), row_keys_B[index_R]


# ----------------------------------------------------------------------------
# Host side: checks, padding, placement
# ----------------------------------------------------------------------------


def check_token_batch(name: str, tokens_BxT, mask_BxT, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Host copies of a token batch, or an error naming `name`, the row and what was expected."""
  tokens_BxT, mask_BxT = np.asarray(tokens_BxT), np.asarray(mask_BxT)
  if tokens_BxT.ndim != 2:
    raise ValueError(f"{name}: tokens must be [B, T], got shape {tokens_BxT.shape}")
  if mask_BxT.shape != tokens_BxT.shape:
    raise ValueError(f"{name}: mask has shape {mask_BxT.shape}, expected the tokens' shape "
                     f"{tokens_BxT.shape}")
  if tokens_BxT.shape[0] == 0:
    raise ValueError(f"{name}: the batch is empty (tokens of shape {tokens_BxT.shape}); "
                     "pass at least one row")
  if not np.issubdtype(tokens_BxT.dtype, np.integer):
    raise ValueError(f"{name}: token ids must be integers, got dtype {tokens_BxT.dtype}")
  mask_BxT = mask_BxT.astype(bool)
  empty = np.flatnonzero(~mask_BxT.any(axis=1))
  if empty.size:
    raise ValueError(f"{name}: row {int(empty[0])} has no tokens (its mask is all False); "
                     "every row needs at least one")
  bad = mask_BxT & ((tokens_BxT < 0) | (tokens_BxT >= vocab_size))
  if bad.any():
    b, t = np.argwhere(bad)[0]
    raise ValueError(f"{name}: token {int(tokens_BxT[b, t])} at row {b}, column {t} is outside "
                     f"the model's vocabulary [0, {vocab_size})")
  return tokens_BxT.astype(np.int32), mask_BxT


def pack_left(tokens_BxT: np.ndarray, mask_BxT: np.ndarray, length: int, pad_id: int):
  """Moves each row's real tokens flush right in a [B, length] array (any input padding)."""
  out_BxL = np.full((tokens_BxT.shape[0], length), pad_id, np.int32)
  out_mask_BxL = np.zeros((tokens_BxT.shape[0], length), bool)
  for b in range(tokens_BxT.shape[0]):
    row = tokens_BxT[b][mask_BxT[b]]
    out_BxL[b, length - len(row):] = row
    out_mask_BxL[b, length - len(row):] = True
  return out_BxL, out_mask_BxL


def stop_token_array(lm: LM, config: SamplerConfig) -> np.ndarray:
  """The stop tokens as int32 [K], checked against the vocabulary; -1 entries are padding."""
  stops = config.stop_tokens
  if stops is None:
    eos = lm.config.eos_token_id
    stops = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
  vocab = lm.config.vocab_size
  for t in stops:
    if not 0 <= t < vocab:
      raise ValueError(f"stop token {t} is outside the model's vocabulary [0, {vocab}); "
                       f"SamplerConfig.stop_tokens={config.stop_tokens}, model eos_token_id="
                       f"{lm.config.eos_token_id}")
  if not 0 <= config.pad_id < vocab:
    raise ValueError(f"SamplerConfig.pad_id={config.pad_id} is outside the model's vocabulary [0, {vocab})")
  # Padded with -1 (never sampled) to a multiple of 4, so the count of stop tokens rarely recompiles.
  padded = np.full(-(-max(len(stops), 1) // 4) * 4, -1, np.int32)
  padded[:len(stops)] = stops
  return padded


def pad_rows(x: np.ndarray, rows: int, fill) -> np.ndarray:
  """x with idle rows of `fill` appended up to `rows` rows."""
  extra = rows - x.shape[0]
  return x if extra == 0 else np.concatenate([x, np.full((extra, *x.shape[1:]), fill, x.dtype)])


def _place(x, mesh: Mesh | None):
  return jnp.asarray(x) if mesh is None else parallel.shard_batch(x, mesh)


def run_turn(lm: LM, params: Params, cache: KVCache, tokens_BxT: np.ndarray, mask_BxT: np.ndarray,
             start_B, active_B, prompt_ids_B, sample_index_B, key: jax.Array, rule: Rule,
             config: SamplerConfig, *, batch: int, max_end: int, mesh: Mesh | None, group: int = 1) -> Rollout:
  """Runs one jitted turn on checked, left-packed, row-padded host arrays (Bp rows).

  With `group` > 1, tokens, mask, start and the cache have Bp / group rows, one per prompt.
  """
  stop_K = stop_token_array(lm, config)
  buffer_length = config.buckets(config.max_new_tokens)
  host = dict(tokens_BxT=tokens_BxT, mask_BxT=mask_BxT)
  device = {k: _place(v, mesh) for k, v in host.items()}
  n = config.max_new_tokens
  first = min(n, config.compact_every) if config.compact_every else n
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    turn = _turn if group == 1 else _shared_prefill_turn
    state = turn(_Static(lm), params, cache, device["tokens_BxT"], device["mask_BxT"], start_B,
                  active_B, prompt_ids_B, sample_index_B, key, rule, jnp.asarray(stop_K),
                  jnp.int32(config.pad_id), jnp.int32(first),
                  buffer_length=buffer_length, sampling_logprobs=config.sampling_logprobs, group=group)
    if config.compact_every:
      return _compacted_rollout(lm, params, state, _row_keys(key, prompt_ids_B, sample_index_B), active_B, rule,
                                jnp.asarray(stop_K), config, batch=batch, mesh=mesh)
  context = Context(cache=state.cache, positions_B=state.positions_B, active_B=active_B,
                    prompt_ids_B=prompt_ids_B, sample_index_B=sample_index_B, batch=batch,
                    max_end=max_end + tokens_BxT.shape[1] + n)
  tokens, logprobs, rule_logprobs, lengths, finished = _trim(state, active_B, batch=batch, columns=n)
  return Rollout(tokens_BxN=tokens, logprobs_BxN=logprobs, sampling_logprobs_BxN=rule_logprobs,
                 lengths_B=lengths, finished_B=finished, context=context)


def _compacted_rollout(lm: LM, params: Params, state: DecodeState, row_keys_B, active_B, rule: Rule, stop_K,
                       config: SamplerConfig, *, batch: int, mesh: Mesh | None) -> Rollout:
  """Decodes a paused turn to its end, gathering the live rows into a smaller batch when they fit in 3/4 of it."""
  n, model, pad = config.max_new_tokens, _Static(lm), jnp.int32(config.pad_id)
  dp = 1 if mesh is None else parallel.data_parallel_size(mesh)
  fields = ("tokens_BxN", "logprobs_BxN", "sampling_logprobs_BxN", "lengths_B", "done_B")
  out = {f: None if getattr(state, f) is None else np.array(getattr(state, f)) for f in fields}
  rows_R = np.arange(out["done_B"].shape[0])  # the original row each row of `state` holds
  real_R = np.ones(len(rows_R), bool)  # False: a copy that only pads the compacted batch
  step = int(state.step)
  while step < n:
    done_R = np.asarray(state.done_B)
    live = np.flatnonzero(~done_R & real_R)
    if live.size == 0:
      break
    size = _compacted_size(live.size, dp)
    if size <= 3 * len(rows_R) // 4:  # keep the live rows only: save the others' results first
      _save_rows(out, state, rows_R, real_R, fields)
      index = np.concatenate([live, np.full(size - live.size, live[0])])
      idle = np.arange(size) >= live.size
      state, row_keys_B = _gather_rows(model, state, row_keys_B, _place(index.astype(np.int32), mesh),
                                       _place(idle, mesh))
      rows_R, real_R = rows_R[index], ~idle
    until = min(n, step + config.compact_every)
    state = _decode_more(model, params, state, row_keys_B, rule, stop_K, pad, jnp.int32(until))
    step = until
  _save_rows(out, state, rows_R, real_R, fields)
  rule_logp = out["sampling_logprobs_BxN"]
  return Rollout(tokens_BxN=jnp.asarray(out["tokens_BxN"][:batch, :n]),
                 logprobs_BxN=jnp.asarray(out["logprobs_BxN"][:batch, :n]),
                 sampling_logprobs_BxN=None if rule_logp is None else jnp.asarray(rule_logp[:batch, :n]),
                 lengths_B=jnp.asarray(out["lengths_B"][:batch]),
                 finished_B=jnp.asarray((out["done_B"] & np.asarray(active_B))[:batch]), context=None)


def _compacted_size(live: int, dp: int) -> int:
  """Rows of a compacted batch: `live` rounded up to a multiple of 16 (a few shapes to compile), and of dp."""
  step = 16 * dp // np.gcd(16, dp)
  return -(-live // step) * step


def _save_rows(out: dict, state: DecodeState, rows_R, real_R, fields) -> None:
  """Writes the state's real rows into the host copies of the whole batch's results."""
  for f in fields:
    if out[f] is not None:
      out[f][rows_R[real_R]] = np.asarray(getattr(state, f))[real_R]


@functools.partial(jax.jit, static_argnames=("batch", "columns"))
def _trim(state: DecodeState, active_B, *, batch: int, columns: int):
  """The caller's rows and max_new_tokens columns of the loop's buffers, in one small program."""
  rule_logp = state.sampling_logprobs_BxN
  return (state.tokens_BxN[:batch, :columns], state.logprobs_BxN[:batch, :columns],
          None if rule_logp is None else rule_logp[:batch, :columns],
          state.lengths_B[:batch], (state.done_B & active_B)[:batch])


def _row_ids(ids, batch: int, name: str, default) -> np.ndarray:
  ids = default if ids is None else np.asarray(ids)
  if ids.shape != (batch,):
    raise ValueError(f"{name} must have shape ({batch},) like the prompt batch, got {ids.shape}")
  return ids.astype(np.int32)


def sample(lm: LM, params: Params, prompt_BxT, prompt_mask_BxT, key: jax.Array, rule: Rule,
           config: SamplerConfig, *, prompt_ids_B=None, sample_index_B=None,
           cache_length: int | None = None, mesh: Mesh | None = None, samples_per_prompt: int = 1) -> Rollout:
  """Samples one turn for each prompt row: a pure function of its arguments.

  Args:
    prompt_BxT, prompt_mask_BxT: token ids and their validity, any padding
      (rows are re-packed to the left and the length bucketed).
    key: the run's PRNG key; row b uses fold_in(fold_in(key, prompt_ids_B[b]),
      sample_index_B[b]) (defaults: the row index and 0).
    rule: `Greedy()` or `Sample(temperature, top_k, top_p)`.
    cache_length: slots of the KV cache; default the prompt's bucket +
      max_new_tokens rounded up to 16. Give the whole episode's length when
      later turns will follow, so that they do not have to grow the cache.
    mesh: shard rows over its data-parallel axes (params should already be
      placed with `parallel.param_shardings`); the batch is padded with idle
      rows to a multiple of the data-parallel size.
    samples_per_prompt: n > 1 samples each prompt n times (rows prompt-major,
      sample j of prompt i keyed by (prompt_ids_B[i], j); sample_index_B must
      be None); each prompt is prefilled once and its cache copied to its n rows.
  """
  vocab = lm.config.vocab_size
  tokens_BxT, mask_BxT = check_token_batch("sample: prompt", prompt_BxT, prompt_mask_BxT, vocab)
  stop_token_array(lm, config)
  batch = tokens_BxT.shape[0]
  n = config.max_new_tokens
  longest = int(mask_BxT.sum(axis=1).max())
  length = config.buckets(longest)
  if cache_length is not None and length + n > cache_length:
    length = longest  # drop the bucket's padding before giving up
    if length + n > cache_length:
      raise ValueError(
          f"sample: the prompt's longest row has {longest} tokens and max_new_tokens={n}: they need "
          f"{longest + n} cache slots, but cache_length={cache_length}; raise cache_length or "
          "shorten the prompt")
  # Just what the turn needs (decode reads every slot each step): the prompt's bucket, then
  # max_new_tokens rounded up to 16, so a budget inside one multiple of 16 compiles once.
  cache_length = cache_length or length + -(-n // 16) * 16
  tokens_BxT, mask_BxT = pack_left(tokens_BxT, mask_BxT, length, config.pad_id)

  dp = 1 if mesh is None else parallel.data_parallel_size(mesh)
  rows = -(-batch // dp) * dp  # prefilled rows: one per prompt
  g = samples_per_prompt
  if g < 1 or (g > 1 and sample_index_B is not None):
    raise ValueError(f"sample: samples_per_prompt={g}; it must be >= 1, and with more than one the sample "
                     "indices are 0 .. n-1 (pass sample_index_B=None)")
  prompt_ids_B = _row_ids(prompt_ids_B, batch, "prompt_ids_B", np.arange(batch))
  sample_index_B = _row_ids(sample_index_B, batch, "sample_index_B", np.zeros(batch))
  per_row = dict(
      active_B=np.repeat(pad_rows(np.ones(batch, bool), rows, False), g),
      prompt_ids_B=np.repeat(pad_rows(prompt_ids_B, rows, 0), g),
      sample_index_B=np.tile(np.arange(g, dtype=np.int32), rows) if g > 1 else pad_rows(sample_index_B, rows, 0))
  per_row = {k: _place(v, mesh) for k, v in per_row.items()}
  per_row["start_B"] = _place(np.zeros(rows, np.int32), mesh)
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    cache = _empty_cache(_Static(lm), rows, cache_length)
  return run_turn(lm, params, cache, pad_rows(tokens_BxT, rows, config.pad_id),
                  pad_rows(mask_BxT, rows, False), key=key, rule=rule, config=config, batch=batch * g,
                  max_end=0, mesh=mesh, group=g, **per_row)


def grow_cache(lm: LM, cache: KVCache, length: int, mesh: Mesh | None = None) -> KVCache:
  """`cache` with `length` slots (itself when it already has them).

  The old buffers are freed at once, as donation frees them when the cache
  is large enough: either way a cache is consumed by the turn that extends it.
  """
  if cache.length >= length:
    return cache
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    grown = _grow_cache(_Static(lm), cache, length)
  for buffer in (cache.k_LxBxKxSxH, cache.v_LxBxKxSxH, cache.valid_BxS, cache.positions_BxS):
    buffer.delete()
  return grown


def repeat_prompts(prompt_BxT, prompt_mask_BxT, n: int, prompt_ids_B=None):
  """n samples per prompt: rows repeated n times, with (prompt id, sample index) key ids.

  Returns tokens [B*n, T], mask [B*n, T], prompt_ids [B*n], sample_index [B*n];
  pass the ids to `sample` so that sample j of prompt i is the same draw
  whatever else is in the batch.
  """
  if n < 1:
    raise ValueError(f"repeat_prompts: n must be >= 1 samples per prompt, got {n}")
  tokens_BxT, mask_BxT = np.asarray(prompt_BxT), np.asarray(prompt_mask_BxT)
  batch = tokens_BxT.shape[0]
  ids_B = np.arange(batch) if prompt_ids_B is None else np.asarray(prompt_ids_B)
  if ids_B.shape != (batch,):
    raise ValueError(f"repeat_prompts: prompt_ids_B must have shape ({batch},), got {ids_B.shape}")
  return (np.repeat(tokens_BxT, n, axis=0), np.repeat(mask_BxT, n, axis=0),
          np.repeat(ids_B, n).astype(np.int32), np.tile(np.arange(n), batch).astype(np.int32))


def sample_many(lm: LM, params: Params, prompt_BxT, prompt_mask_BxT, key: jax.Array, rule: Rule,
                config: SamplerConfig, n: int, *, prompt_ids_B: Sequence[int] | None = None,
                **kwargs) -> Rollout:
  """`sample` with n rows per prompt (group baselines), rows ordered prompt-major; one prefill per prompt.

  The same draws as `sample` on `repeat_prompts`' rows and ids.
  """
  if n < 1:
    raise ValueError(f"sample_many: n must be >= 1 samples per prompt, got {n}")
  return sample(lm, params, prompt_BxT, prompt_mask_BxT, key, rule, config, prompt_ids_B=prompt_ids_B,
                samples_per_prompt=n, **kwargs)
