"""SPC offline objective: clipped sequence-level ratio on game records, plus SFT.

Chen et al., "SPC: Evolving Self-Play Critic via Adversarial Games for LLM
Reasoning", arXiv 2504.19162, as its released offline trainer computes it.
One batch mixes game records (prompt, response, reward +1 / -1 from the
game) and supervised records (is_sft = 1). With pi_ref the frozen model at
the start of the round:

  log_rho_b = mean_t log pi_theta(y_bt) - mean_t log pi_ref(y_bt)
  rho_b     = exp(log_rho_b)
  A_b       = reward_b - kl_coef * log_rho_b
  L_rl      = mean over game records of -min(A_b rho_b, A_b clip(rho_b, 1 - eps, 1 + eps))
  L_sft     = mean over supervised records of -mean_t log pi_theta(y_bt)
  L         = sft_coef * L_sft + L_rl

The KL term is kept inside the advantage and not detached, as released:
where the ratio is not clipped, -A rho = -reward rho + kl_coef rho log rho,
the importance-weighted form of KL(pi_theta || pi_ref) on records drawn
from pi_ref (exact for a whole-sequence ratio, here taken per mean token).
Its coefficient defaults to 0; the mean log_rho over game records is always
reported as "kl".

`ratio="token"` (not the released trainer's) clips each token's ratio
instead, PPO style, with the record's advantage on every token:

  L_rl = mean over game records of mean_t -min(A_b rho_bt, A_b clip(rho_bt, 1 - eps, 1 + eps)),
  rho_bt = pi_theta(y_bt) / pi_ref(y_bt)

so no single token (a verdict among many analysis tokens) can move further
than the clip range while the record's mean ratio stays inside it.

`ratio="none"` (an ablation, not SPC's) drops the ratio and the clip:

  L_rl = mean over game records of -A_b mean_t log pi_theta(y_bt),  A_b held constant

the likelihood weighted by the reward. On records rewarded +1 alone it is
SFT on the won records (rejection-sampling fine-tuning), the ablation that
asks what the -1 records and the clipped ratio add.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scorejax.objectives import masks, policy_gradient, sft


RATIOS = ("sequence", "token", "none")


@dataclasses.dataclass(frozen=True)
class SPCConfig:
  clip_eps: float = 0.2  # clip range of the sequence-level ratio rho
  sft_coef: float = 0.15  # weight of the SFT term on supervised records
  kl_coef: float = 0.0  # weight of the mean-token log-ratio subtracted from the advantage
  # "sequence": one clipped mean-token ratio per record (released); "token": one per token; "none": no ratio
  ratio: str = "sequence"

  def __post_init__(self):
    if self.ratio not in RATIOS:
      raise ValueError(f"SPC ratio={self.ratio!r}; expected one of {RATIOS}")


class SPCBatch(NamedTuple):
  ref_logp_BxT: jax.Array  # log pi_ref of the response tokens (unused on supervised records)
  mask_BxT: jax.Array  # 1.0 on the response tokens
  reward_B: jax.Array  # game reward (+1 win / -1 loss) of game records; unused on supervised ones
  is_sft_B: jax.Array  # 1.0 for supervised records, 0.0 for game records


def spc_loss(policy_logp_BxT, batch: SPCBatch, config: SPCConfig):
  """SPC offline loss (arXiv 2504.19162, released trainer). Returns (loss, aux)."""
  is_sft_B = batch.is_sft_B.astype(jnp.float32)
  is_game_B = (1.0 - is_sft_B) * masks.has_tokens(batch.mask_BxT)
  # Supervised rows may carry any reference values: their log-ratio is zeroed before exp.
  log_rho_B = jnp.where(
      is_game_B > 0,
      policy_gradient.sequence_log_ratio(policy_logp_BxT, batch.ref_logp_BxT, batch.mask_BxT),
      0.0,
  )
  rho_B = jnp.exp(log_rho_B)
  advantage_B = batch.reward_B - config.kl_coef * log_rho_B
  game_mask_BxT = batch.mask_BxT * is_game_B[:, None]
  if config.ratio == "token":
    rho_BxT = jnp.exp(policy_gradient.token_log_ratio(policy_logp_BxT, batch.ref_logp_BxT, game_mask_BxT))
    advantage_Bx1 = advantage_B[:, None]
    rl_loss_B = masks.mean_per_sequence(
        policy_gradient.clipped_surrogate(rho_BxT, advantage_Bx1, config.clip_eps), game_mask_BxT)
    clipped_B = masks.mean_per_sequence(
        policy_gradient.clip_active(rho_BxT, advantage_Bx1, config.clip_eps), game_mask_BxT)
  elif config.ratio == "none":
    rl_loss_B = -jax.lax.stop_gradient(advantage_B) * masks.mean_per_sequence(policy_logp_BxT, game_mask_BxT)
    clipped_B = jnp.zeros_like(rho_B)
  else:
    rl_loss_B = policy_gradient.clipped_surrogate(rho_B, advantage_B, config.clip_eps)
    clipped_B = policy_gradient.clip_active(rho_B, advantage_B, config.clip_eps)
  rl_loss = masks.weighted_mean(rl_loss_B, is_game_B)
  sft_loss = sft.nll_sequence_mean(policy_logp_BxT, batch.mask_BxT * is_sft_B[:, None])
  loss = config.sft_coef * sft_loss + rl_loss
  aux = {
      "rl_loss": rl_loss,
      "sft_loss": sft_loss,
      "kl": masks.weighted_mean(jax.lax.stop_gradient(log_rho_B), is_game_B),
      "ratio": masks.weighted_mean(jax.lax.stop_gradient(rho_B), is_game_B),
      "clip_fraction": masks.weighted_mean(clipped_B, is_game_B),
      "reward": masks.weighted_mean(batch.reward_B, is_game_B),
      "game_records": jnp.sum(is_game_B),
      "sft_records": jnp.sum(is_sft_B),
  }
  return loss, aux
