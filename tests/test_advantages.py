"""Advantage estimators on two prompts with three samples each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.objectives import advantages

RUNNERS = {"eager": lambda f: f, "jit": jax.jit}

# Prompt 0 got rewards [1, 0, 0]; prompt 1 got [1, 1, 1].
REWARD_B = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(
    "name, expected",
    [
        ("none", [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        # Batch mean 4/6.
        ("batch_mean", [1 / 3, -2 / 3, -2 / 3, 1 / 3, 1 / 3, 1 / 3]),
        # Mean of the other two samples: 0, 0.5, 0.5; 1, 1, 1. Including the sample itself
        # (the plain group mean) would give [2/3, -1/3, -1/3, 0, 0, 0].
        ("rloo", [1.0, -0.5, -0.5, 0.0, 0.0, 0.0]),
        # (r - 1/3) / sqrt(1/3) with the unbiased std; the population std (ddof=0) gives
        # 1.4142136 for the first entry. A constant group gives 0, not NaN.
        ("grpo", [1.1547005, -0.5773503, -0.5773503, 0.0, 0.0, 0.0]),
    ],
)
def test_hand_values(run, name, expected):
  f = RUNNERS[run](lambda r: advantages.compute_advantages(name, r, 3))
  np.testing.assert_allclose(f(REWARD_B), expected, atol=1e-5)


def test_registry_holds_the_four_estimators():
  assert sorted(advantages.ADVANTAGES) == ["batch_mean", "grpo", "none", "rloo"]


def test_vmap_over_batches():
  batched = jnp.stack([REWARD_B, 1.0 - REWARD_B])
  out = jax.vmap(lambda r: advantages.leave_one_out(r, 3))(batched)
  np.testing.assert_allclose(out[1], [-1.0, 0.5, 0.5, 0.0, 0.0, 0.0], atol=1e-6)


def test_groups_must_tile_the_batch():
  with pytest.raises(ValueError, match="reward_B has 6 rows.*group_size=4"):
    advantages.compute_advantages("rloo", REWARD_B, 4)


@pytest.mark.parametrize("name", ["rloo", "grpo"])
def test_group_estimators_need_two_samples(name):
  with pytest.raises(ValueError, match="group_size >= 2"):
    advantages.compute_advantages(name, REWARD_B, 1)


def test_unknown_name():
  with pytest.raises(ValueError, match="baseline='ppo'"):
    advantages.compute_advantages("ppo", REWARD_B, 3)
