"""The papers' evaluation metrics, as pure functions of labels and predictions.

All rates are fractions in [0, 1] (the papers print percentages). A rate
over an empty set is None, never 0: a subset with no erroneous samples has
no acc_err.

Unparseable outputs are never mapped to a class. A ProcessBench prediction
is valid only as an integer (Python or numpy; None, a boolean or any
`Invalid` marker counts as wrong); a step verdict is valid only as a boolean.
"""

from __future__ import annotations

import collections
import math
import numbers
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from scorejax.tasks.templates import Invalid


def _rate(hits: int, total: int) -> float | None:
  return hits / total if total else None


def _is_index(value) -> bool:
  return isinstance(value, numbers.Integral) and not _is_verdict(value)


def _is_verdict(value) -> bool:
  return isinstance(value, (bool, np.bool_))


# ------------------------------------------------------------------ SCoRe


def score_metrics(correct_t1: Sequence[bool], correct_t2: Sequence[bool]) -> dict[str, float]:
  """SCoRe (Kumar et al., arXiv 2409.12917), Table 2 columns, as fractions of all problems.

  acc_t1 = Acc@t1, acc_t2 = Acc@t2, delta = Acc@t2 - Acc@t1,
  delta_i2c = share wrong at t1 and right at t2, delta_c2i = right at t1 and
  wrong at t2 (so delta = delta_i2c - delta_c2i).
  """
  if len(correct_t1) != len(correct_t2):
    raise ValueError(
        f"score_metrics: {len(correct_t1)} first attempts but {len(correct_t2)} second attempts"
    )
  n = len(correct_t1)
  if n == 0:
    raise ValueError("score_metrics: no problems")
  t1 = [bool(c) for c in correct_t1]
  t2 = [bool(c) for c in correct_t2]
  acc_t1 = sum(t1) / n
  acc_t2 = sum(t2) / n
  return {
      "acc_t1": acc_t1,
      "acc_t2": acc_t2,
      "delta": acc_t2 - acc_t1,
      "delta_i2c": sum((not a) and b for a, b in zip(t1, t2)) / n,
      "delta_c2i": sum(a and (not b) for a, b in zip(t1, t2)) / n,
  }


# ------------------------------------------------------------------ ProcessBench


def f1(acc_err: float | None, acc_corr: float | None) -> float | None:
  """ProcessBench F1: the harmonic mean of the two accuracies (0 when both are 0)."""
  if acc_err is None or acc_corr is None:
    return None
  if acc_err + acc_corr == 0:
    return 0.0
  return 2 * acc_err * acc_corr / (acc_err + acc_corr)


def processbench_subset_metrics(labels: Sequence[int], predictions: Sequence) -> dict:
  """ProcessBench (Zheng et al., arXiv 2412.06559) on one subset.

  acc_err: share of erroneous samples (label >= 0) whose predicted 0-indexed
  step equals the label; acc_corr: share of correct samples (label -1)
  predicted -1. An unparseable prediction (None, Invalid) is wrong.
  """
  if len(labels) != len(predictions):
    raise ValueError(
        f"processbench: {len(labels)} labels but {len(predictions)} predictions"
    )
  err = [(l, p) for l, p in zip(labels, predictions) if l != -1]
  corr = [(l, p) for l, p in zip(labels, predictions) if l == -1]
  acc_err = _rate(sum(_is_index(p) and p == l for l, p in err), len(err))
  acc_corr = _rate(sum(_is_index(p) and p == -1 for _, p in corr), len(corr))
  return {
      "acc_err": acc_err,
      "acc_corr": acc_corr,
      "f1": f1(acc_err, acc_corr),
      "n_err": len(err),
      "n_corr": len(corr),
      "n_invalid": sum(not _is_index(p) for p in predictions),
  }


def processbench_metrics(
    subsets: Sequence[str], labels: Sequence[int], predictions: Sequence
) -> dict:
  """Per-subset metrics and the headline mean F1 over subsets with a defined F1.

  Returns {"subsets": {name: processbench_subset_metrics}, "mean_f1": float | None}.
  """
  if not len(subsets) == len(labels) == len(predictions):
    raise ValueError(
        f"processbench: {len(subsets)} subsets, {len(labels)} labels, "
        f"{len(predictions)} predictions"
    )
  grouped: dict[str, tuple[list, list]] = {}
  for s, l, p in zip(subsets, labels, predictions):
    ls, ps = grouped.setdefault(s, ([], []))
    ls.append(l)
    ps.append(p)
  per_subset = {s: processbench_subset_metrics(ls, ps) for s, (ls, ps) in grouped.items()}
  f1s = [m["f1"] for m in per_subset.values() if m["f1"] is not None]
  return {"subsets": per_subset, "mean_f1": sum(f1s) / len(f1s) if f1s else None}


# ------------------------------------------------------------------ SPC


def step_judgement_metrics(step_correct: Sequence[bool], verdicts: Sequence) -> dict:
  """SPC (Chen et al., arXiv 2504.19162) single-step judgement accuracy.

  `verdicts[i]` is True (judged Correct), False (Incorrect) or anything else
  for an invalid judgement, which is wrong for either class and counted.
  acc_correct: accuracy on correct steps; acc_error: on erroneous steps;
  mean and harmonic_mean of the two, each with its standard error over the
  labelled steps (`mean_se`, `harmonic_mean_se`: the two accuracies as
  independent binomials, the harmonic mean's by the delta method), the
  sampling noise of the figure on this many steps.
  """
  if len(step_correct) != len(verdicts):
    raise ValueError(
        f"step judgements: {len(step_correct)} labels but {len(verdicts)} verdicts"
    )
  valid = [_is_verdict(v) for v in verdicts]
  pos = [(ok, v) for c, v, ok in zip(step_correct, verdicts, valid) if c]
  neg = [(ok, v) for c, v, ok in zip(step_correct, verdicts, valid) if not c]
  acc_correct = _rate(sum(ok and bool(v) for ok, v in pos), len(pos))
  acc_error = _rate(sum(ok and not bool(v) for ok, v in neg), len(neg))
  both = acc_correct is not None and acc_error is not None
  mean_se, harmonic_mean_se = (_step_accuracy_errors(acc_correct, len(pos), acc_error, len(neg))
                               if both else (None, None))
  return {
      "acc_correct": acc_correct,
      "acc_error": acc_error,
      "mean": (acc_correct + acc_error) / 2 if both else None,
      "harmonic_mean": f1(acc_correct, acc_error) if both else None,
      "mean_se": mean_se,
      "harmonic_mean_se": harmonic_mean_se,
      "n_correct": len(pos),
      "n_error": len(neg),
      "n_invalid": valid.count(False),
  }


def _step_accuracy_errors(a: float, n_a: int, b: float, n_b: int) -> tuple[float, float]:
  """Standard errors of (a + b) / 2 and of 2ab / (a + b) for accuracies a, b on n_a, n_b independent steps."""
  var_a, var_b = a * (1 - a) / n_a, b * (1 - b) / n_b
  mean_se = math.sqrt(var_a + var_b) / 2
  if a + b == 0:
    return mean_se, 0.0
  d_a, d_b = 2 * b * b / (a + b) ** 2, 2 * a * a / (a + b) ** 2  # dH/da, dH/db
  return mean_se, math.sqrt(d_a * d_a * var_a + d_b * d_b * var_b)


# ------------------------------------------------------------------ sampling


def majority_vote(values: Iterable) -> Hashable | None:
  """The most frequent valid value; ties go to the one seen first.

  None and `Invalid` markers do not vote; with no valid value the result is
  None.
  """
  counts: collections.Counter = collections.Counter()
  for v in values:
    if v is None or isinstance(v, Invalid):
      continue
    counts[v] += 1
  if not counts:
    return None
  # Counter keeps first-insertion order, and most_common is stable on ties.
  return counts.most_common(1)[0][0]


def mv_at_k(answers: Sequence[Sequence], correct: Sequence[Sequence[bool]]) -> float:
  """MV@k: share of problems whose majority answer is right.

  `answers[i]` are the k canonical answers sampled for problem i (None =
  no answer) and `correct[i][j]` says whether answers[i][j] is right.
  """
  if len(answers) != len(correct) or not answers:
    raise ValueError(f"mv_at_k: {len(answers)} answer lists for {len(correct)} correctness lists")
  hits = 0
  for i, (ans, ok) in enumerate(zip(answers, correct)):
    if len(ans) != len(ok):
      raise ValueError(f"mv_at_k: problem {i} has {len(ans)} answers but {len(ok)} flags")
    winner = majority_vote(ans)
    if winner is not None:
      hits += any(a == winner and c for a, c in zip(ans, ok))
  return hits / len(answers)


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k).

  Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which stays exact-ish for
  large n where the binomials overflow.
  """
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
  if n - c < k:
    return 1.0
  prod = 1.0
  for i in range(n - c + 1, n + 1):
    prod *= 1.0 - k / i
  return 1.0 - prod


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
  if len(num_samples) != len(num_correct) or not num_samples:
    raise ValueError(
        f"mean_pass_at_k: {len(num_samples)} sample counts for {len(num_correct)} correct counts"
    )
  return math.fsum(pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)) / len(num_samples)


def maj_at_k(verdicts_per_item: Sequence[Sequence]) -> list:
  """Maj@k over sampled critiques (DeepCritic): one voted prediction per item.

  Works for ProcessBench indices and SPC verdicts alike; an item whose k
  critiques are all invalid gets None (an unparseable prediction).
  """
  return [majority_vote(v) for v in verdicts_per_item]
