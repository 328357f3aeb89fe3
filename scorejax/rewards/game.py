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
winner and yields no records.

The published ablation shows that unbalanced games (one side winning far
more often) degrade the critic, so `build_round_records` keeps as many games
won by C as games won by S (a seeded subsample of the larger side), and takes
from each kept game both of C's judgements: the same prefix with the sneaky
step and with its correct step, so C's records hold both classes equally.

Host-side code: plain Python and numpy, run between sampling and training.
"""

import dataclasses
import enum
from collections.abc import Sequence

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
  prompt: str  # C's input: the problem, the partial solution tau_<k, the step judged
  response: str  # C's analysis, ending in its verdict
  verdict: Verdict


@dataclasses.dataclass(frozen=True)
class Game:
  generator_prompt: str  # S's input: the problem, tau_<k and the correct step t_k
  generator_response: str  # S's output: the error type it chose, then t'_k
  on_sneaky: Judgement  # C on tau_<k + t'_k (t'_k validated as truly wrong)
  on_correct: Judgement  # C on tau_<k + t_k, the same prefix


@dataclasses.dataclass(frozen=True)
class Record:
  """One offline-RL record: the reward becomes the advantage of `objectives.spc`."""

  prompt: str
  response: str
  reward: float


@dataclasses.dataclass(frozen=True)
class RoundRecords:
  critic: list[Record]  # pairs from one game: the sneaky-step judgement, then the correct-step one
  generator: list[Record]  # one per kept game
  stats: dict[str, int]  # games, invalid_games, critic_wins, generator_wins, kept_games


def _balanced_indices(critic_wins: np.ndarray, generator_wins: np.ndarray, rng) -> np.ndarray:
  """Equal numbers of each side's wins: a seeded subsample of the larger side, in game order."""
  keep = min(len(critic_wins), len(generator_wins))
  chosen = [rng.choice(side, size=keep, replace=False) for side in (critic_wins, generator_wins)]
  return np.sort(np.concatenate(chosen))


def build_round_records(games: Sequence[Game], config: GameConfig, seed: int) -> RoundRecords:
  """The critic's and the generator's training records of one round of games."""
  sneaky_verdicts = np.array([g.on_sneaky.verdict for g in games], dtype=np.int64)
  critic_wins = np.flatnonzero(sneaky_verdicts == Verdict.INCORRECT)
  generator_wins = np.flatnonzero(sneaky_verdicts == Verdict.CORRECT)
  if config.balance:
    kept = _balanced_indices(critic_wins, generator_wins, np.random.default_rng(seed))
  else:
    kept = np.sort(np.concatenate([critic_wins, generator_wins]))

  critic_records, generator_records = [], []
  for index in kept:
    game = games[index]
    for judgement, is_sneaky in ((game.on_sneaky, True), (game.on_correct, False)):
      reward = float(critic_reward(judgement.verdict, is_sneaky, config))
      critic_records.append(Record(judgement.prompt, judgement.response, reward))
    reward = float(generator_reward(game.on_sneaky.verdict, config))
    generator_records.append(Record(game.generator_prompt, game.generator_response, reward))

  stats = {
      "games": len(games),
      "invalid_games": int(np.sum(sneaky_verdicts == Verdict.INVALID)),
      "critic_wins": len(critic_wins),
      "generator_wins": len(generator_wins),
      "kept_games": len(kept),
  }
  return RoundRecords(critic_records, generator_records, stats)
