"""The model as pure functions of a plain parameter pytree.

NNX modules are convenient to define; training and sampling want pure
functions of `params` (a nested dict of arrays) so that jitted steps are pure
functions of state. `LM` holds the static half (config + graph definition) and
rebuilds the module from `params` inside each call, which costs nothing at run
time: it happens once, while tracing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from scorejax.models.config import ModelConfig
from scorejax.models.transformer import KVCache, Transformer, init_cache

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LM:
  """A language model: `config` plus pure `init` / `apply` / `hidden` functions."""

  config: ModelConfig
  graphdef: Any = dataclasses.field(repr=False, compare=False)

  @classmethod
  def from_config(cls, config: ModelConfig) -> "LM":
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
    return cls(config, graphdef)

  def init(self, key: jax.Array) -> Params:
    """Random parameters (normal(initializer_range) weights, unit norms)."""
    return nnx.to_pure_dict(nnx.state(Transformer(self.config, rngs=nnx.Rngs(params=key))))

  def abstract_params(self) -> Params:
    """Shapes and dtypes of the parameters, without allocating them."""
    return jax.eval_shape(self.init, jax.random.key(0))

  def module(self, params: Params) -> Transformer:
    return nnx.merge(self.graphdef, params)

  def apply(self, params: Params, tokens_BxT, positions_BxT, mask_BxT, cache: KVCache | None = None):
    """fp32 logits [B, T, V] and the updated cache."""
    return self.module(params)(tokens_BxT, positions_BxT, mask_BxT, cache)

  def hidden(self, params: Params, tokens_BxT, positions_BxT, mask_BxT, cache: KVCache | None = None,
             dropout_seed_B=None):
    """Final-norm hidden states [B, T, D] and the updated cache; `dropout_seed_B`: LoRA dropout (training)."""
    return self.module(params).hidden(tokens_BxT, positions_BxT, mask_BxT, cache, dropout_seed_B)

  def unembedding(self, params: Params) -> jax.Array:
    """The [V, D] matrix that turns hidden states into logits."""
    return params["embed_tokens"] if self.config.tie_embeddings else params["lm_head"]

  def init_cache(self, batch: int, length: int, dtype=None) -> KVCache:
    return init_cache(self.config, batch, length, dtype)
