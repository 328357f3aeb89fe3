"""SPC on the built-in arithmetic task, from scratch on a CPU.

  python -m scorejax.main --config=configs/arith_spc.py --workdir=/tmp/spc
  python -m scorejax.main --config=configs/arith_spc.py:smoke --workdir=/tmp/spc_smoke
  python -m scorejax.main --config=configs/arith_spc.py:unbalanced --workdir=/tmp/spc_unbalanced
  python -m scorejax.main --config=configs/arith_spc.py --workdir=/tmp/spc1 --config.seed=1
  python -m scorejax.main --config=configs/arith_spc.py:long_critic_sft --workdir=/tmp/spc_strong
  python -m scorejax.main --config=configs/arith_spc.py:sft_wins --workdir=/tmp/spc_sft_wins
  python -m scorejax.main --config=configs/arith_spc.py:sft_balanced_wins --workdir=/tmp/spc_sft_bwins

A tiny Llama-style base model learns to solve the task (with a carry habit);
a step critic and a sneaky generator start from it by SFT (the critic on a
seed annotator's filtered single-step judgements, the annotator blind to
some carries; the sneaky generator on the task's error makers), then play
`game.rounds` rounds of games with offline RL after each. Held-out steps
come from the writer's and the base model's solutions to eval problems.
Measurements: docs/spc.md. `smoke` is the same pipeline in under two minutes.
"""

import ml_collections

from scorejax import config_blocks
from scorejax.tasks.arith import ERROR_TYPES


def get_config(arg: str = ""):
  # eval_size: held-out problems, one solution per held-out generator each (>= 1,000 steps)
  c = config_blocks.built_in_run("spc", eval_size=250)

  c.model = config_blocks.tiny_model()  # the base model; the roles start from it

  # The base model: a solver with the writers' carry habit (the games' solver and the search's).
  c.generator = ml_collections.ConfigDict()
  c.generator.steps = 300
  c.generator.batch_size = 32
  c.generator.learning_rate = 3e-3
  c.generator.warmup_steps = 50
  c.generator.clean_steps = 150  # first steps: right solutions, so the model learns the task before its habit
  c.generator.clean_error_rate = 0.0
  c.generator.error_rate = 0.1  # share of solutions with a random error (after clean_steps)
  c.generator.carry_slip_rate = 0.6  # the habit: a carry or borrow is dropped this often
  c.generator.max_new_tokens = 48  # per solution

  # Held-out solutions (scored by subset) and the writer solver of the games.
  c.solutions = ml_collections.ConfigDict()
  c.solutions.generators = ("writer", "policy")  # noisy writer, the base model's samples: held-out subsets
  c.solutions.writer_error_rate = 0.3
  c.solutions.carry_slip_rate = 0.5
  c.solutions.error_share = 0.6
  c.solutions.policy_temperature = 1.0

  c.annotator = ml_collections.ConfigDict()  # the critic's seed judgements (tasks/arith/critiques.py)
  c.annotator.slip_rate = 0.15  # per step: its redo result is off by a small slip
  c.annotator.carry_blind_rate = 0.5  # per carrying step: its redo drops the carry

  c.roles = ml_collections.ConfigDict()
  c.roles.critic = config_blocks.spc_role(64, 1e-4, steps=300, batch_size=32, learning_rate=1e-3, warmup_steps=30)
  c.roles.sneaky = config_blocks.spc_role(48, 3e-5, steps=200, batch_size=32, learning_rate=1e-3, warmup_steps=30)

  c.game = ml_collections.ConfigDict()
  c.game.rounds = 2  # RL rounds after round 0
  c.game.games_per_round = 512
  c.game.solvers = ("policy", "writer")  # who writes the games' solutions: "policy" (the base), "writer", "reference"
  c.game.error_types = ERROR_TYPES  # the sneaky generator names one of these first
  c.game.sneaky_temperature = 0.7  # at 1.0 a third of the round-0 rewrites are garbled (unreadable)
  c.game.critic_temperature = 0.7
  c.game.critic_samples = 1  # the critic's judgements of each game step (> 1: a group baseline, rewards/game.py)
  c.game.validator = "checker"  # "checker": the exact step checker; "completions": solver success rates
  c.game.validate_rollouts = 8  # completions: N per prefix, with the original and with the rewrite
  c.game.validate_temperature = 0.7
  c.game.keep_at_least = 0.5  # completions: the original step's success rate must stay at least this
  c.game.drop_to_at_most = 0.125  # completions: and the rewrite's must drop to at most this
  c.game.win_reward = 1.0
  c.game.loss_reward = -1.0
  c.game.invalid_verdict_reward = -1.0  # the critic's reward for a verdict that cannot be read
  c.game.penalize_failed_rewrites = False  # True: a rewrite not read or not truly wrong is a sneaky loss record
  c.game.balance = True  # as many critic wins as sneaky wins
  c.game.paired = True  # the critic also judges the same prefix's correct step
  c.game.min_kept_games = 32  # balance fallback when one side wins nearly everything
  c.game.critic_lag = 0  # 0: the sneaky generator plays the latest critic; k: the critic of k rounds before

  c.rl = config_blocks.spc_offline_rl(batch_size=32, sft_batch_size=8)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 400  # rows decoded together
  c.eval.interval_problems = 100  # dev problems (one solution per held-out generator each)
  c.eval.sneaky_items = 400  # held-out correct steps the sneaky generator rewrites
  c.eval.search_problems = 250
  c.eval.search_retries = 5  # resamples of a step judged Incorrect (the paper's 5)
  c.eval.search_temperature = 1.0
  c.eval.search_max_steps = 6
  c.eval.search_step_tokens = 16
  c.eval.every = 0  # unused: evaluations run at round ends

  c.checkpoint = config_blocks.checkpointing(every=50)
  return config_blocks.apply_variants(c, arg, _shrink, VARIANTS, "configs/arith_spc.py")


def _shrink(c):
  """The same pipeline in under two minutes: for tests and quick checks."""
  c.log_every = 5
  c.task.eval_size = 16
  c.model.d_model, c.model.n_layers, c.model.d_ff = 64, 2, 128
  c.generator.steps, c.generator.clean_steps, c.generator.warmup_steps = 40, 20, 5
  for role in (c.roles.critic, c.roles.sneaky):
    role.sft.steps, role.sft.warmup_steps = 20, 5
  c.game.games_per_round = 32
  c.game.min_kept_games = 4
  c.rl.epochs, c.rl.batch_size, c.rl.sft_batch_size = 1, 8, 8
  c.eval.batch_size, c.eval.interval_problems, c.eval.sneaky_items, c.eval.search_problems = 72, 4, 16, 8
  c.checkpoint.every = 10


def _long_critic_sft(c):
  """The critic's round-0 SFT twice as long: a strong round-0 critic (docs/spc.md, "A stronger round-0 critic")."""
  c.roles.critic.sft.steps *= 2


VARIANTS = {**config_blocks.spc_variants(), "long_critic_sft": _long_critic_sft}
