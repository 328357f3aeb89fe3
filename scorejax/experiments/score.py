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
with greedy evaluation of Acc@t1, Acc@t2 and the transitions after each.
Every batch is a function of (seed, phase, step), so a resumed run replays
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from scorejax import parallel
from scorejax.checkpoint import Checkpointer, CheckpointConfig, abstract_like
from scorejax.evaluation import score_metrics
from scorejax.experiments.episodes import generated_ids, pack_episodes
from scorejax.metrics import (MetricWriter, format_table, plot_curves, read_json, read_jsonl, truncate_after,
                              write_json)
from scorejax.models import LM, hf, tiny_arith
from scorejax.objectives import advantages, policy_gradient
from scorejax.objectives import score as score_obj
from scorejax.objectives.logprobs import sequence_logprobs
from scorejax.objectives.sft import nll_token_mean
from scorejax.experiments.score_tasks import PHASES, ArithTask, make_task
from scorejax.sampling import Greedy, Sample, SamplerConfig, continue_sampling, left_pad, sample
from scorejax.tasks import arith
from scorejax.train_step import OptimizerConfig, TrainState, init_train_state, make_optimizer, make_train_step

METRIC_KEYS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")
CARRY_KEYS = ("carry_right_y1", "carry_right_y2", "carry_dropped_y1", "carry_dropped_y2")


class Preempted(Exception):
  """SIGTERM arrived; the state was checkpointed and the run can be resumed."""


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------


def build_model(config, task: ArithTask, mesh):
  """(LM, initial params or None for a fresh init) from config.model."""
  c = config.model
  overrides = dict(param_dtype=c.param_dtype, dtype=c.dtype, remat=c.remat)
  if c.hf_dir:
    return hf.load_hf(c.hf_dir, mesh, **overrides)
  if c.preset != "tiny_arith":
    raise ValueError(f"config.model.preset={c.preset!r}; expected 'tiny_arith' or set config.model.hf_dir")
  model_config = tiny_arith(task.tokenizer.vocab_size, d_model=c.d_model, n_layers=c.n_layers,
                            n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.d_model // c.n_heads,
                            d_ff=c.d_ff, eos_token_id=task.tokenizer.eos_id, **overrides)
  return LM.from_config(model_config), None


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


def two_attempts(lm: LM, params, task: ArithTask, problems, key, rule, sampler: SamplerConfig,
                 mesh, first_attempts: list[list[int]] | None = None) -> Episodes:
  """y1 ~ pi(.|x) (or given), then y2 ~ pi(.|x, y1, p), decoded from y1's KV cache when y1 is sampled here."""
  prompts = [task.prompt_ids(p) for p in problems]
  x_BxT, x_mask = left_pad(prompts, task.tokenizer.pad_id)
  k1, k2 = jax.random.split(key)
  episode_len = x_BxT.shape[1] + 2 * sampler.max_new_tokens + len(task.instruction_ids)
  if first_attempts is None:
    r1 = sample(lm, params, x_BxT, x_mask, k1, rule, sampler, cache_length=sampler.buckets(episode_len),
                mesh=mesh)
    y1 = generated_ids(r1.tokens_BxN, r1.lengths_B)
    p_BxT, p_mask = left_pad([task.instruction_ids] * len(problems), task.tokenizer.pad_id)
    r2 = continue_sampling(lm, params, r1.context, p_BxT, p_mask, k2, rule, sampler, mesh=mesh)
  else:  # attempt 1 comes from elsewhere (e.g. the base model): attempt 2 reads [x, y1, p] afresh
    y1 = first_attempts
    c_BxT, c_mask = left_pad([x + y + task.instruction_ids for x, y in zip(prompts, y1)], task.tokenizer.pad_id)
    r2 = sample(lm, params, c_BxT, c_mask, k2, rule, sampler, cache_length=sampler.buckets(episode_len),
                mesh=mesh)
  y2 = generated_ids(r2.tokens_BxN, r2.lengths_B)
  return Episodes(problems, prompts, y1, y2,
                  np.array([task.reward(p, y) for p, y in zip(problems, y1)], np.float32),
                  np.array([task.reward(p, y) for p, y in zip(problems, y2)], np.float32),
                  np.full(len(problems), first_attempts is None))


def first_attempts(lm: LM, params, task: ArithTask, problems, key, rule, sampler: SamplerConfig,
                   mesh) -> list[list[int]]:
  """y1 ~ pi(.|x) alone: the base model's first attempts that Stage II may mix in."""
  x_BxT, x_mask = left_pad([task.prompt_ids(p) for p in problems], task.tokenizer.pad_id)
  r1 = sample(lm, params, x_BxT, x_mask, key, rule, sampler, mesh=mesh)
  return generated_ids(r1.tokens_BxN, r1.lengths_B)


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
  return pack_episodes(rows, task.tokenizer.pad_id, ("y1", "y2"))


def pair_sft_batch(task: ArithTask, config, phase: str, step: int) -> dict[str, np.ndarray]:
  """Pair-SFT: [x, y1, p, y2] with a noisy y1 and a correct y2 written by the task."""
  c = config[phase]
  problems = task.train_problems(config.seed, phase, step, c.batch_size)
  rng = np.random.default_rng([config.seed, 11, step])
  rows = [[(task.prompt_ids(pair.first.problem), None), (task.answer_ids(pair.first.text), "y1"),
           (task.instruction_ids, None), (task.answer_ids(pair.second.text), "y2")]
          for pair in arith.two_attempt_examples(problems, rng, first_error_rate=c.pair_error_rate,
                                                 carry_slip_rate=config.base.carry_slip_rate)]
  return pack_episodes(rows, task.tokenizer.pad_id, ("y1", "y2"))


def episode_batch(task: ArithTask, ep: Episodes) -> dict[str, np.ndarray]:
  rows = [[(x, None), (y1, "y1"), (task.instruction_ids, None), (y2, "y2")]
          for x, y1, y2 in zip(ep.prompts, ep.y1, ep.y2)]
  batch = pack_episodes(rows, task.tokenizer.pad_id, ("y1", "y2"))
  batch["mask_y1_BxT"] &= ep.y1_on_policy[:, None]  # a given y1's r1 shapes r_hat2; y1 gets no gradient
  batch.update(reward_y1_B=ep.reward_y1, reward_y2_B=ep.reward_y2)
  return batch


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def sft_loss_fn(lm: LM, chunk: int):
  def loss_fn(params, batch, rng):
    del rng
    logp = sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                             chunk_size=chunk)
    mask = batch["mask_y1_BxT"] | batch["mask_y2_BxT"]
    return nll_token_mean(logp, mask), {}
  return loss_fn


def score_loss_fn(lm: LM, chunk: int, objective: Callable, cfg: score_obj.ScoreConfig):
  """Stage I or II on a packed batch; y1 and y2 share one forward pass."""
  def loss_fn(params, batch, rng):
    del rng
    logp = sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                             chunk_size=chunk)
    ref = batch["ref_logp_BxT"]
    score_batch = score_obj.ScoreBatch(
        ref_logp_y1_BxT=ref, mask_y1_BxT=batch["mask_y1_BxT"], ref_logp_y2_BxT=ref,
        mask_y2_BxT=batch["mask_y2_BxT"], reward_y1_B=batch["reward_y1_B"], reward_y2_B=batch["reward_y2_B"])
    return objective(score_obj.AttemptLogprobs(logp, logp), score_batch, cfg)
  return loss_fn


def single_turn_loss_fn(lm: LM, chunk: int, cfg: score_obj.ScoreConfig):
  """Single-turn RL baseline: REINFORCE on y1 with r(y1), KL beta1; y2 is not trained."""
  def loss_fn(params, batch, rng):
    del rng
    logp = sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                             chunk_size=chunk)
    advantage_B = advantages.compute_advantages(cfg.baseline, batch["reward_y1_B"], cfg.group_size)
    loss, aux = policy_gradient.reinforce_loss(logp, batch["ref_logp_BxT"], batch["mask_y1_BxT"], advantage_B,
                                               kl_coef=cfg.beta1, kl_estimator=cfg.kl_estimator)
    return loss, dict(aux, reward_y1=jnp.mean(batch["reward_y1_B"]), reward_y2=jnp.mean(batch["reward_y2_B"]))
  return loss_fn


def second_attempt_sft_loss_fn(lm: LM, chunk: int, filtered: bool):
  """SFT on y2 tokens: Pair-SFT (every row) or STaR (only rows whose y2 was right)."""
  def loss_fn(params, batch, rng):
    del rng
    logp = sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                             chunk_size=chunk)
    mask = batch["mask_y2_BxT"]
    aux = {}
    if filtered:
      keep_B = batch["reward_y2_B"] > 0.5
      mask = mask & keep_B[:, None]
      aux = {"kept": jnp.mean(keep_B.astype(jnp.float32)), "reward_y1": jnp.mean(batch["reward_y1_B"]),
             "reward_y2": jnp.mean(batch["reward_y2_B"])}
    return nll_token_mean(logp, mask), aux
  return loss_fn


METHODS = ("score_stage1", "score_stage2", "single_turn", "star", "pair_sft")


def phase_loss(method: str, lm: LM, chunk: int, cfg: score_obj.ScoreConfig):
  """The loss of a training phase and whether its batches are the policy's own episodes."""
  if method == "score_stage1":
    return score_loss_fn(lm, chunk, score_obj.stage1_loss, cfg), True
  if method == "score_stage2":
    return score_loss_fn(lm, chunk, score_obj.stage2_loss, cfg), True
  if method == "single_turn":
    return single_turn_loss_fn(lm, chunk, cfg), True
  if method == "star":
    return second_attempt_sft_loss_fn(lm, chunk, filtered=True), True
  if method == "pair_sft":
    return second_attempt_sft_loss_fn(lm, chunk, filtered=False), False
  raise ValueError(f"phase method {method!r}; expected one of {METHODS}")


# ----------------------------------------------------------------------------
# The loop of one phase
# ----------------------------------------------------------------------------


class PhaseRunner:
  """Runs phases with checkpoints, metrics, a progress bar and SIGTERM handling."""

  def __init__(self, config, workdir: str, lm: LM, mesh, writer: MetricWriter):
    self.config, self.workdir, self.lm, self.mesh, self.writer = config, workdir, lm, mesh, writer
    self.preempted = False
    signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.preempted = True

  def checkpointer(self, phase: str) -> Checkpointer:
    c = self.config.checkpoint
    return Checkpointer(CheckpointConfig(
        directory=os.path.join(self.workdir, "checkpoints", phase), max_to_keep=c.max_to_keep,
        save_interval_steps=c.every, async_save=c.async_save))

  def run(self, phase: str, steps: int, opt_cfg: OptimizerConfig, params, loss_fn,
          make_batch: Callable[[int, TrainState], dict], step_offset: int, eval_fn=None):
    """Trains `steps` steps from `params`; returns the final params. Resumes when it can."""
    if steps == 0:  # nothing to train (e.g. an instruct checkpoint is the base policy)
      return params
    optimizer = make_optimizer(opt_cfg)
    state, shardings = init_train_state(self.lm.init, optimizer, jax.random.key(self.config.seed),
                                        self.mesh, params=params)
    train = make_train_step(loss_fn, optimizer, shardings, self.mesh, opt_cfg.grad_accum_steps)
    meta = {"phase": phase, "config": self.config.to_dict()}
    with self.checkpointer(phase) as ckpt:
      if ckpt.latest_step() is not None:
        state, saved = ckpt.restore(abstract_like(state))
        if saved.get("finished"):
          return state.params
      start = int(state.step)
      truncate_after(self.writer.path, phase, step_offset + start)
      bar = tqdm.tqdm(range(start, steps), desc=phase, initial=start, total=steps, dynamic_ncols=True,
                      disable=jax.process_index() != 0)
      for step in bar:
        t = time.perf_counter()
        batch, batch_metrics = make_batch(step, state)
        state, metrics = train(state, parallel.shard_batch(batch, self.mesh))
        metrics = dict(jax.device_get(metrics), **batch_metrics, step_s=time.perf_counter() - t)
        if (step + 1) % self.config.log_every == 0 or step + 1 == steps:
          record = self.writer.write(step_offset + step + 1, phase, metrics)
          bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "reward_y1", "reward_y2") if k in record})
        if eval_fn is not None and self.config.eval.every and (step + 1) % self.config.eval.every == 0:
          self.writer.write(step_offset + step + 1, phase, eval_fn(state.params))
        # Step + 1 is never saved yet (a resume starts after the latest save), so forcing
        # the last step, or the step a SIGTERM arrived in, cannot collide with a save.
        stop, done = self.preempted, step + 1 == steps
        ckpt.save(step + 1, state, dict(meta, finished=done), force=done or stop)
        if stop:
          ckpt.wait_until_finished()
          raise Preempted(f"SIGTERM at {phase} step {step + 1}; rerun the same command to resume")
      ckpt.wait_until_finished()
    return state.params


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  for phase in PHASES[1:]:  # checked before any compute
    if not 0.0 <= config[phase].base_first_attempts < 1.0:
      raise ValueError(f"config.{phase}.base_first_attempts={config[phase].base_first_attempts}: the share of a "
                       "batch's prompts whose first attempt the base model writes; expected a value in [0, 1)")
  # MESH
  mesh = parallel.make_mesh(dict(config.mesh))
  # DATA
  task = make_task(config.task)
  # MODEL
  lm, loaded = build_model(config, task, mesh)
  parallel.check_model_fits(lm.config, mesh)
  with jax.set_mesh(mesh):
    shardings = parallel.param_shardings(lm.abstract_params(), mesh)
    params = loaded if loaded is not None else jax.jit(lm.init, out_shardings=shardings)(
        jax.random.key(config.seed))
  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runner = PhaseRunner(config, workdir, lm, mesh, writer)
  chunk = config.logprob_chunk
  sampler = sampler_config(config, task)
  rule = Sample(temperature=config.sampling.temperature)
  ref_logprobs = jax.jit(functools.partial(sequence_logprobs, lm, chunk_size=chunk))
  results = read_json(os.path.join(workdir, "eval.json"))
  ends = np.cumsum([config[phase].steps for phase in PHASES]).tolist()
  offsets = [0] + ends[:-1]  # global step at which each phase starts

  def evaluate_once(name, p):
    """The full evaluation of a phase's final params, cached in eval.json."""
    if name not in results:
      results[name] = evaluate(lm, p, task, config, mesh, task.eval_problems)
      write_json(os.path.join(workdir, "eval.json"), results)
      writer.write(ends[PHASES.index(name)], name, {f"eval_{k}": results[name][k] for k in METRIC_KEYS})
    return results[name]

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
  params = runner.run("base", config.base.steps, base_opt, params, sft_loss_fn(lm, chunk),
                      lambda step, state: (base_sft_batch(task, config, step), {}), offsets[0])
  evaluate_once("base", params)
  base_params = params

  # STAGE I and STAGE II (or a baseline's training phase in their place)
  for phase, offset in (("stage1", offsets[1]), ("stage2", offsets[2])):
    c = config[phase]
    cfg = score_obj.ScoreConfig(alpha=c.alpha, beta1=c.beta1, beta2=c.beta2, kl_estimator=c.kl_estimator,
                                baseline=c.baseline, group_size=c.samples_per_prompt,
                                shaping_baseline=c.shaping_baseline)
    loss_fn, on_policy = phase_loss(c.method, lm, chunk, cfg)
    ref_params = params  # pi_ref: the model at the start of the stage

    def make_batch(step, state, phase=phase, c=c, ref_params=ref_params, on_policy=on_policy):
      if not on_policy:
        return pair_sft_batch(task, config, phase, step), {}
      n_prompts = c.batch_size // c.samples_per_prompt
      problems = task.train_problems(config.seed, phase, step, n_prompts)
      problems = [p for p in problems for _ in range(c.samples_per_prompt)]
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), PHASES.index(phase)), step)
      n_base = round(c.base_first_attempts * n_prompts) * c.samples_per_prompt  # whole groups
      ep = policy_episodes(lm, state.params, base_params, task, problems, key, rule, sampler, mesh, n_base)
      batch = episode_batch(task, ep)
      with jax.set_mesh(mesh):
        batch["ref_logp_BxT"] = np.asarray(ref_logprobs(ref_params, batch["tokens_BxT"], batch["positions_BxT"],
                                                        batch["mask_BxT"]))
      stats = {"y1_len": np.mean([len(y) for y in ep.y1]), "y2_len": np.mean([len(y) for y in ep.y2])}
      return batch, stats

    opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps,
                          total_steps=max(1, c.steps), grad_clip_norm=c.grad_clip_norm)
    params = runner.run(phase, c.steps, opt, params, loss_fn, make_batch, offset, eval_fn=interval_eval)
    evaluate_once(phase, params)

  # REPORT
  writer.close()
  table = {name: results[name] for name in PHASES if name in results}
  print(format_table(table, METRIC_KEYS))
  carry = {name: columns for name, r in table.items() if (columns := carry_columns(r))}
  if carry:
    print("carrying + and - lines (greedy, held-out):")
    print(format_table(carry, CARRY_KEYS))
  if jax.process_index() == 0 and read_jsonl(writer.path):
    plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
        "reward per attempt": ("reward_y1", "reward_y2"),
        "dev (greedy, training split)": ("dev_acc_t1", "dev_acc_t2", "dev_delta"),
        "dev carrying lines": tuple(f"dev_{k}" for k in CARRY_KEYS),
        "loss": ("loss",)})
  return results

