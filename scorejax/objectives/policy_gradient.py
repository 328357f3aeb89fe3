"""Policy-gradient losses on per-token log-probabilities of sampled responses.

All losses are minimized. Advantages and the log-probabilities of the
sampling (old) or reference policy are data: they go through stop_gradient,
so gradients reach the policy only through `logp_BxT`.

  reinforce_loss      Williams (1992) REINFORCE with a KL penalty to a frozen
                      reference, one sequence-level score per response.
  ppo_token_loss      Schulman et al. (2017), PPO clipped surrogate (Eq. 7),
                      one ratio per token.
  ppo_sequence_loss   the same surrogate with one ratio per response, the
                      exponentiated mean-token log-ratio (the offline loss
                      of SPC's released trainer; also GSPO's ratio).
"""

import jax
import jax.numpy as jnp

from scorejax.objectives import kl, masks


def reinforce_loss(logp_BxT, ref_logp_BxT, mask_BxT, advantage_B, *, kl_coef: float,
                   kl_estimator: str = "k2"):
  """REINFORCE with a KL penalty to a frozen reference (Williams 1992).

  loss = -mean_b[ A_b * sum_t log pi_theta(y_bt) ] + kl_coef * mean_b[ sum_t KL_bt ]

  The first term's gradient is -mean_b[ A_b * grad log pi_theta(y_b) ], the
  score-function estimate of -grad E[A]; dividing by the number of records
  B (not by token counts) keeps each response's weight independent of its
  length. The KL term is differentiated through log pi_theta (see `kl` for
  which estimator's gradient follows which KL) on the same tokens. Returns
  (loss, aux) with aux = {"pg_loss", "kl"} (kl: the mean per-response KL).
  """
  advantage_B = jax.lax.stop_gradient(advantage_B)
  ref_logp_BxT = jax.lax.stop_gradient(ref_logp_BxT)
  pg_loss = -jnp.mean(advantage_B * masks.sum_per_sequence(logp_BxT, mask_BxT))
  kl_mean = jnp.mean(kl.kl_per_sequence(logp_BxT, ref_logp_BxT, mask_BxT, kl_estimator))
  return pg_loss + kl_coef * kl_mean, {"pg_loss": pg_loss, "kl": kl_mean}


def clipped_surrogate(ratio, advantage, clip_eps: float):
  """-min(A * rho, A * clip(rho, 1 - eps, 1 + eps)), elementwise (PPO, Eq. 7)."""
  return -jnp.minimum(advantage * ratio, advantage * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps))


def clip_active(ratio, advantage, clip_eps: float):
  """1.0 where the clipped branch wins the min, i.e. where the gradient is cut off."""
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  return (advantage * clipped < advantage * ratio).astype(jnp.float32)


def token_log_ratio(logp_BxT, old_logp_BxT, mask_BxT):
  """log pi_theta - log pi_old per token, 0 outside the mask (padding with any values cannot overflow exp)."""
  return jnp.where(mask_BxT > 0, logp_BxT - jax.lax.stop_gradient(old_logp_BxT), 0.0)


def sequence_log_ratio(logp_BxT, old_logp_BxT, mask_BxT):
  """Mean over each response's tokens of log pi_theta - log pi_old: [B]."""
  return masks.mean_per_sequence(token_log_ratio(logp_BxT, old_logp_BxT, mask_BxT), mask_BxT)


def ppo_token_loss(logp_BxT, old_logp_BxT, mask_BxT, advantage_B, *, clip_eps: float):
  """PPO clipped surrogate with one ratio per token, averaged over all response tokens.

  rho_bt = exp(log pi_theta(y_bt) - log pi_old(y_bt)); every token of response
  b carries its response's advantage A_b. The token mean over the whole batch
  (each token weighs the same) is the aggregation of the verl trainer that
  DeepCritic's RL stage uses. Returns (loss, aux) with aux = {"ratio",
  "clip_fraction"} (token means).
  """
  ratio_BxT = jnp.exp(token_log_ratio(logp_BxT, old_logp_BxT, mask_BxT))
  advantage_Bx1 = jax.lax.stop_gradient(advantage_B)[:, None]
  loss = masks.mean_over_tokens(clipped_surrogate(ratio_BxT, advantage_Bx1, clip_eps), mask_BxT)
  aux = {
      "ratio": masks.mean_over_tokens(ratio_BxT, mask_BxT),
      "clip_fraction": masks.mean_over_tokens(clip_active(ratio_BxT, advantage_Bx1, clip_eps), mask_BxT),
  }
  return loss, aux


def ppo_sequence_loss(logp_BxT, old_logp_BxT, mask_BxT, advantage_B, *, clip_eps: float):
  """PPO clipped surrogate with one ratio per response, averaged over responses.

  rho_b = exp(mean_t log pi_theta(y_bt) - mean_t log pi_old(y_bt)). The mean
  (not the sum) keeps rho near 1 for long responses, so the clip range means
  the same at every length. Responses with no tokens are left out of the
  mean. Returns (loss, aux) with aux = {"ratio", "clip_fraction"}.
  """
  ratio_B = jnp.exp(sequence_log_ratio(logp_BxT, old_logp_BxT, mask_BxT))
  advantage_B = jax.lax.stop_gradient(advantage_B)
  present_B = masks.has_tokens(mask_BxT)
  loss = masks.weighted_mean(clipped_surrogate(ratio_B, advantage_B, clip_eps), present_B)
  aux = {
      "ratio": masks.weighted_mean(ratio_B, present_B),
      "clip_fraction": masks.weighted_mean(clip_active(ratio_B, advantage_B, clip_eps), present_B),
  }
  return loss, aux
