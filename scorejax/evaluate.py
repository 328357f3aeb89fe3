"""Score saved predictions with the papers' metrics; prints one JSON object.

    python -m scorejax.evaluate processbench --predictions=FILE.jsonl
    python -m scorejax.evaluate score --attempts=FILE.jsonl

processbench: each record has `label` (0-indexed earliest wrong step, -1 when
none), `prediction` (an integer, or null for an unparseable critique; a list
of k of them is reduced by Maj@k) and optionally `subset` or `data_type`
(default "all"). Prints {"subsets": {name: {"acc_err", "acc_corr", "f1",
"n_err", "n_corr", "n_invalid"}}, "mean_f1"}.

score: each record has booleans `correct_t1` and `correct_t2`. Prints
{"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "n"}.

Rates are fractions in [0, 1]; an undefined rate (no sample of that kind) is
null. A malformed record stops the command with its file and line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
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
  args = parser.parse_args(argv)
  try:
    if args.command == "processbench":
      result = processbench_from_file(args.predictions)
    else:
      result = score_from_file(args.attempts)
  except (RecordError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
