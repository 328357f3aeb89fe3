"""SCoRe on an HF checkpoint: MathTask's chat-template pieces, its data checks, and the main job end to end.

The checkpoint is a tiny random Qwen2 with a byte-level BPE tokenizer trained
here on the test texts, carrying a Qwen-style chat template.
"""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from hf_fixtures import QWEN_TEMPLATE, config_with, save_bpe_tokenizer, save_hf_model

from scorejax import phases
from scorejax.experiments import score
from scorejax.tasks import chat, math_task, templates
from scorejax.tasks.base import make_task

# Assistant turns closed by a blank line: no token an attempt could stop at.
PLAIN_END_TEMPLATE = ("{%- for message in messages %}{{- message['role'] + ': ' + message['content'] + '\\n\\n' }}"
                      "{%- endfor %}{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}")
# Earlier assistant turns rendered empty (as templates that strip reasoning do).
DROPS_HISTORY_TEMPLATE = (
    "{%- for message in messages %}{%- if message['role'] == 'assistant' and not loop.last %}"
    "{{- '<|im_start|>assistant\\n<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

TRAIN = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 9 - 7?", "2"), ("What is 3 * 3?", "9")]
EVAL = [("What is 1 + 6?", "7"), ("What is 8 - 5?", "3"), ("What is 2 * 4?", "8"), ("What is 6 + 0?", "6")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")


def _corpus():
  ts = templates.get_templates("math")
  answers = " ".join(f"The final answer is ${a}$. I hope it is correct. \\boxed{{{a}}}" for _, a in TRAIN + EVAL)
  return [ts.solve, ts.self_correct, " ".join(q for q, _ in TRAIN + EVAL), answers,
          "system user assistant You are a helpful assistant. So x = 2, and the answer is"]


def save_tokenizer(path, chat_template=QWEN_TEMPLATE, eos="<|im_end|>") -> int:
  """A byte-level BPE over the test texts with Qwen's special tokens; returns its size."""
  return save_bpe_tokenizer(path, _corpus(), chat_template, eos)


def write_math_jsonl(path, problems):
  with open(path, "w") as f:
    for i, (q, a) in enumerate(problems):
      f.write(json.dumps({"problem": q, "solution": f"So it is \\boxed{{{a}}}.", "level": "Level 1",
                          "type": "Algebra", "unique_id": f"test/{i}.json"}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  hf_dir = root / "qwen"
  vocab = save_tokenizer(hf_dir)
  save_hf_model("qwen2", hf_dir, vocab_size=vocab, eos_token_id=2, max_position_embeddings=1024)
  return dict(hf_dir=str(hf_dir), train=write_math_jsonl(root / "train.jsonl", TRAIN),
              eval=write_math_jsonl(root / "eval.jsonl", EVAL))


def task_config(assets, **overrides):
  c = ml_collections.ConfigDict(dict(name="math", train_path=assets["train"], eval_path=assets["eval"],
                                     eval_size=0, dev_size=0, dev_seed=0, tokenizer_dir=assets["hf_dir"],
                                     templates="math", chat_template=True))
  c.update(overrides)
  return c



def tiny_overrides(assets) -> dict:
  """configs/qwen_score.py:math shrunk to a few steps of the tiny checkpoint."""
  return {"model.hf_dir": assets["hf_dir"], "task.train_path": assets["train"], "task.eval_path": assets["eval"],
          "sampling.max_new_tokens": 6, "stage1.steps": 2, "stage2.steps": 2, "stage1.batch_size": 4,
          "stage2.batch_size": 4, "stage1.samples_per_prompt": 2, "stage2.samples_per_prompt": 2,
          "stage1.warmup_steps": 0, "stage2.warmup_steps": 0, "eval.batch_size": 4, "eval.every": 0,
          "checkpoint.every": 1, "checkpoint.async_save": False, "logprob_chunk": 32, "tensorboard": False,
          "task.dev_size": 1, "inference.attempts": 3, "inference.episodes": 2, "inference.problems": 4,
          "select.every": 1, "select.window": 1}


def qwen_config(assets, **extra):
  """The same config in this process (8 fake CPU devices), as the command line would set it."""
  return config_with("qwen_score.py", "math", dict(tiny_overrides(assets), **extra))


@pytest.fixture(scope="module")
def task(assets):
  return make_task(task_config(assets))


# ----------------------------------------------------------------------------
# The chat-template pieces
# ----------------------------------------------------------------------------


def test_instruction_is_the_rendered_text_between_the_attempts(task):
  tok = task.tokenizer
  p_text = "\n<|im_start|>user\n" + templates.get_templates("math").self_correct + "<|im_end|>\n<|im_start|>assistant\n"
  assert task.instruction_ids == tok.encode(p_text)
  # The instruction alone, without the turn markers, is the mistake this guards against.
  assert task.instruction_ids != tok.encode(templates.get_templates("math").self_correct)


def test_sampled_episode_tokens_equal_the_rendered_conversation(task):
  tok, problem = task.tokenizer, task.eval_problems[1]
  y1, y2 = "It is $2$.", "The final answer is $3$. I hope it is correct."
  im_end = tok.encode("<|im_end|>")
  assert len(im_end) == 1
  episode = task.prompt_ids(problem) + tok.encode(y1) + im_end + task.instruction_ids + tok.encode(y2) + im_end
  messages = templates.two_attempt_messages(templates.get_templates("math"), problem.text, y1, y2)
  rendered = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=False))
  assert rendered == episode + tok.encode("\n")  # the template ends every turn with "<|im_end|>\n"


def test_stop_ids_add_the_end_of_turn_token_to_eos(task, tmp_path):
  im_end, endoftext = task.tokenizer.encode("<|im_end|>")[0], task.tokenizer.encode("<|endoftext|>")[0]
  assert (im_end, endoftext) == (2, 0)  # the order of the special tokens given to the trainer
  assert task.stop_ids == (2,)  # eos is <|im_end|> itself (Qwen instruct models): listed once
  assert task.answer_ids("5") == task.tokenizer.encode("5") + [2]
  # A base model's eos (<|endoftext|>) is not what its chat template closes turns with;
  # stopping on eos alone would let attempt 1 run on through <|im_end|>.
  save_tokenizer(tmp_path, eos="<|endoftext|>")
  base = make_task(task_config(dict(train=task.config.train_path, eval=task.config.eval_path,
                                                hf_dir=str(tmp_path))))
  assert base.tokenizer.eos_id == 0
  assert base.stop_ids == (0, 2)
  assert base.answer_ids("5")[-1] == 2
  assert base.instruction_ids == task.instruction_ids


def test_text_and_reward_drop_the_stop_token(task):
  problem = task.eval_problems[0]  # answer 7
  assert task.text(task.answer_ids("The final answer is $7$.")) == "The final answer is $7$."
  assert task.reward(problem, task.answer_ids("The final answer is $7$.")) == 1.0
  assert task.reward(problem, task.answer_ids("The final answer is $8$.")) == 0.0


@pytest.mark.parametrize("template, message", [
    (PLAIN_END_TEMPLATE, "ordinary token"),
    (DROPS_HISTORY_TEMPLATE, "does not start with the sampled tokens"),
])
def test_templates_that_cannot_hold_a_sampled_attempt_are_refused(assets, tmp_path, template, message):
  save_tokenizer(tmp_path, chat_template=template)
  with pytest.raises(chat.ChatTemplateError, match=message):
    make_task(task_config(assets, tokenizer_dir=str(tmp_path)))


def test_without_chat_template_the_instruction_is_the_plain_template(assets):
  task = make_task(task_config(assets, chat_template=False))
  assert task.instruction_ids == task.tokenizer.encode(templates.get_templates("math").self_correct)
  assert task.stop_ids == (2,)
  assert "<|im_start|>" not in task.tokenizer.decode(task.prompt_ids(task.eval_problems[0]))


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def test_train_problems_are_a_function_of_seed_phase_and_step(task):
  ids = lambda *a: [p.id for p in task.train_problems(*a)]
  assert ids(0, "stage1", 3, 2) == ids(0, "stage1", 3, 2)
  # Steps 0 and 1 of two problems cover the 4-problem train set once (a permutation),
  # where sampling with replacement would repeat some.
  epoch0 = ids(0, "stage1", 0, 2) + ids(0, "stage1", 1, 2)
  assert sorted(epoch0) == sorted(p.id for p in task.train)
  assert ids(0, "stage1", 0, 4) == epoch0
  # Step 2 starts a second, differently shuffled epoch; another seed or phase reorders too.
  orders = {tuple(ids(0, "stage1", 0, 4)), tuple(ids(0, "stage1", 1, 4)), tuple(ids(1, "stage1", 0, 4)),
            tuple(ids(0, "stage2", 0, 4))}
  assert len(orders) > 1
  assert task.eval_problems[0].answer == "7" and len(task.eval_problems) == 4


def test_dev_problems_are_train_rows_held_out_from_training(assets):
  task = make_task(task_config(assets, dev_size=2))
  dev = task.dev_problems(2)
  assert dev == make_task(task_config(assets, dev_size=2)).dev_problems(2)  # fixed
  assert len({p.id for p in dev}) == 2 and len(task.train) == len(TRAIN) - 2
  assert sorted(p.id for p in dev + task.train) == sorted(p.id for p in make_task(
      task_config(assets)).train)  # the train rows, split in two
  drawn = {p.id for step in range(8) for p in task.train_problems(0, "stage1", step, 2)}
  assert not drawn & {p.id for p in dev}
  with pytest.raises(ValueError, match="dev_size=2 holds out 2"):
    task.dev_problems(3)
  with pytest.raises(ValueError, match="dev_size=4"):
    make_task(task_config(assets, dev_size=len(TRAIN)))


def test_eval_size_takes_a_prefix(assets):
  task = make_task(task_config(assets, eval_size=2))
  assert [p.answer for p in task.eval_problems] == ["7", "3"]


def test_missing_data_fails_before_any_compute(assets, tmp_path, monkeypatch):
  config = qwen_config(assets, **{"task.eval_path": str(tmp_path / "none.jsonl")})

  def no_model(*args):
    raise AssertionError("the model was built before the data was checked")

  monkeypatch.setattr(score, "build_model", no_model)
  with pytest.raises(math_task.MissingData, match=r"config.task.eval_path=.*MATH-500"):
    score.run(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_unprepared_gsm8k_says_how_to_prepare_it(assets, tmp_path):
  c = ml_collections.ConfigDict(dict(name="gsm8k", data_dir=str(tmp_path), train_split="train",
                                     eval_split="test", eval_size=0, dev_seed=0, tokenizer_dir=assets["hf_dir"],
                                     templates="math", chat_template=True))
  with pytest.raises(math_task.MissingData, match="python -m scorejax.tasks.gsm8k"):
    make_task(c)


# ----------------------------------------------------------------------------
# The main job
# ----------------------------------------------------------------------------


def test_base_phase_with_zero_steps_passes_the_loaded_params_through(assets, tmp_path):
  config = qwen_config(assets)
  mesh = score.parallel.make_mesh(dict(config.mesh))
  task = make_task(config.task)
  lm, loaded = score.build_model(config.model, task.tokenizer, mesh, config.seed)

  def no_batch(step, state):
    raise AssertionError("a 0-step phase asked for a batch")

  writer = score.MetricWriter(str(tmp_path), tensorboard=False)
  loss_fn = score.build_loss_fn(score.sft.sft_loss, score.model_logprobs(lm, 8), score.base_sft_inputs,
                                score.sft.SFTConfig())
  out = phases.PhaseRunner(config, str(tmp_path), lm, mesh, writer).run(
      "base", 0, score.OptimizerConfig(), loaded, loss_fn, no_batch, 0)
  writer.close()
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), out, loaded)
  assert all(jax.tree.leaves(same))


def test_base_sft_on_a_math_task_is_refused(assets, tmp_path):
  config = qwen_config(assets, **{"base.steps": 2})
  with pytest.raises(ValueError, match=r"config.base.steps=2: .*--config.base.steps=0"):
    score.run(config, str(tmp_path))


def test_main_on_an_hf_checkpoint_writes_the_table(assets, tmp_path):
  args = [f"--config.{k}={v}" for k, v in tiny_overrides(assets).items()]
  proc = subprocess.run([sys.executable, "-m", "scorejax.main", "--config=configs/qwen_score.py:math",
                         f"--workdir={tmp_path}", *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "eval.json") as f:
    results = json.load(f)
  assert set(results) == {"base", "stage1", "stage1_best", "stage2", "stage2_best"}
  for table in results.values():
    assert set(KEYS) <= set(table)
    assert table["num_problems"] == 4
    assert table["delta"] == pytest.approx(table["acc_t2"] - table["acc_t1"])
    assert table["delta"] == pytest.approx(table["delta_i2c"] - table["delta_c2i"])
  assert results["base"]["examples"][0]["problem"] == EVAL[0][0]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert not [r for r in records if r["phase"] == "base" and "loss" in r]  # no SFT on the loaded model
  assert [r["step"] for r in records if r["phase"] == "stage2" and "loss" in r] == [3, 4]
