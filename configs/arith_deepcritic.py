"""DeepCritic on the built-in arithmetic task, from scratch on a CPU.

  python -m scorejax.main --config=configs/arith_deepcritic.py --workdir=/tmp/deepcritic
  python -m scorejax.main --config=configs/arith_deepcritic.py:smoke --workdir=/tmp/deepcritic_smoke
  python -m scorejax.main --config=configs/arith_deepcritic.py:mc_labels --workdir=/tmp/dc_mc  # RL on MC labels
  python -m scorejax.main --config=configs/arith_deepcritic.py --workdir=/tmp/dc1 --config.seed=1

A tiny Llama-style generator learns to solve the task (with a carry habit),
to self-correct and to refine a solution given a critique; the critic starts
from it, learns deliberate step-wise critiques by SFT on a seed annotator's
filtered critiques (the annotator slips and is blind to some carries), then
RL with reward 1 when its boxed earliest-error step equals the label. The
critics are scored ProcessBench-style on held-out solutions of three
generators. Measurements: docs/deepcritic.md. `smoke` is the same pipeline
shrunk to finish in under two minutes.
"""

import ml_collections

from scorejax import config_blocks


def get_config(arg: str = ""):
  # eval_size: held-out problems; each generator writes one solution to each (>= 1,000 in all)
  c = config_blocks.built_in_run("deepcritic", eval_size=340)

  c.model = config_blocks.tiny_model()

  c.generator = config_blocks.arith_generator()  # solves (with a carry habit), self-corrects, refines

  # Solutions to critique, and their generators (the subsets of the ProcessBench-format tables).
  c.solutions = ml_collections.ConfigDict()
  c.solutions.generators = ("writer", "error_maker", "policy")  # noisy writer, error maker, the generator's samples
  c.solutions.writer_error_rate = 0.3  # writer: share with a random error, besides its carry habit
  c.solutions.carry_slip_rate = 0.5  # writer and error maker: the carry habit of what they write
  c.solutions.error_share = 0.6  # error maker: share of its solutions with an injected error
  c.solutions.policy_temperature = 1.0  # the generator's samples

  c.annotator = ml_collections.ConfigDict()  # the seed annotator's mistakes (tasks/arith/critiques.py)
  c.annotator.slip_rate = 0.15  # per step: its redo result is off by a small slip
  c.annotator.carry_blind_rate = 0.5  # per carrying step: its redo drops the carry, as the writers' habit does

  c.critique = ml_collections.ConfigDict()
  c.critique.max_new_tokens = 160  # a 4-step critique is at most ~150 characters

  c.sft = ml_collections.ConfigDict()  # Stage 1: SFT on filtered seed critiques
  c.sft.steps = 300
  c.sft.batch_size = 32
  c.sft.learning_rate = 1e-3
  c.sft.warmup_steps = 30
  c.sft.grad_accum_steps = 1  # micro-batches per step

  c.rl = ml_collections.ConfigDict()  # Stage 2: GRPO on the earliest-error reward
  c.rl.steps = 60
  c.rl.solutions_per_step = 16
  c.rl.group_size = 4  # critiques sampled per solution (group-relative advantages)
  c.rl.temperature = 0.8  # sampling temperature of the RL critiques
  c.rl.learning_rate = 3e-5
  c.rl.warmup_steps = 5
  c.rl.grad_clip_norm = 1.0
  c.rl.grad_accum_steps = 1  # micro-batches per step
  c.rl.clip_eps = 0.2
  c.rl.kl_coef = 0.1  # token-mean KL to the SFT critic: at 0, seed 1 collapsed to one verdict (dev F1 0.42 -> 0.0)
  c.rl.kl_estimator = "k2"
  c.rl.baseline = "grpo"  # a name in objectives.advantages.ADVANTAGES
  c.rl.label_source = "task"  # "task": the exact checker (the human-label analog); "mc": Monte Carlo labels
  c.rl.pool_size = 960  # labelled training solutions RL draws from

  c.mc = ml_collections.ConfigDict()  # Monte Carlo labels (rewards/mc_labels.py), DeepCritic's released settings
  c.mc.rollouts = 8
  c.mc.temperature = 0.7
  c.mc.top_p = 0.9
  c.mc.batch_size = 512

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 400  # critiques decoded together
  c.eval.maj_k = 8  # sampled critiques per solution for Maj@k
  c.eval.maj_temperature = 0.8
  c.eval.every = 30  # RL and SFT steps between greedy dev evaluations (0: only at phase ends)
  c.eval.interval_problems = 100  # dev problems, one solution per generator each

  c.checkpoint = config_blocks.checkpointing(every=50)
  return config_blocks.apply_variants(c, arg, _shrink, VARIANTS, "configs/arith_deepcritic.py")


def _shrink(c):
  """The same pipeline in under two minutes: for tests and quick checks."""
  c.log_every = 5
  c.task.eval_size = 24
  c.model.d_model, c.model.n_layers, c.model.d_ff = 64, 2, 128
  c.generator.steps, c.generator.clean_steps, c.generator.warmup_steps = 40, 20, 5
  c.sft.steps, c.sft.warmup_steps = 20, 5
  c.rl.steps, c.rl.solutions_per_step, c.rl.group_size, c.rl.pool_size = 4, 4, 2, 32
  c.critique.max_new_tokens = 96
  c.mc.rollouts, c.mc.batch_size = 2, 128
  c.eval.batch_size, c.eval.maj_k, c.eval.every, c.eval.interval_problems = 72, 2, 4, 4
  c.checkpoint.every = 10


def _mc_labels(c):
  c.rl.label_source = "mc"


VARIANTS = {
    "mc_labels": _mc_labels,  # RL on Monte Carlo labels from the generator's completions
}
