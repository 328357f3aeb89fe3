"""SCoRe on an HF checkpoint, on MATH (MATH500 held out), GSM8K or code (MBPP, HumanEval held out):
the config both HF configs share.

configs/qwen_score.py and configs/llama_score.py differ only in the model
directory; see their docstrings for how to get the data and run them.
"""

import ml_collections

from scorejax import config_blocks

MATH_TRAIN = "/data/math/train.jsonl"
MATH500_TEST = "/data/math500/test.jsonl"
GSM8K_DATA_DIR = "/data/tfds"
MBPP = "/data/mbpp/mbpp.jsonl"
HUMANEVAL = "/data/humaneval/HumanEval.jsonl"
DATASETS = ("math", "gsm8k", "code")


def get_config(arg: str, model_dir: str, config_file: str) -> ml_collections.ConfigDict:
  """The config of `config_file` (named in errors) for the checkpoint in `model_dir`."""
  parts = [p for p in arg.split(",") if p]
  datasets = [p for p in parts if p in DATASETS]
  hosts = [p for p in parts if p in ("tpu", "gpu")]
  unknown = [p for p in parts if p not in DATASETS + ("tpu", "gpu")]
  if unknown or len(datasets) > 1 or len(hosts) > 1:
    raise ValueError(f"{config_file}: bad argument {arg!r}; expected one of math / gsm8k / code, "
                     "optionally with one of tpu / gpu, e.g. 'math,tpu'")
  dataset = datasets[0] if datasets else "math"
  host = hosts[0] if hosts else ""

  c = config_blocks.hf_run("score", host)
  c.model = config_blocks.hf_model(model_dir)

  c.task = hf_task(dataset, c.model)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 1.0  # training rollouts (the paper samples at 1.0); evaluation is greedy
  # Per attempt: MATH solutions of 1-2B instruct models run to several hundred tokens; GSM8K's and MBPP's
  # programs are shorter.
  c.sampling.max_new_tokens = 1024 if dataset == "math" else 512

  c.base = ml_collections.ConfigDict()
  c.base.steps = 0  # the loaded model is the base policy: its params pass through, then "base" is evaluated
  c.base.batch_size = 64  # read only when steps > 0
  c.base.learning_rate = 5e-6  # read only when steps > 0
  c.base.warmup_steps = 0  # read only when steps > 0

  # The paper: 3000 steps of batch 512 on MATH. One 8-chip host samples 128
  # episodes (2 attempts each) per step in reasonable time, so batches are 4x
  # smaller and the stages together run 600 steps (~77k episodes).
  c.stage1 = _stage("score_stage1", steps=200, alpha=0.0, beta1=0.01, beta2=0.1)
  c.stage2 = _stage("score_stage2", steps=400, alpha=10.0, beta1=0.01, beta2=0.0)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64  # problems decoded together (greedy)
  c.eval.every = 50  # RL steps between greedy evaluations on a dev set (0: only at phase ends)
  c.eval.interval_problems = 128  # the dev set: train rows held out from training (task.dev_size)

  c.select = config_blocks.score_selection()
  c.inference = config_blocks.score_inference(problems=128)
  c.select.every = 25  # a candidate at every checkpoint

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 25  # steps between checkpoints (a step takes tens of seconds)
  c.checkpoint.max_to_keep = 2
  c.checkpoint.async_save = True

  if dataset == "code":  # the paper's MBPP run: lr 1e-5, beta2 0.25 (1500 steps of batch 128)
    for stage in (c.stage1, c.stage2):
      stage.learning_rate = 1e-5
    c.stage1.beta2 = 0.25
    c.stage1.steps, c.stage2.steps = 500, 1000  # the paper's 1500 steps of batch 128, a third in Stage I
    c.eval.interval_problems = 64  # of MBPP's 90 validation problems (task.dev_size)
    c.inference.episodes = 0  # a program states no final answer to vote on: Acc@t only
  if host == "gpu":  # 80 GB per device: decode more problems at once
    c.eval.batch_size = 128
  return c


def hf_task(dataset: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The task block of an HF run: MATH train / MATH500 files, tfds GSM8K or MBPP / HumanEval."""
  t = ml_collections.ConfigDict()
  t.name = dataset  # "math": MATH train / MATH500 eval files; "gsm8k": tfds GSM8K; "code": MBPP / HumanEval
  if dataset == "code":
    return _code_task(t, model)
  if dataset == "math":
    t.train_path = MATH_TRAIN  # MATH train split (.jsonl / .json / .parquet; answer from \boxed{})
    t.eval_path = MATH500_TEST  # MATH500 test.jsonl, the paper's held-out set
  else:
    t.data_dir = GSM8K_DATA_DIR  # tfds data_dir prepared by `python -m scorejax.tasks.gsm8k`
    t.train_split = "train"  # GSM8K split the RL batches are drawn from
    t.eval_split = "test"  # held-out split (1319 problems)
  t.eval_size = 0  # first N held-out problems for the tables; 0: all (MATH500: 500)
  t.dev_size = 128  # train rows held out from training as the dev set (>= eval.interval_problems)
  t.dev_seed = 1234  # the shuffle of the train set whose first dev_size rows are the dev set
  # The tokenizer directory; follows model.hf_dir unless overridden itself.
  t.tokenizer_dir = model.get_ref("hf_dir") + ""
  t.templates = "math"  # scorejax.tasks.templates set; holds SCoRe's verbatim instruction
  t.chat_template = True  # render through the tokenizer's chat template when it has one
  return t


def _stage(method, steps, alpha, beta1, beta2):
  s = ml_collections.ConfigDict()
  s.method = method  # score_stage1, score_stage2, or an on-policy baseline's: single_turn, star
  s.steps = steps
  s.batch_size = 128  # episodes per step (the paper: 512)
  # 4 samples per problem so each episode's baseline is its siblings' mean
  # reward (the paper only says REINFORCE with a baseline).
  s.samples_per_prompt = 4
  s.learning_rate = 5e-6  # Adam (the paper, MATH)
  s.warmup_steps = 10
  s.grad_clip_norm = 1.0
  s.alpha = alpha  # reward shaping weight (Stage II; the paper: 10)
  s.beta1 = beta1  # KL weight on y2 (Stage I), on y1 and y2 (Stage II); the paper: 0.01
  s.beta2 = beta2  # KL weight on y1 in Stage I (the paper: 0.1)
  s.kl_estimator = "k2"
  s.baseline = "rloo"  # REINFORCE baseline: none, batch_mean, rloo, grpo
  s.shaping_baseline = True  # Stage II: alpha * r1 goes into y2's baseline (same expected gradient)
  s.credit = "per_attempt"  # Stage II credit of y1: "per_attempt" (r1) or "return" (r1 + gamma * r_hat2)
  s.gamma = 1.0  # credit="return": discount of r_hat2 in y1's return
  s.star_keep = "right_y2"  # star: the episodes trained on: "right_y2" (every right y2) or "i2c" (y1 wrong)
  s.base_first_attempts = 0.0  # share of prompts whose y1 the base model samples (the paper's optional Stage II mix)
  return s


def _code_task(t: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  t.mbpp_path = MBPP  # the published mbpp.jsonl (974 problems): train 601-974, validation 511-600, test 11-510
  t.humaneval_path = HUMANEVAL  # HumanEval.jsonl (164 problems), read when eval = "humaneval"
  t.eval = "humaneval"  # held out: "humaneval" (the paper) or "mbpp" (MBPP's test split)
  t.repair_path = ""  # MBPP-R: JSONL of task_id + completion (wrong first attempts to fix); "": not evaluated
  t.eval_size = 0  # first N held-out problems for the tables; 0: all
  t.dev_size = 90  # MBPP validation problems read as the dev set (>= eval.interval_problems)
  t.tokenizer_dir = model.get_ref("hf_dir") + ""
  t.templates = "code"  # MBPP's prompt; SCoRe's instruction for code
  t.chat_template = True
  t.sandbox = config_blocks.sandbox()
  return t
