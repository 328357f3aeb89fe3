"""`python -m scorejax.sweep`: baselines share a base policy and land in one table."""

import json
import os
import subprocess
import sys

import pytest

from scorejax import sweep
from scorejax.experiments import critique_loop, deepcritic, score, spc

TINY = ["--config.base.steps=8", "--config.stage1.steps=2", "--config.stage2.steps=2",
        "--config.task.eval_size=8", "--config.eval.batch_size=8", "--config.eval.every=0",
        "--config.checkpoint.async_save=False", "--config.tensorboard=False"]


def test_config_arg_and_summary():
  assert sweep.config_arg("configs/a.py", "score", "") == "configs/a.py"
  assert sweep.config_arg("configs/a.py", "star", "smoke") == "configs/a.py:star,smoke"
  assert sweep.config_arg("configs/a.py", "spc", "smoke", default="spc") == "configs/a.py:smoke"
  rows = [dict(acc_t1=0.5, acc_t2=0.6, delta=0.1, delta_i2c=0.2, delta_c2i=0.1),
          dict(acc_t1=0.7, acc_t2=0.6, delta=-0.1, delta_i2c=0.1, delta_c2i=0.2)]
  table = sweep.summarize({"score": rows}, score.SWEEP_METRICS)
  assert table["score"]["acc_t1"]["mean"] == 0.6
  assert abs(table["score"]["acc_t1"]["std"] - 0.1) < 1e-12  # population std of 0.5, 0.7
  assert table["score"]["delta"]["values"] == [0.1, -0.1]
  assert "| score | 60.0 ± 10.0 |" in sweep.markdown(table, ["0", "1"], score.SWEEP_METRICS)
  # a metric one run leaves undefined (SPC's sneaky rate before any round) is left out of the mean
  partial = sweep.summarize({"r": [{"m": None}, {"m": 0.4}], "none": [{"m": None}]}, ("m",))
  assert partial["r"]["m"]["mean"] == 0.4 and partial["none"]["m"]["mean"] is None
  assert "| none | - |" in sweep.markdown(partial, ["0", "1"], ("m",))


def test_every_experiment_names_its_default_variant_and_its_rows():
  assert [sweep.default_variant(f"configs/arith_{e}.py") for e in ("score", "deepcritic", "spc", "critique_loop")] \
      == ["score", "deepcritic", "spc", "critique_loop"]
  assert sweep.variants("configs/arith_spc.py", []) == ["spc"]  # the config itself by default
  everything = sweep.variants("configs/arith_score.py", ["all"])
  assert everything[0] == "score" and {"star", "pair_sft", "no_shaping"} <= set(everything)
  assert sweep.variants("configs/arith_score.py", ["star"]) == ["star"]
  final, best = {"acc_t1": 0.5}, {"acc_t1": 0.6}
  assert score.sweep_rows({"base": {}, "stage2": final, "stage2_best": best}) == {"": final, " (best)": best}
  assert deepcritic.sweep_rows({"sft": {}, "rl": final}) == {"": final}
  assert spc.sweep_rows({"round0": best, "round1": {}, "round2": final, "search": {}}) == {
      " round0": best, " round2": final}
  assert critique_loop.sweep_rows({"iter0": {}, "iter3": final, "iter1": {}}) == {" iter3": final}


def test_emit_prints_one_command_per_point_and_runs_nothing(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "scorejax.sweep", "--config=configs/arith_spc.py",
                         f"--workdir={tmp_path}", "--variants=spc,unbalanced", "--seeds=0,1",
                         "--grid=game.rounds=1,2", "--grid=generator.steps=5", "--emit"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2 * 2 * 2  # seeds x variants x grid points
  first = lines[0].split()
  assert first[1:] == ["-m", "scorejax.main", "--config=configs/arith_spc.py",
                       f"--workdir={tmp_path}/spc/game.rounds=1,generator.steps=5/seed0", "--config.seed=0",
                       "--config.game.rounds=1", "--config.generator.steps=5"]
  assert any("--config=configs/arith_spc.py:unbalanced" in line and "seed1" in line for line in lines)
  assert not list(tmp_path.iterdir())  # nothing ran


def test_sweep_runs_variants_sharing_the_base(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "scorejax.sweep", f"--workdir={tmp_path}", "--variants=score,pair_sft",
         "--seeds=0", "--extra=smoke"] + [f"--override={o}" for o in TINY]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads((tmp_path / "table.json").read_text())
  assert set(table) == {"score", "score (best)", "pair_sft"}  # pair_sft samples nothing to select by
  base = [json.loads((tmp_path / v / "seed0" / "eval.json").read_text())["base"] for v in ("score", "pair_sft")]
  assert base[0]["acc_t1"] == base[1]["acc_t1"]  # one base policy, evaluated on the same problems
  # pair_sft trained in both RL slots, from the base checkpoint it was given (copied, not retrained)
  records = [json.loads(l) for l in open(tmp_path / "pair_sft" / "seed0" / "metrics.jsonl")]
  assert not any(r["phase"] == "base" and "loss" in r for r in records)
  assert {r["phase"] for r in records if "loss" in r} == {"stage1", "stage2"}
  assert "variant" in (tmp_path / "table.md").read_text()
  assert (tmp_path / "table.png").stat().st_size > 1000


def test_a_variant_that_changes_only_stage2_shares_stage1():
  config = "configs/arith_score.py"
  assert sweep.shared_phases(config, f"{config}:no_shaping") == ("base", "stage1")  # stage2.alpha only
  assert sweep.shared_phases(f"{config}:smoke", f"{config}:credit_return,smoke") == ("base", "stage1")
  for variant in ("star", "no_stage1", "self_refine"):  # their Stage I slot trains something else
    assert sweep.shared_phases(config, f"{config}:{variant}") == ("base",), variant


def test_collect_builds_the_table_from_finished_points_only(tmp_path):
  """--collect runs nothing: it reads each point's eval.json (written here by hand) and names a missing one."""
  def finished(seed, f1):
    workdir = tmp_path / "deepcritic" / f"seed{seed}"
    workdir.mkdir(parents=True)
    (workdir / "eval.json").write_text(json.dumps({"sft": {"mean_f1": 0.1}, "rl": {"mean_f1": f1, "invalid": 0.0}}))

  cmd = [sys.executable, "-m", "scorejax.sweep", "--config=configs/arith_deepcritic.py", f"--workdir={tmp_path}",
         "--seeds=0,1", "--collect"]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  finished(0, 0.4)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode != 0 and "seed1/eval.json does not exist" in proc.stderr
  finished(1, 0.6)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = json.loads((tmp_path / "table.json").read_text())
  assert table["deepcritic"]["mean_f1"]["mean"] == pytest.approx(0.5)
  assert set(os.listdir(tmp_path)) == {"deepcritic", "table.json", "table.md", "table.png"}  # nothing ran
  (tmp_path / "deepcritic" / "seed1" / "eval.json").write_text(json.dumps({"sft": {}}))  # a run still going
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode != 0 and "has it ended?" in proc.stderr
