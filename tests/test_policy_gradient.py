"""REINFORCE with a KL penalty and the PPO clipped surrogates, by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import policy_gradient as pg

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}


class TestReinforce:
  # Response 0: two tokens (sum -3.0), advantage 2. Response 1: one token (-0.5), advantage -1.
  LOGP_BxT = jnp.array([[-1.0, -2.0], [-0.5, -0.5]])
  MASK_BxT = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  ADVANTAGE_B = jnp.array([2.0, -1.0])
  # Log-ratios [0.5, 0] on response 0 and [0, (masked) 2.5] on response 1.
  REF_LOGP_BxT = jnp.array([[-1.5, -2.0], [-0.5, -3.0]])

  @pytest.mark.parametrize("run", RUNNERS)
  def test_without_kl(self, run):
    def loss(logp, adv):
      return pg.reinforce_loss(logp, logp, self.MASK_BxT, adv, kl_coef=0.1)[0]

    value, (grad_logp, grad_adv) = RUNNERS[run](jax.value_and_grad(loss, argnums=(0, 1)))(
        self.LOGP_BxT, self.ADVANTAGE_B)
    # -mean(2 * -3.0, -1 * -0.5) = 2.75; a per-response token mean of log pi would give 1.25.
    np.testing.assert_allclose(value, 2.75, atol=1e-6)
    # -A_b / B on each response token.
    np.testing.assert_allclose(grad_logp, [[-1.0, -1.0], [0.5, 0.0]], atol=1e-6)
    # Advantages are data: without stop_gradient this would be -sum_t logp / B = [1.5, 0.25].
    np.testing.assert_allclose(grad_adv, [0.0, 0.0], atol=1e-6)

  @pytest.mark.parametrize("run", RUNNERS)
  def test_with_k2_penalty(self, run):
    def loss(logp):
      return pg.reinforce_loss(logp, self.REF_LOGP_BxT, self.MASK_BxT, self.ADVANTAGE_B, kl_coef=0.1)

    (value, aux), grad = RUNNERS[run](jax.value_and_grad(loss, has_aux=True))(self.LOGP_BxT)
    # KL per response: 0.5 * 0.5^2 = 0.125 and 0 (the 2.5 log-ratio is masked): mean 0.0625.
    np.testing.assert_allclose(aux["kl"], 0.0625, atol=1e-6)
    np.testing.assert_allclose(value, 2.75 + 0.1 * 0.0625, atol=1e-6)
    # KL gradient kl_coef / B * log-ratio = 0.05 * 0.5 on the first token only.
    np.testing.assert_allclose(grad, [[-0.975, -1.0], [0.5, 0.0]], atol=1e-6)


class TestPPOToken:
  # Token ratios (A = +1 row): 1.5 (clipped to 1.2, no gradient), 0.5 (below the range, but
  # min keeps the unclipped 0.5 and its gradient), masked 3.0.
  # (A = -1 row): 0.5 (clipped to 0.8, no gradient), 1.5 (unclipped kept), 1.0.
  RATIO_BxT = jnp.array([[1.5, 0.5, 3.0], [0.5, 1.5, 1.0]])
  MASK_BxT = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  ADVANTAGE_B = jnp.array([1.0, -1.0])

  @pytest.mark.parametrize("run", RUNNERS)
  def test_hand_values_and_gradient(self, run):
    old = jnp.full((2, 3), -1.0)
    logp = old + jnp.log(self.RATIO_BxT)

    def loss(lp):
      return pg.ppo_token_loss(lp, old, self.MASK_BxT, self.ADVANTAGE_B, clip_eps=0.2)

    (value, aux), grad = RUNNERS[run](jax.value_and_grad(loss, has_aux=True))(logp)
    # Per token: -1.2, -0.5 | 0.8, 1.5, 1.0 over 5 tokens = 0.32. Clipping without the min
    # gives (-1.2 - 0.8 + 0.8 + 1.2 + 1.0) / 5 = 0.2; a mean per response first gives 0.125.
    np.testing.assert_allclose(value, 0.32, atol=1e-6)
    # d/dlogp of -A * rho is -A * rho / 5 where unclipped, 0 where clipped.
    np.testing.assert_allclose(grad, [[0.0, -0.1, 0.0], [0.0, 0.3, 0.2]], atol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], 2 / 5, atol=1e-6)
    np.testing.assert_allclose(aux["ratio"], (1.5 + 0.5 + 0.5 + 1.5 + 1.0) / 5, atol=1e-6)


class TestPPOSequence:
  # Row 0 (A = +1): token log-ratios [0.3, 0.1, masked 5.0] -> mean 0.2, rho = e^0.2 = 1.2214,
  # clipped to 1.2. Row 1 (A = -1): [-0.1, -0.2, -0.3] -> mean -0.2, rho = e^-0.2 = 0.8187.
  LOG_RATIO_BxT = jnp.array([[0.3, 0.1, 5.0], [-0.1, -0.2, -0.3]])
  MASK_BxT = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  ADVANTAGE_B = jnp.array([1.0, -1.0])

  @pytest.mark.parametrize("run", RUNNERS)
  def test_hand_values_and_gradient(self, run):
    old = jnp.full((2, 3), -2.0)
    logp = old + self.LOG_RATIO_BxT

    def loss(lp):
      return pg.ppo_sequence_loss(lp, old, self.MASK_BxT, self.ADVANTAGE_B, clip_eps=0.2)

    (value, aux), grad = RUNNERS[run](jax.value_and_grad(loss, has_aux=True))(logp)
    rho_1 = math.exp(-0.2)
    # mean(-1.2, rho_1) = -0.1906346. Summing log-ratios instead of averaging gives
    # rho_1 = e^-0.6, clipped to 0.8, and -0.2.
    np.testing.assert_allclose(value, (-1.2 + rho_1) / 2, atol=1e-6)
    # Row 0 is clipped: no gradient. Row 1: d(rho)/dlogp_t = rho / 3 per token, / 2 responses.
    np.testing.assert_allclose(grad[0], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(grad[1], [rho_1 / 6] * 3, atol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], 0.5, atol=1e-6)

  def test_sequence_log_ratio_ignores_masked_tokens(self):
    got = pg.sequence_log_ratio(self.LOG_RATIO_BxT, jnp.zeros((2, 3)), self.MASK_BxT)
    # Including the masked 5.0 would give 1.8 for row 0.
    np.testing.assert_allclose(got, [0.2, -0.2], atol=1e-6)


def test_padding_fill_values_stay_finite():
  logp = jnp.array([[-1.0, 1e9]])  # the second token is padding with a fill value
  mask = jnp.array([[1.0, 0.0]])
  old = jnp.array([[-1.0, -1.0]])
  for loss_fn in (pg.ppo_token_loss, pg.ppo_sequence_loss):
    (value, _), grad = jax.value_and_grad(
        lambda lp, f=loss_fn: f(lp, old, mask, jnp.array([1.0]), clip_eps=0.2), has_aux=True)(logp)
    # Ratio 1 on the one real token: loss -1, gradient -1 there and 0 on the padding.
    np.testing.assert_allclose(value, -1.0, atol=1e-6)
    np.testing.assert_allclose(grad, [[-1.0, 0.0]], atol=1e-6)
