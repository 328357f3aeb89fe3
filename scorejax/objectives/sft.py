"""Masked supervised fine-tuning: negative log-likelihood of the target tokens.

Two reductions, which weigh records differently:

  token_mean     -sum_{b,t} m_bt log p_bt / sum_{b,t} m_bt
                 every target token weighs the same, so long responses weigh
                 more (the usual language-model SFT loss).
  sequence_mean  -mean_b[ sum_t m_bt log p_bt / sum_t m_bt ]
                 every response weighs the same, whatever its length (the SFT
                 term of SPC's released offline trainer). Rows without
                 target tokens are left out of the mean.

Used for the SFT stages (SPC round 0, DeepCritic stage 1, Pair-SFT / STaR
baselines, critique-in-the-loop fine-tuning) and as SPC's auxiliary term.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scorejax.objectives import masks


def nll_token_mean(logp_BxT, mask_BxT):
  """Mean NLL over all target tokens of the batch."""
  return -masks.mean_over_tokens(logp_BxT, mask_BxT)


def nll_sequence_mean(logp_BxT, mask_BxT):
  """Mean over responses of each response's mean-token NLL."""
  return -masks.weighted_mean(masks.mean_per_sequence(logp_BxT, mask_BxT), masks.has_tokens(mask_BxT))


SFT_REDUCTIONS: dict[str, Callable] = {
    "token_mean": nll_token_mean,
    "sequence_mean": nll_sequence_mean,
}


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  reduction: str = "token_mean"  # a name in SFT_REDUCTIONS

  def __post_init__(self):
    if self.reduction not in SFT_REDUCTIONS:
      raise ValueError(f"SFTConfig.reduction={self.reduction!r} is not one of {sorted(SFT_REDUCTIONS)}")


class SFTBatch(NamedTuple):
  mask_BxT: jax.Array  # 1.0 on the target (response) tokens, 0.0 on prompt and padding


def sft_loss(policy_logp_BxT, batch: SFTBatch, config: SFTConfig):
  """Masked SFT NLL with the configured reduction. Returns (loss, aux)."""
  loss = SFT_REDUCTIONS[config.reduction](policy_logp_BxT, batch.mask_BxT)
  return loss, {"nll": loss, "target_tokens": jnp.sum(batch.mask_BxT)}
