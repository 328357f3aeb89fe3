"""Masked reductions over response tokens and over records.

Every objective reduces per-token quantities over the response tokens of each
sequence (mask 1) and then over the records of a batch. Rows whose mask is all
zero (padding records) must contribute nothing and must not produce NaNs, so
every division here is guarded.
"""

import jax.numpy as jnp


def sum_per_sequence(x_BxT, mask_BxT):
  """Sum of x over the masked tokens of each row: [B, T] -> [B]."""
  return jnp.sum(x_BxT * mask_BxT, axis=-1)


def mean_per_sequence(x_BxT, mask_BxT):
  """Mean of x over the masked tokens of each row; 0 for an all-masked row."""
  count_B = jnp.sum(mask_BxT, axis=-1)
  return sum_per_sequence(x_BxT, mask_BxT) / jnp.maximum(count_B, 1)


def mean_over_tokens(x_BxT, mask_BxT):
  """Mean of x over all masked tokens of the batch (every token weighs the same)."""
  return jnp.sum(x_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1)


def weighted_mean(x_B, weight_B):
  """Mean of x over the records with weight 1 (a 0/1 selector); 0 when none is."""
  return jnp.sum(x_B * weight_B) / jnp.maximum(jnp.sum(weight_B), 1)


def has_tokens(mask_BxT):
  """1.0 for rows with at least one masked token, else 0.0: [B, T] -> [B]."""
  return (jnp.sum(mask_BxT, axis=-1) > 0).astype(jnp.float32)
