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

