"""Critic-guided step-level search, and self-consistency at the same number of sampled tokens.

SPC's test-time use (Chen et al., arXiv 2504.19162): the solver writes one
step at a time; a step critic judges it given the problem and the steps
before it; a step judged Incorrect is sampled again, up to `retries` times
(5 in the paper), after which the last sample stands. A verdict that cannot
be read does not reject the step. Every problem advances one step per pass,
all of them in one batch.

Self-consistency is the peer: k whole solutions sampled at the same
temperature, the most frequent final answer taken, with k set so that it
samples as many solver tokens as the search did (`votes_at_tokens`).

The SPC experiment runs this comparison as its last step (eval.json
"search"); on a finished SPC workdir, with any round's critic:

  python -m scorejax.search --workdir=DIR [--round=R] [--problems=N]
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags

from scorejax import evaluation, files, parallel
from scorejax.experiments.spc_data import StepItem
from scorejax.rewards.answers import normalize_answer
from scorejax.rewards.game import Verdict
from scorejax.rollouts import sample_batched
from scorejax.sampling import Buckets, Sample, SamplerConfig
from scorejax.tasks import templates


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  retries: int = 5  # resamples of a step judged Incorrect
  temperature: float = 1.0  # the solver's sampling temperature (search and self-consistency alike)
  max_steps: int = 8  # steps written at most
  step_tokens: int = 24  # budget of one step
  solution_tokens: int = 48  # budget of one whole solution (self-consistency)
  batch_size: int = 400  # rows decoded together


@dataclasses.dataclass(frozen=True)
class SearchResult:
  rewards: np.ndarray  # float [P]: each problem's final answer right (1) or not
  solver_tokens: np.ndarray  # int [P]: solver tokens sampled, rejected steps included
  judged_steps: int  # critic calls
  rejected_steps: int  # steps judged Incorrect (each resampled, or kept once out of retries)


def _padded(rows: list, batch_size: int) -> list:
  """`rows` padded (with copies of the first) to a bucketed count: each pass of the search has fewer rows
  pending than the last, and a new count would compile the sampler anew."""
  n = len(rows)
  size = Buckets()(n) if n <= batch_size else -(-n // batch_size) * batch_size
  return rows + rows[:1] * (size - n)


def step_search(lm, params, task, problems: Sequence, judge: Callable[[list], Sequence[Verdict]], key: jax.Array,
                config: SearchConfig, mesh) -> SearchResult:
  """Critic-guided search for each problem. `judge(items)` returns a Verdict per spc_data.StepItem."""
  stops = getattr(task, "step_stop_ids", None)
  if stops is None:
    raise ValueError(f"{type(task).__name__} has no step_stop_ids: step-level search needs the tokens that end "
                     "a step (the built-in task's newline, a paragraph break on real data)")
  sampler = SamplerConfig(max_new_tokens=config.step_tokens, stop_tokens=stops, pad_id=task.tokenizer.pad_id)
  step_ends = {t for t in stops if t not in task.stop_ids}  # the rest end the whole solution
  rule = Sample(temperature=config.temperature)
  steps = [[] for _ in problems]
  done = np.zeros(len(problems), bool)
  tokens = np.zeros(len(problems), np.int64)
  judged = rejected = 0
  for position in range(config.max_steps):
    pending = [i for i in range(len(problems)) if not done[i]]
    lines = {}
    for attempt in range(config.retries + 1):
      if not pending:
        break
      prompts = [task.prompt_ids(problems[i]) + task.prefix_ids(steps[i]) for i in pending]
      ids, _ = sample_batched(lm, params, _padded(prompts, config.batch_size),
                              jax.random.fold_in(jax.random.fold_in(key, position), attempt), rule, sampler, mesh,
                              pad_id=task.tokenizer.pad_id, batch_size=config.batch_size)
      for i, row in zip(pending, ids):
        lines[i] = row
        tokens[i] += len(row)
      if attempt == config.retries:
        break
      items = [StepItem(problems[i], tuple(steps[i]), task.text(lines[i]).strip(), None) for i in pending]
      verdicts = judge(_padded(items, config.batch_size))[:len(items)]
      judged += len(pending)
      pending = [i for i, v in zip(pending, verdicts) if v == Verdict.INCORRECT]
      rejected += len(pending)
    for i, row in lines.items():
      line = task.text(row).strip()
      if line:
        steps[i].append(line)
      ended = not row or row[-1] not in step_ends  # the solution's end, or out of budget mid-step
      done[i] = ended or not line or task.is_complete(steps[i])
  rewards = np.array([task.reward(p, task.prefix_ids(s)) for p, s in zip(problems, steps)], np.float64)
  return SearchResult(rewards, tokens, judged, rejected)


def final_answer(task, ids):
  """The answer a sample states, as a vote (None: none stated)."""
  value = templates.parse_final_answer(task.text(ids), task.templates.answer_kind)
  if templates.is_invalid(value):
    return None
  return normalize_answer(value) if isinstance(value, str) else value


def voted_reward(task, problem, group) -> float:
  """The reward of a group of samples' majority answer (0 when none states one): self-consistency's score."""
  stated = [final_answer(task, ids) for ids in group]
  voted = evaluation.majority_vote(stated)
  return 0.0 if voted is None else task.reward(problem, group[stated.index(voted)])


def self_consistency(lm, params, task, problems: Sequence, votes: int, key: jax.Array, config: SearchConfig,
                     mesh) -> dict:
  """`votes` sampled solutions per problem, majority vote on the final answer; accuracy and tokens per problem."""
  sampler = SamplerConfig(max_new_tokens=config.solution_tokens, stop_tokens=task.stop_ids,
                          pad_id=task.tokenizer.pad_id)
  ids, _ = sample_batched(lm, params, [task.prompt_ids(p) for p in problems], key,
                          Sample(temperature=config.temperature), sampler, mesh, pad_id=task.tokenizer.pad_id,
                          batch_size=config.batch_size, n=votes)
  rewards, single = [], []
  for i, p in enumerate(problems):
    group = ids[i * votes:(i + 1) * votes]
    rewards.append(voted_reward(task, p, group))
    single.append(np.mean([task.reward(p, g) for g in group]))
  return {"votes": votes, "acc": float(np.mean(rewards)), "acc_single_sample": float(np.mean(single)),
          "tokens": float(np.mean([len(g) for g in ids]) * votes)}


def votes_at_tokens(search_tokens: float, tokens_per_solution: float) -> int:
  """Self-consistency's k at the search's token budget (at least 1)."""
  return max(1, round(search_tokens / max(tokens_per_solution, 1e-9)))


# ----------------------------------------------------------------------------
# Command line: the comparison on a finished SPC run
# ----------------------------------------------------------------------------

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  from scorejax.experiments import spc  # spc imports this module
  from scorejax.metrics import read_json, write_json
  from scorejax.models.build import build_model
  from scorejax.phases import CONFIG_FILE, PhaseRunner
  from scorejax.tasks.base import make_task
  from scorejax.train_step import OptimizerConfig
  workdir = FLAGS.workdir
  path = os.path.join(workdir, CONFIG_FILE)
  if not files.isfile(path):
    raise app.UsageError(f"{path} does not exist: --workdir must be an SPC run's workdir")
  config = ml_collections.ConfigDict(read_json(path))
  if config.experiment != "spc":
    raise app.UsageError(f"{path}: experiment {config.experiment!r}; the step search needs an SPC run's critic")
  r = config.game.rounds if FLAGS.round is None else FLAGS.round
  if FLAGS.problems:
    config.eval.search_problems = FLAGS.problems
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config)
  task = make_task(config.task)
  lm, params = build_model(config.model, task.tokenizer, mesh, config.seed, rules)
  if config.roles.critic.hf_dir:
    raise app.UsageError("a critic with its own checkpoint (roles.critic.hf_dir) is not supported here yet")
  runner = PhaseRunner(config, workdir, lm, mesh, writer=None, rules=rules)
  structure = OptimizerConfig(grad_clip_norm=1.0)  # every SPC phase clips gradients

  def critic_of(k):  # a round whose critic had no records kept the one before
    for j in range(k, 0, -1):
      if files.isdir(os.path.join(workdir, "checkpoints", f"round{j}", "critic")):
        return runner.finished_params(f"round{j}/critic", structure, params)
    return runner.finished_params("round0/critic", structure, params)

  base = runner.finished_params("generator", structure, params)
  critics = {f"round{r}_critic": critic_of(r), "round0_critic": critic_of(0)}
  out = spc.compare_search(lm, base, lm, critics, task, config, mesh)
  write_json(os.path.join(workdir, f"search_round{r}.json"), out)
  print(json.dumps(out, indent=1))


FLAGS = flags.FLAGS

if __name__ == "__main__":  # defined here only: the experiments import this module under main's flags
  flags.DEFINE_string("workdir", None, "A finished SPC run's workdir.")
  flags.DEFINE_integer("round", None, "The critic's round (default: the run's last); compared with round 0's.")
  flags.DEFINE_integer("problems", None, "Eval problems to search on (default: the run's eval.search_problems).")
  app.run(main)
