"""Critique-in-the-loop end to end on a shrunken config: outputs, resume after SIGKILL, the config guard; the
critique-and-refine chains and the iteration data on a stand-in critic."""

import json
import os

import jax
import numpy as np
import pytest
from hf_fixtures import config_with, finished_main, killed_main, run_main

from scorejax.experiments import critique_data as cd
from scorejax.experiments import critique_loop
from scorejax.experiments.deepcritic import Critiques
from scorejax.tasks import arith
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import endless_shuffle, make_task

TINY = ["--config=configs/arith_critique_loop.py:smoke", "--config.task.eval_size=8",
        "--config.critique_data.problems=12", "--config.critic.steps=6", "--config.difficulty.samples=2",
        "--config.self_improve.questions=8", "--config.self_improve.steps=4", "--config.eval.dev_problems=4",
        "--config.critique.max_new_tokens=64", "--config.checkpoint.every=5", "--config.checkpoint.async_save=False"]
ITER_KEYS = {"accuracy", "accuracy_sampled", "levels", "levels_sampled", "dev_accuracy", "dev_accuracy_sampled", "rows",
             "level_share", "hard_share", "questions_covered", "actor_samples"}


def _main(workdir, *extra):
  return run_main(TINY, workdir, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  return finished_main(TINY, tmp_path_factory.mktemp("critique_loop"))


def test_main_writes_every_output(finished_run):
  workdir, proc = finished_run
  results = json.loads((workdir / "eval.json").read_text())
  assert set(results) == {"iter0", "critique_data", "critic", "test_time", "iter1", "iter2"}
  assert set(results["iter0"]["levels"]) == {"1", "2", "3", "4", "5"}
  for name in ("iter1", "iter2"):
    assert set(results[name]) >= ITER_KEYS
    assert results[name]["actor_samples"] <= 8 * (2 + 2)  # samples + refinement budget per question
  records = cd.read_records(str(workdir / "critique_data.jsonl"))
  assert cd.source_counts(records) == {k: v for k, v in results["critique_data"].items() if k != "sampled"}
  assert {r.source for r in records} <= {"rg1", "rg2", "rg3", "correct"}
  assert set(results["critic"]) >= {"mean_f1", "subsets", "invalid", "num_solutions"}
  tt = results["test_time"]
  assert tt["num_problems"] == 8 and [p["k"] for p in tt["plain"]] == [1, 2, 4]
  assert [r["round"] for r in tt["rounds"]] == [1, 2]
  assert all(r["fixed"] + r["broken"] <= r["refined"] for r in tt["rounds"])
  assert [(r["method"], r["chains"]) for r in tt["rows"]] == [("refine", 1), ("refine", 2), ("sequential", 1),
                                                              ("sequential", 2)]
  for row in tt["rows"]:
    assert row["tokens"] >= tt["tokens_per_sample"] * 0.5 * row["chains"] and 1 <= row["plain_k"] <= 4
  difficulty = json.loads((workdir / "difficulty.json").read_text())
  assert len(difficulty["heldout"]["passes"]) == 8 and len(difficulty["questions"]["passes"]) == 8
  assert set(json.loads((workdir / "iterations.json").read_text())) == {"iter1", "iter2"}
  for phase in ("actor", "critic"):
    assert os.listdir(workdir / "checkpoints" / phase)
  assert (workdir / "curves.png").stat().st_size > 1000 and (workdir / "difficulty.png").stat().st_size > 1000
  assert "accuracy" in proc.stdout and "plain sampling MV@" in proc.stdout


def test_sigkill_mid_critic_then_rerun_gives_the_same_results(finished_run, tmp_path):
  workdir, _ = finished_run
  saved = tmp_path / "checkpoints" / "critic"
  # Killed inside the critic's SFT: its data written, a checkpoint saved.
  killed_main(TINY, tmp_path, lambda: saved.exists() and bool(os.listdir(saved)))
  assert (tmp_path / "critique_data.jsonl").exists()
  assert "critic" not in json.loads((tmp_path / "eval.json").read_text())
  rerun = _main(tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert json.loads((tmp_path / "eval.json").read_text()) == json.loads((workdir / "eval.json").read_text())


def test_critic_refresh_retrains_the_critic_on_the_current_actors_errors(finished_run, tmp_path):
  workdir, _ = finished_run
  proc = _main(tmp_path, "--config.self_improve.critic_refresh=True")
  assert proc.returncode == 0, proc.stderr[-3000:]
  plain, refreshed = (json.loads((w / "eval.json").read_text()) for w in (workdir, tmp_path))
  assert set(refreshed) == set(plain) | {"critique_data_iter2"}
  for name in ("iter0", "critique_data", "critic", "test_time", "iter1"):  # the first critic's run, unchanged
    assert refreshed[name] == plain[name], name
  # Iteration 2's critique data: drawn by the actor of iteration 1 on problems of its own.
  base, again = (cd.read_records(str(tmp_path / f)) for f in ("critique_data.jsonl", "critique_data_iter2.jsonl"))
  assert cd.source_counts(again) == {k: v for k, v in refreshed["critique_data_iter2"].items() if k != "sampled"}
  assert {r.problem for r in again} != {r.problem for r in base}
  assert os.listdir(tmp_path / "checkpoints" / "iter2" / "critic")
  assert not (tmp_path / "checkpoints" / "iter1" / "critic").exists()


def test_order_seed_feeds_the_same_rows_in_another_order():
  assert critique_loop.fine_tune_stream("iter2", 0) == "iter2/actor"  # the default: earlier runs' streams
  rows = list(range(64))
  epoch = lambda order: [r for step in range(4) for r in endless_shuffle(
      rows, 0, critique_loop.fine_tune_stream("iter2", order), step, 16)]
  assert epoch(0) == epoch(0) and sorted(epoch(0)) == sorted(epoch(1)) == rows
  assert epoch(1) != epoch(0) and epoch(2) != epoch(1)


def test_rerun_with_another_config_is_refused(finished_run):
  workdir, _ = finished_run
  before = (workdir / "eval.json").read_text()
  proc = _main(workdir, "--config.self_improve.mode=vanilla")
  assert proc.returncode == 2 and "self_improve.mode: 'critique' -> 'vanilla'" in proc.stderr
  assert (workdir / "eval.json").read_text() == before


# ----------------------------------------------------------------------------
# Chains and iteration data, on a stand-in critic and actor
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
  config = config_with("arith_critique_loop.py", "smoke", {})
  return config, make_task(config.task)


def _stand_ins(monkeypatch, task, critic_of, refined_of):
  """The critic's critique `critic_of(solution)` and the actor's refinement `refined_of(solution)` (texts)."""
  def fake_critique(lm, params, task_, solutions, key, rule, config, mesh, n=1):
    texts = [critic_of(s) for s in solutions]
    predicted = [task.parse_critique(t, len(s.steps)) for s, t in zip(solutions, texts)]
    return Critiques(texts, [task.answer_ids(t) for t in texts], [[] for _ in texts],
                     np.array([-2 if not isinstance(p, int) else p for p in predicted], np.int32))

  def fake_refine(lm, params, task_, solutions, texts, key, rule, config, mesh):
    return [task.answer_ids(refined_of(s)) for s in solutions]
  monkeypatch.setattr(critique_loop, "critique", fake_critique)
  monkeypatch.setattr(cd, "refine", fake_refine)


def _slipped(problem) -> str:
  return arith.format_solution(arith.write_solution(problem, np.random.default_rng(0), 0.0, carry_slip_rate=1.0).lines)


def test_chains_stop_when_the_critic_accepts_and_count_every_token(setup, monkeypatch):
  config, task = setup
  problems = [p for p in task.train_problems(0, "test", 0, 64) if task.earliest_error(
      p, task.steps(_slipped(p))) >= 0 and not task.reward(p, task.answer_ids(_slipped(p)))][:3]
  right = {p.text: arith.format_solution(arith.solution_lines(p)) for p in problems}
  # The checker's critique, and a refinement that fixes everything: one round, then accepted.
  _stand_ins(monkeypatch, task, lambda s: critiques.write_critique(s.problem, s.steps), lambda s: right[s.problem.text])
  first = [task.answer_ids(_slipped(p)) for p in problems]
  chains = critique_loop.critique_and_refine(None, None, None, task, problems, first, 3, jax.random.key(0), None, config,
                                             None)
  assert [task.reward(p, a) for p, a in zip(problems, chains.answers[1])] == [1.0] * 3
  assert chains.answers[3] == chains.answers[1]  # accepted in round 2: nothing more is sampled
  none = dict.fromkeys(critique_loop.VERDICTS, 0)
  assert chains.stats == {"critiques": 6, "invalid_critiques": 0, "accepted": 3, "refined": 3, "no_answer": 0,
                          "verdicts": dict(none, located=3, passed=3), "refined_right": dict(none, located=3),
                          "refined_past_flag": dict(none, located=3), "located_redo_right": 3,
                          "located_redo_right_past_flag": 3}
  critique_1 = [len(task.answer_ids(critiques.write_critique(p, task.steps(_slipped(p))))) for p in problems]
  critique_2 = [len(task.answer_ids(critiques.write_critique(p, arith.solution_lines(p)))) for p in problems]
  refined = [len(task.answer_ids(right[p.text])) for p in problems]
  np.testing.assert_array_equal(chains.tokens[1], np.array([len(f) for f in first]) + critique_1 + refined)
  np.testing.assert_array_equal(chains.tokens[3], chains.tokens[1] + critique_2)
  assert critique_loop.round_transitions(task, problems, chains) == [
      {"round": 1, "accuracy": 1.0, "refined": 3, "fixed": 3, "broken": 0},
      {"round": 2, "accuracy": 1.0, "refined": 0, "fixed": 0, "broken": 0},
      {"round": 3, "accuracy": 1.0, "refined": 0, "fixed": 0, "broken": 0}]
  # An unreadable critique keeps the answer and ends the chain.
  _stand_ins(monkeypatch, task, lambda s: "no verdict here", lambda s: right[s.problem.text])
  chains = critique_loop.critique_and_refine(None, None, None, task, problems, first, 2, jax.random.key(0), None, config,
                                             None)
  assert chains.answers[2] == first and chains.stats["invalid_critiques"] == 3 and chains.stats["refined"] == 0
  assert chains.stats["verdicts"] == dict(none, invalid=3)
  # A critic that flags the last step: past the slip, so a late verdict, and a refinement that stays wrong.
  def last_step_flagged(s):
    right_lines = arith.solution_lines(s.problem)
    return critiques.write_critique(s.problem, right_lines[:-1] + ("Answer: 999",))
  assert all(task.earliest_error(p, task.steps(_slipped(p))) < len(arith.solution_lines(p)) - 1 for p in problems)
  _stand_ins(monkeypatch, task, last_step_flagged, lambda s: "Answer: 999")
  chains = critique_loop.critique_and_refine(None, None, None, task, problems, first, 1, jax.random.key(0), None, config,
                                             None)
  assert chains.stats["verdicts"] == dict(none, late=3) and chains.stats["refined_right"] == none
  assert chains.stats["refined_past_flag"] == none  # "Answer: 999" is wrong from its first step
  # A refinement that writes the flagged step right and then slips: past the flag, still wrong.
  _stand_ins(monkeypatch, task, lambda s: critiques.write_critique(s.problem, s.steps),
             lambda s: arith.format_solution(arith.solution_lines(s.problem)[:-1] + ("Answer: 999",)))
  chains = critique_loop.critique_and_refine(None, None, None, task, problems, first, 1, jax.random.key(0), None, config,
                                             None)
  assert chains.stats["refined_right"] == none and chains.stats["refined_past_flag"] == dict(none, located=3)
  assert chains.stats["located_redo_right"] == chains.stats["located_redo_right_past_flag"] == 3
  # A critic that locates the slip but redoes it wrong, and an actor that copies the wrong redo.
  def wrong_redo(s):
    slip = task.earliest_error(s.problem, s.steps)
    return critiques.write_critique(s.problem, s.steps, redo_of=lambda i, right: right + "1" if i == slip else right)
  _stand_ins(monkeypatch, task, wrong_redo, lambda s: task.text(task.answer_ids(_slipped(s.problem))))
  chains = critique_loop.critique_and_refine(None, None, None, task, problems, first, 1, jax.random.key(0), None, config,
                                             None)
  assert chains.stats["verdicts"] == dict(none, located=3) and chains.stats["located_redo_right"] == 0
  assert chains.stats["refined_past_flag"] == none


def test_verdict_kinds():
  kind = critique_loop.verdict_kind
  assert [kind(2, p) for p in (2, 0, 3, -1)] == ["located", "early", "late", "missed"]
  assert [kind(-1, p) for p in (0, -1)] == ["false_alarm", "passed"]
  assert kind(2, critique_loop.critic_obj.INVALID_INDEX) == kind(-1, critique_loop.critic_obj.INVALID_INDEX) == "invalid"


def test_iteration_data_keeps_correct_samples_and_correct_refinements(setup, monkeypatch):
  config, task = setup
  problems = task.train_problems(0, "test", 0, 4)
  right = {p.text: arith.format_solution(arith.solution_lines(p)) for p in problems}
  wrong = {p.text: "Answer: 999" for p in problems}
  # Each question: one right and one wrong sample (samples=2); the wrong one is refined right.
  monkeypatch.setattr(cd, "answer_groups", lambda lm, params, task_, qs, n, key, rule, config_, mesh: [
      [task.answer_ids(right[q.text]), task.answer_ids(wrong[q.text])] + [task.answer_ids(wrong[q.text])] * (n - 2)
      for q in qs])
  _stand_ins(monkeypatch, task, lambda s: critiques.write_critique(s.problem, s.steps), lambda s: right[s.problem.text])
  rows, stats = critique_loop.critique_loop_rows(None, None, None, task, problems, jax.random.key(0), config, None)
  assert sorted(rows) == sorted([(q, right[p.text], src) for q, p in enumerate(problems)
                                 for src in ("sample", "refinement")])
  assert stats["actor_samples"] == 4 * 2 + 4 and stats["correct_refinements"] == 4
  # Vanilla spends the loop's whole budget (2 samples + 2 refinements per question) on samples.
  rows, stats = critique_loop.vanilla_rows(None, None, None, task, problems, jax.random.key(0), config, None)
  assert stats["actor_samples"] == 4 * 4 and sorted(rows) == sorted((q, right[p.text], "sample")
                                                                    for q, p in enumerate(problems))
  # At the loop's N (the paper's comparison): 2 samples per question, one of them right.
  same_n = config.copy_and_resolve_references()
  same_n.self_improve.vanilla_budget = "samples"
  n_rows, n_stats = critique_loop.vanilla_rows(None, None, None, task, problems, jax.random.key(0), same_n, None)
  assert n_stats["actor_samples"] == 4 * 2 and sorted(n_rows) == sorted(rows)
  same_n.self_improve.vanilla_budget = "all"
  with pytest.raises(ValueError, match="vanilla_budget='all'; expected one of \\['loop', 'samples'\\]"):
    critique_loop.vanilla_rows(None, None, None, task, problems, jax.random.key(0), same_n, None)
  shares = critique_loop.data_stats(rows, [1, 5, 5, 4], 4)
  assert shares["level_share"] == {"1": 0.25, "2": 0.0, "3": 0.0, "4": 0.25, "5": 0.5}
  assert shares["hard_share"] == 0.75 and shares["questions_covered"]["5"] == 1.0
  assert shares["questions_covered"]["2"] is None


def test_training_chains_go_on_while_the_refinement_is_wrong_and_stop_once_it_is_right(setup, monkeypatch):
  config, task = setup
  problems = task.train_problems(0, "test", 0, 4)
  right = {p.text: arith.format_solution(arith.solution_lines(p)) for p in problems}
  monkeypatch.setattr(cd, "answer_groups", lambda lm, params, task_, qs, n, key, rule, config_, mesh: [
      [task.answer_ids(right[q.text]), task.answer_ids("Answer: 999")] for q in qs])
  # A critic that flags the first step of every answer, right ones included; the actor's first refinement is
  # still wrong, its second right, and one more would break it again.
  refined = {"Answer: 999": lambda p: "Answer: 998", "Answer: 998": lambda p: right[p.text]}
  _stand_ins(monkeypatch, task, lambda s: critiques.write_critique(s.problem, ("Answer: 999",)),
             lambda s: refined.get(arith.format_solution(s.steps), lambda p: "Answer: 997")(s.problem))
  three_rounds = config.copy_and_resolve_references()
  three_rounds.self_improve.samples, three_rounds.self_improve.refine_rounds = 2, 3
  rows, stats = critique_loop.critique_loop_rows(None, None, None, task, problems, jax.random.key(0), three_rounds,
                                                 None)
  assert sorted(rows) == sorted([(q, right[p.text], src) for q, p in enumerate(problems)
                                 for src in ("sample", "refinement")])
  # Two rounds per wrong answer: the right refinement is not critiqued a third time.
  assert stats["critiques"] == stats["refined"] == 8 and stats["correct_refinements"] == 4
  assert stats["actor_samples"] == 4 * 2 + 8
