"""AutoMathCritique on the built-in task: difficulty levels, RG1-RG3 candidates, feedback, the refinement
filter, the JSONL records."""

import json

import jax
import numpy as np
import pytest
from hf_fixtures import config_with

from scorejax.experiments import critique_data as cd
from scorejax.tasks import arith
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import make_task
from scorejax.tasks.records import RecordError


@pytest.fixture(scope="module")
def setup():
  config = config_with("arith_critique_loop.py", "smoke", {"critique_data.problems": 12})
  return config, make_task(config.task)


def test_difficulty_levels_bin_the_pass_rate_in_fifths():
  # 16 samples: 13-16 passes is level 1 ([0.8, 1]), 12 is 0.75 -> level 2, 3 passes (0.19) -> level 5.
  assert [cd.difficulty_level(n, 16) for n in (16, 13, 12, 10, 9, 7, 6, 4, 3, 0)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
  assert [cd.difficulty_level(n, 5) for n in range(6)] == [5, 4, 3, 2, 1, 1]  # 4 of 5 = 0.8: the easiest level
  with pytest.raises(ValueError, match="17 passes of 16"):
    cd.difficulty_level(17, 16)
  assert cd.level_shares([1, 1, 5, 3]) == {"1": 0.5, "2": 0.0, "3": 0.25, "4": 0.0, "5": 0.25}
  assert cd.level_shares([]) == {str(k): 0.0 for k in range(1, 6)}


def _fake_actor(monkeypatch, text_of):
  """The actor's sampled texts replaced: `text_of(prompt text)` for each prompt."""
  def sample_texts(lm, params, task, prompts, key, temperature, config, mesh):
    return [text_of(task.text(p)) for p in prompts]
  monkeypatch.setattr(cd, "_sample_texts", sample_texts)


def test_rg_candidates_carry_the_location_and_type_they_were_made_with(setup, monkeypatch):
  config, task = setup
  problems = task.train_problems(0, "test", 0, 12)
  _fake_actor(monkeypatch, lambda prompt: "Answer: 999")  # every sample or continuation ends at once, wrong
  candidates, stats = cd.flawed_solutions(None, None, task, problems, jax.random.key(0), config, None)
  by_source = {s: [c for c in candidates if c.source == s] for s in ("rg1", "rg2", "rg3", "correct")}
  assert [len(by_source[s]) for s in ("rg1", "rg2", "rg3", "correct")] == [12, 12, 12, 0]
  for c in by_source["rg1"]:
    assert c.steps == ("Answer: 999",) and c.label == 0 and c.step is None and c.error_type is None
  for c in by_source["rg2"]:  # the reference's first `step` lines, then the wrong continuation
    ref = arith.solution_lines(c.problem)
    assert c.steps == ref[:c.step] + ("Answer: 999",) and c.label == c.step and c.error_type is None
    assert 0 <= c.step < len(ref) - 1
  for c in by_source["rg3"]:  # the injected line is the first wrong one, of the type named
    ref = arith.solution_lines(c.problem)
    assert c.steps[:c.step] == ref[:c.step] and c.label == c.step
    assert c.error_type in arith.applicable_error_types(c.problem, ref[:c.step])
    assert c.steps[c.step] != ref[c.step]
  assert stats["rg1"] == {"sampled": 12, "cut_off": 0, "right": 0}


def test_right_rg1_samples_are_the_correct_source_and_cut_off_ones_are_counted(setup, monkeypatch):
  config, task = setup
  problems = task.train_problems(0, "test", 0, 6)
  answers = {p.text: arith.format_solution(arith.solution_lines(p)) for p in problems}
  _fake_actor(monkeypatch, lambda prompt: answers[max((t for t in answers if t in prompt), key=len)])
  candidates, stats = cd.flawed_solutions(None, None, task, problems, jax.random.key(0),
                                          config_with("arith_critique_loop.py", "smoke",
                                                      {"critique_data.sources": ("rg1",)}), None)
  assert [c.source for c in candidates] == ["correct"] * 6 and all(c.label == -1 for c in candidates)
  assert stats == {"rg1": {"sampled": 6, "cut_off": 0, "right": 6}}
  _fake_actor(monkeypatch, lambda prompt: "1+1=")  # no answer line: cut off, never a candidate
  candidates, stats = cd.flawed_solutions(None, None, task, problems, jax.random.key(0), config, None)
  assert candidates == [] and stats["rg2"] == {"sampled": 6, "cut_off": 6, "right": 0}


def test_feedback_without_mistakes_is_the_checkers_critique(setup):
  config, task = setup
  problem = task.train_problems(0, "test", 0, 1)[0]
  steps = arith.inject_error(problem, 1, "wrong_result", np.random.default_rng(0)).lines
  exact = config_with("arith_critique_loop.py", "smoke", {"annotator.slip_rate": 0.0,
                                                           "annotator.carry_blind_rate": 0.0})
  [text] = cd.feedback([cd.Candidate("rg3", problem, steps, 1, "wrong_result", 1)], exact)
  assert text == critiques.write_critique(problem, steps) and text.endswith("\\boxed{2}")
  sloppy = config_with("arith_critique_loop.py", "smoke", {"annotator.slip_rate": 1.0})
  [text] = cd.feedback([cd.Candidate("rg3", problem, steps, 1, "wrong_result", 1)], sloppy)
  assert text.endswith("\\boxed{1}")  # every redo slips: the first (right) step is flagged


def test_the_refinement_filter_keeps_exactly_the_critiques_that_refine_right(setup, monkeypatch):
  config, task = setup
  _fake_actor(monkeypatch, lambda prompt: "Answer: 999")

  def refine(lm, params, task_, solutions, texts, key, rule, config_, mesh):
    """A refiner that reaches the answer exactly when the critique names the true first error."""
    return [task.answer_ids(f"Answer: {s.problem.answer if task.parse_critique(t, len(s.steps)) == s.label else 999}")
            for s, t in zip(solutions, texts)]
  monkeypatch.setattr(cd, "refine", refine)
  sloppy = config_with("arith_critique_loop.py", "smoke", {"critique_data.problems": 12, "annotator.slip_rate": 0.5,
                                                            "critique_data.filter_by_refinement": True})
  records, counts = cd.build_records(None, None, task, sloppy, None)
  assert len(records) == 36
  right = [r.critique_index == r.label for r in records]
  assert 0 < sum(right) < 36  # the annotator's slips make some critiques wrong
  assert [r.kept for r in records] == right == [r.refined_correct for r in records]
  assert counts["kept"] == sum(right) and counts["rg3"]["written"] == 12
  assert counts["rg1"]["kept"] + counts["rg2"]["kept"] + counts["rg3"]["kept"] == sum(right)
  assert [r.id for r in records[:2]] == ["rg1-0", "rg1-1"]
  unfiltered, _ = cd.build_records(None, None, task, config_with(
      "arith_critique_loop.py", "smoke", {"critique_data.problems": 12, "annotator.slip_rate": 0.5,
                                          "critique_data.filter_by_refinement": False}), None)
  assert all(r.kept for r in unfiltered) and [r.critique for r in unfiltered] == [r.critique for r in records]
  rows = cd.critique_rows(task, records)
  assert len(rows) == sum(right) and rows[0][1][-1] == task.tokenizer.eos_id


def test_keeps_redo_asks_the_refinement_to_write_the_critiques_redo_at_the_flagged_step(setup):
  _, task = setup
  problem = arith.ArithProblem(start=7, ops=(("+", 5), ("*", 3)), text="Start at 7. Apply +5 *3.")
  critique = critiques.write_critique(problem, ("7+5=12", "12*3=35", "Answer: 35"))  # flags step 1, redo 12*3=36
  ids = lambda *steps: task.answer_ids("\n".join(steps))
  assert cd.keeps_redo(task, critique, 1, ids("7+5=12", "12*3=36", "Answer: 36"))
  assert not cd.keeps_redo(task, critique, 1, ids("7+5=12", "36=12*3", "Answer: 36"))  # right, but its own redo
  assert not cd.keeps_redo(task, critique, 1, ids("Answer: 36"))  # no step at the flagged index
  assert cd.keeps_redo(task, "no critique", -1, ids("Answer: 36"))  # nothing flagged: nothing to keep


def test_the_stricter_filter_drops_right_refinements_that_did_not_take_the_redo(setup, monkeypatch):
  config, task = setup
  _fake_actor(monkeypatch, lambda prompt: "Answer: 999")

  def refine(lm, params, task_, solutions, texts, key, rule, config_, mesh):
    """Every refinement reaches the answer; every other one writes the critique's redo at the flagged step."""
    out = []
    for n, (s, t) in enumerate(zip(solutions, texts)):
      index, redo = task.parse_critique(t, len(s.steps)), critiques.flagged_redo(t)
      step = redo if n % 2 == 0 and redo is not None else "0+0=0"
      out.append(task.answer_ids("\n".join((*s.steps[:max(index, 0)], step, f"Answer: {s.problem.answer}"))))
    return out
  monkeypatch.setattr(cd, "refine", refine)
  strict = config_with("arith_critique_loop.py", "smoke", {"critique_data.problems": 12,
                                                            "critique_data.filter_by_refinement": True,
                                                            "critique_data.filter_keeps_redo": True})
  records, _ = cd.build_records(None, None, task, strict, None)
  assert all(r.refined_correct for r in records)  # the answer is right in every refinement
  flagged = [r for r in records if r.critique_index is not None and r.critique_index >= 0]
  assert flagged and any(r.kept for r in flagged) and not all(r.kept for r in flagged)
  for r in flagged:
    assert r.kept == (r.refinement.split("\n")[r.critique_index] == critiques.flagged_redo(r.critique)), r.id
  assert all(r.kept for r in records if r.critique_index == -1)  # an accepted solution has no redo to take
  with pytest.raises(ValueError, match="filter_keeps_redo=True: task 'arith' reads no redo"):
    cd.build_records(None, None, object(), strict, None)  # a task without critique_redo (real data)


def test_records_round_trip_and_a_bad_line_is_named(setup, tmp_path):
  config, task = setup
  record = cd.CritiqueRecord("rg2-0", "rg2", "3+4-2", "5", ("3+4=7", "Answer: 9"), 1, None, 1,
                             "1: 3+4=7 ; 7-4=3 ok ; right\n\\boxed{2}", 1, "3+4=7\n7-2=5\nAnswer: 5", True, True)
  path = str(tmp_path / "data.jsonl")
  cd.write_records(path, [record, record])
  assert cd.read_records(path) == [record, record]
  assert json.loads(open(path).readline())["steps"] == ["3+4=7", "Answer: 9"]
  assert cd.source_counts([record])["rg2"] == {"written": 1, "parsed": 1, "refined_correct": 1, "kept": 1}
  row = record.to_json()
  del row["critique"]
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
  with pytest.raises(RecordError, match="data.jsonl:3: missing field 'critique'"):
    cd.read_records(path)
  with open(path, "w") as f:
    f.write(json.dumps(dict(record.to_json(), source="rg9")) + "\n{not json\n")
  with pytest.raises(RecordError, match="data.jsonl:1: source 'rg9'"):
    cd.read_records(path)
