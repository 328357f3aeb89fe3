"""The papers' metrics on small cases computed by hand."""

import math

import numpy as np
import pytest

from scorejax import evaluation
from scorejax.tasks.templates import Invalid

T, F = True, False


def test_score_metrics():
  t1 = [T, T, F, F, F, T, F, F, T, F]  # right at t1: 0 1 5 8
  t2 = [T, F, T, T, F, T, F, T, T, F]  # right at t2: 0 2 3 5 7 8
  m = evaluation.score_metrics(t1, t2)
  assert m["acc_t1"] == pytest.approx(0.4)
  assert m["acc_t2"] == pytest.approx(0.6)
  assert m["delta"] == pytest.approx(0.2)
  # Wrong -> right at 2 3 7, over all 10 problems; dividing by the 6 wrong at
  # t1 instead would give 0.5.
  assert m["delta_i2c"] == pytest.approx(0.3)
  assert m["delta_c2i"] == pytest.approx(0.1)  # problem 1
  assert m["delta"] == pytest.approx(m["delta_i2c"] - m["delta_c2i"])
  with pytest.raises(ValueError, match="10 first attempts but 9"):
    evaluation.score_metrics(t1, t2[:9])


def test_processbench_metrics():
  subsets = ["gsm8k"] * 5 + ["math"] * 2
  labels = [-1, -1, 2, 0, 1, 0, -1]
  predictions = [-1, 3, 2, None, 1, 1, -1]
  m = evaluation.processbench_metrics(subsets, labels, predictions)
  gsm = m["subsets"]["gsm8k"]
  assert gsm["acc_corr"] == pytest.approx(1 / 2)
  assert gsm["acc_err"] == pytest.approx(2 / 3)  # the None prediction is wrong
  assert gsm["f1"] == pytest.approx(4 / 7)  # 2 * (2/3) * (1/2) / (2/3 + 1/2)
  assert (gsm["n_err"], gsm["n_corr"], gsm["n_invalid"]) == (3, 2, 1)
  # math: the step-0 error predicted at step 1 is wrong; a binary "has an
  # error" reading would call it right and give F1 1.0.
  mth = m["subsets"]["math"]
  assert (mth["acc_err"], mth["acc_corr"], mth["f1"]) == (0.0, 1.0, 0.0)
  # Mean over subsets, not over samples.
  assert m["mean_f1"] == pytest.approx(2 / 7)


def test_processbench_invalid_and_undefined():
  # Invalid markers and booleans are not indices: True must not count as step 1.
  m = evaluation.processbench_subset_metrics([1, 1, 1], [Invalid("no box"), True, 1])
  assert m["acc_err"] == pytest.approx(1 / 3)
  assert m["n_invalid"] == 2
  assert m["acc_corr"] is None and m["f1"] is None  # no correct samples: undefined, not 0
  # numpy integers and booleans are as valid as Python ones.
  m = evaluation.processbench_subset_metrics(np.array([1, -1]), np.array([1, -1]))
  assert (m["acc_err"], m["acc_corr"], m["n_invalid"]) == (1.0, 1.0, 0)
  m = evaluation.step_judgement_metrics([True, False], np.array([True, False]))
  assert (m["acc_correct"], m["acc_error"], m["n_invalid"]) == (1.0, 1.0, 0)
  m = evaluation.processbench_metrics(["a", "b"], [-1, 0], [-1, 0])
  assert m["subsets"]["a"]["f1"] is None
  assert m["mean_f1"] is None


def test_step_judgement_metrics():
  step_correct = [T, T, T, F, F]
  verdicts = [T, F, Invalid("no tag"), F, T]
  m = evaluation.step_judgement_metrics(step_correct, verdicts)
  # The invalid verdict is wrong and counted; dropping it would give 1/2.
  assert m["acc_correct"] == pytest.approx(1 / 3)
  assert m["acc_error"] == pytest.approx(1 / 2)
  assert m["mean"] == pytest.approx(5 / 12)
  assert m["harmonic_mean"] == pytest.approx(2 / 5)
  assert (m["n_correct"], m["n_error"], m["n_invalid"]) == (3, 2, 1)
  # Variances (1/3)(2/3)/3 = 2/27 and (1/2)(1/2)/2 = 1/8; dH/da = 2b^2/(a+b)^2 = 0.72, dH/db = 0.32.
  assert m["mean_se"] == pytest.approx(math.sqrt(2 / 27 + 1 / 8) / 2)
  assert m["harmonic_mean_se"] == pytest.approx(math.sqrt(0.72**2 * 2 / 27 + 0.32**2 / 8))  # sqrt(0.0512)
  m = evaluation.step_judgement_metrics([T, F], [F, T])  # both accuracies 0: no spread, no division by 0
  assert (m["harmonic_mean"], m["mean_se"], m["harmonic_mean_se"]) == (0.0, 0.0, 0.0)


def test_step_judgement_standard_errors_match_the_spread_of_resampled_steps():
  # 700 correct steps judged right with p 0.8, 350 wrong ones caught with p 0.45: the harmonic
  # mean's spread over many such evaluations is what the delta method says.
  rng = np.random.default_rng(0)
  a, b = rng.binomial(700, 0.8, 20000) / 700, rng.binomial(350, 0.45, 20000) / 350
  m = evaluation.step_judgement_metrics([T] * 700 + [F] * 350, [T] * 560 + [F] * 140 + [F] * 157 + [T] * 193)
  assert m["acc_correct"] == pytest.approx(0.8) and m["acc_error"] == pytest.approx(157 / 350)
  assert m["harmonic_mean_se"] == pytest.approx(np.std(2 * a * b / (a + b)), rel=0.05)
  assert m["mean_se"] == pytest.approx(np.std((a + b) / 2), rel=0.05)


def test_majority_vote_and_mv_at_k():
  assert evaluation.majority_vote([3, 1, 3, None, 1]) == 3  # tie: first seen
  assert evaluation.majority_vote([Invalid("x"), 2, Invalid("y"), Invalid("z")]) == 2
  assert evaluation.majority_vote([None, Invalid("x")]) is None
  answers = [["4", "4", "5"], ["1", "2", "2"], [None, None, "7"]]
  correct = [[T, T, F], [T, F, F], [F, F, T]]
  # Majorities 4 (right), 2 (wrong), 7 (right); "any sample right" would give 1.0.
  assert evaluation.mv_at_k(answers, correct) == pytest.approx(2 / 3)


def test_pass_at_k_is_the_unbiased_estimator():
  # 1 - C(3,2)/C(5,2) = 1 - 3/10; the biased 1 - (1 - 2/5)^2 would give 0.64.
  assert evaluation.pass_at_k(5, 2, 2) == pytest.approx(0.7)
  assert evaluation.pass_at_k(10, 3, 1) == pytest.approx(0.3)
  assert evaluation.pass_at_k(5, 0, 3) == 0.0
  assert evaluation.pass_at_k(5, 4, 2) == 1.0
  assert evaluation.mean_pass_at_k([5, 5], [2, 0], 2) == pytest.approx(0.35)
  with pytest.raises(ValueError, match="k <= n"):
    evaluation.pass_at_k(2, 1, 3)


def test_maj_at_k_over_critic_verdicts():
  voted = evaluation.maj_at_k([[1, 1, 2], [Invalid("a"), Invalid("b")], [-1, 0, -1]])
  assert voted == [1, None, -1]
  m = evaluation.processbench_subset_metrics([1, 1, -1], voted)
  assert (m["acc_err"], m["acc_corr"]) == (0.5, 1.0)
  assert evaluation.maj_at_k([[T, F, F]]) == [F]
