"""Masked SFT negative log-likelihood, token-mean and sequence-mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import sft

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# Row 0: three target tokens (NLL 6.0); row 1: one target token (NLL 0.5); row 2: padding.
LOGP_BxT = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -9.0, -9.0], [-7.0, -7.0, -7.0]])
MASK_BxT = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    "reduction, expected",
    [
        # (6 + 0.5) / 4 tokens. The sequence mean would give 1.25.
        ("token_mean", 1.625),
        # (6/3 + 0.5/1) / 2 responses. Counting the padding row would give 0.8333; the token mean 1.625.
        ("sequence_mean", 1.25),
    ],
)
def test_hand_values(run, reduction, expected):
  config = sft.SFTConfig(reduction=reduction)
  loss, aux = RUNNERS[run](lambda lp, m: sft.sft_loss(lp, sft.SFTBatch(m), config))(LOGP_BxT, MASK_BxT)
  np.testing.assert_allclose(loss, expected, atol=1e-6)
  np.testing.assert_allclose(aux["target_tokens"], 4.0)


def test_gradients():
  grad_token = jax.grad(lambda lp: sft.nll_token_mean(lp, MASK_BxT))(LOGP_BxT)
  grad_seq = jax.grad(lambda lp: sft.nll_sequence_mean(lp, MASK_BxT))(LOGP_BxT)
  # Token mean: -1/4 on every target token. Sequence mean: -1/(2 * 3) on row 0, -1/2 on row 1.
  np.testing.assert_allclose(grad_token, -MASK_BxT / 4, atol=1e-6)
  np.testing.assert_allclose(grad_seq[0], [-1 / 6] * 3, atol=1e-6)
  np.testing.assert_allclose(grad_seq[1], [-0.5, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(grad_seq[2], [0.0, 0.0, 0.0], atol=1e-6)


def test_empty_batch_is_zero_not_nan():
  empty = jnp.zeros_like(MASK_BxT)
  assert float(sft.nll_token_mean(LOGP_BxT, empty)) == 0.0
  assert float(sft.nll_sequence_mean(LOGP_BxT, empty)) == 0.0


def test_unknown_reduction():
  with pytest.raises(ValueError, match="SFTConfig.reduction='sum'"):
    sft.SFTConfig(reduction="sum")
