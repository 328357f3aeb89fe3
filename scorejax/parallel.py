"""Device mesh, partition rules and multi-host start-up: the one home of sharding.

A run's sharding is data in its config:

  config.mesh = {"data": -1, "fsdp": 1, "tensor": 1}   # -1: the remaining devices
  config.partition_rules = (
      (r"embed_tokens$", ("tensor", "fsdp")),
      (r"q_proj/kernel$", ("fsdp", "tensor")),
      ...
  )

Rules are regular expressions searched in the '/'-joined parameter path; the
first match gives the mesh axes of each dimension (None: not split). The
batch of every activation is split over the data-parallel axes `data` and
`fsdp`; `fsdp` also splits the parameters (ZeRO-3 style), `tensor` splits
heads and hidden units (Megatron style).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.experimental import mesh_utils
from jax.sharding import PartitionSpec as P

if TYPE_CHECKING:
  from scorejax.models.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Megatron-style tensor parallelism over heads / hidden units, FSDP over d_model.
DEFAULT_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed_tokens$", ("tensor", "fsdp")),
    (r"lm_head$", ("tensor", "fsdp")),
    (r"self_attn/(q|k|v)_proj/kernel$", ("fsdp", "tensor")),
    (r"self_attn/(q|k|v)_proj/bias$", ("tensor",)),
    (r"self_attn/o_proj/kernel$", ("tensor", "fsdp")),
    (r"self_attn/o_proj/bias$", (None,)),
    (r"mlp/(gate|up)_proj/kernel$", ("fsdp", "tensor")),
    (r"mlp/(gate|up)_proj/bias$", ("tensor",)),
    (r"mlp/down_proj/kernel$", ("tensor", "fsdp")),
    (r"mlp/down_proj/bias$", (None,)),
    (r"(norm|layernorm)/scale$", (None,)),
    # LoRA adapters (lora_a [in, r], lora_b [r, out]): in and out split as their projection's kernel, r whole
    (r"(self_attn/(q|k|v)_proj|mlp/(gate|up)_proj)/lora_a$", ("fsdp", None)),
    (r"(self_attn/(q|k|v)_proj|mlp/(gate|up)_proj)/lora_b$", (None, "tensor")),
    (r"(self_attn/o_proj|mlp/down_proj)/lora_a$", ("tensor", None)),
    (r"(self_attn/o_proj|mlp/down_proj)/lora_b$", (None, "fsdp")),
)


# ----------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves a {axis: size} mapping (one size may be -1) against a device count."""
  unknown = set(axes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
  sizes = {a: int(axes.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {free}")
  bad = [a for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {sizes}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(
          f"config.mesh={dict(axes)}: the fixed axes multiply to {fixed}, which does not divide "
          f"the {num_devices} devices")
    sizes[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(
        f"config.mesh={dict(axes)} needs {fixed} devices but {num_devices} are available; "
        "set one axis to -1 to use the rest")
  return sizes


def make_mesh(axes: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor) over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(axes, len(devices))
  shape = tuple(sizes[a] for a in MESH_AXES)
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # fake CPU devices and odd topologies: plain row-major order
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def check_model_fits(config: "ModelConfig", mesh: Mesh) -> None:
  """Raises before any compute when the tensor axis cannot split the heads."""
  tp = mesh.shape["tensor"]
  for name in ("n_heads", "n_kv_heads", "d_ff"):
    value = getattr(config, name)
    if value % tp:
      raise ValueError(
          f"mesh axis tensor={tp} does not divide model {name}={value}; "
          f"choose a tensor size that divides n_heads={config.n_heads} and n_kv_heads={config.n_kv_heads}")


# ----------------------------------------------------------------------------
# Partition rules
# ----------------------------------------------------------------------------


def path_str(path) -> str:
  """'layers/0/self_attn/q_proj/kernel' for a pytree key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def spec_for(path: str, shape: Sequence[int], mesh: Mesh, rules) -> P:
  """The PartitionSpec of one parameter: the first matching rule, fitted to its shape.

  An axis that does not divide its dimension (a tiny vocabulary, a bias of odd
  size) is dropped for that dimension: the tensor is replicated there rather
  than padded.
  """
  for pattern, axes in rules:
    if re.search(pattern, path):
      break
  else:
    raise ValueError(f"no partition rule matches parameter {path!r} of shape {tuple(shape)}; "
                     "add a (regex, axes) entry to config.partition_rules")
  axes = tuple(axes)
  if len(axes) > len(shape):
    raise ValueError(f"partition rule {pattern!r} gives {len(axes)} axes {axes} to parameter {path!r} "
                     f"of rank {len(shape)}")
  fitted = []
  for dim, axis in zip(shape, axes + (None,) * (len(shape) - len(axes))):
    names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
    size = math.prod(mesh.shape[n] for n in names)
    if size > 1 and dim % size:
      logging.info("replicating dim of size %d of %s: mesh axes %s (size %d) do not divide it",
                   dim, path, names, size)
      names = ()
    fitted.append(None if not names else names[0] if len(names) == 1 else names)
  return P(*fitted)


def rules_from_config(config) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
  """config.partition_rules as (regex, axes) pairs, checked; empty or absent: DEFAULT_RULES.

  In a config file: `c.partition_rules = ((r"embed_tokens$", ("tensor", "fsdp")), ...)`; the first
  rule whose regex is found in a parameter's path gives the mesh axis of each dimension.
  """
  given = config.get("partition_rules") or ()
  rules = []
  for i, rule in enumerate(given):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"config.partition_rules[{i}]={rule!r}: expected (regex, axes), e.g. "
                       "(r'mlp/up_proj/kernel$', ('fsdp', 'tensor'))")
    pattern, axes = rule
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"config.partition_rules[{i}]: {pattern!r} is not a regular expression ({e})") from None
    axes = tuple(axes)
    for axis in axes:
      names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
      unknown = [n for n in names if n not in MESH_AXES]
      if unknown:
        raise ValueError(f"config.partition_rules[{i}] ({pattern!r}) names mesh axes {unknown}; expected "
                         f"some of {MESH_AXES} or None")
    rules.append((pattern, axes))
  return tuple(rules) or DEFAULT_RULES


def param_shardings(abstract_params, mesh: Mesh, rules=DEFAULT_RULES):
  """A pytree of NamedShardings matching `abstract_params` (arrays or ShapeDtypeStructs)."""
  def one(path, leaf):
    return NamedSharding(mesh, spec_for(path_str(path), leaf.shape, mesh, rules))
  return jax.tree_util.tree_map_with_path(one, abstract_params)


def batch_sharding(mesh: Mesh, rank: int = 2) -> NamedSharding:
  """Rows over the data-parallel axes, everything else replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (rank - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def shard_batch(batch, mesh: Mesh):
  """Places a host batch (a pytree of arrays with a leading batch dim) over the mesh."""
  dp = data_parallel_size(mesh)
  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.device_put(x, replicated(mesh))
    if x.shape[0] % dp:
      raise ValueError(f"batch dimension {x.shape[0]} is not divisible by the data-parallel size {dp} "
                       f"(mesh {dict(mesh.shape)})")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree.map(put, batch)


# ----------------------------------------------------------------------------
# Multi-host start-up
# ----------------------------------------------------------------------------

_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def initialize_distributed(enable: bool | None = None) -> None:
  """Starts `jax.distributed` when the run spans several hosts; a no-op otherwise.

  enable=None decides from the environment: a coordinator address, a SLURM
  job with several tasks, or a multi-host TPU slice (TPU_WORKER_HOSTNAMES with
  more than one host). Must run before any other JAX call.
  """
  if enable is None:
    env = os.environ
    enable = (
        any(env.get(k) for k in _COORDINATOR_ENV)
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1)
  if not enable:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
