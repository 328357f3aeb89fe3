"""SCoRe Stage I and Stage II: hand values, gradient routing, shaping, the loss factory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import score
from scorejax.objectives.loss import build_loss_fn

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# Episode 0 goes incorrect -> correct (r1 = 0, r2 = 1); episode 1 correct -> incorrect.
LOGP_Y1_BxT = jnp.array([[-1.0, -0.5, 0.0], [-2.0, -1.0, -1.0]])  # masked sums -1.5, -4.0
LOGP_Y2_BxT = jnp.array([[-0.3, -0.7, -1.0], [-0.4, -0.4, -0.4]])  # masked sums -2.0, -0.8
BATCH = score.ScoreBatch(
    # y1 log-ratios [0.2, 0 | -1.0, 0, 0]: k2 sums 0.02 and 0.5, mean 0.26.
    ref_logp_y1_BxT=jnp.array([[-1.2, -0.5, 0.0], [-1.0, -1.0, -1.0]]),
    mask_y1_BxT=jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
    # y2 log-ratios [0, -0.5, 0 | 0, 0, (masked) 0.5]: k2 sums 0.125 and 0, mean 0.0625.
    ref_logp_y2_BxT=jnp.array([[-0.3, -0.2, -1.0], [-0.4, -0.4, -0.9]]),
    mask_y2_BxT=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
    reward_y1_B=jnp.array([0.0, 1.0]),
    reward_y2_B=jnp.array([1.0, 0.0]),
)
POLICY = score.AttemptLogprobs(LOGP_Y1_BxT, LOGP_Y2_BxT)
CONFIG = score.ScoreConfig(alpha=10.0, beta1=0.01, beta2=0.1, kl_estimator="k2", baseline="none")


def _value_and_grads(stage_loss, config, run="eager"):
  f = jax.value_and_grad(lambda p: stage_loss(p, BATCH, config), has_aux=True)
  return RUNNERS[run](f)(POLICY)


@pytest.mark.parametrize("run", RUNNERS)
def test_stage1_hand_value(run):
  (loss, aux), _ = _value_and_grads(score.stage1_loss, CONFIG, run)
  # -mean(1 * -2.0, 0 * -0.8) + 0.1 * 0.26 + 0.01 * 0.0625. Swapping beta1 and beta2 gives 1.00885.
  np.testing.assert_allclose(loss, 1.0 + 0.026 + 0.000625, atol=1e-6)
  np.testing.assert_allclose(aux["kl_y1"], 0.26, atol=1e-6)
  np.testing.assert_allclose(aux["kl_y2"], 0.0625, atol=1e-6)
  np.testing.assert_allclose(aux["reward_y2"], 0.5, atol=1e-6)
  np.testing.assert_allclose(aux["delta_i_to_c"], 0.5, atol=1e-6)
  np.testing.assert_allclose(aux["delta_c_to_i"], 0.5, atol=1e-6)


def test_stage1_batch_mean_baseline():
  config = score.ScoreConfig(alpha=10.0, beta1=0.01, beta2=0.1, baseline="batch_mean")
  (loss, _), _ = _value_and_grads(score.stage1_loss, config)
  # A2 = r2 - 0.5 = [0.5, -0.5]: -mean(0.5 * -2.0, -0.5 * -0.8) = 0.3, plus the same KL terms.
  np.testing.assert_allclose(loss, 0.3 + 0.026 + 0.000625, atol=1e-6)


@pytest.mark.parametrize("run", RUNNERS)
def test_stage1_kl_pulls_on_the_first_attempt(run):
  _, grads = _value_and_grads(score.stage1_loss, CONFIG, run)
  # beta2 / B * log-ratio on y1's tokens. An implementation that only subtracts the y1 KL
  # from the y2 reward gives exactly zero here.
  np.testing.assert_allclose(grads.y1_BxT, [[0.01, 0.0, 0.0], [-0.05, 0.0, 0.0]], atol=1e-7)
  # y2: -A2 / B on its tokens, plus beta1 / B * log-ratio (-0.5) on the second token.
  np.testing.assert_allclose(grads.y2_BxT, [[-0.5, -0.5025, -0.5], [0.0, 0.0, 0.0]], atol=1e-7)


def test_stage1_reward_does_not_reach_the_first_attempt():
  config = score.ScoreConfig(beta1=0.0, beta2=0.0, baseline="none")
  _, grads = _value_and_grads(score.stage1_loss, config)
  # Crediting y1 with r2 would give -r2 / B = -0.5 on episode 0's y1 tokens.
  np.testing.assert_array_equal(grads.y1_BxT, np.zeros((2, 3)))
  assert float(jnp.abs(grads.y2_BxT).sum()) > 0.0


@pytest.mark.parametrize("run", RUNNERS)
def test_stage2_hand_value_and_gradients(run):
  (loss, aux), grads = _value_and_grads(score.stage2_loss, CONFIG, run)
  # r_hat2 = r2 + 10 (r2 - r1) = [11, -10]. Policy terms: -mean(0 * -1.5, 1 * -4.0) = 2.0 and
  # -mean(11 * -2.0, -10 * -0.8) = 7.0. KL: 0.01 * (0.26 + 0.0625).
  np.testing.assert_allclose(loss, 9.0 + 0.003225, atol=1e-5)
  # y1 carries r1 (not the shaped r_hat2): -A1 / B plus beta1 / B * log-ratio.
  np.testing.assert_allclose(grads.y1_BxT, [[0.001, 0.0, 0.0], [-0.505, -0.5, -0.5]], atol=1e-6)
  np.testing.assert_allclose(grads.y2_BxT, [[-5.5, -5.5025, -5.5], [5.0, 5.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(aux["shaped_reward_y2"], 0.5, atol=1e-6)


def test_shaped_second_reward_table():
  r1 = jnp.array([0.0, 0.0, 1.0, 1.0])
  r2 = jnp.array([0.0, 1.0, 0.0, 1.0])
  # i->i 0, i->c 1 + alpha, c->i -alpha, c->c 1. A bonus of alpha * r2 alone would give c->i 0.
  np.testing.assert_allclose(score.shaped_second_reward(r1, r2, 10.0), [0.0, 11.0, -10.0, 1.0])
  batch = BATCH._replace(reward_y1_B=jnp.array([0.0, 0.0]), reward_y2_B=jnp.array([1.0, 0.0]))
  _, aux = score.stage2_loss(POLICY, batch, CONFIG)
  np.testing.assert_allclose(aux["shaping_bonus"], 5.0, atol=1e-6)


def test_shaping_raises_the_weight_of_i_to_c_over_c_to_i():
  def y2_weight_gap(alpha):
    config = score.ScoreConfig(alpha=alpha, beta1=0.0, baseline="batch_mean")
    _, grads = _value_and_grads(score.stage2_loss, config)
    # weight_b = -B * dL/dlogp(y2_b, first token); episode 0 is i->c, episode 1 is c->i.
    return float(-2.0 * (grads.y2_BxT[0, 0] - grads.y2_BxT[1, 0]))

  # Without shaping the gap is r2(i->c) - r2(c->i) = 1; with it, 1 + 2 * alpha.
  np.testing.assert_allclose(y2_weight_gap(0.0), 1.0, atol=1e-6)
  np.testing.assert_allclose(y2_weight_gap(10.0), 21.0, atol=1e-5)


def test_one_forward_pass_with_two_masks_equals_separate_arrays():
  # [x, y1, p, y2] in one row: y1 at positions 0-1, y2 at positions 3-4.
  logp_BxL = jnp.array([[-1.0, -0.5, -9.0, -0.3, -0.7]])
  ref_BxL = jnp.array([[-1.2, -0.5, -9.0, -0.3, -0.2]])
  batch = score.ScoreBatch(
      ref_logp_y1_BxT=ref_BxL, mask_y1_BxT=jnp.array([[1.0, 1.0, 0.0, 0.0, 0.0]]),
      ref_logp_y2_BxT=ref_BxL, mask_y2_BxT=jnp.array([[0.0, 0.0, 0.0, 1.0, 1.0]]),
      reward_y1_B=jnp.array([0.0]), reward_y2_B=jnp.array([1.0]))
  loss, _ = score.stage1_loss(score.AttemptLogprobs(logp_BxL, logp_BxL), batch, CONFIG)
  # -(1 * (-0.3 - 0.7)) + 0.1 * 0.5 * 0.2^2 + 0.01 * 0.5 * 0.5^2.
  np.testing.assert_allclose(loss, 1.0 + 0.002 + 0.00125, atol=1e-6)


def test_loss_factory_matches_direct_call():
  params = {"y1": LOGP_Y1_BxT, "y2": LOGP_Y2_BxT}
  loss_fn = build_loss_fn(score.stage2_loss, lambda p, batch: score.AttemptLogprobs(p["y1"], p["y2"]),
                          lambda batch: batch, CONFIG)
  (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, BATCH)
  (direct_loss, _), direct_grads = _value_and_grads(score.stage2_loss, CONFIG)
  np.testing.assert_allclose(loss, direct_loss, atol=1e-6)
  np.testing.assert_allclose(grads["y1"], direct_grads.y1_BxT, atol=1e-6)
  np.testing.assert_allclose(grads["y2"], direct_grads.y2_BxT, atol=1e-6)
  assert set(aux) >= {"reward_y1", "reward_y2", "kl_y1", "kl_y2", "shaping_bonus"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kl_estimator": "k9"}, "kl_estimator='k9'"),
        ({"baseline": "mean"}, "baseline='mean'"),
        ({"group_size": 0}, "group_size must be >= 1"),
        ({"credit": "discounted"}, "credit='discounted'"),
    ],
)
def test_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    score.ScoreConfig(**kwargs)


def test_shaping_baseline_moves_alpha_r1_into_y2s_baseline():
  # One group of 4 samples of a prompt, (r1, r2) = (1, 1), (1, 1), (0, 0), (1, 0); one token each.
  ones = jnp.ones((4, 1))
  batch = score.ScoreBatch(ref_logp_y1_BxT=-ones, mask_y1_BxT=ones, ref_logp_y2_BxT=-ones, mask_y2_BxT=ones,
                           reward_y1_B=jnp.array([1.0, 1.0, 0.0, 1.0]),
                           reward_y2_B=jnp.array([1.0, 1.0, 0.0, 0.0]))
  policy = score.AttemptLogprobs(-ones, -ones)  # at pi_ref: the KL terms have zero gradient

  def y2_advantages(shaping_baseline):
    config = score.ScoreConfig(alpha=10.0, baseline="rloo", group_size=4, shaping_baseline=shaping_baseline)
    grads = jax.grad(lambda p: score.stage2_loss(p, batch, config)[0])(policy)
    return -4.0 * grads.y2_BxT[:, 0]  # d loss / d log pi(y2_b) = -A2_b / B

  # r_hat2 = 1, 1, 0, -10, minus the mean of the 3 others: the failed y2 after a failed y1
  # (third) gains +8/3 only because a sibling went c->i.
  np.testing.assert_allclose(y2_advantages(False), [4.0, 4.0, 8 / 3, -32 / 3], atol=1e-5)
  # (1 + alpha) * r2 = 11, 11, 0, 0 minus the others' mean: both failed y2s are pushed down alike.
  np.testing.assert_allclose(y2_advantages(True), [22 / 3, 22 / 3, -22 / 3, -22 / 3], atol=1e-5)


# A tabular two-turn policy with rational probabilities: pi(y1 = right) = 1/4, pi(y2 = right | y1 wrong) = 1/2,
# pi(y2 = right | y1 right) = 3/4. Its 16 equally weighted rows, (y1, y2) = (0, 0) x6, (0, 1) x6, (1, 0) x1,
# (1, 1) x3, are the exact distribution: a loss averaged over them has the exact expected gradient.
THETA1 = jnp.log(jnp.array([3.0, 1.0]))  # logits of y1 in {wrong, right}
THETA2 = jnp.log(jnp.array([[1.0, 1.0], [1.0, 3.0]]))  # logits of y2 given y1
Y1 = jnp.array([0] * 12 + [1] * 4)
Y2 = jnp.array([0] * 6 + [1] * 6 + [0] + [1] * 3)


def _tabular_grads(config):
  """-d loss / d (theta1, theta2) of stage2_loss over the 16 rows: the expected ascent direction."""
  def loss(theta1, theta2):
    logp1 = jax.nn.log_softmax(theta1)[Y1][:, None]
    logp2 = jax.nn.log_softmax(theta2, axis=-1)[Y1, Y2][:, None]
    ones = jnp.ones_like(logp1)
    batch = score.ScoreBatch(jax.lax.stop_gradient(logp1), ones, jax.lax.stop_gradient(logp2), ones,
                             Y1.astype(jnp.float32), Y2.astype(jnp.float32))
    return score.stage2_loss(score.AttemptLogprobs(logp1, logp2), batch, config)[0]
  g1, g2 = jax.grad(loss, argnums=(0, 1))(THETA1, THETA2)
  return -g1, -g2


def _closed_form(weight_r1: float, weight_r2: float, alpha: float):
  """The exact gradients of the incentives in closed form: y1's E[weight_r1 * r1 + weight_r2 * E[r2 | y1]]
  through pi(y1), and y2's (1 + alpha) * E_y1[ E[r2 | y1] ] through pi(y2 | y1)."""
  def y1_incentive(theta1):
    p1 = jax.nn.softmax(theta1)
    q = jax.nn.softmax(THETA2, axis=-1)[:, 1]  # P(y2 right | y1)
    return jnp.sum(p1 * (weight_r1 * jnp.array([0.0, 1.0]) + weight_r2 * q))

  def y2_incentive(theta2):
    return (1 + alpha) * jnp.sum(jax.nn.softmax(THETA1) * jax.nn.softmax(theta2, axis=-1)[:, 1])
  return jax.grad(y1_incentive)(THETA1), jax.grad(y2_incentive)(THETA2)


def test_per_attempt_credit_by_exact_enumeration():
  config = score.ScoreConfig(alpha=10.0, beta1=0.0, baseline="none")
  g1, g2 = _tabular_grads(config)
  want1, want2 = _closed_form(1.0, 0.0, alpha=10.0)
  np.testing.assert_allclose(g1, want1, atol=1e-6)  # y1: E[r1] only
  np.testing.assert_allclose(g2, want2, atol=1e-6)  # y2: (1 + alpha) x E[r2]: the -alpha * r1 term adds nothing
  _, unshaped = _tabular_grads(score.ScoreConfig(alpha=0.0, beta1=0.0, baseline="none"))
  np.testing.assert_allclose(g2, 11.0 * unshaped, atol=1e-6)
  assert g1[1] > 0  # the first attempt is pushed towards right (a sign error would push it down)


def test_return_credit_by_exact_enumeration():
  alpha, gamma = 10.0, 1.0
  config = score.ScoreConfig(alpha=alpha, beta1=0.0, baseline="none", credit="return", gamma=gamma)
  g1, g2 = _tabular_grads(config)
  want1, want2 = _closed_form(1 - gamma * alpha, gamma * (1 + alpha), alpha)
  np.testing.assert_allclose(g1, want1, atol=1e-6)  # y1: (1 - gamma alpha) r1 + gamma (1 + alpha) E[r2 | y1]
  np.testing.assert_allclose(g2, want2, atol=1e-6)  # y2 as under per-attempt credit
  # y1 right: -9 + 11 * 3/4 = -0.75; y1 wrong: 11 * 1/2 = 5.5: a wrong first attempt pays.
  assert g1[1] < 0
  half = score.ScoreConfig(alpha=alpha, beta1=0.0, baseline="none", credit="return", gamma=0.05)
  assert _tabular_grads(half)[0][1] > 0  # gamma * alpha < 1 keeps the incentive to be right first
