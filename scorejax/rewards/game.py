"""SPC adversarial games: verdicts -> rewards, and the paired, balanced records of a round.

Chen et al., "SPC: Evolving Self-Play Critic via Adversarial Games for LLM
Reasoning", arXiv 2504.19162. In one game the sneaky generator S rewrites a
correct step t_k (after the prefix tau_<k) into a subtly wrong t'_k, which
has been validated as truly wrong; the critic C judges both prefix + t'_k
and prefix + t_k. On the sneaky step:

  C says Incorrect -> C wins (+1), S loses (-1)
  C says Correct   -> C is fooled: C loses (-1), S wins (+1)

On the real correct step C wins by saying Correct. A verdict that is not
<Answer>Correct</Answer> or <Answer>Incorrect</Answer> is invalid: it is
counted, never mapped to a class, and earns the critic
`invalid_verdict_reward`. A game whose sneaky-step verdict is invalid has no
winner and yields no records. A rewrite that fails validation (not truly
wrong, or not in the answer format) never reaches C: S gets
`failed_rewrite_reward` for it (None: no record).

The published ablation shows that unbalanced games (one side winning far
more often) degrade the critic, so `build_round_records` keeps as many games
won by C as games won by S (a seeded subsample of the larger side), and takes
from each kept game both of C's judgements: the same prefix with the sneaky
step and with its correct step, so C's records hold both classes equally (`paired=False`: only the
sneaky-step judgement, an ablation). When one side wins nearly every game,
balancing would keep almost nothing: `min_kept_games` is the fallback, the
minority side's games all kept with that many of the majority's, and the
round's stats say so (`balance_fallback`).

A step the critic judged several times in one game (`Game.more_on_sneaky`,
`Game.more_on_correct`; `game.critic_samples` in the configs, the paper's
one by default) gives a group of records: each judgement's reward minus the
mean reward of the step's judgements, a group baseline as in GRPO, so that
the records hold right and wrong analyses of the same step, and a step
judged the same way every time (advantage 0 throughout) gives none. The
game's outcome, for the generator and for the balance, is the first
judgement's, as with one.

Host-side code: plain Python and numpy, run between sampling and training.
"""

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

from scorejax.tasks import templates


class Verdict(enum.IntEnum):
  INVALID = -1  # no parseable <Answer>...</Answer>
  INCORRECT = 0
  CORRECT = 1


def parse_verdict(response: str) -> Verdict:
  """The critic's verdict, read by the one parser of the verdict format.

  `tasks.templates.parse_step_verdict` reads <Answer>Correct</Answer> or
  <Answer>Incorrect</Answer>; anything else is Verdict.INVALID.
  """
  parsed = templates.parse_step_verdict(response)
  if templates.is_invalid(parsed):
    return Verdict.INVALID
  return Verdict.CORRECT if parsed else Verdict.INCORRECT


@dataclasses.dataclass(frozen=True)
class GameConfig:
  win_reward: float = 1.0  # the winner's reward
  loss_reward: float = -1.0  # the loser's reward
  invalid_verdict_reward: float = -1.0  # the critic's reward for an invalid verdict
  balance: bool = True  # keep as many critic wins as generator wins (seeded subsample)
  paired: bool = True  # C's records: the sneaky-step judgement and the same prefix's correct-step one
  min_kept_games: int = 0  # balance fallback: keep at least this many games of the majority side
  failed_rewrite_reward: float | None = -1.0  # S's reward for a rewrite that fails validation; None: no record


def critic_reward(verdict, step_is_sneaky, config: GameConfig):
  """C's reward per judgement: win when its verdict names the step's true class.

  Args:
    verdict: Verdict values, any shape.
    step_is_sneaky: True where the judged step is the generator's rewrite.
  """
  verdict = np.asarray(verdict)
  right = np.where(step_is_sneaky, verdict == Verdict.INCORRECT, verdict == Verdict.CORRECT)
  reward = np.where(right, config.win_reward, config.loss_reward)
  return np.where(verdict == Verdict.INVALID, config.invalid_verdict_reward, reward).astype(np.float32)


def generator_reward(verdict_on_sneaky, config: GameConfig):
  """S's reward per game: win when C judged the sneaky step Correct, loss when Incorrect.

  An invalid verdict decides nothing and gives 0.0 (no signal);
  `build_round_records` leaves such games out altogether.
  """
  verdict = np.asarray(verdict_on_sneaky)
  reward = np.where(verdict == Verdict.CORRECT, config.win_reward, config.loss_reward)
  return np.where(verdict == Verdict.INVALID, 0.0, reward).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Judgement:
  prompt: Any  # C's input: the problem, the partial solution tau_<k, the step judged (text or token ids)
  response: Any  # C's analysis, ending in its verdict
  verdict: Verdict
  logprobs: Any = None  # the sampler's log-prob of each response token, when it was sampled


@dataclasses.dataclass(frozen=True)
class Game:
  generator_prompt: Any  # S's input: the problem, tau_<k and the correct step t_k
  generator_response: Any  # S's output: the error type it chose, then t'_k
  on_sneaky: Judgement | None  # C on tau_<k + t'_k (validated as truly wrong); None: the rewrite failed validation
  on_correct: Judgement | None  # C on tau_<k + t_k, the same prefix
  generator_logprobs: Any = None
  more_on_sneaky: tuple[Judgement, ...] = ()  # C's further samples on the sneaky step (a group with on_sneaky)
  more_on_correct: tuple[Judgement, ...] = ()  # and on the correct step


@dataclasses.dataclass(frozen=True)
class Record:
  """One offline-RL record: the reward becomes the advantage of `objectives.spc`."""

  prompt: Any
  response: Any
  reward: float
  logprobs: Any = None
  verdict: Verdict | None = None  # a critic's record: its judgement's verdict (the generator's: None)


@dataclasses.dataclass(frozen=True)
class RoundRecords:
  critic: list[Record]  # per kept game: the sneaky step's judgement(s), then the correct step's
  generator: list[Record]  # one per kept game
  stats: dict[str, int]  # games, failed_rewrites, invalid_games, critic_wins, generator_wins, kept_games, ...


def _balanced_indices(side_a: np.ndarray, side_b: np.ndarray, minimum: int, rng) -> np.ndarray:
  """Equal numbers of two sides' indices (each side's wins, or each verdict's records; a seeded subsample of
  the larger side), or at least `minimum` of the larger side's with all of the smaller side's; in order."""
  small, large = sorted((side_a, side_b), key=len)
  keep_large = min(len(large), max(len(small), minimum))
  chosen = [rng.choice(small, size=len(small), replace=False), rng.choice(large, size=keep_large, replace=False)]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def verdict_balanced(records: Sequence[Record], minimum: int, rng) -> list[Record]:
  """As many records ending in each verdict as the rarer verdict has (a seeded subsample of the other, at least
  `minimum` of it, as the games' fallback); the others (the generator's, invalid verdicts) all kept; in order."""
  classes = (Verdict.CORRECT, Verdict.INCORRECT)
  by_class = [np.array([i for i, rec in enumerate(records) if rec.verdict == v], np.int64) for v in classes]
  rest = np.array([i for i, rec in enumerate(records) if rec.verdict not in classes], np.int64)
  kept = np.sort(np.concatenate([_balanced_indices(*by_class, minimum, rng), rest]))
  return [records[i] for i in kept]


def build_round_records(games: Sequence[Game], config: GameConfig, seed: int) -> RoundRecords:
  """The critic's and the generator's training records of one round of games."""
  played = [i for i, g in enumerate(games) if g.on_sneaky is not None]
  sneaky_verdicts = np.array([games[i].on_sneaky.verdict for i in played], dtype=np.int64)
  critic_wins = np.array(played, np.int64)[sneaky_verdicts == Verdict.INCORRECT]
  generator_wins = np.array(played, np.int64)[sneaky_verdicts == Verdict.CORRECT]
  fallback = False
  if config.balance:
    kept = _balanced_indices(critic_wins, generator_wins, config.min_kept_games, np.random.default_rng(seed))
    fallback = min(len(critic_wins), len(generator_wins)) < min(config.min_kept_games,
                                                                max(len(critic_wins), len(generator_wins)))
  else:
    kept = np.sort(np.concatenate([critic_wins, generator_wins]))

  critic_records, generator_records, flat_groups = [], [], 0
  for index in kept:
    game = games[index]
    judged = [((game.on_sneaky, *game.more_on_sneaky), True)]
    if config.paired:
      judged.append(((game.on_correct, *game.more_on_correct), False))
    for group, is_sneaky in judged:
      records = group_records(group, is_sneaky, config)
      flat_groups += int(len(group) > 1 and not records)
      critic_records += records
    reward = float(generator_reward(game.on_sneaky.verdict, config))
    generator_records.append(Record(game.generator_prompt, game.generator_response, reward, game.generator_logprobs))
  failed = [g for g in games if g.on_sneaky is None]
  if config.failed_rewrite_reward is not None:
    generator_records += [Record(g.generator_prompt, g.generator_response, float(config.failed_rewrite_reward),
                                 g.generator_logprobs) for g in failed]

  stats = {
      "games": len(games),
      "failed_rewrites": len(failed),
      "invalid_games": int(np.sum(sneaky_verdicts == Verdict.INVALID)),
      "critic_wins": len(critic_wins),
      "generator_wins": len(generator_wins),
      "kept_games": len(kept),
      "balance_fallback": int(fallback),
  }
  if any(g.more_on_sneaky for g in games):
    stats["critic_flat_groups"] = flat_groups  # steps judged alike every time: no records
  return RoundRecords(critic_records, generator_records, stats)


def group_records(group: Sequence[Judgement], step_is_sneaky: bool, config: GameConfig) -> list[Record]:
  """The critic's records of one step: its reward for a single judgement; for several judgements of the
  step, each reward minus their mean (records with advantage 0 left out: they carry no gradient)."""
  rewards = critic_reward([j.verdict for j in group], step_is_sneaky, config)
  if len(group) > 1:
    rewards = rewards - rewards.mean()
  return [Record(j.prompt, j.response, float(r), j.logprobs, j.verdict) for j, r in zip(group, rewards)
          if len(group) == 1 or abs(r) > 1e-6]


def _judgement_from_json(row: dict | None) -> Judgement | None:
  return None if row is None else Judgement(row["prompt"], row["response"], Verdict(row["verdict"]),
                                            row.get("logprobs"))


def games_to_json(games: Sequence[Game]) -> list[dict]:
  """Games as plain JSON rows (verdicts as their integers), for a round's cache file."""
  return [dataclasses.asdict(g) for g in games]


def games_from_json(rows: Sequence[dict]) -> list[Game]:
  return [Game(r["generator_prompt"], r["generator_response"], _judgement_from_json(r["on_sneaky"]),
               _judgement_from_json(r["on_correct"]), r.get("generator_logprobs"),
               tuple(map(_judgement_from_json, r.get("more_on_sneaky", ()))),
               tuple(map(_judgement_from_json, r.get("more_on_correct", ())))) for r in rows]
