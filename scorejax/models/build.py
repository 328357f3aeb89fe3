"""A run's model from its config block: an HF checkpoint, or a preset trained from scratch, created sharded."""

from __future__ import annotations

import jax
import ml_collections

from scorejax import parallel
from scorejax.models import hf, lora
from scorejax.models.config import LoraConfig, tiny_arith
from scorejax.models.lm import LM, Params


def build_model(c: ml_collections.ConfigDict, tokenizer, mesh, seed: int,
                rules=parallel.DEFAULT_RULES) -> tuple[LM, Params]:
  """(LM, params) from a `model` config block, params in their shardings on `mesh`.

  `c.hf_dir` loads an HF checkpoint straight into the shardings; otherwise the
  preset is initialised from `seed` (the tokenizer gives its vocabulary).
  `c.lora.rank > 0` adds LoRA adapters (`models/lora.py`), created sharded.
  """
  lm, params = _base_model(c, tokenizer, mesh, seed, rules)
  block = c.get("lora")
  if block is None or not block.rank:
    return lm, params
  config = LoraConfig(rank=block.rank, alpha=block.alpha, targets=tuple(block.targets), dropout=block.dropout)
  return lora.with_adapters(lm, params, config, jax.random.fold_in(jax.random.key(seed), 7), mesh, rules)


def _base_model(c, tokenizer, mesh, seed, rules) -> tuple[LM, Params]:
  overrides = dict(param_dtype=c.param_dtype, dtype=c.dtype, remat=c.remat)
  if c.hf_dir:
    lm, params = hf.load_hf(c.hf_dir, mesh, rules, **overrides)
    parallel.check_model_fits(lm.config, mesh)
    return lm, params
  if c.preset != "tiny_arith":
    raise ValueError(f"config.model.preset={c.preset!r}; expected 'tiny_arith' or set config.model.hf_dir")
  lm = LM.from_config(tiny_arith(tokenizer.vocab_size, d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads,
                                 n_kv_heads=c.n_kv_heads, head_dim=c.d_model // c.n_heads, d_ff=c.d_ff,
                                 eos_token_id=tokenizer.eos_id, **overrides))
  parallel.check_model_fits(lm.config, mesh)
  with jax.set_mesh(mesh):
    shardings = parallel.param_shardings(lm.abstract_params(), mesh, rules)
    params = jax.jit(lm.init, out_shardings=shardings)(jax.random.key(seed))
  return lm, params
