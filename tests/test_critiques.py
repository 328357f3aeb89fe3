"""Deliberate critiques of the built-in task: the two angles, the strict parser, the seed annotator."""

import numpy as np
import pytest

from scorejax.tasks import arith, templates
from scorejax.tasks.arith import critiques

PROBLEM = arith.ArithProblem(7, (("+", 5), ("+", 3), ("-", 9)), "Start at 7. Apply +5 +3 -9.")
RIGHT = ("7+5=12", "12+3=15", "15-9=6", "Answer: 6")


def test_a_right_solution_is_judged_step_by_step_and_boxed_minus_one():
  assert critiques.write_critique(PROBLEM, RIGHT) == (
      "1: 7+5=12 ; 12-5=7 ok ; right\n"
      "2: 12+3=15 ; 15-3=12 ok ; right\n"
      "3: 15-9=6 ; 6+9=15 ok ; right\n"
      "4: Answer: 6 ; last 6 ok ; right\n"
      "\\boxed{-1}")


@pytest.mark.parametrize("step2, line", [
    # Both angles reject a wrong result: 16 - 3 = 13 is not the previous 12.
    ("12+3=16", "2: 12+3=15 ; 16-3=13 no ; wrong"),
    # A misread operand keeps the arithmetic consistent (16 - 4 = 12): the angles differ, the redo settles it.
    ("12+4=16", "2: 12+3=15 ; 16-4=12 ok ; differ: wrong"),
    # Another operator: 9 + 3 = 12 holds, but the problem says +3.
    ("12-3=9", "2: 12+3=15 ; 9+3=12 ok ; differ: wrong"),
])
def test_the_critique_stops_at_the_first_wrong_step(step2, line):
  text = critiques.write_critique(PROBLEM, ("7+5=12", step2, "16-9=7", "Answer: 7"))
  assert text.split("\n") == ["1: 7+5=12 ; 12-5=7 ok ; right", line, "\\boxed{2}"]
  assert critiques.parse_critique(text, 4) == 1  # 0-indexed, as ProcessBench labels are


@pytest.mark.parametrize("text, reason", [
    ("1: 7+5=12 ; 12-5=7 ok ; right", "does not end with a \\\\boxed"),
    ("1: 7+5=12 ; 12-5=7 no ; wrong\n\\boxed{2}", "does not match the judgements"),
    ("1: 7+5=12 ; 12-5=7 ok ; right\n\\boxed{-1}", "judges 1 of 4 steps and finds no error"),
    ("2: 7+5=12 ; 12-5=7 ok ; wrong\n\\boxed{2}", "judges step 2: steps go in order"),
    ("1: 7+5=12 ; 12-5=7 ok ; wrong\n2: x ; y ok ; right\n\\boxed{1}", "goes on after step 1"),
    ("1: 7+5=12 looks fine\n\\boxed{-1}", "line 1 is not"),
    ("1: 7+5=12 ; 12-5=7 ok ; right\n2: a ; b ok ; right\n3: a ; b ok ; right\n4: a ; b ok ; right\n"
     "5: a ; b no ; wrong\n\\boxed{5}", "step 5 does not exist"),
])
def test_a_malformed_critique_is_invalid_never_a_class(text, reason):
  parsed = critiques.parse_critique(text, 4)
  assert templates.is_invalid(parsed)
  assert __import__("re").search(reason, parsed.reason), parsed.reason


def test_the_annotators_mistakes_are_filtered_by_the_label():
  carrying = arith.ArithProblem(8, (("+", 5), ("-", 4)), "Start at 8. Apply +5 -4.")
  dropped = ("8+5=3", "3-4=9", "Answer: 9")  # a dropped carry at step 1 (label 0)
  blind = critiques.AnnotatorConfig(carry_blind_rate=1.0)
  rng = np.random.default_rng(0)
  # Blind to carries, its redo of step 1 is 8+5=3 too: it passes the error and misses the label -> filtered.
  assert critiques.annotate(carrying, dropped, blind, rng) is None
  # An annotator without mistakes keeps its critique; it ends at step 1.
  kept = critiques.annotate(carrying, dropped, critiques.AnnotatorConfig(), rng)
  assert kept.split("\n")[-1] == "\\boxed{1}"
  # A slip on a right step is a false alarm: filtered, so kept critiques always end at the label.
  slipping = critiques.AnnotatorConfig(slip_rate=1.0)
  assert critiques.annotate(PROBLEM, RIGHT, slipping, rng) is None
  with pytest.raises(ValueError, match="slip_rate=1.5"):
    critiques.AnnotatorConfig(slip_rate=1.5)


def test_kept_critiques_always_name_the_label_and_some_carry_a_wrong_redo():
  rng = np.random.default_rng(1)
  annotator = critiques.AnnotatorConfig(slip_rate=0.3, carry_blind_rate=0.5)
  kept = wrong_redo = 0
  for i in range(300):
    problem = arith.make_problems(arith.PRESETS["easy"], "train", 1, seed=i)[0]
    solution = arith.write_solution(problem, rng, 0.5, carry_slip_rate=0.5)
    text = critiques.annotate(problem, solution.lines, annotator, rng)
    if text is None:
      continue
    kept += 1
    assert critiques.parse_critique(text, len(solution.lines)) == solution.label
    wrong_redo += text != critiques.write_critique(problem, solution.lines)
  assert 50 < kept < 300 and wrong_redo > 0  # imperfect, filtered, and not all filtered away


def test_flagged_redo_reads_the_redo_of_the_flagged_step():
  problem = arith.ArithProblem(start=7, ops=(("+", 5), ("*", 3)), text="Start at 7. Apply +5 *3.")
  slipped = ("7+5=12", "12*3=35", "Answer: 35")
  assert critiques.flagged_redo(critiques.write_critique(problem, slipped)) == "12*3=36"
  assert critiques.flagged_redo(critiques.write_critique(problem, slipped, redo_of=lambda i, right: "12*3=46")) == (
      "12*3=46")
  assert critiques.flagged_redo(critiques.write_critique(problem, ("7+5=12", "12*3=36", "Answer: 36"))) is None
  assert critiques.flagged_redo("no critique") is None
