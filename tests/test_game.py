"""SPC games: verdict parsing, rewards of both sides, paired and balanced round records."""

import numpy as np
import pytest

from scorejax.rewards.game import (
    Game,
    GameConfig,
    Judgement,
    Record,
    Verdict,
    build_round_records,
    critic_reward,
    generator_reward,
    parse_verdict,
    verdict_balanced,
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
  assert records.stats == {"games": 6, "failed_rewrites": 0, "invalid_games": 1, "critic_wins": 4,
                           "generator_wins": 1, "kept_games": 2, "balance_fallback": 0}
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


def test_balance_fallback_keeps_the_configured_minimum():
  # One generator win against four critic wins: balancing alone keeps 2 games; the fallback keeps all of the
  # minority side and 3 of the majority, and says so.
  records = build_round_records(GAMES, GameConfig(min_kept_games=3), seed=0)
  assert records.stats["kept_games"] == 4 and records.stats["balance_fallback"] == 1
  assert sorted(r.reward for r in records.generator) == [-1.0, -1.0, -1.0, 1.0]
  # A minimum the balanced round already meets changes nothing.
  assert build_round_records(GAMES, GameConfig(min_kept_games=1), seed=0).stats["balance_fallback"] == 0


def test_failed_rewrites_are_generator_losses_and_never_reach_the_critic():
  failed = Game("prefix 9 + correct step", "not wrong at all", None, None, generator_logprobs=[-0.5])
  records = build_round_records(GAMES + [failed], GameConfig(), seed=0)
  assert records.stats["failed_rewrites"] == 1 and records.stats["games"] == 7
  assert records.generator[-1].reward == -1.0 and records.generator[-1].logprobs == [-0.5]
  assert all("9" not in r.prompt for r in records.critic)
  silent = build_round_records(GAMES + [failed], GameConfig(failed_rewrite_reward=None), seed=0)
  assert len(silent.generator) == 2


def test_unpaired_round_keeps_only_sneaky_judgements():
  records = build_round_records(GAMES, GameConfig(paired=False), seed=0)
  assert len(records.critic) == 2 and all("sneaky" in r.prompt for r in records.critic)


def _judged_four_times(index: int, on_sneaky: list[Verdict], on_correct: list[Verdict]) -> Game:
  sneaky = [Judgement(f"prefix {index} + sneaky step", f"critique {index}s{m}", v) for m, v in enumerate(on_sneaky)]
  correct = [Judgement(f"prefix {index} + correct step", f"critique {index}c{m}", v) for m, v in enumerate(on_correct)]
  return Game(f"prefix {index} + correct step", f"sneaky step {index}", sneaky[0], correct[0], None,
              tuple(sneaky[1:]), tuple(correct[1:]))


def test_several_judgements_of_a_step_get_a_group_baseline():
  # Game 0, won by the critic's first judgement: on the sneaky step rewards (+1, -1, +1, +1), mean 0.5; on the
  # correct step all four right: advantage 0 throughout, no records. Game 1, won by the generator.
  games = [_judged_four_times(0, [I, C, I, I], [C, C, C, C]), _judged_four_times(1, [C, X, I, C], [C, I, C, I])]
  records = build_round_records(games, GameConfig(), seed=0)
  assert records.stats["kept_games"] == 2 and records.stats["critic_flat_groups"] == 1
  assert {r.response: r.reward for r in records.critic} == {
      "critique 0s0": 0.5, "critique 0s1": -1.5, "critique 0s2": 0.5, "critique 0s3": 0.5,
      # (-1, -1, +1, -1), mean -0.5: the invalid verdict counts as a loss; then (+1, -1, +1, -1), mean 0.
      "critique 1s0": -0.5, "critique 1s1": -0.5, "critique 1s2": 1.5, "critique 1s3": -0.5,
      "critique 1c0": 1.0, "critique 1c1": -1.0, "critique 1c2": 1.0, "critique 1c3": -1.0}
  # The games' outcomes are their first judgements'.
  assert sorted(r.reward for r in records.generator) == [-1.0, 1.0]
  # One judgement per step: the plain rewards, and no group statistic.
  single = build_round_records(GAMES, GameConfig(balance=False), seed=0)
  assert "critic_flat_groups" not in single.stats and {abs(r.reward) for r in single.critic} == {1.0}


def test_critic_records_carry_their_verdicts_and_balance_by_them():
  records = build_round_records(GAMES, GameConfig(balance=False), seed=0)
  judged = {j.response: j.verdict for g in GAMES if g.on_sneaky.verdict != X for j in (g.on_sneaky, g.on_correct)}
  assert {r.response: r.verdict for r in records.critic} == judged
  assert all(r.verdict is None for r in records.generator)
  # Wins: 3 Correct verdicts, 1 Incorrect, 1 invalid (kept whatever the balance), 2 generator records (no verdict).
  wins = [Record(f"p{i}", f"r{i}", 1.0, None, v) for i, v in enumerate([C, C, I, X, C])]
  wins += [Record("g0", "rewrite 0", 1.0), Record("g1", "rewrite 1", 1.0)]
  kept = verdict_balanced(wins, 0, np.random.default_rng(0))
  assert [r.verdict for r in kept].count(C) == 1 and [r.verdict for r in kept].count(I) == 1
  assert {"p2", "p3", "g0", "g1"} <= {r.prompt for r in kept} and len(kept) == 5
  assert kept == sorted(kept, key=wins.index)  # in order
  chosen = {r.prompt for r in kept if r.verdict == C}
  assert all({r.prompt for r in verdict_balanced(wins, 0, np.random.default_rng(0)) if r.verdict == C} == chosen
             for _ in range(3))  # seeded
  # The fallback: at least `minimum` of the commoner verdict; no Incorrect at all keeps nothing of the other.
  assert [r.verdict for r in verdict_balanced(wins, 2, np.random.default_rng(0))].count(C) == 2
  only_correct = [w for w in wins if w.verdict != I]
  assert [r.verdict for r in verdict_balanced(only_correct, 0, np.random.default_rng(0))].count(C) == 0


def test_games_round_trip_through_json():
  import json

  from scorejax.rewards.game import games_from_json, games_to_json
  failed = Game([1, 2], [3], None, None, generator_logprobs=[-0.25])
  games = GAMES + [failed, _judged_four_times(7, [I, C, I, I], [C, C, I, C])]
  back = games_from_json(json.loads(json.dumps(games_to_json(games))))
  assert back == games and back[0].on_sneaky.verdict is Verdict.INCORRECT
