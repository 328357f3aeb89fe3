"""Blocks that configs share: the tiny built-in model, checkpointing, HF-model meshes, `name:arg` variants.

A config file stays a schema read at a glance: it builds its own blocks with
one line of reason per knob and takes the common ones from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ml_collections


# Mesh axes as data for an HF checkpoint on one host: parameters, gradients and Adam state are
# sharded over one FSDP axis (a 1-7B model with its Adam state fits a v5e chip's 16 GB only when
# split); -1 takes the remaining devices.
HF_MESHES = {
    "": {"data": 1, "fsdp": -1, "tensor": 1},
    "tpu": {"data": 1, "fsdp": -1, "tensor": 1},  # v4-8 (4 chips) or v5e-8 (8 chips), one host
    "gpu": {"data": 1, "fsdp": -1, "tensor": 1},  # 8 GPUs on one host, NVLink between all
}


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
  return m


def arith_generator() -> ml_collections.ConfigDict:
  """The built-in task's solver, trained from scratch (`critic_data.BuiltinCriticData.generator_batch`): it
  solves ([x, y1, p, y2], both attempts trained, with a carry habit) and refines given a critique."""
  g = ml_collections.ConfigDict()
  g.steps = 300  # SFT steps
  g.batch_size = 32
  g.learning_rate = 3e-3
  g.warmup_steps = 50
  g.clean_steps = 150  # first steps: right solutions (the model learns the task before its habit)
  g.clean_error_rate = 0.3  # during clean_steps: random errors only, so there is something to refine
  g.error_rate = 0.2  # share of solutions with a random error (after clean_steps)
  g.carry_slip_rate = 0.6  # the habit: a carry or borrow is dropped this often
  g.max_new_tokens = 48  # per answer (a 3-step solution is at most ~36 characters)
  g.refine_share = 0.5  # share of steps that refine a solution given its critique (the rest: two attempts)
  return g


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
