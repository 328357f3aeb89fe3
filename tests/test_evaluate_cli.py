"""The user-facing command: python -m scorejax.evaluate {processbench,score}."""

import json
import os
import subprocess
import sys

import pytest

from scorejax import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_processbench_command_end_to_end(tmp_path):
  path = _write(tmp_path / "pred.jsonl", [
      {"label": -1, "prediction": -1, "subset": "gsm8k"},
      {"label": -1, "prediction": 3, "subset": "gsm8k"},
      {"label": 2, "prediction": 2, "subset": "gsm8k"},
      {"label": 0, "prediction": None, "subset": "gsm8k"},
      {"label": 1, "prediction": 1, "subset": "gsm8k"},
      {"label": 0, "prediction": 1, "data_type": "math"},
      {"label": -1, "prediction": -1, "data_type": "math"},
  ])
  out = subprocess.run(
      [sys.executable, "-m", "scorejax.evaluate", "processbench", f"--predictions={path}"],
      cwd=REPO, capture_output=True, text=True, timeout=60,
  )
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  gsm = result["subsets"]["gsm8k"]
  assert (gsm["acc_err"], gsm["acc_corr"]) == pytest.approx((2 / 3, 1 / 2))
  assert gsm["f1"] == pytest.approx(4 / 7)
  assert result["subsets"]["math"]["f1"] == 0.0
  assert result["mean_f1"] == pytest.approx(2 / 7)


def test_score_command_end_to_end(tmp_path):
  t1 = [True, True, False, False, False, True, False, False, True, False]
  t2 = [True, False, True, True, False, True, False, True, True, False]
  rows = [{"correct_t1": a, "correct_t2": b, "id": i} for i, (a, b) in enumerate(zip(t1, t2))]
  path = _write(tmp_path / "attempts.jsonl", rows)
  out = subprocess.run(
      [sys.executable, "-m", "scorejax.evaluate", "score", f"--attempts={path}"],
      cwd=REPO, capture_output=True, text=True, timeout=60,
  )
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  assert result == pytest.approx(
      {"acc_t1": 0.4, "acc_t2": 0.6, "delta": 0.2, "delta_i2c": 0.3, "delta_c2i": 0.1, "n": 10}
  )


def test_records_without_subset_and_maj_at_k_lists(tmp_path, capsys):
  path = _write(tmp_path / "pred.jsonl", [
      {"label": 1, "prediction": [1, 1, 2]},
      {"label": 1, "prediction": [None, None]},
      {"label": -1, "prediction": [-1, 0, -1]},
  ])
  assert evaluate.main(["processbench", f"--predictions={path}"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert list(result["subsets"]) == ["all"]
  assert result["subsets"]["all"]["acc_err"] == 0.5
  assert result["subsets"]["all"]["n_invalid"] == 1
  assert result["mean_f1"] == pytest.approx(2 / 3)  # 2 * 0.5 * 1 / 1.5


@pytest.mark.parametrize(
    "command, rows, message",
    [
        ("processbench", [{"label": 0, "prediction": 0}, {"label": 0, "prediction": "2"}],
         ":2: field 'prediction' must be an integer, null, or a list"),
        ("processbench", [{"label": 0, "prediction": 0}, {"label": 0}],
         ":2: missing field 'prediction'"),
        ("processbench", [{"label": -2, "prediction": 0}], ":1: field 'label' must be -1"),
        ("processbench", [{"label": 0, "prediction": 0}, "not json"], ":2: not valid JSON"),
        ("score", [{"correct_t1": True, "correct_t2": False},
                   {"correct_t1": True, "correct_t2": False},
                   {"correct_t1": 1, "correct_t2": True}],
         ":3: field 'correct_t1' must be a boolean"),
        ("score", [], ": no records"),
    ],
)
def test_malformed_input_names_the_line(tmp_path, capsys, command, rows, message):
  path = _write(tmp_path / "in.jsonl", rows)
  flag = "--predictions" if command == "processbench" else "--attempts"
  assert evaluate.main([command, f"{flag}={path}"]) == 2
  err = capsys.readouterr().err
  assert f"{path}{message}" in err


def test_missing_file_and_flag(tmp_path, capsys):
  assert evaluate.main(["score", f"--attempts={tmp_path / 'nope.jsonl'}"]) == 2
  assert "does not exist" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(["processbench"])


# ----------------------------------------------------------------------------
# critic: an HF critic run over ProcessBench records
# ----------------------------------------------------------------------------

RECORDS = [  # ProcessBench fields; labels 0-indexed
    {"id": "a", "generator": "g", "problem": "1+1", "steps": ["1+1=2", "answer 2"], "label": -1, "subset": "s1"},
    {"id": "b", "generator": "g", "problem": "2+2", "steps": ["2+2=5", "answer 5"], "label": 0, "subset": "s1"},
    {"id": "c", "generator": "g", "problem": "3+3", "steps": ["3+3=6", "6*1=7", "answer 7"], "label": 1,
     "subset": "s2"},
    {"id": "d", "generator": "g", "problem": "4+4", "steps": ["4+4=8", "answer 8"], "label": -1, "subset": "s2"},
]


@pytest.fixture(scope="module")
def hf_critic(tmp_path_factory):
  from hf_fixtures import VOCAB, save_char_tokenizer, save_hf_model
  path = tmp_path_factory.mktemp("critic")
  save_hf_model("llama", str(path), vocab_size=VOCAB)
  save_char_tokenizer(path)
  return str(path)


def test_critic_command_runs_an_hf_critic_and_counts_its_unparseable_critiques(hf_critic, tmp_path):
  path = _write(tmp_path / "pb.jsonl", RECORDS)
  out = subprocess.run([sys.executable, "-m", "scorejax.evaluate", "critic", f"--hf_dir={hf_critic}",
                        f"--processbench={path}", "--maj_k=2", "--max_new_tokens=8", "--batch_size=3"],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout)
  # A random model writes no \boxed{}: every critique is invalid, wrong for either class, never -1.
  assert result["invalid"] == 1.0 and result["sampled_invalid"] == 1.0
  assert result["mean_f1"] == 0.0 and result["majk_mean_f1"] == 0.0 and result["n"] == 4
  assert set(result["subsets"]) == {"s1", "s2"} and result["maj_k"] == 2


def test_critic_predictions_are_read_from_the_boxed_index_numbered_from_one(hf_critic, tmp_path, monkeypatch):
  """The critiques are given (the sampler is replaced): the metrics follow from them by hand."""
  from scorejax import rollouts
  from scorejax.tokenizers import HFTokenizer
  tok = HFTokenizer(hf_critic)
  # DeepCritic numbers steps from 1: \boxed{1} is step 0. Record c gets no boxed index (invalid).
  texts = ["ok \\boxed{-1}", "step 1 wrong \\boxed{1}", "hmm", "\\boxed{2}"]
  monkeypatch.setattr(rollouts, "sample_batched", lambda *a, n=1, **k: ([tok.encode(t) for t in texts], None))
  result = evaluate.critic_on_processbench(hf_critic, _write(tmp_path / "pb.jsonl", RECORDS), max_new_tokens=4)
  s1, s2 = result["subsets"]["s1"], result["subsets"]["s2"]
  assert (s1["acc_err"], s1["acc_corr"], s1["f1"]) == (1.0, 1.0, 1.0)
  # s2: c invalid (wrong), d predicted step 1 instead of -1: both accuracies 0.
  assert (s2["acc_err"], s2["acc_corr"], s2["f1"]) == (0.0, 0.0, 0.0) and s2["n_invalid"] == 1
  assert result["mean_f1"] == 0.5 and result["invalid"] == 0.25


def test_critic_command_names_a_bad_record(hf_critic, tmp_path):
  bad = dict(RECORDS[0], label=5)
  path = _write(tmp_path / "pb.jsonl", [RECORDS[1], bad])
  out = subprocess.run([sys.executable, "-m", "scorejax.evaluate", "critic", f"--hf_dir={hf_critic}",
                        f"--processbench={path}"], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  assert out.returncode == 2 and f"{path}:2: label 5 is not -1 or a 0-indexed step of the 2 steps" in out.stderr
