"""SPC offline loss: sequence-level clipped ratio on game records plus 0.15 x SFT."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import spc
from scorejax.objectives.loss import build_loss_fn

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# Record 0: game win (+1), mean-token log-ratio 0.1 -> rho = e^0.1 = 1.1052, inside the clip range.
# Record 1: game loss (-1), log-ratio -0.5 -> rho = e^-0.5 = 0.6065, below 0.8: clipped.
# Record 2: supervised, mean-token log-prob -2.0 (its reference and reward are ignored).
LOGP_BxT = jnp.array([[-1.0, -1.0], [-2.0, -1.5], [-1.5, -2.5]])
BATCH = spc.SPCBatch(
    ref_logp_BxT=jnp.array([[-1.1, -1.1], [-1.5, -1.0], [0.0, 0.0]]),
    mask_BxT=jnp.ones((3, 2)),
    reward_B=jnp.array([1.0, -1.0, 5.0]),
    is_sft_B=jnp.array([0.0, 0.0, 1.0]),
)
RHO_0 = math.exp(0.1)


@pytest.mark.parametrize("run", RUNNERS)
def test_hand_value_and_gradient(run):
  f = jax.value_and_grad(lambda lp: spc.spc_loss(lp, BATCH, spc.SPCConfig()), has_aux=True)
  (loss, aux), grad = RUNNERS[run](f)(LOGP_BxT)
  # L_rl = mean(-rho_0, -min(-0.6065, -0.8)) = (-1.1052 + 0.8) / 2 = -0.1525855; L_sft = 2.0.
  # A ratio of summed (not mean) log-probs gives rho_0 = e^0.2, clipped: loss 0.1. An SFT
  # term averaged over all three records gives 0.15 * 2.0 / 3 - 0.1525855 = -0.0525855.
  np.testing.assert_allclose(aux["rl_loss"], (-RHO_0 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(aux["sft_loss"], 2.0, atol=1e-6)
  np.testing.assert_allclose(loss, 0.15 * 2.0 + (-RHO_0 + 0.8) / 2, atol=1e-6)
  # Record 0: d(-rho)/dlogp_t = -rho / 2 tokens / 2 game records. Record 1: clipped, none.
  # Record 2: -0.15 / 2 tokens.
  np.testing.assert_allclose(grad, [[-RHO_0 / 4] * 2, [0.0, 0.0], [-0.075, -0.075]], atol=1e-6)
  np.testing.assert_allclose(aux["kl"], (0.1 - 0.5) / 2, atol=1e-6)
  np.testing.assert_allclose(aux["ratio"], (RHO_0 + math.exp(-0.5)) / 2, atol=1e-6)
  np.testing.assert_allclose(aux["clip_fraction"], 0.5, atol=1e-6)
  np.testing.assert_allclose(aux["reward"], 0.0, atol=1e-6)


def test_kl_coefficient_enters_the_advantage():
  loss, aux = spc.spc_loss(LOGP_BxT, BATCH, spc.SPCConfig(kl_coef=0.1))
  # A = reward - 0.1 * log-ratio: 0.99 and -0.95. Record 1: min(-0.95 * 0.6065, -0.95 * 0.8) = -0.76.
  expected_rl = (-0.99 * RHO_0 + 0.76) / 2
  np.testing.assert_allclose(aux["rl_loss"], expected_rl, atol=1e-6)
  np.testing.assert_allclose(loss, 0.3 + expected_rl, atol=1e-6)


def test_batches_with_one_kind_of_record():
  only_games = BATCH._replace(is_sft_B=jnp.zeros(3), mask_BxT=jnp.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
  loss, aux = spc.spc_loss(LOGP_BxT, only_games, spc.SPCConfig())
  # No supervised record: the SFT term is 0 (not NaN); the padding row is not a game.
  np.testing.assert_allclose(aux["sft_loss"], 0.0)
  np.testing.assert_allclose(loss, (-RHO_0 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(aux["game_records"], 2.0)
  only_sft = BATCH._replace(is_sft_B=jnp.ones(3))
  loss, aux = spc.spc_loss(LOGP_BxT, only_sft, spc.SPCConfig())
  # Mean-token NLLs 1.0, 1.75, 2.0.
  np.testing.assert_allclose(loss, 0.15 * (1.0 + 1.75 + 2.0) / 3, atol=1e-6)
  np.testing.assert_allclose(aux["rl_loss"], 0.0)


def test_loss_factory():
  loss_fn = build_loss_fn(spc.spc_loss, lambda params, batch: params["logp"], lambda batch: batch, spc.SPCConfig())
  (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))({"logp": LOGP_BxT}, BATCH)
  np.testing.assert_allclose(loss, 0.3 + (-RHO_0 + 0.8) / 2, atol=1e-6)
  assert grads["logp"].shape == (3, 2)


def test_supervised_rows_ignore_their_reference_values():
  # A -1e9 reference on the supervised row would overflow exp(log_rho) if it were used.
  batch = BATCH._replace(ref_logp_BxT=BATCH.ref_logp_BxT.at[2].set(-1e9))
  f = jax.value_and_grad(lambda lp: spc.spc_loss(lp, batch, spc.SPCConfig()), has_aux=True)
  (loss, _), grad = f(LOGP_BxT)
  np.testing.assert_allclose(loss, 0.15 * 2.0 + (-RHO_0 + 0.8) / 2, atol=1e-6)
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("run", RUNNERS)
def test_token_ratios_clip_the_token_that_moved_while_the_record_mean_stays_inside(run):
  # Record 0 (a win): token log-ratios 0.3 and -0.1, mean 0.1. Record 1 as above (-0.5, -0.5, a loss).
  logp_BxT = LOGP_BxT.at[0].set(jnp.array([-0.8, -1.2]))
  f = jax.value_and_grad(lambda lp, ratio: spc.spc_loss(lp, BATCH, spc.SPCConfig(ratio=ratio)), has_aux=True)
  if run == "jit":
    f = jax.jit(f, static_argnums=1)
  (_, aux), grad = f(logp_BxT, "sequence")
  # One ratio per record: e^0.1 is inside the clip range, so both tokens of record 0 move.
  np.testing.assert_allclose(aux["rl_loss"], (-RHO_0 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(grad[0], [-RHO_0 / 4] * 2, atol=1e-6)
  (loss, aux), grad = f(logp_BxT, "token")
  # One per token: e^0.3 = 1.3499 > 1.2 is clipped (-1.2, no gradient), e^-0.1 = 0.9048 is not; record 1's
  # tokens are both clipped at 0.8, as its record was: L_rl = ((-1.2 - 0.9048) / 2 + 0.8) / 2.
  rho_1 = math.exp(-0.1)
  np.testing.assert_allclose(aux["rl_loss"], ((-1.2 - rho_1) / 2 + 0.8) / 2, atol=1e-6)
  np.testing.assert_allclose(loss, 0.15 * 2.0 + ((-1.2 - rho_1) / 2 + 0.8) / 2, atol=1e-6)
  # Record 0's second token: -rho / 2 tokens / 2 game records; the supervised row as before.
  np.testing.assert_allclose(grad, [[0.0, -rho_1 / 4], [0.0, 0.0], [-0.075, -0.075]], atol=1e-6)
  np.testing.assert_allclose(aux["clip_fraction"], (0.5 + 1.0) / 2, atol=1e-6)
  with pytest.raises(ValueError, match="SPC ratio='tokens'; expected one of \\('sequence', 'token', 'none'\\)"):
    spc.SPCConfig(ratio="tokens")


@pytest.mark.parametrize("run", RUNNERS)
def test_no_ratio_weights_each_records_likelihood_by_its_reward(run):
  f = jax.value_and_grad(lambda lp: spc.spc_loss(lp, BATCH, spc.SPCConfig(ratio="none", kl_coef=0.1)), has_aux=True)
  (loss, aux), grad = RUNNERS[run](f)(LOGP_BxT)
  # A = 1 - 0.1 * 0.1 = 0.99 and -1 - 0.1 * (-0.5) = -0.95, held constant; mean-token log-probs -1.0 and -1.75:
  # L_rl = (0.99 * 1.0 - 0.95 * 1.75) / 2, nothing clipped, however far record 1's ratio (e^-0.5) has moved.
  expected_rl = (0.99 - 0.95 * 1.75) / 2
  np.testing.assert_allclose(aux["rl_loss"], expected_rl, atol=1e-6)
  np.testing.assert_allclose(loss, 0.15 * 2.0 + expected_rl, atol=1e-6)
  np.testing.assert_allclose(aux["clip_fraction"], 0.0)
  # d/dlogp_t: -A / 2 tokens / 2 game records (no gradient through A); the supervised row as before.
  np.testing.assert_allclose(grad, [[-0.99 / 4] * 2, [0.95 / 4] * 2, [-0.075, -0.075]], atol=1e-6)
