"""Critique-in-the-loop on an HF checkpoint, on MATH (MATH500 held out) or GSM8K: the config both HF configs share.

configs/qwen_critique_loop.py and configs/llama_critique_loop.py differ only
in the model directory; see their docstrings for how to get the data and run
them. The argument is a comma-separated list: the data set ("math", the
default, or "gsm8k"), the host ("tpu" or "gpu"; neither: whatever devices JAX
sees, one FSDP axis over all) and the method's variants ("vanilla_si", "vanilla_si_n",
"no_filter", as in configs/arith_critique_loop.py).

The loaded checkpoint is the actor, the annotator (it writes the critique
data's feedback given the right answer and what is known of each error, and
rg3's errors) and the critic's starting point. Settings the released
pipeline gives are taken from it (self-improvement from the base model
afresh each iteration, lr 5e-6; difficulty from the actor's pass rate in 5
bins); batch sizes, step counts and sample counts are chosen for one 8-chip
host and say so.
"""

import ml_collections

from scorejax import config_blocks
from scorejax.experiments.hf_score_config import hf_task

PROCESSBENCH = tuple(f"/data/processbench/{s}.jsonl" for s in ("gsm8k", "math", "olympiadbench", "omnimath"))
DATASETS = ("math", "gsm8k")
HOSTS = ("tpu", "gpu")
ERROR_TYPES = ("calculation error", "wrong formula or theorem", "misread condition", "logical error",
               "wrong sign or term dropped")


def get_config(arg: str, model_dir: str, config_file: str) -> ml_collections.ConfigDict:
  """The config of `config_file` (named in errors) for the checkpoint in `model_dir`."""
  parts = [p for p in arg.split(",") if p]
  datasets, hosts = [p for p in parts if p in DATASETS], [p for p in parts if p in HOSTS]
  variants = [p for p in parts if p not in DATASETS + HOSTS]
  if set(variants) - set(VARIANTS) or len(datasets) > 1 or len(hosts) > 1:
    raise ValueError(f"{config_file}: bad argument {arg!r}; expected at most one of {DATASETS}, at most one of "
                     f"{HOSTS} and any of {sorted(VARIANTS)}, e.g. 'math,tpu,vanilla_si'")
  dataset = datasets[0] if datasets else "math"
  host = hosts[0] if hosts else ""

  c = config_blocks.hf_run("critique_loop", host)
  c.model = config_blocks.hf_model(model_dir)

  c.task = hf_task(dataset, c.model)  # train: self-improvement and critique-data questions; eval: held out
  c.task.templates = "deepcritic"  # steps numbered from 1, \boxed{k} / \boxed{-1}; the annotator's prompt
  c.task.dev_size = 256  # train rows held out as the dev set (>= eval.dev_problems)

  c.data = ml_collections.ConfigDict()
  c.data.processbench = PROCESSBENCH  # the critic is scored on these (F1 per subset, one subset per file)

  c.generator = ml_collections.ConfigDict()  # the actor: the loaded checkpoint, not trained from scratch
  c.generator.steps = 0
  c.generator.learning_rate = 0.0  # unused at 0 steps
  c.generator.warmup_steps = 0  # unused at 0 steps
  c.generator.grad_accum_steps = 1  # unused at 0 steps
  c.generator.max_new_tokens = 1024 if dataset == "math" else 512  # per answer, refinement or completion

  c.critique_data = ml_collections.ConfigDict()  # AutoMathCritique from the actor (experiments/critique_data.py)
  c.critique_data.problems = 4096  # training questions; each source makes at most one candidate from each
  c.critique_data.sources = ("rg1", "rg2", "rg3")
  c.critique_data.rg1_temperature = 1.2  # whole solutions at a high temperature
  c.critique_data.rg2_temperature = 1.2  # resampling from a chosen step of the actor's right greedy solution
  c.critique_data.rg3_temperature = 0.7  # the actor's continuation after the annotator's injected error
  c.critique_data.rg2_location = "mc"  # rg2's earliest error by Monte Carlo labels ("resampled": the chosen step)
  c.critique_data.error_types = ERROR_TYPES  # rg3: one, drawn at random, is named to the annotator
  c.critique_data.filter_by_refinement = True  # keep a critique only if the actor's refinement with it is right
  c.critique_data.filter_keeps_redo = False  # True needs a task that reads a redo (the built-in one); not real data

  c.mc = ml_collections.ConfigDict()  # rg2's Monte Carlo labels (rewards/mc_labels.py), DeepCritic's settings
  c.mc.rollouts = 8
  c.mc.temperature = 0.7
  c.mc.top_p = 0.9
  c.mc.batch_size = 256  # completions decoded together

  c.annotator = ml_collections.ConfigDict()  # the loaded checkpoint, given the answer and the error's place / type
  c.annotator.temperature = 0.0  # its feedback and rg3 rewrites; 0: greedy

  c.critique = ml_collections.ConfigDict()
  c.critique.max_new_tokens = 2048  # deliberate step-wise critiques of MATH solutions run to a thousand or more

  c.critic = ml_collections.ConfigDict()  # SFT of the critique model on the kept records, from the actor
  c.critic.steps = 200  # chosen: about 2 epochs of ~6k kept records at batch 64
  c.critic.batch_size = 64
  c.critic.grad_accum_steps = 8  # micro-batches of 8 rows
  c.critic.learning_rate = 1e-5  # cosine decay
  c.critic.warmup_steps = 10

  c.difficulty = ml_collections.ConfigDict()  # the base actor's pass rate per question, in 5 levels
  c.difficulty.samples = 16
  c.difficulty.temperature = 1.0

  c.test_time = ml_collections.ConfigDict()
  c.test_time.temperature = 1.0  # the actor's answers (critiques are greedy)
  c.test_time.refine_temperature = 0.0  # the actor's refinements; 0: greedy
  c.test_time.max_samples = 16  # plain samples per problem (MV@k, pass@k up to k = 16)
  c.test_time.chains = (1, 2, 4)  # critique-and-refine chains per problem, majority-voted
  c.test_time.sequential_rounds = 3  # sequential mode: critique and refine until accepted, at most this often

  c.self_improve = ml_collections.ConfigDict()
  c.self_improve.mode = "critique"  # "critique": the critic in the loop; "vanilla": correct samples only
  c.self_improve.iterations = 3
  c.self_improve.questions = 2048  # training questions, the same each iteration
  c.self_improve.samples = 4  # answers sampled per question (critique mode)
  c.self_improve.refine_budget = 4  # wrong answers critiqued and refined per question, at most
  c.self_improve.refine_rounds = 1  # critique-and-refine rounds per wrong answer (until right)
  c.self_improve.critic_refresh = False  # from iteration 2: critique data from the current actor, critic retrained
  c.self_improve.vanilla_budget = "loop"  # vanilla mode's samples per question: "loop" N + refine_budget, "samples" N
  c.self_improve.temperature = 1.0
  c.self_improve.refine_temperature = 0.0
  c.self_improve.steps = 100  # from the base model each iteration: about one epoch of ~6k rows at batch 64
  c.self_improve.batch_size = 64
  c.self_improve.grad_accum_steps = 8  # micro-batches of 8 rows
  c.self_improve.replay_share = 0.0  # replay rows are the built-in actor's; a loaded actor replays nothing
  c.self_improve.learning_rate = 5e-6  # the released pipeline's
  c.self_improve.warmup_steps = 5
  c.self_improve.order_seed = 0  # the fine-tunes' row order; another value: the same rows, reordered

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64 if host == "gpu" else 32  # rows decoded together (80 GB per GPU: more)
  c.eval.samples = 4  # sampled answers per held-out problem for accuracy_sampled
  c.eval.temperature = 1.0
  c.eval.dev_problems = 256  # dev-split problems (greedy accuracy per iteration: what settings are tuned on)

  c.checkpoint = config_blocks.checkpointing(every=25)
  for variant in variants:
    VARIANTS[variant](c)
  return c


VARIANTS = config_blocks.critique_loop_variants()
