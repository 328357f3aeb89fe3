"""SPC on Qwen2.5-7B-Instruct: a sneaky generator and a step critic from one checkpoint, PRM800K, ProcessBench.

The argument is a comma-separated list: the host ("tpu": a TPU v4-8 / v5e-8
VM; "gpu": an 8-GPU host; neither: whatever devices JAX sees, one FSDP axis
over all) and the ablations of configs/arith_spc.py ("unbalanced",
"unpaired", "earlier_critic", "sft_wins", "sft_balanced_wins").

Get the model and the data once (on a machine with network access):

  huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir /data/models/Qwen2.5-7B-Instruct
  # PRM800K: github.com/openai/prm800k, prm800k/data/phase2_train.jsonl -> /data/prm800k/phase2_train.jsonl
  huggingface-cli download Qwen/ProcessBench --repo-type dataset --local-dir /data/processbench
  #   (its four subsets as /data/processbench/{gsm8k,math,olympiadbench,omnimath}.jsonl)
  # the MATH train split as one JSONL (fields problem, solution, level, type) at /data/math/train.jsonl
  huggingface-cli download HuggingFaceH4/MATH-500 test.jsonl --repo-type dataset --local-dir /data/math500

Run (every host of a TPU VM runs the same command; see launch/tpu_vm.sh):

  python -m scorejax.main --config=configs/qwen_spc.py:tpu --workdir=gs://bucket/qwen_spc
  python -m scorejax.main --config=configs/qwen_spc.py:gpu,unbalanced --workdir=/tmp/qwen_spc_unbalanced

Both roles start from the loaded checkpoint (each may have its own:
roles.<role>.hf_dir, same tokenizer), which is also the games' solver and
the search's. Round 0's SFT data is PRM800K's (`experiments/spc_data.py`:
FileSPCData): the critic learns the verdict on steps rated 1 and -1, the
sneaky generator PRM800K's pairs of a right and a wrong step after the same
prefix. The paper's round-0 data (GPT-4 rewrites, PRM800K critiques written
by a strong model) is not released; these are its analog from the labels
alone. Games are validated by completions of the base (no checker on real
data). The offline RL settings are the spec's (clip 0.2, 0.15 x SFT, KL 0);
the rest (sizes, learning rates, budgets) are chosen for one 8-chip host,
not taken from the paper.
"""

import ml_collections

from scorejax import config_blocks

MODEL_DIR = "/data/models/Qwen2.5-7B-Instruct"
PROCESSBENCH = tuple(f"/data/processbench/{s}.jsonl" for s in ("gsm8k", "math", "olympiadbench", "omnimath"))
PRM800K = "/data/prm800k/phase2_train.jsonl"
MATH_TRAIN = "/data/math/train.jsonl"
MATH500_TEST = "/data/math500/test.jsonl"
ERROR_TYPES = ("calculation error", "wrong formula or theorem", "misread condition", "logical error",
               "wrong sign or term dropped")
HOSTS = ("tpu", "gpu")


def get_config(arg: str = ""):
  parts = [p for p in arg.split(",") if p]
  hosts = [p for p in parts if p in HOSTS]
  variants = [p for p in parts if p not in HOSTS]
  if set(variants) - set(VARIANTS) or len(hosts) > 1:
    raise ValueError(f"configs/qwen_spc.py: bad argument {arg!r}; expected at most one of {HOSTS} and any of "
                     f"{sorted(VARIANTS)}, e.g. 'tpu,unbalanced'")
  host = hosts[0] if hosts else ""

  c = config_blocks.hf_run("spc", host)
  c.model = config_blocks.hf_model(MODEL_DIR)  # the base; the roles start from it

  c.task = ml_collections.ConfigDict()
  c.task.name = "math"  # MathTask: the tokenizer, the chat template, answers and steps (paragraphs)
  c.task.train_path = MATH_TRAIN  # the games' problems (the base model's solutions to them)
  c.task.eval_path = MATH500_TEST  # the search's problems
  c.task.eval_size = 0  # first N eval problems; 0: all
  c.task.dev_size = 0  # train rows held out (unused: the dev set is PRM800K paths)
  c.task.dev_seed = 1234  # the shuffle of PRM800K's paths whose first eval.interval_problems are the dev set
  c.task.tokenizer_dir = c.model.get_ref("hf_dir") + ""  # follows model.hf_dir unless overridden itself
  c.task.templates = "math"  # SPC's step-critic and sneaky prompts
  c.task.chat_template = True

  c.data = ml_collections.ConfigDict()  # experiments/spc_data.py: FileSPCData
  c.data.processbench = PROCESSBENCH  # held out, one subset per file
  c.data.prm800k = PRM800K  # both roles' round-0 SFT data and the dev set
  c.data.prm800k_neutral_is_error = False  # PRM800K's rating 0 counts as a right step
  c.data.prm800k_error_type = "logical error"  # the type the sneaky SFT rows name (PRM800K names none)

  c.generator = ml_collections.ConfigDict()  # the loaded base: the solver of the games and the search
  c.generator.steps = 0
  c.generator.learning_rate = 0.0  # unused at 0 steps
  c.generator.warmup_steps = 0  # unused at 0 steps
  c.generator.max_new_tokens = 1024  # per solution or completion

  c.solutions = ml_collections.ConfigDict()
  c.solutions.policy_temperature = 1.0  # the base model's solutions the games are played on

  c.roles = ml_collections.ConfigDict()
  # Output budgets: the critic's analysis and verdict; the sneaky generator's error type and one step.
  c.roles.critic = config_blocks.spc_role(512, 2e-6, steps=200, batch_size=64, learning_rate=1e-5, warmup_steps=10)
  c.roles.sneaky = config_blocks.spc_role(256, 1e-6, steps=200, batch_size=64, learning_rate=1e-5, warmup_steps=10)

  c.game = ml_collections.ConfigDict()
  c.game.rounds = 2  # RL rounds after round 0
  c.game.games_per_round = 2048
  c.game.solvers = ("policy", "prm800k")  # the base model's right solutions, PRM800K's correct steps
  c.game.error_types = ERROR_TYPES  # the sneaky generator names one of these first
  c.game.sneaky_temperature = 0.7
  c.game.critic_temperature = 0.7
  c.game.critic_samples = 1  # the critic's judgements of each game step (> 1: a group baseline, rewards/game.py)
  c.game.validator = "completions"  # no exact checker on real data
  c.game.validate_rollouts = 8  # N completions per prefix, with the original and with the rewrite
  c.game.validate_temperature = 0.7
  c.game.keep_at_least = 0.5  # the original step's success rate must stay at least this
  c.game.drop_to_at_most = 0.125  # and the rewrite's must drop to at most this
  c.game.win_reward = 1.0
  c.game.loss_reward = -1.0
  c.game.invalid_verdict_reward = -1.0
  c.game.penalize_failed_rewrites = False
  c.game.balance = True
  c.game.paired = True
  c.game.min_kept_games = 64
  c.game.critic_lag = 0

  c.rl = config_blocks.spc_offline_rl(batch_size=64, sft_batch_size=16)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64 if host == "gpu" else 32  # rows decoded together
  c.eval.interval_problems = 128  # the dev set: PRM800K paths held out from training
  c.eval.sneaky_items = 512  # held-out correct steps the sneaky generator rewrites
  c.eval.search_problems = 200
  c.eval.search_retries = 5  # resamples of a step judged Incorrect (the paper's 5)
  c.eval.search_temperature = 1.0
  c.eval.search_max_steps = 16
  c.eval.search_step_tokens = 256
  c.eval.every = 0  # unused: evaluations run at round ends

  c.checkpoint = config_blocks.checkpointing(every=25)
  for variant in variants:
    VARIANTS[variant](c)
  return c


VARIANTS = config_blocks.spc_variants()
