"""Code tasks: MBPP / HumanEval / MBPP-R readers, programs from replies, `evaluate code`, and SCoRe on code
end to end on a tiny random Qwen2 (the tiny JSONL files are written here).
"""

import json

import ml_collections
import numpy as np
import pytest
from hf_fixtures import config_with, run_main, tiny_qwen

from scorejax import evaluate
from scorejax.config_blocks import sandbox as sandbox_block
from scorejax.sandbox import Sandbox, SandboxConfig
from scorejax.tasks import code, templates
from scorejax.tasks.base import MissingData, batch_rewards, make_task
from scorejax.tasks.records import RecordError

ADD = {"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n  return a + b",
       "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"], "test_setup_code": "",
       "challenge_test_list": []}
SQUARE = {"task_id": 12, "text": "Write a function to square a number.", "code": "def square(x):\n  return x * x",
          "test_list": ["assert square(3) == 9"], "test_setup_code": "", "challenge_test_list": []}
USES_SETUP = {"task_id": 511, "text": "Write a function to get the value of K.", "code": "def get_k():\n  return K",
              "test_list": ["assert get_k() == 7"], "test_setup_code": "K = 7", "challenge_test_list": []}
FEW_SHOT = dict(ADD, task_id=3)  # ids 1-10 are MBPP's few-shot prompts: in no split
TRAIN = [dict(ADD, task_id=601 + i, text=f"Write a function to add two numbers, {i}.") for i in range(4)]
HUMANEVAL = [
    {"task_id": "HumanEval/0", "prompt": "def inc(x: int) -> int:\n    \"\"\"x plus one.\"\"\"\n",
     "canonical_solution": "    return x + 1\n", "entry_point": "inc",
     "test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n"},
    {"task_id": "HumanEval/1", "prompt": "def neg(x: int) -> int:\n    \"\"\"minus x.\"\"\"\n",
     "canonical_solution": "    return -x\n", "entry_point": "neg",
     "test": "def check(candidate):\n    assert candidate(2) == -2\n"},
]


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def fenced(code_text: str) -> str:
  return f"Here is the program:\n```python\n{code_text}\n```\nIt adds."


# ----------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------


def test_mbpp_is_split_by_task_id_as_published(tmp_path):
  path = write_jsonl(tmp_path / "mbpp.jsonl", [ADD, SQUARE, USES_SETUP, FEW_SHOT] + TRAIN)
  splits = code.read_mbpp(path)
  assert [p.id for p in splits["test"]] == ["mbpp/11", "mbpp/12"]
  assert [p.id for p in splits["validation"]] == ["mbpp/511"]
  assert [p.id for p in splits["train"]] == ["mbpp/601", "mbpp/602", "mbpp/603", "mbpp/604"]
  add = splits["test"][0]
  assert add.entry_point == "add" and add.setup == "" and add.stub == ""
  assert add.text == ("Write a function to add two numbers. Your code should pass these tests:\n\n"
                      "assert add(1, 2) == 3\nassert add(2, 2) == 4")
  assert splits["validation"][0].setup == "K = 7"


def test_sanitized_mbpp_rows_read_prompt_and_test_imports(tmp_path):
  row = {"source_file": "x", "task_id": 12, "prompt": "Write a function to find the sqrt.",
         "code": "import math\ndef root(x):\n  return math.sqrt(x)", "test_imports": ["import math"],
         "test_list": ["assert math.isclose(root(4), 2)"]}
  problem = code.read_mbpp(write_jsonl(tmp_path / "s.jsonl", [row]))["test"][0]
  assert problem.text.startswith("Write a function to find the sqrt. Your code should pass")
  assert (problem.setup, problem.entry_point) == ("import math", "root")


@pytest.mark.parametrize("row, message", [
    (dict(ADD, test_list=[]), r"mbpp.jsonl:1: field 'test_list' is empty"),
    ({k: v for k, v in ADD.items() if k != "test_list"}, r"mbpp.jsonl:1: missing field 'test_list'"),
    (dict(ADD, task_id="11"), r"mbpp.jsonl:1: field 'task_id' must be an integer"),
])
def test_malformed_mbpp_rows_name_their_line(tmp_path, row, message):
  with pytest.raises(RecordError, match=message):
    code.read_mbpp(write_jsonl(tmp_path / "mbpp.jsonl", [row]))


def test_humaneval_rows_and_their_check(tmp_path):
  problems = code.read_humaneval(write_jsonl(tmp_path / "he.jsonl", HUMANEVAL))
  inc = problems[0]
  assert (inc.id, inc.entry_point, inc.stub) == ("HumanEval/0", "inc", HUMANEVAL[0]["prompt"])
  assert inc.tests.endswith("check(inc)\n")
  assert inc.text == f"Complete the following Python function.\n\n```python\n{HUMANEVAL[0]['prompt']}```"
  with pytest.raises(RecordError, match=r"he2.jsonl:1: field 'test' defines no check"):
    code.read_humaneval(write_jsonl(tmp_path / "he2.jsonl", [dict(HUMANEVAL[0], test="assert True")]))


def test_missing_files_say_where_to_get_them(tmp_path):
  with pytest.raises(MissingData, match=r"config.task.mbpp_path=.*none.jsonl.*google-research/.*mbpp"):
    code.read_mbpp(str(tmp_path / "none.jsonl"))
  with pytest.raises(MissingData, match=r"config.task.humaneval_path='' .*openai/human-eval"):
    code.read_humaneval("")


# ----------------------------------------------------------------------------
# Programs from replies
# ----------------------------------------------------------------------------


def test_the_program_is_the_block_that_defines_the_entry_point():
  reply = ("```python\ndef add(a, b):\n  return a - b\n```\nOops, fixed:\n```python\ndef add(a, b):\n"
           "  return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```")
  assert code.extract_code(reply, "add") == "def add(a, b):\n  return a + b\n"
  assert code.extract_code(reply) == "print(add(1, 2))\n"  # no entry point known: the last block
  assert code.extract_code("def add(a, b): return a + b") == "def add(a, b): return a + b"  # bare code
  cut_off = "```python\ndef add(a, b):\n  return a + b\n"  # the token budget ran out before the fence closed
  assert code.extract_code(cut_off, "add") == "def add(a, b):\n  return a + b\n"


def test_programs_pass_and_fail_as_their_tests_say(tmp_path):
  mbpp = code.read_mbpp(write_jsonl(tmp_path / "mbpp.jsonl", [ADD, USES_SETUP]))
  he = code.read_humaneval(write_jsonl(tmp_path / "he.jsonl", HUMANEVAL))
  add, get_k, inc = mbpp["test"][0], mbpp["validation"][0], he[0]
  assert code.program(add, fenced("def add(a, b):\n  return a + b")) == (
      "def add(a, b):\n  return a + b\n\n\nassert add(1, 2) == 3\nassert add(2, 2) == 4\n")
  box = Sandbox(SandboxConfig(isolation="rlimits", timeout_s=2.0))
  run = lambda problem, reply: box.run(code.program(problem, reply))
  assert run(add, fenced("def add(a, b):\n  return a + b")).passed
  assert run(add, fenced("def add(a, b):\n  return a * b")).reason == "failed"  # 2 * 2 == 4, but 1 * 2 != 3
  assert run(get_k, "def get_k():\n  return K").passed  # the setup runs first
  assert run(inc, fenced(HUMANEVAL[0]["prompt"] + HUMANEVAL[0]["canonical_solution"])).passed
  assert run(inc, HUMANEVAL[0]["canonical_solution"]).passed  # a body continues the stub
  assert run(inc, "    return x + 2\n").reason == "failed"
  assert run(he[1], fenced("def neg(x):\n  while True:\n    pass")).reason == "timeout"


# ----------------------------------------------------------------------------
# python -m scorejax.evaluate code
# ----------------------------------------------------------------------------


def test_evaluate_code_prints_the_pass_rate_and_each_reason(tmp_path, capsys):
  tasks = write_jsonl(tmp_path / "tasks.jsonl", [ADD, SQUARE] + HUMANEVAL)
  completions = write_jsonl(tmp_path / "completions.jsonl", [
      {"task_id": 11, "completion": fenced("def add(a, b):\n  return a + b")},
      {"task_id": "mbpp/12", "completion": "def square(x):\n  return x + x"},  # 3 + 3 != 9
      {"task_id": "HumanEval/0", "completion": "    return x + 1\n"},
      {"task_id": "HumanEval/1", "completion": "def neg(x):\n  return bytearray(10 ** 10)"},
      {"task_id": 12, "completion": "def square(x) return x"},
  ])
  assert evaluate.main(["code", f"--tasks={tasks}", f"--completions={completions}", "--timeout_s=5"]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result["n"] == 5 and result["pass_rate"] == pytest.approx(2 / 5)
  assert [(c["task_id"], c["passed"], c.get("reason")) for c in result["completions"]] == [
      ("mbpp/11", True, None), ("mbpp/12", False, "failed"), ("HumanEval/0", True, None),
      ("HumanEval/1", False, "memory"), ("mbpp/12", False, "syntax")]
  assert result["reasons"] == {"passed": 2, "failed": 1, "memory": 1, "syntax": 1}
  assert "rlimits" in result["sandbox"]


def test_evaluate_code_names_a_completion_of_an_unknown_task(tmp_path, capsys):
  tasks = write_jsonl(tmp_path / "tasks.jsonl", [ADD])
  completions = write_jsonl(tmp_path / "completions.jsonl", [{"task_id": 11, "completion": "x"},
                                                             {"task_id": 99, "completion": "x"}])
  assert evaluate.main(["code", f"--tasks={tasks}", f"--completions={completions}"]) == 2
  assert "completions.jsonl:2: task_id 99 is not a problem of the tasks file" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# The task on an HF tokenizer, and SCoRe on code end to end
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("code")
  hf_dir = root / "qwen"
  ts = templates.get_templates("code")
  corpus = [ts.solve, ts.self_correct,
            *[r["text"] + r["code"] + " ".join(r["test_list"]) for r in [ADD, SQUARE, USES_SETUP]],
            *[r["prompt"] + r["canonical_solution"] + r["test"] for r in HUMANEVAL]]
  tiny_qwen(hf_dir, corpus)
  mbpp = write_jsonl(root / "mbpp.jsonl", [ADD, SQUARE, USES_SETUP] + TRAIN)
  repairs = write_jsonl(root / "mbpp_r.jsonl", [
      {"task_id": 11, "completion": fenced("def add(a, b):\n  return a - b")},
      {"task_id": 12, "completion": fenced("def square(x):\n  return x")},
      {"task_id": 601, "completion": fenced("def add(a, b):\n  return a + b")}])  # passes: dropped
  return dict(hf_dir=str(hf_dir), mbpp=mbpp, humaneval=write_jsonl(root / "he.jsonl", HUMANEVAL), repairs=repairs)


def task_config(assets, **overrides):
  c = ml_collections.ConfigDict(dict(name="code", mbpp_path=assets["mbpp"], humaneval_path=assets["humaneval"],
                                     eval="humaneval", repair_path=assets["repairs"], eval_size=0, dev_size=1,
                                     tokenizer_dir=assets["hf_dir"], templates="code", chat_template=True,
                                     sandbox=sandbox_block()))
  c.sandbox.isolation = "rlimits"
  c.update(overrides)
  return c


def test_code_task_rewards_a_batch_through_the_sandbox(assets):
  task = make_task(task_config(assets))
  assert [p.id for p in task.eval_problems] == ["HumanEval/0", "HumanEval/1"]
  assert [p.id for p in task.dev_problems(1)] == ["mbpp/511"] and len(task.train) == 4
  inc, neg = task.eval_problems
  replies = [fenced(HUMANEVAL[0]["prompt"] + HUMANEVAL[0]["canonical_solution"]), "    return x\n",
             fenced("def neg(x):\n  return -x")]
  ids = [task.answer_ids(r) for r in replies]
  assert task.text(ids[0]) == replies[0]  # the tokens decode back to the reply, its end token dropped
  np.testing.assert_array_equal(batch_rewards(task, [inc, inc, neg], ids), [1.0, 0.0, 1.0])
  assert task.reward(neg, ids[2]) == 1.0
  problems, attempts, dropped = task.repair_pairs
  assert [p.id for p in problems] == ["mbpp/11", "mbpp/12"] and dropped == 1
  mbpp_eval = make_task(task_config(assets, eval="mbpp", eval_size=1))
  assert [p.id for p in mbpp_eval.eval_problems] == ["mbpp/11"]
  with pytest.raises(ValueError, match=r"config.task.eval='apps'; expected one of \('humaneval', 'mbpp'\)"):
    make_task(task_config(assets, eval="apps"))


def test_the_code_config_carries_the_papers_mbpp_settings():
  c = config_with("qwen_score_code.py", "tpu", {})
  assert (c.task.name, c.task.templates, c.task.eval) == ("code", "code", "humaneval")
  assert (c.stage1.learning_rate, c.stage2.learning_rate, c.stage1.beta2) == (1e-5, 1e-5, 0.25)
  assert c.stage1.steps + c.stage2.steps == 1500 and c.stage1.batch_size == 128
  assert c.inference.episodes == 0  # no final answer to vote on


def test_score_on_code_end_to_end(assets, tmp_path):
  overrides = {
      "model.hf_dir": assets["hf_dir"], "task.mbpp_path": assets["mbpp"], "task.humaneval_path": assets["humaneval"],
      "task.repair_path": assets["repairs"], "task.dev_size": 1, "task.sandbox.isolation": "rlimits",
      "task.sandbox.timeout_s": 5.0, "sampling.max_new_tokens": 6, "stage1.steps": 1, "stage2.steps": 1,
      "stage1.batch_size": 4, "stage2.batch_size": 4, "stage1.samples_per_prompt": 2,
      "stage2.samples_per_prompt": 2, "stage1.warmup_steps": 0, "stage2.warmup_steps": 0, "eval.batch_size": 4,
      "eval.every": 0, "checkpoint.every": 1, "checkpoint.async_save": False, "logprob_chunk": 32,
      "tensorboard": False, "inference.attempts": 2, "inference.problems": 2, "select.every": 1,
      "select.window": 1}
  proc = run_main(["--config=configs/qwen_score_code.py", *[f"--config.{k}={v}" for k, v in overrides.items()]],
                  tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(tmp_path / "eval.json"))
  assert set(results) == {"base", "stage1", "stage1_best", "stage2", "stage2_best"}
  for table in results.values():
    assert table["num_problems"] == 2
    assert table["repair"]["n"] == 2 and table["repair"]["dropped_passing"] == 1
    assert 0.0 <= table["repair"]["fixed"] <= 1.0
    assert table["sandbox"].startswith("rlimits")
  inference = json.load(open(tmp_path / "inference.json"))
  assert len(inference["stage2"]["attempts"]["acc_at"]) == 2 and inference["stage2"]["scaling"] == []
  assert "MBPP-R (repair of 2 wrong first attempts)" in proc.stdout
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records if r["phase"] == "stage2" and "loss" in r] == [2]
