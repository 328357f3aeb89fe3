"""Blocks that configs share: the tiny built-in model, checkpointing, HF-model meshes, `name:arg` variants;
and reading a config file with overrides, as the main job does (for the sweep, the notebooks, the tests).

A config file stays a schema read at a glance: it builds its own blocks with
one line of reason per knob and takes the common ones from here.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping

import ml_collections

from scorejax.models.config import LORA_TARGETS


# Mesh axes as data for an HF checkpoint on one host: parameters, gradients and Adam state are
# sharded over one FSDP axis (a 1-7B model with its Adam state fits a v5e chip's 16 GB only when
# split); -1 takes the remaining devices.
HF_MESHES = {
    "": {"data": 1, "fsdp": -1, "tensor": 1},
    "tpu": {"data": 1, "fsdp": -1, "tensor": 1},  # v4-8 (4 chips) or v5e-8 (8 chips), one host
    "gpu": {"data": 1, "fsdp": -1, "tensor": 1},  # 8 GPUs on one host, NVLink between all
}


def hf_run(experiment: str, host: str) -> ml_collections.ConfigDict:
  """An HF-checkpoint config's common head: the run's knobs on `host`'s mesh ("", "tpu" or "gpu")."""
  c = ml_collections.ConfigDict()
  c.experiment = experiment  # scorejax.experiments.<experiment>.run(config, workdir)
  c.seed = 0  # data order and sampling keys
  c.mesh = dict(HF_MESHES[host])
  c.partition_rules = ()  # (regex, mesh axes) per parameter path, first match wins; empty: parallel.DEFAULT_RULES
  c.log_every = 1  # steps between metrics.jsonl records (a step is a whole batch)
  c.tensorboard = True  # also write TensorBoard event files
  c.logprob_chunk = 256  # sequence positions per chunk: bounds the [B, chunk, vocab] logits
  return c


def hf_model(model_dir: str) -> ml_collections.ConfigDict:
  """An HF checkpoint in bfloat16, activations recomputed in the backward pass (rows of thousands of tokens)."""
  m = ml_collections.ConfigDict()
  m.hf_dir = model_dir  # HF checkpoint directory (config.json + safetensors); read locally
  m.preset = ""  # unused while hf_dir is set: the checkpoint defines the architecture
  m.param_dtype = "bfloat16"
  m.dtype = "bfloat16"  # compute dtype
  m.remat = True  # recompute activations in the backward pass
  m.lora = lora()  # --config.model.lora.rank=16: train adapters, not every parameter
  return m


def built_in_run(experiment: str, eval_size: int) -> ml_collections.ConfigDict:
  """A built-in-task config's common head: the run's knobs and the arithmetic task (2-3 '+'/'-' steps)."""
  c = ml_collections.ConfigDict()
  c.experiment = experiment  # scorejax.experiments.<experiment>.run(config, workdir)
  c.seed = 0  # model init, data order and sampling keys
  c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}  # -1: the remaining devices
  c.partition_rules = ()  # (regex, mesh axes) per parameter path, first match wins; empty: parallel.DEFAULT_RULES
  c.log_every = 10  # steps between metrics.jsonl records
  c.tensorboard = True  # also write TensorBoard event files
  c.logprob_chunk = 64  # sequence positions per chunk of the log-prob computation

  c.task = ml_collections.ConfigDict()
  c.task.name = "arith"  # the built-in arithmetic task
  c.task.difficulty = ml_collections.ConfigDict(dict(  # scorejax.tasks.arith.ArithConfig knobs
      min_steps=2, max_steps=3,  # operations per problem
      max_start=9, max_add=9, max_mul=3,  # start value, +/- operand, * operand ranges
      max_value=20,  # every intermediate result stays in 0..max_value
      ops="+-",  # operations a problem may use (a subset of "+-*")
      dev_fraction=0.1,  # the dev split: held out like eval, what settings are tuned on
  ))
  c.task.phrasing = "symbols"  # "symbols" or "words"
  c.task.eval_size = eval_size  # held-out problems
  c.task.eval_seed = 1234  # which held-out problems
  c.task.dev_seed = 1234  # which dev-split problems form the dev set
  return c


def tiny_model() -> ml_collections.ConfigDict:
  """The built-in task's model (models.tiny_arith), trained from scratch; set hf_dir to load a checkpoint."""
  m = ml_collections.ConfigDict()
  m.hf_dir = ""  # an HF checkpoint directory; empty: the preset below, from scratch
  m.preset = "tiny_arith"
  m.d_model = 128
  m.n_layers = 4
  m.n_heads = 4
  m.n_kv_heads = 2
  m.d_ff = 384
  m.param_dtype = "float32"
  m.dtype = "float32"
  m.remat = False
  m.lora = lora()
  return m


def lora() -> ml_collections.ConfigDict:
  """LoRA adapters on the projections (`models/lora.py`); rank 0 trains every parameter instead."""
  b = ml_collections.ConfigDict()
  b.rank = 0  # r; 0: no adapters
  b.alpha = 16.0  # the update is scaled by alpha / r
  b.targets = LORA_TARGETS  # regexes searched in projection paths such as "layers/3/self_attn/q_proj"
  b.dropout = 0.0  # on each adapter's input, in training steps only
  return b


def arith_generator() -> ml_collections.ConfigDict:
  """The built-in task's solver, trained from scratch (`critic_data.BuiltinCriticData.generator_batch`): it
  solves ([x, y1, p, y2], both attempts trained, with a carry habit) and refines given a critique."""
  g = ml_collections.ConfigDict()
  g.steps = 300  # SFT steps
  g.batch_size = 32
  g.learning_rate = 3e-3
  g.warmup_steps = 50
  g.grad_accum_steps = 1  # micro-batches per step
  g.clean_steps = 150  # first steps: right solutions (the model learns the task before its habit)
  g.clean_error_rate = 0.3  # during clean_steps: random errors only, so there is something to refine
  g.error_rate = 0.2  # share of solutions with a random error (after clean_steps)
  g.carry_slip_rate = 0.6  # the habit: a carry or borrow is dropped this often
  g.max_new_tokens = 48  # per answer (a 3-step solution is at most ~36 characters)
  g.refine_share = 0.5  # share of steps that refine a solution given its critique (the rest: two attempts)
  return g


def critique_loop_variants() -> dict[str, Callable]:
  """Critique-in-the-loop's variants, the same on the built-in task and on real data."""
  def vanilla_si(c):  # self-improvement without the critic, at the loop's whole actor budget
    c.self_improve.mode = "vanilla"

  def vanilla_si_n(c):  # the same, at the loop's N samples per question (the paper's comparison at equal N)
    c.self_improve.mode, c.self_improve.vanilla_budget = "vanilla", "samples"

  def no_filter(c):  # the critic trains on every parseable critique, refined right or not
    c.critique_data.filter_by_refinement = False

  def critic_refresh(c):  # from iteration 2 on, the critic retrained on the current actor's own errors
    c.self_improve.critic_refresh = True
  return {"vanilla_si": vanilla_si, "vanilla_si_n": vanilla_si_n, "no_filter": no_filter,
          "critic_refresh": critic_refresh}


def spc_role(max_new_tokens: int, rl_learning_rate: float, **sft) -> ml_collections.ConfigDict:
  """One SPC role: its own checkpoint or the base, its output budget, its round-0 SFT (steps, batch_size,
  learning_rate, warmup_steps) and its offline-RL learning rate."""
  r = ml_collections.ConfigDict()
  r.hf_dir = ""  # empty: starts from the base model; a directory: the role's own HF checkpoint (same tokenizer)
  r.max_new_tokens = max_new_tokens  # budget of one output
  r.sft = ml_collections.ConfigDict(sft)
  r.rl_learning_rate = rl_learning_rate
  return r


def spc_offline_rl(batch_size: int, sft_batch_size: int) -> ml_collections.ConfigDict:
  """SPC's offline RL on each round's records (objectives/spc.py), with the spec's clip, SFT term and KL."""
  rl = ml_collections.ConfigDict()
  rl.epochs = 3  # passes over the round's records (the released critic RL: 3)
  rl.batch_size = batch_size  # game records per step
  rl.sft_batch_size = sft_batch_size  # round-0 SFT rows per step, for the 0.15 x SFT term
  rl.warmup_steps = 5
  rl.grad_clip_norm = 1.0
  rl.clip_eps = 0.2
  # the clipped ratio: one mean-token ratio per record (released), "token": one per token, "none": no ratio, no clip
  rl.ratio = "sequence"
  rl.sft_coef = 0.15
  # The round's records learned from: "all" (SPC: +1 and -1), "wins" (those rewarded above 0 alone) or
  # "balanced_wins" (the wins, the critic's cut to as many Correct as Incorrect verdicts, at least
  # game.min_kept_games of the commoner). The gradient steps are set by all of them either way
  # (epochs x records / batch_size): equal budgets.
  rl.records = "all"
  # The spec's 0. The released script passes --lm_kl_coeff 0.1, but its trainer has the KL subtraction
  # commented out, so the released run applied none.
  rl.kl_coef = 0.0
  return rl


def spc_variants() -> dict[str, Callable]:
  """SPC's ablations, the same on the built-in task and on real data."""
  def unbalanced(c):  # every decided game kept, whichever side wins more
    c.game.balance = False

  def unpaired(c):  # the critic's records hold only its judgements of sneaky steps
    c.game.paired = False

  def earlier_critic(c):  # the sneaky generator plays the critic of the round before
    c.game.critic_lag = 1

  def sft_wins(c):  # SFT on the won records alone (no -1 records, no ratio, no clip), as many steps
    c.rl.records, c.rl.ratio = "wins", "none"

  def sft_balanced_wins(c):  # the same, the critic's wins cut to as many Correct as Incorrect verdicts
    c.rl.records, c.rl.ratio = "balanced_wins", "none"
  return {"unbalanced": unbalanced, "unpaired": unpaired, "earlier_critic": earlier_critic, "sft_wins": sft_wins,
          "sft_balanced_wins": sft_balanced_wins}


def score_selection() -> ml_collections.ConfigDict:
  """SCoRe's checkpoint selection (the paper keeps the checkpoint with the highest training reward): every
  `every` RL steps the training reward r1 + r2 of the policy's own episodes, averaged over the last
  `window` steps, is compared with the best so far; each RL stage is evaluated at its last and its best."""
  s = ml_collections.ConfigDict()
  s.window = 10  # RL steps the training reward is averaged over
  s.every = 10  # RL steps between candidates (and each stage's last step)
  s.next_stage = "best"  # the stage1 checkpoint Stage II starts from: "best" (as the paper) or "last"
  return s


def score_inference(problems: int) -> ml_collections.ConfigDict:
  """SCoRe's inference-time evaluation of the base and the final model (inference.json): greedy Acc@t over
  `attempts` sequential attempts, and self-consistency at equal sampled tokens over up to `episodes`
  two-attempt episodes (majority of their y2) against first attempts alone."""
  s = ml_collections.ConfigDict()
  s.attempts = 4  # sequential attempts, the instruction appended after each
  s.episodes = 8  # most episodes per problem (k = 1, 2, 4, ...); the parallel peer samples up to twice as many
  s.temperature = 1.0  # the sampled episodes and first attempts
  s.problems = problems  # first held-out problems evaluated (0: all)
  return s


def sandbox() -> ml_collections.ConfigDict:
  """How generated programs run against their tests (`scorejax.sandbox.SandboxConfig`, field by field)."""
  b = ml_collections.ConfigDict()
  b.timeout_s = 10.0  # wall clock per program and its tests
  b.memory_mb = 1024  # address space
  b.output_bytes = 1 << 16  # stdout + stderr kept; more kills the program
  b.file_size_mb = 16  # largest file a program may write in its directory
  b.open_files = 64
  b.processes = 64  # enforced for a non-root user (root's workers run as nobody)
  b.isolation = "auto"  # bwrap, unshare or rlimits; auto: the first that works here (recorded in eval.json)
  b.workers = 0  # programs run at once; 0: one per CPU
  b.python_guard = True  # no process creation, sockets or writes outside its directory, inside the interpreter
  return b


def checkpointing(every: int) -> ml_collections.ConfigDict:
  k = ml_collections.ConfigDict()
  k.every = every  # steps between checkpoints
  k.max_to_keep = 2
  k.async_save = True
  return k


def apply_variants(c: ml_collections.ConfigDict, arg: str, shrink: Callable, variants: Mapping[str, Callable],
                   config_file: str) -> ml_collections.ConfigDict:
  """`arg` is comma-separated variant names; "smoke" (the shrunken pipeline) applies first, the rest after."""
  parts = [p for p in arg.split(",") if p]
  for part in sorted(parts, key=lambda p: p != "smoke"):  # shrink first, then change
    if part == "smoke":
      shrink(c)
    elif part in variants:
      variants[part](c)
    else:
      raise ValueError(f"{config_file}: unknown variant {part!r}; expected 'smoke' or one of "
                       f"{sorted(variants)} (comma-separated)")
  return c


# ----------------------------------------------------------------------------
# Reading a config file, as the main job does
# ----------------------------------------------------------------------------


def config_module(path: str):
  """The module of a config file (its get_config, its VARIANTS)."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config_arg: str) -> ml_collections.ConfigDict:
  """The ConfigDict `python -m scorejax.main --config=config_arg` starts from (before any override)."""
  path, _, arg = config_arg.partition(":")
  return config_module(path).get_config(arg)


def set_keys(config: ml_collections.ConfigDict, changes: Mapping[str, object],
             where: str = "config") -> ml_collections.ConfigDict:
  """config with each dotted key ("stage1.learning_rate") set to its value; a key it lacks is a KeyError."""
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise KeyError(f"{where}: no key {key!r}")
    node[leaf] = value
  return config
