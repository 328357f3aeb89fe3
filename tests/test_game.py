"""SPC games: verdict parsing, rewards of both sides, paired and balanced round records."""

import numpy as np
import pytest

from scorejax.rewards.game import (
    Game,
    GameConfig,
    Judgement,
    Verdict,
    build_round_records,
    critic_reward,
    generator_reward,
    parse_verdict,
)

C, I, X = Verdict.CORRECT, Verdict.INCORRECT, Verdict.INVALID


@pytest.mark.parametrize(
    "response, expected",
    [
        ("The step adds 3 twice. <Answer>Incorrect</Answer>", I),  # a substring test for "correct" says C
        ("Checks out.\n<answer>CORRECT</answer>", C),
        ("<Answer>Partially correct</Answer>", X),
        ("I think it is Correct.", X),
        ("<Answer>Correct", X),
    ],
)
def test_parse_verdict(response, expected):
  assert parse_verdict(response) == expected


def test_critic_reward_table():
  verdicts = np.array([C, I, X, C, I, X])
  sneaky = np.array([True, True, True, False, False, False])
  # Sneaky step: fooled -1, caught +1, invalid -1. Correct step: +1, -1, invalid -1.
  # Ignoring which step was judged (always rewarding Incorrect) would give +1 for row 4.
  np.testing.assert_array_equal(critic_reward(verdicts, sneaky, GameConfig()), [-1, 1, -1, 1, -1, -1])
  lenient = GameConfig(invalid_verdict_reward=0.0)
  np.testing.assert_array_equal(critic_reward(verdicts, sneaky, lenient), [-1, 1, 0, 1, -1, 0])


def test_generator_reward_table():
  # Fooling the critic wins; being caught loses; an invalid verdict decides nothing.
  np.testing.assert_array_equal(generator_reward(np.array([C, I, X]), GameConfig()), [1, -1, 0])


def _game(index: int, verdict_on_sneaky: Verdict, verdict_on_correct: Verdict = C) -> Game:
  return Game(
      generator_prompt=f"prefix {index} + correct step",
      generator_response=f"sneaky step {index}",
      on_sneaky=Judgement(f"prefix {index} + sneaky step", f"critique {index}s", verdict_on_sneaky),
      on_correct=Judgement(f"prefix {index} + correct step", f"critique {index}c", verdict_on_correct),
  )


# The critic wins games 0, 2, 3, 5; the generator wins game 1; game 4's verdict is invalid.
GAMES = [_game(0, I), _game(1, C, verdict_on_correct=X), _game(2, I), _game(3, I), _game(4, X), _game(5, I)]


def test_balanced_round_keeps_one_win_per_side():
  records = build_round_records(GAMES, GameConfig(), seed=0)
  assert records.stats == {"games": 6, "invalid_games": 1, "critic_wins": 4, "generator_wins": 1,
                           "kept_games": 2}
  # Without balancing the generator would get 4 losses to 1 win.
  assert sorted(r.reward for r in records.generator) == [-1.0, 1.0]
  assert len(records.critic) == 4
  for sneaky, correct in zip(records.critic[0::2], records.critic[1::2]):
    # Paired: the same prefix with the sneaky step and with its correct step.
    assert sneaky.prompt.replace("sneaky", "correct") == correct.prompt
  by_prompt = {r.prompt: r.reward for r in records.critic}
  # Game 1: fooled on the sneaky step (-1); its correct-step verdict was invalid (-1).
  assert by_prompt["prefix 1 + sneaky step"] == -1.0
  assert by_prompt["prefix 1 + correct step"] == -1.0


def test_balanced_subsample_is_seeded():
  def kept_critic_win(seed):
    records = build_round_records(GAMES, GameConfig(), seed=seed)
    return next(r.prompt for r in records.critic[0::2] if r.prompt != "prefix 1 + sneaky step")

  assert kept_critic_win(3) == kept_critic_win(3)
  assert len({kept_critic_win(seed) for seed in range(12)}) > 1


def test_unbalanced_round_keeps_every_decided_game():
  records = build_round_records(GAMES, GameConfig(balance=False), seed=0)
  assert records.stats["kept_games"] == 5  # all but the invalid game 4
  assert [r.reward for r in records.generator] == [-1.0, 1.0, -1.0, -1.0, -1.0]
  assert [r.prompt for r in records.critic[0::2]] == [f"prefix {i} + sneaky step" for i in (0, 1, 2, 3, 5)]


def test_one_sided_round_keeps_nothing_when_balanced():
  records = build_round_records([_game(0, I), _game(1, I)], GameConfig(), seed=0)
  assert records.critic == [] and records.generator == []
  assert records.stats["critic_wins"] == 2 and records.stats["kept_games"] == 0
