"""The phase layer: one config per workdir, step offsets, the eval.json cache, stream seeds by name."""

import json

import ml_collections
import pytest
from hf_fixtures import set_keys

from scorejax import phases
from scorejax.tasks.base import stream_id, stream_seed


def _config(**changes):
  c = ml_collections.ConfigDict({"seed": 0, "log_every": 10, "stage1": {"learning_rate": 1e-4, "steps": 90},
                                 "eval": {"batch_size": 250, "every": 40}, "checkpoint": {"every": 20},
                                 "rules": ((r"kernel$", ("fsdp", None)),)})
  return set_keys(c, changes)


def test_a_rerun_with_a_result_changing_config_is_refused_with_the_keys_named(tmp_path):
  phases.claim_workdir(str(tmp_path), _config())
  phases.claim_workdir(str(tmp_path), _config())  # the same config resumes
  with pytest.raises(phases.ConfigMismatch) as e:
    phases.claim_workdir(str(tmp_path), _config(seed=7, **{"stage1.learning_rate": 0.5}))
  assert "seed: 0 -> 7" in str(e.value) and "stage1.learning_rate: 0.0001 -> 0.5" in str(e.value)
  assert "eval" not in str(e.value)  # only the differing keys are named
  # The saved config is untouched by a refused rerun.
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0


def test_logging_checkpointing_and_eval_batch_size_may_change(tmp_path):
  phases.claim_workdir(str(tmp_path), _config())
  phases.claim_workdir(str(tmp_path), _config(log_every=3, **{"eval.batch_size": 64, "checkpoint.every": 5}))
  assert json.loads((tmp_path / "config.json").read_text())["log_every"] == 3
  # eval.every decides which dev evaluations the metrics hold: not neutral.
  with pytest.raises(phases.ConfigMismatch, match=r"eval.every: 40 -> 10"):
    phases.claim_workdir(str(tmp_path), _config(**{"eval.every": 10}))
  # A key one side lacks counts as a difference; a caller may declare more neutral keys.
  extra = _config()
  extra["new_knob"] = 1
  with pytest.raises(phases.ConfigMismatch, match=r"new_knob: \(absent\) -> 1"):
    phases.claim_workdir(str(tmp_path), extra)
  phases.claim_workdir(str(tmp_path), extra, neutral=("new_knob",))


def test_tuples_in_a_config_compare_equal_to_their_saved_lists(tmp_path):
  phases.claim_workdir(str(tmp_path), _config())
  phases.claim_workdir(str(tmp_path), _config())
  with pytest.raises(phases.ConfigMismatch, match="rules"):
    phases.claim_workdir(str(tmp_path), _config(rules=((r"kernel$", ("tensor", None)),)))


def test_phase_offsets_run_back_to_back():
  assert phases.phase_offsets([("base", 600), ("stage1", 90), ("stage2", 0), ("round2/critic", 5)]) == {
      "base": (0, 600), "stage1": (600, 690), "stage2": (690, 690), "round2/critic": (690, 695)}


def test_eval_cache_computes_once_and_keeps_results_across_instances(tmp_path):
  calls = []
  cache = phases.EvalCache(str(tmp_path))
  assert cache.get("sft", lambda: calls.append(1) or {"f1": 0.5}) == {"f1": 0.5}
  assert cache.get("sft", lambda: calls.append(1) or {"f1": 0.9}) == {"f1": 0.5}
  again = phases.EvalCache(str(tmp_path))
  assert "sft" in again and again.get("sft", lambda: {"f1": 0.0}) == {"f1": 0.5}
  assert calls == [1]


def test_streams_are_seeded_by_name():
  # SCoRe's three streams keep the ids of their old positions (its measured runs replay exactly).
  assert [stream_id(n) for n in ("base", "stage1", "stage2")] == [0, 1, 2]
  assert stream_id("round2/critic") == stream_id("round2/critic") != stream_id("round2/generator")
  assert stream_seed(0, "sft", 3) == stream_seed(0, "sft", 3) != stream_seed(0, "rl", 3)
  assert stream_seed(0, "sft", 3) != stream_seed(1, "sft", 3) != stream_seed(0, "sft", 4)



# ----------------------------------------------------------------------------
# Keeping the best-reward checkpoint
# ----------------------------------------------------------------------------


REWARDS = [0.0, 1.0, 0.2, 0.9, 0.1, 0.0]  # smoothed over 2 steps at the candidates 2 / 4 / 6: 0.5, 0.55, 0.05


def _selection_setup(tmp_path):
  import jax
  from hf_fixtures import config_with

  from scorejax import parallel
  from scorejax.experiments import score
  from scorejax.metrics import MetricWriter
  from scorejax.tasks.base import make_task
  config = config_with("arith_score.py", "smoke", {"checkpoint.async_save": False, "checkpoint.every": 1,
                                                   "checkpoint.max_to_keep": 10, "log_every": 1})
  mesh = parallel.make_mesh(dict(config.mesh))
  task = make_task(config.task)
  lm, params = score.build_model(config.model, task.tokenizer, mesh, config.seed)
  batch = score.base_sft_batch(task, config, 0)
  loss_fn = score.build_loss_fn(score.sft.sft_loss, score.model_logprobs(lm, 32), score.base_sft_inputs,
                                score.sft.SFTConfig())
  select = phases.Selection(lambda m: m["reward_y1"] + m["reward_y2"], window=2, every=2)

  def run(workdir, stop_after=None):
    writer = MetricWriter(str(workdir), tensorboard=False)
    runner = phases.PhaseRunner(config, str(workdir), lm, mesh, writer)

    def make_batch(step, state):
      if step == stop_after:
        runner.preempted = True  # as a SIGTERM in this step would
      return batch, {"reward_y1": REWARDS[step], "reward_y2": 0.0}

    try:
      last = runner.run("stage1", len(REWARDS), score.OptimizerConfig(learning_rate=1e-2), params, loss_fn,
                        make_batch, 0, select=select)
      return runner, last
    finally:
      writer.close()
      jax.effects_barrier()

  return run, params


def _equal(a, b):
  import jax
  import numpy as np
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)))


def test_the_best_smoothed_reward_checkpoint_is_kept_beside_the_last(tmp_path):
  from scorejax.checkpoint import abstract_like
  run, params = _selection_setup(tmp_path)
  runner, last = run(tmp_path / "a")
  best, step = runner.best_params("stage1", params)
  assert step == 4  # 0.55 beats 0.5 (step 2) and 0.05 (step 6)
  with runner.checkpointer("stage1") as ckpt:  # the phase's own checkpoint of step 4 holds the same params
    state, _ = ckpt.restore(abstract_like(_state_like(runner, params)), step=4)
  assert _equal(best, state.params) and not _equal(best, last)
  # Preempted in step 3 (saved at 3, before the best of step 4), resumed: the same best, the same params.
  with pytest.raises(phases.Preempted):
    run(tmp_path / "b", stop_after=2)
  resumed, resumed_last = run(tmp_path / "b")
  again, again_step = resumed.best_params("stage1", params)
  assert again_step == 4 and _equal(again, best) and _equal(resumed_last, last)
  with pytest.raises(FileNotFoundError, match="kept no best-reward checkpoint"):
    runner.best_params("stage2", params)


def _state_like(runner, params):
  import jax

  from scorejax.train_step import OptimizerConfig, init_train_state, make_optimizer
  state, _ = init_train_state(runner.lm.init, make_optimizer(OptimizerConfig()), jax.random.key(0), runner.mesh,
                              runner.rules, params=params)
  return state
