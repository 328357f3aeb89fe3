"""DeepCritic end to end on a shrunken config: outputs, resume, the config guard; one SFT and one RL step."""

import json
import os
import re

import jax
import numpy as np
import pytest
from hf_fixtures import config_with, finished_main, run_main

from scorejax import parallel
from scorejax.experiments import critic_data, deepcritic
from scorejax.models.build import build_model
from scorejax.objectives import critic as critic_obj
from scorejax.objectives import sft
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.tasks import processbench
from scorejax.tasks.base import make_task
from scorejax.train_step import (
  OptimizerConfig,
  init_train_state,
  make_optimizer,
  make_train_step,
)

TINY = ["--config=configs/arith_deepcritic.py:smoke", "--config.generator.steps=6", "--config.sft.steps=3",
        "--config.rl.steps=2", "--config.task.eval_size=6", "--config.eval.every=2",
        "--config.eval.interval_problems=2", "--config.critique.max_new_tokens=48", "--config.checkpoint.every=2",
        "--config.log_every=1", "--config.checkpoint.async_save=False"]
CRITIC_KEYS = {"subsets", "mean_f1", "maj1_mean_f1", "majk_mean_f1", "invalid", "sampled_invalid",
               "refine_with_critique", "tokens_with_critique", "num_solutions"}


def _main(workdir, *extra):
  return run_main(TINY, workdir, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  return finished_main(TINY, tmp_path_factory.mktemp("deepcritic"))


def test_main_writes_every_output(finished_run):
  workdir, proc = finished_run
  results = json.loads((workdir / "eval.json").read_text())
  assert set(results) == {"generator", "base", "sft", "rl", "no_critique_at_rl_budget"}
  budget = results["no_critique_at_rl_budget"]  # voted second attempts at the rl critic's token budget
  assert budget["votes"] == max(1, round(results["rl"]["tokens_with_critique"] /
                                         results["generator"]["tokens_without_critique"]))
  assert 0.0 <= budget["acc"] <= 1.0 and budget["tokens"] > 0
  heldout = list(processbench.read_processbench(workdir / "heldout.jsonl"))
  assert {s.generator for s in heldout} <= {"writer", "error_maker", "policy"}
  for name in ("base", "sft", "rl"):
    table = results[name]
    assert set(table) >= CRITIC_KEYS
    assert table["num_solutions"] == len(heldout)
    for subset, m in table["subsets"].items():
      assert subset in ("writer", "error_maker", "policy")
      assert set(m) >= {"acc_err", "acc_corr", "f1", "n_err", "n_corr", "n_invalid"}
      assert m["n_err"] + m["n_corr"] == sum(s.generator == subset for s in heldout)
    assert 0.0 <= table["invalid"] <= 1.0 and 0.0 <= table["refine_with_critique"] <= 1.0
  assert set(results["generator"]) >= {"acc_first", "refine_without_critique", "refine_with_reference_critique",
                                      "tokens_without_critique"}
  # A critique-free labelled set: no solution without an answer line is in it.
  assert all(s.steps[-1].startswith("Answer:") for s in heldout)
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {r["phase"] for r in records} >= {"generator", "sft", "rl"}
  assert any("kept_fraction" in r for r in records if r["phase"] == "sft")
  rl = [r for r in records if r["phase"] == "rl" and "loss" in r]
  assert rl and all("reward" in r and "invalid_fraction" in r for r in rl)
  assert any("pool_size" in r for r in records)
  assert any("dev_invalid" in r for r in records if r["phase"] == "sft")  # dev F1 needs both classes
  assert (workdir / "curves.png").stat().st_size > 1000
  for phase in ("generator", "sft", "rl"):
    assert os.listdir(workdir / "checkpoints" / phase)
  assert "mean_f1" in proc.stdout and "refine" in proc.stdout


def test_rerun_of_a_finished_run_changes_nothing_and_another_config_is_refused(finished_run):
  workdir, _ = finished_run
  before = (workdir / "eval.json").read_text()
  metrics = (workdir / "metrics.jsonl").read_text()
  proc = _main(workdir, "--config.log_every=2")  # a logging change alters no result
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "eval.json").read_text() == before
  assert (workdir / "metrics.jsonl").read_text() == metrics
  proc = _main(workdir, "--config.seed=7", "--config.rl.learning_rate=0.5")
  assert proc.returncode == 2
  assert "seed: 0 -> 7" in proc.stderr and re.search(r"rl.learning_rate: [0-9.e-]+ -> 0.5", proc.stderr)
  assert (workdir / "eval.json").read_text() == before  # nothing saved is touched


def _config(**overrides):
  return config_with("arith_deepcritic.py", "smoke", overrides)


@pytest.fixture(scope="module")
def model():
  config = _config()
  task = make_task(config.task)
  mesh = parallel.make_mesh({"data": -1})
  lm, params = build_model(config.model, task.tokenizer, mesh, 0)
  return config, task, mesh, lm, params


def _one_step(lm, mesh, params, loss_fn, batch, learning_rate):
  """Loss on `batch` before and after one plain-SGD step on it."""
  import optax
  optimizer = optax.sgd(learning_rate)
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh, params=params)
  step = make_train_step(loss_fn, optimizer, shardings, mesh)
  state, metrics = step(state, parallel.shard_batch(batch, mesh))
  after, _ = jax.jit(loss_fn)(state.params, batch)
  return float(metrics["loss"]), float(after), metrics


def test_one_sft_step_on_seed_critiques_lowers_their_nll(model):
  config, task, mesh, lm, params = model
  batch, stats = critic_data.BuiltinCriticData(task, config).sft_batch(step=0)
  assert batch["tokens_BxT"].shape[0] == config.sft.batch_size and 0 < stats["kept_fraction"] <= 1
  # Only the critique tokens are trained: the prompt is context.
  assert batch["mask_critique_BxT"].sum() < batch["mask_BxT"].sum()
  loss_fn = build_loss_fn(sft.sft_loss, model_logprobs(lm, 32), lambda b: sft.SFTBatch(b["mask_critique_BxT"]),
                          sft.SFTConfig())
  before, after, _ = _one_step(lm, mesh, params, loss_fn, batch, 0.5)
  assert after < before


def test_one_rl_step_raises_the_logprob_of_rewarded_critiques(model):
  config, task, mesh, lm, params = model
  pool, _ = critic_data.BuiltinCriticData(task, config).rl_pool(lm, params, mesh)
  batch, _ = deepcritic.critic_rl_batch(lm, params, task, pool, config, 0, mesh)
  # An untrained critic's critiques are invalid (reward 0); give the first of each group the label's
  # index so that the group-relative advantage is positive on it and negative on the rest.
  g = config.rl.group_size
  batch["predicted_index_B"] = np.where(np.arange(len(batch["label_B"])) % g == 0, batch["label_B"],
                                        critic_obj.INVALID_INDEX).astype(np.int32)
  batch["ref_logp_BxT"] = batch["sampler_logp_BxT"]
  # The sampler's log-probs are the teacher-forced ones of the same tokens (pi_old == pi_theta: ratio 1).
  logp = np.asarray(jax.jit(model_logprobs(lm, 32))(params, batch))
  mask = batch["mask_critique_BxT"]
  np.testing.assert_allclose(logp[mask], batch["sampler_logp_BxT"][mask], atol=2e-4)
  cfg = critic_obj.CriticRLConfig(group_size=g)
  loss_fn = build_loss_fn(critic_obj.critic_rl_loss, model_logprobs(lm, 32), deepcritic.rl_inputs, cfg)
  before, _, metrics = _one_step(lm, mesh, params, loss_fn, batch, 0.05)
  assert float(metrics["reward"]) == pytest.approx(1 / g)
  # Ratio 1, so the token-level surrogate is -sum_b A_b n_b / sum_b n_b (n_b: critique tokens of row b);
  # a sequence-mean loss would give 0 here, as the group-normalized advantages sum to 0.
  from scorejax.objectives import advantages
  reward = (batch["predicted_index_B"] == batch["label_B"]).astype(np.float32)
  adv = np.asarray(advantages.compute_advantages("grpo", reward, g))
  n = mask.sum(axis=1)
  assert before == pytest.approx(-(adv * n).sum() / n.sum(), abs=1e-5)
  # After the step, the rewarded critiques' summed log-prob went up and the others' down.
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=1))
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh, params=params)
  state, _ = make_train_step(loss_fn, optimizer, shardings, mesh)(state, parallel.shard_batch(batch, mesh))
  new_logp = np.asarray(jax.jit(model_logprobs(lm, 32))(state.params, batch))
  gain = (new_logp * mask).sum(axis=1) - (logp * mask).sum(axis=1)
  rewarded = np.arange(len(gain)) % g == 0
  assert gain[rewarded].mean() > 0 > gain[~rewarded].mean()


def test_a_critic_prompt_longer_than_the_context_names_the_lengths(model):
  config, task, mesh, lm, params = model
  config = _config(**{"critique.max_new_tokens": 600})
  config.solutions.generators = ("writer",)
  solutions, _ = critic_data.BuiltinCriticData(task, config).solutions(
      lm, params, task.eval_problems[:2], np.random.default_rng(0), jax.random.key(0), mesh)
  with pytest.raises(ValueError, match=r"config.critique.max_new_tokens=600: \d+ positions, more than the "
                                       r"model's max_position_embeddings=512"):
    deepcritic.check_context(lm, task, solutions, config)


def test_bad_generators_and_label_sources_fail_before_compute(tmp_path):
  proc = _main(tmp_path, "--config.solutions.generators=('writer','oracle')")
  assert proc.returncode != 0 and "oracle" in proc.stderr
  proc = _main(tmp_path, "--config.rl.label_source=human")
  assert proc.returncode != 0 and "config.rl.label_source='human'" in proc.stderr
  assert not (tmp_path / "checkpoints").exists()
