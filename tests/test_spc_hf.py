"""SPC on real-data files: configs/qwen_spc.py on a tiny HF checkpoint and tiny files written here.

The checkpoint is a tiny random Qwen2 with a byte-level BPE tokenizer and a
Qwen-style chat template; the files are PRM800K rows whose second step has a
right and a wrong alternative, ProcessBench subsets and MATH problems. A
random model's rewrites do not parse, so its games validate nothing: the
run says so and trains neither role in RL rounds.
"""

import json
import os

import pytest
from hf_fixtures import (
  PROBLEMS,
  config_flags,
  config_module,
  config_with,
  math_file,
  processbench_files,
  run_main,
  solution_steps,
  tiny_qwen,
  write_jsonl,
)

from scorejax.experiments import spc, spc_data
from scorejax.tasks import prm800k, templates
from scorejax.tasks.base import make_task
from scorejax.tasks.math_task import MissingData
from scorejax.tasks.records import RecordError


def _prm800k(root, copies: int = 3) -> str:
  """Each problem `copies` times as a right path and as a wrong one; at step 2 the labeler saw both the right
  step (rated 1) and the wrong one (rated -1), and followed one."""
  rows = []
  for q, a in PROBLEMS * copies:
    right, wrong = solution_steps(q, a), solution_steps(q, a, wrong=True)
    for follows_wrong in (False, True):
      second = {"completions": [{"text": right[1], "rating": 1, "flagged": None},
                                {"text": wrong[1], "rating": -1, "flagged": None}],
                "human_completion": None, "chosen_completion": 1 if follows_wrong else 0}
      steps = [{"completions": [{"text": right[0], "rating": 1, "flagged": None}], "human_completion": None,
                "chosen_completion": 0}, second]
      if not follows_wrong:
        steps.append({"completions": [{"text": f"# Answer\n\n{a}", "rating": 1, "flagged": None}],
                      "human_completion": None, "chosen_completion": 0})
      rows.append({"labeler": "t", "timestamp": f"{q}-{follows_wrong}-{len(rows)}", "generation": 1,
                   "is_quality_control_question": False, "is_initial_screening_question": False,
                   "question": {"problem": q, "ground_truth_answer": a},
                   "label": {"steps": steps, "total_time": 1,
                             "finish_reason": "found_error" if follows_wrong else "solution"}})
  return write_jsonl(root / "prm800k.jsonl", rows)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("spc_hf")
  ts = templates.get_templates("math")
  corpus = [ts.solve, ts.step_critic, ts.sneaky, templates.CORRECT_VERDICT, templates.INCORRECT_VERDICT,
            " ".join(" ".join(solution_steps(q, a)) for q, a in PROBLEMS), "Error type: logical error Step: # Answer"]
  corpus += [f"{step}\n\n" for q, a in PROBLEMS for step in solution_steps(q, a)]  # a step then its break
  hf_dir = root / "qwen"
  tiny_qwen(hf_dir, corpus)
  return {"model.hf_dir": str(hf_dir), "data.processbench": tuple(processbench_files(root)),
          "data.prm800k": _prm800k(root), "task.train_path": math_file(root, "train.jsonl"),
          "task.eval_path": math_file(root, "test.jsonl")}


def tiny_overrides(assets) -> dict:
  """configs/qwen_spc.py shrunk to a few steps of the tiny checkpoint."""
  small = {"generator.max_new_tokens": 6, "game.games_per_round": 4, "game.validate_rollouts": 2,
           "game.min_kept_games": 1, "rl.batch_size": 8, "rl.sft_batch_size": 8, "eval.batch_size": 16,
           "eval.interval_problems": 4, "eval.sneaky_items": 4, "eval.search_problems": 2,
           "eval.search_max_steps": 2, "eval.search_step_tokens": 4, "checkpoint.every": 1,
           "checkpoint.async_save": False, "logprob_chunk": 32, "tensorboard": False}
  for role in ("critic", "sneaky"):
    small |= {f"roles.{role}.max_new_tokens": 8, f"roles.{role}.sft.steps": 2, f"roles.{role}.sft.batch_size": 8,
              f"roles.{role}.sft.warmup_steps": 0}
  return {**assets, **small}


def qwen_config(assets, arg="", **extra):
  return config_with("qwen_spc.py", arg, dict(tiny_overrides(assets), **extra))




def test_prm800k_keeps_each_steps_rated_alternatives(assets):
  row = next(iter(prm800k.read_prm800k(assets["data.prm800k"], check_answers=False)))
  q, a = PROBLEMS[0]
  assert row.options[1] == ((solution_steps(q, a)[1], 1), (solution_steps(q, a, True)[1], -1))
  assert len(row.options) == len(row.solution.steps)


def test_a_real_step_ends_at_a_paragraph_break(assets):
  task = make_task(qwen_config(assets).task)
  stops = task.step_stop_ids
  assert stops[:len(task.stop_ids)] == task.stop_ids
  breaks = stops[len(task.stop_ids):]
  assert breaks and all("\n\n" in task.tokenizer.decode([t]) for t in breaks)
  ids = task.tokenizer.encode("So 2 + 3 = 5.\n\n")
  assert any(t in breaks for t in ids)


def test_round0_data_from_prm800k(assets):
  config = qwen_config(assets)
  data = spc_data.FileSPCData(make_task(config.task), config)
  # 24 paths, 4 of them the dev set; of the 20 training paths, the wrong ones end at their first error.
  assert len(data.dev_rows) == 4 and len(data.dev(None, None, None)) == 4
  assert all(not it.correct and it.step.endswith(".") for it in data.wrong_steps)
  assert len(data.pairs) == 20  # one right / wrong pair at step 2 of every training path
  item, wrong = data.pairs[0]
  assert item.correct and len(item.previous) == 1 and wrong != item.step
  task = data.task
  rows, kept = data.critic_sft_rows("round0/critic", 0, 8)
  verdicts = [task.text(t) for _, t in rows]
  assert kept == 1.0 and verdicts.count(templates.INCORRECT_VERDICT) == 4
  assert verdicts.count(templates.CORRECT_VERDICT) == 4
  rows, _ = data.sneaky_sft_rows("round0/sneaky", 0, 4)
  assert all(task.text(t).startswith("Error type: logical error\nStep: ") for _, t in rows)
  assert templates.parse_sneaky(task.text(rows[0][1]), data.error_types)[0] == "logical error"
  heldout, cut = data.heldout(None, None, None)
  assert len(heldout) == 8 and cut == 0 and {s.subset for s in heldout} == {"gsm8k", "math"}


def test_game_positions_from_the_bases_right_solutions_and_prm800k(assets, monkeypatch):
  config = qwen_config(assets, **{"game.games_per_round": 6})
  task = make_task(config.task)
  data = spc_data.FileSPCData(task, config)

  def policy(lm, params, task_, problems, *args):  # right solutions to even answers, wrong ones to odd
    return [tuple(solution_steps(p.text, p.answer, wrong=int(p.answer) % 2 == 1)) for p in problems]
  monkeypatch.setattr(spc_data, "policy_steps", policy)
  positions, stats = data.game_positions(None, None, 1, 6, None)
  assert len(positions) == 6 and stats["positions"] == 6
  policy_items = [it for it in positions if it.subset == "policy"]
  assert len(policy_items) == 3 and all(int(it.problem.answer) % 2 == 0 for it in policy_items)
  assert all(it.correct for it in positions)
  assert stats["no_correct_step"] > 0  # the wrong ones were left out


def test_main_on_real_data_files(assets, tmp_path):
  overrides = dict(tiny_overrides(assets), **{"game.rounds": 1})
  args = config_flags(overrides)
  proc = run_main(["--config=configs/qwen_spc.py", *args], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "eval.json").read_text())
  assert set(results) == {"generator", "round0", "round1", "search"}
  assert set(results["search"]) >= {"final_critic", "round0_critic", "self_consistency", "single_sample"}
  r0 = results["round0"]
  assert set(r0["subsets"]) == {"gsm8k", "math"} and r0["num_labelled_steps"] > 0
  assert r0["dev"]["acc_correct"] is not None or r0["dev"]["acc_error"] is not None or r0["invalid"] == 1.0
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  for role in ("critic", "sneaky"):
    assert [r["step"] for r in records if r["phase"] == f"round0/{role}" and "loss" in r]
  assert not [r for r in records if r["phase"] == "generator" and "loss" in r]  # the loaded base is not trained
  assert results["round1"]["games"]["played"] > 0
  assert "no records this round" in proc.stdout or results["round1"]["games"]["validated"] > 0


def test_real_data_settings_are_checked_before_the_model_loads(assets, tmp_path, monkeypatch):
  def no_model(*args):
    raise AssertionError("the model was built before the data was checked")
  monkeypatch.setattr(spc, "build_model", no_model)
  for extra, error, match in (
      ({"generator.steps": 3}, ValueError, r"config.generator.steps=3: .*--config.generator.steps=0"),
      ({"game.validator": "checker"}, ValueError, r"config.game.validator='checker': real data has no exact"),
      ({"game.solvers": ("writer",)}, ValueError, r"config.game.solvers=\('writer',\): on real data"),
      ({"data.prm800k_error_type": "typo"}, ValueError, r"prm800k_error_type='typo' is not one of"),
      ({"data.prm800k": str(tmp_path / "none.jsonl")}, MissingData, r"config.data.prm800k=.*none.jsonl"),
      ({"data.processbench": ()}, MissingData, r"config.data.processbench is empty"),
      ({"eval.interval_problems": 24}, RecordError, r"24 labelled paths; config.eval.interval_problems=24")):
    with pytest.raises(error, match=match):
      spc.run(qwen_config(assets, **extra), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_config_parses_its_argument():
  module = config_module("qwen_spc.py")
  c = module.get_config("gpu,unbalanced,unpaired")
  assert not c.game.balance and not c.game.paired and c.eval.batch_size == 64 and c.game.validator == "completions"
  with pytest.raises(ValueError, match=r"configs/qwen_spc.py: bad argument 'smoke'"):
    module.get_config("smoke")
