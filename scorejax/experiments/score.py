"""SCoRe end to end: a base policy, Stage I, Stage II, evaluated after each.

  python -m scorejax.main --config=configs/arith_score.py --workdir=/tmp/score

Kumar et al., "Training Language Models to Self-Correct via Reinforcement
Learning" (arXiv 2409.12917); the objectives are in `objectives/score.py`.
An episode is [x, y1, p, y2]: the policy answers x, the instruction p is
appended, the policy answers again; p never says whether y1 was right.

Phases, each checkpointed and resumable on its own:
  base    SFT on noisy two-attempt solutions, so the policy makes mistakes
          (skipped when the config loads a model that already answers);
  stage1  maximize r(y2) - beta2 KL(y1 || ref) - beta1 KL(y2 || ref);
  stage2  maximize r(y1) + r(y2) + alpha (r(y2) - r(y1)) - beta1 KL;
with greedy evaluation of Acc@t1, Acc@t2 and the transitions after each,
of each RL stage at its last step and at its best-reward checkpoint (the
paper keeps the checkpoint with the highest training reward; `select`).
A baseline (STaR, Pair-SFT, single-turn RL) trains in both RL slots with
SCoRe's budget of steps and episodes in each (`training_phases`).
Every batch is a function of (seed, phase, step), so a resumed run replays
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np

from scorejax import parallel
from scorejax.evaluation import score_metrics
from scorejax.metrics import MetricWriter, format_table, plot_curves, read_jsonl
from scorejax.models import LM
from scorejax.models.build import build_model
from scorejax.objectives import score as score_obj
from scorejax.objectives import sft
from scorejax.objectives.logprobs import sequence_logprobs
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import (
  EvalCache,
  PhaseRunner,
  Preempted,
  Selection,
  claim_workdir,
  phase_offsets,
)
from scorejax.rollouts import (
  first_turn,
  next_turn,
  padded_width,
  sample_batched,
  to_batch,
)
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.search import voted_reward, votes_at_tokens
from scorejax.tasks import arith
from scorejax.tasks.arith.task import ArithTask
from scorejax.tasks.base import batch_rewards, make_task, stream_id
from scorejax.train_step import OptimizerConfig

__all__ = ["run", "Preempted"]

PHASES = ("base", "stage1", "stage2")
INFERENCE_FILE = "inference.json"
METRIC_KEYS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")
CARRY_KEYS = ("carry_right_y1", "carry_right_y2", "carry_dropped_y1", "carry_dropped_y2")
SWEEP_METRICS = METRIC_KEYS


def sweep_rows(results: dict) -> dict[str, dict]:
  """`scorejax.sweep`'s rows of one run: its final model, and its best-reward Stage II checkpoint where kept."""
  return {"": results["stage2"], **({" (best)": results["stage2_best"]} if "stage2_best" in results else {})}


# ----------------------------------------------------------------------------
# Rollouts and evaluation
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Episodes:
  """Two attempts for a batch of problems, as token ids and rewards."""

  problems: list
  prompts: list[list[int]]
  y1: list[list[int]]
  y2: list[list[int]]
  reward_y1: np.ndarray
  reward_y2: np.ndarray
  y1_on_policy: np.ndarray  # per row: y1 was sampled from the policy (trained on), not given


def episode_cache_length(task, prompts, sampler: SamplerConfig) -> int:
  """KV-cache slots of whole episodes [x, y1, p, y2], so that the second turn need not grow the cache."""
  return sampler.buckets(padded_width(prompts) + 2 * sampler.max_new_tokens + len(task.instruction_ids))


def two_attempts(lm: LM, params, task, problems, key, rule, sampler: SamplerConfig,
                 mesh, first_attempts: list[list[int]] | None = None) -> Episodes:
  """y1 ~ pi(.|x) (or given), then y2 ~ pi(.|x, y1, p), decoded from y1's KV cache when y1 is sampled here."""
  prompts = [task.prompt_ids(p) for p in problems]
  pad = task.tokenizer.pad_id
  k1, k2 = jax.random.split(key)
  cache_length = episode_cache_length(task, prompts, sampler)
  if first_attempts is None:
    t1 = first_turn(lm, params, prompts, k1, rule, sampler, mesh, pad_id=pad, cache_length=cache_length)
    y1 = t1.ids
    t2 = next_turn(lm, params, t1, [task.instruction_ids] * len(problems), k2, rule, sampler, mesh, pad_id=pad)
  else:  # attempt 1 comes from elsewhere (e.g. the base model): attempt 2 reads [x, y1, p] afresh
    y1 = first_attempts
    t2 = first_turn(lm, params, [x + y + task.instruction_ids for x, y in zip(prompts, y1)], k2, rule, sampler,
                    mesh, pad_id=pad, cache_length=cache_length)
  y2 = t2.ids
  return Episodes(problems, prompts, y1, y2, batch_rewards(task, problems, y1), batch_rewards(task, problems, y2),
                  np.full(len(problems), first_attempts is None))


def first_attempts(lm: LM, params, task, problems, key, rule, sampler: SamplerConfig, mesh) -> list[list[int]]:
  """y1 ~ pi(.|x) alone: the base model's first attempts that Stage II may mix in."""
  prompts = [task.prompt_ids(p) for p in problems]
  return first_turn(lm, params, prompts, key, rule, sampler, mesh, pad_id=task.tokenizer.pad_id).ids


def policy_episodes(lm: LM, params, base_params, task: ArithTask, problems, key, rule, sampler: SamplerConfig,
                    mesh, n_base: int = 0) -> Episodes:
  """Two attempts by the policy, except that the base model writes the first `n_base` problems' y1.

  The paper's optional Stage II augmentation: the base model's first attempts
  (with the base model's mistakes) become extra prompts for the second turn.
  """
  if not n_base:
    return two_attempts(lm, params, task, problems, key, rule, sampler, mesh)
  k_base, k_policy, k_episode = jax.random.split(key, 3)
  y1 = (first_attempts(lm, base_params, task, problems[:n_base], k_base, rule, sampler, mesh)
        + first_attempts(lm, params, task, problems[n_base:], k_policy, rule, sampler, mesh))
  ep = two_attempts(lm, params, task, problems, k_episode, rule, sampler, mesh, first_attempts=y1)
  return dataclasses.replace(ep, y1_on_policy=np.arange(len(problems)) >= n_base)


def sampler_config(config, task) -> SamplerConfig:
  """Per-attempt budget and stop tokens, shared by training rollouts and evaluation."""
  return SamplerConfig(max_new_tokens=config.sampling.max_new_tokens, stop_tokens=task.stop_ids,
                       pad_id=task.tokenizer.pad_id)


def evaluate(lm: LM, params, task: ArithTask, config, mesh, problems: list) -> dict:
  """Greedy Acc@t1, Acc@t2, Delta, Delta_i->c, Delta_c->i on `problems`.

  On the built-in task also each attempt's `arith.carry_profile` (`lines_y1`,
  `lines_y2`): how often its carrying lines are right or drop the carry.
  """
  sampler = sampler_config(config, task)
  t1, t2, texts1, texts2, examples = [], [], [], [], []
  bs = config.eval.batch_size
  for i in range(0, len(problems), bs):
    ep = two_attempts(lm, params, task, problems[i:i + bs], jax.random.key(0), Greedy(), sampler, mesh)
    t1 += ep.reward_y1.tolist()
    t2 += ep.reward_y2.tolist()
    texts1 += [task.text(y) for y in ep.y1]
    texts2 += [task.text(y) for y in ep.y2]
  examples = [{"problem": p.text, "y1": a, "y2": b} for p, a, b in zip(problems[:4], texts1, texts2)]
  out = dict(score_metrics(t1, t2), num_problems=len(problems), examples=examples)
  if isinstance(task, ArithTask):
    out.update(lines_y1=arith.carry_profile(texts1), lines_y2=arith.carry_profile(texts2))
  if hasattr(task, "sandbox"):
    out["sandbox"] = task.sandbox.description
  if getattr(task, "repairs", None) and problems is task.eval_problems:
    out["repair"] = repair(lm, params, task, config, mesh)
  return out


def repair(lm: LM, params, task, config, mesh) -> dict:
  """MBPP-R, the offline repair evaluation: greedy y2 after a given wrong y1 (`task.repair_pairs`);
  `fixed` is the share of them whose y2 passes its tests."""
  problems, attempts, dropped = task.repair_pairs
  sampler, bs, fixed = sampler_config(config, task), config.eval.batch_size, []
  for i in range(0, len(problems), bs):
    given = [task.answer_ids(a) for a in attempts[i:i + bs]]
    ep = two_attempts(lm, params, task, problems[i:i + bs], jax.random.key(0), Greedy(), sampler, mesh,
                      first_attempts=given)
    fixed += ep.reward_y2.tolist()
  return {"fixed": float(np.mean(fixed)) if fixed else None, "n": len(problems), "dropped_passing": dropped}


def sequential_attempts(lm: LM, params, task, problems, key, rule, sampler: SamplerConfig, mesh,
                        attempts: int) -> list[list[list[int]]]:
  """attempts[t][b]: attempt t + 1 of problem b, each after the instruction appended to the last (one cache)."""
  prompts = [task.prompt_ids(p) for p in problems]
  pad, instruction = task.tokenizer.pad_id, task.instruction_ids
  cache = sampler.buckets(padded_width(prompts) + attempts * sampler.max_new_tokens
                          + (attempts - 1) * len(instruction))
  keys = jax.random.split(key, attempts)
  turn = first_turn(lm, params, prompts, keys[0], rule, sampler, mesh, pad_id=pad, cache_length=cache)
  out = [turn.ids]
  for t in range(1, attempts):
    turn = next_turn(lm, params, turn, [instruction] * len(problems), keys[t], rule, sampler, mesh, pad_id=pad)
    out.append(turn.ids)
  return out


def accuracy_at_attempts(lm: LM, params, task, config, mesh, problems: list) -> dict:
  """Greedy Acc@t for t = 1..K (`inference.attempts`), and each round's i->c and c->i, as the paper's
  more-attempts evaluation: the instruction is appended again after every attempt, the cache reused."""
  sampler, k, bs = sampler_config(config, task), config.inference.attempts, config.eval.batch_size
  right = np.zeros((k, len(problems)), bool)
  for i in range(0, len(problems), bs):
    chunk = problems[i:i + bs]
    for t, ids in enumerate(sequential_attempts(lm, params, task, chunk, jax.random.key(0), Greedy(), sampler,
                                                mesh, k)):
      right[t, i:i + len(chunk)] = batch_rewards(task, chunk, ids) > 0.5
  return {"acc_at": right.mean(1).tolist(),
          "i2c": [float(np.mean(~right[t - 1] & right[t])) for t in range(1, k)],
          "c2i": [float(np.mean(right[t - 1] & ~right[t])) for t in range(1, k)]}


def inference_scaling(lm: LM, params, task, config, mesh, problems: list, key) -> list[dict]:
  """Self-consistency at equal sampled tokens: majority over k two-attempt episodes' second attempts
  (parallel + sequential) against majority over first attempts alone (parallel), k = 1, 2, 4, ...

  For each k the parallel peer votes over as many first attempts as the episodes' mean sampled tokens
  (y1 and y2) buy, at most 2 * `inference.episodes` of them (`parallel_capped` says when it hit that).
  """
  c = config.inference
  sampler, rule, bs = sampler_config(config, task), Sample(temperature=c.temperature), config.eval.batch_size
  n, n_plain = c.episodes, 2 * c.episodes
  k_episode, k_plain = jax.random.split(key)
  y2 = [[] for _ in problems]
  spent = np.zeros((len(problems), n))  # tokens of episode j of problem b: y1 and y2
  rows = [(b, j) for b in range(len(problems)) for j in range(n)]
  for i in range(0, len(rows), bs):
    part = rows[i:i + bs]
    ep = two_attempts(lm, params, task, [problems[b] for b, _ in part], jax.random.fold_in(k_episode, i), rule,
                      sampler, mesh)
    for (b, j), a, z in zip(part, ep.y1, ep.y2):
      y2[b].append(z)
      spent[b, j] = len(a) + len(z)
  plain, _ = sample_batched(lm, params, [task.prompt_ids(p) for p in problems], k_plain, rule, sampler, mesh,
                            pad_id=task.tokenizer.pad_id, batch_size=bs, n=n_plain)
  plain = [plain[b * n_plain:(b + 1) * n_plain] for b in range(len(problems))]
  per_sample = float(np.mean([len(y) for group in plain for y in group]))
  out, k = [], 1
  while k <= n:
    tokens = float(spent[:, :k].sum(1).mean())
    m = votes_at_tokens(tokens, per_sample)
    used = min(m, n_plain)
    out.append({"episodes": k, "tokens": tokens,
                "sequential_mv": float(np.mean([voted_reward(task, p, g[:k]) for p, g in zip(problems, y2)])),
                "parallel_k": used, "parallel_tokens": per_sample * used, "parallel_capped": m > n_plain,
                "parallel_mv": float(np.mean([voted_reward(task, p, g[:used]) for p, g in zip(problems, plain)]))})
    k *= 2
  return out


def carry_columns(metrics: dict) -> dict[str, float]:
  """Share of each attempt's carrying lines that are right / drop the carry (built-in task only)."""
  if "lines_y1" not in metrics:
    return {}
  return {f"carry_{outcome}_{a}": metrics[f"lines_{a}"]["carry"][outcome]
          for outcome in ("right", "dropped") for a in ("y1", "y2")}


# ----------------------------------------------------------------------------
# Batches: SFT on noisy two-attempt solutions, and RL episodes
# ----------------------------------------------------------------------------


def base_sft_batch(task: ArithTask, config, step: int) -> dict[str, np.ndarray]:
  """[x, y1, p, y2] with y1 and y2 written independently by the task, loss on both attempts.

  The first `clean_steps` steps show the writer without its habit, each
  attempt with a random error at `clean_error_rate` (the policy learns the
  task; the attempts differ often enough that y2 has to read the problem
  rather than copy y1). Later steps show the noisy writer, with its random
  errors and carry habit, `carry_slip_rate` in first attempts and
  `second_carry_slip_rate` in second ones (the policy picks them up on top
  of what it knows).
  """
  c = config.base
  problems = task.train_problems(config.seed, "base", step, c.batch_size)
  rng = np.random.default_rng([config.seed, 7, step])
  noisy = step >= c.clean_steps
  first_rate, second_rate = (c.first_error_rate, c.second_error_rate) if noisy else (c.clean_error_rate,) * 2
  first_slip, second_slip = (c.carry_slip_rate, c.second_carry_slip_rate) if noisy else (0.0, 0.0)
  rows = []
  for problem in problems:
    y1 = arith.write_solution(problem, rng, first_rate, carry_slip_rate=first_slip, slip_ops=c.habit_ops)
    if c.second_attempt == "independent":
      y2 = arith.write_solution(problem, rng, second_rate, carry_slip_rate=second_slip, slip_ops=c.second_habit_ops)
    elif c.second_attempt == "copy":
      y2 = y1
    else:
      raise ValueError(f"config.base.second_attempt={c.second_attempt!r}; expected 'independent' or 'copy'")
    rows.append([(task.prompt_ids(problem), None), (task.answer_ids(y1.text), "y1"),
                 (task.instruction_ids, None), (task.answer_ids(y2.text), "y2")])
  return to_batch(rows, task.tokenizer.pad_id, ("y1", "y2"))


def pair_sft_batch(task: ArithTask, config, phase: str, step: int) -> dict[str, np.ndarray]:
  """Pair-SFT: [x, y1, p, y2] with a noisy y1 and a correct y2 written by the task."""
  c = config[phase]
  problems = task.train_problems(config.seed, phase, step, c.batch_size)
  rng = np.random.default_rng([config.seed, 11, stream_id(phase), step])
  rows = [[(task.prompt_ids(pair.first.problem), None), (task.answer_ids(pair.first.text), "y1"),
           (task.instruction_ids, None), (task.answer_ids(pair.second.text), "y2")]
          for pair in arith.two_attempt_examples(problems, rng, first_error_rate=c.pair_error_rate,
                                                 carry_slip_rate=config.base.carry_slip_rate)]
  return to_batch(rows, task.tokenizer.pad_id, ("y1", "y2"))


def padding_stats(ep: Episodes, batch: dict) -> dict[str, float]:
  """Shares of padded positions: in the update batch [x, y1, p, y2] (`pad_update`), in the left-padded
  prompts the first turn prefills (`pad_prompt`), and in each attempt's decode, whose rows all run as long
  as the batch's longest attempt (`pad_decode_y1`, `pad_decode_y2`)."""
  waste = lambda lengths: 1.0 - float(np.sum(lengths)) / (len(lengths) * max(1, max(lengths)))
  return {"pad_update": 1.0 - float(np.mean(batch["mask_BxT"])), "pad_prompt": waste([len(x) for x in ep.prompts]),
          "pad_decode_y1": waste([len(y) for y in ep.y1]), "pad_decode_y2": waste([len(y) for y in ep.y2])}


def episode_batch(task: ArithTask, ep: Episodes) -> dict[str, np.ndarray]:
  rows = [[(x, None), (y1, "y1"), (task.instruction_ids, None), (y2, "y2")]
          for x, y1, y2 in zip(ep.prompts, ep.y1, ep.y2)]
  batch = to_batch(rows, task.tokenizer.pad_id, ("y1", "y2"))
  batch["mask_y1_BxT"] &= ep.y1_on_policy[:, None]  # a given y1's r1 shapes r_hat2; y1 gets no gradient
  batch.update(reward_y1_B=ep.reward_y1, reward_y2_B=ep.reward_y2)
  return batch


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def base_sft_inputs(batch) -> sft.SFTBatch:
  return sft.SFTBatch(batch["mask_y1_BxT"] | batch["mask_y2_BxT"])


def second_attempt_inputs(batch) -> sft.SFTBatch:
  return sft.SFTBatch(batch["mask_y2_BxT"])


METHODS = ("score_stage1", "score_stage2", "single_turn", "star", "pair_sft", "none")  # none: no training
ON_POLICY = ("score_stage1", "score_stage2", "single_turn", "star")  # trained on the policy's own episodes
NEXT_STAGE = ("best", "last")


def training_phases(config) -> list[dict]:
  """What each RL slot trains: {phase, method, steps, episodes}, episodes = the policy's sampled episodes
  (0 for pair_sft, whose pairs the task writes). A baseline fills both slots, so every variant's budget
  of gradient steps and episodes is SCoRe's (tests/test_score_experiment.py checks each variant)."""
  out = []
  for phase in PHASES[1:]:
    c = config[phase]
    if c.method not in METHODS:
      raise ValueError(f"config.{phase}.method={c.method!r}; expected one of {METHODS}")
    steps = 0 if c.method == "none" else c.steps
    out.append(dict(phase=phase, method=c.method, steps=steps,
                    episodes=steps * c.batch_size if c.method in ON_POLICY else 0))
  return out


def training_reward(metrics) -> float:
  """The reward a stage's best checkpoint is chosen by: r1 + r2 of the policy's own episodes in a step."""
  return metrics["reward_y1"] + metrics["reward_y2"]


def phase_loss(method: str, lm: LM, chunk: int, cfg: score_obj.ScoreConfig, star_keep: str = "right_y2",
               temperature: float = 1.0):
  """The loss of a training phase and whether its batches are the policy's own episodes.

  SCoRe's stages and single-turn RL read both attempts from one forward pass
  over [x, y1, p, y2], at the rollouts' sampling `temperature` (the policy
  that drew them, and its reference, is softmax(logits / temperature));
  STaR and Pair-SFT train the y2 tokens only, by likelihood (temperature 1).
  """
  attempts = model_logprobs(lm, chunk, score_obj.attempts_view, temperature)
  tokens = model_logprobs(lm, chunk)
  if method == "score_stage1":
    return build_loss_fn(score_obj.stage1_loss, attempts, score_obj.episode_inputs, cfg), True
  if method == "score_stage2":
    return build_loss_fn(score_obj.stage2_loss, attempts, score_obj.episode_inputs, cfg), True
  if method == "single_turn":
    return build_loss_fn(score_obj.single_turn_loss, attempts, score_obj.episode_inputs, cfg), True
  if method == "star":
    return build_loss_fn(score_obj.star_loss, tokens, score_obj.star_inputs, score_obj.StarConfig(star_keep)), True
  if method in ("pair_sft", "none"):  # "none" trains no step: its slot runs 0 steps
    return build_loss_fn(sft.sft_loss, tokens, second_attempt_inputs, sft.SFTConfig()), False
  raise ValueError(f"phase method {method!r}; expected one of {METHODS}")


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  slots = training_phases(config)  # checked before any compute
  if config.select.next_stage not in NEXT_STAGE:
    raise ValueError(f"config.select.next_stage={config.select.next_stage!r}; expected one of {NEXT_STAGE}")
  for phase in PHASES[1:]:
    if not 0.0 <= config[phase].base_first_attempts < 1.0:
      raise ValueError(f"config.{phase}.base_first_attempts={config[phase].base_first_attempts}: the share of a "
                       "batch's prompts whose first attempt the base model writes; expected a value in [0, 1)")
  # MESH
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  # DATA
  task = make_task(config.task)
  claim_workdir(workdir, config)  # after the data is found: a missing file leaves no workdir behind
  # MODEL
  lm, params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runner = PhaseRunner(config, workdir, lm, mesh, writer, bar_keys=("loss", "reward_y1", "reward_y2"), rules=rules)
  chunk = config.logprob_chunk
  sampler = sampler_config(config, task)
  rule = Sample(temperature=config.sampling.temperature)
  # pi_ref's log-probs at the rollouts' temperature, as the RL losses read pi_theta's (`phase_loss`)
  ref_logprobs = jax.jit(functools.partial(sequence_logprobs, lm, chunk_size=chunk,
                                           temperature=config.sampling.temperature))
  results = EvalCache(workdir)
  offsets = phase_offsets([("base", config.base.steps)] + [(s["phase"], s["steps"]) for s in slots])

  def evaluate_once(name, p, phase=None, same_as=None, **extra):
    """The full evaluation of a phase's params (its last, or `name` = "<phase>_best"), cached in eval.json;
    `same_as`: an evaluated name whose params these are (its evaluation is reused, not repeated)."""
    def compute():
      measured = results.results[same_as] if same_as else evaluate(lm, p, task, config, mesh, task.eval_problems)
      out = dict(measured, **extra)
      prefix = "eval_best_" if phase else "eval_"
      writer.write(offsets[phase or name][1], phase or name, {f"{prefix}{k}": out[k] for k in METRIC_KEYS})
      return out
    return results.get(name, compute)

  dev_problems = task.dev_problems(config.eval.interval_problems) if config.eval.every else []

  def interval_eval(p):
    """Interval evaluations read training-split problems: settings are tuned on them, never on eval."""
    m = evaluate(lm, p, task, config, mesh, dev_problems)
    row = dict({k: m[k] for k in METRIC_KEYS}, **carry_columns(m))
    return {f"dev_{k}": v for k, v in row.items()}

  # BASE POLICY
  if config.base.steps and not isinstance(task, ArithTask):
    raise ValueError(f"config.base.steps={config.base.steps}: the base SFT phase writes noisy solutions of "
                     f"the built-in task only, not of task {config.task.name!r}; set --config.base.steps=0 "
                     "to start from the loaded model")
  base_opt = OptimizerConfig(learning_rate=config.base.learning_rate, warmup_steps=config.base.warmup_steps,
                             schedule="cosine", total_steps=max(1, config.base.steps), grad_clip_norm=1.0)
  base_loss = build_loss_fn(sft.sft_loss, model_logprobs(lm, chunk), base_sft_inputs, sft.SFTConfig())
  params = runner.run("base", config.base.steps, base_opt, params, base_loss,
                      lambda step, state: (base_sft_batch(task, config, step), {}), offsets["base"][0])
  evaluate_once("base", params)
  base_params = params
  if dev_problems and not any(r["phase"] == "base" and "dev_delta" in r for r in read_jsonl(writer.path)):
    writer.write(offsets["base"][1], "base", interval_eval(params))  # where the dev curves start

  # STAGE I and STAGE II (or a baseline's training in both slots), each evaluated at its last and its
  # best-reward checkpoint; Stage II starts from Stage I's `select.next_stage` one
  selection = Selection(training_reward, window=config.select.window, every=config.select.every)
  for slot in slots:
    phase, steps, c = slot["phase"], slot["steps"], config[slot["phase"]]
    cfg = score_obj.ScoreConfig(alpha=c.alpha, beta1=c.beta1, beta2=c.beta2, kl_estimator=c.kl_estimator,
                                baseline=c.baseline, group_size=c.samples_per_prompt,
                                shaping_baseline=c.shaping_baseline, credit=c.credit, gamma=c.gamma)
    loss_fn, on_policy = phase_loss(c.method, lm, chunk, cfg, c.star_keep, config.sampling.temperature)
    ref_params = params  # pi_ref: the model at the start of the stage

    def make_batch(step, state, phase=phase, c=c, ref_params=ref_params, on_policy=on_policy):
      if not on_policy:
        return pair_sft_batch(task, config, phase, step), {}
      n_prompts = c.batch_size // c.samples_per_prompt
      problems = task.train_problems(config.seed, phase, step, n_prompts)
      problems = [p for p in problems for _ in range(c.samples_per_prompt)]
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), stream_id(phase)), step)
      n_base = round(c.base_first_attempts * n_prompts) * c.samples_per_prompt  # whole groups
      ep = policy_episodes(lm, state.params, base_params, task, problems, key, rule, sampler, mesh, n_base)
      batch = episode_batch(task, ep)
      with jax.set_mesh(mesh):
        batch["ref_logp_BxT"] = np.asarray(ref_logprobs(ref_params, batch["tokens_BxT"], batch["positions_BxT"],
                                                        batch["mask_BxT"]))
      stats = dict(padding_stats(ep, batch), y1_len=np.mean([len(y) for y in ep.y1]),
                   y2_len=np.mean([len(y) for y in ep.y2]))
      return batch, stats

    opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps,
                          total_steps=max(1, steps), grad_clip_norm=c.grad_clip_norm)
    select = selection if on_policy and steps else None
    params = runner.run(phase, steps, opt, params, loss_fn, make_batch, offsets[phase][0], eval_fn=interval_eval,
                        select=select)
    evaluate_once(phase, params, checkpoint_step=steps)
    if select:
      best, best_step = runner.best_params(phase, params)
      evaluate_once(f"{phase}_best", best, phase, same_as=phase if best_step == steps else None,
                    checkpoint_step=best_step)
      if config.select.next_stage == "best" and phase != PHASES[-1]:
        params = best

  # MORE ATTEMPTS AND INFERENCE-TIME SCALING, of the base and the final model (inference.json)
  inference = EvalCache(workdir, INFERENCE_FILE)
  problems = task.eval_problems[:config.inference.problems or None]
  for name, p in (("base", base_params), (PHASES[-1], params)):
    inference.get(name, lambda p=p: {
        "attempts": accuracy_at_attempts(lm, p, task, config, mesh, problems),
        "scaling": inference_scaling(lm, p, task, config, mesh, problems, jax.random.key(config.seed))
        if config.inference.episodes else []})

  # REPORT
  writer.close()
  names = [n for phase in PHASES for n in (phase, f"{phase}_best")]
  table = {name: results.results[name] for name in names if name in results}
  print(format_table(table, METRIC_KEYS))
  for name, r in table.items():
    if r.get("repair"):
      print(f"{name}: MBPP-R (repair of {r['repair']['n']} wrong first attempts): "
            f"{100 * r['repair']['fixed']:.1f}% fixed")
  carry = {name: columns for name, r in table.items() if (columns := carry_columns(r))}
  if carry:
    print("carrying + and - lines (greedy, held-out):")
    print(format_table(carry, CARRY_KEYS))
  for name, r in inference.results.items():
    print(f"{name}: Acc@t for t = 1..{len(r['attempts']['acc_at'])}: "
          + " ".join(f"{100 * a:.1f}" for a in r["attempts"]["acc_at"]))
    for row in r["scaling"]:
      print(f"  {row['episodes']} episodes ({row['tokens']:.0f} tokens): MV over y2 {100 * row['sequential_mv']:.1f}; "
            f"MV@{row['parallel_k']} first attempts ({row['parallel_tokens']:.0f} tokens) "
            f"{100 * row['parallel_mv']:.1f}{' (capped)' if row['parallel_capped'] else ''}")
  if jax.process_index() == 0 and read_jsonl(writer.path):
    plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
        "reward per attempt (training rollouts)": ("reward_y1", "reward_y2"),
        "dev (greedy, training split; step 0: the base)": ("dev_acc_t1", "dev_acc_t2", "dev_delta"),
        "dev carrying lines": tuple(f"dev_{k}" for k in CARRY_KEYS)},
        from_step=offsets["base"][1], x_label="RL step",
        phase_starts={slot["phase"]: offsets[slot["phase"]][0] for slot in slots},
        bars=("held-out (greedy)", table, ("acc_t1", "acc_t2", "delta", "delta_c2i")))
  return results.results
