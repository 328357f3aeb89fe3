"""DeepCritic end to end: a generator, a critic by SFT on seed critiques, then RL, evaluated after each.

  python -m scorejax.main --config=configs/arith_deepcritic.py --workdir=/tmp/deepcritic
  python -m scorejax.main --config=configs/qwen_deepcritic.py:tpu --workdir=/tmp/qwen_deepcritic

Yang et al., "DeepCritic: Deliberate Critique with Large Language Models"
(arXiv 2505.00662); the RL objective is in `objectives/critic.py`. The
critic reads a problem and its numbered steps, judges each step in turn
(on the built-in task two angles per step, `tasks/arith/critiques.py`),
stops at the first wrong one and ends with its number in \\boxed{} (-1: all
right). What it learns from and is scored on comes from
`experiments/critic_data.py`: the built-in task's generators and annotator,
or ProcessBench / seed-critique / PRM800K / MATH files.

Phases, each checkpointed and resumable on its own:
  generator  built-in task: SFT of the policy that writes solutions: solve
             (with a carry habit), self-correct, and refine given a
             critique; real data: the loaded checkpoint (0 steps). The
             critic starts from it, so the "base critic" is this model prompted;
  sft        Stage 1: SFT on seed critiques, kept only when their final
             index equals the label;
  rl         Stage 2: GRPO over `group_size` critiques per solution, reward
             1 when the boxed index equals the label (the task's or the
             records' labels, or Monte Carlo from the generator's
             completions: `rl.label_source`).
Each critic (base, sft, rl) is scored on held-out solutions in ProcessBench's
format (acc_err, acc_corr, F1 per subset, mean F1), greedy and by Maj@k over
sampled critiques; and the generator refines solutions with the critic's
critique, against its own second attempt without one.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from scorejax import evaluation, parallel
from scorejax.experiments.critic_data import (
  Solution,
  answer_sampler,
  critic_data,
  critic_prompt,
  refine_ids,
  self_correct_ids,
)
from scorejax.metrics import MetricWriter, format_table, plot_curves, read_jsonl
from scorejax.models.build import build_model
from scorejax.objectives import critic as critic_obj
from scorejax.objectives import sft
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import EvalCache, PhaseRunner, claim_workdir, phase_offsets
from scorejax.rollouts import Segment, sample_batched, to_batch
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.search import voted_reward
from scorejax.tasks import processbench, templates
from scorejax.tasks.base import make_task, stream_id
from scorejax.train_step import OptimizerConfig

PHASES = ("generator", "sft", "rl")
CRITICS = ("base", "sft", "rl")
LABEL_SOURCES = ("task", "mc")  # labels from the task or records (exact checker, PRM800K), or Monte Carlo
TABLE_KEYS = ("mean_f1", "maj1_mean_f1", "majk_mean_f1", "invalid", "refine_with_critique")
SWEEP_METRICS = TABLE_KEYS


def sweep_rows(results: dict) -> dict[str, dict]:
  """`scorejax.sweep`'s row of one run: the RL critic."""
  return {"": results["rl"]}


# ----------------------------------------------------------------------------
# Critiques: prompts, sampling, parsing
# ----------------------------------------------------------------------------


def predicted_index(task, text: str, s: Solution) -> int:
  """The critique's 0-indexed earliest wrong step, -1, or critic_obj.INVALID_INDEX (parsed strictly by the task)."""
  index = task.parse_critique(text, len(s.steps))
  return critic_obj.INVALID_INDEX if templates.is_invalid(index) else index


@dataclasses.dataclass
class Critiques:
  texts: list[str]
  ids: list[list[int]]
  logprobs: list[list[float]]
  predicted: np.ndarray  # int [B]: predicted_index of each


def critique(lm, params, task, solutions, key, rule, config, mesh, n: int = 1) -> Critiques:
  """n critiques of each solution (rows solution-major), decoded in batches of config.eval.batch_size."""
  sampler = SamplerConfig(max_new_tokens=config.critique.max_new_tokens, stop_tokens=task.stop_ids,
                          pad_id=task.tokenizer.pad_id)
  ids, logprobs = sample_batched(lm, params, [critic_prompt(task, s) for s in solutions], key, rule, sampler, mesh,
                                 pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size, n=n)
  texts = [task.text(t) for t in ids]
  predicted = np.array([predicted_index(task, t, solutions[r // n]) for r, t in enumerate(texts)], np.int32)
  return Critiques(texts, ids, logprobs, predicted)


def check_context(lm, task, solutions, config) -> None:
  """A critic prompt plus its critique budget must fit the model's context; say by how much it does not."""
  longest = max(len(critic_prompt(task, s)) for s in solutions)
  budget = longest + config.critique.max_new_tokens
  if budget > lm.config.max_position_embeddings:
    raise ValueError(f"the longest critic prompt has {longest} tokens and config.critique.max_new_tokens="
                     f"{config.critique.max_new_tokens}: {budget} positions, more than the model's "
                     f"max_position_embeddings={lm.config.max_position_embeddings}; shorten the problems or "
                     "the critique budget")


# ----------------------------------------------------------------------------
# Evaluation: ProcessBench-format metrics, Maj@k, critique-guided refinement
# ----------------------------------------------------------------------------


def _indices(predicted) -> list:
  return [None if p == critic_obj.INVALID_INDEX else int(p) for p in predicted]


def score_critiques(solutions, predicted: list) -> dict:
  """ProcessBench metrics per subset (an invalid prediction is None: wrong)."""
  return evaluation.processbench_metrics([s.subset for s in solutions], [s.label for s in solutions], predicted)


def greedy_answers(lm, params, task, prompts, config, mesh) -> list[list[int]]:
  return sample_batched(lm, params, prompts, jax.random.key(0), Greedy(), answer_sampler(task, config), mesh,
                        pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size)[0]


def accuracy(task, solutions, answers) -> float:
  """Share of answers (token ids, one per solution) that reach the solution's problem's answer."""
  return float(np.mean([task.reward(s.problem, a) for s, a in zip(solutions, answers)]))


def generator_baselines(lm, gen_params, task, data, refine_set, config, mesh) -> dict:
  """What refinement is compared with: the solutions as written, the generator's own second attempt
  without a critique, and (where a checker writes one: the ceiling of a critic) its refinement given
  the reference critique."""
  without = greedy_answers(lm, gen_params, task, [self_correct_ids(task, s) for s in refine_set], config, mesh)
  out = {"acc_first": accuracy(task, refine_set, [task.prefix_ids(s.steps) for s in refine_set]),
         "refine_without_critique": accuracy(task, refine_set, without),
         "tokens_without_critique": float(np.mean([len(a) for a in without])),
         "num_refined": len(refine_set)}
  references = [data.reference_critique(s) for s in refine_set]
  if all(r is not None for r in references):
    answers = greedy_answers(lm, gen_params, task, [refine_ids(task, s, r) for s, r in zip(refine_set, references)],
                             config, mesh)
    out["refine_with_reference_critique"] = accuracy(task, refine_set, answers)
  return out


def vote_at_budget(lm, gen_params, task, refine_set, votes: int, config, mesh) -> dict:
  """Without a critique, at a critic's token budget: `votes` sampled second attempts, majority vote on the
  answer (scored by the task's reward on a sample that states the voted answer)."""
  ids, _ = sample_batched(lm, gen_params, [self_correct_ids(task, s) for s in refine_set], jax.random.key(2),
                          Sample(temperature=config.eval.maj_temperature), answer_sampler(task, config), mesh,
                          pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size, n=votes)
  rewards = [voted_reward(task, s.problem, ids[i * votes:(i + 1) * votes]) for i, s in enumerate(refine_set)]
  return {"votes": votes, "acc": float(np.mean(rewards)), "tokens": float(np.mean([len(i) for i in ids]) * votes)}


def evaluate_critic(lm, params, gen_params, task, solutions, config, mesh, refine_set=None) -> dict:
  """Greedy ProcessBench-format metrics; with a `refine_set`, also Maj@1 / Maj@k and refinement with the
  critic's greedy critique (the refine set may be `solutions` itself: its critiques are reused)."""
  greedy = critique(lm, params, task, solutions, jax.random.key(0), Greedy(), config, mesh)
  metrics = score_critiques(solutions, _indices(greedy.predicted))
  out = dict(metrics, invalid=float(np.mean(greedy.predicted == critic_obj.INVALID_INDEX)),
             num_solutions=len(solutions))
  if refine_set is None:
    return out
  k = config.eval.maj_k
  sampled = critique(lm, params, task, solutions, jax.random.key(1), Sample(temperature=config.eval.maj_temperature),
                     config, mesh, n=k)
  per_item = np.asarray(_indices(sampled.predicted), object).reshape(len(solutions), k)
  single = [score_critiques(solutions, list(per_item[:, j]))["mean_f1"] for j in range(k)]
  majority = score_critiques(solutions, evaluation.maj_at_k([list(row) for row in per_item]))
  guide = greedy if refine_set is solutions else critique(lm, params, task, refine_set, jax.random.key(0), Greedy(),
                                                          config, mesh)
  answers = greedy_answers(lm, gen_params, task, [refine_ids(task, s, t) for s, t in zip(refine_set, guide.texts)],
                           config, mesh)
  out.update(
      maj1_mean_f1=float(np.mean([f for f in single if f is not None])) if any(f is not None for f in single) else None,
      majk_mean_f1=majority["mean_f1"], majk_subsets=majority["subsets"], maj_k=k,
      sampled_invalid=float(np.mean(sampled.predicted == critic_obj.INVALID_INDEX)),
      refine_with_critique=accuracy(task, refine_set, answers),
      tokens_with_critique=float(np.mean([len(c) + len(a) for c, a in zip(guide.ids, answers)])),
      examples=[{"problem": s.problem.text, "steps": list(s.steps), "label": s.label, "critique": t}
                for s, t in zip(solutions[:3], greedy.texts)])
  return out


# ----------------------------------------------------------------------------
# RL batches
# ----------------------------------------------------------------------------


def critic_rl_batch(lm, params, task, pool, config, step: int, mesh) -> tuple[dict[str, np.ndarray], dict]:
  """group_size sampled critiques of each of solutions_per_step pool solutions, with rewards' inputs."""
  c = config.rl
  rng = np.random.default_rng([config.seed, stream_id("rl"), step])
  chosen = [pool[i] for i in rng.choice(len(pool), c.solutions_per_step, replace=False)]
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), stream_id("rl")), step)
  out = critique(lm, params, task, chosen, key, Sample(temperature=c.temperature), config, mesh, n=c.group_size)
  rows = [[Segment(critic_prompt(task, chosen[r // c.group_size])), Segment(ids, "critique", lp)]
          for r, (ids, lp) in enumerate(zip(out.ids, out.logprobs))]
  batch = to_batch(rows, task.tokenizer.pad_id, ("critique",))
  batch["predicted_index_B"] = out.predicted
  batch["label_B"] = np.repeat([s.label for s in chosen], c.group_size).astype(np.int32)
  return batch, {"critique_len": float(np.mean([len(i) for i in out.ids]))}


def rl_inputs(batch) -> critic_obj.CriticBatch:
  # The sampler's log-probs are pi_old; with kl_coef 0 they also stand in for pi_ref (never read).
  return critic_obj.CriticBatch(old_logp_BxT=batch["sampler_logp_BxT"], ref_logp_BxT=batch["ref_logp_BxT"],
                                mask_BxT=batch["mask_critique_BxT"], predicted_index_B=batch["predicted_index_B"],
                                label_B=batch["label_B"])


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if config.rl.label_source not in LABEL_SOURCES:
    raise ValueError(f"config.rl.label_source={config.rl.label_source!r}; expected one of {LABEL_SOURCES}")
  # MESH
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  # DATA: the task and the critic's data (files read and checked before the model loads)
  task = make_task(config.task, needs_train=config.task.name == "arith" or config.rl.label_source == "mc")
  data = critic_data(task, config)
  claim_workdir(workdir, config)
  # MODEL
  lm, params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  data.check_fits(lm.config.max_position_embeddings)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runner = PhaseRunner(config, workdir, lm, mesh, writer, bar_keys=("loss", "reward", "kept_fraction"), rules=rules)
  results = EvalCache(workdir)
  offsets = phase_offsets(zip(PHASES, (config.generator.steps, data.sft_steps(), config.rl.steps)))
  tokens = model_logprobs(lm, config.logprob_chunk)

  # GENERATOR (built-in task: trained from scratch; real data: the loaded checkpoint, 0 steps)
  c = config.generator
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                        total_steps=max(1, c.steps), grad_clip_norm=1.0)
  answer_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_answer_BxT"]), sft.SFTConfig())
  gen_params = runner.run("generator", c.steps, opt, params, answer_loss,
                          lambda step, state: (data.generator_batch(step), {}), offsets["generator"][0])

  # HELD-OUT, DEV AND REFINEMENT SETS
  heldout, cut = data.heldout(lm, gen_params, mesh)
  check_context(lm, task, heldout, config)
  processbench.write_jsonl(os.path.join(workdir, "heldout.jsonl"), data.export_heldout(heldout))
  dev = data.dev(lm, gen_params, mesh) if config.eval.every else []
  refine_set = data.refine_set(lm, gen_params, heldout, mesh)

  def evaluate_once(name, p):
    def compute():
      out = evaluate_critic(lm, p, gen_params, task, heldout, config, mesh, refine_set)
      writer.write(offsets[name][1] if name in offsets else 0, name,
                   {f"eval_{k}": out[k] for k in TABLE_KEYS if out.get(k) is not None})
      return out
    return results.get(name, compute)

  def interval_eval(p):
    """Greedy dev-set F1: what settings are tuned on."""
    m = evaluate_critic(lm, p, gen_params, task, dev, config, mesh)
    row = {"dev_mean_f1": m["mean_f1"], "dev_invalid": m["invalid"]}
    return {k: v for k, v in row.items() if v is not None}  # no F1 where no subset has both classes

  results.get("generator", lambda: dict(generator_baselines(lm, gen_params, task, data, refine_set, config, mesh),
                                        num_solutions=len(heldout), cut_off=cut,
                                        all_correct=float(np.mean([s.label == -1 for s in heldout]))))

  # BASE CRITIC: the generator, prompted to critique
  evaluate_once("base", gen_params)

  # STAGE 1: SFT on filtered seed critiques
  c = config.sft
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                        total_steps=max(1, offsets["sft"][1] - offsets["sft"][0]), grad_clip_norm=1.0,
                        grad_accum_steps=c.grad_accum_steps)
  critique_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_critique_BxT"]),
                                sft.SFTConfig())
  params = runner.run("sft", data.sft_steps(), opt, gen_params, critique_loss,
                      lambda step, state: data.sft_batch(step), offsets["sft"][0],
                      eval_fn=interval_eval if dev else None)
  evaluate_once("sft", params)

  # STAGE 2: RL on the earliest-error reward
  c = config.rl
  pool = []  # labelled once, when a step first asks for it (a finished phase never does)

  def labelled_pool():
    if not pool:
      solutions, stats = data.rl_pool(lm, gen_params, mesh)
      if len(solutions) < c.solutions_per_step:
        raise ValueError(f"the RL pool holds {len(solutions)} labelled solutions, fewer than "
                         f"config.rl.solutions_per_step={c.solutions_per_step}")
      pool.extend(solutions)
      writer.write(offsets["rl"][0], "rl", stats)
    return pool
  cfg = critic_obj.CriticRLConfig(group_size=c.group_size, clip_eps=c.clip_eps, kl_coef=c.kl_coef,
                                  kl_estimator=c.kl_estimator, baseline=c.baseline)
  rl_loss = build_loss_fn(critic_obj.critic_rl_loss, tokens, rl_inputs, cfg)
  ref_params = params  # pi_ref: the SFT critic
  ref_logprobs = jax.jit(tokens)

  def rl_batch(step, state):
    batch, stats = critic_rl_batch(lm, state.params, task, labelled_pool(), config, step, mesh)
    if c.kl_coef:
      with jax.set_mesh(mesh):
        batch["ref_logp_BxT"] = np.asarray(ref_logprobs(ref_params, {k: batch[k] for k in
                                                                     ("tokens_BxT", "positions_BxT", "mask_BxT")}))
    else:
      batch["ref_logp_BxT"] = batch["sampler_logp_BxT"]
    return batch, stats

  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, total_steps=max(1, c.steps),
                        grad_clip_norm=c.grad_clip_norm, grad_accum_steps=c.grad_accum_steps)
  params = runner.run("rl", c.steps, opt, params, rl_loss, rl_batch, offsets["rl"][0],
                      eval_fn=interval_eval if dev else None)
  evaluate_once("rl", params)

  # REFINEMENT AT EQUAL TOKENS: the critique + refinement budget spent on voted second attempts instead
  g = results.results["generator"]
  votes = max(1, round(results.results["rl"]["tokens_with_critique"] / g["tokens_without_critique"]))
  results.get("no_critique_at_rl_budget",
              lambda: vote_at_budget(lm, gen_params, task, refine_set, votes, config, mesh))

  # REPORT
  writer.close()
  table = {name: results.results[name] for name in CRITICS if name in results}
  print(format_table(table, ("mean_f1", "maj1_mean_f1", "majk_mean_f1", "invalid", "refine_with_critique")))
  b = results.results["no_critique_at_rl_budget"]
  reference = g.get("refine_with_reference_critique")
  print(f"held-out solutions: {g['num_solutions']} ({g['cut_off']} cut off, left out); refined: {g['num_refined']}, "
        f"{g['acc_first']:.1%} right as written; the generator's own second attempt without a critique: "
        f"{g['refine_without_critique']:.1%}"
        + ("" if reference is None else f"; its refinement given the checker's critique: {reference:.1%}")
        + f"; {b['votes']} voted second attempts ({b['tokens']:.0f} tokens, the rl critic's "
        f"{results.results['rl']['tokens_with_critique']:.0f}): {b['acc']:.1%}")
  if jax.process_index() == 0 and read_jsonl(writer.path):
    plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
        "RL reward": ("reward", "invalid_fraction"),
        "dev F1 (greedy)": ("dev_mean_f1", "dev_invalid"),
        "SFT kept fraction": ("kept_fraction",),
        "loss": ("loss",)})
  return results.results
