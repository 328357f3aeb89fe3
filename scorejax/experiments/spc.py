"""SPC end to end: a sneaky generator and a step critic in adversarial games, offline RL over rounds.

  python -m scorejax.main --config=configs/arith_spc.py --workdir=/tmp/spc
  python -m scorejax.main --config=configs/qwen_spc.py:tpu --workdir=gs://bucket/qwen_spc

Chen et al., "SPC: Evolving Self-Play Critic via Adversarial Games for LLM
Reasoning" (arXiv 2504.19162); the game rewards and records are in
`rewards/game.py`, the offline objective in `objectives/spc.py`, the data in
`experiments/spc_data.py`, the test-time search in `search.py`.

On real data (`configs/qwen_spc.py`: an HF checkpoint as the base, PRM800K
for both roles' SFT data and the dev set, ProcessBench held out, MATH-format
problems for the games and the search; `experiments/spc_data.FileSPCData`)
the base is not trained and rewrites are validated by completions.

Phases, each checkpointed and resumable on its own:
  generator       built-in task: SFT of the base model, a solver with a
                  carry habit (the solver of the games and of the search);
                  real data: none (generator.steps = 0);
  round0/critic   SFT: judge one step given the problem and the steps
                  before it, ending <Answer>Correct</Answer> or
                  <Answer>Incorrect</Answer>;
  round0/sneaky   SFT: rewrite a correct step into a wrong one, naming the
                  error type first;
  round<r>/...    r = 1..game.rounds: play games with the round's start
                  models (cached in games.json), build balanced, paired
                  records, then offline RL of each role on its records,
                  pi_ref = the role at the round's start, plus
                  sft_coef x SFT on its round-0 data.
After each round the critic is scored on held-out steps (accuracy on correct
and on erroneous steps, their mean and harmonic mean, invalid verdicts
counted as wrong and, as the released evaluation does, excluded; per subset;
ProcessBench's first-error F1 by judging steps in order), and the sneaky
generator's success rate is measured against the round-0 critic and against
the round's critic. Last, critic-guided step search against self-consistency
at equal solver tokens, with the final and with the round-0 critic.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import ml_collections
import numpy as np

from scorejax import evaluation, parallel
from scorejax.experiments.spc_data import (
  completion_success,
  critic_step_prompt,
  first_error_predictions,
  sneaky_prompt,
  solution_items,
  spc_data,
  validated_by_completions,
)
from scorejax.metrics import MetricWriter, format_table, plot_curves, read_jsonl
from scorejax.models.build import build_model
from scorejax.objectives import sft
from scorejax.objectives import spc as spc_obj
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.phases import EvalCache, PhaseRunner, claim_workdir
from scorejax.rewards import game as game_lib
from scorejax.rollouts import Segment, sample_batched, to_batch
from scorejax.sampling import Greedy, Sample, SamplerConfig
from scorejax.search import SearchConfig, self_consistency, step_search, votes_at_tokens
from scorejax.tasks import templates
from scorejax.tasks.base import endless_shuffle, make_task, stream_id, stream_seed
from scorejax.train_step import OptimizerConfig

ROLES = ("critic", "sneaky")
TABLE_KEYS = ("harmonic_mean", "mean", "acc_correct", "acc_error", "first_error_f1", "sneaky_vs_round0",
              "sneaky_vs_own_critic")
SWEEP_METRICS = TABLE_KEYS


def sweep_rows(results: dict) -> dict[str, dict]:
  """`scorejax.sweep`'s rows of one run: the critic of round 0 and of the last round."""
  last = max(int(k[len("round"):]) for k in results if k.startswith("round") and k[len("round"):].isdigit())
  return {" round0": results["round0"], f" round{last}": results[f"round{last}"]}


# ----------------------------------------------------------------------------
# The roles' outputs: verdicts and rewrites
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Outputs:
  ids: list[list[int]]
  logprobs: list[list[float]]
  texts: list[str]


def _sample(lm, params, task, prompts, key, rule, max_new_tokens, config, mesh, n=1) -> Outputs:
  sampler = SamplerConfig(max_new_tokens=max_new_tokens, stop_tokens=task.stop_ids, pad_id=task.tokenizer.pad_id)
  ids, logprobs = sample_batched(lm, params, prompts, key, rule, sampler, mesh, pad_id=task.tokenizer.pad_id,
                                 batch_size=config.eval.batch_size, n=n)
  return Outputs(ids, logprobs, [task.text(i) for i in ids])


def judge(role, task, items, key, rule, config, mesh, n=1) -> tuple[list[game_lib.Verdict], Outputs]:
  """The critic's verdict on each step item (parsed by `rewards.game.parse_verdict`); n judgements of each,
  item-major (the first of n is the one n = 1 samples)."""
  lm, params = role
  out = _sample(lm, params, task, [critic_step_prompt(task, it) for it in items], key, rule,
                config.roles.critic.max_new_tokens, config, mesh, n)
  return [game_lib.parse_verdict(t) for t in out.texts], out


def rewrite(role, task, items, error_types, key, rule, config, mesh) -> tuple[list, Outputs]:
  """The sneaky generator's (error type, wrong step) for each correct step item, or an Invalid."""
  lm, params = role
  out = _sample(lm, params, task, [sneaky_prompt(task, it, error_types) for it in items], key, rule,
                config.roles.sneaky.max_new_tokens, config, mesh)
  return [templates.parse_sneaky(t, error_types) for t in out.texts], out


def validate(data, solver, task, items, parsed, key, config, mesh) -> np.ndarray:
  """bool [n]: the rewrite was read, differs from the step, and is truly wrong (the checker, or completions)."""
  ok = np.array([not templates.is_invalid(p) and p[1] != it.step for it, p in zip(items, parsed)], bool)
  g = config.game
  if g.validator == "checker":
    return ok & np.array([o and data.checker_validates(it, p[1]) for it, p, o in zip(items, parsed, ok)], bool)
  chosen = np.flatnonzero(ok)
  if not len(chosen):
    return ok
  rule = Sample(temperature=g.validate_temperature)
  original = completion_success(*solver, task, [items[i] for i in chosen], g.validate_rollouts, rule, key, config,
                                mesh)
  rewritten = completion_success(*solver, task, [dataclasses.replace(items[i], step=parsed[i][1]) for i in chosen],
                                 g.validate_rollouts, rule, key, config, mesh)
  ok[chosen] = validated_by_completions(original, rewritten, g.keep_at_least, g.drop_to_at_most)
  return ok


# ----------------------------------------------------------------------------
# Games
# ----------------------------------------------------------------------------


def play_round(r, data, task, solver, sneaky, opponent, learner, config, mesh) -> dict:
  """One round of games on the game's positions: S rewrites, the rewrites are validated, the opponent critic
  judges each validated rewrite and the same prefix's correct step (sampled, game.critic_samples times each);
  with an earlier opponent, the learning critic judges the same pairs for its own records."""
  g = config.game
  positions, stats = data.game_positions(*solver, r, g.games_per_round, mesh)
  key = jax.random.fold_in(jax.random.key(config.seed), stream_id(f"games/round{r}"))
  parsed, rewrites = rewrite(sneaky, task, positions, data.error_types, jax.random.fold_in(key, 1),
                             Sample(temperature=g.sneaky_temperature), config, mesh)
  valid = validate(data, solver, task, positions, parsed, jax.random.fold_in(key, 2), config, mesh)
  chosen = np.flatnonzero(valid)
  pairs = [item for i in chosen for item in (dataclasses.replace(positions[i], step=parsed[i][1]), positions[i])]
  rule = Sample(temperature=g.critic_temperature)

  n = g.critic_samples

  def games_judged_by(critic, k):
    verdicts, out = judge(critic, task, pairs, jax.random.fold_in(key, k), rule, config, mesh, n)

    def group(p):  # the n judgements of pair item p: 2j + 0 (the sneaky step) or 2j + 1 (its correct step)
      prompt = critic_step_prompt(task, pairs[p])
      return [game_lib.Judgement(prompt, out.ids[row], verdicts[row], out.logprobs[row])
              for row in range(p * n, (p + 1) * n)]

    def game(i, position):
      if i not in judged:
        return game_lib.Game(sneaky_prompt(task, position, data.error_types), rewrites.ids[i], None, None,
                             generator_logprobs=rewrites.logprobs[i])
      on_sneaky, on_correct = judged[i]
      return game_lib.Game(sneaky_prompt(task, position, data.error_types), rewrites.ids[i], on_sneaky[0],
                           on_correct[0], rewrites.logprobs[i], tuple(on_sneaky[1:]), tuple(on_correct[1:]))

    judged = {i: (group(2 * j), group(2 * j + 1)) for j, i in enumerate(chosen)}
    return [game(i, position) for i, position in enumerate(positions)]

  games = games_judged_by(opponent, 3)
  stats.update(played=len(positions), unparsed_rewrites=int(sum(templates.is_invalid(p) for p in parsed)),
               validated=int(valid.sum()),
               error_types={t: int(sum(not templates.is_invalid(p) and p[0] == t for p in parsed))
                            for t in data.error_types})
  return {"games": game_lib.games_to_json(games),
          "learner_games": None if learner is opponent else game_lib.games_to_json(games_judged_by(learner, 4)),
          "stats": stats}


def round_records(played: dict, r: int, config) -> tuple[list, list, dict]:
  """(critic records, sneaky records, stats): balanced and paired as config.game says."""
  g = config.game
  cfg = game_lib.GameConfig(win_reward=g.win_reward, loss_reward=g.loss_reward,
                            invalid_verdict_reward=g.invalid_verdict_reward, balance=g.balance, paired=g.paired,
                            min_kept_games=g.min_kept_games,
                            failed_rewrite_reward=g.loss_reward if g.penalize_failed_rewrites else None)
  seed = stream_seed(config.seed, f"records/round{r}", 0)
  records = game_lib.build_round_records(game_lib.games_from_json(played["games"]), cfg, seed)
  critic = records.critic
  if played["learner_games"] is not None:
    critic = game_lib.build_round_records(game_lib.games_from_json(played["learner_games"]), cfg, seed).critic
  stats = dict(played["stats"], **records.stats, critic_records=len(critic), sneaky_records=len(records.generator))
  if records.stats["balance_fallback"]:
    print(f"round {r}: one side won nearly every game (critic {records.stats['critic_wins']}, sneaky "
          f"{records.stats['generator_wins']}); kept config.game.min_kept_games={g.min_kept_games} of the majority")
  return critic, records.generator, stats


# ----------------------------------------------------------------------------
# Learning: SFT rows and offline-RL batches
# ----------------------------------------------------------------------------


RECORDS = ("all", "wins", "balanced_wins")  # which of a round's records the roles learn from (config.rl.records)


def learned_records(records: list, which: str, minimum: int = 0, seed: int = 0) -> list:
  """All of the round's records; those rewarded above 0 (the wins; with a group baseline, the judgements above
  their group's mean); or the wins with as many Correct as Incorrect verdicts (`rewards.game.verdict_balanced`,
  at least `minimum` of the commoner verdict; the generator's wins have no verdict and are all kept)."""
  if which == "all":
    return records
  wins = [rec for rec in records if rec.reward > 0]
  return wins if which == "wins" else game_lib.verdict_balanced(wins, minimum, np.random.default_rng(seed))


def learned_stats(name: str, records: list) -> dict[str, int]:
  """How many records a role learns from in a round (eval.json `games`); the critic's: how many end in Correct."""
  out = {f"{name}_learned": len(records)}
  if name == "critic":
    out["critic_learned_correct"] = sum(rec.verdict == game_lib.Verdict.CORRECT for rec in records)
  return out


def sft_batch(rows, task) -> dict[str, np.ndarray]:
  return to_batch([[Segment(p), Segment(t, "response")] for p, t in rows], task.tokenizer.pad_id, ("response",))


def offline_batch(records, sft_rows, task) -> dict[str, np.ndarray]:
  """Game records (response log-probs from the round's start model: pi_ref) and supervised rows in one batch."""
  rows = [[Segment(rec.prompt), Segment(rec.response, "response", rec.logprobs)] for rec in records]
  rows += [[Segment(p), Segment(t, "response")] for p, t in sft_rows]
  batch = to_batch(rows, task.tokenizer.pad_id, ("response",))
  batch["reward_B"] = np.array([rec.reward for rec in records] + [0.0] * len(sft_rows), np.float32)
  batch["is_sft_B"] = np.array([0.0] * len(records) + [1.0] * len(sft_rows), np.float32)
  return batch


def offline_inputs(batch) -> spc_obj.SPCBatch:
  return spc_obj.SPCBatch(ref_logp_BxT=batch["sampler_logp_BxT"], mask_BxT=batch["mask_response_BxT"],
                          reward_B=batch["reward_B"], is_sft_B=batch["is_sft_B"])


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def step_metrics(items, verdicts) -> dict:
  """SPC's step accuracies on labelled items: invalid verdicts counted as wrong, and (`valid_only`) excluded."""
  labelled = [(it, v) for it, v in zip(items, verdicts) if it.correct is not None]
  as_bool = lambda v: None if v == game_lib.Verdict.INVALID else v == game_lib.Verdict.CORRECT
  out = evaluation.step_judgement_metrics([it.correct for it, _ in labelled], [as_bool(v) for _, v in labelled])
  valid = [(it, v) for it, v in labelled if v != game_lib.Verdict.INVALID]
  out["valid_only"] = evaluation.step_judgement_metrics([it.correct for it, _ in valid], [as_bool(v) for _, v in valid])
  return out


def error_type_metrics(verdicts) -> dict:
  """The share of erroneous steps judged Incorrect (an invalid verdict counted as wrong), with its count."""
  as_bool = lambda v: None if v == game_lib.Verdict.INVALID else v == game_lib.Verdict.CORRECT
  m = evaluation.step_judgement_metrics([False] * len(verdicts), [as_bool(v) for v in verdicts])
  return {k: m[k] for k in ("acc_error", "n_error", "n_invalid")}


def critic_metrics(critic, task, heldout, items, config, mesh) -> dict:
  """Greedy single-step judgements of every held-out step: step accuracies overall, per subset (and their
  mean over subsets, as SPC reports ProcessBench) and, where the task tells them apart, per kind of position
  (`step_kind`) and per type of error (`error_type`); and the first-error F1 from judging in order."""
  verdicts, _ = judge(critic, task, items, jax.random.key(0), Greedy(), config, mesh)
  out = step_metrics(items, verdicts)
  subsets = sorted({it.subset for it in items})
  out["subsets"] = {s: step_metrics(*zip(*[(it, v) for it, v in zip(items, verdicts) if it.subset == s]))
                    for s in subsets}
  if hasattr(task, "step_kind"):  # the built-in task: per kind of position (where a carry habit slips, or not)
    kinds = [task.step_kind(it.problem, it.previous) for it in items]
    out["kinds"] = {k: step_metrics(*zip(*[(it, v) for it, v, kind in zip(items, verdicts, kinds) if kind == k]))
                    for k in sorted(set(kinds))}
  if hasattr(task, "error_type"):  # and per type of error: which errors the critic catches
    wrong = [(task.error_type(it.problem, it.previous, it.step), v) for it, v in zip(items, verdicts)
             if it.correct is False]
    out["error_types"] = {t: error_type_metrics([v for kind, v in wrong if kind == t])
                          for t in sorted({kind for kind, _ in wrong})}
  means = [m["harmonic_mean"] for m in out["subsets"].values() if m["harmonic_mean"] is not None]
  out["subset_mean_harmonic_mean"] = float(np.mean(means)) if means else None
  predicted = first_error_predictions(heldout, items, verdicts)
  pb = evaluation.processbench_metrics([s.subset for s in heldout], [s.label for s in heldout], predicted)
  out.update(first_error_f1=pb["mean_f1"], first_error_subsets=pb["subsets"],
             invalid=float(np.mean([v == game_lib.Verdict.INVALID for v in verdicts])))
  return out


def sneaky_success(sneaky, critics: dict, data, solver, task, items, config, mesh) -> dict:
  """The sneaky generator's rewrites of held-out correct steps (sampled, fixed key): the share validated as
  wrong, and of those the share each critic (greedy) judges Correct."""
  parsed, _ = rewrite(sneaky, task, items, data.error_types, jax.random.key(7),
                      Sample(temperature=config.game.sneaky_temperature), config, mesh)
  valid = validate(data, solver, task, items, parsed, jax.random.key(8), config, mesh)
  rewritten = [dataclasses.replace(items[i], step=parsed[i][1]) for i in np.flatnonzero(valid)]
  out = {"validated": float(valid.mean())}
  for name, critic in critics.items():
    verdicts = judge(critic, task, rewritten, jax.random.key(0), Greedy(), config, mesh)[0] if rewritten else []
    out[name] = float(np.mean([v == game_lib.Verdict.CORRECT for v in verdicts])) if verdicts else None
  return out


def compare_search(lm, base_params, critic_lm, critics: dict, task, config, mesh) -> dict:
  """Critic-guided step search with each critic, self-consistency at the first critic's solver tokens, and
  one sample, on the first config.eval.search_problems eval problems."""
  e = config.eval
  search_cfg = SearchConfig(retries=e.search_retries, temperature=e.search_temperature, max_steps=e.search_max_steps,
                            step_tokens=e.search_step_tokens, solution_tokens=config.generator.max_new_tokens,
                            batch_size=e.batch_size)
  problems = task.eval_problems[:e.search_problems]

  def search_with(critic_params):
    def verdicts(step_items):
      return judge((critic_lm, critic_params), task, step_items, jax.random.key(0), Greedy(), config, mesh)[0]
    found = step_search(lm, base_params, task, problems, verdicts, jax.random.key(11), search_cfg, mesh)
    return {"acc": float(found.rewards.mean()), "tokens": float(found.solver_tokens.mean()),
            "judged_steps": found.judged_steps, "rejected_steps": found.rejected_steps}

  out = {name: search_with(p) for name, p in critics.items()}
  out["single_sample"] = self_consistency(lm, base_params, task, problems, 1, jax.random.key(12), search_cfg, mesh)
  votes = votes_at_tokens(next(iter(out.values()))["tokens"], out["single_sample"]["tokens"])
  out["self_consistency"] = self_consistency(lm, base_params, task, problems, votes, jax.random.key(12), search_cfg,
                                             mesh)
  out["num_problems"] = len(problems)
  return out


# ----------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  # MESH
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  # DATA (real data: every file read and checked before the model loads)
  task = make_task(config.task)
  data = spc_data(task, config)
  if config.game.critic_samples < 1:
    raise ValueError(f"config.game.critic_samples={config.game.critic_samples}: expected at least 1 judgement per step")
  rl = config.rl  # the offline objective, checked before anything trains
  offline = spc_obj.SPCConfig(clip_eps=rl.clip_eps, sft_coef=rl.sft_coef, kl_coef=rl.kl_coef, ratio=rl.ratio)
  if rl.records not in RECORDS:
    raise ValueError(f"config.rl.records={rl.records!r}; expected one of {RECORDS}")
  claim_workdir(workdir, config)
  # MODELS: the base, and each role from it (or from its own checkpoint)
  lm, base_params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  own = {role: build_model(ml_collections.ConfigDict(dict(config.model.to_dict(), hf_dir=config.roles[role].hf_dir)),
                           task.tokenizer, mesh, config.seed, rules) if config.roles[role].hf_dir else None
         for role in ROLES}
  lms = {role: own[role][0] if own[role] else lm for role in ROLES}
  writer = MetricWriter(workdir, tensorboard=config.tensorboard)
  runners = {name: PhaseRunner(config, workdir, model, mesh, writer, bar_keys=("loss", "reward", "kl"), rules=rules)
             for name, model in (("base", lm), *lms.items())}
  results, game_cache = EvalCache(workdir), EvalCache(workdir, "games.json")
  offset = 0

  def train(runner, phase, steps, opt, params, loss_fn, make_batch):
    nonlocal offset
    out = runner.run(phase, steps, opt, params, loss_fn, make_batch, offset)
    offset += steps
    return out

  # BASE MODEL: the solver (built-in task: SFT from scratch)
  c = config.generator
  answer_loss = build_loss_fn(sft.sft_loss, model_logprobs(lm, config.logprob_chunk),
                              lambda b: sft.SFTBatch(b["mask_response_BxT"]), sft.SFTConfig())
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=c.warmup_steps, schedule="cosine",
                        total_steps=max(1, c.steps), grad_clip_norm=1.0)
  base_params = train(runners["base"], "generator", c.steps, opt, base_params, answer_loss,
                      lambda step, state: (sft_batch(data.base_batch(step), task), {}))
  solver = (lm, base_params)

  # HELD-OUT AND DEV STEPS
  heldout, cut = data.heldout(lm, base_params, mesh)
  items = solution_items(heldout)
  rng = np.random.default_rng([config.seed, stream_id("sneaky_eval")])
  correct_items = [it for it in items if it.correct]
  sneaky_items = [correct_items[i] for i in np.sort(rng.permutation(len(correct_items))[:config.eval.sneaky_items])]
  dev = data.dev(lm, base_params, mesh)
  dev_items = solution_items(dev)

  # ROUND 0: SFT of both roles from the base
  params = {}
  for role, rows in (("critic", data.critic_sft_rows), ("sneaky", data.sneaky_sft_rows)):
    s = config.roles[role].sft
    loss = build_loss_fn(sft.sft_loss, model_logprobs(lms[role], config.logprob_chunk),
                         lambda b: sft.SFTBatch(b["mask_response_BxT"]), sft.SFTConfig())
    opt = OptimizerConfig(learning_rate=s.learning_rate, warmup_steps=s.warmup_steps, schedule="cosine",
                          total_steps=max(1, s.steps), grad_clip_norm=1.0)

    def make_batch(step, state, rows=rows, phase=f"round0/{role}", n=s.batch_size):
      batch_rows, kept = rows(phase, step, n)
      return sft_batch(batch_rows, task), {"kept_fraction": kept}
    params[role] = train(runners[role], f"round0/{role}", s.steps, opt, own[role][1] if own[role] else base_params,
                         loss, make_batch)
  history = {0: dict(params)}  # each round's end, for the earlier-critic pairing and the fixed opponent

  def role(name, p):
    return (lms[name], p)

  def evaluate_round(r, games_stats=None):
    def compute():
      out = critic_metrics(role("critic", params["critic"]), task, heldout, items, config, mesh)
      dev_verdicts, _ = judge(role("critic", params["critic"]), task, dev_items, jax.random.key(0), Greedy(), config,
                              mesh)
      out["dev"] = {k: v for k, v in step_metrics(dev_items, dev_verdicts).items() if k != "valid_only"}
      critics = {"round0_critic": role("critic", history[0]["critic"]), "own_critic": role("critic", params["critic"])}
      success = sneaky_success(role("sneaky", params["sneaky"]), critics, data, solver, task, sneaky_items, config,
                               mesh)
      out.update(sneaky_validated=success["validated"], sneaky_vs_round0=success["round0_critic"],
                 sneaky_vs_own_critic=success["own_critic"], games=games_stats, num_steps=len(items),
                 num_labelled_steps=sum(it.correct is not None for it in items))
      row = {f"eval_{k}": out[k] for k in TABLE_KEYS} | {"eval_dev_harmonic_mean": out["dev"]["harmonic_mean"]}
      writer.write(offset, f"round{r}", {k: v for k, v in row.items() if v is not None})
      return out
    return results.get(f"round{r}", compute)

  results.get("generator", lambda: {"num_solutions": len(heldout), "cut_off": cut, "num_steps": len(items),
                                    "all_correct": float(np.mean([s.label == -1 for s in heldout]))})
  evaluate_round(0)

  # ROUNDS: play, build records, learn (both roles), evaluate
  g, c = config.game, config.rl
  for r in range(1, g.rounds + 1):
    opponent = role("critic", history[max(0, r - 1 - g.critic_lag)]["critic"])
    learner = role("critic", params["critic"])
    played = game_cache.get(f"round{r}", lambda: play_round(
        r, data, task, solver, role("sneaky", params["sneaky"]), opponent,
        opponent if g.critic_lag == 0 else learner, config, mesh))
    critic_records, sneaky_records, stats = round_records(played, r, config)
    if f"round{r}" not in results:
      writer.write(offset, f"round{r}", {k: v for k, v in stats.items() if not isinstance(v, dict)})
    for name, records, rows in (("critic", critic_records, data.critic_sft_rows),
                                ("sneaky", sneaky_records, data.sneaky_sft_rows)):
      phase = f"round{r}/{name}"
      learned = learned_records(records, c.records, g.min_kept_games, stream_seed(config.seed, f"{phase}/records", 0))
      stats |= learned_stats(name, learned)  # every round's eval.json holds the counts, 0 when nothing is learned
      if not records:
        print(f"{phase}: no records this round (games {stats['games']}, validated {stats['validated']}); "
              f"the {name} is not trained")
        continue
      if not learned:
        print(f"{phase}: none of the round's records won; the {name} is not trained")
        continue
      steps = math.ceil(c.epochs * len(records) / c.batch_size)  # set by all records, whichever are learned
      loss = build_loss_fn(spc_obj.spc_loss, model_logprobs(lms[name], config.logprob_chunk), offline_inputs, offline)
      opt = OptimizerConfig(learning_rate=config.roles[name].rl_learning_rate, warmup_steps=c.warmup_steps,
                            total_steps=max(1, steps), grad_clip_norm=c.grad_clip_norm)

      def make_batch(step, state, learned=learned, rows=rows, phase=phase):
        chosen = endless_shuffle(learned, config.seed, phase, step, c.batch_size)
        supervised = rows(f"{phase}/sft", step, c.sft_batch_size)[0] if c.sft_batch_size else []
        return offline_batch(chosen, supervised, task), {}
      params[name] = train(runners[name], phase, steps, opt, params[name], loss, make_batch)
    history[r] = dict(params)
    evaluate_round(r, stats)

  # TEST-TIME SEARCH: critic-guided steps vs self-consistency at equal solver tokens
  critics = {"final_critic": params["critic"], "round0_critic": history[0]["critic"]}
  search = results.get("search", lambda: compare_search(lm, base_params, lms["critic"], critics, task, config, mesh))

  # REPORT
  writer.close()
  rounds = {f"round{r}": results.results[f"round{r}"] for r in range(g.rounds + 1)}
  print(format_table(rounds, TABLE_KEYS))
  sc = search["self_consistency"]
  print(f"held-out steps: {rounds['round0']['num_labelled_steps']} labelled, of {len(heldout)} solutions "
        f"({cut} cut off, left out); critic-guided search on {search['num_problems']} problems: "
        f"final critic {search['final_critic']['acc']:.1%} ({search['final_critic']['tokens']:.0f} solver tokens), "
        f"round-0 critic {search['round0_critic']['acc']:.1%}, self-consistency of {sc['votes']} "
        f"({sc['tokens']:.0f} tokens) {sc['acc']:.1%}, one sample {search['single_sample']['acc']:.1%}")
  if jax.process_index() == 0 and read_jsonl(writer.path):
    plot_curves(writer.path, os.path.join(workdir, "curves.png"), {
        "held-out critic": ("eval_harmonic_mean", "eval_first_error_f1", "eval_dev_harmonic_mean"),
        "sneaky success": ("eval_sneaky_vs_round0", "eval_sneaky_vs_own_critic"),
        "games": ("critic_wins", "generator_wins", "validated"),
        "loss": ("loss", "kl")})
  return results.results
