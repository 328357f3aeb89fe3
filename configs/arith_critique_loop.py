"""Critique-in-the-loop (MathCritique) on the built-in arithmetic task, from scratch on a CPU.

  python -m scorejax.main --config=configs/arith_critique_loop.py --workdir=/tmp/critique_loop
  python -m scorejax.main --config=configs/arith_critique_loop.py:vanilla_si --workdir=/tmp/vanilla_si
  python -m scorejax.main --config=configs/arith_critique_loop.py:vanilla_si_n --workdir=/tmp/vanilla_si_n
  python -m scorejax.main --config=configs/arith_critique_loop.py:no_filter --workdir=/tmp/no_filter
  python -m scorejax.main --config=configs/arith_critique_loop.py:smoke --workdir=/tmp/critique_loop_smoke

A tiny Llama-style actor learns to solve the task (with a carry habit) and to
refine a solution given a critique; AutoMathCritique data is built from its
own samples (RG1-RG3) with feedback from an annotator with set mistakes,
kept when the actor's refinement with it is right; a critic is trained on it
(from the actor); then critiques are used at test time (refine, sequential
refinement) and in self-improvement. Measurements: docs/critique_loop.md.
`smoke` is the same pipeline shrunk to finish in under two minutes.
"""

import ml_collections

from scorejax import config_blocks


def get_config(arg: str = ""):
  c = config_blocks.built_in_run("critique_loop", eval_size=500)

  c.model = config_blocks.tiny_model()

  # The actor: solves (with a carry habit), self-corrects, refines given a critique.
  c.generator = config_blocks.arith_generator()
  c.generator.steps = 900  # at 600 (300 clean) seeds 1 and 2 learn the task half as well as seed 0 (docs)
  c.generator.clean_steps = 500
  c.generator.error_rate = 0.1
  c.generator.carry_slip_rate = 0.5  # the habit that makes the hard levels: k carries, all right 0.5**k

  # Held-out solutions the critic is scored on (ProcessBench format, one per generator and eval problem).
  c.solutions = ml_collections.ConfigDict()
  c.solutions.generators = ("policy", "writer")  # the actor's own samples, and the noisy writer it never saw
  c.solutions.writer_error_rate = 0.3  # writer: share with a random error, besides its carry habit
  c.solutions.carry_slip_rate = 0.5  # writer: its carry habit
  c.solutions.error_share = 0.6  # error maker (when listed): share with an injected error
  c.solutions.policy_temperature = 1.0  # the actor's samples

  # AutoMathCritique: flawed solutions from the actor, feedback, the refinement filter.
  c.critique_data = ml_collections.ConfigDict()
  c.critique_data.problems = 1000  # training problems; each source makes one candidate from each
  c.critique_data.sources = ("rg1", "rg2", "rg3")  # experiments/critique_data.py
  c.critique_data.rg1_temperature = 1.2  # whole solutions at a high temperature (right ones: the "correct" source)
  c.critique_data.rg2_temperature = 1.5  # resampling from a chosen step onward at a raised temperature
  c.critique_data.rg3_temperature = 1.0  # the actor's continuation after an injected error
  c.critique_data.filter_by_refinement = True  # keep a critique only if the actor's refinement with it is right
  c.critique_data.filter_keeps_redo = False  # and only if that refinement writes the critique's redo of the flagged step

  c.annotator = ml_collections.ConfigDict()  # the feedback writer's set mistakes (tasks/arith/critiques.py)
  c.annotator.slip_rate = 0.15  # per step: its redo result is off by a small slip
  c.annotator.carry_blind_rate = 0.5  # per carrying step: its redo drops the carry, as the actor's habit does

  c.critique = ml_collections.ConfigDict()
  c.critique.max_new_tokens = 160  # a 4-step critique is at most ~150 characters

  c.critic = ml_collections.ConfigDict()  # SFT of the critique model on the kept records, from the actor
  c.critic.steps = 300
  c.critic.batch_size = 32
  c.critic.learning_rate = 1e-3
  c.critic.warmup_steps = 30
  c.critic.grad_accum_steps = 1  # micro-batches per step

  c.difficulty = ml_collections.ConfigDict()  # the base actor's pass rate per question, in 5 levels
  c.difficulty.samples = 16
  c.difficulty.temperature = 1.0

  c.test_time = ml_collections.ConfigDict()
  c.test_time.temperature = 1.0  # the actor's answers (critiques are greedy)
  c.test_time.refine_temperature = 0.0  # the actor's refinements; 0: greedy (sampled ones keep its habit)
  c.test_time.max_samples = 32  # plain samples per problem (MV@k, pass@k up to k = 32)
  c.test_time.chains = (1, 2, 4)  # critique-and-refine chains per problem, majority-voted
  c.test_time.sequential_rounds = 3  # sequential mode: critique and refine until accepted, at most this often

  c.self_improve = ml_collections.ConfigDict()
  c.self_improve.mode = "critique"  # "critique": the critic in the loop; "vanilla": correct samples only
  c.self_improve.iterations = 3
  c.self_improve.questions = 512  # training questions, the same each iteration
  c.self_improve.samples = 4  # answers sampled per question (critique mode)
  c.self_improve.refine_budget = 4  # wrong answers critiqued and refined per question, at most
  c.self_improve.refine_rounds = 1  # critique-and-refine rounds per wrong answer (until right)
  c.self_improve.critic_refresh = False  # from iteration 2: critique data from the current actor, critic retrained
  c.self_improve.vanilla_budget = "loop"  # vanilla mode's samples per question: "loop" N + refine_budget, "samples" N
  c.self_improve.temperature = 1.0  # the answers' sampling temperature
  c.self_improve.refine_temperature = 0.0  # the refinements'; 0: greedy
  c.self_improve.steps = 100  # SFT steps per iteration, from the base actor
  c.self_improve.batch_size = 32
  c.self_improve.replay_share = 0.25  # of its steps: the base SFT's refine rows, so the actor keeps that skill
  c.self_improve.learning_rate = 1e-3
  c.self_improve.warmup_steps = 10
  c.self_improve.grad_accum_steps = 1  # micro-batches per step
  c.self_improve.order_seed = 0  # the fine-tunes' row order and replay draws; another value: the same rows, reordered

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 400  # rows decoded together
  c.eval.samples = 4  # sampled answers per held-out problem for accuracy_sampled
  c.eval.temperature = 1.0
  c.eval.dev_problems = 200  # dev-split problems (greedy accuracy per iteration: what settings are tuned on)

  c.checkpoint = config_blocks.checkpointing(every=50)
  return config_blocks.apply_variants(c, arg, _shrink, VARIANTS, "configs/arith_critique_loop.py")


def _shrink(c):
  """The same pipeline in under two minutes: for tests and quick checks."""
  c.log_every = 5
  c.task.eval_size = 24
  c.model.d_model, c.model.n_layers, c.model.d_ff = 64, 2, 128
  c.generator.steps, c.generator.clean_steps, c.generator.warmup_steps = 150, 100, 10
  c.critique_data.problems = 24
  c.critique_data.filter_by_refinement = False  # a 40-step actor refines too few right to keep any
  c.critique.max_new_tokens = 96
  c.critic.steps, c.critic.warmup_steps = 20, 5
  c.difficulty.samples = 4
  c.test_time.max_samples, c.test_time.chains, c.test_time.sequential_rounds = 4, (1, 2), 2
  c.self_improve.iterations, c.self_improve.questions, c.self_improve.samples = 2, 16, 2
  c.self_improve.refine_budget, c.self_improve.steps, c.self_improve.warmup_steps = 2, 10, 2
  c.eval.batch_size, c.eval.samples, c.eval.dev_problems = 72, 2, 8
  c.checkpoint.every = 10


VARIANTS = config_blocks.critique_loop_variants()
