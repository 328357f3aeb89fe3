"""SPC's data on the built-in task: single-step judgements, SFT rows of both roles, step items, first errors."""

import numpy as np
import pytest
from hf_fixtures import config_with

from scorejax.experiments import spc_data
from scorejax.experiments.critic_data import Solution
from scorejax.rewards.game import Verdict, parse_verdict
from scorejax.tasks import arith, templates
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import make_task

# 18+14=32 carries; 32-5=27 borrows
PROBLEM = arith.ArithProblem(start=18, ops=(("+", 14), ("-", 5)), text="Start at 18. Apply +14 -5.")
LINES = ("18+14=32", "32-5=27", "Answer: 27")


def _config(**overrides):
  return config_with("arith_spc.py", "smoke", overrides)


def test_step_judgement_reads_the_checker_and_ends_in_the_verdict_tag():
  assert critiques.write_step_judgement(PROBLEM, (), LINES[0]) == "18+14=32 ; 32-14=18 ok ; right\n" \
                                                                "<Answer>Correct</Answer>"
  dropped = critiques.write_step_judgement(PROBLEM, (), "18+14=22")  # the carry dropped
  assert dropped == "18+14=32 ; 22-14=8 no ; wrong\n<Answer>Incorrect</Answer>"
  # A misread operand: the line's arithmetic holds, the redo tells it apart.
  assert critiques.write_step_judgement(PROBLEM, LINES[:1], "32-6=26").endswith("differ: wrong\n"
                                                                               "<Answer>Incorrect</Answer>")
  assert parse_verdict(critiques.write_step_judgement(PROBLEM, LINES, "Answer: 27")) == Verdict.INCORRECT


def test_the_carry_blind_annotator_is_filtered_by_the_checker():
  blind = critiques.AnnotatorConfig(carry_blind_rate=1.0)
  rng = np.random.default_rng(0)
  # Blind to the carry, it would call the right line wrong and the dropped carry right: both are filtered.
  assert critiques.annotate_step(PROBLEM, (), LINES[0], blind, rng) is None
  assert critiques.annotate_step(PROBLEM, (), "18+14=22", blind, rng) is None
  # A step without a carry it judges right.
  plain = arith.ArithProblem(start=12, ops=(("+", 3),), text="Start at 12. Apply +3.")
  assert critiques.annotate_step(plain, (), "12+3=15", blind, rng).endswith("<Answer>Correct</Answer>")


def test_solution_items_label_steps_up_to_the_first_error():
  wrong = Solution(PROBLEM, ("18+14=22", "22-5=17", "Answer: 17"), 0, "writer")
  right = Solution(PROBLEM, LINES, -1, "policy")
  items = spc_data.solution_items([wrong, right])
  assert [(it.correct, it.solution) for it in items] == [(False, 0), (None, 0), (None, 0), (True, 1), (True, 1),
                                                         (True, 1)]
  assert items[4].previous == LINES[:1] and items[4].step == LINES[1] and items[4].subset == "policy"


def test_first_error_from_verdicts_in_order():
  solutions = [Solution(PROBLEM, LINES, -1, "a")] * 4
  items = spc_data.solution_items(solutions)
  C, I, X = Verdict.CORRECT, Verdict.INCORRECT, Verdict.INVALID
  verdicts = [C, C, C,  # no Incorrect: -1
              C, I, X,  # the first Incorrect decides; what follows is not read
              X, I, C,  # an invalid verdict before any Incorrect: an invalid prediction
              I, I, I]
  assert spc_data.first_error_predictions(solutions, items, verdicts) == [-1, 1, None, 0]


def test_validation_by_completions_needs_the_original_to_hold_and_the_rewrite_to_drop():
  ok = spc_data.validated_by_completions(np.array([1.0, 0.25, 0.75, 0.75]), np.array([0.0, 0.0, 0.5, 0.125]),
                                         keep_at_least=0.5, drop_to_at_most=0.125)
  np.testing.assert_array_equal(ok, [True, False, False, True])


@pytest.fixture(scope="module")
def data():
  config = _config()
  return spc_data.BuiltinSPCData(make_task(config.task), config)


def test_critic_sft_rows_hold_both_classes_and_agree_with_the_checker(data):
  task = data.task
  rows, kept = data.critic_sft_rows("round0/critic", 0, 16)
  assert len(rows) == 16 and 0 < kept <= 1
  verdicts = [templates.parse_step_verdict(task.text(target)) for _, target in rows]
  assert 0 < sum(verdicts) < 16  # both verdicts occur
  again, _ = data.critic_sft_rows("round0/critic", 0, 16)
  assert again == rows  # a function of (stream, step)


def test_sneaky_sft_rows_name_a_type_and_write_a_wrong_line(data):
  task = data.task
  rows, _ = data.sneaky_sft_rows("round0/sneaky", 0, 16)
  for prompt, target in rows:
    error_type, step = templates.parse_sneaky(task.text(target), data.error_types)
    text = task.text(prompt)
    shown = text.split("Step: ")[1].split("\n")[0]  # the correct step the prompt shows
    assert step != shown and error_type in arith.ERROR_TYPES
  assert len({templates.parse_sneaky(task.text(t), data.error_types)[0] for _, t in rows}) > 2


def test_unknown_error_types_and_solvers_are_refused():
  config = _config()
  config.game.error_types = ("wrong_result", "off_by_vibes")
  with pytest.raises(ValueError, match="off_by_vibes"):
    spc_data.BuiltinSPCData(make_task(config.task), config)
  config = _config(**{"game.solvers": ("oracle",)})
  with pytest.raises(ValueError, match="oracle"):
    spc_data.BuiltinSPCData(make_task(config.task), config)
