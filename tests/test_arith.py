"""The built-in arithmetic task: generator, splits, exact step checker, error makers, writers."""

import dataclasses

import numpy as np
import pytest

from scorejax.tasks import arith, processbench, templates

# Start at 7, +5, *3, -4: values 7 -> 12 -> 36 -> 32.
P = arith.ArithProblem(
    start=7, ops=(("+", 5), ("*", 3), ("-", 4)), text="Start at 7. Apply +5 *3 -4."
)
RIGHT = ("7+5=12", "12*3=36", "36-4=32", "Answer: 32")


def test_problem_values_and_reference_solution():
  assert P.values == (7, 12, 36, 32)
  assert P.answer == 32  # precedence (7 + 5*3 - 4) would give 18
  assert P.key == "7 +5 *3 -4"
  assert arith.solution_lines(P) == RIGHT
  assert arith.format_solution(RIGHT) == "7+5=12\n12*3=36\n36-4=32\nAnswer: 32"


@pytest.mark.parametrize(
    "lines, label",
    [
        (RIGHT, -1),
        (("7 + 5 = 12", "12 * 3=36", "36-4 = 32", "Answer:32"), -1),  # spacing is free
        (("7+5=12", "12*3=35", "35-4=31", "Answer: 31"), 1),  # wrong result
        # Wrong operand, arithmetic consistent: a checker that only redoes each
        # line's own arithmetic would call this -1.
        (("7+5=12", "12*4=48", "48-4=44", "Answer: 44"), 1),
        (("7+5=12", "13*3=39", "39-4=35", "Answer: 35"), 1),  # previous result miscopied
        (("7+5=12", "12-4=8", "Answer: 8"), 1),  # dropped *3
        (("7+5=12", "12*3=36", "Answer: 36"), 2),  # answer before the last step
        (("7+5=12", "12*3=36", "36-4=32", "Answer: 33"), 3),  # 1-indexed would say 4
        (RIGHT + ("1+1=2",), 4),  # a line after the answer
        (("seven plus five is twelve",) + RIGHT[1:], 0),
    ],
)
def test_earliest_error_labels(lines, label):
  assert arith.earliest_error(P, lines) == label


def test_check_step_follows_the_written_previous_line():
  # After a wrong line, the next line is judged against what was written:
  # 35-4=31 follows from 12*3=35 (a checker against the true chain says no).
  assert arith.check_step(P, ("7+5=12", "12*3=35"), "35-4=31")
  assert not arith.check_step(P, ("7+5=12", "12*3=35"), "36-4=32")
  assert arith.expected_line(P, ()) == "7+5=12"
  assert arith.expected_line(P, RIGHT[:3]) == "Answer: 32"
  assert arith.expected_line(P, RIGHT) is None


def test_check_solution_fields():
  check = arith.check_solution(P, "7+5=12\n\n12*3=36\n36-4=32\nAnswer: 32\n")
  assert check == arith.SolutionCheck(RIGHT, -1, 32, True, True)
  truncated = arith.check_solution(P, "7+5=12\n12*3=36")
  assert (truncated.label, truncated.final_answer, truncated.complete) == (-1, None, False)
  lucky = arith.check_solution(P, ("7+5=12", "12*3=35", "35-4=31", "Answer: 32"))
  assert (lucky.label, lucky.answer_correct) == (1, True)  # right answer, wrong process


def test_reward_reads_the_last_answer_line():
  assert arith.reward(P, "7+5=12\nAnswer: 12\n12*3=36\n36-4=32\nAnswer: 32") == 1.0
  assert arith.reward(P, "7+5=12\n12*3=36\n36-4=32\nAnswer: 33") == 0.0
  assert arith.reward(P, "7+5=12\n12*3=36\n36-4=32") == 0.0


def test_error_makers_on_the_hand_example():
  rng = np.random.default_rng(0)
  assert arith.applicable_error_types(P, RIGHT[:3]) == ("wrong_answer",)
  assert arith.applicable_error_types(P, RIGHT) == ()
  # Dropping the last operation answers early; dropping the first applies *3 to 7.
  assert arith.corrupt_step(P, RIGHT[:2], "dropped_step", rng) == "Answer: 36"
  assert arith.corrupt_step(P, (), "dropped_step", rng) == "7*3=21"
  for _ in range(20):
    assert arith.corrupt_step(P, RIGHT[:1], "wrong_operator", rng) in ("12+3=15", "12-3=9")
    assert arith.corrupt_step(P, RIGHT[:1], "wrong_operand", rng) in (
        "12*1=12", "12*2=24", "12*4=48", "12*5=60"
    )
    assert arith.corrupt_step(P, RIGHT[:1], "wrong_result", rng) in (
        "12*3=26", "12*3=34", "12*3=35", "12*3=37", "12*3=38", "12*3=46"
    )
    assert arith.corrupt_step(P, RIGHT[:1], "wrong_previous", rng) in (
        "2*3=6", "10*3=30", "11*3=33", "13*3=39", "14*3=42", "22*3=66"
    )
  with pytest.raises(ValueError, match="does not apply to line 3"):
    arith.corrupt_step(P, RIGHT[:3], "wrong_result", rng)
  with pytest.raises(ValueError, match="unknown error type"):
    arith.corrupt_step(P, (), "typo", rng)


def test_every_corruption_is_caught_by_the_checker():
  rng = np.random.default_rng(1)
  config = arith.PRESETS["hard"]
  for _ in range(100):
    problem = arith.sample_problem(rng, config)
    right = arith.solution_lines(problem)
    for i in range(len(right)):
      for error_type in arith.applicable_error_types(problem, right[:i]):
        solution = arith.inject_error(problem, i, error_type, rng)
        assert solution.label == i, (problem.key, i, error_type, solution.lines)
        assert arith.check_solution(problem, solution.lines).complete


def test_continue_solution_from_a_prefix():
  assert arith.continue_solution(P, ()) == RIGHT
  assert arith.continue_solution(P, ("7+5=12", "12*3=35")) == (
      "7+5=12", "12*3=35", "35-4=31", "Answer: 31"
  )
  # After a dropped step the skipped operation is not redone: a continuation by
  # position alone would write 8-4=4.
  assert arith.continue_solution(P, ("7+5=12", "12-4=8")) == ("7+5=12", "12-4=8", "Answer: 8")
  assert arith.continue_solution(P, RIGHT) == RIGHT
  rng = np.random.default_rng(2)
  noisy = arith.continue_solution(
      P, RIGHT[:1], rng, step_error_rate=1.0, error_types=("wrong_result",)
  )
  assert arith.earliest_error(P, noisy) == 1
  with pytest.raises(ValueError, match="needs an rng"):
    arith.continue_solution(P, (), step_error_rate=0.5)


def test_noisy_writer_error_rate_is_controlled():
  rng = np.random.default_rng(3)
  problems = arith.make_problems(arith.ArithConfig(), "train", 400, seed=0)
  for rate in (0.0, 0.3, 1.0):
    solutions = [arith.write_solution(p, rng, rate) for p in problems * 5]
    wrong = np.mean([s.label >= 0 for s in solutions])
    # 2,000 draws: the binomial std at 0.3 is about 0.01.
    assert abs(wrong - rate) < 0.04, (rate, wrong)
  answer_only = [arith.write_solution(p, rng, 1.0, ("wrong_answer",)) for p in problems[:50]]
  assert all(s.label == len(s.problem.ops) for s in answer_only)
  assert all(not s.answer_correct for s in answer_only)


def test_dropped_carry_on_hand_examples():
  assert arith.carry_slip("+", 18, 14) == -10  # 8+4 carries: 22 written for 32
  assert arith.carry_slip("-", 42, 17) == 10  # 2-7 borrows: 35 written for 25
  assert arith.carry_slip("+", 12, 3) == arith.carry_slip("-", 36, 4) == arith.carry_slip("*", 7, 5) == 0
  # The kind of each position of P: 7+5 carries; 12*3, 36-4 and the answer line do not.
  assert [arith.carries(P, RIGHT[:i]) for i in range(5)] == [True, False, False, False, False]
  assert arith.carries(P, ("7+5=2",)) is False  # from the written 2: 2*3 does not carry
  assert arith.carries(arith.ArithProblem(start=13, ops=(("-", 9),), text=""), ()) is True  # 13-9 borrows
  rng = np.random.default_rng(0)
  assert arith.corrupt_step(P, (), "dropped_carry", rng) == "7+5=2"  # 7+5 carries
  assert "dropped_carry" not in arith.applicable_error_types(P, RIGHT[:1])  # 12*3
  assert "dropped_carry" not in arith.applicable_error_types(P, RIGHT[:2])  # 36-4 does not borrow
  # 13-9 borrows: the habit writes 14, and the solution goes on from what it wrote.
  q = arith.ArithProblem(start=13, ops=(("-", 9), ("+", 2)), text="Start at 13. Apply -9 +2.")
  always = arith.write_solution(q, rng, 0.0, carry_slip_rate=1.0)
  assert always.lines == ("13-9=14", "14+2=16", "Answer: 16")
  assert (always.label, always.error_type) == (0, "dropped_carry")
  assert arith.write_solution(q, rng, 0.0).lines == arith.solution_lines(q)
  # 9+8 carries, then 17+5 carries again (7+5): each carry slips on its own draw.
  r = arith.ArithProblem(start=9, ops=(("+", 8), ("+", 5)), text="Start at 9. Apply +8 +5.")
  assert arith.continue_solution(r, (), rng, carry_slip_rate=1.0) == ("9+8=7", "7+5=2", "Answer: 2")


def test_error_type_of_a_written_line():
  kind = arith.error_type_of
  assert [kind(P, (), line) for line in ("7+5=12", "7+5=2", "7+5=13", "8+5=13", "7*5=35", "7+6=13", "7*3=21")] == [
      None, "dropped_carry", "wrong_result", "wrong_previous", "wrong_operator", "wrong_operand", "dropped_step"]
  assert kind(P, RIGHT[:2], "Answer: 36") == "dropped_step"  # the last operation skipped
  assert kind(P, RIGHT[:1], "Answer: 12") == "other"  # the answer two operations early
  assert [kind(P, RIGHT[:3], line) for line in ("Answer: 32", "Answer: 31", "36-4=32")] == [None, "wrong_answer", "other"]
  assert kind(P, RIGHT, "Answer: 32") == kind(P, (), "7+") == "other"
  assert kind(P, ("7+5=2",), "2*3=6") is None  # right from the written value
  # Every error maker's line reads back as its own type, except where two makers write the same line.
  rng = np.random.default_rng(0)
  shared = {("wrong_result", "dropped_carry"), ("wrong_operand", "dropped_step"), ("wrong_operator", "dropped_step")}
  for q in arith.make_problems(arith.ArithConfig(), "train", 200, 0):
    lines = arith.solution_lines(q)
    for i in range(len(lines)):
      for error_type in arith.applicable_error_types(q, lines[:i]):
        read = kind(q, lines[:i], arith.corrupt_step(q, lines[:i], error_type, rng))
        assert read == error_type or (error_type, read) in shared, (q.key, i, error_type, read)


def test_carry_slip_rate_is_per_carrying_step():
  rng = np.random.default_rng(6)
  config = arith.ArithConfig(max_add=9, ops=("+", "-"), max_value=60, max_start=50)
  problems = arith.make_problems(config, "train", 500, seed=0)
  first_lines = [arith.write_solution(p, rng, 0.0, carry_slip_rate=0.6).lines[0] for p in problems * 4]
  carrying = [arith.carry_slip(*p.ops[0][:1], p.start, p.ops[0][1]) != 0 for p in problems * 4]
  slipped = [line != arith.solution_lines(p)[0] for line, p in zip(first_lines, problems * 4)]
  assert not any(s and not c for s, c in zip(slipped, carrying))  # only carrying steps slip
  rate = np.sum(slipped) / np.sum(carrying)  # about 1,000 carrying first steps: std 0.016
  assert abs(rate - 0.6) < 0.06, rate
  with pytest.raises(ValueError, match="carry_slip_rate"):
    arith.write_solution(P, rng, 0.0, carry_slip_rate=1.5)
  with pytest.raises(ValueError, match="needs an rng"):
    arith.continue_solution(P, (), carry_slip_rate=0.5)


def test_carry_profile_counts_lines_on_their_own_operands():
  texts = [
      "4+8=2\n2-3=9\nAnswer: 9",  # the habit twice: a dropped carry, then a dropped borrow from 2
      "4+8=12\n12-3=9\nAnswer: 9",  # both right
      "5+2=7\n7-3=5\n5*2=10\nAnswer: 10",  # plain: right, then wrong; * lines are not counted
      "9+6=14\ngarbage",  # carries, neither right (15) nor dropped (5)
  ]
  profile = arith.carry_profile(texts)
  assert profile["carry"] == pytest.approx(dict(lines=5, right=0.4, dropped=0.4, other=0.2))
  assert profile["plain"] == pytest.approx(dict(lines=2, right=0.5, dropped=0.0, other=0.5))
  assert arith.carry_profile([]) == {k: dict(lines=0, right=0.0, dropped=0.0, other=0.0) for k in ("carry", "plain")}


def test_slip_ops_limit_the_habit_to_carries_and_a_negative_value_has_no_carry():
  p = arith.ArithProblem(start=5, ops=(("+", 8), ("-", 4), ("+", 9)), text="Start at 5. Apply +8 -4 +9.")
  rng = np.random.default_rng(0)
  # The carry of 5+8 is dropped; 3-4 is then computed right, and -1+9 has no carry to drop.
  assert arith.write_solution(p, rng, 0.0, carry_slip_rate=1.0, slip_ops="+").lines == (
      "5+8=3", "3-4=-1", "-1+9=8", "Answer: 8")
  assert arith.write_solution(p, rng, 0.0, carry_slip_rate=1.0).lines == ("5+8=3", "3-4=9", "9+9=8", "Answer: 8")
  assert arith.write_solution(p, rng, 0.0, carry_slip_rate=1.0, slip_ops="-").lines == (
      "5+8=13", "13-4=19", "19+9=28", "Answer: 28")
  assert arith.carry_slip("+", -1, 9) == 0
  with pytest.raises(ValueError, match="slip_ops='\\*'"):
    arith.write_solution(p, rng, 0.0, slip_ops="*")


def test_splits_are_disjoint_seeded_and_phrasing_independent():
  config = arith.ArithConfig()
  eval_a = arith.make_problems(config, "eval", 100, seed=0)
  eval_b = arith.make_problems(config, "eval", 100, seed=0)
  assert eval_a == eval_b
  assert len({p.key for p in eval_a}) == 100
  train = [p for _, p in zip(range(2000), arith.iter_problems(config, "train", seed=0))]
  train_other_seed = arith.make_problems(config, "train", 500, seed=7)
  assert not {p.key for p in eval_a} & {p.key for p in train + train_other_seed}
  rng = np.random.default_rng(4)
  share = np.mean([arith.split_of(arith.sample_problem(rng, config), config) == "eval"
                   for _ in range(3000)])
  assert abs(share - config.eval_fraction) < 0.03
  words = dataclasses.replace(P, text="Ann has 7 pens.")
  assert arith.split_of(words, config) == arith.split_of(P, config)


def test_a_dev_split_takes_its_share_from_train_and_leaves_eval_as_it_was():
  config = arith.ArithConfig()
  with_dev = dataclasses.replace(config, dev_fraction=0.2)
  rng = np.random.default_rng(5)
  problems = [arith.sample_problem(rng, config) for _ in range(3000)]
  before = [arith.split_of(p, config) for p in problems]
  after = [arith.split_of(p, with_dev) for p in problems]
  assert [a == "eval" for a in after] == [b == "eval" for b in before]
  assert abs(np.mean([a == "dev" for a in after]) - 0.2) < 0.03
  assert "dev" not in before
  dev = arith.make_problems(with_dev, "dev", 50, seed=0)
  train = [p for _, p in zip(range(2000), arith.iter_problems(with_dev, "train", seed=0))]
  assert not {p.key for p in dev} & {p.key for p in train}
  with pytest.raises(ValueError, match="dev_fraction"):
    dataclasses.replace(config, dev_fraction=0.95)


def test_word_phrasing():
  rng = np.random.default_rng(5)
  config = arith.ArithConfig(phrasing="words")
  text = arith.render_problem(7, P.ops, "words", rng)
  name = text.split()[0]
  assert text.startswith(f"{name} has 7 ")
  assert f"{name} gets 5 more. {name} then has 3 times as many. {name} gives away 4." in text
  assert text.endswith(" now?")
  assert arith.sample_problem(rng, config).text.endswith(" now?")


def test_config_errors():
  with pytest.raises(ValueError, match="min_steps"):
    arith.ArithConfig(min_steps=3, max_steps=2)
  with pytest.raises(ValueError, match="ops"):
    arith.ArithConfig(ops=("/",))
  tiny = arith.ArithConfig(
      min_steps=1, max_steps=1, max_start=1, max_add=1, max_value=2, ops=("+",)
  )
  with pytest.raises(ValueError, match="too small|leave that split"):
    arith.make_problems(tiny, "eval", 5, seed=0)


def test_two_attempt_examples():
  rng = np.random.default_rng(6)
  problems = arith.make_problems(arith.ArithConfig(), "train", 300, seed=1)
  pairs = arith.two_attempt_examples(problems, rng, first_error_rate=0.5)
  assert all(p.second.label == -1 and p.second.lines == arith.solution_lines(p.first.problem)
             for p in pairs)
  assert abs(np.mean([p.first.label >= 0 for p in pairs]) - 0.5) < 0.1
  ts = templates.TEMPLATES["arith"]
  messages = templates.two_attempt_messages(ts, P.text, "7+5=12", "\n".join(RIGHT))
  assert "".join(m["content"] for m in messages) == (
      "Q: Start at 7. Apply +5 *3 -4.\nA:\n7+5=12\n"
      "Check and rewrite.\nA:\n" + "\n".join(RIGHT)
  )


def test_reference_critiques():
  wrong = ("7+5=12", "12*4=48", "48-4=44", "Answer: 44")
  critique = arith.solution_critique(P, wrong)
  assert critique == "1: 7+5=12 ok\n2: 12*3=36 wrong\n\\boxed{2}"
  # The boxed number counts from 1; the parsed label is 0-indexed.
  assert templates.parse_critique_index(critique, 4, first_index=1) == 1
  assert arith.solution_critique(P, RIGHT).endswith("4: Answer: 32 ok\n\\boxed{-1}")
  assert arith.step_critique(P, RIGHT[:1], "12*3=36") == "12*3=36\n<Answer>Correct</Answer>"
  verdict = arith.step_critique(P, RIGHT[:1], "12*4=48")
  assert templates.parse_step_verdict(verdict) is False


def test_processbench_export_round_trip(tmp_path):
  rng = np.random.default_rng(7)
  problems = arith.make_problems(arith.ArithConfig(), "eval", 20, seed=0)
  solutions = [arith.write_solution(p, rng, 0.5) for p in problems]
  path = tmp_path / "arith.jsonl"
  assert arith.export_processbench(path, solutions, generator="noisy") == 20
  back = list(processbench.read_processbench(path))
  assert [b.label for b in back] == [s.label for s in solutions]
  assert [b.steps for b in back] == [s.lines for s in solutions]
  assert back[0].id == "arith-0" and back[0].generator == "noisy" and back[0].subset == "arith"
  assert [b.final_answer_correct for b in back] == [s.answer_correct for s in solutions]
