"""AutoMathCritique: flawed solutions from the actor's own samples, step-level feedback, the refinement filter,
the JSONL they are written to, and difficulty by pass rate.

Xi et al., "Enhancing LLM Reasoning via Critique Models with Test-Time and
Training-Time Supervision" (arXiv 2411.16579), Sec. 3. Three ways to a
flawed solution, all from the actor:

  rg1  a whole solution sampled at a high temperature whose final answer is
       wrong (on real data that is all that is known; on the built-in task
       the checker also locates the error);
  rg2  a right prefix and the actor's resampling from step k on at a raised
       temperature, its final answer wrong (the error at step k or later);
  rg3  a right prefix, step k rewritten with an error of a named type, and
       the actor's continuation (location and type known).
Besides these, `correct`: the rg1 samples that are right, so the critic also
learns to accept a solution.

Two annotators, chosen by config.task.name:
  built-in  the right prefix is the reference's first k steps, the rg3 error
            comes from the task's error makers, the exact checker labels
            every solution, and the feedback, in DeepCritic's deliberate
            format (`tasks/arith/critiques.py`), is written by an annotator
            with set mistakes (it slips on some redos and is blind to some
            carries): the built-in analog of the paper's GPT-4 annotator.
  real data the right prefix is the first k steps of the actor's own greedy
            solution where that reaches the answer; rg2's error is located
            by Monte Carlo labels (`rewards/mc_labels.py`:
            `critique_data.rg2_location="mc"`) or taken to be step k
            (`"resampled"`); the rg3 error is written by the annotator model
            with SPC's sneaky prompt, one named type from
            `critique_data.error_types`; the feedback is the annotator model's
            critique given what is known (`templates.annotate_messages`: the
            right answer, and the error's step and type where known). The
            annotator model is the loaded checkpoint, before any training
            (the instruct model the released pipeline uses as its critic).
A critique is kept only when it parses (a \\boxed{} step) and, with the
paper's filter (`filter_by_refinement`), when the actor, refining with it,
reaches the right answer.

The JSONL (one record a line), `critique_data.jsonl` in the workdir:
  id              "<source>-<n>"
  source          rg1 | rg2 | rg3 | correct
  problem         the problem's text, as the prompts show it
  answer          its right final answer
  steps           the solution's steps (list of str)
  label           0-indexed earliest wrong step, -1: all right; null: unknown
                  (real data rg1: only the final answer is known wrong)
  error_type      rg3: the injected error's type; else null
  step            rg2 / rg3: the step resampled or rewritten from; else null
  critique        the feedback (ends in \\boxed{step number} or \\boxed{-1})
  critique_index  its boxed step, 0-indexed (-1: all right), as parsed; null:
                  it does not parse
  refinement      the actor's refinement given the critique
  refined_correct whether the refinement reaches the right answer
  kept            whether the critic trains on it
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import jax
import numpy as np

from scorejax import files
from scorejax.experiments.critic_data import (
  Solution,
  answer_sampler,
  critic_prompt,
  refine_ids,
)
from scorejax.rewards import mc_labels
from scorejax.rollouts import sample_batched
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.tasks import arith, templates
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import stream_id
from scorejax.tasks.math_task import MathProblem
from scorejax.tasks.records import RecordError, field, iter_records, string_list

SOURCES = ("rg1", "rg2", "rg3")  # the ways to a flawed solution
RECORD_SOURCES = SOURCES + ("correct",)  # a record's source: "correct" holds the right rg1 samples
RG2_LOCATIONS = ("mc", "resampled")  # real data: rg2's error step by Monte Carlo labels, or the resampled step
LEVELS = 5  # difficulty levels by pass rate, as the paper bins them: 1 (easiest) .. 5 (hardest)


@dataclasses.dataclass(frozen=True)
class CritiqueRecord:
  id: str
  source: str
  problem: str
  answer: str
  steps: tuple[str, ...]
  label: int | None  # None: unknown (real data rg1)
  error_type: str | None
  step: int | None
  critique: str
  critique_index: int | None  # None: the critique does not parse
  refinement: str
  refined_correct: bool
  kept: bool

  def to_json(self) -> dict:
    return dict(dataclasses.asdict(self), steps=list(self.steps))

  def solution(self) -> Solution:
    return Solution(MathProblem(self.problem, self.answer, self.id), self.steps, self.label, self.source)


def write_records(path: str, records: Sequence[CritiqueRecord]) -> None:
  """Atomically (a resumed run never reads half a file), from process 0."""
  if jax.process_index() != 0:
    return
  files.write_text(path, "".join(json.dumps(r.to_json()) + "\n" for r in records))


def read_records(path: str) -> list[CritiqueRecord]:
  """The records of a critique-data JSONL; a row that is not one names the file, the line and the field."""
  out = []
  for where, row in iter_records(path):
    source = field(row, "source", str, where)
    if source not in RECORD_SOURCES:
      raise RecordError(f"{where}: source {source!r}; expected one of {RECORD_SOURCES}")
    out.append(CritiqueRecord(
        id=field(row, "id", str, where), source=source, problem=field(row, "problem", str, where),
        answer=field(row, "answer", str, where), steps=string_list(row, "steps", where),
        label=field(row, "label", int, where, optional=True),
        error_type=field(row, "error_type", str, where, optional=True),
        step=field(row, "step", int, where, optional=True), critique=field(row, "critique", str, where),
        critique_index=field(row, "critique_index", int, where, optional=True),
        refinement=field(row, "refinement", str, where), refined_correct=field(row, "refined_correct", bool, where),
        kept=field(row, "kept", bool, where)))
  return out


def source_counts(records: Sequence[CritiqueRecord]) -> dict:
  """Per source: records written, critiques that parse, refinements that reach the answer, records kept."""
  out = {}
  for source in RECORD_SOURCES:
    rows = [r for r in records if r.source == source]
    out[source] = {"written": len(rows), "parsed": sum(r.critique_index is not None for r in rows),
                   "refined_correct": sum(r.refined_correct for r in rows), "kept": sum(r.kept for r in rows)}
  out["kept"] = sum(r.kept for r in records)
  return out


# ----------------------------------------------------------------------------
# Difficulty: the actor's pass rate over many samples, in 5 levels
# ----------------------------------------------------------------------------


def difficulty_level(passes: int, samples: int) -> int:
  """1 (pass rate in [0.8, 1]) .. 5 (pass rate below 0.2), in exact integer arithmetic."""
  if not 0 <= passes <= samples or samples < 1:
    raise ValueError(f"difficulty_level: {passes} passes of {samples} samples")
  return max(1, LEVELS - passes * LEVELS // samples)


def answer_groups(lm, params, task, problems, n: int, key, rule, config, mesh) -> list[list[list[int]]]:
  """n answers (token ids) to each problem by `rule`, one group per problem."""
  ids, _ = sample_batched(lm, params, [task.prompt_ids(p) for p in problems], key, rule, answer_sampler(task, config),
                          mesh, pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size, n=n)
  return [ids[i * n:(i + 1) * n] for i in range(len(problems))]


def pass_counts(lm, params, task, problems, samples: int, temperature: float, key, config, mesh) -> list[int]:
  """How many of `samples` sampled solutions to each problem reach its answer."""
  groups = answer_groups(lm, params, task, problems, samples, key, Sample(temperature=temperature), config, mesh)
  return [int(sum(task.reward(p, a) for a in g)) for p, g in zip(problems, groups)]


def level_shares(levels: Sequence[int]) -> dict[str, float]:
  """{"1": share, ..., "5": share} of a list of levels (zeros when it is empty)."""
  n = max(1, len(levels))
  return {str(k): sum(lv == k for lv in levels) / n for k in range(1, LEVELS + 1)}


# ----------------------------------------------------------------------------
# Flawed solutions (RG1-RG3), feedback, the refinement filter
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
  source: str
  problem: object  # ArithProblem, MathProblem
  steps: tuple[str, ...]
  label: int | None  # None: unknown (real data rg1)
  error_type: str | None = None
  step: int | None = None


def _sample_texts(lm, params, task, prompts, key, temperature, config, mesh) -> list[str]:
  return [task.text(i) for i in _sample_ids(lm, params, task, prompts, key, Sample(temperature=temperature),
                                            answer_sampler(task, config), config, mesh)]


def flawed_solutions(lm, params, task, problems, key, config, mesh) -> tuple[list[Candidate], dict]:
  """RG1-RG3 candidates (and the right RG1 samples) from the actor; cut-off or still-right ones counted, left out."""
  c = config.critique_data
  rng = np.random.default_rng([config.seed, stream_id("critique_data")])
  out, stats = [], {}
  for source in c.sources:
    if source not in SOURCES:
      raise ValueError(f"config.critique_data.sources: {source!r} is not one of {SOURCES}")
    k = jax.random.fold_in(key, stream_id(source))
    if source == "rg1":
      texts = _sample_texts(lm, params, task, [task.prompt_ids(p) for p in problems], k, c.rg1_temperature, config,
                            mesh)
      starts, kinds = [0] * len(problems), [None] * len(problems)
      prefixes = [()] * len(problems)
    else:
      prefixes, starts, kinds = [], [], []
      for p in problems:
        lines = task.reference_steps(p)
        at = int(rng.integers(len(lines) - 1))  # a computing step, never the answer line
        kind = None
        prefix = tuple(lines[:at])
        if source == "rg3":
          applicable = arith.applicable_error_types(p, prefix)
          kind = applicable[int(rng.integers(len(applicable)))]
          prefix = prefix + (arith.corrupt_step(p, prefix, kind, rng),)
        prefixes.append(prefix)
        starts.append(at)
        kinds.append(kind)
      temperature = c.rg2_temperature if source == "rg2" else c.rg3_temperature
      texts = _sample_texts(lm, params, task, [task.prompt_ids(p) + task.prefix_ids(q) for p, q in
                                              zip(problems, prefixes)], k, temperature, config, mesh)
    cut = right = 0
    for p, prefix, text, at, kind in zip(problems, prefixes, texts, starts, kinds):
      steps = tuple(prefix) + task.steps(text)
      if not task.is_complete(steps):
        cut += 1
        continue
      label = task.earliest_error(p, steps)
      if label < 0:
        right += 1
        if source == "rg1":
          out.append(Candidate("correct", p, steps, -1))
        continue
      out.append(Candidate(source, p, steps, label, kind, None if source == "rg1" else at))
    stats[source] = {"sampled": len(problems), "cut_off": cut, "right": right}
  return out, stats


def feedback(candidates: Sequence[Candidate], config) -> list[str]:
  """The annotator's step-level critique of each candidate (config.annotator: its set mistakes)."""
  a = config.annotator
  annotator = critiques.AnnotatorConfig(slip_rate=a.slip_rate, carry_blind_rate=a.carry_blind_rate)
  rng = np.random.default_rng([config.seed, stream_id("critique_data/feedback")])
  return [critiques.annotator_critique(c.problem, c.steps, annotator, rng) for c in candidates]


# ----------------------------------------------------------------------------
# Real data: the actor's own right solutions as prefixes, a model annotator given what is known
# ----------------------------------------------------------------------------


def _sample_ids(lm, params, task, prompts, key, rule, sampler, config, mesh) -> list[list[int]]:
  if not prompts:
    return []
  return sample_batched(lm, params, prompts, key, rule, sampler, mesh, pad_id=task.tokenizer.pad_id,
                        batch_size=config.eval.batch_size)[0]


def sampling_rule(temperature: float):
  return Greedy() if temperature == 0 else Sample(temperature=temperature)


def right_solutions(lm, params, task, problems, key, config, mesh) -> list[tuple[str, ...] | None]:
  """The actor's greedy solution to each problem where it is complete, reaches the answer and has a step
  before its last (rg2 / rg3 start from its first k steps); else None."""
  ids = _sample_ids(lm, params, task, [task.prompt_ids(p) for p in problems], key, Greedy(),
                    answer_sampler(task, config), config, mesh)
  out = []
  for p, i in zip(problems, ids):
    steps = task.steps(task.text(i))
    out.append(steps if len(steps) >= 2 and task.is_complete(steps) and task.reward(p, i) else None)
  return out


def rewrite_steps(lm, params, task, chosen, kinds, key, config, mesh) -> list[str | None]:
  """rg3 on real data: the annotator model rewrites step `at` of each (problem, steps, at) with an error of the
  named kind (SPC's sneaky prompt, that one type allowed); None where its answer does not parse."""
  prompts = [task.messages_ids(templates.sneaky_messages(task.templates, p.text, steps[:at], steps[at], (kind,)))
             for (p, steps, at), kind in zip(chosen, kinds)]
  ids = _sample_ids(lm, params, task, prompts, key, sampling_rule(config.annotator.temperature),
                    answer_sampler(task, config), config, mesh)
  parsed = [templates.parse_sneaky(task.text(i), (kind,)) for i, kind in zip(ids, kinds)]
  return [None if templates.is_invalid(x) else x[1] for x in parsed]


def mc_locate(lm, params, task, candidates: Sequence[Candidate], key, config, mesh) -> list[int | None]:
  """rg2's earliest wrong step by Monte Carlo labels, never before the resampled step (its prefix is a right
  solution's); None where the labels find no wrong step (or the solution is cut off)."""
  m = config.mc
  labels = mc_labels.mc_labels(lm, params, task, [mc_labels.LabelItem(x.problem, x.steps) for x in candidates],
                               mc_labels.MCConfig(rollouts=m.rollouts, temperature=m.temperature, top_p=m.top_p,
                                                  max_new_tokens=config.generator.max_new_tokens,
                                                  batch_size=m.batch_size), key, mesh)
  return [None if label is None or label < 0 else max(label, x.step) for label, x in zip(labels, candidates)]


def model_flawed_solutions(lm, params, task, problems, key, config, mesh) -> tuple[list[Candidate], dict]:
  """RG1-RG3 candidates (and the right RG1 samples) from the actor, its rg3 errors written by the annotator model
  (the same weights); cut-off, still-right, unparsed and unlocated ones counted, left out."""
  c = config.critique_data
  if c.rg2_location not in RG2_LOCATIONS:
    raise ValueError(f"config.critique_data.rg2_location={c.rg2_location!r}; expected one of {RG2_LOCATIONS}")
  rng = np.random.default_rng([config.seed, stream_id("critique_data")])
  out, stats, bases = [], {}, []
  if {"rg2", "rg3"} & set(c.sources):
    bases = right_solutions(lm, params, task, problems, jax.random.fold_in(key, stream_id("right")), config, mesh)
    stats["right_solutions"] = {"problems": len(problems), "right": sum(b is not None for b in bases)}
  for source in c.sources:
    if source not in SOURCES:
      raise ValueError(f"config.critique_data.sources: {source!r} is not one of {SOURCES}")
    k = jax.random.fold_in(key, stream_id(source))
    if source == "rg1":
      ids = _sample_ids(lm, params, task, [task.prompt_ids(p) for p in problems], k,
                        sampling_rule(c.rg1_temperature), answer_sampler(task, config), config, mesh)
      cut = right = 0
      for p, i in zip(problems, ids):
        steps = task.steps(task.text(i))
        if not task.is_complete(steps):
          cut += 1
        elif task.reward(p, i):
          right += 1
          out.append(Candidate("correct", p, steps, -1))
        else:
          out.append(Candidate("rg1", p, steps, None))  # only the final answer is known wrong
      stats[source] = {"sampled": len(problems), "cut_off": cut, "right": right}
      continue
    chosen = [(p, b, int(rng.integers(len(b) - 1))) for p, b in zip(problems, bases) if b is not None]
    prefixes, kinds, unparsed = [tuple(b[:at]) for _, b, at in chosen], [None] * len(chosen), 0
    if source == "rg3":
      kinds = [c.error_types[int(rng.integers(len(c.error_types)))] for _ in chosen]
      rewritten = rewrite_steps(lm, params, task, chosen, kinds, jax.random.fold_in(k, 1), config, mesh)
      unparsed = sum(r is None for r in rewritten)
      keep = [j for j, r in enumerate(rewritten) if r is not None]
      chosen, kinds = [chosen[j] for j in keep], [kinds[j] for j in keep]
      prefixes = [prefixes[j] + (rewritten[j],) for j in keep]
    temperature = c.rg2_temperature if source == "rg2" else c.rg3_temperature
    prompts = [task.prompt_ids(p) + task.prefix_ids(q) for (p, _, _), q in zip(chosen, prefixes)]
    ids = _sample_ids(lm, params, task, prompts, k, sampling_rule(temperature), answer_sampler(task, config),
                      config, mesh)
    cut = right = 0
    flawed = []
    for (p, _, at), prefix, kind, i in zip(chosen, prefixes, kinds, ids):
      steps = prefix + task.steps(task.text(i))
      if not task.is_complete(steps):
        cut += 1
      elif task.reward(p, i):
        right += 1
      else:
        flawed.append(Candidate(source, p, steps, at, kind, at))
    row = {"sampled": len(chosen), "cut_off": cut, "right": right}
    if source == "rg3":
      row["rewrite_unparsed"] = unparsed
    if source == "rg2" and c.rg2_location == "mc" and flawed:
      located = mc_locate(lm, params, task, flawed, jax.random.fold_in(k, 2), config, mesh)
      row["unlocated"] = sum(label is None for label in located)
      flawed = [dataclasses.replace(x, label=label) for x, label in zip(flawed, located) if label is not None]
    out.extend(flawed)
    stats[source] = row
  return out, stats


def known_about(x: Candidate, first_index: int) -> str:
  """What the annotator is told about a candidate besides the right answer."""
  if x.source == "correct":
    return "The solution's final answer is correct."
  if x.label is None:
    return "The solution's final answer is wrong; where its first error is, is not known."
  known = f"The earliest incorrect step is step {x.label + first_index}."
  return known + (f" It contains this kind of error: {x.error_type}." if x.error_type else "")


def model_feedback(lm, params, task, candidates: Sequence[Candidate], key, config, mesh) -> list[str]:
  """The annotator model's critique of each candidate, given the right answer and what is known of its error."""
  ts = task.templates
  prompts = [task.messages_ids(templates.annotate_messages(ts, x.problem.text, str(x.problem.answer), x.steps,
                                                           known_about(x, ts.critique_first_index)))
             for x in candidates]
  sampler = SamplerConfig(max_new_tokens=config.critique.max_new_tokens, stop_tokens=task.stop_ids,
                          pad_id=task.tokenizer.pad_id)
  ids = _sample_ids(lm, params, task, prompts, key, sampling_rule(config.annotator.temperature), sampler, config,
                    mesh)
  return [task.text(i) for i in ids]


# ----------------------------------------------------------------------------
# The records
# ----------------------------------------------------------------------------


def refine(lm, params, task, solutions: Sequence[Solution], critique_texts: Sequence[str], key, rule, config,
           mesh) -> list[list[int]]:
  """The actor's refinement of each solution given its critique (token ids)."""
  prompts = [refine_ids(task, s, t) for s, t in zip(solutions, critique_texts)]
  return _sample_ids(lm, params, task, prompts, key, rule, answer_sampler(task, config), config, mesh)


def keeps_redo(task, critique_text: str, index: int, refinement_ids) -> bool:
  """Whether a refinement writes, at the step a critique flags (`index`; -1: none), the critique's redo of that
  step: a refinement that reaches the answer with a redo of its own does not vouch for the critique's."""
  if index < 0:
    return True
  redo, steps = task.critique_redo(critique_text), task.steps(task.text(refinement_ids))
  return redo is not None and len(steps) > index and steps[index] == redo


def build_records(lm, params, task, config, mesh, stream: str = "critique_data") -> tuple[list[CritiqueRecord], dict]:
  """AutoMathCritique's records from the actor (its params; on real data also the annotator), each critique
  refined greedily and kept as the filter says; with per-source counts. `stream` names the training problems
  and the random draws (another stream: other problems)."""
  c = config.critique_data
  if c.filter_keeps_redo and not hasattr(task, "critique_redo"):
    raise ValueError(f"config.critique_data.filter_keeps_redo=True: task {config.task.name!r} reads no redo from a "
                     "critique (no critique_redo); set it to False")
  problems = task.train_problems(config.seed, stream, 0, c.problems)
  key = jax.random.fold_in(jax.random.key(config.seed), stream_id(stream))
  if config.task.name == "arith":
    candidates, stats = flawed_solutions(lm, params, task, problems, key, config, mesh)
    texts = feedback(candidates, config)
  else:
    candidates, stats = model_flawed_solutions(lm, params, task, problems, key, config, mesh)
    texts = model_feedback(lm, params, task, candidates, jax.random.fold_in(key, 2), config, mesh)
  solutions = [Solution(x.problem, x.steps, x.label, x.source) for x in candidates]
  refined = refine(lm, params, task, solutions, texts, jax.random.fold_in(key, 1), Greedy(), config, mesh)
  records, counter = [], {}
  for x, text, ids in zip(candidates, texts, refined):
    n = counter[x.source] = counter.get(x.source, -1) + 1
    index = task.parse_critique(text, len(x.steps))
    parsed, right = not templates.is_invalid(index), bool(task.reward(x.problem, ids))
    vouched = right and (not c.filter_keeps_redo or not parsed or keeps_redo(task, text, int(index), ids))
    records.append(CritiqueRecord(
        id=f"{x.source}-{n}", source=x.source, problem=x.problem.text, answer=str(x.problem.answer), steps=x.steps,
        label=x.label, error_type=x.error_type, step=x.step, critique=text,
        critique_index=int(index) if parsed else None, refinement=task.text(ids),
        refined_correct=right, kept=parsed and (vouched or not c.filter_by_refinement)))
  return records, {"sampled": stats, **source_counts(records)}


def critique_rows(task, records: Sequence[CritiqueRecord]) -> list[tuple[list[int], list[int]]]:
  """(critic prompt, critique) token rows of the kept records."""
  return [(critic_prompt(task, r.solution()), task.answer_ids(r.critique)) for r in records if r.kept]


def load_or_build(path: str, build) -> tuple[list[CritiqueRecord], dict]:
  """The records at `path` when a finished build wrote them there, else `build()`'s, written to `path`."""
  if files.isfile(path):
    records = read_records(path)
    return records, source_counts(records)
  records, stats = build()
  write_records(path, records)
  return records, stats
