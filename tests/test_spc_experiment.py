"""SPC end to end on a shrunken config: outputs, resume after SIGKILL, the config guard; one offline-RL step;
the step search."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from hf_fixtures import config_with, finished_main, killed_main, main_env, run_main

from scorejax import parallel
from scorejax.experiments import spc
from scorejax.experiments.spc_data import BuiltinSPCData
from scorejax.metrics import MetricWriter
from scorejax.models.build import build_model
from scorejax.objectives import sft
from scorejax.objectives import spc as spc_obj
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import PhaseRunner
from scorejax.rewards import game as game_lib
from scorejax.rewards.game import Record, Verdict
from scorejax.search import SearchConfig, step_search
from scorejax.tasks.arith import ERROR_TYPES
from scorejax.tasks.base import make_task
from scorejax.train_step import OptimizerConfig, init_train_state, make_train_step

TINY = ["--config=configs/arith_spc.py:smoke", "--config.generator.steps=6", "--config.roles.critic.sft.steps=3",
        "--config.roles.sneaky.sft.steps=3", "--config.task.eval_size=4", "--config.game.games_per_round=8",
        "--config.eval.sneaky_items=4", "--config.eval.search_problems=2", "--config.eval.interval_problems=2",
        "--config.roles.critic.max_new_tokens=24", "--config.roles.sneaky.max_new_tokens=24",
        "--config.checkpoint.every=1", "--config.log_every=1", "--config.checkpoint.async_save=False",
        "--config.game.penalize_failed_rewrites=True"]  # the shrunken sneaky's rewrites fail: records to learn from
ROUND_KEYS = {"acc_correct", "acc_error", "mean", "harmonic_mean", "mean_se", "harmonic_mean_se", "valid_only",
              "subsets", "kinds", "error_types", "first_error_f1", "first_error_subsets", "subset_mean_harmonic_mean", "invalid", "dev",
              "sneaky_validated", "sneaky_vs_round0", "sneaky_vs_own_critic", "games", "num_steps",
              "num_labelled_steps"}


def _main(workdir, *extra):
  return run_main(TINY, workdir, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  return finished_main(TINY, tmp_path_factory.mktemp("spc"))


def test_main_writes_every_output(finished_run):
  workdir, proc = finished_run
  results = json.loads((workdir / "eval.json").read_text())
  assert set(results) == {"generator", "round0", "round1", "round2", "search"}
  for r in ("round0", "round1", "round2"):
    assert set(results[r]) >= ROUND_KEYS
    assert results[r]["num_labelled_steps"] <= results[r]["num_steps"]
    assert set(results[r]["subsets"]) <= {"writer", "policy"}
    kinds = results[r]["kinds"]  # every labelled step in one kind of position
    assert set(kinds) <= {"carry", "plain"}
    for n in ("n_correct", "n_error", "n_invalid"):
      assert sum(k[n] for k in kinds.values()) == results[r][n]
    types = results[r]["error_types"]  # every labelled erroneous step of one type
    assert set(types) <= set(ERROR_TYPES) | {"other"}
    assert sum(t["n_error"] for t in types.values()) == results[r]["n_error"]
    caught = sum(t["acc_error"] * t["n_error"] for t in types.values())
    assert caught == pytest.approx(results[r]["acc_error"] * results[r]["n_error"])
  for r in ("round1", "round2"):
    games = results[r]["games"]
    assert games["games"] == games["played"] <= 8
    assert games["validated"] + games["failed_rewrites"] == games["games"]
    assert games["critic_wins"] + games["generator_wins"] + games["invalid_games"] == games["validated"]
    assert games["critic_learned"] == games["critic_records"]  # rl.records=all: every record learned
    assert games["sneaky_learned"] == games["sneaky_records"]
    assert games["critic_learned_correct"] <= games["critic_records"]
  search = results["search"]
  assert set(search) >= {"final_critic", "round0_critic", "self_consistency", "single_sample"}
  assert search["self_consistency"]["votes"] >= 1
  played = json.loads((workdir / "games.json").read_text())
  assert set(played) == {"round1", "round2"} and len(played["round1"]["games"]) == 8
  for phase in ("generator", "round0/critic", "round0/sneaky"):
    assert os.listdir(workdir / "checkpoints" / phase)
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {"generator", "round0/critic", "round0/sneaky", "round1", "round1/sneaky"} <= {r["phase"] for r in records}
  assert any("validated" in r for r in records if r["phase"] == "round1")
  assert (workdir / "curves.png").stat().st_size > 1000
  assert "harmonic_mean" in proc.stdout and "self-consistency" in proc.stdout


def test_sigkill_mid_round_then_rerun_gives_the_same_results(finished_run, tmp_path):
  workdir, _ = finished_run
  # Killed inside round 1: its games played, its learning under way.
  killed_main(TINY, tmp_path, lambda: (tmp_path / "games.json").exists())
  assert not json.loads((tmp_path / "eval.json").read_text()).get("round2")
  rerun = _main(tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert json.loads((tmp_path / "eval.json").read_text()) == json.loads((workdir / "eval.json").read_text())


def test_rerun_with_another_config_is_refused(finished_run):
  workdir, _ = finished_run
  before = (workdir / "eval.json").read_text()
  proc = _main(workdir, "--config.game.balance=False")
  assert proc.returncode == 2 and "game.balance: True -> False" in proc.stderr
  assert (workdir / "eval.json").read_text() == before


def test_search_command_on_a_finished_run(finished_run):
  workdir, _ = finished_run
  proc = subprocess.run([sys.executable, "-m", "scorejax.search", f"--workdir={workdir}", "--round=1",
                         "--problems=2"], capture_output=True, text=True, timeout=600, env=main_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads((workdir / "search_round1.json").read_text())
  assert set(out) == {"round1_critic", "round0_critic", "single_sample", "self_consistency", "num_problems"}
  assert out["num_problems"] == 2
  proc = subprocess.run([sys.executable, "-m", "scorejax.search", f"--workdir={workdir / 'checkpoints'}"],
                        capture_output=True, text=True, timeout=600, env=main_env())
  assert proc.returncode != 0 and "config.json does not exist" in proc.stderr


def test_error_type_metrics_count_an_invalid_verdict_as_a_miss():
  verdicts = [Verdict.INCORRECT, Verdict.CORRECT, Verdict.INVALID, Verdict.INCORRECT]
  assert spc.error_type_metrics(verdicts) == {"acc_error": 0.5, "n_error": 4, "n_invalid": 1}


def test_long_critic_sft_doubles_only_the_critics_round0_sft():
  base, long = config_with("arith_spc.py", "", {}), config_with("arith_spc.py", "long_critic_sft", {})
  assert long.roles.critic.sft.steps == 2 * base.roles.critic.sft.steps == 600
  assert long.roles.sneaky.to_dict() == base.roles.sneaky.to_dict() and long.game.to_dict() == base.game.to_dict()
  assert config_with("arith_spc.py", "long_critic_sft,smoke", {}).roles.critic.sft.steps == 40  # smoke shrinks first


def test_sft_wins_learns_from_the_won_records_alone(tmp_path):
  config = config_with("arith_spc.py", "sft_wins", {})
  assert (config.rl.records, config.rl.ratio) == ("wins", "none")
  assert config_with("arith_spc.py", "", {}).rl.records == "all"
  records = [Record("p", "a", 1.0), Record("p", "b", -1.0), Record("p", "c", 0.5), Record("p", "d", 0.0)]
  assert [rec.response for rec in spc.learned_records(records, "wins")] == ["a", "c"]
  assert spc.learned_records(records, "all") == records
  balanced = config_with("arith_spc.py", "sft_balanced_wins", {})
  assert (balanced.rl.records, balanced.rl.ratio) == ("balanced_wins", "none")
  judged = [Record("p", "a", 1.0, None, Verdict.CORRECT), Record("p", "b", 1.0, None, Verdict.CORRECT),
            Record("p", "c", 1.0, None, Verdict.INCORRECT), Record("p", "d", -1.0, None, Verdict.INCORRECT)]
  assert [rec.verdict for rec in spc.learned_records(judged, "balanced_wins")] == [Verdict.CORRECT, Verdict.INCORRECT]
  assert spc.learned_records(judged, "balanced_wins", minimum=2) == judged[:3]
  assert spc.learned_stats("critic", judged) == {"critic_learned": 4, "critic_learned_correct": 2}
  assert spc.learned_stats("sneaky", records) == {"sneaky_learned": 4}
  with pytest.raises(ValueError, match="config.rl.records='won'; expected one of \\('all', 'wins', 'balanced_wins'\\)"):
    spc.run(config_with("arith_spc.py", "smoke", {"rl.records": "won"}), str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before the workdir is claimed


@pytest.fixture(scope="module")
def model():
  config = config_with("arith_spc.py", "smoke", {})
  task = make_task(config.task)
  mesh = parallel.make_mesh({"data": -1})
  lm, params = build_model(config.model, task.tokenizer, mesh, 0)
  return config, task, mesh, lm, params


@pytest.mark.parametrize("ratio", spc_obj.RATIOS)
def test_one_offline_step_raises_won_judgements_and_lowers_lost_ones(model, ratio):
  config, task, mesh, lm, params = model
  data = BuiltinSPCData(task, config)
  rows, _ = data.critic_sft_rows("test", 0, 8)
  # Records as the games make them: the round-start model's own responses, its log-probs as pi_ref.
  logp_fn = jax.jit(model_logprobs(lm, 32))
  probe = spc.sft_batch(rows, task)
  logp = np.asarray(logp_fn(params, probe))
  records = [Record(p, t, 1.0 if i % 2 == 0 else -1.0, logp[i, len(p):len(p) + len(t)].tolist())
             for i, (p, t) in enumerate(rows)]
  cfg = spc_obj.SPCConfig(ratio=ratio)
  loss_fn = build_loss_fn(spc_obj.spc_loss, model_logprobs(lm, 32), spc.offline_inputs, cfg)
  mixed = spc.offline_batch(records, data.critic_sft_rows("test/sft", 0, 8)[0], task)
  assert mixed["is_sft_B"].tolist() == [0.0] * 8 + [1.0] * 8
  _, aux = jax.jit(loss_fn)(params, mixed)
  assert float(aux["ratio"]) == pytest.approx(1.0, abs=1e-4)  # pi_theta == pi_ref at the round's start
  assert float(aux["game_records"]) == 8 and float(aux["sft_records"]) == 8 and float(aux["sft_loss"]) > 0
  batch = spc.offline_batch(records, [], task)  # the game records alone: the direction of the RL term
  import optax
  optimizer = optax.sgd(0.05)
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh, params=params)
  state, _ = make_train_step(loss_fn, optimizer, shardings, mesh)(state, parallel.shard_batch(batch, mesh))
  mask = batch["mask_response_BxT"][:8]
  gain = ((np.asarray(logp_fn(state.params, batch))[:8] - batch["sampler_logp_BxT"][:8]) * mask).sum(1)
  assert gain[0::2].mean() > 0 > gain[1::2].mean()


def test_games_with_several_critic_samples_extend_the_one_sample_games(model, monkeypatch):
  _, task, mesh, lm, params = model

  def every_rewrite_wrong(sneaky, task, items, error_types, key, rule, config, mesh):  # stands in for a trained S
    parsed = [("wrong_result", f"{it.step} + 1") for it in items]
    return parsed, spc.Outputs([[5, 6]] * len(items), [[-0.5, -0.5]] * len(items), [""] * len(items))
  monkeypatch.setattr(spc, "rewrite", every_rewrite_wrong)
  monkeypatch.setattr(spc, "validate", lambda data, solver, task, items, *_: np.ones(len(items), bool))

  def games(samples):
    config = config_with("arith_spc.py", "smoke", {"game.games_per_round": 6, "game.critic_samples": samples,
                                                   "roles.critic.max_new_tokens": 12})
    data = BuiltinSPCData(task, config)
    played = spc.play_round(1, data, task, (lm, params), (lm, params), (lm, params), (lm, params), config, mesh)
    return game_lib.games_from_json(played["games"])

  one, three = games(1), games(3)
  assert len(one) == len(three) == 6
  for a, b in zip(one, three):
    assert a.more_on_sneaky == a.more_on_correct == ()
    assert len(b.more_on_sneaky) == len(b.more_on_correct) == 2
    # The first of the three judgements is the one-sample game's (same key, same row); the others differ.
    for x, y in ((a.on_sneaky, b.on_sneaky), (a.on_correct, b.on_correct)):
      assert (x.prompt, x.response, x.verdict) == (y.prompt, y.response, y.verdict)
      np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-4)  # rows decoded in other batches
    assert all(j.prompt == a.on_sneaky.prompt for j in b.more_on_sneaky)
    assert all(j.prompt == a.on_correct.prompt != a.on_sneaky.prompt for j in b.more_on_correct)
  assert any(j.response != b.on_sneaky.response for b in three for j in b.more_on_sneaky)


def test_step_search_resamples_rejected_steps_up_to_the_retry_budget(model):
  config, task, mesh, lm, params = model
  problems = task.eval_problems[:3]
  cfg = SearchConfig(retries=2, max_steps=2, step_tokens=8, batch_size=16)
  calls = []

  def reject_all(items):
    calls.append(len(items))
    return [Verdict.INCORRECT] * len(items)
  found = step_search(lm, params, task, problems, reject_all, jax.random.key(0), cfg, mesh)
  # Every pass judges each pending problem `retries` times and keeps the last of retries + 1 samples
  # (the judge sees the pending rows padded to a bucketed count).
  assert found.judged_steps == found.rejected_steps
  assert found.judged_steps % cfg.retries == 0 and found.judged_steps >= cfg.retries * len(problems)
  assert len(calls) % cfg.retries == 0 and calls[0] == 16
  accept_all = step_search(lm, params, task, problems, lambda items: [Verdict.CORRECT] * len(items),
                           jax.random.key(0), cfg, mesh)
  assert accept_all.rejected_steps == 0 and accept_all.judged_steps <= len(problems) * cfg.max_steps
  assert found.rewards.shape == (3,) and set(found.rewards.tolist()) <= {0.0, 1.0}


def test_finished_params_reads_a_finished_phase_and_refuses_what_is_not(model, tmp_path):
  config, task, mesh, lm, params = model
  config = config_with("arith_spc.py", "smoke", {"checkpoint.async_save": False, "log_every": 1})
  rows, _ = BuiltinSPCData(task, config).critic_sft_rows("test", 0, 8)
  loss_fn = build_loss_fn(sft.sft_loss, model_logprobs(lm, 32), lambda b: sft.SFTBatch(b["mask_response_BxT"]),
                          sft.SFTConfig())
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  runner = PhaseRunner(config, str(tmp_path), lm, mesh, writer)
  opt = OptimizerConfig(learning_rate=1e-2)
  trained = runner.run("round0/critic", 2, opt, params, loss_fn, lambda step, state: (spc.sft_batch(rows, task), {}),
                       0)
  restored = runner.finished_params("round0/critic", OptimizerConfig(), params)  # structure only: values differ
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), trained, restored)
  assert all(jax.tree.leaves(same))
  with pytest.raises(FileNotFoundError, match="'round1/critic' has no checkpoint"):
    runner.finished_params("round1/critic", opt, params)
  writer.close()
