"""Answer extraction and equivalence: formats, math-verify, time limits, adversarial text."""

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorejax.rewards import answers


@pytest.mark.parametrize(
    "text, boxed",
    [
        (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are set notation, not grouping
        (r"\boxed{1} then \boxed{2}", "2"),  # the last one wins
        (r"\boxed{1} then \boxed{2", "1"),  # an unclosed last box falls back
        (r"\fbox{7}", "7"),
        (r"$\boxed 5$", "5"),
        (r"\boxed{", None),
        ("no box", None),
    ],
)
def test_extract_boxed(text, boxed):
  assert answers.extract_boxed(text) == boxed


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("The final answer is 12.", "12"),
        ("48/2 = 24\n#### 1,234", "1,234"),
        ("so the answer is 42.", "42"),
        ("7+5=12\nAnswer: 12", "12"),
        ("So the sum is 5.\n\n# Answer\n\n5", "5"),  # PRM800K's last step
        ("# Answer\n\n\\frac{1}{2}", "\\frac{1}{2}"),
        ("# Answer\n\n", None),
        # A box beats every phrase, even an earlier-priority one after it.
        ("\\boxed{3}\nThe final answer is 4", "3"),
        # "The final answer is" beats "####" and "The answer is".
        ("The answer is 1\n#### 2\nThe final answer is $3$", "3"),
        ("The final answer is \\boxed{7}. I hope it is correct.", "7"),
        ("nothing to see", None),
        ("The answer is", None),
    ],
)
def test_extract_final_answer(text, answer):
  assert answers.extract_final_answer(text) == answer


def test_extract_arith_answer():
  assert answers.extract_arith_answer("7+5=12\nAnswer: 12\nAnswer: -3\n") == -3
  assert answers.extract_arith_answer("Answer: twelve") is None
  assert answers.extract_arith_answer("x Answer: 12") is None  # must be its own line
  assert answers.extract_arith_answer("Answer: " + "9" * 5000) is None  # no 5,000-digit int


@pytest.mark.parametrize(
    "prediction, reference, same",
    [
        ("12", "12", True),
        ("1,234", "1234", True),
        ("$12$.", "12", True),
        ("0012", "12", True),  # integers compare as integers
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac{1}{2}", "0.5", True),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("\\frac{1}{3}", "\\frac{1}{2}", False),
        ("13", "12", False),
        (None, "12", False),
        ("", "12", False),
        ("}{", "1", False),
    ],
)
def test_answers_equivalent(prediction, reference, same):
  assert answers.answers_equivalent(prediction, reference) is same


def test_math_reward_on_the_score_format():
  response = "x = 2.\nFinal Answer: The final answer is $\\frac{6}{3}$. I hope it is correct."
  assert answers.math_reward(response, "2") == 1.0
  assert answers.math_reward(response, "3") == 0.0
  assert answers.math_reward("no answer here", "2") == 0.0


def test_a_check_that_runs_out_of_time_is_false_and_stops_on_time():
  answers.answers_equivalent("0.5", "\\frac{1}{2}")  # the worker is up
  pid = answers._VERIFIER._proc.pid
  # 9^(9^9) has 370 million digits: sympy would compute for minutes.
  start = time.monotonic()
  assert answers.answers_equivalent("9^{9^{9}}", "3", timeout_s=0.3) is False
  assert time.monotonic() - start < 1.0
  assert answers._VERIFIER._proc.pid == pid  # the alarm ended it; no restart needed


def test_an_alarm_swallowed_once_fires_again():
  class Stubborn:
    """Swallows the first timeout, as a gc callback or __del__ would."""

    def parse(self, text, parsing_timeout=None):
      try:
        time.sleep(5)
      except answers.CheckTimeout:
        pass
      time.sleep(5)

  previous = signal.signal(signal.SIGALRM, answers._raise_check_timeout)
  try:
    start = time.monotonic()
    assert answers._verify_in_worker(Stubborn(), "a", "b", 0.1) is None
    assert time.monotonic() - start < 1.0  # a one-shot alarm would wait the full 10 s
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
  finally:
    signal.signal(signal.SIGALRM, previous)


def test_a_stuck_worker_is_killed_and_replaced():
  answers.answers_equivalent("0.5", "\\frac{1}{2}")
  stuck = answers._VERIFIER._proc
  # A stopped process stands for one lost in C code, where no signal reaches.
  os.kill(stuck.pid, signal.SIGSTOP)
  start = time.monotonic()
  assert answers.answers_equivalent("0.5", "\\frac{1}{2}", timeout_s=0.2) is False
  assert time.monotonic() - start < 0.2 + answers.VERIFIER_KILL_GRACE_S + 0.5
  assert stuck.poll() is not None  # killed
  assert answers.answers_equivalent("0.5", "\\frac{1}{2}") is True  # a fresh worker


def test_checks_work_from_any_thread():
  results = []
  thread = threading.Thread(
      target=lambda: results.append(answers.answers_equivalent("\\frac{1}{2}", "0.5"))
  )
  thread.start()
  thread.join()
  assert results == [True]


def test_pathological_lengths_are_linear():
  start = time.monotonic()
  assert answers.extract_final_answer("The answer is" + " " * 200_000 + "x") == "x"
  assert answers.extract_final_answer("\\boxed{" * 50_000) is None
  assert answers.extract_final_answer("<answer>" + " \t" * 100_000) is None
  assert answers.normalize_answer("1," * 100_000) is not None
  assert time.monotonic() - start < 3.0


_FRAGMENTS = [
    "\\boxed{", "\\fbox{", "}", "{", "\\frac{", "\\dfrac", "\\sqrt{", "^", "^{", "_", "!",
    "1", "0", "9", "3.5", "-", "+", "*", "/", "=", "x", "y", "e", "i", "\\pi", "\\infty",
    "$", "(", ")", "[", "]", ",", ".", "%", "\\%", "\\{", "\\}", "\\left(", "\\right)",
    "\\text{", "\\cdot", "\\le", "\\\\", " ", "\n", "####", "The final answer is ",
    "The answer is ", "Answer:", "I hope it is correct.", "Final Answer: ",
]
# Well-formed LaTeX that sympy will try to evaluate, towers and factorials included.
latex_math = st.recursive(
    st.integers(-99, 10**6).map(str) | st.sampled_from(["x", "\\pi", "e", "0.5"]),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda ab: f"{ab[0]}^{{{ab[1]}}}"),
        st.tuples(inner, inner).map(lambda ab: f"\\frac{{{ab[0]}}}{{{ab[1]}}}"),
        st.tuples(inner, st.sampled_from("+-*/="), inner).map("".join),
        inner.map(lambda a: f"({a})!"),
        inner.map(lambda a: f"\\sqrt{{{a}}}"),
    ),
    max_leaves=8,
)
adversarial = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join),
    latex_math,
    latex_math.map(lambda m: f"The final answer is ${m}$. I hope it is correct."),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial)
def test_extractors_never_crash(text):
  for extract in (answers.extract_boxed, answers.extract_final_answer):
    out = extract(text)
    assert out is None or isinstance(out, str)
  value = answers.extract_arith_answer(text)
  assert value is None or isinstance(value, int)
  assert isinstance(answers.normalize_answer(text), str)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial, adversarial)
def test_equivalence_never_crashes_or_hangs(prediction, reference):
  start = time.monotonic()
  assert isinstance(answers.answers_equivalent(prediction, reference, timeout_s=0.5), bool)
  assert time.monotonic() - start < 2.0
