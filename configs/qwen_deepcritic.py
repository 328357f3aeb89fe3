"""DeepCritic on Qwen2.5-7B-Instruct: SFT on seed critiques, RL on PRM800K labels (or Monte Carlo), ProcessBench.

The argument is a comma-separated list of variants: "mc_labels" (RL on Monte
Carlo labels of the model's own solutions to MATH train problems instead of
PRM800K's human labels) and the host ("tpu": a TPU v5e-8 / v4-8 VM; "gpu": an
8-GPU host; neither: whatever devices JAX sees, one FSDP axis over all).

Get the model and the data once (on a machine with network access):

  huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir /data/models/Qwen2.5-7B-Instruct
  huggingface-cli download Qwen/ProcessBench --repo-type dataset --local-dir /data/processbench
  #   (its four subsets as /data/processbench/{gsm8k,math,olympiadbench,omnimath}.jsonl)
  huggingface-cli download HuggingFaceH4/MATH-500 test.jsonl --repo-type dataset --local-dir /data/math500
  # PRM800K: github.com/openai/prm800k, prm800k/data/phase2_train.jsonl -> /data/prm800k/phase2_train.jsonl
  # seed critiques, one JSON object per line: problem, steps, critique (ending \\boxed{k}), label
  #   (scorejax/tasks/seed_critiques.py) -> /data/deepcritic/seed_critiques.jsonl
  # mc_labels only: the MATH train split as one JSONL at /data/math/train.jsonl

Run (every host of a TPU VM runs the same command; see launch/tpu_vm.sh):

  python -m scorejax.main --config=configs/qwen_deepcritic.py:tpu --workdir=/tmp/qwen_deepcritic
  python -m scorejax.main --config=configs/qwen_deepcritic.py:mc_labels,gpu --workdir=/tmp/qwen_deepcritic_mc

The loaded model is the generator (generator.steps = 0) and the base critic;
the critic is trained from it by SFT, then RL from the SFT model. Held out:
ProcessBench (F1 per subset, Maj@8); refinement: the model's own greedy
MATH500 solutions, refined with each critic's critique. Hyperparameters:
DeepCritic's released SFT settings (Yang et al., arXiv 2505.00662: lr 1e-5
cosine, 3 epochs, effective batch 64) and Monte Carlo settings (8 rollouts at
temperature 0.7, top-p 0.9). Its RL code is not released; the RL block below
is GRPO as the paper describes it (reward 1 when the boxed index equals the
label), with learning rate, group size and KL chosen as common GRPO settings
for a 7B model, not taken from the paper.
"""

import ml_collections

from scorejax import config_blocks

MODEL_DIR = "/data/models/Qwen2.5-7B-Instruct"
PROCESSBENCH = tuple(f"/data/processbench/{s}.jsonl" for s in ("gsm8k", "math", "olympiadbench", "omnimath"))
SEED_CRITIQUES = "/data/deepcritic/seed_critiques.jsonl"
PRM800K = "/data/prm800k/phase2_train.jsonl"
MATH_TRAIN = "/data/math/train.jsonl"
MATH500_TEST = "/data/math500/test.jsonl"
VARIANTS = ("mc_labels", "tpu", "gpu")


def get_config(arg: str = ""):
  parts = [p for p in arg.split(",") if p]
  hosts = [p for p in parts if p in ("tpu", "gpu")]
  if set(parts) - set(VARIANTS) or len(hosts) > 1:
    raise ValueError(f"configs/qwen_deepcritic.py: bad argument {arg!r}; expected some of {VARIANTS} "
                     "(at most one host), e.g. 'mc_labels,tpu'")
  host = hosts[0] if hosts else ""

  c = config_blocks.hf_run("deepcritic", host)
  c.model = config_blocks.hf_model(MODEL_DIR)

  c.task = ml_collections.ConfigDict()
  c.task.name = "math"  # MathTask: the tokenizer, the chat template, answers and steps (paragraphs)
  c.task.train_path = ""  # MATH train: read by mc_labels only (the problems whose solutions are MC-labelled)
  c.task.eval_path = MATH500_TEST  # the refinement problems (answers known)
  c.task.eval_size = 0  # first N refinement problems; 0: all (MATH500: 500)
  c.task.dev_size = 0  # train rows held out from MATH train (unused: the dev set is PRM800K paths)
  c.task.dev_seed = 1234  # the shuffle of PRM800K's paths whose first eval.interval_problems are the dev set
  c.task.tokenizer_dir = c.model.get_ref("hf_dir") + ""  # follows model.hf_dir unless overridden itself
  c.task.templates = "deepcritic"  # steps numbered from 1, \boxed{k} or \boxed{-1}; MATH's solve / refine prompts
  c.task.chat_template = True

  c.data = ml_collections.ConfigDict()  # experiments/critic_data.py: FileCriticData
  c.data.processbench = PROCESSBENCH  # held out, one subset per file
  c.data.seed_critiques = SEED_CRITIQUES  # Stage 1 SFT data
  c.data.prm800k = PRM800K  # Stage 2 labels (rl.label_source="task") and the dev set
  c.data.prm800k_neutral_is_error = False  # PRM800K's rating 0 counts as a right step

  c.generator = ml_collections.ConfigDict()  # the loaded model: it writes and refines solutions, untrained
  c.generator.steps = 0
  c.generator.learning_rate = 0.0  # unused at 0 steps
  c.generator.warmup_steps = 0  # unused at 0 steps
  c.generator.max_new_tokens = 1024  # per solution, refinement or Monte Carlo completion

  c.solutions = ml_collections.ConfigDict()
  c.solutions.policy_temperature = 1.0  # mc_labels: the model's own solutions to MATH train problems

  c.critique = ml_collections.ConfigDict()
  c.critique.max_new_tokens = 8192  # deliberate critiques of ProcessBench's longer solutions run to thousands

  c.sft = ml_collections.ConfigDict()  # Stage 1, DeepCritic's released settings
  c.sft.steps = 0  # 0: sft.epochs passes over the kept seed critiques
  c.sft.epochs = 3
  c.sft.batch_size = 64  # effective batch
  c.sft.grad_accum_steps = 8  # micro-batches of 8 rows: one row per chip of an 8-chip host
  c.sft.learning_rate = 1e-5  # cosine decay
  c.sft.warmup_steps = 10
  c.sft.filter_by_label = True  # keep a seed critique only when its boxed index equals its label

  c.rl = ml_collections.ConfigDict()  # Stage 2: GRPO on the earliest-error reward, from the SFT critic
  c.rl.steps = 200
  c.rl.solutions_per_step = 16
  c.rl.group_size = 8  # critiques sampled per solution (group-relative advantages)
  c.rl.temperature = 1.0
  c.rl.learning_rate = 1e-6
  c.rl.warmup_steps = 10
  c.rl.grad_clip_norm = 1.0
  c.rl.grad_accum_steps = 16  # 128 critiques per step in micro-batches of 8
  c.rl.clip_eps = 0.2
  c.rl.kl_coef = 0.001  # token-mean KL to the SFT critic
  c.rl.kl_estimator = "k2"
  c.rl.baseline = "grpo"  # a name in objectives.advantages.ADVANTAGES
  c.rl.label_source = "task"  # "task": PRM800K's human labels; "mc": Monte Carlo labels (mc_labels)
  c.rl.pool_size = 0  # labelled solutions RL draws from; 0: every PRM800K path left after the dev set

  c.mc = ml_collections.ConfigDict()  # Monte Carlo labels (rewards/mc_labels.py), DeepCritic's released settings
  c.mc.rollouts = 8
  c.mc.temperature = 0.7
  c.mc.top_p = 0.9
  c.mc.batch_size = 256  # completions decoded together

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32  # critiques decoded together
  c.eval.maj_k = 8  # sampled critiques per solution for Maj@k
  c.eval.maj_temperature = 0.7
  c.eval.every = 25  # SFT and RL steps between greedy dev evaluations (0: only at phase ends)
  c.eval.interval_problems = 128  # the dev set: PRM800K paths held out from RL

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 25
  c.checkpoint.max_to_keep = 2
  c.checkpoint.async_save = True

  if "mc_labels" in parts:
    c.rl.label_source = "mc"
    c.rl.pool_size = 4096  # MATH train problems, one sampled solution each, then MC-labelled
    c.task.train_path = MATH_TRAIN
  if host == "gpu":  # 80 GB per device: decode more critiques at once
    c.eval.batch_size = 64
  return c
