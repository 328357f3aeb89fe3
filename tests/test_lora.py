"""LoRA: adapters beside one frozen base, trained alone, sharded like their base weights, exported merged."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import (
  build_hf_model,
  config_with,
  finished_main,
  hf_logits,
  padded_batch,
)

from scorejax import parallel, phases
from scorejax.models import LM, LoraConfig, hf, lora, tiny_arith
from scorejax.models.transformer import lora_targets

LORA = LoraConfig(rank=4, alpha=8.0)


def perturbed(params, scale=0.05, seed=3):
  """params with every adapter leaf moved off its initial value (lora_b leaves 0 -> random)."""
  frozen, adapters = lora.split(params)
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  moved = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return lora.combine(frozen, jax.tree.unflatten(tree, moved))


def tiny():
  lm = LM.from_config(tiny_arith(30, n_layers=2))
  return lm, lm.init(jax.random.key(0))


def test_adapters_start_as_the_base_and_merge_exactly():
  lm, base = tiny()
  lora_lm, params = lora.with_adapters(lm, base, LORA, jax.random.key(1))
  tokens, positions, mask = padded_batch(30)
  ref = np.asarray(lm.apply(base, tokens, positions, mask)[0])
  np.testing.assert_array_equal(np.asarray(lora_lm.apply(params, tokens, positions, mask)[0]), ref)  # B = 0
  moved = perturbed(params)
  adapted = np.asarray(lora_lm.apply(moved, tokens, positions, mask)[0])
  assert np.abs(adapted - ref).max() > 1e-2  # the adapters act
  merged_lm, merged = lora.merge(lora_lm, moved)
  assert merged_lm.config.lora is None and "lora_a" not in merged["layers"][0]["self_attn"]["q_proj"]
  np.testing.assert_allclose(np.asarray(merged_lm.apply(merged, tokens, positions, mask)[0]), adapted, atol=1e-5)
  # by hand: one kernel is W + (alpha / r) A B
  q = moved["layers"][1]["self_attn"]["q_proj"]
  np.testing.assert_allclose(merged["layers"][1]["self_attn"]["q_proj"]["kernel"],
                             q["kernel"] + 2.0 * q["lora_a"] @ q["lora_b"], atol=1e-6)


def test_targets_are_regexes_over_projection_paths():
  config = tiny_arith(30, n_layers=2).replace(lora=LoraConfig(rank=2, alpha=2.0, targets=(r"layers/1/mlp/up_proj$",)))
  assert lora_targets(config, "layers/1/mlp/up_proj") and not lora_targets(config, "layers/0/mlp/up_proj")
  lm, base = tiny()
  _, params = lora.with_adapters(lm, base, config.lora, jax.random.key(1))
  _, adapters = lora.split(params)
  assert jax.tree_util.tree_map_with_path(lambda p, x: x.shape, adapters) == {
      "layers": {1: {"mlp": {"up_proj": {"lora_a": (128, 2), "lora_b": (2, 384)}}}}}
  with pytest.raises(ValueError, match="match no projection"):
    lora.with_adapters(lm, base, LoraConfig(rank=2, alpha=2.0, targets=("attention/query",)), jax.random.key(1))
  with pytest.raises(ValueError, match="lora rank=0; expected >= 1"):
    LoraConfig(rank=0, alpha=1.0)


def test_adapters_are_sharded_by_their_base_weights_rules_and_the_forward_is_unchanged():
  lm, base = tiny()
  lora_lm, params = lora.with_adapters(lm, base, LORA, jax.random.key(1))
  params = perturbed(params)
  tokens, positions, mask = padded_batch(30)
  batch = tuple(np.concatenate([x] * 3)[:8] for x in (tokens, positions, mask))
  expected = np.asarray(jax.jit(lora_lm.apply)(params, *batch)[0])
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = parallel.param_shardings(lora_lm.abstract_params(), mesh)
  spec = lambda *path: shardings["layers"][0][path[0]][path[1]][path[2]].spec
  P = jax.sharding.PartitionSpec
  assert spec("self_attn", "q_proj", "kernel") == P("fsdp", "tensor")
  assert (spec("self_attn", "q_proj", "lora_a"), spec("self_attn", "q_proj", "lora_b")) == (P("fsdp", None),
                                                                                         P(None, "tensor"))
  assert spec("mlp", "down_proj", "kernel") == P("tensor", "fsdp")
  assert (spec("mlp", "down_proj", "lora_a"), spec("mlp", "down_proj", "lora_b")) == (P("tensor", None),
                                                                                     P(None, "fsdp"))
  sharded = jax.device_put(params, shardings)
  with jax.set_mesh(mesh):
    out = np.asarray(jax.jit(lora_lm.apply)(sharded, *parallel.shard_batch(batch, mesh))[0])
  assert np.abs(out - expected)[batch[2]].max() <= 1e-5


def test_phase_trains_the_adapters_alone_on_the_one_base(tmp_path):
  from scorejax.experiments import score
  from scorejax.metrics import MetricWriter
  from scorejax.tasks.base import make_task

  config = config_with("arith_score.py", "smoke", {"checkpoint.async_save": False, "model.lora.rank": 4})
  mesh = parallel.make_mesh(dict(config.mesh))
  task = make_task(config.task)
  lm, params = score.build_model(config.model, task.tokenizer, mesh, config.seed)
  assert lm.config.lora == LoraConfig(rank=4, alpha=16.0)
  frozen, adapters = lora.split(params)
  loss_fn = score.build_loss_fn(score.sft.sft_loss, score.model_logprobs(lm, 32), score.base_sft_inputs,
                                score.sft.SFTConfig())
  seen = []

  def make_batch(step, state):
    seen.append(state.params)  # the whole params: what the sampler would read
    return score.base_sft_batch(task, config, step), {}

  writer = MetricWriter(str(tmp_path), tensorboard=False)
  runner = phases.PhaseRunner(config, str(tmp_path), lm, mesh, writer)
  out = runner.run("base", 3, score.OptimizerConfig(learning_rate=1e-2), params, loss_fn, make_batch, 0)
  writer.close()
  out_frozen, out_adapters = lora.split(out)
  # The base is the very same arrays, never copied or donated, and it is what every batch read.
  assert all(a is b for a, b in zip(jax.tree.leaves(out_frozen), jax.tree.leaves(frozen)))
  assert all(a is b for a, b in zip(jax.tree.leaves(lora.split(seen[-1])[0]), jax.tree.leaves(frozen)))
  assert all(not a.is_deleted() for a in jax.tree.leaves(frozen))
  # The adapters moved (lora_b from 0), and a checkpoint holds them alone, with their Adam moments.
  assert float(jnp.abs(out_adapters["layers"][0]["self_attn"]["q_proj"]["lora_b"]).max()) > 0
  with runner.checkpointer("base") as ckpt:
    restored, _ = ckpt.restore(phases.abstract_like(runner_state(runner, adapters)))
  assert jax.tree.structure(restored.params) == jax.tree.structure(adapters)
  sizes = [x.size for x in jax.tree.leaves(restored.opt_state) if getattr(x, "ndim", 0)]
  assert sum(sizes) == 2 * sum(x.size for x in jax.tree.leaves(adapters))  # mu and nu of the adapters only
  jax.tree.map(np.testing.assert_array_equal, restored.params, out_adapters)


def runner_state(runner, adapters):
  from scorejax.train_step import OptimizerConfig, init_train_state, make_optimizer
  state, _ = init_train_state(runner.lm.init, make_optimizer(OptimizerConfig()), jax.random.key(0), runner.mesh,
                              runner.rules, params=adapters)
  return state


def test_export_merges_the_adapters_and_transformers_loads_the_merged_model(tmp_path):
  import transformers
  model = build_hf_model("qwen2")
  model.save_pretrained(tmp_path / "base")
  lm, base = hf.load_hf(str(tmp_path / "base"))
  lora_lm, params = lora.with_adapters(lm, base, LORA, jax.random.key(1))
  params = perturbed(params, scale=0.2)
  hf.save_hf(lora_lm, params, str(tmp_path / "merged"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
  tokens, positions, mask = padded_batch(lm.config.vocab_size)
  ours = np.asarray(lora_lm.apply(params, tokens, positions, mask)[0])
  theirs = hf_logits(reloaded, tokens, positions, mask)
  assert np.abs(ours - theirs)[mask].max() <= 1e-4
  assert np.abs(theirs - hf_logits(model, tokens, positions, mask))[mask].max() > 1e-2  # not the base
  saved = json.loads((tmp_path / "merged" / "config.json").read_text())
  assert "lora" not in json.dumps(saved)


def test_an_experiment_runs_with_lora_from_the_config(tmp_path):
  workdir, _ = finished_main(["--config=configs/arith_score.py:smoke", "--config.model.lora.rank=4"], tmp_path)
  results = json.load(open(os.path.join(workdir, "eval.json")))
  assert {"base", "stage1", "stage2"} <= set(results)
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["lora"]["rank"] == 4


def test_dropout_on_the_adapter_input_by_hand():
  from scorejax.models.transformer import lora_dropout
  x = jnp.ones((2, 3, 1000))
  out = np.asarray(lora_dropout(x, jnp.array([5, 6]), stream=11, rate=0.25))
  np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.75])  # dropped, or kept and scaled by 1 / (1 - rate)
  assert abs((out == 0).mean() - 0.25) < 0.02
  assert not np.array_equal(out[0], out[1])  # rows draw their own masks
  np.testing.assert_array_equal(out, lora_dropout(x, jnp.array([5, 6]), stream=11, rate=0.25))  # seeded
  assert not np.array_equal(out, lora_dropout(x, jnp.array([5, 6]), stream=12, rate=0.25))  # per projection
  assert lora_dropout(x, jnp.array([5, 6]), stream=11, rate=0.0) is x


def test_dropout_acts_in_training_steps_only(tmp_path):
  lm, base = tiny()
  lora_lm, params = lora.with_adapters(lm, base, LoraConfig(rank=4, alpha=8.0, dropout=0.5), jax.random.key(1))
  params = perturbed(params, scale=0.3)
  tokens, positions, mask = padded_batch(30)
  plain = np.asarray(lora_lm.hidden(params, tokens, positions, mask)[0])
  seeds = jnp.arange(3, dtype=jnp.int32)
  dropped = np.asarray(lora_lm.hidden(params, tokens, positions, mask, dropout_seed_B=seeds)[0])
  assert np.abs(dropped - plain).max() > 1e-2
  no_dropout_lm = LM.from_config(lora_lm.config.replace(lora=LoraConfig(rank=4, alpha=8.0)))
  np.testing.assert_array_equal(plain, np.asarray(no_dropout_lm.hidden(params, tokens, positions, mask)[0]))

  def trained(workdir, dropout):
    from scorejax.experiments import score
    from scorejax.metrics import MetricWriter
    from scorejax.tasks.base import make_task
    config = config_with("arith_score.py", "smoke", {"checkpoint.async_save": False, "model.lora.rank": 4,
                                                      "model.lora.dropout": dropout})
    mesh = parallel.make_mesh(dict(config.mesh))
    task = make_task(config.task)
    lm, params = score.build_model(config.model, task.tokenizer, mesh, config.seed)
    loss_fn = score.build_loss_fn(score.sft.sft_loss, score.model_logprobs(lm, 32), score.base_sft_inputs,
                                  score.sft.SFTConfig())
    writer = MetricWriter(str(workdir), tensorboard=False)
    out = phases.PhaseRunner(config, str(workdir), lm, mesh, writer).run(
        "base", 2, score.OptimizerConfig(learning_rate=1e-2), params, loss_fn,
        lambda step, state: (score.base_sft_batch(task, config, step), {}), 0)
    writer.close()
    return np.asarray(lora.split(out)[1]["layers"][0]["mlp"]["up_proj"]["lora_b"])

  first, again = trained(tmp_path / "a", 0.5), trained(tmp_path / "b", 0.5)
  np.testing.assert_array_equal(first, again)  # masks seeded by (seed, phase, step): a rerun draws the same
  assert np.abs(first - trained(tmp_path / "c", 0.0)).max() > 1e-6  # and the steps did use them
