"""Chunked token log-probabilities: hand values, parity with the plain log-softmax, memory."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives.logprobs import (
    token_entropy_plain,
    token_logprobs,
    token_logprobs_and_entropy,
    token_logprobs_plain,
)

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# hidden [1, 0] against rows [1, 0], [0, 1], [0, 0] gives logits [1, 0, 0].
HIDDEN_1x1x2 = jnp.array([[[1.0, 0.0]]])
UNEMBED_3x2 = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
TARGET_1x1 = jnp.array([[0]])


def _logits(hidden_BxTxD, unembed_VxD):
  return jnp.einsum("btd,vd->btv", hidden_BxTxD.astype(jnp.float32), unembed_VxD.astype(jnp.float32))


def _random_case(batch=2, length=7, dim=5, vocab=11, seed=0):
  k_h, k_w, k_t = jax.random.split(jax.random.key(seed), 3)
  hidden = jax.random.normal(k_h, (batch, length, dim))
  unembed = jax.random.normal(k_w, (vocab, dim))
  targets = jax.random.randint(k_t, (batch, length), 0, vocab)
  return hidden, unembed, targets


@pytest.mark.parametrize("run", RUNNERS)
def test_hand_value(run):
  f = RUNNERS[run](lambda h, w, t: token_logprobs(h, w, t, chunk_size=4))
  # log(e / (e + 2)) = 1 - log(e + 2); returning the raw target logit would give 1.0.
  np.testing.assert_allclose(f(HIDDEN_1x1x2, UNEMBED_3x2, TARGET_1x1), [[-0.5514447]], atol=1e-6)


@pytest.mark.parametrize("run", RUNNERS)
def test_temperature_divides_logits(run):
  f = RUNNERS[run](lambda h, w, t: token_logprobs(h, w, t, chunk_size=4, temperature=2.0))
  # logits [0.5, 0, 0]: 0.5 - log(e^0.5 + 2); ignoring the temperature gives -0.5514447.
  np.testing.assert_allclose(f(HIDDEN_1x1x2, UNEMBED_3x2, TARGET_1x1), [[-0.7943768]], atol=1e-6)


def test_entropy_hand_value():
  _, entropy = token_logprobs_and_entropy(HIDDEN_1x1x2, UNEMBED_3x2, TARGET_1x1, chunk_size=1)
  # H = logsumexp - E_p[logit] = log(e + 2) - e / (e + 2); the target's -log p would be 0.5514.
  expected = math.log(math.e + 2) - math.e / (math.e + 2)
  np.testing.assert_allclose(entropy, [[expected]], atol=1e-6)


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_matches_plain_values_and_gradients(run, chunk_size):
  # T = 7 is not a multiple of 3: the last chunk is padded and its padding dropped.
  hidden, unembed, targets = _random_case()
  weights_BxT = jax.random.normal(jax.random.key(1), targets.shape)

  def chunked(h, w):
    return jnp.sum(weights_BxT * token_logprobs(h, w, targets, chunk_size=chunk_size, temperature=0.7))

  def plain(h, w):
    return jnp.sum(weights_BxT * token_logprobs_plain(_logits(h, w) / 0.7, targets))

  value_c, grads_c = RUNNERS[run](jax.value_and_grad(chunked, argnums=(0, 1)))(hidden, unembed)
  value_p, grads_p = RUNNERS[run](jax.value_and_grad(plain, argnums=(0, 1)))(hidden, unembed)
  np.testing.assert_allclose(value_c, value_p, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads_c[0], grads_p[0], atol=1e-5)
  np.testing.assert_allclose(grads_c[1], grads_p[1], atol=1e-5)
  per_token_c = token_logprobs(hidden, unembed, targets, chunk_size=chunk_size, temperature=0.7)
  per_token_p = token_logprobs_plain(_logits(hidden, unembed) / 0.7, targets)
  np.testing.assert_allclose(per_token_c, per_token_p, atol=1e-5)


def test_entropy_matches_plain_with_gradient():
  hidden, unembed, targets = _random_case(seed=3)

  def chunked(h):
    return jnp.sum(token_logprobs_and_entropy(h, unembed, targets, chunk_size=3)[1])

  def plain(h):
    return jnp.sum(token_entropy_plain(_logits(h, unembed)))

  np.testing.assert_allclose(chunked(hidden), plain(hidden), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(chunked)(hidden), jax.grad(plain)(hidden), atol=1e-5)


def test_bfloat16_hidden_states_accumulate_in_float32():
  hidden, unembed, targets = _random_case(seed=4)
  hidden_bf16 = hidden.astype(jnp.bfloat16)
  logp = token_logprobs(hidden_bf16, unembed, targets, chunk_size=2)
  assert logp.dtype == jnp.float32
  np.testing.assert_allclose(logp, token_logprobs_plain(_logits(hidden_bf16, unembed), targets), atol=1e-5)


def test_vmap_over_a_leading_axis():
  hidden, unembed, targets = _random_case()
  per_row = jax.vmap(lambda h, t: token_logprobs(h, unembed, t, chunk_size=3))
  stacked = per_row(hidden[:, None], targets[:, None])
  np.testing.assert_allclose(stacked[:, 0], token_logprobs(hidden, unembed, targets, chunk_size=3), atol=1e-6)


def test_backward_never_holds_full_logits():
  batch, length, dim, vocab, chunk = 2, 128, 16, 4096, 8
  h = jax.ShapeDtypeStruct((batch, length, dim), jnp.float32)
  w = jax.ShapeDtypeStruct((vocab, dim), jnp.float32)
  t = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  full_logits_bytes = batch * length * vocab * 4

  def temp_bytes(loss):
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(h, w, t).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  chunked = temp_bytes(lambda h, w, t: jnp.sum(token_logprobs(h, w, t, chunk_size=chunk)))
  plain = temp_bytes(lambda h, w, t: jnp.sum(token_logprobs_plain(_logits(h, w), t)))
  # Storing the logits for the backward pass (no jax.checkpoint) needs >= full_logits_bytes.
  assert plain >= full_logits_bytes
  assert chunked < full_logits_bytes / 2, (chunked, full_logits_bytes)


@pytest.mark.parametrize(
    "hidden_shape, unembed_shape, targets_shape, message",
    [
        ((2, 3), (5, 3), (2, 3), "hidden_BxTxD"),
        ((2, 3, 4), (4, 5), (2, 3), "unembed_VxD"),
        ((2, 3, 4), (5, 4), (3, 2), "targets_BxT"),
    ],
)
def test_shape_errors_name_the_tensor(hidden_shape, unembed_shape, targets_shape, message):
  with pytest.raises(ValueError, match=message):
    token_logprobs(jnp.zeros(hidden_shape), jnp.zeros(unembed_shape), jnp.zeros(targets_shape, jnp.int32),
                   chunk_size=2)


def test_sharded_batch_and_vocabulary():
  # Batch split over `data`, vocabulary rows over `tensor`, as the partition rules place them.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "tensor"))
  hidden, unembed, targets = _random_case(batch=8, length=6, dim=4, vocab=10, seed=5)

  def put(x, *spec):
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))

  def loss(h, w, t):
    logp = token_logprobs(h, w, t, chunk_size=4)
    return jnp.sum(logp * jnp.arange(6.0)), logp

  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  (value, logp), grads = f(put(hidden, "data"), put(unembed, "tensor"), put(targets, "data"))
  (value_1, logp_1), grads_1 = f(hidden, unembed, targets)
  # Sharded reductions add in a different order: equal to float32 rounding (1e-5).
  np.testing.assert_allclose(value, value_1, rtol=1e-5)
  np.testing.assert_allclose(logp, logp_1, atol=1e-5)
  np.testing.assert_allclose(grads[0], grads_1[0], atol=1e-5)
  np.testing.assert_allclose(grads[1], grads_1[1], atol=1e-5)
  # Chunking along the sequence leaves the batch where it was: still split over `data`.
  batch_split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  assert logp.sharding.is_equivalent_to(batch_split, 2)


def test_sequence_logprobs_equal_log_softmax_of_model_logits():
  from scorejax.models import LM, tiny_arith
  from scorejax.objectives.logprobs import sequence_logprobs
  lm = LM.from_config(tiny_arith(23, n_layers=1))
  params = lm.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, 23)
  positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
  mask = jnp.ones((2, 7), bool)
  got = sequence_logprobs(lm, params, tokens, positions, mask, chunk_size=3)
  logits, _ = lm.apply(params, tokens, positions, mask)
  want = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)[..., 0]
  assert got.shape == (2, 7) and float(jnp.abs(got[:, 0]).max()) == 0.0
  np.testing.assert_allclose(got[:, 1:], want, atol=1e-5)
