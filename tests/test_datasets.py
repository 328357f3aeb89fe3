"""Dataset readers on small files the tests write: GSM8K (tfds), MATH, ProcessBench, PRM800K."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorejax.tasks import gsm8k, math_data, processbench, prm800k, seed_critiques
from scorejax.tasks.records import RecordError


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
  return path


# ------------------------------------------------------------------ GSM8K


def test_gsm8k_prepared_offline_and_read_through_tfds(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  _write_jsonl(source / "train.jsonl", [
      {"question": "Ann has 3 pens and buys 2. How many?",
       "answer": "She has 3+2=<<3+2=5>>5 pens.\n#### 5"},
      {"question": "A shop sells 1,000 eggs a day. How many in 2 days?",
       "answer": "1000*2=<<1000*2=2000>>2000\nSo 2,000 eggs.\n#### 2,000"},
  ])
  _write_jsonl(source / "test.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}])
  data_dir = tmp_path / "tfds"
  gsm8k.prepare_gsm8k(data_dir, source_dir=source)
  train = sorted(gsm8k.read_gsm8k("train", data_dir), key=lambda e: e.question)
  assert [e.answer for e in train] == ["2000", "5"]  # thousands separator removed
  assert train[0].steps == ("1000*2=2000", "So 2,000 eggs.")  # calculator notes removed
  assert train[1].solution == "She has 3+2=<<3+2=5>>5 pens."
  assert list(gsm8k.read_gsm8k("test", data_dir)) == [gsm8k.Gsm8kExample("1+1?", "1+1=2", "2")]
  with pytest.raises(gsm8k.Gsm8kNotPrepared, match="no split 'train_socratic'"):
    list(gsm8k.read_gsm8k("train_socratic", data_dir))


def test_gsm8k_not_prepared_says_how_to_prepare(tmp_path):
  with pytest.raises(gsm8k.Gsm8kNotPrepared) as err:
    list(gsm8k.read_gsm8k("test", tmp_path / "empty"))
  message = str(err.value)
  assert "not prepared" in message
  assert f"python -m scorejax.tasks.gsm8k --data_dir={tmp_path / 'empty'}" in message
  assert "--source_dir=" in message
  with pytest.raises(FileNotFoundError, match="test.jsonl"):
    gsm8k.prepare_gsm8k(tmp_path / "tfds", source_dir=tmp_path)
  with pytest.raises(ValueError, match="split must be one of"):
    list(gsm8k.read_gsm8k("validation", tmp_path))


# ------------------------------------------------------------------ MATH


def test_math500_jsonl(tmp_path):
  path = _write_jsonl(tmp_path / "test.jsonl", [
      {"problem": "Compute $1+1$.", "solution": "It is $\\boxed{2}$.", "answer": "2",
       "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
  ])
  (ex,) = math_data.read_math(path)
  assert ex == math_data.MathExample(
      "Compute $1+1$.", "It is $\\boxed{2}$.", "2", "Prealgebra", 1, "test/prealgebra/1.json"
  )


def test_math_parquet_takes_the_answer_from_the_last_box(tmp_path):
  table = pa.table({
      "problem": ["Find $x$.", "Find $y$."],
      "level": ["Level 5", "Level ?"],
      "type": ["Algebra", "Geometry"],
      "solution": ["First \\boxed{1}, then $x = \\boxed{\\frac{1}{2}}$.", "$y=\\boxed{3}$"],
  })
  path = tmp_path / "math.parquet"
  pq.write_table(table, path)
  first, second = math_data.read_math(path)
  assert (first.answer, first.subject, first.level) == ("\\frac{1}{2}", "Algebra", 5)
  assert first.unique_id == f"{path}: row 1"
  assert (second.answer, second.level) == ("3", None)  # "Level ?" is unknown, not malformed


def test_math_malformed_rows_name_file_and_line(tmp_path):
  path = _write_jsonl(tmp_path / "bad.jsonl", [
      {"problem": "ok", "answer": "1"},
      "{not json",
  ])
  with pytest.raises(RecordError, match=rf"{path}:2: not valid JSON"):
    list(math_data.read_math(path))
  path = _write_jsonl(tmp_path / "nobox.jsonl", [
      {"problem": "ok", "answer": "1"},
      {"problem": "ok", "answer": "1"},
      {"problem": "no answer", "solution": "so it is 3"},
  ])
  with pytest.raises(RecordError, match=rf"{path}:3: no field 'answer' and no \\boxed"):
    list(math_data.read_math(path))
  path = _write_jsonl(tmp_path / "level.jsonl", [{"problem": "p", "answer": "1", "level": 9}])
  with pytest.raises(RecordError, match=rf"{path}:1: field 'level' must be 1-5"):
    list(math_data.read_math(path))


def test_readers_stream(tmp_path):
  path = _write_jsonl(tmp_path / "stream.jsonl", [{"problem": "p", "answer": "1"}, "{broken"])
  rows = math_data.read_math(path)
  # The first row arrives before the broken second line is read.
  assert next(rows).answer == "1"
  with pytest.raises(RecordError, match=":2:"):
    next(rows)


# ------------------------------------------------------------------ ProcessBench

PB_ROW = {
    "id": "gsm8k-0", "generator": "Qwen2-7B-Instruct", "problem": "Sue has 3 ...",
    "steps": ["Step a.", "Step b.", "Step c."], "final_answer_correct": False, "label": 1,
}


def test_processbench_jsonl_subset_from_file_name(tmp_path):
  path = _write_jsonl(tmp_path / "gsm8k.jsonl", [PB_ROW, {**PB_ROW, "id": "gsm8k-1", "label": -1}])
  first, second = processbench.read_processbench(path)
  assert first == processbench.LabelledSolution(
      "gsm8k-0", "Qwen2-7B-Instruct", "Sue has 3 ...", ("Step a.", "Step b.", "Step c."),
      False, 1, "gsm8k",
  )
  assert (second.label, second.subset) == (-1, "gsm8k")


def test_processbench_parquet_and_json_array(tmp_path):
  path = tmp_path / "math.parquet"
  pq.write_table(pa.Table.from_pylist([PB_ROW, {**PB_ROW, "label": 0}]), path)
  assert [s.label for s in processbench.read_processbench(path)] == [1, 0]
  assert {s.subset for s in processbench.read_processbench(path)} == {"math"}
  path = tmp_path / "omnimath.json"
  path.write_text(json.dumps([PB_ROW, {**PB_ROW, "data_type": "olympiadbench"}]))
  subsets = [s.subset for s in processbench.read_processbench(path)]
  assert subsets == ["omnimath", "olympiadbench"]  # a data_type field wins over the file name


@pytest.mark.parametrize(
    "row, message",
    [
        ({**PB_ROW, "label": 3}, "label 3 is not -1 or a 0-indexed step of the 3 steps"),
        ({**PB_ROW, "label": True}, "field 'label' must be an integer"),
        ({**PB_ROW, "steps": "one string"}, "field 'steps' must be a list"),
        ({k: v for k, v in PB_ROW.items() if k != "problem"}, "missing field 'problem'"),
    ],
)
def test_processbench_malformed_rows(tmp_path, row, message):
  path = _write_jsonl(tmp_path / "gsm8k.jsonl", [PB_ROW, row])
  with pytest.raises(RecordError, match=f"{path}:2: {message}"):
    list(processbench.read_processbench(path))


def test_processbench_step_items():
  solution = processbench.LabelledSolution("i", "g", "p", ("a", "b", "c", "d"), False, 2, "math")
  items = processbench.step_items(solution)
  # Steps after the earliest error are unlabelled and must not be judged.
  assert [(i.previous_steps, i.step, i.correct) for i in items] == [
      ((), "a", True), (("a",), "b", True), (("a", "b"), "c", False)
  ]
  clean = processbench.LabelledSolution("i", "g", "p", ("a", "b"), True, -1, "math")
  assert [i.correct for i in processbench.step_items(clean)] == [True, True]


# ------------------------------------------------------------------ PRM800K


def _prm_row(steps, finish_reason="found_error", **extra):
  return {
      "labeler": "l1", "timestamp": "2023-01-01T00:00:00", "generation": 9,
      "is_quality_control_question": False, "is_initial_screening_question": False,
      "question": {"problem": "How many seconds are in 7.8 minutes?",
                   "ground_truth_answer": "468", "pre_generated_answer": "468"},
      "label": {"steps": steps, "total_time": 1000, "finish_reason": finish_reason},
      **extra,
  }


def _step(*ratings, chosen=0, human=None):
  return {
      "completions": [{"text": f"t{r}", "rating": r, "flagged": False} for r in ratings],
      "human_completion": human, "chosen_completion": chosen,
  }


def test_prm800k_follows_the_labelled_path(tmp_path):
  rows = [
      # Chosen completions rated 1, 0, then an error where the labeler stopped.
      _prm_row([_step(1), _step(-1, 0, chosen=1), _step(1, -1, chosen=None)]),
      # A human completion replaces the rejected ones; the path ends rated fine.
      _prm_row([_step(-1, chosen=None, human={"text": "fixed", "rating": None}), _step(1)],
               finish_reason="solution"),
      _prm_row([_step(1)], finish_reason="give_up"),  # skipped: labels incomplete
      _prm_row([_step(1)], is_quality_control_question=True),  # skipped: screening
  ]
  path = _write_jsonl(tmp_path / "phase2_test.jsonl", rows)
  first, second = prm800k.read_prm800k(path)
  assert first.solution.steps == ("t1", "t0", "t-1")
  assert first.ratings == (1, 0, -1)
  assert first.solution.label == 2  # neutral (0) is not an error by default
  assert first.solution.final_answer_correct is True
  assert (second.solution.steps, second.solution.label) == (("fixed", "t1"), -1)
  # Alternatives without a choice and without an error end the path there.
  path_end = _write_jsonl(tmp_path / "end.jsonl", [_prm_row([_step(1), _step(1, 0, chosen=None)])])
  assert next(prm800k.read_prm800k(path_end)).solution.steps == ("t1",)
  strict = next(prm800k.read_prm800k(path, neutral_is_error=True))
  assert strict.solution.label == 1
  assert len(list(prm800k.read_prm800k(path, finish_reasons=("give_up",)))) == 1


def test_prm800k_malformed_row(tmp_path):
  path = _write_jsonl(tmp_path / "p.jsonl", [_prm_row([_step(1, chosen=4)])])
  with pytest.raises(RecordError, match=rf"{path}:1: label.steps\[0\]: chosen_completion 4"):
    list(prm800k.read_prm800k(path))
  path = _write_jsonl(tmp_path / "q.jsonl", [{"label": {}}])
  with pytest.raises(RecordError, match=rf"{path}:1: missing field 'question'"):
    list(prm800k.read_prm800k(path))


# ----------------------------------------------------------------------------
# DeepCritic seed critiques
# ----------------------------------------------------------------------------


def test_seed_critiques_are_read_and_filtered_by_their_final_judgement(tmp_path):
  rows = [
      {"id": "a", "problem": "1+1?", "steps": ["1+1=2", "So 2."], "critique": "Both right. \\boxed{-1}", "label": -1},
      {"problem": "2+2?", "steps": ["2+2=5", "So 5."], "critique": "Step 1 is wrong. \\boxed{1}", "label": 0},
      {"problem": "3+3?", "steps": ["3+3=6", "So 7."], "critique": "All fine. \\boxed{-1}", "label": 1},
  ]
  path = tmp_path / "seed.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  seeds = list(seed_critiques.read_seed_critiques(path))
  assert [s.id for s in seeds] == ["a", "1", "2"] and seeds[1].where == f"{path}:2"
  # \boxed{1} is step 0 (DeepCritic numbers from 1); the third critique misses the label: filtered.
  assert [seed_critiques.agrees_with_label(s) for s in seeds] == [True, True, False]


@pytest.mark.parametrize("row, message", [
    ({"problem": "p", "steps": ["a"], "label": -1}, r"seed.jsonl:1: missing field 'critique'"),
    ({"problem": "p", "steps": ["a"], "critique": "c", "label": 1}, r"seed.jsonl:1: label 1 is not -1 or a 0-indexed "
                                                                    r"step of the 1 steps"),
    ({"problem": "p", "steps": [], "critique": "c", "label": -1}, r"seed.jsonl:1: field 'steps' is empty"),
    ({"steps": ["a"], "critique": "c", "label": -1}, r"seed.jsonl:1: missing field 'problem'"),
])
def test_a_bad_seed_critique_row_names_file_line_and_field(tmp_path, row, message):
  path = tmp_path / "seed.jsonl"
  path.write_text(json.dumps(row) + "\n")
  with pytest.raises(RecordError, match=message):
    list(seed_critiques.read_seed_critiques(path))
