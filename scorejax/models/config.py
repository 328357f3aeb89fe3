"""Model configuration: one frozen dataclass for every supported decoder family."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

FAMILIES = ("llama", "qwen2", "qwen3")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3.x frequency-dependent RoPE scaling (HF `rope_type="llama3"`)."""

  factor: float = 8.0  # how much the context was stretched
  low_freq_factor: float = 1.0  # wavelengths above ctx/low are divided by `factor`
  high_freq_factor: float = 4.0  # wavelengths below ctx/high are left alone
  original_max_position_embeddings: int = 8192  # context length of pre-training


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer of the Llama / Qwen2 / Qwen3 families.

  The families differ only in data: Qwen2 has biases on q/k/v, Qwen3 an
  RMSNorm over each head's queries and keys (no biases), and the checkpoints
  differ in RoPE base, norm epsilon and tying of the embeddings.
  """

  family: str  # "llama", "qwen2" or "qwen3": selects the HF architecture on export
  vocab_size: int  # V
  d_model: int  # D, HF hidden_size
  n_layers: int  # L
  n_heads: int  # H, query heads
  n_kv_heads: int  # K, key/value heads (grouped-query attention when K < H)
  head_dim: int  # per-head width
  d_ff: int  # F, SwiGLU hidden width (HF intermediate_size)
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None  # None: plain RoPE
  max_position_embeddings: int = 2048
  tie_embeddings: bool = False  # logits use the input embedding table
  qkv_bias: bool = False  # Qwen2: True
  qk_norm: bool = False  # Qwen3: True (RMSNorm over each head's q and k, before RoPE)
  attention_out_bias: bool = False  # Llama `attention_bias` also biases o_proj
  mlp_bias: bool = False
  param_dtype: str = "float32"  # storage dtype of the parameters
  dtype: str = "float32"  # compute dtype of activations; logits are always fp32
  remat: bool = False  # rematerialize each layer in the backward pass
  initializer_range: float = 0.02  # std of the normal init for a model trained from scratch
  bos_token_id: int | None = None  # carried for export; tokenizers own the ids at run time
  eos_token_id: int | tuple[int, ...] | None = None

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"model family {self.family!r} is not supported; expected one of {FAMILIES}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} "
          "for grouped-query attention")
    if self.qk_norm != (self.family == "qwen3"):
      raise ValueError(f"qk_norm={self.qk_norm} with family={self.family!r}: the per-head q/k norm is "
                       "Qwen3's, and every Qwen3 layer has it (set qk_norm=True exactly for family 'qwen3')")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {sorted(_DTYPES)}")

  @property
  def jnp_param_dtype(self) -> Any:
    return _DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self) -> Any:
    return _DTYPES[self.dtype]

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count, embeddings included (tied embeddings counted once)."""
    d, f, hd = self.d_model, self.d_ff, self.head_dim
    q, kv = self.n_heads * hd, self.n_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d
    if self.qkv_bias:
      attn += q + 2 * kv
    if self.attention_out_bias:
      attn += d
    if self.qk_norm:
      attn += 2 * hd
    mlp = 3 * d * f + (2 * f + d if self.mlp_bias else 0)
    per_layer = attn + mlp + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.n_layers * per_layer + embed + d


def tiny_arith(vocab_size: int, **overrides) -> ModelConfig:
  """The small model for the built-in arithmetic task, trained from scratch.

  About 0.8M parameters: big enough to learn multi-step arithmetic with
  mistakes, small enough to train in minutes on two CPU cores.
  """
  base = dict(
      family="llama", vocab_size=vocab_size, d_model=128, n_layers=4, n_heads=4,
      n_kv_heads=2, head_dim=32, d_ff=384, rope_theta=10_000.0, max_position_embeddings=512,
      tie_embeddings=True, rms_norm_eps=1e-6)
  base.update(overrides)
  return ModelConfig(**base)
