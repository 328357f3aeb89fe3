"""The sharded train step: equal on 1 and 8 devices, accumulation, clipping, non-finite skips."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scorejax import parallel
from scorejax.models import LM, ModelConfig
from scorejax.train_step import (OptimizerConfig, init_train_state, learning_rate_schedule,
                                 make_optimizer, make_train_step)

CONFIG = ModelConfig(family="qwen2", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                     head_dim=8, d_ff=64, qkv_bias=True)


def nll_loss(lm):
  """Token-mean next-token NLL with plain log-softmax (a self-contained test objective)."""
  def loss_fn(params, batch):
    tokens, mask = batch["tokens"], batch["mask"]
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    logits, _ = lm.apply(params, tokens, positions, mask)
    logp = jax.nn.log_softmax(logits[:, :-1])
    tok_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    m = mask[:, 1:]
    loss = -jnp.sum(tok_logp * m) / jnp.sum(m)
    return loss, {"tokens": jnp.sum(m).astype(jnp.float32)}
  return loss_fn


def _batch(rows=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"tokens": rng.integers(0, 64, (rows, 12)).astype(np.int32), "mask": np.ones((rows, 12), bool)}


def _run(axes, steps=2, accum=1, devices=None):
  """Plain SGD: Adam's first step is ~lr * sign(g), which amplifies float noise in tiny gradients."""
  lm = LM.from_config(CONFIG)
  mesh = parallel.make_mesh(axes, devices)
  optimizer = optax.sgd(0.5)
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh)
  step = make_train_step(nll_loss(lm), optimizer, shardings, mesh, accum_steps=accum)
  metrics = []
  for _ in range(steps):
    state, m = step(state, parallel.shard_batch(_batch(), mesh))
    metrics.append(jax.device_get(m))
  return state, metrics


def test_sharded_step_equals_single_device_step():
  ref, ref_metrics = _run_on(1)
  for axes in ({"data": 8}, {"fsdp": 8}, {"data": 2, "fsdp": 2, "tensor": 2}):
    state, metrics = _run(axes)
    assert state.params["layers"][0]["mlp"]["up_proj"]["kernel"].sharding.mesh.size == 8
    np.testing.assert_allclose(metrics[-1]["loss"], ref_metrics[-1]["loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jax.device_get(state.params),
                 jax.device_get(ref.params))
  assert metrics[0]["loss"] > metrics[-1]["loss"]  # it learns


def _run_on(num_devices):
  return _run({"data": 1}, devices=jax.devices()[:num_devices])


def test_gradient_accumulation_equals_one_big_batch():
  big, big_m = _run({"data": 2}, steps=1, devices=jax.devices()[:2])
  acc, acc_m = _run({"data": 2}, steps=1, accum=2, devices=jax.devices()[:2])
  np.testing.assert_allclose(acc_m[0]["loss"], big_m[0]["loss"], rtol=1e-6)
  np.testing.assert_allclose(acc_m[0]["grad_norm"], big_m[0]["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), jax.device_get(acc.params),
               jax.device_get(big.params))


def test_nonfinite_loss_skips_the_update_and_is_counted():
  lm = LM.from_config(CONFIG)
  mesh = parallel.make_mesh({"data": 8})
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2))
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh)
  before = jax.device_get(state.params)

  def poisoned(params, batch):
    loss, aux = nll_loss(lm)(params, batch)
    return loss * jnp.where(batch["poison"][0] > 0, jnp.nan, 1.0), aux

  step = make_train_step(poisoned, optimizer, shardings, mesh)
  batch = dict(_batch(), poison=np.ones((8,), np.float32))
  state, m = step(state, parallel.shard_batch(batch, mesh))
  assert m["nonfinite"] == 1.0 and int(state.nonfinite_steps) == 1 and int(state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)
  # the optimizer state is untouched too: Adam's count did not advance
  assert int(jax.tree.leaves(state.opt_state)[0]) == 0
  batch["poison"][:] = 0
  state, m = step(state, parallel.shard_batch(batch, mesh))
  assert m["nonfinite"] == 0.0 and int(state.nonfinite_steps) == 1
  assert not np.array_equal(jax.device_get(state.params)["norm"]["scale"], before["norm"]["scale"])


def test_warmup_then_cosine_schedule():
  sched = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine",
                                                 total_steps=110))
  assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0) and float(sched(60)) == pytest.approx(0.5, abs=1e-6)
  with pytest.raises(ValueError, match="optimizer.schedule='linear'"):
    learning_rate_schedule(OptimizerConfig(schedule="linear"))
