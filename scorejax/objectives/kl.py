"""Per-token KL estimators between the policy and a frozen reference.

Schulman, "Approximating KL Divergence" (2020). With tokens sampled from the
policy pi_theta and log_ratio = log pi_theta(y_t) - log pi_ref(y_t):

  k1 = log_ratio                           unbiased for KL(pi_theta || pi_ref), high variance
  k2 = 0.5 * log_ratio ** 2                biased, low variance
  k3 = exp(-log_ratio) - 1 + log_ratio     unbiased, low variance, always >= 0

Used as a differentiable penalty in a loss (the gradient flowing through
log pi_theta, samples held fixed), on-policy tokens give, in expectation:

  grad k1 -> 0                              (E[grad log pi_theta] = 0: no pull at all)
  grad k2 -> grad KL(pi_theta || pi_ref)    (per token, the prefix held fixed)
  grad k3 -> grad KL(pi_ref || pi_theta)    (the other direction)

So k2 is the estimator whose gradient follows the reverse KL that SCoRe's
objectives name; k1 and k3 are the usual choices for *reporting* the value.
The estimators are registered by name so that configs choose them as data.
"""

from collections.abc import Callable

import jax.numpy as jnp


def k1(logp_BxT, ref_logp_BxT):
  """Log-ratio estimator: log pi_theta - log pi_ref."""
  return logp_BxT - ref_logp_BxT


def k2(logp_BxT, ref_logp_BxT):
  """Squared log-ratio estimator: 0.5 * (log pi_theta - log pi_ref) ** 2."""
  return 0.5 * jnp.square(logp_BxT - ref_logp_BxT)


# k3's exp(-log_ratio) overflows fp32 for a log-ratio below about -88 (a token the policy has all but
# ruled out and the reference has not): the log-ratio is clamped here first. At the bound the estimate
# is already ~4.9e8 nats, and below it the penalty stops growing (its gradient there is 0).
K3_MIN_LOG_RATIO = -20.0


def k3(logp_BxT, ref_logp_BxT):
  """Low-variance estimator: (r - 1) - log r with r = pi_ref / pi_theta, the log-ratio clamped at
  K3_MIN_LOG_RATIO so that the estimate stays finite."""
  log_ratio_BxT = jnp.maximum(logp_BxT - ref_logp_BxT, K3_MIN_LOG_RATIO)
  return jnp.expm1(-log_ratio_BxT) + log_ratio_BxT


KL_ESTIMATORS: dict[str, Callable] = {"k1": k1, "k2": k2, "k3": k3}


def get_estimator(name: str) -> Callable:
  """The estimator registered as `name`; a ValueError lists the known names."""
  if name not in KL_ESTIMATORS:
    raise ValueError(f"kl_estimator={name!r} is not one of {sorted(KL_ESTIMATORS)}")
  return KL_ESTIMATORS[name]


def kl_per_token(logp_BxT, ref_logp_BxT, mask_BxT, estimator: str):
  """Per-token KL estimate, zero outside the response tokens."""
  # Outside the mask the log-ratio is set to 0 before exp, so padding holding any
  # values (a -1e9 fill, say) gives neither inf nor a NaN gradient.
  logp_BxT = jnp.where(mask_BxT > 0, logp_BxT, ref_logp_BxT)
  return get_estimator(estimator)(logp_BxT, ref_logp_BxT) * mask_BxT


def kl_per_sequence(logp_BxT, ref_logp_BxT, mask_BxT, estimator: str):
  """KL estimate summed over each response's tokens: [B, T] -> [B]."""
  return jnp.sum(kl_per_token(logp_BxT, ref_logp_BxT, mask_BxT, estimator), axis=-1)
