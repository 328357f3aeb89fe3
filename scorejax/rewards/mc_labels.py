"""Monte Carlo step labels: the earliest step after which a solver can no longer reach the answer.

DeepCritic (Yang et al., arXiv 2505.00662, Sec. 3.2) labels solutions without
human annotation: from each step prefix tau_{<=k} a solver policy rolls out N
completions; the first step whose prefix never reaches the right answer is
the earliest error (the released settings: N = 8 at temperature 0.7, top-p
0.9). The same estimate validates SPC's sneaky steps (arXiv 2504.19162).

The prefix ending in the last step is the solution itself: it "reaches the
answer" exactly when its own final answer is right, so no rollout is drawn
for it. A solution that never gives a final answer (cut off) gets no label
(None): it is not "all correct", and it is left out of critic data.

`label_from_successes` is the pure rule; `mc_labels` draws the completions
with the sampler in JAX, every prefix of every solution in one batched pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from scorejax.rollouts import sample_batched
from scorejax.sampling import Sample, SamplerConfig


@dataclasses.dataclass(frozen=True)
class MCConfig:
  rollouts: int = 8  # N: completions per step prefix
  temperature: float = 0.7
  top_p: float = 0.9
  max_new_tokens: int = 48  # budget of one completion
  batch_size: int = 512  # completions decoded together

  def __post_init__(self):
    if self.rollouts < 1:
      raise ValueError(f"MCConfig.rollouts={self.rollouts}: need at least one completion per prefix")


def label_from_successes(successes_K: Sequence[int], complete: bool) -> int | None:
  """0-indexed first step whose prefix reached the answer in none of its completions, else -1.

  `successes_K[k]`: completions from the prefix ending in step k that reached
  the right answer. None for a solution without a final answer.
  """
  if not complete:
    return None
  for k, hits in enumerate(successes_K):
    if hits == 0:
      return k
  return -1


@dataclasses.dataclass(frozen=True)
class LabelItem:
  problem: object  # what task.reward and task.prompt_ids read
  steps: tuple[str, ...]


def prefix_successes(lm, params, task, items: Sequence[LabelItem], config: MCConfig, key: jax.Array,
                     mesh) -> list[list[int]]:
  """For each item and each step prefix but the last, how many of N completions reach the right answer.

  The last prefix (the whole solution) counts N when its own answer is right, else 0.
  """
  rows = []  # (item index, prefix length) per prompt
  for i, item in enumerate(items):
    rows += [(i, k + 1) for k in range(len(item.steps) - 1)]
  n = config.rollouts
  prompts = [task.prompt_ids(items[i].problem) + task.prefix_ids(items[i].steps[:k]) for i, k in rows]
  sampler = SamplerConfig(max_new_tokens=config.max_new_tokens, stop_tokens=task.stop_ids,
                          pad_id=task.tokenizer.pad_id)
  rule = Sample(temperature=config.temperature, top_p=config.top_p)
  completions, _ = sample_batched(lm, params, prompts, key, rule, sampler, mesh, pad_id=task.tokenizer.pad_id,
                                  batch_size=config.batch_size, n=n)
  hits = np.zeros(len(rows), np.int64)
  for r_j, ids in enumerate(completions):
    r = r_j // n
    i, k = rows[r]
    hits[r] += task.reward(items[i].problem, task.prefix_ids(items[i].steps[:k]) + ids) > 0.5
  out, r = [], 0
  for item in items:
    counts = hits[r:r + len(item.steps) - 1].tolist()
    r += len(item.steps) - 1
    whole = task.reward(item.problem, task.prefix_ids(item.steps)) > 0.5
    out.append(counts + [n if whole else 0])
  return out


def mc_labels(lm, params, task, items: Sequence[LabelItem], config: MCConfig, key: jax.Array,
              mesh) -> list[int | None]:
  """The Monte Carlo earliest-error label of each item (None: no final answer, unlabelled)."""
  successes = prefix_successes(lm, params, task, items, config, key, mesh)
  return [label_from_successes(s, task.is_complete(item.steps)) for s, item in zip(successes, items)]
