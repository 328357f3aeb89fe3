"""DeepCritic on real-data files: configs/qwen_deepcritic.py on a tiny HF checkpoint and tiny files written here.

The checkpoint is a tiny random Qwen2 with a byte-level BPE tokenizer and a
Qwen-style chat template; the files are ProcessBench subsets, seed
critiques, PRM800K rows and MATH problems, each a few records.
"""

import json
import os
import subprocess
import sys

import pytest
from hf_fixtures import (
  PROBLEMS,
  ROOT,
  config_flags,
  config_with,
  math_file,
  processbench_files,
  solution_steps,
  tiny_qwen,
  write_jsonl,
)

from scorejax import parallel
from scorejax.experiments import critic_data, deepcritic
from scorejax.models.build import build_model
from scorejax.tasks import templates
from scorejax.tasks.base import make_task
from scorejax.tasks.math_task import MissingData
from scorejax.tasks.records import RecordError


def _seed_critiques(root):
  rows = []
  for q, a in PROBLEMS:
    rows.append({"problem": q, "steps": solution_steps(q, a), "label": -1,
                 "critique": "Step 1: right.\nStep 2: right.\nStep 3: right.\n\\boxed{-1}"})
    rows.append({"problem": q, "steps": solution_steps(q, a, True), "label": 1,
                 "critique": "Step 1: right.\nStep 2: the sum is off, wrong.\n\\boxed{2}"})
  rows.append({"problem": "What is 1 + 1?", "steps": ["1 + 1 = 3.", "# Answer\n\n3"], "label": 0,
               "critique": "Step 1: right.\n\\boxed{-1}"})  # disagrees with its label: filtered out
  return write_jsonl(root / "seed.jsonl", rows)


def _prm800k(root):
  rows = []
  for q, a in PROBLEMS * 2:
    for wrong in (False, True):
      steps = solution_steps(q, a, wrong)[:2] + [f"# Answer\n\n{int(a) + wrong}"]
      ratings = [1, -1 if wrong else 1, 1]
      rated = [{"completions": [{"text": t, "rating": r, "flagged": None}], "human_completion": None,
                "chosen_completion": 0} for t, r in zip(steps, ratings)]
      if wrong:
        rated = rated[:2]
      rows.append({"labeler": "t", "timestamp": f"{q}-{wrong}-{len(rows)}", "generation": 1,
                   "is_quality_control_question": False, "is_initial_screening_question": False,
                   "question": {"problem": q, "ground_truth_answer": a},
                   "label": {"steps": rated, "total_time": 1, "finish_reason": "found_error" if wrong else "solution"}})
  return write_jsonl(root / "prm800k.jsonl", rows)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("dc_hf")
  ts = templates.get_templates("deepcritic")
  corpus = [ts.solve, ts.critique, ts.refine, ts.self_correct,
            " ".join(" ".join(solution_steps(q, a)) for q, a in PROBLEMS),
            "Step 1: right. wrong. \\boxed{-1} \\boxed{2} # Answer"]
  hf_dir = root / "qwen"
  tiny_qwen(hf_dir, corpus)
  return {"model.hf_dir": str(hf_dir), "data.processbench": tuple(processbench_files(root)),
          "data.seed_critiques": _seed_critiques(root), "data.prm800k": _prm800k(root),
          "task.eval_path": math_file(root, "math500.jsonl"), "train": math_file(root, "train.jsonl")}


def tiny_overrides(assets) -> dict:
  """configs/qwen_deepcritic.py shrunk to a few steps of the tiny checkpoint."""
  return {**{k: v for k, v in assets.items() if k != "train"},
          "generator.max_new_tokens": 6, "critique.max_new_tokens": 8, "sft.epochs": 1, "sft.batch_size": 4,
          "sft.grad_accum_steps": 2, "sft.warmup_steps": 0, "rl.steps": 2, "rl.solutions_per_step": 2,
          "rl.group_size": 2, "rl.grad_accum_steps": 2, "rl.warmup_steps": 0, "eval.batch_size": 8, "eval.maj_k": 2,
          "eval.every": 1, "eval.interval_problems": 2, "mc.rollouts": 2, "mc.batch_size": 16,
          "checkpoint.every": 1, "checkpoint.async_save": False, "logprob_chunk": 32, "tensorboard": False}


def qwen_config(assets, arg="", **extra):
  return config_with("qwen_deepcritic.py", arg, dict(tiny_overrides(assets), **extra))




def test_main_on_real_data_files_writes_every_table(assets, tmp_path):
  args = config_flags(tiny_overrides(assets))
  proc = subprocess.run([sys.executable, "-m", "scorejax.main", "--config=configs/qwen_deepcritic.py",
                         f"--workdir={tmp_path}", *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "eval.json").read_text())
  assert set(results) == {"generator", "base", "sft", "rl", "no_critique_at_rl_budget"}
  for name in ("base", "sft", "rl"):
    table = results[name]
    assert set(table["subsets"]) == {"gsm8k", "math"}  # one ProcessBench subset per file
    assert table["num_solutions"] == 8 and table["maj_k"] == 2
    assert 0 <= table["invalid"] <= 1 and 0 <= table["refine_with_critique"] <= 1
  g = results["generator"]
  assert g["num_refined"] == len(PROBLEMS)  # the model's own MATH500-file solutions
  assert "refine_with_reference_critique" not in g  # no checker writes one on real data
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  # 8 seed critiques kept of 9, 1 epoch of batch 4: 2 SFT steps; then 2 RL steps.
  assert [r["step"] for r in records if r["phase"] == "sft" and "loss" in r] == [1, 2]
  assert [r["step"] for r in records if r["phase"] == "rl" and "loss" in r] == [3, 4]
  assert any("dev_mean_f1" in r or "dev_invalid" in r for r in records if r["phase"] == "sft")
  pool = next(r for r in records if "pool_size" in r)
  assert pool["pool_size"] == 16 - 2  # PRM800K paths less the dev set
  assert not [r for r in records if r["phase"] == "generator" and "loss" in r]
  heldout = [json.loads(line) for line in open(tmp_path / "heldout.jsonl")]
  assert [r["id"] for r in heldout][:2] == ["gsm8k-0", "gsm8k-0w"]


def test_seed_critiques_train_only_the_critique_in_epochs(assets):
  config = qwen_config(assets)
  task = make_task(config.task, needs_train=False)
  data = critic_data.FileCriticData(task, config)
  assert data.seeds_read == 9 and len(data.seeds) == 8 and data.sft_steps() == 2
  batch, stats = data.sft_batch(0)
  assert batch["tokens_BxT"].shape[0] == 4 and stats["kept_fraction"] == pytest.approx(8 / 9)
  assert 0 < batch["mask_critique_BxT"].sum() < batch["mask_BxT"].sum()
  # The two steps of epoch 0 cover every kept critique once.
  rows = [tuple(r[0]) for step in (0, 1) for r in critic_data.endless_shuffle(data.seeds, 0, "sft", step, 4)]
  assert sorted(rows) == sorted(tuple(p) for p, _, _ in data.seeds)


def test_monte_carlo_labels_from_the_models_own_solutions(assets):
  config = qwen_config(assets, "mc_labels", **{"task.train_path": assets["train"], "rl.pool_size": 4})
  task = make_task(config.task, needs_train=True)
  data = critic_data.FileCriticData(task, config)
  mesh = parallel.make_mesh({"data": -1})
  lm, params = build_model(config.model, task.tokenizer, mesh, 0)
  pool, stats = data.rl_pool(lm, params, mesh)
  # A random model's 6-token solutions state no final answer: never labelled, counted as cut off.
  assert stats["pool_cut_off"] + stats["pool_size"] == 4 and len(pool) == stats["pool_size"]
  assert all(s.label is not None for s in pool)


def test_missing_files_fail_before_the_model_loads(assets, tmp_path, monkeypatch):
  def no_model(*args):
    raise AssertionError("the model was built before the data was checked")
  monkeypatch.setattr(deepcritic, "build_model", no_model)
  config = qwen_config(assets, **{"data.prm800k": str(tmp_path / "none.jsonl")})
  with pytest.raises(MissingData, match=r"config.data.prm800k=.*none.jsonl.*github.com/openai/prm800k"):
    deepcritic.run(config, str(tmp_path / "run"))
  config = qwen_config(assets, **{"generator.steps": 3})
  with pytest.raises(ValueError, match=r"config.generator.steps=3: .*--config.generator.steps=0"):
    deepcritic.run(config, str(tmp_path / "run"))
  config = qwen_config(assets, "mc_labels")  # MATH train, which mc_labels reads, is not at its default path here
  with pytest.raises(MissingData, match=r"config.task.train_path="):
    deepcritic.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_a_seed_critique_longer_than_the_context_names_its_line(assets, tmp_path):
  path = write_jsonl(tmp_path / "long.jsonl", [
      {"problem": "What is 2 + 3?", "steps": ["5"], "label": -1, "critique": "ok\n\\boxed{-1}"},
      {"problem": "What is 2 + 3?", "steps": ["5"], "label": -1, "critique": " ".join(str(i) for i in range(800)) + "\\boxed{-1}"}])
  config = qwen_config(assets, **{"data.seed_critiques": path})
  data = critic_data.FileCriticData(make_task(config.task, needs_train=False), config)
  with pytest.raises(RecordError, match=r"long.jsonl:2: the critic prompt \(\d+ tokens\) and the critique .* "
                                        r"max_position_embeddings=1024"):
    data.check_fits(1024)


def test_a_seed_critique_row_without_a_field_names_file_line_and_field(assets, tmp_path):
  path = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "p", "steps": ["a"], "label": -1}])
  config = qwen_config(assets, **{"data.seed_critiques": path})
  with pytest.raises(RecordError, match=r"bad.jsonl:1.*critique"):
    critic_data.FileCriticData(make_task(config.task, needs_train=False), config)


def test_math_task_steps_are_paragraphs_and_a_prefix_continues_them(assets):
  config = qwen_config(assets)
  task = make_task(config.task, needs_train=False)
  steps = task.steps("We compute 2 + 3.\n\nSo 2 + 3 = 5.\n\n\nThe final answer is \\boxed{5}.\n")
  assert steps == ("We compute 2 + 3.", "So 2 + 3 = 5.", "The final answer is \\boxed{5}.")
  assert task.is_complete(steps) and not task.is_complete(steps[:2]) and task.is_complete(("# Answer\n\n5",))
  assert task.text(task.prefix_ids(steps[:2])) == "We compute 2 + 3.\n\nSo 2 + 3 = 5.\n\n"
  problem = task.eval_problems[0]
  assert task.reward(problem, task.prefix_ids(steps)) == 1.0
  assert task.parse_critique("Step 2: wrong.\n\\boxed{2}", 3) == 1  # numbered from 1
  assert templates.is_invalid(task.parse_critique("\\boxed{4}", 3))
  with pytest.raises(MissingData, match="config.task.train_path is empty"):
    task.train_problems(0, "rl_pool", 0, 2)
