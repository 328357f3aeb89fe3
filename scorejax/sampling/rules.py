"""Sampling rules: how the next token is drawn from the model's logits.

Each rule is a small frozen dataclass and a pytree. Fields that only change
numbers (temperature, top_p) are pytree leaves, so they are traced values of
the jitted sampler: sweeping them, or annealing the temperature over a run,
never recompiles. Fields that change the program (top_k, which fixes the shape
of `lax.top_k`) are static metadata.

    Greedy()                                  argmax (SCoRe evaluates greedily)
    Sample(temperature=1.0)                   ancestral sampling from softmax(logits / T)
    Sample(temperature=0.7, top_k=50)         ... among the 50 highest logits
    Sample(temperature=1.0, top_p=0.9)        ... in the smallest set holding 90% of the mass

Filters compose as in transformers: temperature, then top-k, then top-p on
the renormalized top-k distribution.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp


def _is_number(x) -> bool:
  return isinstance(x, numbers.Number)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Greedy:
  """The highest-logit token; deterministic, so the key is unused."""

  def sampling_logits(self, logits_BxV: jax.Array) -> jax.Array:
    """The logits of the sampling distribution: a point mass on the argmax."""
    best_B = jnp.argmax(logits_BxV, axis=-1)
    is_best_BxV = jnp.arange(logits_BxV.shape[-1])[None, :] == best_B[:, None]
    return jnp.where(is_best_BxV, 0.0, -jnp.inf)

  def draw(self, sampling_logits_BxV: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One token per row from `sampling_logits`."""
    del keys_B
    return jnp.argmax(sampling_logits_BxV, axis=-1).astype(jnp.int32)

  def choose(self, logits_BxV: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One token per row from the model's logits (no [B, V] mask is built)."""
    return self.draw(logits_BxV, keys_B)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sample:
  """Ancestral sampling from softmax(logits / temperature), optionally truncated."""

  temperature: float | jax.Array = 1.0  # traced; > 0 (use Greedy() for argmax)
  top_p: float | jax.Array = 1.0  # traced; nucleus mass kept, in (0, 1]; 1.0 keeps every token
  top_k: int = dataclasses.field(default=0, metadata=dict(static=True))  # static; 0 keeps every token

  def __post_init__(self):
    # Traced values are checked by whoever made them; plain numbers are checked here.
    if _is_number(self.temperature) and not self.temperature > 0:
      raise ValueError(f"Sample.temperature must be > 0, got {self.temperature}; "
                       "use Greedy() for argmax decoding")
    if _is_number(self.top_p) and not 0 < self.top_p <= 1:
      raise ValueError(f"Sample.top_p must be in (0, 1], got {self.top_p}")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"Sample.top_k must be a non-negative int (0: no top-k), got {self.top_k!r}")

  def sampling_logits(self, logits_BxV: jax.Array) -> jax.Array:
    """Logits whose softmax is the distribution tokens are drawn from (-inf: excluded)."""
    logits_BxV = logits_BxV.astype(jnp.float32) / self.temperature
    vocab = logits_BxV.shape[-1]
    if self.top_k and self.top_k < vocab:
      # Candidates sorted by logit; ties at the k-th logit are all kept.
      candidates_BxC, _ = jax.lax.top_k(logits_BxV, self.top_k)
      logits_BxV = jnp.where(logits_BxV >= candidates_BxC[:, -1:], logits_BxV, -jnp.inf)
    else:
      candidates_BxC = None
    # A full sort of V logits per step is costly at a 150k vocabulary: skip it when top_p = 1.
    return jax.lax.cond(self.top_p < 1.0, lambda x: _nucleus(x, candidates_BxC, self.top_p),
                        lambda x: x, logits_BxV)

  def draw(self, sampling_logits_BxV: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One token per row from `sampling_logits`, row b drawn with its own key keys_B[b]."""
    return jax.vmap(jax.random.categorical)(keys_B, sampling_logits_BxV).astype(jnp.int32)

  def choose(self, logits_BxV: jax.Array, keys_B: jax.Array) -> jax.Array:
    """One token per row from the model's logits."""
    return self.draw(self.sampling_logits(logits_BxV), keys_B)


def _nucleus(logits_BxV, candidates_BxC, top_p):
  """Keeps the smallest set of highest-probability tokens whose mass reaches top_p.

  `candidates_BxC` are the top-k logits in descending order when top-k ran
  first (their softmax is the renormalized top-k distribution); otherwise the
  whole vocabulary is sorted.
  """
  if candidates_BxC is None:
    candidates_BxC = -jnp.sort(-logits_BxV, axis=-1)
  probs_BxC = jax.nn.softmax(candidates_BxC, axis=-1)
  mass_before_BxC = jnp.cumsum(probs_BxC, axis=-1) - probs_BxC
  # The top token is always kept, so a tiny top_p degrades to greedy, not to nothing.
  kept_B = jnp.maximum(jnp.sum(mass_before_BxC < top_p, axis=-1), 1)
  threshold_B = jnp.take_along_axis(candidates_BxC, kept_B[:, None] - 1, axis=-1)
  return jnp.where(logits_BxV >= threshold_B, logits_BxV, -jnp.inf)


Rule = Greedy | Sample


def rule_from_flags(greedy: bool, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Rule:
  """The rule a command line asks for: --greedy wins over the sampling flags."""
  if greedy:
    return Greedy()
  return Sample(temperature=temperature, top_p=top_p, top_k=top_k)


def model_logprobs(logits_BxV: jax.Array, tokens_B: jax.Array) -> jax.Array:
  """log softmax(logits)[token] at temperature 1: the log-probability objectives use."""
  logits_BxV = logits_BxV.astype(jnp.float32)
  chosen_B = jnp.take_along_axis(logits_BxV, tokens_B[:, None], axis=-1)[:, 0]
  return chosen_B - jax.nn.logsumexp(logits_BxV, axis=-1)


def sampling_logprobs(rule: Rule, logits_BxV: jax.Array, tokens_B: jax.Array) -> jax.Array:
  """log-probability of each token under the distribution `rule` drew it from."""
  return model_logprobs(rule.sampling_logits(logits_BxV), tokens_B)
