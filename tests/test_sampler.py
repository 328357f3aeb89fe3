"""The in-JAX sampler: rules, log-probs, stopping, reproducibility, sharding, bad input."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import parallel
from scorejax.models import LM, ModelConfig
from scorejax.sampling import (
    Buckets,
    Greedy,
    Sample,
    SamplerConfig,
    continue_sampling,
    left_pad,
    sample,
    sample_many,
    unpad,
)
from scorejax.sampling import sampler as sampler_lib
from scorejax.sampling.rules import model_logprobs, sampling_logprobs

VOCAB = 16


@functools.lru_cache(maxsize=None)
def _model():
  """A tiny Llama with a peaked next-token distribution (large init), shared by every test."""
  config = ModelConfig(family="llama", vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                       head_dim=8, d_ff=64, initializer_range=0.3, eos_token_id=None)
  lm = LM.from_config(config)
  return lm, lm.init(jax.random.key(0))


def _prompts(lengths=(5, 2, 7, 1), seed=0):
  rng = np.random.default_rng(seed)
  return left_pad([rng.integers(1, VOCAB, n).tolist() for n in lengths], pad_id=0)


def _teacher_forced_logits(lm, params, prompt_BxT, mask_BxT, rollout):
  """Logits [B, N, V] that predict each generated token, from one cache-free forward pass."""
  lengths = np.asarray(rollout.lengths_B)
  prompts = unpad(prompt_BxT, mask_BxT)
  full = [p + row[:n].tolist() for p, row, n in zip(prompts, np.asarray(rollout.tokens_BxN), lengths)]
  tokens, mask = left_pad(full, 0, buckets=None)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  logits, _ = jax.jit(lm.apply)(params, tokens, positions, mask)
  logits = np.asarray(logits)
  n = rollout.tokens_BxN.shape[1]
  out = np.zeros((len(full), n, VOCAB), np.float32)
  for b, k in enumerate(lengths):
    # Generated token i sits at column T - k + i and is predicted one column earlier.
    t = tokens.shape[1]
    out[b, :k] = logits[b, t - k - 1:t - 1]
  return out, lengths


# ----------------------------------------------------------------------------
# Buckets and rules, by hand
# ----------------------------------------------------------------------------


def test_buckets_double_then_grow_by_multiples():
  b = Buckets(min_length=16, doubling_until=128)
  assert [b(n) for n in (0, 1, 16, 17, 33, 128, 129, 300, 384)] == [16, 16, 16, 32, 64, 128, 256, 384, 384]


def test_left_pad_puts_last_tokens_in_last_column():
  tokens, mask = left_pad([[5, 6, 7], [8]], pad_id=0, buckets=Buckets(min_length=4))
  np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 8]])
  np.testing.assert_array_equal(mask, [[False, True, True, True], [False, False, False, True]])
  assert unpad(tokens, mask) == [[5, 6, 7], [8]]


def test_top_k_keeps_the_k_highest_logits():
  logits = jnp.array([[1.0, 3.0, 2.0, 0.0]])
  kept = np.asarray(Sample(top_k=2).sampling_logits(logits))
  np.testing.assert_array_equal(kept, [[-np.inf, 3.0, 2.0, -np.inf]])
  # log-probs renormalize over {3, 2}: log(e^3 / (e^3 + e^2)) = -log(1 + e^-1) = -0.3132617
  lp = sampling_logprobs(Sample(top_k=2), logits, jnp.array([1]))
  np.testing.assert_allclose(lp, [-0.3132617], atol=1e-6)


def test_top_p_keeps_the_smallest_set_reaching_p():
  probs = np.array([[0.5, 0.3, 0.15, 0.05]])
  logits = jnp.log(jnp.asarray(probs, jnp.float32))
  rule = Sample(top_p=0.7)
  # Mass before token 1 is 0.5 < 0.7: kept; before token 2 it is 0.8: dropped. A rule that
  # counted a token's own mass (cumsum < p) would keep only token 0 and give log 1 = 0 below.
  lp = sampling_logprobs(rule, logits, jnp.array([0]))
  np.testing.assert_allclose(lp, [math.log(0.5 / 0.8)], atol=1e-6)
  kept = np.isfinite(np.asarray(rule.sampling_logits(logits)))
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  # top_p composes with top_k on the renormalized top-k distribution: {0.5, 0.3} -> 0.625, 0.375.
  kept = np.isfinite(np.asarray(Sample(top_k=2, top_p=0.6).sampling_logits(logits)))
  np.testing.assert_array_equal(kept, [[True, False, False, False]])


def test_temperature_divides_logits():
  logits = jnp.log(jnp.array([[0.25, 0.75]]))
  # At T = 0.5 the odds 1:3 become 1:9; ignoring the temperature would give log 0.75.
  np.testing.assert_allclose(sampling_logprobs(Sample(temperature=0.5), logits, jnp.array([1])),
                             [math.log(0.9)], atol=1e-6)
  np.testing.assert_allclose(model_logprobs(logits, jnp.array([1])), [math.log(0.75)], atol=1e-6)
  assert float(sampling_logprobs(Greedy(), logits, jnp.array([1]))[0]) == 0.0


# ----------------------------------------------------------------------------
# The sampler against a teacher-forced forward pass
# ----------------------------------------------------------------------------


def test_logprobs_equal_a_teacher_forced_forward_pass():
  lm, params = _model()
  tokens, mask = _prompts()
  rule = Sample(temperature=0.7, top_k=5)
  config = SamplerConfig(max_new_tokens=12, stop_tokens=(3,), sampling_logprobs=True)
  r = sample(lm, params, tokens, mask, jax.random.key(1), rule, config)
  lengths, finished = np.asarray(r.lengths_B), np.asarray(r.finished_B)
  assert finished.any() and not finished.all(), (lengths, finished)  # both kinds of row occur
  logits, _ = _teacher_forced_logits(lm, params, tokens, mask, r)
  generated = np.asarray(r.tokens_BxN)
  valid = np.arange(12)[None, :] < lengths[:, None]
  ref = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  ref = np.take_along_axis(ref, generated[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(np.asarray(r.logprobs_BxN)[valid], ref[valid], atol=1e-4)
  # Under the rule: temperature 0.7 and the top 5 logits only. Returning the temperature-1
  # log-probs here instead would be off by more than 0.1 on these peaked logits.
  flat = jnp.asarray(logits.reshape(-1, VOCAB))
  ref_rule = np.asarray(sampling_logprobs(rule, flat, jnp.asarray(generated.reshape(-1))))
  ref_rule = ref_rule.reshape(generated.shape)
  np.testing.assert_allclose(np.asarray(r.sampling_logprobs_BxN)[valid], ref_rule[valid], atol=1e-4)
  assert np.abs(ref_rule - ref)[valid].max() > 0.1
  # After a row's stop token: pad tokens and zero log-probs; finished rows end with the stop token.
  assert (generated[~valid] == 0).all() and (np.asarray(r.logprobs_BxN)[~valid] == 0).all()
  for b in np.flatnonzero(finished):
    assert generated[b, lengths[b] - 1] == 3 and 3 not in generated[b, :lengths[b] - 1]
  assert (lengths[~finished] == 12).all()


def test_greedy_is_the_argmax_of_teacher_forced_logits_and_top_k_1_equals_it():
  lm, params = _model()
  tokens, mask = _prompts()
  config = SamplerConfig(max_new_tokens=12, sampling_logprobs=True)
  greedy = sample(lm, params, tokens, mask, jax.random.key(0), Greedy(), config)
  logits, lengths = _teacher_forced_logits(lm, params, tokens, mask, greedy)
  assert (lengths == 12).all()
  np.testing.assert_array_equal(np.asarray(greedy.tokens_BxN), logits.argmax(-1))
  # Greedy draws with probability 1: log 1 = 0 under the rule, the model's own log-prob otherwise.
  assert (np.asarray(greedy.sampling_logprobs_BxN) == 0).all()
  ref = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), logits.argmax(-1)[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(greedy.logprobs_BxN), ref, atol=1e-4)
  top1 = sample(lm, params, tokens, mask, jax.random.key(7), Sample(temperature=1.3, top_k=1), config)
  np.testing.assert_array_equal(np.asarray(top1.tokens_BxN), np.asarray(greedy.tokens_BxN))
  # ...while plain sampling with the same key does not follow the argmax.
  free = sample(lm, params, tokens, mask, jax.random.key(7), Sample(temperature=1.3), config)
  assert not np.array_equal(np.asarray(free.tokens_BxN), np.asarray(greedy.tokens_BxN))


# Chi-square quantiles at p = 0.001, by degrees of freedom (standard tables).
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12,
                 9: 27.88, 10: 29.59, 11: 31.26, 12: 32.91, 13: 34.53, 14: 36.12, 15: 37.70}


def test_temperature_sampling_follows_the_model_distribution():
  """Chi-square goodness of fit of 4096 first tokens against softmax(logits / T)."""
  lm, params = _model()
  prompt = [[4, 9, 2]]
  tokens, mask = left_pad(prompt, 0)
  n, temperature = 4096, 1.5
  r = sample_many(lm, params, tokens, mask, jax.random.key(3), Sample(temperature=temperature),
                  SamplerConfig(max_new_tokens=1), n)
  counts = np.bincount(np.asarray(r.tokens_BxN)[:, 0], minlength=VOCAB)
  logits, _ = jax.jit(lm.apply)(params, np.array(prompt), np.arange(3)[None], np.ones((1, 3), bool))

  def chi2_over_critical(scale):
    expected = n * np.asarray(jax.nn.softmax(logits[0, -1] / scale), np.float64)
    # Tokens expected fewer than 5 times are pooled into one cell, as the test requires.
    small = expected < 5
    obs, exp = counts[~small], expected[~small]
    if small.any():
      obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return stat / CHI2_CRITICAL[len(obs) - 1], len(obs)

  ratio, cells = chi2_over_critical(temperature)
  assert cells >= 6, cells  # enough distinct outcomes for the test to mean something
  assert ratio < 1.0
  # The test has power: the same counts reject the temperature-1 distribution.
  assert chi2_over_critical(1.0)[0] > 1.0


def test_stop_tokens_end_rows_and_the_loop_stops_when_all_have():
  lm, params = _model()
  tokens, mask = _prompts()
  config = SamplerConfig(max_new_tokens=12, sampling_logprobs=True)
  free = np.asarray(sample(lm, params, tokens, mask, jax.random.key(0), Greedy(), config).tokens_BxN)
  # Stop on each row's third token: every row ends by step 3, the loop after at most 3 steps.
  stops = tuple(sorted(set(free[:, 2].tolist())))
  r = sample(lm, params, tokens, mask, jax.random.key(0), Greedy(),
             SamplerConfig(max_new_tokens=12, stop_tokens=stops, sampling_logprobs=True))
  lengths = np.asarray(r.lengths_B)
  expected = [1 + next(i for i, t in enumerate(row) if t in stops) for row in free]
  np.testing.assert_array_equal(lengths, expected)
  assert np.asarray(r.finished_B).all()
  # 16 prompt columns (bucketed) + the longest row: the loop did not run to 12.
  assert int(r.context.cache.end) == 16 + max(expected) < 16 + 12
  np.testing.assert_array_equal(np.asarray(r.context.positions_B), mask.sum(1) + lengths)


def test_samples_depend_on_row_ids_not_on_batch_layout():
  lm, params = _model()
  tokens, mask = _prompts(lengths=(5, 3))
  rule, config = Sample(temperature=1.0), SamplerConfig(max_new_tokens=8)
  key = jax.random.key(5)
  both = np.asarray(sample_many(lm, params, tokens, mask, key, rule, config, 3).tokens_BxN)
  # The same prompts in the other order, with their ids: rows are the same draws.
  swapped = sample_many(lm, params, tokens[::-1], mask[::-1], key, rule, config, 3, prompt_ids_B=[1, 0])
  np.testing.assert_array_equal(np.asarray(swapped.tokens_BxN), np.concatenate([both[3:], both[:3]]))
  # Prompt 1 twice, as prompt 1 and as prompt 9: the first copy repeats its draws, the second
  # draws anew (keys that ignored the prompt id would repeat them).
  twice = np.asarray(sample_many(lm, params, tokens[[1, 1]], mask[[1, 1]], key, rule, config, 3,
                                 prompt_ids_B=[1, 9]).tokens_BxN)
  np.testing.assert_array_equal(twice[:3], both[3:])
  assert not np.array_equal(twice[3:], both[3:])
  # The three samples of a prompt differ from each other (keys split by sample index).
  assert len({tuple(row) for row in both[:3]}) == 3


def test_sharded_over_8_devices_equals_one_device():
  lm, params = _model()
  tokens, mask = _prompts(lengths=(5, 2, 7, 1, 4, 6))  # 6 rows: padded to 8 for data x fsdp = 4
  turn, turn_mask = left_pad([[5], [6, 7], [8, 9, 10], [11], [12, 13], [14]], 0)
  rule, config = Sample(temperature=1.0), SamplerConfig(max_new_tokens=8, stop_tokens=(3,))
  one = sample(lm, params, tokens, mask, jax.random.key(2), rule, config, cache_length=64)
  one2 = continue_sampling(lm, params, one.context, turn, turn_mask, jax.random.key(3), rule, config)

  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded_params = jax.device_put(params, parallel.param_shardings(lm.abstract_params(), mesh))
  many = sample(lm, sharded_params, tokens, mask, jax.random.key(2), rule, config, cache_length=64, mesh=mesh)
  assert many.context.cache.k_LxBxKxSxH.sharding.spec[1] == ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(many.tokens_BxN), np.asarray(one.tokens_BxN))
  np.testing.assert_allclose(np.asarray(many.logprobs_BxN), np.asarray(one.logprobs_BxN), atol=1e-5)
  many2 = continue_sampling(lm, sharded_params, many.context, turn, turn_mask, jax.random.key(3), rule,
                            config, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(many2.tokens_BxN), np.asarray(one2.tokens_BxN))
  np.testing.assert_array_equal(np.asarray(many2.lengths_B), np.asarray(one2.lengths_B))


@pytest.mark.parametrize("mesh_axes", [None, {"data": 4, "fsdp": 2}], ids=["1dev", "8dev"])
def test_one_prefill_per_prompt_gives_the_draws_of_repeated_rows(mesh_axes):
  lm, params = _model()
  tokens, mask = _prompts(lengths=(5, 2, 7), seed=1)  # 3 prompts: padded to 8 on the mesh
  mesh = None if mesh_axes is None else parallel.make_mesh(mesh_axes)
  if mesh is not None:
    params = jax.device_put(params, parallel.param_shardings(lm.abstract_params(), mesh))
  rule, config = Sample(temperature=1.0), SamplerConfig(max_new_tokens=10, stop_tokens=(3,), sampling_logprobs=True)
  rows, rows_mask, ids, index = sampler_lib.repeat_prompts(tokens, mask, 4, prompt_ids_B=[7, 1, 4])
  repeated = sample(lm, params, rows, rows_mask, jax.random.key(6), rule, config, prompt_ids_B=ids,
                    sample_index_B=index, mesh=mesh)
  shared = sample_many(lm, params, tokens, mask, jax.random.key(6), rule, config, 4, prompt_ids_B=[7, 1, 4],
                       mesh=mesh)
  np.testing.assert_array_equal(np.asarray(shared.tokens_BxN), np.asarray(repeated.tokens_BxN))
  np.testing.assert_array_equal(np.asarray(shared.lengths_B), np.asarray(repeated.lengths_B))
  np.testing.assert_allclose(np.asarray(shared.logprobs_BxN), np.asarray(repeated.logprobs_BxN), atol=1e-5)
  # The context continues like the repeated rows' does.
  turn, turn_mask = left_pad([[5, 6]] * 12, 0)
  next_shared = continue_sampling(lm, params, shared.context, turn, turn_mask, jax.random.key(7), rule, config,
                                  mesh=mesh)
  next_repeated = continue_sampling(lm, params, repeated.context, turn, turn_mask, jax.random.key(7), rule, config,
                                    mesh=mesh)
  np.testing.assert_array_equal(np.asarray(next_shared.tokens_BxN), np.asarray(next_repeated.tokens_BxN))


@pytest.mark.parametrize("rule", [Greedy(), Sample(temperature=1.0)], ids=["greedy", "sample"])
@pytest.mark.parametrize("mesh_axes", [None, {"data": 4, "fsdp": 2}], ids=["1dev", "8dev"])
def test_compaction_gives_the_same_rows_as_one_loop(rule, mesh_axes, monkeypatch):
  gathered = []
  gather = sampler_lib._gather_rows
  monkeypatch.setattr(sampler_lib, "_gather_rows", lambda *a: gathered.append(a[3].shape[0]) or gather(*a))
  lm, params = _model()
  tokens, mask = _prompts(lengths=tuple(np.random.default_rng(3).integers(1, 8, 40)), seed=3)
  mesh = None if mesh_axes is None else parallel.make_mesh(mesh_axes)
  if mesh is not None:
    params = jax.device_put(params, parallel.param_shardings(lm.abstract_params(), mesh))
  # Two stop tokens: rows end at scattered steps, most early, some run out of budget.
  config = SamplerConfig(max_new_tokens=20, stop_tokens=(3, 7), sampling_logprobs=True)
  plain = sample(lm, params, tokens, mask, jax.random.key(4), rule, config, mesh=mesh)
  lengths = np.asarray(plain.lengths_B)
  assert len(set(lengths.tolist())) > 2 and lengths.max() > 6  # compaction has something to drop
  for every in (1, 3, 6):
    packed = sample(lm, params, tokens, mask, jax.random.key(4), rule,
                    dataclasses.replace(config, compact_every=every), mesh=mesh)
    assert packed.context is None
    np.testing.assert_array_equal(np.asarray(packed.tokens_BxN), np.asarray(plain.tokens_BxN))
    np.testing.assert_array_equal(np.asarray(packed.lengths_B), lengths)
    np.testing.assert_array_equal(np.asarray(packed.finished_B), np.asarray(plain.finished_B))
    np.testing.assert_allclose(np.asarray(packed.logprobs_BxN), np.asarray(plain.logprobs_BxN), atol=1e-5)
    np.testing.assert_allclose(np.asarray(packed.sampling_logprobs_BxN),
                               np.asarray(plain.sampling_logprobs_BxN), atol=1e-5)
  assert gathered and min(gathered) < len(lengths)  # the live rows did move to smaller batches


def test_traced_settings_do_not_recompile():
  lm, params = _model()
  tokens, mask = _prompts()
  run = lambda rule, n, stops: sample(lm, params, tokens, mask, jax.random.key(0), rule,
                                      SamplerConfig(max_new_tokens=n, stop_tokens=stops))
  run(Sample(temperature=1.0, top_p=1.0), 12, (3,))
  compiled = sampler_lib._turn._cache_size()
  run(Sample(temperature=0.5, top_p=0.8), 9, (4,))  # same bucket of 16 new tokens
  assert sampler_lib._turn._cache_size() == compiled
  run(Sample(temperature=0.5, top_p=0.8, top_k=3), 9, (4,))  # top_k changes the program
  assert sampler_lib._turn._cache_size() == compiled + 1


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


def test_bad_input_is_named():
  lm, params = _model()
  tokens, mask = _prompts()
  key, rule = jax.random.key(0), Greedy()
  config = SamplerConfig(max_new_tokens=8)
  with pytest.raises(ValueError, match=r"the batch is empty"):
    sample(lm, params, np.zeros((0, 4), np.int32), np.zeros((0, 4), bool), key, rule, config)
  with pytest.raises(ValueError, match=r"longest row has 7 tokens and max_new_tokens=8: they need 15 cache "
                                       r"slots, but cache_length=12"):
    sample(lm, params, tokens, mask, key, rule, config, cache_length=12)
  with pytest.raises(ValueError, match=rf"stop token 99 is outside the model's vocabulary \[0, {VOCAB}\)"):
    sample(lm, params, tokens, mask, key, rule, SamplerConfig(max_new_tokens=8, stop_tokens=(2, 99)))
  with pytest.raises(ValueError, match=r"row 1 has no tokens"):
    sample(lm, params, tokens, mask & np.array([[True], [False], [True], [True]]), key, rule, config)
  bad = tokens.copy()
  bad[2, -1] = VOCAB
  with pytest.raises(ValueError, match=rf"token {VOCAB} at row 2, column 15 is outside"):
    sample(lm, params, bad, mask, key, rule, config)
  with pytest.raises(ValueError, match=r"mask has shape \(4, 3\), expected the tokens' shape \(4, 16\)"):
    sample(lm, params, tokens, mask[:, :3], key, rule, config)
  with pytest.raises(ValueError, match=r"max_new_tokens must be a positive int"):
    SamplerConfig(max_new_tokens=0)
  with pytest.raises(ValueError, match=r"temperature must be > 0"):
    Sample(temperature=0.0)
  with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
    Sample(top_p=1.5)
