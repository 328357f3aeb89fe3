"""DeepCritic Stage 2: RL on the predicted earliest-error index.

Yang et al., "DeepCritic: Deliberate Critique with Large Language Models",
arXiv 2505.00662. The critic ends each critique with the index of the
earliest wrong step, or -1 when every step is right. The reward is 1.0 when
that index equals the label and 0.0 otherwise; advantages are relative to
the group of critiques sampled for the same solution (GRPO-style); the
update is the token-level clipped surrogate of the verl trainer the paper's
RL stage runs on.

Predictions and labels must use the same indexing (ProcessBench labels are
0-indexed, DeepCritic prompts number steps from 1: convert before calling).
A critique whose final index cannot be parsed is passed as INVALID_INDEX and
earns 0, never a class.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scorejax.objectives import advantages, kl, masks, policy_gradient

# An unparseable prediction. Labels are >= -1 (-1: all steps correct), so it never matches one.
INVALID_INDEX = -2


def earliest_error_reward(predicted_index_B, label_B):
  """1.0 where the predicted earliest-error index equals the label; 0.0 otherwise or if invalid."""
  valid_B = predicted_index_B != INVALID_INDEX
  return ((predicted_index_B == label_B) & valid_B).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class CriticRLConfig:
  group_size: int = 8  # critiques sampled per solution, adjacent in the batch
  clip_eps: float = 0.2  # clip range of the per-token ratio
  kl_coef: float = 0.0  # weight of the token-mean KL-to-reference penalty
  kl_estimator: str = "k2"  # a name in objectives.kl.KL_ESTIMATORS
  baseline: str = "grpo"  # a name in objectives.advantages.ADVANTAGES

  def __post_init__(self):
    kl.get_estimator(self.kl_estimator)
    advantages.get_estimator(self.baseline)


class CriticBatch(NamedTuple):
  old_logp_BxT: jax.Array  # log-probs of the critique tokens under the sampling policy
  ref_logp_BxT: jax.Array  # log-probs under the frozen reference (used when kl_coef > 0)
  mask_BxT: jax.Array  # 1.0 on the critique tokens
  predicted_index_B: jax.Array  # int: earliest wrong step, -1 all correct, INVALID_INDEX unparseable
  label_B: jax.Array  # int: the labelled earliest wrong step, -1 all correct


def critic_rl_loss(policy_logp_BxT, batch: CriticBatch, config: CriticRLConfig):
  """DeepCritic RL loss: clipped token-level surrogate on group-relative advantages.

  loss = token_mean( -min(A rho, A clip(rho)) ) + kl_coef * token_mean(KL)
  with A = baseline(earliest_error_reward) over each solution's group.
  Returns (loss, aux).
  """
  reward_B = earliest_error_reward(batch.predicted_index_B, batch.label_B)
  advantage_B = advantages.compute_advantages(config.baseline, reward_B, config.group_size)
  pg_loss, pg_aux = policy_gradient.ppo_token_loss(
      policy_logp_BxT, batch.old_logp_BxT, batch.mask_BxT, advantage_B, clip_eps=config.clip_eps
  )
  kl_BxT = kl.kl_per_token(
      policy_logp_BxT, jax.lax.stop_gradient(batch.ref_logp_BxT), batch.mask_BxT, config.kl_estimator
  )
  kl_token_mean = masks.mean_over_tokens(kl_BxT, batch.mask_BxT)
  loss = pg_loss + config.kl_coef * kl_token_mean
  aux = {
      "reward": jnp.mean(reward_B),
      "invalid_fraction": jnp.mean((batch.predicted_index_B == INVALID_INDEX).astype(jnp.float32)),
      "pg_loss": pg_loss,
      "kl": kl_token_mean,
      **pg_aux,
  }
  return loss, aux
