"""Score saved predictions with the papers' metrics; prints one JSON object.

    python -m scorejax.evaluate processbench --predictions=FILE.jsonl
    python -m scorejax.evaluate score --attempts=FILE.jsonl
    python -m scorejax.evaluate critic --hf_dir=DIR --processbench=FILE.jsonl [--maj_k=8]
    python -m scorejax.evaluate code --tasks=TASKS.jsonl --completions=FILE.jsonl [--timeout_s=10]

processbench: each record has `label` (0-indexed earliest wrong step, -1 when
none), `prediction` (an integer, or null for an unparseable critique; a list
of k of them is reduced by Maj@k) and optionally `subset` or `data_type`
(default "all"). Prints {"subsets": {name: {"acc_err", "acc_corr", "f1",
"n_err", "n_corr", "n_invalid"}}, "mean_f1"}.

score: each record has booleans `correct_t1` and `correct_t2`. Prints
{"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "n"}.

critic: runs an HF critic (any checkpoint scorejax loads, with its
tokenizer) over ProcessBench-format records (id, problem, steps, label[,
generator, subset]; `tasks/processbench.py`): the DeepCritic prompt (steps
numbered from 1; `--templates=math` for ProcessBench's own, indexed from 0)
through the tokenizer's chat template, one greedy critique each, the index in
its last \boxed{} (anything else is invalid and wrong). Prints the metrics
above plus "invalid"; with --maj_k=K also K sampled critiques each
("maj1_mean_f1": the mean over the K samples, "majk_mean_f1": their Maj@K,
samples without a judgement discarded first).

code: runs each completion (`task_id`, `completion`: a reply with a ```python
block, or bare code) against its task's tests in the sandbox
(`scorejax/sandbox.py`). TASKS is MBPP (task_id, text or prompt, test_list[,
test_setup_code]) or HumanEval (task_id, prompt, test, entry_point) JSONL;
MBPP's integer ids match "mbpp/<id>" too. Prints {"pass_rate", "n",
"reasons": {reason: count}, "sandbox": the isolation used, "completions":
[{"task_id", "passed"[, "reason", "detail"]}]}, the reason (timeout, memory,
error, failed, syntax, forbidden, output_limit, crashed) for each that failed.

Rates are fractions in [0, 1]; an undefined rate (no sample of that kind) is
null. A malformed record stops the command with its file and line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

from scorejax import evaluation
from scorejax.tasks.records import RecordError, field, iter_records

DEFAULT_SUBSET = "all"


def _prediction(record: dict, where: str):
  if "prediction" not in record:
    raise RecordError(f"{where}: missing field 'prediction' (an integer, null, or a list)")
  value = record["prediction"]
  if value is None or (isinstance(value, int) and not isinstance(value, bool)):
    return value
  if isinstance(value, list) and all(
      v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value
  ):
    return evaluation.majority_vote(value)
  raise RecordError(
      f"{where}: field 'prediction' must be an integer, null, or a list of them, got {value!r:.80}"
  )


def processbench_from_file(path: str) -> dict:
  subsets, labels, predictions = [], [], []
  for where, record in iter_records(path):
    label = field(record, "label", int, where)
    if label < -1:
      raise RecordError(f"{where}: field 'label' must be -1 or a 0-indexed step, got {label}")
    subset = field(record, "subset", str, where, optional=True)
    if subset is None:
      subset = field(record, "data_type", str, where, optional=True) or DEFAULT_SUBSET
    labels.append(label)
    predictions.append(_prediction(record, where))
    subsets.append(subset)
  if not labels:
    raise RecordError(f"{path}: no records")
  return evaluation.processbench_metrics(subsets, labels, predictions)


def score_from_file(path: str) -> dict:
  t1, t2 = [], []
  for where, record in iter_records(path):
    t1.append(field(record, "correct_t1", bool, where))
    t2.append(field(record, "correct_t2", bool, where))
  if not t1:
    raise RecordError(f"{path}: no records")
  return {**evaluation.score_metrics(t1, t2), "n": len(t1)}


def critic_on_processbench(hf_dir: str, path: str, maj_k: int = 1, templates_name: str = "deepcritic",
                           max_new_tokens: int = 1024, temperature: float = 0.7, top_p: float = 1.0,
                           batch_size: int = 16, seed: int = 0) -> dict:
  """ProcessBench metrics of an HF critic's critiques of the records in `path`."""
  import jax
  import numpy as np

  from scorejax.models import hf
  from scorejax.rollouts import sample_batched
  from scorejax.sampling import Greedy, Sample, SamplerConfig
  from scorejax.tasks import processbench, templates
  from scorejax.tokenizers import HFTokenizer, plain_concatenation

  records = list(processbench.read_processbench(path))
  if not records:
    raise RecordError(f"{path}: no records")
  if maj_k < 1:
    raise ValueError(f"--maj_k={maj_k}: need at least one critique per solution")
  ts = templates.get_templates(templates_name)
  tokenizer = HFTokenizer(hf_dir)
  lm, params = hf.load_hf(hf_dir)
  render = (lambda m: tokenizer.apply_chat_template(m, True)) if tokenizer.has_chat_template else plain_concatenation
  prompts = [tokenizer.encode(render(templates.critique_messages(ts, r.problem, r.steps))) for r in records]
  model_eos = lm.config.eos_token_id
  model_eos = () if model_eos is None else (model_eos,) if isinstance(model_eos, int) else tuple(model_eos)
  stops = tuple(dict.fromkeys((tokenizer.eos_id, *model_eos)))
  pad = tokenizer.pad_id if tokenizer.pad_id < lm.config.vocab_size else 0
  sampler = SamplerConfig(max_new_tokens=max_new_tokens, stop_tokens=stops, pad_id=pad)

  def predictions(rule, n):
    ids, _ = sample_batched(lm, params, prompts, jax.random.key(seed), rule, sampler, None, pad_id=pad,
                            batch_size=batch_size, n=n)
    out = [templates.parse_critique_index(tokenizer.decode(t, skip_special_tokens=True),
                                          len(records[r // n].steps), ts.critique_first_index)
           for r, t in enumerate(ids)]
    return [None if templates.is_invalid(p) else p for p in out]

  subsets, labels = [r.subset for r in records], [r.label for r in records]
  greedy = predictions(Greedy(), 1)
  result = dict(evaluation.processbench_metrics(subsets, labels, greedy),
                invalid=sum(p is None for p in greedy) / len(greedy), n=len(records))
  if maj_k > 1:
    sampled = predictions(Sample(temperature=temperature, top_p=top_p), maj_k)
    per_item = [sampled[i * maj_k:(i + 1) * maj_k] for i in range(len(records))]
    singles = [evaluation.processbench_metrics(subsets, labels, [row[j] for row in per_item])["mean_f1"]
               for j in range(maj_k)]
    singles = [f for f in singles if f is not None]
    majority = evaluation.processbench_metrics(subsets, labels, evaluation.maj_at_k(per_item))
    result.update(maj_k=maj_k, maj1_mean_f1=float(np.mean(singles)) if singles else None,
                  majk_mean_f1=majority["mean_f1"], majk_subsets=majority["subsets"],
                  sampled_invalid=sum(p is None for p in sampled) / len(sampled))
  return result


def code_from_files(tasks_path: str, completions_path: str, timeout_s: float = 10.0, isolation: str = "auto",
                    workers: int = 0) -> dict:
  from scorejax import sandbox
  from scorejax.tasks import code

  problems = {p.id: p for p in code.read_code_problems(tasks_path)}
  rows = code.read_completions(completions_path, problems)
  box = sandbox.Sandbox(sandbox.SandboxConfig(timeout_s=timeout_s, isolation=isolation, workers=workers))
  outcomes = box.run_many([code.program(p, completion) for p, completion in rows])
  per_row = [{"task_id": p.id, "passed": o.passed} if o.passed else
             {"task_id": p.id, "passed": False, "reason": o.reason, "detail": o.detail}
             for (p, _), o in zip(rows, outcomes)]
  reasons = dict(collections.Counter(o.reason for o in outcomes))
  return {"pass_rate": sum(o.passed for o in outcomes) / len(outcomes), "n": len(outcomes), "reasons": reasons,
          "sandbox": box.description, "completions": per_row}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m scorejax.evaluate",
      description="Score saved predictions with the papers' metrics.",
  )
  commands = parser.add_subparsers(dest="command", required=True)
  pb = commands.add_parser("processbench", help="ProcessBench acc_err / acc_corr / F1")
  pb.add_argument("--predictions", required=True, help="JSONL with label, prediction[, subset]")
  sc = commands.add_parser("score", help="SCoRe Acc@t1 / Acc@t2 / Delta")
  sc.add_argument("--attempts", required=True, help="JSONL with correct_t1, correct_t2")
  cr = commands.add_parser("critic", help="run an HF critic over ProcessBench records, print the metrics")
  cr.add_argument("--hf_dir", required=True, help="HF checkpoint directory with its tokenizer")
  cr.add_argument("--processbench", required=True, help="ProcessBench-format .jsonl / .json / .parquet")
  cr.add_argument("--maj_k", type=int, default=1, help="sampled critiques per solution for Maj@k (1: greedy only)")
  cr.add_argument("--templates", default="deepcritic", help="prompt set: deepcritic (steps from 1) or math (from 0)")
  cr.add_argument("--max_new_tokens", type=int, default=1024)
  cr.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the Maj@k critiques")
  cr.add_argument("--top_p", type=float, default=1.0)
  cr.add_argument("--batch_size", type=int, default=16, help="critiques decoded together")
  cr.add_argument("--seed", type=int, default=0)
  co = commands.add_parser("code", help="run completions against their tasks' tests in the sandbox")
  co.add_argument("--tasks", required=True, help="MBPP or HumanEval JSONL")
  co.add_argument("--completions", required=True, help="JSONL with task_id, completion")
  co.add_argument("--timeout_s", type=float, default=10.0, help="wall clock per program and its tests")
  co.add_argument("--isolation", default="auto", help="auto, bwrap, unshare or rlimits (scorejax/sandbox.py)")
  co.add_argument("--workers", type=int, default=0, help="programs run at once; 0: one per CPU")
  args = parser.parse_args(argv)
  try:
    if args.command == "processbench":
      result = processbench_from_file(args.predictions)
    elif args.command == "code":
      result = code_from_files(args.tasks, args.completions, args.timeout_s, args.isolation, args.workers)
    elif args.command == "critic":
      result = critic_on_processbench(args.hf_dir, args.processbench, args.maj_k, args.templates,
                                      args.max_new_tokens, args.temperature, args.top_p, args.batch_size, args.seed)
    else:
      result = score_from_file(args.attempts)
  except (RecordError, OSError, ValueError) as e:  # OSError: a missing file, a sandbox that cannot run
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
