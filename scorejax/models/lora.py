"""LoRA on plain parameter pytrees: adapters beside a frozen base, split and joined by path.

With `ModelConfig.lora` set, every targeted projection's parameter dict holds
`lora_a` [in, r] and `lora_b` [r, out] beside its `kernel` (`transformer.Linear`
reads them unmerged). A run keeps one copy of the base:

  adapters = init_adapters(config, base_params, key)   # B = 0: the model starts as the base
  params = combine(base_params, adapters)               # no copy: the same arrays, one dict
  frozen, trainable = split(params)                     # what `phases.PhaseRunner` does
  merged_lm, merged_params = merge(lm, params)          # W + (alpha / r) A B, for export

`phases.PhaseRunner` trains `trainable` alone (with `dropout`, on masks
seeded per batch row by (seed, phase, step)) (the optimizer state, the
gradients and the checkpoints hold the adapters only) and passes `frozen` to
the step as a constant argument that is never donated, so the policy, the
reference policy at the start of a stage (the same base arrays with that
stage's starting adapters) and the sampler all read the one base.

Why not qwix (the JAX LoRA / quantization library Tunix uses): it adds
adapters by intercepting the dot_generals of a Flax module while it runs, as
module state; here a model is pure functions of a plain dict (`models/lm.py`)
sharded by regex rules over parameter paths, and the reference policy is
the same dict with other adapters. Adapters as two more leaves of that dict
keep every path (sharding, checkpoints, export) one code path.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from scorejax import parallel
from scorejax.models.config import LoraConfig, ModelConfig
from scorejax.models.lm import LM, Params
from scorejax.models.transformer import lora_a_init, lora_targets

ADAPTERS = ("lora_a", "lora_b")


def _walk(tree, keys=()):
  """(keys to each dict holding a `kernel`, that dict), depth first; keys as the tree has them (layer
  indices are ints)."""
  if isinstance(tree, dict):
    if "kernel" in tree:
      yield keys, tree
    for key, value in tree.items():
      yield from _walk(value, keys + (key,))


def init_adapters(config: ModelConfig, params: Params, key: jax.Array) -> Params:
  """Adapters for the projections of `params` that config.lora targets: A random, B zero; a tree of
  the same nesting holding only lora_a / lora_b leaves."""
  if config.lora is None:
    raise ValueError("init_adapters: the model config has no lora block")
  out: dict = {}
  targets = [(keys, node) for keys, node in _walk(params) if lora_targets(config, "/".join(map(str, keys)))]
  if not targets:
    raise ValueError(f"lora targets {config.lora.targets} match no projection (paths look like "
                     "'layers/0/self_attn/q_proj')")
  dtype = config.jnp_param_dtype
  for (keys, node), k in zip(targets, jax.random.split(key, len(targets))):
    d_in, d_out = node["kernel"].shape
    leaf = out
    for part in keys:
      leaf = leaf.setdefault(part, {})
    leaf["lora_a"] = lora_a_init(k, d_in, config.lora.rank, dtype)
    leaf["lora_b"] = jnp.zeros((config.lora.rank, d_out), dtype)
  return out


def _filter(tree, keep):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      inner = _filter(value, keep)
      if inner:
        out[key] = inner
    elif keep(key):
      out[key] = value
  return out


def split(params: Params) -> tuple[Params, Params]:
  """(frozen base, trainable adapters): the same arrays, in two dicts of the same nesting."""
  return _filter(params, lambda k: k not in ADAPTERS), _filter(params, lambda k: k in ADAPTERS)


def combine(frozen: Params, adapters: Params) -> Params:
  """The one params dict of a base and its adapters (no array is copied)."""
  out = dict(frozen)
  for key, value in adapters.items():
    out[key] = combine(frozen.get(key, {}), value) if isinstance(value, dict) else value
  return out


def with_adapters(lm: LM, params: Params, lora: LoraConfig, key: jax.Array, mesh=None, rules=None
                  ) -> tuple[LM, Params]:
  """(the LoRA model, base params + fresh adapters), the adapters created in their shardings on `mesh`."""
  lora_lm = LM.from_config(dataclasses.replace(lm.config, lora=lora))
  init = lambda k: init_adapters(lora_lm.config, params, k)
  if mesh is None:
    return lora_lm, combine(params, jax.jit(init)(key))
  abstract = jax.eval_shape(init, key)
  shardings = parallel.param_shardings(abstract, mesh, rules or parallel.DEFAULT_RULES)
  with jax.set_mesh(mesh):
    adapters = jax.jit(init, out_shardings=shardings)(key)
  return lora_lm, combine(params, adapters)


def merge(lm: LM, params: Params) -> tuple[LM, Params]:
  """(the model without LoRA, params with each adapted kernel W + (alpha / r) A B): what export writes."""
  lora = lm.config.lora
  if lora is None:
    return lm, params
  frozen, adapters = split(params)

  def merged(tree, extra):
    out = dict(tree)
    for key, value in extra.items():
      if "lora_a" in value:
        kernel = tree[key]["kernel"]
        update = jnp.dot(value["lora_a"].astype(jnp.float32), value["lora_b"].astype(jnp.float32)) * lora.scale
        out[key] = dict(tree[key], kernel=(kernel.astype(jnp.float32) + update).astype(kernel.dtype))
      else:
        out[key] = merged(tree[key], value)
    return out

  return LM.from_config(dataclasses.replace(lm.config, lora=None)), merged(frozen, adapters)
