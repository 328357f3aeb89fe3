"""Advantage estimators: rewards [B] -> advantages [B], registered by name.

The batch holds `B = P * group_size` responses, the `group_size` samples of
each prompt next to each other (prompt p owns rows p*n .. p*n + n-1). Every
estimator has the signature `fn(reward_B, group_size) -> advantage_B`, so a
config names one as data (`config.baseline = "rloo"`).

  none        A = r                                        (plain REINFORCE)
  batch_mean  A = r - mean_batch(r)
  rloo        A = r - mean of the other n-1 samples of the same prompt
              (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free")
  grpo        A = (r - mean_group(r)) / (std_group(r) + eps)
              (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2, outcome supervision)

Advantages are treated as constants by the losses (they apply stop_gradient).
"""

from collections.abc import Callable

import jax.numpy as jnp

# Keeps a group whose samples all got the same reward at advantage 0 instead of 0/0.
GRPO_STD_EPS = 1e-6


def _groups(reward_B, group_size: int):
  """[B] -> [P, n], with an error that names the shapes when B % n != 0."""
  (batch,) = reward_B.shape
  if group_size < 1 or batch % group_size:
    raise ValueError(
        f"reward_B has {batch} rows, which is not a whole number of groups of "
        f"group_size={group_size} samples per prompt"
    )
  return reward_B.reshape(batch // group_size, group_size)


def no_baseline(reward_B, group_size: int):
  """A = r."""
  del group_size
  return reward_B


def batch_mean(reward_B, group_size: int):
  """A = r - mean over the whole batch."""
  del group_size
  return reward_B - jnp.mean(reward_B)


def leave_one_out(reward_B, group_size: int):
  """RLOO: A_i = r_i - (sum_j r_j - r_i) / (n - 1) within each prompt's group."""
  if group_size < 2:
    raise ValueError(f"the rloo baseline needs group_size >= 2 samples per prompt, got {group_size}")
  reward_PxN = _groups(reward_B, group_size)
  others_PxN = (jnp.sum(reward_PxN, axis=1, keepdims=True) - reward_PxN) / (group_size - 1)
  return (reward_PxN - others_PxN).reshape(-1)


def group_normalized(reward_B, group_size: int):
  """GRPO: (r - group mean) / (group std + eps), std with Bessel's correction.

  The unbiased std (ddof=1) is what the verl and TRL GRPO trainers compute
  (torch.std), the trainers the DeepCritic RL recipe builds on.
  """
  if group_size < 2:
    raise ValueError(f"the grpo baseline needs group_size >= 2 samples per prompt, got {group_size}")
  reward_PxN = _groups(reward_B, group_size)
  mean_Px1 = jnp.mean(reward_PxN, axis=1, keepdims=True)
  std_Px1 = jnp.std(reward_PxN, axis=1, keepdims=True, ddof=1)
  return ((reward_PxN - mean_Px1) / (std_Px1 + GRPO_STD_EPS)).reshape(-1)


ADVANTAGES: dict[str, Callable] = {
    "none": no_baseline,
    "batch_mean": batch_mean,
    "rloo": leave_one_out,
    "grpo": group_normalized,
}


def get_estimator(name: str) -> Callable:
  """The estimator registered as `name`; a ValueError lists the known names."""
  if name not in ADVANTAGES:
    raise ValueError(f"baseline={name!r} is not one of {sorted(ADVANTAGES)}")
  return ADVANTAGES[name]


def compute_advantages(name: str, reward_B, group_size: int):
  """The advantages of the estimator registered as `name`."""
  return get_estimator(name)(reward_B, group_size)
