"""SCoRe: two-attempt self-correction objectives, Stage I and Stage II.

Kumar et al., "Training Language Models to Self-Correct via Reinforcement
Learning", arXiv 2409.12917. An episode is a prompt x, a first attempt
y1 ~ pi_theta(. | x), the self-correction instruction p, and a second
attempt y2 ~ pi_theta(. | x, y1, p), with verifiable rewards r1 = r(y1, y*)
and r2 = r(y2, y*) in {0, 1}.

Both stages are on-policy REINFORCE with KL penalties to the frozen
reference pi_ref (the model at the start of the stage), applied per attempt:
each attempt's tokens are credited with that attempt's own reward only
(discount 0 across turns), so no reward gradient crosses from y2 into y1.

  Stage I  (Sec. 5.1, Eq. 3): minimize
      -E[r2] (score function on the y2 tokens)
      + beta2 * KL on the y1 tokens    <- pins the first attempt to pi_ref;
                                          a gradient on the y1 log-probs
      + beta1 * KL on the y2 tokens
  Stage II (Sec. 5.2, Eq. 4): minimize
      -E[r1] (on the y1 tokens) - E[r_hat2] (on the y2 tokens)
      + beta1 * (KL on the y1 tokens + KL on the y2 tokens)
      with r_hat2 = r2 + alpha * (r2 - r1), the shaping bonus rewarding
      incorrect->correct over correct->incorrect episodes by 1 + 2 * alpha.

The KL terms are differentiable penalties in the loss, summed over each
attempt's tokens and averaged over episodes; `kl_estimator` picks the
per-token estimator (default k2, whose gradient follows KL(pi_theta ||
pi_ref); see `scorejax.objectives.kl`). Rewards become advantages through
the named `baseline` (default `batch_mean`, valid for any batch layout).

When y1 and y2 come from one forward pass over [x, y1, p, y2], pass the same
log-prob array for both attempts with the two masks. First attempts sampled
from the base model and mixed in as extra second-turn prompts (the paper's
optional Stage II augmentation) take mask_y1 = 0 on that row: their r1
still shapes r_hat2, but y1 receives no gradient.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scorejax.objectives import advantages, kl, masks, policy_gradient

CREDITS = ("per_attempt", "return")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
  """The paper's symbols; defaults are the published MATH settings."""

  alpha: float = 10.0  # Stage II shaping weight on r(y2) - r(y1); the paper asks alpha > 1
  beta1: float = 0.01  # KL weight on y2 (Stage I) and on y1 and y2 (Stage II)
  beta2: float = 0.1  # Stage I KL weight on the y1 tokens (MBPP: 0.25)
  kl_estimator: str = "k2"  # per-token KL penalty, a name in objectives.kl.KL_ESTIMATORS
  baseline: str = "batch_mean"  # advantage estimator, a name in objectives.advantages.ADVANTAGES
  group_size: int = 1  # samples per prompt, adjacent in the batch; rloo and grpo need >= 2
  # Stage II: alpha * r1 is fixed once y1 is drawn, so it can be a baseline of y2's
  # advantage instead of a part of its reward (same expected gradient, less variance).
  shaping_baseline: bool = False
  credit: str = "per_attempt"  # Stage II credit of y1: "per_attempt" (r1) or "return" (r1 + gamma * r_hat2)
  gamma: float = 1.0  # "return": the discount of r_hat2 in y1's return

  def __post_init__(self):
    kl.get_estimator(self.kl_estimator)
    advantages.get_estimator(self.baseline)
    if self.credit not in CREDITS:
      raise ValueError(f"ScoreConfig.credit={self.credit!r}; expected one of {CREDITS}")
    if self.group_size < 1:
      raise ValueError(f"ScoreConfig.group_size must be >= 1, got {self.group_size}")


class AttemptLogprobs(NamedTuple):
  """Per-token log pi_theta of the two attempts (the part that depends on params)."""

  y1_BxT: jax.Array  # log pi_theta(y1_t | x, y1_<t), fp32
  y2_BxT: jax.Array  # log pi_theta(y2_t | x, y1, p, y2_<t), fp32


class ScoreBatch(NamedTuple):
  """A batch of episodes: everything the objective needs besides the policy."""

  ref_logp_y1_BxT: jax.Array  # log pi_ref of the y1 tokens
  mask_y1_BxT: jax.Array  # 1.0 on y1's tokens
  ref_logp_y2_BxT: jax.Array  # log pi_ref of the y2 tokens
  mask_y2_BxT: jax.Array  # 1.0 on y2's tokens
  reward_y1_B: jax.Array  # r(y1, y*) in {0, 1}
  reward_y2_B: jax.Array  # r(y2, y*) in {0, 1}


def shaped_second_reward(reward_y1_B, reward_y2_B, alpha: float):
  """r_hat2 = r2 + alpha * (r2 - r1) (Sec. 5.2, the self-correction bonus)."""
  return reward_y2_B + alpha * (reward_y2_B - reward_y1_B)


def _transition_rates(reward_y1_B, reward_y2_B):
  """Fractions of episodes that go incorrect->correct and correct->incorrect."""
  right_1, right_2 = reward_y1_B > 0.5, reward_y2_B > 0.5
  return (
      jnp.mean((~right_1 & right_2).astype(jnp.float32)),
      jnp.mean((right_1 & ~right_2).astype(jnp.float32)),
  )


def _diagnostics(batch: ScoreBatch, kl_y1, kl_y2, pg_loss):
  delta_i_to_c, delta_c_to_i = _transition_rates(batch.reward_y1_B, batch.reward_y2_B)
  return {
      "reward_y1": jnp.mean(batch.reward_y1_B),
      "reward_y2": jnp.mean(batch.reward_y2_B),
      "delta_i_to_c": delta_i_to_c,
      "delta_c_to_i": delta_c_to_i,
      "kl_y1": kl_y1,
      "kl_y2": kl_y2,
      "pg_loss": pg_loss,
  }


def stage1_loss(policy_logp: AttemptLogprobs, batch: ScoreBatch, config: ScoreConfig):
  """SCoRe Stage I (arXiv 2409.12917, Sec. 5.1, Eq. 3) as a loss to minimize.

  loss = -mean_b[ A2_b * sum_t log pi_theta(y2_bt) ] + beta1 * mean_b[ KL(y2_b) ]
         + beta2 * mean_b[ KL(y1_b) ]
  with A2 = baseline(r2). The y1 tokens get no reward term (Stage I does not
  reward y1, and r2 is not credited to y1); their only gradient is the beta2
  KL, which keeps the first attempt at pi_ref. Returns (loss, diagnostics).
  """
  advantage_y2_B = advantages.compute_advantages(config.baseline, batch.reward_y2_B, config.group_size)
  loss_y2, aux_y2 = policy_gradient.reinforce_loss(
      policy_logp.y2_BxT, batch.ref_logp_y2_BxT, batch.mask_y2_BxT, advantage_y2_B,
      kl_coef=config.beta1, kl_estimator=config.kl_estimator)
  ref_y1_BxT = jax.lax.stop_gradient(batch.ref_logp_y1_BxT)
  kl_y1 = jnp.mean(kl.kl_per_sequence(policy_logp.y1_BxT, ref_y1_BxT, batch.mask_y1_BxT, config.kl_estimator))
  loss = loss_y2 + config.beta2 * kl_y1
  return loss, _diagnostics(batch, kl_y1, aux_y2["kl"], aux_y2["pg_loss"])


def stage2_loss(policy_logp: AttemptLogprobs, batch: ScoreBatch, config: ScoreConfig):
  """SCoRe Stage II (arXiv 2409.12917, Sec. 5.2, Eq. 4 with the shaping bonus).

  loss = sum_{i=1,2} ( -mean_b[ A_i,b * sum_t log pi_theta(y_i,bt) ] + beta1 * mean_b[ KL(y_i,b) ] )
  with A1 = baseline(r1) and A2 = baseline(r2 + alpha * (r2 - r1)): each
  attempt's tokens carry that attempt's own (shaped) reward.

  With `shaping_baseline`, A2 = baseline((1 + alpha) * r2): the -alpha * r1
  part of r_hat2 joins the baseline. It depends on y1 only, and y2's score
  function has mean zero given (x, y1), so the expected gradient is the
  same; what goes is the variance that other episodes' r1 adds through a
  group or batch baseline (e.g. a y2 that failed after a failed y1 no longer
  gains a positive advantage because a sibling episode went c->i).

  Credit of y1 (`credit`; y2 is always credited with r_hat2):
    per_attempt  A1 = baseline(r1), the paper's per-attempt rewards. In
                 expectation r_hat2's -alpha * r1 term gives y2 no gradient
                 (y1 is part of y2's context: E[grad log pi(y2 | x, y1)] = 0
                 given y1), so shaping acts on y2 as a (1 + alpha) weight on
                 r2, and on y1 not at all.
    return       A1 = baseline(r1 + gamma * r_hat2), return-to-go: y1's
                 incentive becomes (1 - gamma * alpha) * r1 + gamma * (1 + alpha)
                 * E[r2 | y1], so for gamma * alpha > 1 a wrong first attempt
                 pays when y2 fixes it: shaping then rewards y1 for being
                 wrong, the collapse the paper's Stage I guards against.
  Both are checked by exact enumeration on a tabular two-turn policy
  (tests/test_score_objective.py). Returns (loss, diagnostics).
  """
  shaped_y2_B = shaped_second_reward(batch.reward_y1_B, batch.reward_y2_B, config.alpha)
  y1_signal_B = batch.reward_y1_B if config.credit == "per_attempt" else batch.reward_y1_B + config.gamma * shaped_y2_B
  advantage_y1_B = advantages.compute_advantages(config.baseline, y1_signal_B, config.group_size)
  y2_signal_B = shaped_y2_B + config.alpha * batch.reward_y1_B if config.shaping_baseline else shaped_y2_B
  advantage_y2_B = advantages.compute_advantages(config.baseline, y2_signal_B, config.group_size)
  loss_y1, aux_y1 = policy_gradient.reinforce_loss(
      policy_logp.y1_BxT, batch.ref_logp_y1_BxT, batch.mask_y1_BxT, advantage_y1_B,
      kl_coef=config.beta1, kl_estimator=config.kl_estimator)
  loss_y2, aux_y2 = policy_gradient.reinforce_loss(
      policy_logp.y2_BxT, batch.ref_logp_y2_BxT, batch.mask_y2_BxT, advantage_y2_B,
      kl_coef=config.beta1, kl_estimator=config.kl_estimator)
  aux = _diagnostics(batch, aux_y1["kl"], aux_y2["kl"], aux_y1["pg_loss"] + aux_y2["pg_loss"])
  aux["shaped_reward_y2"] = jnp.mean(shaped_y2_B)
  aux["shaping_bonus"] = jnp.mean(shaped_y2_B - batch.reward_y2_B)
  return loss_y1 + loss_y2, aux


def attempts_view(logp_BxT) -> AttemptLogprobs:
  """Both attempts read from one forward pass over [x, y1, p, y2]: the masks tell them apart."""
  return AttemptLogprobs(logp_BxT, logp_BxT)


def episode_inputs(batch) -> ScoreBatch:
  """The ScoreBatch of a packed episode batch (`rollouts.to_batch` with tags y1, y2, plus
  `ref_logp_BxT`, `reward_y1_B`, `reward_y2_B`)."""
  ref = batch["ref_logp_BxT"]
  return ScoreBatch(ref_logp_y1_BxT=ref, mask_y1_BxT=batch["mask_y1_BxT"], ref_logp_y2_BxT=ref,
                    mask_y2_BxT=batch["mask_y2_BxT"], reward_y1_B=batch["reward_y1_B"],
                    reward_y2_B=batch["reward_y2_B"])


# ----------------------------------------------------------------------------
# Baselines of the paper's Table 2 on the same episodes
# ----------------------------------------------------------------------------


def single_turn_loss(policy_logp: AttemptLogprobs, batch: ScoreBatch, config: ScoreConfig):
  """Single-turn RL: REINFORCE on y1 with r(y1) and the beta1 KL; y2 is not trained."""
  advantage_B = advantages.compute_advantages(config.baseline, batch.reward_y1_B, config.group_size)
  loss, aux = policy_gradient.reinforce_loss(policy_logp.y1_BxT, batch.ref_logp_y1_BxT, batch.mask_y1_BxT,
                                             advantage_B, kl_coef=config.beta1, kl_estimator=config.kl_estimator)
  return loss, dict(aux, reward_y1=jnp.mean(batch.reward_y1_B), reward_y2=jnp.mean(batch.reward_y2_B))


class StarBatch(NamedTuple):
  mask_y2_BxT: jax.Array  # 1.0 on y2's tokens
  reward_y1_B: jax.Array  # r(y1, y*), logged
  reward_y2_B: jax.Array  # r(y2, y*): which episodes are kept


STAR_KEEPS = ("right_y2", "i2c")


@dataclasses.dataclass(frozen=True)
class StarConfig:
  # The episodes trained on: "right_y2", every right second attempt (rewards are 0 / 1); "i2c", only the
  # successful corrections (y1 wrong, y2 right), so that no right-to-right copy is trained on.
  keep: str = "right_y2"

  def __post_init__(self):
    if self.keep not in STAR_KEEPS:
      raise ValueError(f"StarConfig.keep={self.keep!r}; expected one of {STAR_KEEPS}")


def star_inputs(batch) -> StarBatch:
  return StarBatch(batch["mask_y2_BxT"], batch["reward_y1_B"], batch["reward_y2_B"])


def star_keep(reward_y1_B, reward_y2_B, keep: str):
  """Which episodes multi-turn STaR trains on (see StarConfig.keep)."""
  right_y2_B = reward_y2_B > 0.5
  return right_y2_B & (reward_y1_B < 0.5) if keep == "i2c" else right_y2_B


def star_loss(policy_logp_BxT, batch: StarBatch, config: StarConfig):
  """Multi-turn STaR on the policy's own episodes: token-mean NLL of the kept second attempts."""
  keep_B = star_keep(batch.reward_y1_B, batch.reward_y2_B, config.keep)
  loss = -masks.mean_over_tokens(policy_logp_BxT, batch.mask_y2_BxT & keep_B[:, None])
  return loss, {"kept": jnp.mean(keep_B.astype(jnp.float32)), "reward_y1": jnp.mean(batch.reward_y1_B),
                "reward_y2": jnp.mean(batch.reward_y2_B)}
