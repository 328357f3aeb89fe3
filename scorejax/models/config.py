"""Model configuration: one frozen dataclass for every supported decoder family."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
GEMMA = ("gemma2", "gemma3")
LAYER_TYPES = ("full_attention", "sliding_attention")
ACTIVATIONS = ("silu", "gelu_tanh")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE scaling: Llama 3.x's frequency-dependent one (HF `rope_type="llama3"`), or "linear" (every
  frequency divided by `factor`: Gemma 3's global layers)."""

  factor: float = 8.0  # how much the context was stretched
  low_freq_factor: float = 1.0  # llama3: wavelengths above ctx/low are divided by `factor`
  high_freq_factor: float = 4.0  # llama3: wavelengths below ctx/high are left alone
  original_max_position_embeddings: int = 8192  # llama3: context length of pre-training
  rope_type: str = "llama3"  # "llama3" or "linear"


LORA_TARGETS = (r"self_attn/(q|k|v|o)_proj$", r"mlp/(gate|up|down)_proj$")  # every projection


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters (Hu et al. 2021): W x + (alpha / rank) B A x on the projections `targets` names.

  `targets` are regexes searched in a projection's module path, e.g.
  "layers/3/self_attn/q_proj" (as partition rules are, over parameter paths).
  """

  rank: int  # r
  alpha: float  # the update is scaled by alpha / r
  targets: tuple[str, ...] = LORA_TARGETS
  dropout: float = 0.0  # on each adapter's input, in training steps only (`phases` seeds it per row)

  def __post_init__(self):
    if self.rank < 1:
      raise ValueError(f"lora rank={self.rank}; expected >= 1")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lora dropout={self.dropout}; expected a rate in [0, 1)")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer of the Llama / Qwen2 / Qwen3 / Gemma 2 / Gemma 3 families.

  The families differ only in data: Qwen2 has biases on q/k/v, Qwen3 an
  RMSNorm over each head's queries and keys (no biases), and the checkpoints
  differ in RoPE base, norm epsilon and tying of the embeddings. Gemma adds a
  GeGLU MLP, embeddings scaled by sqrt(D), norms with scale (1 + w) before
  and after attention and the MLP, queries scaled by query_pre_attn_scalar,
  sliding-window layers; Gemma 2 soft-caps attention scores and logits, Gemma 3
  normalizes q and k per head and gives its sliding layers their own RoPE base.
  """

  family: str  # one of FAMILIES: selects the HF architecture on export
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
  qk_norm: bool = False  # Qwen3, Gemma 3: True (RMSNorm over each head's q and k, before RoPE)
  attention_out_bias: bool = False  # Llama `attention_bias` also biases o_proj
  mlp_bias: bool = False
  mlp_activation: str = "silu"  # "silu" (SwiGLU) or "gelu_tanh" (Gemma's GeGLU)
  scale_embeddings: bool = False  # Gemma: embeddings times sqrt(d_model)
  norm_offset: float = 0.0  # RMSNorm scale (norm_offset + w), applied in fp32: Gemma stores w around 0 and uses 1
  sandwich_norms: bool = False  # Gemma: norms after attention and after the MLP too (pre_/post_feedforward_layernorm)
  query_pre_attn_scalar: float | None = None  # scores scaled by its -1/2 power; None: head_dim
  attn_logit_softcap: float | None = None  # Gemma 2: scores -> cap * tanh(scores / cap)
  final_logit_softcap: float | None = None  # Gemma 2: logits -> cap * tanh(logits / cap)
  sliding_window: int | None = None  # sliding layers see keys fewer than this many positions back
  layer_types: tuple[str, ...] = ()  # per layer: "full_attention" or "sliding_attention"; empty: all full
  rope_local_theta: float | None = None  # Gemma 3: RoPE base of the sliding layers, unscaled (None: rope_theta)
  param_dtype: str = "float32"  # storage dtype of the parameters
  dtype: str = "float32"  # compute dtype of activations; logits are always fp32
  remat: bool = False  # rematerialize each layer in the backward pass
  lora: LoraConfig | None = None  # adapters on the projections (`models/lora.py`); None: full parameters
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
    if self.qk_norm != (self.family in ("qwen3", "gemma3")):
      raise ValueError(f"qk_norm={self.qk_norm} with family={self.family!r}: the per-head q/k norm is "
                       "Qwen3's and Gemma 3's, and every layer of theirs has it (set qk_norm=True exactly for "
                       "families 'qwen3' and 'gemma3')")
    if self.sandwich_norms != (self.family in GEMMA):
      raise ValueError(f"sandwich_norms={self.sandwich_norms} with family={self.family!r}: the norms after "
                       "attention and the MLP are Gemma's (set sandwich_norms=True exactly for Gemma)")
    if self.mlp_activation not in ACTIVATIONS:
      raise ValueError(f"mlp_activation={self.mlp_activation!r}; expected one of {ACTIVATIONS}")
    if self.layer_types and len(self.layer_types) != self.n_layers:
      raise ValueError(f"layer_types has {len(self.layer_types)} entries for n_layers={self.n_layers}")
    unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
    if unknown:
      raise ValueError(f"layer_types: unknown {unknown}; expected entries of {LAYER_TYPES}")
    if "sliding_attention" in self.layer_types and not self.sliding_window:
      raise ValueError("layer_types has sliding_attention layers but sliding_window is not set")
    if self.rope_scaling is not None and self.rope_scaling.rope_type not in ("llama3", "linear"):
      raise ValueError(f"rope_scaling.rope_type={self.rope_scaling.rope_type!r}; expected 'llama3' or 'linear'")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {sorted(_DTYPES)}")

  @property
  def jnp_param_dtype(self) -> Any:
    return _DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self) -> Any:
    return _DTYPES[self.dtype]

  def is_sliding(self, layer: int) -> bool:
    """Layer `layer` attends within the sliding window."""
    return bool(self.layer_types) and self.layer_types[layer] == "sliding_attention"

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
    per_layer = attn + mlp + (4 if self.sandwich_norms else 2) * d
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
