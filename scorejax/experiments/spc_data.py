"""What SPC's two roles learn from and play on: single steps, SFT data, game positions, validation.

A step item is one step of a solution with the steps before it. The critic
judges it (`critic_step_prompt`); the sneaky generator rewrites a correct one
into a wrong one (`sneaky_prompt`, answered "Error type: <type>\\nStep:
<step>"). On the built-in task:

  SFT (round 0)  the critic: steps of reference solutions, half of them
                 replaced by a wrong line of a random applicable error type
                 (the task's error makers), judged by a seed annotator (it
                 slips and is blind to some carries, as DeepCritic's
                 built-in seed critiques), kept when its verdict matches
                 the exact checker; the sneaky generator: a type drawn
                 uniformly, a correct step where it applies, and the error
                 maker's wrong line of that type (the analog of the paper's
                 GPT-4 rewrites);
  games          solutions by the game's solvers (the task's reference
                 solutions: a strong solver; the base model's samples; the
                 noisy writer), one correct step of each, picked with its
                 prefix;
  validation     the exact checker, or (a task without one, or to test it)
                 N completions from the prefix with the original and with
                 the rewritten step, the rewrite wrong when the original's
                 success rate stays high and the rewrite's drops;
  held out       the writer's and the base model's solutions to eval
                 problems (`critic_data.BuiltinCriticData`): their errors
                 never reach the critic in training.

On real data (`FileSPCData`: local PRM800K and ProcessBench files, the
loaded checkpoint as the base):

  SFT (round 0)  the critic: steps on PRM800K's labelled paths up to their
                 first error, as many rated -1 as rated 1 in each batch,
                 the target the verdict alone (PRM800K rates steps, it
                 writes no analysis); the sneaky generator: PRM800K's own
                 rewrite pairs, a step rated 1 and one rated -1 after the
                 same prefix (the labeler saw both), the error type named
                 `data.prm800k_error_type` (PRM800K does not say which);
  games          the base model's solutions to MATH train problems that
                 reach the answer (a step of one, with its prefix), and
                 correct steps on PRM800K paths (solver "prm800k");
  validation     completions only (no exact checker);
  held out       the ProcessBench files, one subset per file; the dev set is
                 PRM800K paths held out from training (`task.dev_seed`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from scorejax.experiments.critic_data import (
  BuiltinCriticData,
  Solution,
  answer_sampler,
  heldout_solutions,
  policy_steps,
  processbench_records,
  written_steps,
)
from scorejax.rewards import game as game_lib
from scorejax.rollouts import sample_batched
from scorejax.sampling import Sample
from scorejax.tasks import arith, prm800k, templates
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import MissingData, endless_shuffle, stream_id
from scorejax.tasks.math_task import MathProblem
from scorejax.tasks.records import RecordError

SOLVERS = ("reference", "policy", "writer")  # who writes the solutions games are played on
FILE_SOLVERS = ("policy", "prm800k")  # real data: the base model's right solutions, PRM800K's correct steps
DATA_HOW_TO_GET = (
    "SPC on real data reads local files (nothing is downloaded): config.data.prm800k: a PRM800K file "
    "(github.com/openai/prm800k, e.g. phase2_train.jsonl): the critic's and the sneaky generator's SFT data and "
    "the dev set; config.data.processbench: ProcessBench-format subsets the critic is scored on "
    "(huggingface.co/datasets/Qwen/ProcessBench); config.task.train_path / eval_path: MATH-format JSONL (the "
    "games' and the search's problems)")
VALIDATORS = ("checker", "completions")
SFT_DRAWS = 8  # candidate critic judgements drawn per kept one, at most (the annotator's filter rejects some)


@dataclasses.dataclass(frozen=True)
class StepItem:
  """One step of a solution after the steps before it."""

  problem: object
  previous: tuple[str, ...]
  step: str
  correct: bool | None  # its label; None: after the solution's first error (judged, never scored)
  subset: str = ""  # who wrote it
  solution: int = -1  # index of its solution in the held-out list (first-error F1 reads whole solutions)


def _at_most(positions: list[StepItem], n: int, rng, stats: dict, who: str) -> tuple[list[StepItem], dict]:
  """n of the game positions drawn at random (in their order), or all of them and a word when there are fewer."""
  if len(positions) < n:
    print(f"{who} gave {len(positions)} correct steps to play on, fewer than config.game.games_per_round={n}; "
          "playing those")
  stats["positions"] = min(n, len(positions))
  order = rng.permutation(len(positions))[:n]
  return [positions[i] for i in np.sort(order)], stats


def critic_step_prompt(task, item: StepItem) -> list[int]:
  return task.messages_ids(templates.step_critic_messages(task.templates, item.problem.text, item.previous,
                                                          item.step))


def sneaky_prompt(task, item: StepItem, error_types: Sequence[str]) -> list[int]:
  return task.messages_ids(templates.sneaky_messages(task.templates, item.problem.text, item.previous, item.step,
                                                     error_types))


def solution_items(solutions: Sequence[Solution]) -> list[StepItem]:
  """Every step of every labelled solution; steps after the first error are unlabelled (correct=None)."""
  out = []
  for i, s in enumerate(solutions):
    for k, step in enumerate(s.steps):
      label = None if 0 <= s.label < k else s.label != k
      out.append(StepItem(s.problem, tuple(s.steps[:k]), step, label, s.subset, i))
  return out


def first_error_predictions(solutions: Sequence[Solution], items: Sequence[StepItem], verdicts) -> list:
  """ProcessBench's first-error index from single-step verdicts judged in order: the first Incorrect step,
  -1 when none is; None (an invalid prediction) when an invalid verdict comes before any Incorrect."""
  predicted = [-1] * len(solutions)
  decided = [False] * len(solutions)
  for item, verdict in zip(items, verdicts):  # items are in step order within each solution
    i = item.solution
    if decided[i]:
      continue
    if verdict == game_lib.Verdict.INVALID:
      predicted[i], decided[i] = None, True
    elif verdict == game_lib.Verdict.INCORRECT:
      predicted[i], decided[i] = len(item.previous), True
  return predicted


# ----------------------------------------------------------------------------
# Validation by completions (for tasks without an exact step checker)
# ----------------------------------------------------------------------------


def completion_success(lm, params, task, items: Sequence[StepItem], rollouts: int, rule, key, config,
                       mesh) -> np.ndarray:
  """Share of `rollouts` completions from each item's prefix + step that reach the problem's answer
  (one prefill per item for its completions)."""
  prefixes = [task.prefix_ids(it.previous + (it.step,)) for it in items]
  prompts = [task.prompt_ids(it.problem) + p for it, p in zip(items, prefixes)]
  ids, _ = sample_batched(lm, params, prompts, key, rule, answer_sampler(task, config), mesh,
                          pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size, n=rollouts)
  hits = [task.reward(items[r // rollouts].problem, prefixes[r // rollouts] + i) > 0.5 for r, i in enumerate(ids)]
  return np.asarray(hits, np.float64).reshape(len(items), rollouts).mean(axis=1)


def validated_by_completions(original: np.ndarray, rewritten: np.ndarray, keep_at_least: float,
                             drop_to_at_most: float) -> np.ndarray:
  """The rewrite is truly wrong when the original step keeps its success rate and the rewrite's drops."""
  return (original >= keep_at_least) & (rewritten <= drop_to_at_most)


# ----------------------------------------------------------------------------
# The built-in task
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class BuiltinSPCData:
  """SPC's data on the built-in task: the error makers, the exact checker, an imperfect seed annotator."""

  task: object  # tasks.arith.ArithTask
  config: ml_collections.ConfigDict

  def __post_init__(self):
    g = self.config.game
    self.error_types = tuple(g.error_types)
    unknown = sorted(set(self.error_types) - set(arith.ERROR_TYPES))
    if unknown or not self.error_types:
      raise ValueError(f"config.game.error_types: unknown error types {unknown}; expected some of "
                       f"{arith.ERROR_TYPES}")
    if set(g.solvers) - set(SOLVERS) or not g.solvers:
      raise ValueError(f"config.game.solvers={tuple(g.solvers)}: expected some of {SOLVERS}")
    if g.validator not in VALIDATORS:
      raise ValueError(f"config.game.validator={g.validator!r}: expected one of {VALIDATORS}")
    self.critic_data = BuiltinCriticData(self.task, self.config)
    self.annotator = critiques.AnnotatorConfig(slip_rate=self.config.annotator.slip_rate,
                                               carry_blind_rate=self.config.annotator.carry_blind_rate)

  # The base model: a solver with the writers' carry habit

  def base_batch(self, step: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, solution) rows: right solutions for `clean_steps`, then noisy ones with the carry habit."""
    task, c = self.task, self.config.generator
    rng = np.random.default_rng([self.config.seed, stream_id("generator"), step])
    error_rate, slip = (c.error_rate, c.carry_slip_rate) if step >= c.clean_steps else (c.clean_error_rate, 0.0)
    rows = []
    for problem in task.train_problems(self.config.seed, "generator", step, c.batch_size):
      written = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
      rows.append((task.prompt_ids(problem), task.answer_ids(written.text)))
    return rows

  # Round 0: SFT data of both roles

  def _step_example(self, problem, rng, wrong: bool) -> StepItem:
    """A reference prefix and its next line, or (wrong) a wrong line of a random applicable error type."""
    lines = arith.solution_lines(problem)
    k = int(rng.integers(len(lines)))
    kinds = [t for t in arith.applicable_error_types(problem, lines[:k]) if t in self.error_types]
    if not wrong or not kinds:
      return StepItem(problem, lines[:k], lines[k], True)
    kind = kinds[int(rng.integers(len(kinds)))]
    return StepItem(problem, lines[:k], arith.corrupt_step(problem, lines[:k], kind, rng), False)

  def critic_sft_rows(self, stream: str, step: int, n: int) -> tuple[list[tuple[list[int], list[int]]], float]:
    """n (prompt, judgement) rows, half of them on wrong steps, each kept when the annotator's verdict is
    the checker's; and the kept fraction."""
    task = self.task
    rng = np.random.default_rng([self.config.seed, stream_id(stream), step])
    problems = task.train_problems(self.config.seed, stream, step, SFT_DRAWS * n)
    rows, tried = [], 0
    while len(rows) < n:
      if tried == len(problems):
        raise ValueError(f"the seed annotator kept {len(rows)} of {tried} step judgements ({stream} step {step}): "
                         f"config.annotator ({dict(self.config.annotator)}) rejects nearly all; lower its rates")
      item = self._step_example(problems[tried], rng, wrong=tried % 2 == 1)
      tried += 1
      text = critiques.annotate_step(item.problem, item.previous, item.step, self.annotator, rng)
      if text is not None:
        rows.append((critic_step_prompt(task, item), task.answer_ids(text)))
    return rows, len(rows) / tried

  def sneaky_sft_rows(self, stream: str, step: int, n: int) -> tuple[list[tuple[list[int], list[int]]], float]:
    """n (prompt, "Error type: t\\nStep: wrong line") rows on correct steps of reference solutions.

    The type comes first, uniform over the configured ones, then a step where it applies: a rare type
    (a dropped carry needs a carrying step) is written as often as a common one.
    """
    task = self.task
    rng = np.random.default_rng([self.config.seed, stream_id(stream), step])
    rows = []
    for problem in task.train_problems(self.config.seed, stream, step, 4 * n):
      lines = arith.solution_lines(problem)
      kind = self.error_types[int(rng.integers(len(self.error_types)))]
      sites = [k for k in range(len(lines)) if kind in arith.applicable_error_types(problem, lines[:k])]
      if not sites:
        continue  # the type applies nowhere in this problem
      k = sites[int(rng.integers(len(sites)))]
      item = StepItem(problem, lines[:k], lines[k], True)
      wrong = arith.corrupt_step(problem, lines[:k], kind, rng)
      rows.append((sneaky_prompt(task, item, self.error_types), task.answer_ids(templates.format_sneaky(kind, wrong))))
      if len(rows) == n:
        return rows, 1.0
    raise ValueError(f"config.game.error_types={self.error_types} apply to too few steps to fill a batch of {n}")

  # Games

  def game_positions(self, lm, base_params, round_index: int, n: int, mesh) -> tuple[list[StepItem], dict]:
    """Up to n correct steps with their (correct) prefixes, one per solution by the game's solvers (fewer,
    and said, when the solvers write fewer solutions with a correct first step)."""
    task, config = self.task, self.config
    stream = f"games/round{round_index}"
    solvers = tuple(config.game.solvers)
    rng = np.random.default_rng([config.seed, stream_id(stream)])
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id(stream))
    positions, stats = [], {"solutions": 0, "no_correct_step": 0}
    attempt = 0
    while len(positions) < n and attempt < 4:
      problems = task.train_problems(config.seed, stream, attempt, -(-2 * n // len(solvers)))
      for solver in solvers:
        if solver == "policy":
          steps = self.policy_solutions(lm, base_params, problems, jax.random.fold_in(key, attempt), mesh)
        elif solver == "reference":
          steps = [arith.solution_lines(p) for p in problems]
        else:
          steps = [written_steps(p, "writer", rng, config.solutions) for p in problems]
        for problem, s in zip(problems, steps):
          stats["solutions"] += 1
          label = task.earliest_error(problem, s)
          correct = len(s) if label < 0 else label
          if correct == 0:
            stats["no_correct_step"] += 1  # an empty solution, or one wrong from its first step
            continue
          k = int(rng.integers(correct))
          positions.append(StepItem(problem, tuple(s[:k]), s[k], True, solver))
      attempt += 1
    return _at_most(positions, n, rng, stats, f"round {round_index}: the solvers {solvers}")

  def policy_solutions(self, lm, base_params, problems, key, mesh) -> list[tuple[str, ...]]:
    return policy_steps(lm, base_params, self.task, problems, key,
                        Sample(temperature=self.config.solutions.policy_temperature), self.config, mesh)

  def checker_validates(self, item: StepItem, rewritten: str) -> bool:
    """The exact checker: the rewritten line is wrong after the item's (correct) prefix."""
    return not arith.check_step(item.problem, item.previous, rewritten)

  # Held out

  def heldout(self, lm, base_params, mesh) -> tuple[list[Solution], int]:
    return self.critic_data.heldout(lm, base_params, mesh)

  def dev(self, lm, base_params, mesh) -> list[Solution]:
    return self.critic_data.dev(lm, base_params, mesh)


# ----------------------------------------------------------------------------
# Real data from local files
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class FileSPCData:
  """SPC's data from PRM800K and ProcessBench files: every file read and checked before any compute."""

  task: object  # tasks.math_task.MathTask
  config: ml_collections.ConfigDict

  def __post_init__(self):
    config, g, d = self.config, self.config.game, self.config.data
    if config.generator.steps:
      raise ValueError(f"config.generator.steps={config.generator.steps}: on real data the base is the loaded "
                       "checkpoint (config.model.hf_dir); set --config.generator.steps=0")
    if g.validator != "completions":
      raise ValueError(f"config.game.validator={g.validator!r}: real data has no exact step checker; use "
                       "'completions'")
    if set(g.solvers) - set(FILE_SOLVERS) or not g.solvers:
      raise ValueError(f"config.game.solvers={tuple(g.solvers)}: on real data expected some of {FILE_SOLVERS}")
    self.error_types = tuple(g.error_types)
    if d.prm800k_error_type not in self.error_types:
      raise ValueError(f"config.data.prm800k_error_type={d.prm800k_error_type!r} is not one of "
                       f"config.game.error_types={self.error_types}")
    self.records = processbench_records(d.processbench, DATA_HOW_TO_GET)
    if not d.prm800k or not os.path.isfile(d.prm800k):
      raise MissingData(f"config.data.prm800k={d.prm800k!r} is not a file. {DATA_HOW_TO_GET}")
    rows = list(prm800k.read_prm800k(d.prm800k, neutral_is_error=d.prm800k_neutral_is_error, check_answers=False))
    order = np.random.default_rng(config.task.dev_seed).permutation(len(rows))
    n_dev = config.eval.interval_problems
    if len(rows) <= n_dev:
      raise RecordError(f"{d.prm800k}: {len(rows)} labelled paths; config.eval.interval_problems={n_dev} of them "
                        "are the dev set and training needs the rest")
    self.dev_rows = [rows[i] for i in order[:n_dev]]
    self.right_steps, self.wrong_steps, self.pairs = _prm800k_steps([rows[i] for i in np.sort(order[n_dev:])])
    if not self.right_steps or not self.wrong_steps:
      raise RecordError(f"{d.prm800k}: the critic's SFT needs steps rated 1 and rated -1 on the training paths; "
                        f"found {len(self.right_steps)} and {len(self.wrong_steps)}")
    if not self.pairs:
      raise RecordError(f"{d.prm800k}: the sneaky generator's SFT needs a step rated 1 and one rated -1 after the "
                        "same prefix; no training path has one")

  def base_batch(self, step: int):
    raise AssertionError("the loaded base is not trained (config.generator.steps=0)")

  def critic_sft_rows(self, stream: str, step: int, n: int) -> tuple[list[tuple[list[int], list[int]]], float]:
    """n (prompt, verdict) rows, half on steps rated -1 and half on steps rated 1 (all kept)."""
    seed, task = self.config.seed, self.task
    items = (endless_shuffle(self.wrong_steps, seed, f"{stream}/wrong", step, n // 2)
             + endless_shuffle(self.right_steps, seed, f"{stream}/right", step, n - n // 2))
    return [(critic_step_prompt(task, it), task.answer_ids(templates.format_step_verdict(it.correct)))
            for it in items], 1.0

  def sneaky_sft_rows(self, stream: str, step: int, n: int) -> tuple[list[tuple[list[int], list[int]]], float]:
    """n (prompt, "Error type: t\nStep: the step rated -1") rows on PRM800K's rewrite pairs."""
    kind, task = self.config.data.prm800k_error_type, self.task
    chosen = endless_shuffle(self.pairs, self.config.seed, stream, step, n)
    return [(sneaky_prompt(task, item, self.error_types), task.answer_ids(templates.format_sneaky(kind, wrong)))
            for item, wrong in chosen], 1.0

  def game_positions(self, lm, base_params, round_index: int, n: int, mesh) -> tuple[list[StepItem], dict]:
    """Up to n correct steps with their prefixes: a step of each of the base model's solutions that reach the
    answer ("policy"), and correct steps on PRM800K paths ("prm800k"), in equal parts."""
    task, config = self.task, self.config
    stream = f"games/round{round_index}"
    solvers = tuple(config.game.solvers)
    rng = np.random.default_rng([config.seed, stream_id(stream)])
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id(stream))
    per_solver = -(-n // len(solvers))
    positions, stats = [], {"solutions": 0, "no_correct_step": 0}
    for solver in solvers:
      if solver == "prm800k":
        positions += endless_shuffle(self.right_steps, config.seed, stream, 0, per_solver)
        continue
      found = []
      for attempt in range(4):
        problems = task.train_problems(config.seed, stream, attempt, 2 * per_solver)
        steps = policy_steps(lm, base_params, task, problems, jax.random.fold_in(key, attempt),
                             Sample(temperature=config.solutions.policy_temperature), config, mesh)
        for problem, s in zip(problems, steps):
          stats["solutions"] += 1
          if not s or not task.is_complete(s) or not task.reward(problem, task.tokenizer.encode(
              task.solution_text(s))):
            stats["no_correct_step"] += 1  # cut off or wrong: which steps are right is not known
            continue
          k = int(rng.integers(len(s)))
          found.append(StepItem(problem, tuple(s[:k]), s[k], True, "policy"))
        if len(found) >= per_solver:
          break
      positions += found[:per_solver]
    return _at_most(positions, n, rng, stats, f"round {round_index}: the solvers {solvers}")

  def checker_validates(self, item: StepItem, rewritten: str) -> bool:
    raise AssertionError("real data has no exact step checker (config.game.validator='completions')")

  def heldout(self, lm, base_params, mesh) -> tuple[list[Solution], int]:
    return heldout_solutions(self.records), 0

  def dev(self, lm, base_params, mesh) -> list[Solution]:
    return [Solution(MathProblem(r.solution.problem, r.ground_truth_answer or "", r.solution.id), r.solution.steps,
                     r.solution.label, "prm800k") for r in self.dev_rows]


def _prm800k_steps(rows) -> tuple[list[StepItem], list[StepItem], list[tuple[StepItem, str]]]:
  """(right steps, wrong steps, rewrite pairs) on PRM800K's labelled paths, each step after a right prefix."""
  right, wrong, pairs = [], [], []
  for r in rows:
    problem = MathProblem(r.solution.problem, r.ground_truth_answer or "", r.solution.id)
    steps, label = r.solution.steps, r.solution.label
    for k, (step, options) in enumerate(zip(steps, r.options)):
      prefix = tuple(steps[:k])
      (wrong if k == label else right).append(StepItem(problem, prefix, step, k != label, "prm800k"))
      good = [t for t, rating in options if rating == 1]
      if good:
        pairs += [(StepItem(problem, prefix, good[0], True, "prm800k"), t) for t, rating in options if rating == -1]
      if k == label:
        break
  return right, wrong, pairs


def spc_data(task, config):
  """The source config.task.name asks for, its files read and checked."""
  if config.task.name == "arith":
    return BuiltinSPCData(task, config)
  return FileSPCData(task, config)
