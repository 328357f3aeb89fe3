"""KL estimators k1 / k2 / k3: hand values, masks, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import kl

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# Row 0: log-ratios log pi - log pi_ref = [0.5, -1.0, 2.5], the last token masked out.
# Row 1: policy equals reference, every estimator is 0.
LOGP_BxT = jnp.array([[-1.0, -2.0, -0.5], [-0.2, -0.2, -0.2]])
REF_LOGP_BxT = jnp.array([[-1.5, -1.0, -3.0], [-0.2, -0.2, -0.2]])
MASK_BxT = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    "estimator, expected_row0",
    [
        # 0.5 - 1.0. Ignoring the mask gives 2.0; the reversed ratio (ref - pi) gives +0.5.
        ("k1", -0.5),
        # 0.5 * (0.25 + 1.0). Ignoring the mask gives 3.75.
        ("k2", 0.625),
        # (e^-0.5 - 1 + 0.5) + (e^1 - 1 - 1). With r = pi / pi_ref instead of pi_ref / pi: 0.5166007.
        ("k3", 0.8248125),
    ],
)
def test_per_sequence_hand_values(run, estimator, expected_row0):
  f = RUNNERS[run](lambda a, b, m: kl.kl_per_sequence(a, b, m, estimator))
  np.testing.assert_allclose(f(LOGP_BxT, REF_LOGP_BxT, MASK_BxT), [expected_row0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "estimator, expected_grad",
    [
        # d k1 / d log pi = 1 on every response token, even where pi == pi_ref (row 1):
        # its expected gradient is E[grad log pi] = 0, which is why k1 is a poor penalty.
        ("k1", [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
        # d k2 / d log pi = log-ratio: [0.5, -1.0]; the masked token gets none.
        ("k2", [[0.5, -1.0, 0.0], [0.0, 0.0, 0.0]]),
        # d k3 / d log pi = 1 - exp(-log-ratio).
        ("k3", [[0.3934693, -1.7182818, 0.0], [0.0, 0.0, 0.0]]),
    ],
)
def test_gradients_through_policy_logp(estimator, expected_grad):
  grad = jax.grad(lambda a: jnp.sum(kl.kl_per_sequence(a, REF_LOGP_BxT, MASK_BxT, estimator)))(LOGP_BxT)
  np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def test_per_token_values_are_masked():
  per_token = kl.kl_per_token(LOGP_BxT, REF_LOGP_BxT, MASK_BxT, "k2")
  # 0.5 * 2.5^2 = 3.125 would appear in the last slot if the mask were ignored.
  np.testing.assert_allclose(per_token[0], [0.125, 0.5, 0.0], atol=1e-6)


def test_k2_and_k3_are_nonnegative():
  logp = jax.random.normal(jax.random.key(0), (4, 16)) * 3.0
  ref = jax.random.normal(jax.random.key(1), (4, 16)) * 3.0
  assert float(jnp.min(kl.k2(logp, ref))) >= 0.0
  assert float(jnp.min(kl.k3(logp, ref))) >= 0.0


def test_unknown_estimator_names_the_choices():
  with pytest.raises(ValueError, match="k4.*'k1', 'k2', 'k3'"):
    kl.kl_per_sequence(LOGP_BxT, REF_LOGP_BxT, MASK_BxT, "k4")


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_padding_fill_values_stay_finite(estimator):
  # A -1e9 fill on a masked token: exp(1e9) would make the value inf and the gradient NaN.
  logp = LOGP_BxT.at[0, 2].set(-1e9)
  def total(a):
    return jnp.sum(kl.kl_per_sequence(a, REF_LOGP_BxT, MASK_BxT, estimator))

  value, grad = jax.value_and_grad(total)(logp)
  assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))
  assert float(grad[0, 2]) == 0.0


def test_k3_stays_finite_for_a_token_the_policy_has_ruled_out():
  # log pi_theta - log pi_ref = -100 on a response token: exp(100) is inf in fp32.
  logp = jnp.array([[-100.5, -1.0]])
  ref = jnp.array([[-0.5, -1.0]])
  mask = jnp.ones((1, 2), bool)

  def total(a):
    return jnp.sum(kl.kl_per_sequence(a, ref, mask, "k3"))

  value, grad = jax.value_and_grad(total)(logp)
  at_bound = float(jnp.expm1(-kl.K3_MIN_LOG_RATIO) + kl.K3_MIN_LOG_RATIO)  # the estimate at the clamp
  assert np.isfinite(float(value)) and float(value) == pytest.approx(at_bound, rel=1e-6)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(grad[0, 0]) == 0.0
  # above the bound nothing changes: log-ratio -19 gives exp(19) - 1 - 19
  assert float(kl.k3(jnp.array(-19.5), jnp.array(-0.5))) == pytest.approx(np.expm1(19.0) - 19.0, rel=1e-6)
