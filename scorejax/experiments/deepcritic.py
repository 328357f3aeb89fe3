"""DeepCritic end to end: a generator, a critic by SFT on seed critiques, then RL, evaluated after each.

  python -m scorejax.main --config=configs/arith_deepcritic.py --workdir=/tmp/deepcritic

Yang et al., "DeepCritic: Deliberate Critique with Large Language Models"
(arXiv 2505.00662); the RL objective is in `objectives/critic.py`. The
critic reads a problem and its numbered steps, judges each step in turn
(two angles per step, `tasks/arith/critiques.py`), stops at the first wrong
one and ends with its number in \\boxed{} (-1: all right).

Phases, each checkpointed and resumable on its own:
  generator  SFT of the policy that writes solutions: solve (with a carry
             habit), self-correct, and refine given a critique; the critic
             starts from it, so the "base critic" is this model prompted;
  sft        Stage 1: SFT on the seed annotator's critiques, kept only when
             their final index equals the label;
  rl         Stage 2: GRPO over `group_size` critiques per solution, reward
             1 when the boxed index equals the label (exact, or Monte Carlo
             from the generator's completions: `rl.label_source`).
Each critic (base, sft, rl) is scored on held-out solutions of several
generators in ProcessBench's format (acc_err, acc_corr, F1 per generator,
mean F1), greedy and by Maj@k over sampled critiques; and the generator
refines its solutions with the critic's critique, against its own second
attempt without one.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from scorejax import evaluation, parallel
from scorejax.metrics import MetricWriter, format_table, plot_curves, read_jsonl
from scorejax.models.build import build_model
from scorejax.objectives import critic as critic_obj
from scorejax.objectives import sft
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import EvalCache, PhaseRunner, claim_workdir, phase_offsets
from scorejax.rewards import mc_labels
from scorejax.rewards.answers import extract_arith_answer
from scorejax.rollouts import Segment, sample_batched, to_batch
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.tasks import arith, processbench, templates
from scorejax.tasks.arith import critiques
from scorejax.tasks.base import make_task, stream_id
from scorejax.train_step import OptimizerConfig

PHASES = ("generator", "sft", "rl")
CRITICS = ("base", "sft", "rl")
GENERATORS = ("writer", "error_maker", "policy")
LABEL_SOURCES = ("task", "mc")  # the exact checker (the human-label analog), or Monte Carlo estimation
SFT_DRAWS = 8  # candidate critiques drawn per kept one, at most (the annotator's filter rejects some)
TABLE_KEYS = ("mean_f1", "maj1_mean_f1", "majk_mean_f1", "invalid", "refine_with_critique")


@dataclasses.dataclass(frozen=True)
class Solution:
  """A solution to critique, with its label."""

  problem: arith.ArithProblem
  steps: tuple[str, ...]
  label: int  # 0-indexed earliest wrong step, -1 when all are right
  generator: str  # which generator wrote it: the ProcessBench subset it is scored in


# ----------------------------------------------------------------------------
# Solutions from several generators
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


def policy_steps(lm, params, task, problems, key, config, mesh) -> list[tuple[str, ...]]:
  """The generator's own solutions, sampled."""
  ids, _ = sample_batched(lm, params, [task.prompt_ids(p) for p in problems], key,
                          Sample(temperature=config.solutions.policy_temperature), answer_sampler(task, config), mesh,
                          pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size)
  return [task.steps(task.text(i)) for i in ids]


def make_solutions(lm, gen_params, task, problems, generators, rng, key, config, mesh) -> tuple[list[Solution], int]:
  """One solution per (problem, generator), labelled by the exact checker; cut-off ones left out (and counted)."""
  out, cut = [], 0
  for generator in generators:
    if generator == "policy":
      all_steps = policy_steps(lm, gen_params, task, problems, jax.random.fold_in(key, stream_id("policy")),
                               config, mesh)
    else:
      all_steps = [written_steps(p, generator, rng, config.solutions) for p in problems]
    for problem, steps in zip(problems, all_steps):
      if not task.is_complete(steps):
        cut += 1  # never "all correct": left out of critic data (ProcessBench's rule)
        continue
      out.append(Solution(problem, steps, task.earliest_error(problem, steps), generator))
  return out, cut


def answer_sampler(task, config) -> SamplerConfig:
  """What the generator samples: a solution, a second attempt, a refinement."""
  return SamplerConfig(max_new_tokens=config.generator.max_new_tokens, stop_tokens=task.stop_ids,
                       pad_id=task.tokenizer.pad_id)


# ----------------------------------------------------------------------------
# Critiques: prompts, sampling, parsing
# ----------------------------------------------------------------------------


def critic_prompt(task, s: Solution) -> list[int]:
  return task.messages_ids(templates.critique_messages(task.templates, s.problem.text, s.steps))


def predicted_index(text: str, s: Solution) -> int:
  """The critique's 0-indexed earliest wrong step, -1, or critic_obj.INVALID_INDEX."""
  index = critiques.parse_critique(text, len(s.steps))
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
  predicted = np.array([predicted_index(t, solutions[r // n]) for r, t in enumerate(texts)], np.int32)
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
  """ProcessBench metrics with the generators as subsets (an invalid prediction is None: wrong)."""
  return evaluation.processbench_metrics([s.generator for s in solutions], [s.label for s in solutions], predicted)


def refine_ids(task, s: Solution, critique_text: str) -> list[int]:
  return task.messages_ids(templates.refine_messages(task.templates, s.problem.text, "\n".join(s.steps),
                                                     critique_text))


def self_correct_ids(task, s: Solution) -> list[int]:
  return task.prompt_ids(s.problem) + task.answer_ids("\n".join(s.steps)) + task.instruction_ids


def greedy_answers(lm, params, task, prompts, config, mesh) -> list[list[int]]:
  return sample_batched(lm, params, prompts, jax.random.key(0), Greedy(), answer_sampler(task, config), mesh,
                        pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size)[0]


def accuracy(task, solutions, answers) -> float:
  """Share of answers (token ids, one per solution) that reach the solution's problem's answer."""
  return float(np.mean([task.reward(s.problem, a) for s, a in zip(solutions, answers)]))


def generator_baselines(lm, gen_params, task, solutions, config, mesh) -> dict:
  """What refinement is compared with: the generator's own second attempt without a critique, and (the
  ceiling a critic can reach) its refinement given the exact checker's critique."""
  without = greedy_answers(lm, gen_params, task, [self_correct_ids(task, s) for s in solutions], config, mesh)
  reference = greedy_answers(lm, gen_params, task, [refine_ids(task, s, critiques.write_critique(s.problem, s.steps))
                                                    for s in solutions], config, mesh)
  return {"acc_first": accuracy(task, solutions, [task.prefix_ids(s.steps) for s in solutions]),
          "refine_without_critique": accuracy(task, solutions, without),
          "refine_with_reference_critique": accuracy(task, solutions, reference),
          "tokens_without_critique": float(np.mean([len(a) for a in without]))}


def vote_at_budget(lm, gen_params, task, solutions, votes: int, config, mesh) -> dict:
  """Without a critique, at a critic's token budget: `votes` sampled second attempts, majority vote on the answer."""
  ids, _ = sample_batched(lm, gen_params, [self_correct_ids(task, s) for s in solutions], jax.random.key(2),
                          Sample(temperature=config.eval.maj_temperature), answer_sampler(task, config), mesh,
                          pad_id=task.tokenizer.pad_id, batch_size=config.eval.batch_size, n=votes)
  answers = [extract_arith_answer(task.text(i)) for i in ids]
  voted = evaluation.maj_at_k([answers[i * votes:(i + 1) * votes] for i in range(len(solutions))])
  return {"votes": votes, "acc": float(np.mean([v == s.problem.answer for v, s in zip(voted, solutions)])),
          "tokens": float(np.mean([len(i) for i in ids]) * votes)}


def evaluate_critic(lm, params, gen_params, task, solutions, config, mesh, full: bool = True) -> dict:
  """Greedy ProcessBench-format metrics; with `full`, also Maj@1 / Maj@k and refinement with the critique."""
  greedy = critique(lm, params, task, solutions, jax.random.key(0), Greedy(), config, mesh)
  metrics = score_critiques(solutions, _indices(greedy.predicted))
  out = dict(metrics, invalid=float(np.mean(greedy.predicted == critic_obj.INVALID_INDEX)),
             num_solutions=len(solutions))
  if not full:
    return out
  k = config.eval.maj_k
  sampled = critique(lm, params, task, solutions, jax.random.key(1), Sample(temperature=config.eval.maj_temperature),
                     config, mesh, n=k)
  per_item = np.asarray(_indices(sampled.predicted), object).reshape(len(solutions), k)
  single = [score_critiques(solutions, list(per_item[:, j]))["mean_f1"] for j in range(k)]
  majority = score_critiques(solutions, evaluation.maj_at_k([list(row) for row in per_item]))
  answers = greedy_answers(lm, gen_params, task, [refine_ids(task, s, t) for s, t in zip(solutions, greedy.texts)],
                           config, mesh)
  out.update(
      maj1_mean_f1=float(np.mean([f for f in single if f is not None])) if any(f is not None for f in single) else None,
      majk_mean_f1=majority["mean_f1"], majk_subsets=majority["subsets"], maj_k=k,
      sampled_invalid=float(np.mean(sampled.predicted == critic_obj.INVALID_INDEX)),
      refine_with_critique=accuracy(task, solutions, answers),
      tokens_with_critique=float(np.mean([len(c) + len(a) for c, a in zip(greedy.ids, answers)])),
      examples=[{"problem": s.problem.text, "steps": list(s.steps), "label": s.label, "critique": t}
                for s, t in zip(solutions[:3], greedy.texts)])
  return out


# ----------------------------------------------------------------------------
# Batches: the generator's SFT, the critic's SFT, RL
# ----------------------------------------------------------------------------


def fixed_steps(problem, steps, label: int, rng, carry_slip_rate: float) -> tuple[str, ...]:
  """What a refinement should write given a right critique: the steps before the flagged one, that
  step right, the rest continued by the writer (habit and all). -1: the solution as it is."""
  if label < 0:
    return tuple(steps)
  prefix = tuple(steps[:label]) + (arith.expected_line(problem, steps[:label]),)
  return arith.continue_solution(problem, prefix, rng, carry_slip_rate=carry_slip_rate)


def generator_batch(task, config, step: int) -> dict[str, np.ndarray]:
  """One kind of row per step: self-correct [x, y1, p, y2] (both attempts trained) or refine
  [x, y1, critique -> fixed] (the fixed solution trained).

  A step's rows share a kind so that two-attempt rows are not padded to the
  length of refine rows (which carry a whole critique).
  """
  c = config.generator
  problems = task.train_problems(config.seed, "generator", step, c.batch_size)
  rng = np.random.default_rng([config.seed, stream_id("generator"), step])
  noisy = step >= c.clean_steps
  error_rate, slip = (c.error_rate, c.carry_slip_rate) if noisy else (c.clean_error_rate, 0.0)
  refine = rng.random() < c.refine_share
  rows = []
  for problem in problems:
    y1 = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
    if refine:
      text = critiques.write_critique(problem, y1.lines)
      target = arith.format_solution(fixed_steps(problem, y1.lines, y1.label, rng, slip))
      rows.append([Segment(refine_ids(task, Solution(problem, y1.lines, y1.label, "writer"), text)),
                   Segment(task.answer_ids(target), "answer")])
    else:
      y2 = arith.write_solution(problem, rng, error_rate, carry_slip_rate=slip)
      rows.append([Segment(task.prompt_ids(problem)), Segment(task.answer_ids(y1.text), "answer"),
                   Segment(task.instruction_ids), Segment(task.answer_ids(y2.text), "answer")])
  return to_batch(rows, task.tokenizer.pad_id, ("answer",))


def critic_sft_batch(task, config, step: int) -> tuple[dict[str, np.ndarray], dict]:
  """Seed critiques of written solutions, kept only when their final index equals the label."""
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


def rl_pool(lm, gen_params, task, config, mesh) -> tuple[list[Solution], dict]:
  """The labelled training solutions RL draws from; labels from the checker or by Monte Carlo."""
  c = config.rl
  n_problems = -(-c.pool_size // len(config.solutions.generators))
  problems = task.train_problems(config.seed, "rl_pool", 0, n_problems)
  rng = np.random.default_rng([config.seed, stream_id("rl_pool")])
  key = jax.random.fold_in(jax.random.key(config.seed), stream_id("rl_pool"))
  pool, cut = make_solutions(lm, gen_params, task, problems, config.solutions.generators, rng, key, config, mesh)
  stats = {"pool_cut_off": cut}
  if c.label_source == "mc":
    m = config.mc
    items = [mc_labels.LabelItem(s.problem, s.steps) for s in pool]
    labels = mc_labels.mc_labels(lm, gen_params, task, items,
                                 mc_labels.MCConfig(rollouts=m.rollouts, temperature=m.temperature, top_p=m.top_p,
                                                    max_new_tokens=config.generator.max_new_tokens,
                                                    batch_size=m.batch_size),
                                 jax.random.fold_in(key, 1), mesh)
    stats["mc_label_agreement"] = float(np.mean([l == s.label for l, s in zip(labels, pool)]))
    pool = [dataclasses.replace(s, label=l) for s, l in zip(pool, labels) if l is not None]
  stats["pool_size"] = len(pool)
  stats["pool_all_correct"] = float(np.mean([s.label == -1 for s in pool]))
  return pool, stats


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  unknown = set(config.solutions.generators) - set(GENERATORS)
  if unknown or not config.solutions.generators:
    raise ValueError(f"config.solutions.generators={tuple(config.solutions.generators)}: expected some of "
                     f"{GENERATORS}")
  if config.rl.label_source not in LABEL_SOURCES:
    raise ValueError(f"config.rl.label_source={config.rl.label_source!r}; expected one of {LABEL_SOURCES}")
  if config.task.name != "arith":
    raise ValueError(f"config.task.name={config.task.name!r}: the DeepCritic experiment runs on the built-in task "
                     "('arith'), whose checker labels every step")
  # MESH
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  # DATA
  task = make_task(config.task)
  claim_workdir(workdir, config)
  # MODEL
  lm, params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runner = PhaseRunner(config, workdir, lm, mesh, writer, bar_keys=("loss", "reward", "kept_fraction"), rules=rules)
  results = EvalCache(workdir)
  offsets = phase_offsets((phase, config[phase].steps) for phase in PHASES)
  tokens = model_logprobs(lm, config.logprob_chunk)

  # GENERATOR
  c = config.generator
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                        total_steps=max(1, c.steps), grad_clip_norm=1.0)
  answer_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_answer_BxT"]), sft.SFTConfig())
  gen_params = runner.run("generator", c.steps, opt, params, answer_loss,
                          lambda step, state: (generator_batch(task, config, step), {}), offsets["generator"][0])

  # HELD-OUT AND DEV SOLUTIONS (the eval and dev splits; one solution per problem and generator)
  rng = np.random.default_rng([config.seed, stream_id("heldout")])
  heldout, cut = make_solutions(lm, gen_params, task, task.eval_problems, config.solutions.generators, rng,
                                jax.random.fold_in(jax.random.key(config.seed), stream_id("heldout")), config, mesh)
  check_context(lm, task, heldout, config)
  processbench.write_jsonl(os.path.join(workdir, "heldout.jsonl"), (
      arith.processbench_record(arith.ArithSolution(s.problem, s.steps, s.label, None), f"arith-{i}", s.generator,
                                subset=s.generator) for i, s in enumerate(heldout)))
  dev = []
  if config.eval.every:
    dev, _ = make_solutions(lm, gen_params, task, task.dev_problems(config.eval.interval_problems),
                            config.solutions.generators, np.random.default_rng([config.seed, stream_id("dev")]),
                            jax.random.fold_in(jax.random.key(config.seed), stream_id("dev")), config, mesh)

  def evaluate_once(name, p):
    def compute():
      out = evaluate_critic(lm, p, gen_params, task, heldout, config, mesh)
      writer.write(offsets[name][1] if name in offsets else 0, name,
                   {f"eval_{k}": out[k] for k in TABLE_KEYS if out.get(k) is not None})
      return out
    return results.get(name, compute)

  def interval_eval(p):
    """Greedy dev-set F1 (the dev split's problems): what settings are tuned on."""
    m = evaluate_critic(lm, p, gen_params, task, dev, config, mesh, full=False)
    row = {"dev_mean_f1": m["mean_f1"], "dev_invalid": m["invalid"]}
    return {k: v for k, v in row.items() if v is not None}  # no F1 where no generator has both classes

  results.get("generator", lambda: dict(generator_baselines(lm, gen_params, task, heldout, config, mesh),
                                        num_solutions=len(heldout), cut_off=cut,
                                        all_correct=float(np.mean([s.label == -1 for s in heldout]))))

  # BASE CRITIC: the generator, prompted to critique
  evaluate_once("base", gen_params)

  # STAGE 1: SFT on filtered seed critiques
  c = config.sft
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                        total_steps=max(1, c.steps), grad_clip_norm=1.0)
  critique_loss = build_loss_fn(sft.sft_loss, tokens, lambda b: sft.SFTBatch(b["mask_critique_BxT"]),
                                sft.SFTConfig())
  params = runner.run("sft", c.steps, opt, gen_params, critique_loss,
                      lambda step, state: critic_sft_batch(task, config, step), offsets["sft"][0],
                      eval_fn=interval_eval)
  evaluate_once("sft", params)

  # STAGE 2: RL on the earliest-error reward
  c = config.rl
  pool = []  # labelled once, when a step first asks for it (a finished phase never does)

  def labelled_pool():
    if not pool:
      solutions, stats = rl_pool(lm, gen_params, task, config, mesh)
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
                        grad_clip_norm=c.grad_clip_norm)
  params = runner.run("rl", c.steps, opt, params, rl_loss, rl_batch, offsets["rl"][0], eval_fn=interval_eval)
  evaluate_once("rl", params)

  # REFINEMENT AT EQUAL TOKENS: the critique + refinement budget spent on voted second attempts instead
  g = results.results["generator"]
  votes = max(1, round(results.results["rl"]["tokens_with_critique"] / g["tokens_without_critique"]))
  results.get("no_critique_at_rl_budget", lambda: vote_at_budget(lm, gen_params, task, heldout, votes, config, mesh))

  # REPORT
  writer.close()
  table = {name: results.results[name] for name in CRITICS if name in results}
  print(format_table(table, ("mean_f1", "maj1_mean_f1", "majk_mean_f1", "invalid", "refine_with_critique")))
  b = results.results["no_critique_at_rl_budget"]
  print(f"held-out solutions: {g['num_solutions']} ({g['cut_off']} cut off, left out), {g['acc_first']:.1%} with a "
        f"right answer; the generator's own second attempt without a critique: {g['refine_without_critique']:.1%}; "
        f"its refinement given the checker's critique: {g['refine_with_reference_critique']:.1%}; {b['votes']} voted "
        f"second attempts ({b['tokens']:.0f} tokens, the rl critic's {results.results['rl']['tokens_with_critique']:.0f}): "
        f"{b['acc']:.1%}")
  if jax.process_index() == 0 and read_jsonl(writer.path):
    plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
        "RL reward": ("reward", "invalid_fraction"),
        "dev F1 (greedy)": ("dev_mean_f1", "dev_invalid"),
        "SFT kept fraction": ("kept_fraction",),
        "loss": ("loss",)})
  return results.results
