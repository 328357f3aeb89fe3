"""Critique-in-the-loop on real-data files: configs/qwen_critique_loop.py on a tiny HF checkpoint and tiny files;
AutoMathCritique's real-data construction (RG1-RG3, the model annotator, the filter) on a scripted model.

The checkpoint is a tiny random Qwen2 with a byte-level BPE tokenizer and a
Qwen-style chat template; the files are MATH-format problems and ProcessBench
subsets, each a few records. A random model's answers state no final answer,
so the end-to-end run builds no critique data; the scripted model (every
sample chosen from the prompt it answers) shows what each source writes.
"""

import json
import os
import re

import jax
import pytest
from hf_fixtures import (
  PROBLEMS,
  config_flags,
  config_with,
  math_file,
  processbench_files,
  run_main,
  solution_steps,
  tiny_qwen,
)

from scorejax.experiments import critique_data as cd
from scorejax.experiments import critique_loop
from scorejax.experiments.hf_critique_loop_config import ERROR_TYPES
from scorejax.sampling import Greedy
from scorejax.tasks import templates
from scorejax.tasks.base import make_task
from scorejax.tasks.math_task import MathProblem, MissingData

ANSWERS = dict(PROBLEMS)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("cl_hf")
  ts = templates.get_templates("deepcritic")
  corpus = [ts.solve, ts.critique, ts.refine, ts.annotate, ts.sneaky, " ".join(ERROR_TYPES),
            " ".join(" ".join(solution_steps(q, a)) for q, a in PROBLEMS),
            "Step 1: right. wrong. \\boxed{-1} \\boxed{2} Error type: Step:"]
  hf_dir = root / "qwen"
  tiny_qwen(hf_dir, corpus)
  return {"model.hf_dir": str(hf_dir), "data.processbench": tuple(processbench_files(root)),
          "task.train_path": math_file(root, "train.jsonl"), "task.eval_path": math_file(root, "test.jsonl")}


def tiny_overrides(assets) -> dict:
  """configs/qwen_critique_loop.py shrunk to a few steps of the tiny checkpoint."""
  return {**assets, "task.dev_size": 1, "generator.max_new_tokens": 6, "critique.max_new_tokens": 8,
          "critique_data.problems": 3, "mc.rollouts": 2, "mc.batch_size": 16, "critic.steps": 2,
          "critic.batch_size": 2, "critic.grad_accum_steps": 1, "critic.warmup_steps": 0, "difficulty.samples": 2,
          "test_time.max_samples": 2, "test_time.chains": (1, 2), "test_time.sequential_rounds": 2,
          "self_improve.iterations": 2, "self_improve.questions": 3, "self_improve.samples": 2,
          "self_improve.refine_budget": 1, "self_improve.steps": 2, "self_improve.batch_size": 2,
          "self_improve.grad_accum_steps": 1, "self_improve.warmup_steps": 0, "eval.batch_size": 8,
          "eval.samples": 2, "eval.dev_problems": 1, "checkpoint.every": 1, "checkpoint.async_save": False,
          "logprob_chunk": 32, "tensorboard": False}


# In this process JAX sees 8 CPU devices (conftest.py): training batches divide over them.
IN_PROCESS = {"critic.batch_size": 8, "self_improve.batch_size": 8}


def qwen_config(assets, arg="", **extra):
  return config_with("qwen_critique_loop.py", arg, dict(tiny_overrides(assets), **extra))




# ----------------------------------------------------------------------------
# AutoMathCritique on real data, with a scripted actor and annotator
# ----------------------------------------------------------------------------


def _known(text: str) -> str:
  return text.split("[What Is Known About the Solution]")[1].split("Critique the solution")[0]


def scripted_sampler(task, seen: list[str], unparsed_problem: str = "What is 9 - 7?"):
  """A stand-in for critique_data._sample_ids: each reply chosen from the prompt it answers (`seen` collects
  the prompts). Greedy solutions are right; rg1's samples (at critique_data.rg1_temperature) right when the
  answer is even; continuations (of a prefix, or at another temperature: an rg2 resampling from step 0) end on
  a wrong answer; rg3 rewrites name the error type asked for; the annotator boxes the step it is told (for the
  problem `unparsed_problem` it boxes nothing); refinements are right."""
  def sample(lm, params, task_, prompts, key, rule, sampler, config, mesh):
    rg1 = not isinstance(rule, Greedy) and rule.temperature == config.critique_data.rg1_temperature
    out = []
    for ids in prompts:
      text = task.tokenizer.decode(ids)
      seen.append(text)
      q = next(q for q in ANSWERS if q in text)
      right, wrong = solution_steps(q, ANSWERS[q]), solution_steps(q, ANSWERS[q], wrong=True)
      if "[What Is Known About the Solution]" in text:
        known = _known(text)
        step = re.search(r"step (\d+)\.", known)
        index = step.group(1) if step else ("-1" if "is correct" in known else "2")
        reply = "Step 1: right." if q == unparsed_problem else f"Step 1: right.\n\n\\boxed{{{index}}}"
      elif "[Correct Step]" in text:
        kind = text.split("one of: ")[1].split(". Answer")[0]
        reply = f"Error type: {kind}\nStep: {wrong[1]}"
      elif "Refined Solution:" in text:
        reply = "\n\n".join(right)
      elif text.endswith("\n\n") or not (rg1 or isinstance(rule, Greedy)):  # a continuation
        reply = wrong[-1]
      else:
        reply = "\n\n".join(right if isinstance(rule, Greedy) or int(ANSWERS[q]) % 2 == 0 else wrong)
      out.append(task.tokenizer.encode(reply))
    return out
  return sample


def test_real_data_sources_labels_what_the_annotator_is_told_and_the_filter(assets, tmp_path, monkeypatch):
  config = qwen_config(assets, **{"task.dev_size": 0, "critique_data.problems": 4,
                                  "critique_data.rg2_location": "resampled", "critique_data.rg2_temperature": 1.5})
  task = make_task(config.task)
  seen = []
  monkeypatch.setattr(cd, "_sample_ids", scripted_sampler(task, seen))
  records, counts = cd.build_records(None, None, task, config, None)
  by_source = {s: [r for r in records if r.source == s] for s in cd.RECORD_SOURCES}
  # rg1: sampled answers to 5 and 9 are wrong (label unknown), to 8 and 2 right ("correct", label -1).
  assert sorted(r.answer for r in by_source["rg1"]) == ["5", "9"] and all(r.label is None for r in by_source["rg1"])
  assert sorted(r.answer for r in by_source["correct"]) == ["2", "8"]
  assert all(r.label == -1 for r in by_source["correct"])
  # rg2 / rg3: the greedy solution's first k steps, then step k resampled (rg2) or rewritten (rg3), then a wrong end.
  for source in ("rg2", "rg3"):
    assert len(by_source[source]) == 4
    for r in by_source[source]:
      right = solution_steps(r.problem, r.answer)
      assert r.label == r.step and 0 <= r.step < len(right) - 1 and list(r.steps[:r.step]) == right[:r.step]
      assert r.steps[-1].endswith(f"\\boxed{{{int(r.answer) + 1}}}.")
  assert all(r.error_type in ERROR_TYPES for r in by_source["rg3"])
  assert all(r.error_type is None for r in by_source["rg2"])
  # What the annotator is told: the right answer, and the error's step and type where known.
  told = {_known(t).strip() for t in seen if "[What Is Known About the Solution]" in t}
  assert "The solution's final answer is wrong; where its first error is, is not known." in told
  assert "The solution's final answer is correct." in told
  assert any(re.fullmatch(r"The earliest incorrect step is step \d\. It contains this kind of error: .+\.", t)
             for t in told)
  assert all("[Correct Final Answer]" in t for t in seen if "[What Is Known About the Solution]" in t)
  # The filter: every refinement is right, so what parses is kept; "What is 9 - 7?" boxes nothing.
  for r in records:
    assert r.refined_correct and r.kept == (r.problem != "What is 9 - 7?")
    assert (r.critique_index is None) == (r.problem == "What is 9 - 7?")
  assert counts["kept"] == sum(r.kept for r in records) == len(records) - 3  # its rg2, rg3 and "correct" records
  assert counts["sampled"]["right_solutions"] == {"problems": 4, "right": 4}
  assert counts["sampled"]["rg3"]["rewrite_unparsed"] == 0
  # The JSONL keeps an unknown label as null.
  path = str(tmp_path / "critique_data.jsonl")
  cd.write_records(path, records)
  assert [r.to_json() for r in cd.read_records(path)] == [r.to_json() for r in records]
  assert any(json.loads(line)["label"] is None for line in open(path))


def test_rg2_monte_carlo_location_is_never_before_the_resampled_step(assets, monkeypatch):
  config = qwen_config(assets)
  task = make_task(config.task)
  problem = task.train[0]
  flawed = [cd.Candidate("rg2", problem, ("a", "b", "c", "d"), 2, None, 2) for _ in range(4)]
  monkeypatch.setattr(cd.mc_labels, "mc_labels", lambda *args: [3, 0, -1, None])
  assert cd.mc_locate(None, None, task, flawed, None, config, None) == [3, 2, None, None]


def test_an_rg3_rewrite_that_does_not_parse_is_counted_and_left_out(assets, monkeypatch):
  config = qwen_config(assets, **{"task.dev_size": 0, "critique_data.problems": 4,
                                  "critique_data.sources": ("rg3",)})
  task = make_task(config.task)
  sample = scripted_sampler(task, [])

  def no_type(lm, params, task_, prompts, *args):
    out = sample(lm, params, task_, prompts, *args)
    return [task.tokenizer.encode("Step: 1") if "[Correct Step]" in task.tokenizer.decode(p) else o
            for p, o in zip(prompts, out)]
  monkeypatch.setattr(cd, "_sample_ids", no_type)
  candidates, stats = cd.model_flawed_solutions(None, None, task, task.train, jax.random.key(0), config, None)
  assert candidates == [] and stats["rg3"]["rewrite_unparsed"] == 4 and stats["rg3"]["sampled"] == 0


# ----------------------------------------------------------------------------
# The experiment on the tiny checkpoint
# ----------------------------------------------------------------------------


def test_main_vanilla_self_improvement_on_real_data_files(assets, tmp_path):
  overrides = dict(tiny_overrides(assets), **{"self_improve.iterations": 1})
  args = config_flags(overrides)
  proc = run_main(["--config=configs/qwen_critique_loop.py:math,vanilla_si", *args], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / "eval.json").read_text())
  assert set(results) == {"iter0", "iter1"}
  assert set(results["iter0"]["levels"]) == {"1", "2", "3", "4", "5"}
  for name in ("iter1",):  # a random model's answers are never right: nothing to train on, said so
    assert results[name]["empty"] and results[name]["rows"] == 0
    assert results[name]["actor_samples"] == 3 * (2 + 1)  # questions x (samples + refine budget)
  assert "nothing correct to train on" in proc.stdout


def test_critic_trains_on_real_data_records_and_is_scored_on_processbench(assets, tmp_path, monkeypatch):
  """The whole run in process; the critique data's candidates and feedback stand in for what a trained model
  writes (a random one writes nothing parseable), the rest is the tiny checkpoint's own."""
  config = qwen_config(assets, **IN_PROCESS, **{"critique_data.filter_by_refinement": False})
  q, a = PROBLEMS[0]
  problem = MathProblem(q, a, "train.jsonl/0")
  candidates = [cd.Candidate("rg1", problem, tuple(solution_steps(q, a, True)), None),
                cd.Candidate("correct", problem, tuple(solution_steps(q, a)), -1)]
  monkeypatch.setattr(cd, "model_flawed_solutions", lambda *args: (candidates, {"rg1": {"sampled": 1}}))
  monkeypatch.setattr(cd, "model_feedback", lambda *args: ["Step 2: wrong.\n\\boxed{2}", "Fine.\n\\boxed{-1}"])
  results = critique_loop.run(config, str(tmp_path))
  assert set(results) == {"iter0", "critique_data", "critic", "test_time", "iter1", "iter2"}
  assert results["critique_data"]["kept"] == 2 and results["critique_data"]["rg1"]["written"] == 1
  critic = results["critic"]
  assert critic["trained"] and critic["num_solutions"] == 8 and set(critic["subsets"]) == {"gsm8k", "math"}
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records if r["phase"] == "critic" and "loss" in r] == [1, 2]
  assert not [r for r in records if r["phase"] == "actor" and "loss" in r]  # the loaded actor is not trained
  kept = cd.read_records(str(tmp_path / "critique_data.jsonl"))
  assert [r.critique_index for r in kept] == [1, -1]
  assert {row["method"] for row in results["test_time"]["rows"]} == {"refine", "sequential"}
  assert os.path.isfile(tmp_path / "difficulty.png")


def test_no_critique_kept_leaves_the_critic_untrained_and_says_so(assets, tmp_path, capsys):
  config = qwen_config(assets, **IN_PROCESS, **{"self_improve.iterations": 1})
  results = critique_loop.run(config, str(tmp_path))  # a random model's critique data: nothing parses
  assert results["critique_data"]["kept"] == 0 and results["critic"]["trained"] is False
  assert "keeps no critique" in capsys.readouterr().out
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert not [r for r in records if r["phase"] == "critic" and "loss" in r]


def test_real_data_settings_are_checked_before_the_model_loads(assets, tmp_path, monkeypatch):
  def no_model(*args):
    raise AssertionError("the model was built before the data was checked")
  monkeypatch.setattr(critique_loop, "build_model", no_model)
  for extra, error, match in (
      ({"generator.steps": 3}, ValueError, r"config.generator.steps=3: .*--config.generator.steps=0"),
      ({"self_improve.replay_share": 0.25}, ValueError, r"replay_share=0.25: .*set it to 0"),
      ({"task.templates": "arith"}, ValueError, r"config.task.templates='arith' has no annotator prompt"),
      ({"data.processbench": (str(tmp_path / "none.jsonl"),)}, MissingData,
       r"config.data.processbench=.*none.jsonl.*Qwen/ProcessBench"),
      ({"task.train_path": str(tmp_path / "none.jsonl")}, MissingData, r"config.task.train_path=")):
    with pytest.raises(error, match=match):
      critique_loop.run(qwen_config(assets, **extra), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_real_configs_parse_their_arguments():
  from hf_fixtures import config_module
  for name in ("qwen_critique_loop.py", "llama_critique_loop.py"):
    module = config_module(name)
    c = module.get_config("gsm8k,gpu,vanilla_si,no_filter")
    assert c.task.name == "gsm8k" and c.self_improve.mode == "vanilla"
    assert not c.critique_data.filter_by_refinement and c.eval.batch_size == 64
    assert module.get_config().task.name == "math" and module.get_config().task.templates == "deepcritic"
    with pytest.raises(ValueError, match=rf"configs/{name}: bad argument 'math,gsm8k'"):
      module.get_config("math,gsm8k")
    with pytest.raises(ValueError, match="bad argument 'smoke'"):
      module.get_config("smoke")
