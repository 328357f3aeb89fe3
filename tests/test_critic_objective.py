"""DeepCritic earliest-error reward and its group-relative RL loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import critic

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}
INVALID = critic.INVALID_INDEX

# Two solutions, four critiques each. Solution 0's earliest error is step 2; solution 1 is all correct.
PREDICTED_B = jnp.array([2, 2, 1, INVALID, -1, INVALID, 0, -1])
LABEL_B = jnp.array([2, 2, 2, 2, -1, -1, -1, -1])


@pytest.mark.parametrize("run", RUNNERS)
def test_reward(run):
  reward = RUNNERS[run](critic.earliest_error_reward)(PREDICTED_B, LABEL_B)
  # Mapping an unparseable critique to -1 ("all correct") would score critique 5 as 1.0.
  np.testing.assert_array_equal(reward, [1, 1, 0, 0, 1, 0, 0, 1])


@pytest.mark.parametrize("run", RUNNERS)
def test_loss_on_policy(run):
  logp = -jnp.ones((8, 2))
  # Critique 0 has one token; the other seven have two: 15 tokens in all.
  mask = jnp.ones((8, 2)).at[0, 1].set(0.0)
  batch = critic.CriticBatch(old_logp_BxT=logp, ref_logp_BxT=logp, mask_BxT=mask,
                             predicted_index_B=PREDICTED_B, label_B=LABEL_B)
  config = critic.CriticRLConfig(group_size=4)
  f = jax.value_and_grad(lambda lp: critic.critic_rl_loss(lp, batch, config), has_aux=True)
  (loss, aux), grad = RUNNERS[run](f)(logp)
  # Both groups have rewards {1, 1, 0, 0}: GRPO advantages +-0.5 / sqrt(1/3) = +-0.8660254.
  a = 0.8660254
  # Ratio 1: token mean of -A = -(a * 1 + 2 * (a - a - a + a - a - a + a)) / 15 = a / 15. A mean per
  # critique first would give 0; a batch-mean baseline (A = +-0.5) would give 0.5 / 15.
  np.testing.assert_allclose(loss, a / 15, atol=1e-6)
  np.testing.assert_allclose(grad[0], [-a / 15, 0.0], atol=1e-6)
  np.testing.assert_allclose(grad[2], [a / 15, a / 15], atol=1e-6)
  np.testing.assert_allclose(aux["reward"], 0.5)
  np.testing.assert_allclose(aux["invalid_fraction"], 0.25)
  np.testing.assert_allclose(aux["ratio"], 1.0, atol=1e-6)


def test_kl_penalty_is_a_token_mean():
  logp = -jnp.ones((8, 2))
  ref = logp.at[0, 0].set(-2.0)  # one log-ratio of 1.0
  batch = critic.CriticBatch(old_logp_BxT=logp, ref_logp_BxT=ref, mask_BxT=jnp.ones((8, 2)),
                             predicted_index_B=PREDICTED_B, label_B=LABEL_B)
  loss, aux = critic.critic_rl_loss(logp, batch, critic.CriticRLConfig(group_size=4, kl_coef=0.5))
  # k2 = 0.5 on one of 16 tokens; the policy term is 0 (advantages cancel over equal lengths).
  np.testing.assert_allclose(aux["kl"], 0.5 / 16, atol=1e-7)
  np.testing.assert_allclose(loss, 0.5 * 0.5 / 16, atol=1e-6)


def test_config_rejects_unknown_baseline():
  with pytest.raises(ValueError, match="baseline='mean'"):
    critic.CriticRLConfig(baseline="mean")
