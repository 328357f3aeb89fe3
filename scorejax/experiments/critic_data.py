"""What a critic learns from and is scored on: labelled solutions, seed critiques, problems to refine.

Two sources with one interface, chosen by config.task.name:

  BuiltinCriticData  the built-in task: solutions by several generators (the
                     noisy writer, the error maker, the generator model's own
                     samples) labelled by the exact checker; seed critiques by
                     an imperfect annotator, kept when they match the label;
                     the generator's own SFT data (it is trained from scratch);
  FileCriticData     real data from local files: ProcessBench-format records
                     held out, DeepCritic-style seed critiques for SFT,
                     PRM800K labelled paths for RL (or Monte Carlo labels of
                     the generator's own solutions to MATH train problems),
                     MATH-format problems for refinement; the generator is
                     the loaded checkpoint.

Both give: `heldout` (scored ProcessBench-style, by subset), `dev` (interval
evaluations and tuning), `refine_set` (solutions whose problems' answers are
known), `generator_batch`, `sft_steps` / `sft_batch`, `rl_pool`,
`reference_critique` (the ceiling of refinement where a checker can write
one), `export_heldout` and `check_fits` (the SFT data against the model's
context).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from scorejax.rewards import mc_labels
from scorejax.rollouts import Segment, sample_batched, to_batch
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.tasks import arith, prm800k, processbench, seed_critiques, templates
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import endless_shuffle, stream_id
from scorejax.tasks.math_task import MathProblem, MissingData
from scorejax.tasks.records import RecordError

GENERATORS = ("writer", "error_maker", "policy")  # the built-in task's generators of solutions
SFT_DRAWS = 8  # built-in: candidate critiques drawn per kept one, at most (the annotator's filter rejects some)
DATA_HOW_TO_GET = (
    "DeepCritic on real data reads local files (nothing is downloaded): config.data.processbench: the four "
    "ProcessBench subsets (huggingface.co/datasets/Qwen/ProcessBench: gsm8k, math, olympiadbench, omnimath as "
    ".jsonl); config.data.seed_critiques: DeepCritic-style seed critiques (scorejax/tasks/seed_critiques.py "
    "gives the fields); config.data.prm800k: a PRM800K file (github.com/openai/prm800k, e.g. "
    "phase2_train.jsonl)")


@dataclasses.dataclass(frozen=True)
class Solution:
  """A solution to critique, with its label."""

  problem: object  # .text, and .answer where it is known (ArithProblem, MathProblem)
  steps: tuple[str, ...]
  label: int | None  # 0-indexed earliest wrong step, -1 when all are right; None: unknown (refinement only)
  subset: str  # the ProcessBench subset it is scored in: its generator (built-in) or its data set (files)


# ----------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------


def critic_prompt(task, s: Solution) -> list[int]:
  return task.messages_ids(templates.critique_messages(task.templates, s.problem.text, s.steps))


def refine_ids(task, s: Solution, critique_text: str) -> list[int]:
  return task.messages_ids(templates.refine_messages(task.templates, s.problem.text, task.solution_text(s.steps),
                                                     critique_text))


def self_correct_ids(task, s: Solution) -> list[int]:
  """SCoRe's second turn: the solution as the first attempt, then the self-correction instruction."""
  return task.prompt_ids(s.problem) + task.answer_ids(task.solution_text(s.steps)) + task.instruction_ids


def answer_sampler(task, config) -> SamplerConfig:
  """What the generator samples: a solution, a second attempt, a refinement, a completion."""
  return SamplerConfig(max_new_tokens=config.generator.max_new_tokens, stop_tokens=task.stop_ids,
                       pad_id=task.tokenizer.pad_id)


# ----------------------------------------------------------------------------
# Shared pieces: the generator's own solutions, Monte Carlo labels
# ----------------------------------------------------------------------------


def policy_steps(lm, params, task, problems, key, rule, config, mesh) -> list[tuple[str, ...]]:
  """The generator's own solutions, split into steps."""
  ids, _ = sample_batched(lm, params, [task.prompt_ids(p) for p in problems], key, rule, answer_sampler(task, config),
                          mesh, pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size)
  return [task.steps(task.text(i)) for i in ids]


def mc_relabel(lm, gen_params, task, pool: Sequence[Solution], key, config, mesh) -> tuple[list[Solution], dict]:
  """The pool with Monte Carlo labels from the generator's completions; unlabelled (cut-off) ones dropped."""
  m = config.mc
  labels = mc_labels.mc_labels(lm, gen_params, task, [mc_labels.LabelItem(s.problem, s.steps) for s in pool],
                               mc_labels.MCConfig(rollouts=m.rollouts, temperature=m.temperature, top_p=m.top_p,
                                                  max_new_tokens=config.generator.max_new_tokens,
                                                  batch_size=m.batch_size), key, mesh)
  stats = {}
  if all(s.label is not None for s in pool):  # labels to compare with: the checker's, or the records'
    stats["mc_label_agreement"] = float(np.mean([l == s.label for l, s in zip(labels, pool)]))
  return [dataclasses.replace(s, label=l) for s, l in zip(pool, labels) if l is not None], stats


def pool_stats(pool: Sequence[Solution]) -> dict:
  out = {"pool_size": len(pool)}
  if pool:
    out["pool_all_correct"] = float(np.mean([s.label == -1 for s in pool]))
  return out


# ----------------------------------------------------------------------------
# The built-in task
# ----------------------------------------------------------------------------


def written_steps(problem, generator: str, rng: np.random.Generator, c) -> tuple[str, ...]:
  """A solution by the noisy writer (random slips and the carry habit) or the error maker (an injected error)."""
  if generator == "writer":
    return arith.write_solution(problem, rng, c.writer_error_rate, carry_slip_rate=c.carry_slip_rate).lines
  if generator == "error_maker":
    lines = arith.solution_lines(problem)
    if rng.random() >= c.error_share:
      return lines
    sites = [(i, kinds) for i in range(len(lines)) if (kinds := arith.applicable_error_types(problem, lines[:i]))]
    i, kinds = sites[int(rng.integers(len(sites)))]
    return arith.inject_error(problem, i, kinds[int(rng.integers(len(kinds)))], rng,
                              carry_slip_rate=c.carry_slip_rate).lines
  raise ValueError(f"config.solutions.generators: {generator!r} is not one of {GENERATORS}")


def fixed_steps(problem, steps, label: int, rng, carry_slip_rate: float) -> tuple[str, ...]:
  """What a refinement should write given a right critique: the steps before the flagged one, that
  step right, the rest continued by the writer (habit and all). -1: the solution as it is."""
  if label < 0:
    return tuple(steps)
  prefix = tuple(steps[:label]) + (arith.expected_line(problem, steps[:label]),)
  return arith.continue_solution(problem, prefix, rng, carry_slip_rate=carry_slip_rate)


@dataclasses.dataclass
class BuiltinCriticData:
  """The built-in task's critic data: several generators, the exact checker's labels, an imperfect annotator."""

  task: object  # tasks.arith.ArithTask
  config: ml_collections.ConfigDict

  def __post_init__(self):
    generators = tuple(self.config.solutions.generators)
    if set(generators) - set(GENERATORS) or not generators:
      raise ValueError(f"config.solutions.generators={generators}: expected some of {GENERATORS}")

  def solutions(self, lm, gen_params, problems, rng, key, mesh) -> tuple[list[Solution], int]:
    """One solution per (problem, generator), labelled by the exact checker; cut-off ones left out (and counted)."""
    task, config = self.task, self.config
    out, cut = [], 0
    for generator in config.solutions.generators:
      if generator == "policy":
        all_steps = policy_steps(lm, gen_params, task, problems, jax.random.fold_in(key, stream_id("policy")),
                                 Sample(temperature=config.solutions.policy_temperature), config, mesh)
      else:
        all_steps = [written_steps(p, generator, rng, config.solutions) for p in problems]
      for problem, steps in zip(problems, all_steps):
        if not task.is_complete(steps):
          cut += 1  # never "all correct": left out of critic data (ProcessBench's rule)
          continue
        out.append(Solution(problem, steps, task.earliest_error(problem, steps), generator))
    return out, cut

  def heldout(self, lm, gen_params, mesh) -> tuple[list[Solution], int]:
    """One solution per generator to each eval-split problem."""
    seed = self.config.seed
    return self.solutions(lm, gen_params, self.task.eval_problems, np.random.default_rng([seed, stream_id("heldout")]),
                          jax.random.fold_in(jax.random.key(seed), stream_id("heldout")), mesh)

  def dev(self, lm, gen_params, mesh) -> list[Solution]:
    seed = self.config.seed
    return self.solutions(lm, gen_params, self.task.dev_problems(self.config.eval.interval_problems),
                          np.random.default_rng([seed, stream_id("dev")]),
                          jax.random.fold_in(jax.random.key(seed), stream_id("dev")), mesh)[0]

  def refine_set(self, lm, gen_params, heldout, mesh) -> list[Solution]:
    return heldout  # the held-out solutions' problems have known answers

  def reference_critique(self, s: Solution) -> str:
    return critiques.write_critique(s.problem, s.steps)

  def check_fits(self, max_positions: int) -> None:
    """Nothing to check before training: its critiques are written per step (check_context covers the prompts)."""

  def export_heldout(self, heldout) -> list[dict]:
    return [arith.processbench_record(arith.ArithSolution(s.problem, s.steps, s.label, None), f"arith-{i}", s.subset,
                                      subset=s.subset) for i, s in enumerate(heldout)]

  def generator_batch(self, step: int) -> dict[str, np.ndarray]:
    """One kind of row per step: self-correct [x, y1, p, y2] (both attempts trained) or refine
    [x, y1, critique -> fixed] (the fixed solution trained).

    A step's rows share a kind so that two-attempt rows are not padded to the
    length of refine rows (which carry a whole critique).
    """
    task, config = self.task, self.config
    c = config.generator
    problems = task.train_problems(config.seed, "generator", step, c.batch_size)
    rng = np.random.default_rng([config.seed, stream_id("generator"), step])
    noisy = step >= c.clean_steps
    error_rate, slip = (c.error_rate, c.carry_slip_rate) if noisy else (c.clean_error_rate, 0.0)
    if rng.random() < c.refine_share:
      return to_batch(self._refine_rows(problems, rng, error_rate, slip), task.tokenizer.pad_id, ("answer",))
    rows = []
    for problem in problems:
      y1 = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
      y2 = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
      rows.append([Segment(task.prompt_ids(problem)), Segment(task.answer_ids(y1.text), "answer"),
                   Segment(task.instruction_ids), Segment(task.answer_ids(y2.text), "answer")])
    return to_batch(rows, task.tokenizer.pad_id, ("answer",))

  def _refine_rows(self, problems, rng, error_rate: float, slip: float) -> list[list[Segment]]:
    """[x, y1, the checker's critique -> y1 fixed at the flagged step, continued with the habit] rows."""
    task, rows = self.task, []
    for problem in problems:
      y1 = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
      text = critiques.write_critique(problem, y1.lines)
      target = arith.format_solution(fixed_steps(problem, y1.lines, y1.label, rng, slip))
      rows.append([Segment(refine_ids(task, Solution(problem, y1.lines, y1.label, "writer"), text)),
                   Segment(task.answer_ids(target), "answer")])
    return rows

  def refine_rows(self, stream: str, step: int, n: int) -> list[list[Segment]]:
    """n of the generator's (noisy) refine rows, a function of (stream, step): replayed to keep the skill."""
    c = self.config.generator
    rng = np.random.default_rng([self.config.seed, stream_id(stream), step])
    return self._refine_rows(self.task.train_problems(self.config.seed, stream, step, n), rng, c.error_rate,
                             c.carry_slip_rate)

  def sft_steps(self) -> int:
    return self.config.sft.steps

  def sft_batch(self, step: int) -> tuple[dict[str, np.ndarray], dict]:
    """Seed critiques of written solutions, kept only when their final index equals the label."""
    task, config = self.task, self.config
    c = config.sft
    rng = np.random.default_rng([config.seed, stream_id("sft"), step])
    annotator = critiques.AnnotatorConfig(slip_rate=config.annotator.slip_rate,
                                          carry_blind_rate=config.annotator.carry_blind_rate)
    written = [g for g in config.solutions.generators if g != "policy"] or ["writer"]
    problems = task.train_problems(config.seed, "sft", step, SFT_DRAWS * c.batch_size)
    rows, tried = [], 0
    while len(rows) < c.batch_size:
      if tried == len(problems):
        raise ValueError(f"the seed annotator kept {len(rows)} of {tried} critiques at SFT step {step}: "
                         f"config.annotator ({dict(config.annotator)}) rejects nearly all; lower its mistake rates")
      problem = problems[tried]
      steps = written_steps(problem, written[tried % len(written)], rng, config.solutions)
      tried += 1
      text = critiques.annotate(problem, steps, annotator, rng)
      if text is None:
        continue
      s = Solution(problem, steps, task.earliest_error(problem, steps), "")
      rows.append([Segment(critic_prompt(task, s)), Segment(task.answer_ids(text), "critique")])
    return to_batch(rows, task.tokenizer.pad_id, ("critique",)), {"kept_fraction": len(rows) / tried}

  def rl_pool(self, lm, gen_params, mesh) -> tuple[list[Solution], dict]:
    """Labelled training solutions: the checker's labels, or Monte Carlo ones (config.rl.label_source)."""
    config = self.config
    n_problems = -(-config.rl.pool_size // len(config.solutions.generators))
    problems = self.task.train_problems(config.seed, "rl_pool", 0, n_problems)
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id("rl_pool"))
    pool, cut = self.solutions(lm, gen_params, problems, np.random.default_rng([config.seed, stream_id("rl_pool")]),
                               key, mesh)
    stats = {"pool_cut_off": cut}
    if config.rl.label_source == "mc":
      pool, mc_stats = mc_relabel(lm, gen_params, self.task, pool, jax.random.fold_in(key, 1), config, mesh)
      stats.update(mc_stats)
    return pool, dict(stats, **pool_stats(pool))


# ----------------------------------------------------------------------------
# Real data from local files
# ----------------------------------------------------------------------------


def _as_solution(s: processbench.LabelledSolution, answer: str = "") -> Solution:
  return Solution(MathProblem(s.problem, answer, s.id), s.steps, s.label, s.subset)


def _need(path: str, key: str, how_to_get: str = DATA_HOW_TO_GET) -> str:
  if not path or not os.path.isfile(path):
    raise MissingData(f"config.data.{key}={path!r} is not a file. {how_to_get}")
  return path


def processbench_records(paths: Sequence[str], how_to_get: str = DATA_HOW_TO_GET
                         ) -> list[processbench.LabelledSolution]:
  """Every record of the ProcessBench-format files (config.data.processbench), one subset per file."""
  if not paths:
    raise MissingData(f"config.data.processbench is empty. {how_to_get}")
  return [r for path in paths for r in processbench.read_processbench(_need(path, "processbench", how_to_get))]


def heldout_solutions(records: Sequence[processbench.LabelledSolution]) -> list[Solution]:
  return [_as_solution(r) for r in records]


@dataclasses.dataclass
class FileCriticData:
  """DeepCritic's data from local files: every file is read and checked before any compute."""

  task: object  # tasks.math_task.MathTask
  config: ml_collections.ConfigDict

  def __post_init__(self):
    config, d = self.config, self.config.data
    if config.generator.steps:
      raise ValueError(f"config.generator.steps={config.generator.steps}: on real data the generator is the loaded "
                       "checkpoint (config.model.hf_dir); set --config.generator.steps=0")
    if not self.task.eval_problems:
      raise MissingData(f"config.task.eval_path={config.task.eval_path!r} holds no problems: refinement needs "
                        "problems with known answers (MATH500's test.jsonl)")
    if config.rl.label_source == "mc" and config.rl.pool_size < 1:
      raise ValueError(f"config.rl.pool_size={config.rl.pool_size}: Monte Carlo labels need a number of MATH "
                       "train problems to sample and label solutions for")
    self.records = processbench_records(d.processbench)
    self.seeds = self._read_seeds(_need(d.seed_critiques, "seed_critiques"))
    self.dev_paths, self.pool_paths = self._read_prm800k()

  def _read_seeds(self, path: str) -> list[tuple[list[int], list[int], str]]:
    """(prompt, critique, file:line) tokens of each seed critique, kept only when its boxed index equals its label."""
    task, kept, read = self.task, [], 0
    for seed in seed_critiques.read_seed_critiques(path):
      read += 1
      if self.config.sft.filter_by_label and not seed_critiques.agrees_with_label(
          seed, task.templates.critique_first_index):
        continue
      prompt = critic_prompt(task, Solution(MathProblem(seed.problem, "", seed.id), seed.steps, seed.label, ""))
      kept.append((prompt, task.answer_ids(seed.critique), seed.where))
    if not kept:
      raise RecordError(f"{path}: none of its {read} seed critiques ends with a \\boxed{{}} index equal to its "
                        "label (config.sft.filter_by_label drops those)")
    self.seeds_read = read
    return kept

  def check_fits(self, max_positions: int) -> None:
    """Every kept seed critique, with its prompt, fits the model's context; else its file and line are named."""
    for prompt, target, where in self.seeds:
      if len(prompt) + len(target) > max_positions:
        raise RecordError(f"{where}: the critic prompt ({len(prompt)} tokens) and the critique ({len(target)}) "
                          f"are {len(prompt) + len(target)} tokens, more than the model's "
                          f"max_position_embeddings={max_positions}")

  def _read_prm800k(self) -> tuple[list[Solution], list[Solution]]:
    """(dev, pool): PRM800K's labelled paths, shuffled once by task.dev_seed; the first
    eval.interval_problems are the dev set (when interval evaluations are on), the rest RL's pool."""
    config, d = self.config, self.config.data
    needed = config.rl.label_source == "task" or config.eval.every
    if not d.prm800k and not needed:
      return [], []
    rows = list(prm800k.read_prm800k(_need(d.prm800k, "prm800k"), neutral_is_error=d.prm800k_neutral_is_error,
                                     check_answers=False))
    solutions = [_as_solution(r.solution, r.ground_truth_answer or "") for r in rows
                 if r.solution.label >= 0 or self.task.is_complete(r.solution.steps)]  # never a cut-off "all right"
    order = np.random.default_rng(config.task.dev_seed).permutation(len(solutions))
    dev_size = config.eval.interval_problems if config.eval.every else 0
    if len(solutions) <= dev_size:
      raise RecordError(f"{d.prm800k}: {len(solutions)} labelled paths; config.eval.interval_problems={dev_size} "
                        "of them are held out as the dev set and RL needs the rest")
    dev = [solutions[i] for i in order[:dev_size]]
    pool = [solutions[i] for i in np.sort(order[dev_size:])]
    return dev, pool[:config.rl.pool_size] if config.rl.pool_size else pool

  def heldout(self, lm, gen_params, mesh) -> tuple[list[Solution], int]:
    return heldout_solutions(self.records), 0

  def dev(self, lm, gen_params, mesh) -> list[Solution]:
    return self.dev_paths

  def refine_set(self, lm, gen_params, heldout, mesh) -> list[Solution]:
    """The generator's greedy solutions to the eval problems (MATH500), whose answers are known (an empty
    or cut-off solution is kept: refinement may still reach the answer)."""
    problems = self.task.eval_problems
    steps = policy_steps(lm, gen_params, self.task, problems, jax.random.key(0), Greedy(), self.config, mesh)
    return [Solution(p, s, None, "refine") for p, s in zip(problems, steps)]

  def reference_critique(self, s: Solution) -> None:
    return None  # no checker writes one on real data

  def export_heldout(self, heldout) -> list[dict]:
    return [r.to_record() for r in self.records]

  def generator_batch(self, step: int):
    raise AssertionError("the loaded generator is not trained (config.generator.steps=0)")

  def sft_steps(self) -> int:
    """config.sft.steps, or (0) config.sft.epochs passes over the kept seed critiques."""
    c = self.config.sft
    return c.steps or math.ceil(c.epochs * len(self.seeds) / c.batch_size)

  def sft_batch(self, step: int) -> tuple[dict[str, np.ndarray], dict]:
    rows = endless_shuffle(self.seeds, self.config.seed, "sft", step, self.config.sft.batch_size)
    batch = to_batch([[Segment(p), Segment(t, "critique")] for p, t, _ in rows], self.task.tokenizer.pad_id,
                     ("critique",))
    return batch, {"kept_fraction": len(self.seeds) / self.seeds_read}

  def rl_pool(self, lm, gen_params, mesh) -> tuple[list[Solution], dict]:
    """PRM800K's human labels ("task"), or Monte Carlo labels of the generator's solutions to MATH train problems."""
    config = self.config
    if config.rl.label_source == "task":
      return self.pool_paths, pool_stats(self.pool_paths)
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id("rl_pool"))
    problems = self.task.train_problems(config.seed, "rl_pool", 0, config.rl.pool_size)
    steps = policy_steps(lm, gen_params, self.task, problems, key,
                         Sample(temperature=config.solutions.policy_temperature), config, mesh)
    pool = [Solution(p, s, None, "policy") for p, s in zip(problems, steps)]
    labelled, stats = mc_relabel(lm, gen_params, self.task, pool, jax.random.fold_in(key, 1), config, mesh)
    return labelled, dict(stats, pool_cut_off=len(pool) - len(labelled), **pool_stats(labelled))


def critic_data(task, config):
  """The source config.task.name asks for, its files read and checked."""
  if config.task.name == "arith":
    return BuiltinCriticData(task, config)
  return FileCriticData(task, config)
