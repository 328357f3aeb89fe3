"""Prompt templates as data, their rendering, and the parsers of each output format."""

import dataclasses

import pytest

from scorejax.tasks import templates
from scorejax.tasks.templates import Invalid
from scorejax.tokenizers import CharTokenizer

MATH = templates.TEMPLATES["math"]
ARITH = templates.TEMPLATES["arith"]
DEEPCRITIC = templates.TEMPLATES["deepcritic"]


def test_score_instruction_is_the_published_text():
  assert templates.SCORE_MATH_INSTRUCTION == (
      "There might be an error in the solution above because of lack of understanding of the "
      "question. Please correct the error, if any, and rewrite the solution. Only output the "
      "final solution! At the end of the Solution, when you give your final answer, write it "
      'in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
  )
  assert templates.SCORE_MATH_INSTRUCTION in MATH.self_correct
  assert DEEPCRITIC.self_correct == MATH.self_correct


def test_score_second_turn_without_a_chat_template_reads_as_one_document():
  messages = templates.self_correct_messages(MATH, "What is 1+1?", "1+1=3.")
  assert [m["role"] for m in messages] == ["user", "assistant", "user"]
  text = templates.render(CharTokenizer(), messages)
  assert text.endswith(
      "Problem:\nWhat is 1+1?\n\nSolution:\n1+1=3.\n\n"
      + templates.SCORE_MATH_INSTRUCTION
      + "\n\nSolution:\n"
  )


def test_processbench_critique_prompt_tags_paragraphs_from_zero():
  (message,) = templates.critique_messages(MATH, "P?", ["a", "b"])
  assert message["content"] == (
      "The following is a math problem and a solution (split into paragraphs, enclosed with "
      "tags and indexed from 0):\n\n[Math Problem]\n\nP?\n\n[Solution]\n\n"
      "<paragraph_0>\na\n</paragraph_0>\n\n<paragraph_1>\nb\n</paragraph_1>\n\n"
      "Your task is to review and critique the solution paragraph by paragraph. Once you "
      "identify an error in a paragraph, return the index of the paragraph where the earliest "
      "error occurs. Otherwise, return the index of -1 (which typically denotes \"not found\")."
      "\n\nPlease put your final answer (i.e., the index) in \\boxed{}."
  )


def test_deepcritic_and_arith_number_steps_from_one():
  (message,) = templates.critique_messages(DEEPCRITIC, "P?", ["a", "b"])
  assert "Step 1: a\n\nStep 2: b\n\n" in message["content"]
  (message,) = templates.critique_messages(ARITH, "Start at 1. Apply +1.", ["1+1=2", "Answer: 2"])
  assert message["content"] == (
      "Q: Start at 1. Apply +1.\n1: 1+1=2\n2: Answer: 2\nFind the first wrong line:\n"
  )


def test_step_critic_and_sneaky_and_refine_prompts():
  (message,) = templates.step_critic_messages(ARITH, "Start at 1. Apply +1 *2.", ["1+1=2"], "2*2=4")
  assert message["content"] == "Q: Start at 1. Apply +1 *2.\n1+1=2\nCheck: 2*2=4\n"
  (message,) = templates.step_critic_messages(MATH, "P?", ["a"], "b")
  assert "Step 0: a\n" in message["content"]
  assert message["content"].rstrip().endswith("<Answer>Incorrect</Answer> if it is not.")
  (message,) = templates.sneaky_messages(ARITH, "Q1", [], "1+1=2", ["wrong_result", "dropped_step"])
  assert message["content"] == "Q: Q1\nStep: 1+1=2\nErrors: wrong_result, dropped_step\n"
  (message,) = templates.refine_messages(ARITH, "Q1", "1+1=3\nAnswer: 3", "1: 1+1=2 wrong")
  assert message["content"] == "Q: Q1\n1+1=3\nAnswer: 3\nReview:\n1: 1+1=2 wrong\nFix it.\nA:\n"
  (message,) = templates.refine_messages(MATH, "P?", "S", "C")
  assert message["content"].startswith("Problem:\nP?\n\nSolution:\nS\n\nCritique:\nC\n\n")


def test_templates_are_configurable_data():
  custom = dataclasses.replace(ARITH, solve="Problem {problem} =>\n")
  assert templates.solve_messages(custom, "x")[0]["content"] == "Problem x =>\n"
  assert templates.get_templates("arith") is ARITH
  with pytest.raises(KeyError, match="unknown template set 'nope'"):
    templates.get_templates("nope")


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("The step adds correctly. <Answer>Correct</Answer>", True),
        ("<answer> INCORRECT </answer>", False),
        ("<Answer>Correct</Answer> on second thought <Answer>Incorrect</Answer>", False),
        ("Correct", Invalid),  # a bare word is not the format
        ("<Answer>Maybe</Answer>", Invalid),
        ("", Invalid),
    ],
)
def test_parse_step_verdict(text, verdict):
  out = templates.parse_step_verdict(text)
  if verdict is Invalid:
    assert isinstance(out, Invalid)
  else:
    assert out is verdict


@pytest.mark.parametrize(
    "text, num_steps, first_index, index",
    [
        ("... \\boxed{2}", 5, 0, 2),
        ("... \\boxed{2}", 5, 1, 1),  # DeepCritic's step 2 is ProcessBench's 1
        ("\\boxed{-1}", 5, 1, -1),
        ("$\\boxed{ 3 }$", None, 0, 3),
        ("\\boxed{0}", 5, 1, Invalid),  # there is no step 0 when numbering from 1
        ("\\boxed{5}", 5, 0, Invalid),  # past the last step
        ("\\boxed{-2}", 5, 0, Invalid),
        ("\\boxed{two}", 5, 0, Invalid),
        ("the error is in step 2", 5, 0, Invalid),
    ],
)
def test_parse_critique_index(text, num_steps, first_index, index):
  out = templates.parse_critique_index(text, num_steps, first_index)
  if index is Invalid:
    assert isinstance(out, Invalid)
  else:
    assert out == index


def test_format_and_parse_round_trip():
  for label in (-1, 0, 3):
    for first in (0, 1):
      text = "critique...\n" + templates.format_critique_index(label, first)
      assert templates.parse_critique_index(text, 4, first) == label
  assert templates.format_critique_index(0, 1) == "\\boxed{1}"
  for verdict in (True, False):
    assert templates.parse_step_verdict(templates.format_step_verdict(verdict)) is verdict


def test_parse_final_answer():
  assert templates.parse_final_answer("1+1=2\nAnswer: 2", "arith") == 2
  assert isinstance(templates.parse_final_answer("1+1=2", "arith"), Invalid)
  assert templates.parse_final_answer("The final answer is $\\pi$.", "math") == "\\pi"
  assert isinstance(templates.parse_final_answer("no idea", "math"), Invalid)
  # A program's tests decide, not a stated answer: self-consistency has nothing to vote on.
  assert templates.parse_final_answer("def f(): return 2", "code") == Invalid(
      "a program states no final answer: its tests decide")
  with pytest.raises(ValueError, match="unknown answer kind"):
    templates.parse_final_answer("x", "lean")


def test_parse_sneaky():
  types = ("wrong_result", "dropped_step")
  text = templates.format_sneaky("wrong_result", "12*3=35")
  assert templates.parse_sneaky(text, types) == ("wrong_result", "12*3=35")
  assert templates.parse_sneaky("Error type: dropped_step\nStep: Answer: 36", types) == (
      "dropped_step", "Answer: 36"
  )
  assert isinstance(templates.parse_sneaky("Error type: typo\nStep: 1+1=3", types), Invalid)
  assert isinstance(templates.parse_sneaky("Error type: wrong_result", types), Invalid)
  assert isinstance(templates.parse_sneaky("Step: 1+1=3", types), Invalid)
