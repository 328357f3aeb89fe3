"""Critique-in-the-loop end to end: critique data from the actor, a critique model, critiques at test time and
in self-improvement.

  python -m scorejax.main --config=configs/arith_critique_loop.py --workdir=/tmp/critique_loop
  python -m scorejax.main --config=configs/arith_critique_loop.py:vanilla_si --workdir=/tmp/vanilla_si
  python -m scorejax.main --config=configs/qwen_critique_loop.py:tpu --workdir=gs://bucket/qwen_critique_loop

Xi et al., "Enhancing LLM Reasoning via Critique Models with Test-Time and
Training-Time Supervision" (arXiv 2411.16579, MathCritique). The critique
data (AutoMathCritique: RG1-RG3, feedback, the refinement filter, the JSONL)
is built by `experiments/critique_data.py`; the critic's prompt, critiques
and ProcessBench-format scoring are DeepCritic's (`experiments/deepcritic.py`).

On real data (`configs/qwen_critique_loop.py`, `configs/llama_critique_loop.py`:
an HF checkpoint, MATH-format or GSM8K problems, ProcessBench files) the
loaded checkpoint is the actor, the annotator that writes the critique data's
feedback (given the answer and what is known of the error), and the critic's
starting point; nothing is trained from scratch and nothing is replayed.

Phases, each checkpointed and resumable on its own:
  actor          built-in task: SFT of the policy that solves (with a carry
                 habit), self-corrects and refines given a critique
                 (`critic_data.BuiltinCriticData.generator_batch`); real
                 data: none (generator.steps = 0);
  critic         SFT, from the actor, on the kept AutoMathCritique records
                 (none kept: warned, and the critic is the untrained actor,
                 `critic.trained = false` in eval.json);
  iter<i>/actor  self-improvement, i = 1..iterations: the actor of the
                 iteration before samples N answers per training question;
                 its wrong answers are critiqued and refined (within a
                 refinement budget); correct originals and correct
                 refinements are the data the base actor is fine-tuned on,
                 afresh each iteration, with `replay_share` of its steps on
                 the base SFT's refine rows (in both modes: a model
                 trained from scratch forgets how to refine in a hundred
                 steps of answers alone, and the next iteration refines). `self_improve.mode=vanilla` keeps
                 only correct samples, with the loop's whole sample budget
                 spent on more of them;
  iter<i>/critic with `self_improve.critic_refresh`, i = 2..iterations: the
                 critique data rebuilt from the samples of the actor that
                 samples iteration i (`critique_data_iter<i>.jsonl`), and
                 the critic trained afresh from that actor on every kept
                 critique so far, so that it critiques the errors the
                 fine-tuned actor makes rather than the base actor's.
Difficulty is the base actor's pass rate over many samples per question, in
5 levels (1 easiest). eval.json: `actor` (held-out accuracy, `iter0`),
`critique_data` (per-source counts), `critic` (ProcessBench-format F1 on
held-out solutions: the built-in task's generators, or the ProcessBench files), `test_time` (plain sampling's MV@k / pass@k against
refine-with-critique and sequential refinement at equal sampled tokens, per
level) and `iter1`, `iter2`, ... (accuracy per level, and the share of the
iteration's training data from each level).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from scorejax import evaluation, files, parallel
from scorejax.experiments import critic_data
from scorejax.experiments import critique_data as cd
from scorejax.experiments.critic_data import BuiltinCriticData, Solution, answer_sampler
from scorejax.experiments.deepcritic import check_context, critique, evaluate_critic
from scorejax.metrics import MetricWriter, format_table, plot_curves, read_jsonl
from scorejax.models.build import build_model
from scorejax.objectives import critic as critic_obj
from scorejax.objectives import sft
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import EvalCache, PhaseRunner, claim_workdir, phase_offsets
from scorejax.rollouts import Segment, sample_batched, to_batch
from scorejax.sampling import Greedy, Sample
from scorejax.search import final_answer, voted_reward, votes_at_tokens
from scorejax.tasks.base import endless_shuffle, make_task, stream_id
from scorejax.tasks.templates import get_templates
from scorejax.train_step import OptimizerConfig

MODES = ("critique", "vanilla")  # self-improvement with the critic in the loop, or without it
TABLE_KEYS = ("accuracy", "accuracy_sampled", "hard_share")
SWEEP_METRICS = TABLE_KEYS


def sweep_rows(results: dict) -> dict[str, dict]:
  """`scorejax.sweep`'s row of one run: the actor after its last self-improvement iteration."""
  last = max(int(k[len("iter"):]) for k in results if k.startswith("iter") and k[len("iter"):].isdigit())
  return {f" iter{last}": results[f"iter{last}"]}


# ----------------------------------------------------------------------------
# Critique, refine, repeat
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Chains:
  """Answers after each round of critique-and-refine, one row per chain."""

  answers: list[list[list[int]]]  # [round][row]: the row's answer ids after that round (round 0: the first answer)
  tokens: np.ndarray  # int [rounds + 1, rows]: tokens sampled for the row up to that round (actor and critic)
  stats: dict  # critiques written, unparseable ones (the answer kept), accepted answers, refinements


VERDICTS = ("located", "early", "late", "missed", "false_alarm", "passed", "invalid")


def verdict_kind(first_error: int, predicted: int) -> str:
  """What a critique said of an answer whose first wrong step the checker knows (`first_error`; -1: every step
  right): flagged that step ("located"), one before it ("early") or after it ("late"), accepted the answer
  ("missed"); of an answer with every step right: flagged one ("false_alarm") or accepted it ("passed")."""
  if predicted == critic_obj.INVALID_INDEX:
    return "invalid"
  if first_error < 0:
    return "passed" if predicted < 0 else "false_alarm"
  if predicted < 0:
    return "missed"
  return "located" if predicted == first_error else "early" if predicted < first_error else "late"


def count_verdicts(task, solutions, critiques, flagged, refined, stats: dict) -> None:
  """Adds one round of critiques to `stats`, by the checker: `verdicts`, each critique's `verdict_kind`; per
  kind the refinements it led to that came out right (`refined_right`) and those right up to and including the
  flagged step (`refined_past_flag`); of the critiques that located the first wrong step, those whose redo of
  it is right (`located_redo_right`, where the task reads a redo) and their refinements past that step
  (`located_redo_right_past_flag`). They tell whether a loop falls short in the critic (a wrong step not
  located, or its redo wrong), in the actor's refining of the flagged step, or in what it writes after it."""
  kinds = [verdict_kind(task.earliest_error(s.problem, s.steps), int(p)) for s, p in zip(solutions,
                                                                                         critiques.predicted)]
  for kind in kinds:
    stats["verdicts"][kind] += 1
  for j, ids in zip(flagged, refined):
    s, flag = solutions[j], int(critiques.predicted[j])
    first_wrong = task.earliest_error(s.problem, task.steps(task.text(ids)))
    past_flag = first_wrong < 0 or first_wrong > flag
    stats["refined_right"][kinds[j]] += int(task.reward(s.problem, ids))
    stats["refined_past_flag"][kinds[j]] += int(past_flag)
    redo = task.critique_redo(critiques.texts[j]) if hasattr(task, "critique_redo") else None
    if kinds[j] == "located" and redo is not None and task.earliest_error(s.problem, s.steps[:flag] + (redo,)) < 0:
      stats["located_redo_right"] += 1
      stats["located_redo_right_past_flag"] += int(past_flag)


def critique_and_refine(lm, actor, critic, task, problems, first, rounds: int, key, rule, config,
                        mesh, settled=None) -> Chains:
  """Each row's answer is critiqued (greedy); a flagged one is refined by the actor (`rule`), then critiqued
  again, up to `rounds` times; an accepted answer or an unparseable critique ends the row's chain, and so does
  a refinement for which `settled(row, ids)` holds (in training, one the gold answer already marks right).

  Where the task's checker labels steps (`earliest_error`), stats also hold the counts of `count_verdicts`."""
  answers, tokens = [list(first)], np.zeros((rounds + 1, len(first)), np.int64)
  tokens[0] = [len(a) for a in first]
  stats = {"critiques": 0, "invalid_critiques": 0, "accepted": 0, "refined": 0, "no_answer": 0}
  labelled = hasattr(task, "earliest_error")
  if labelled:
    stats.update({name: dict.fromkeys(VERDICTS, 0) for name in ("verdicts", "refined_right", "refined_past_flag")},
                 located_redo_right=0, located_redo_right_past_flag=0)
  open_rows = list(range(len(first)))
  for r in range(rounds):
    current, spent = list(answers[-1]), tokens[r].copy()
    if open_rows:
      solutions = [Solution(problems[i], task.steps(task.text(current[i])), None, "") for i in open_rows]
      critiques = critique(lm, critic, task, solutions, jax.random.fold_in(key, 2 * r), Greedy(), config, mesh)
      flagged = [j for j, p in enumerate(critiques.predicted) if p >= 0]
      refined = cd.refine(lm, actor, task, [solutions[j] for j in flagged], [critiques.texts[j] for j in flagged],
                          jax.random.fold_in(key, 2 * r + 1), rule, config, mesh) if flagged else []
      for j, ids in zip(flagged, refined):
        current[open_rows[j]] = ids
        spent[open_rows[j]] += len(ids)
        stats["no_answer"] += final_answer(task, ids) is None
      if labelled:
        count_verdicts(task, solutions, critiques, flagged, refined, stats)
      for j, i in enumerate(open_rows):
        spent[i] += len(critiques.ids[j])
      stats["critiques"] += len(open_rows)
      stats["invalid_critiques"] += int(np.sum(critiques.predicted == critic_obj.INVALID_INDEX))
      stats["accepted"] += int(np.sum(critiques.predicted == -1))
      stats["refined"] += len(flagged)
      open_rows = [open_rows[j] for j in flagged]
      if settled is not None:
        open_rows = [i for i in open_rows if not settled(i, current[i])]
    answers.append(current)
    tokens[r + 1] = spent
  return Chains(answers, tokens, stats)


# ----------------------------------------------------------------------------
# Held-out accuracy by difficulty level
# ----------------------------------------------------------------------------


def by_level(hits, levels) -> dict[str, float | None]:
  """The mean of per-problem `hits` within each difficulty level (None where a level has no problem)."""
  hits, levels = np.asarray(hits, np.float64), np.asarray(levels)
  return {str(k): float(hits[levels == k].mean()) if np.any(levels == k) else None
          for k in range(1, cd.LEVELS + 1)}


def actor_accuracy(lm, params, task, problems, levels, config, mesh) -> dict:
  """Greedy accuracy and the mean accuracy of `eval.samples` samples, overall and per level."""
  prompts = [task.prompt_ids(p) for p in problems]
  greedy = sample_batched(lm, params, prompts, jax.random.key(0), Greedy(), answer_sampler(task, config), mesh,
                          pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size)[0]
  e = config.eval
  sampled = cd.answer_groups(lm, params, task, problems, e.samples, jax.random.key(1),
                             Sample(temperature=e.temperature), config, mesh)
  hits = [task.reward(p, a) for p, a in zip(problems, greedy)]
  mean = [np.mean([task.reward(p, a) for a in g]) for p, g in zip(problems, sampled)]
  return {"accuracy": float(np.mean(hits)), "accuracy_sampled": float(np.mean(mean)),
          "levels": by_level(hits, levels), "levels_sampled": by_level(mean, levels)}


# ----------------------------------------------------------------------------
# Test time: plain sampling against critique-and-refine at equal sampled tokens
# ----------------------------------------------------------------------------


def voted_hits(task, problems, groups) -> np.ndarray:
  """float [P]: whether the majority answer of each problem's group of answers is right."""
  return np.array([voted_reward(task, p, group) for p, group in zip(problems, groups)])


def round_transitions(task, problems, chains: Chains) -> list[dict]:
  """Per round of critique-and-refine, over all chains: the accuracy after it, and how many answers it
  refined, fixed (wrong -> right) and broke (right -> wrong)."""
  right = [np.array([task.reward(p, a) for p, a in zip(problems, answers)]) for answers in chains.answers]
  out = []
  for r in range(1, len(chains.answers)):
    changed = np.array([a is not b for a, b in zip(chains.answers[r - 1], chains.answers[r])], bool)
    out.append({"round": r, "accuracy": float(right[r].mean()), "refined": int(changed.sum()),
                "fixed": int((changed & (right[r - 1] == 0) & (right[r] == 1)).sum()),
                "broken": int((changed & (right[r - 1] == 1) & (right[r] == 0)).sum())})
  return out


def test_time(lm, actor, critic, task, problems, levels, config, mesh) -> dict:
  """MV@k and pass@k of plain samples, and of `n` chains of critique-and-refine (one pass, and sequential
  up to `sequential_rounds`), each chain against plain sampling at the chains' number of sampled tokens."""
  t = config.test_time
  key = jax.random.fold_in(jax.random.key(config.seed), stream_id("test_time"))
  rule, k_max, n_max = Sample(temperature=t.temperature), t.max_samples, max(t.chains)
  groups = cd.answer_groups(lm, actor, task, problems, k_max, key, rule, config, mesh)
  right = [np.array([task.reward(p, a) for a in g]) for p, g in zip(problems, groups)]
  per_sample = float(np.mean([len(a) for g in groups for a in g]))

  def plain_at(k):
    hits = voted_hits(task, problems, [g[:k] for g in groups])
    passes = [evaluation.pass_at_k(k_max, int(r.sum()), k) for r in right]
    return {"k": k, "tokens": per_sample * k, "mv": float(hits.mean()), "pass": float(np.mean(passes)),
            "levels_mv": by_level(hits, levels)}

  # Chains start from the first n_max plain samples of each problem (rows problem-major).
  rows = [(i, j) for i in range(len(problems)) for j in range(n_max)]
  chains = critique_and_refine(lm, actor, critic, task, [problems[i] for i, _ in rows],
                               [groups[i][j] for i, j in rows], t.sequential_rounds,
                               jax.random.fold_in(key, 1), cd.sampling_rule(t.refine_temperature), config, mesh)
  out = {"num_problems": len(problems), "tokens_per_sample": per_sample, "max_samples": k_max,
         "plain": [plain_at(k) for k in sorted({1, 2, 4, 8, 16, k_max} & set(range(1, k_max + 1)))],
         "chain_stats": chains.stats, "rounds": round_transitions(task, [problems[i] for i, _ in rows], chains),
         "rows": []}
  for method, r in (("refine", 1), ("sequential", t.sequential_rounds)):
    for n in t.chains:
      final = [[chains.answers[r][i * n_max + j] for j in range(n)] for i in range(len(problems))]
      spent = chains.tokens[r].reshape(len(problems), n_max)[:, :n].sum(1)
      hits = voted_hits(task, problems, final)
      passes = [float(any(task.reward(p, a) for a in f)) for p, f in zip(problems, final)]
      k = votes_at_tokens(float(spent.mean()), per_sample)
      peer = plain_at(min(k, k_max))
      out["rows"].append({"method": method, "rounds": r, "chains": n, "tokens": float(spent.mean()),
                          "mv": float(hits.mean()), "pass": float(np.mean(passes)), "levels_mv": by_level(hits, levels),
                          "plain_k": peer["k"], "plain_capped": k > k_max, "plain_tokens": peer["tokens"],
                          "plain_mv": peer["mv"], "plain_pass": peer["pass"], "plain_levels_mv": peer["levels_mv"]})
  return out


# ----------------------------------------------------------------------------
# Self-improvement: one iteration's training data
# ----------------------------------------------------------------------------


def vanilla_samples(s: ml_collections.ConfigDict) -> int:
  """Answers vanilla self-improvement samples per question: the loop's N ("samples", the paper's comparison at
  equal N), or the loop's whole actor budget, N samples + every refinement it may make ("loop")."""
  budgets = {"samples": s.samples, "loop": s.samples + s.refine_budget * s.refine_rounds}
  if s.vanilla_budget not in budgets:
    raise ValueError(f"config.self_improve.vanilla_budget={s.vanilla_budget!r}; expected one of {sorted(budgets)}")
  return budgets[s.vanilla_budget]


def vanilla_rows(lm, actor, critic, task, problems, key, config, mesh) -> tuple[list[tuple[int, str, str]], dict]:
  """Vanilla self-improvement: `vanilla_samples` answers per question, the correct ones kept."""
  s = config.self_improve
  n = vanilla_samples(s)
  groups = cd.answer_groups(lm, actor, task, problems, n, key, Sample(temperature=s.temperature), config, mesh)
  rows = [(q, task.text(a), "sample") for q, (p, g) in enumerate(zip(problems, groups)) for a in g
          if task.reward(p, a)]
  return rows, {"actor_samples": n * len(problems), "critiques": 0}


def critique_loop_rows(lm, actor, critic, task, problems, key, config, mesh) -> tuple[list[tuple[int, str, str]],
                                                                                      dict]:
  """Critique-in-the-loop: N samples per question; the wrong ones (at most refine_budget per question, as the
  released pipeline knows them from the gold answer) are critiqued and refined, up to `refine_rounds` times
  while the refinement is still wrong; correct originals and correct refinements kept."""
  s = config.self_improve
  groups = cd.answer_groups(lm, actor, task, problems, s.samples, key, Sample(temperature=s.temperature), config,
                            mesh)
  rows = [(q, task.text(a), "sample") for q, (p, g) in enumerate(zip(problems, groups)) for a in g
          if task.reward(p, a)]
  wrong = [(q, a) for q, (p, g) in enumerate(zip(problems, groups))
           for a in [a for a in g if not task.reward(p, a)][:s.refine_budget]]
  chains = critique_and_refine(lm, actor, critic, task, [problems[q] for q, _ in wrong], [a for _, a in wrong],
                               s.refine_rounds, jax.random.fold_in(key, 1), cd.sampling_rule(s.refine_temperature),
                               config, mesh, settled=lambda i, ids: task.reward(problems[wrong[i][0]], ids))
  refined = 0
  for (q, _), final in zip(wrong, chains.answers[-1]):  # an unrefined answer is still the wrong one
    if task.reward(problems[q], final):
      rows.append((q, task.text(final), "refinement"))
      refined += 1
  return rows, dict(chains.stats, actor_samples=s.samples * len(problems) + chains.stats["refined"],
                    wrong_critiqued=len(wrong), correct_refinements=refined)


ITERATION_DATA = {"critique": critique_loop_rows, "vanilla": vanilla_rows}


def fine_tune_stream(iteration: str, order_seed: int) -> str:
  """The random stream of an iteration's fine-tune: its rows' order and replay draws. Order seed 0 is the
  phase's own stream; another seed feeds the same rows in another order (how much the actor varies with it)."""
  return f"{iteration}/actor" + (f"/order{order_seed}" if order_seed else "")


def data_stats(rows, levels, num_questions: int) -> dict:
  """Rows kept, their sources, the share from each difficulty level, and the questions each level covers."""
  row_levels = [levels[q] for q, _, _ in rows]
  covered = {q for q, _, _ in rows}
  per_level = {str(k): sum(lv == k for lv in levels) for k in range(1, cd.LEVELS + 1)}
  return {"rows": len(rows), "from_samples": sum(src == "sample" for _, _, src in rows),
          "from_refinements": sum(src == "refinement" for _, _, src in rows),
          "level_share": cd.level_shares(row_levels),
          "hard_share": sum(lv >= cd.LEVELS - 1 for lv in row_levels) / max(1, len(rows)),
          "questions_covered": {k: sum(levels[q] == int(k) for q in covered) / n if n else None
                                for k, n in per_level.items()},
          "num_questions": num_questions}


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


DATA_HOW_TO_GET = (
    "Critique-in-the-loop on real data reads local files (nothing is downloaded): config.task.train_path / "
    "eval_path: MATH-format JSONL (problem, solution with a \\boxed{} answer; or task.name='gsm8k' with a prepared "
    "tfds data_dir); config.data.processbench: ProcessBench-format subsets the critic is scored on "
    "(huggingface.co/datasets/Qwen/ProcessBench: gsm8k.jsonl, math.jsonl, ...)")


def check_loaded_actor(config) -> None:
  """Real data: the actor (and the annotator, and the critic's start) is the loaded checkpoint, and nothing
  trained from scratch is replayed."""
  if not config.model.hf_dir:
    raise ValueError("config.model.hf_dir is empty: on real data the actor is an HF checkpoint")
  if config.generator.steps:
    raise ValueError(f"config.generator.steps={config.generator.steps}: on real data the actor is the loaded "
                     "checkpoint (config.model.hf_dir); set --config.generator.steps=0")
  if config.self_improve.replay_share:
    raise ValueError(f"config.self_improve.replay_share={config.self_improve.replay_share}: replay rows are the "
                     "built-in actor's own SFT data; on real data set it to 0")
  if not config.task.templates or not get_templates(config.task.templates).annotate:
    raise ValueError(f"config.task.templates={config.task.templates!r} has no annotator prompt; use 'deepcritic' or 'math'")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  s = config.self_improve
  if s.mode not in MODES:
    raise ValueError(f"config.self_improve.mode={s.mode!r}; expected one of {MODES}")
  vanilla_samples(s)  # a bad budget name fails here, not after the actor has trained
  # MESH / DATA / MODEL (real data: every file read and checked before the model loads)
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  builtin = config.task.name == "arith"
  if not builtin:
    check_loaded_actor(config)
  task = make_task(config.task)
  if builtin:
    data = BuiltinCriticData(task, config)
    actor_batch, replay_rows = data.generator_batch, data.refine_rows
  else:
    processbench = critic_data.heldout_solutions(critic_data.processbench_records(config.data.processbench,
                                                                                  DATA_HOW_TO_GET))
    actor_batch = replay_rows = None  # the loaded actor is not trained from scratch and replays nothing
  claim_workdir(workdir, config)
  lm, params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runner = PhaseRunner(config, workdir, lm, mesh, writer, bar_keys=("loss",), rules=rules)
  results, difficulty, iteration_cache = (EvalCache(workdir), EvalCache(workdir, "difficulty.json"),
                                          EvalCache(workdir, "iterations.json"))
  tokens = model_logprobs(lm, config.logprob_chunk)
  answer_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_answer_BxT"]), sft.SFTConfig())

  def sft_opt(c, steps):
    return OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                           total_steps=max(1, steps), grad_clip_norm=1.0, grad_accum_steps=c.grad_accum_steps)

  refresh = s.critic_refresh and s.mode == "critique"
  phases = [("actor", config.generator.steps), ("critic", config.critic.steps)]
  for i in range(1, s.iterations + 1):
    if refresh and i > 1:
      phases.append((f"iter{i}/critic", config.critic.steps))
    phases.append((f"iter{i}/actor", s.steps))
  offsets = phase_offsets(phases)

  # ACTOR: solve (with a carry habit), self-correct, refine given a critique
  c = config.generator
  base = runner.run("actor", c.steps, sft_opt(c, c.steps), params, answer_loss,
                    lambda step, state: (actor_batch(step), {}), offsets["actor"][0])

  # DIFFICULTY: the base actor's pass rate on the held-out and the training questions
  heldout = task.eval_problems
  questions = task.train_problems(config.seed, "self_improve", 0, s.questions)
  d = config.difficulty

  def passes(name, problems):
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id(f"difficulty/{name}"))
    return difficulty.get(name, lambda: {"passes": cd.pass_counts(lm, base, task, problems, d.samples,
                                                                   d.temperature, key, config, mesh),
                                         "samples": d.samples})["passes"]
  heldout_levels = [cd.difficulty_level(n, d.samples) for n in passes("heldout", heldout)]
  question_levels = [cd.difficulty_level(n, d.samples) for n in passes("questions", questions)]
  dev = task.dev_problems(config.eval.dev_problems)

  def evaluate_actor(name, p, extra=None):
    def compute():
      out = actor_accuracy(lm, p, task, heldout, heldout_levels, config, mesh)
      on_dev = actor_accuracy(lm, p, task, dev, [1] * len(dev), config, mesh)
      out["dev_accuracy"], out["dev_accuracy_sampled"] = on_dev["accuracy"], on_dev["accuracy_sampled"]
      out.update(extra or {})
      step = offsets[f"{name}/actor"][1] if f"{name}/actor" in offsets else offsets["actor"][1]
      writer.write(step, name, {f"eval_{k}": out[k] for k in ("accuracy", "accuracy_sampled", "dev_accuracy",
                                                                 "dev_accuracy_sampled")})
      return out
    return results.get(name, compute)

  evaluate_actor("iter0", base, {"heldout_level_share": cd.level_shares(heldout_levels),
                                 "question_level_share": cd.level_shares(question_levels)})

  critique_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_critique_BxT"]),
                                sft.SFTConfig())
  sft_rows = []  # every kept critique built so far, as (prompt, critique) rows

  def train_critic(phase, start, data_name):
    """CRITIQUE DATA from `start`'s own samples (RG1-RG3, feedback, the refinement filter), written to
    `data_name`.jsonl; then the CRITIC: SFT from `start` on every kept critique so far (none: `start`, untrained)."""
    records, counts = cd.load_or_build(os.path.join(workdir, f"{data_name}.jsonl"),
                                       lambda: cd.build_records(lm, start, task, config, mesh, stream=data_name))
    results.get(data_name, lambda: counts)
    sft_rows.extend(cd.critique_rows(task, records))
    if not sft_rows:
      print(f"warning: {workdir}/{data_name}.jsonl keeps no critique ({cd.source_counts(records)}): the critic "
            "is the actor's starting point, untrained (eval.json critic.trained = false)")
    c, rows = config.critic, list(sft_rows)

    def critic_batch(step, state):
      chosen = endless_shuffle(rows, config.seed, phase, step, c.batch_size)
      return to_batch([[Segment(p), Segment(t, "critique")] for p, t in chosen], task.tokenizer.pad_id,
                      ("critique",)), {}
    return runner.run(phase, c.steps if rows else 0, sft_opt(c, c.steps), start, critique_loss, critic_batch,
                      offsets[phase][0])

  critic = None
  if s.mode == "critique":
    critic = train_critic("critic", base, "critique_data")
    solutions, cut = data.heldout(lm, base, mesh) if builtin else (processbench, 0)
    check_context(lm, task, solutions, config)
    results.get("critic", lambda: dict(evaluate_critic(lm, critic, base, task, solutions, config, mesh),
                                       cut_off=cut, trained=bool(sft_rows)))

    # TEST TIME: plain sampling against critique-and-refine at equal tokens
    results.get("test_time", lambda: test_time(lm, base, critic, task, heldout, heldout_levels, config, mesh))

  # SELF-IMPROVEMENT: each iteration's actor samples, its data fine-tunes the base actor afresh
  make_rows, actor = ITERATION_DATA[s.mode], base
  for i in range(1, s.iterations + 1):
    name = f"iter{i}"
    key = jax.random.fold_in(jax.random.key(config.seed), stream_id(f"self_improve/{name}"))
    if refresh and i > 1:  # the critic retrained on the errors of the actor that samples this iteration
      critic = train_critic(f"{name}/critic", actor, f"critique_data_{name}")
    built = iteration_cache.get(name, lambda: dict(zip(("rows", "stats"), make_rows(
        lm, actor, critic, task, questions, key, config, mesh))))
    rows, stats = [tuple(r) for r in built["rows"]], dict(built["stats"], **data_stats(
        built["rows"], question_levels, len(questions)))
    if not rows:
      print(f"{name}: nothing correct to train on ({stats}); the actor stays the one before")
      evaluate_actor(name, actor, dict(stats, empty=True))
      continue
    ids = [(task.prompt_ids(questions[q]), task.answer_ids(text)) for q, text, _ in rows]

    def make_batch(step, state, ids=ids, phase=fine_tune_stream(name, s.order_seed)):
      # One kind of row per step, as in the base SFT: short answer rows are not padded to refine rows' length.
      if np.random.default_rng([config.seed, stream_id(phase), step]).random() < s.replay_share:
        chosen = replay_rows(f"{phase}/replay", step, s.batch_size)
      else:
        chosen = [[Segment(p), Segment(a, "answer")] for p, a in endless_shuffle(ids, config.seed, phase, step,
                                                                                  s.batch_size)]
      return to_batch(chosen, task.tokenizer.pad_id, ("answer",)), {}
    actor = runner.run(f"{name}/actor", s.steps, sft_opt(s, s.steps), base, answer_loss, make_batch,
                       offsets[f"{name}/actor"][0])
    evaluate_actor(name, actor, stats)

  # REPORT
  writer.close()
  iterations = {f"iter{i}": results.results[f"iter{i}"] for i in range(s.iterations + 1)}
  print(format_table(iterations, TABLE_KEYS))
  if "test_time" in results:
    for row in results.results["test_time"]["rows"]:
      print(f"{row['method']:>10} x{row['chains']} ({row['tokens']:.0f} tokens): MV {row['mv']:.1%}, pass "
            f"{row['pass']:.1%}; plain sampling MV@{row['plain_k']} ({row['plain_tokens']:.0f} tokens) "
            f"{row['plain_mv']:.1%}, pass@{row['plain_k']} {row['plain_pass']:.1%}")
  if jax.process_index() == 0:
    if read_jsonl(writer.path):
      plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
          "held-out accuracy": ("eval_accuracy", "eval_accuracy_sampled", "eval_dev_accuracy",
                                "eval_dev_accuracy_sampled"),
          "loss": ("loss",)})
    plot_levels(iterations, os.path.join(workdir, "difficulty.png"))
  return results.results


def plot_levels(iterations: dict, out_path: str) -> None:
  """Two panels per run: each iteration's share of training data per level, and its accuracy per level."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  levels = range(1, cd.LEVELS + 1)
  fig, (share, acc) = plt.subplots(1, 2, figsize=(10, 3.6))
  for name, entry in iterations.items():
    if "level_share" in entry:
      share.plot(levels, [entry["level_share"][str(k)] for k in levels], marker="o", label=name)
    acc.plot(levels, [np.nan if (v := entry["levels_sampled"][str(k)]) is None else v for k in levels], marker="o",
             label=name)
  share.set(title="training data per difficulty level", xlabel="level (5: hardest)", ylabel="share")
  acc.set(title="held-out accuracy (sampled) per level", xlabel="level (5: hardest)", ylabel="accuracy")
  for ax in (share, acc):
    ax.set_xticks(list(levels))
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  files.save_figure(fig, out_path, dpi=100)
  plt.close(fig)
