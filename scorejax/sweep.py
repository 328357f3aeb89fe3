"""Baselines and ablations side by side: one table, mean and std over seeds.

  python -m scorejax.sweep --config=configs/arith_score.py --workdir=/tmp/sweep --seeds=0,1,2

Each (variant, seed) is an ordinary main-job run in WORKDIR/<variant>/seed<S>
(so rerunning the sweep resumes, and finished runs are not repeated). Runs of
one seed share their base policy: the first run trains it and the others start
from a copy of its base checkpoint, since the base phase does not depend on
the variant. A variant whose config differs from the first run's only in
Stage II's keys (or the inference-time evaluation's) also starts from a copy
of its Stage I (`shared_phases`): it is the same run up to there. Every run is
evaluated on the same held-out problems; the table reports each run's final
model (after stage2) and, in a row of its own ("<variant> (best)"), its
best-training-reward Stage II checkpoint where the run kept one (RL methods on
their own episodes).

Writes WORKDIR/table.json and WORKDIR/table.md and prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from absl import app, flags

from scorejax.phases import flatten

_CONFIG = flags.DEFINE_string("config", "configs/arith_score.py", "Config file of the main job.")
_VARIANTS = flags.DEFINE_list("variants", ["score", "self_refine", "star", "star_i2c", "pair_sft", "single_turn",
                                           "no_stage1", "no_shaping", "credit_return"],
                              "Config variants; 'score' is the config itself.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, one run per variant and seed.")
_EXTRA = flags.DEFINE_string("extra", "", "Variant parts added to every run, e.g. 'smoke'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE passed to every run.")

METRICS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")


def config_arg(config: str, variant: str, extra: str) -> str:
  parts = [p for p in ([] if variant == "score" else [variant]) + extra.split(",") if p]
  return config + (":" + ",".join(parts) if parts else "")


def run_one(config: str, workdir: str, seed: str, overrides: list[str]) -> None:
  cmd = [sys.executable, "-m", "scorejax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.seed={seed}", *overrides]
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)


def share_phases(src_workdir: str, dst_workdir: str, phases) -> None:
  """Starts a run from another run's finished phases (their checkpoints, best-reward ones included)."""
  for phase in phases:
    for name in (phase, f"{phase}_best"):
      src = os.path.join(src_workdir, "checkpoints", name)
      dst = os.path.join(dst_workdir, "checkpoints", name)
      if os.path.isdir(src) and not os.path.exists(dst):
        shutil.copytree(src, dst)


# Keys that only Stage II and the final evaluations read: a variant differing from the first run in these
# alone trained the same Stage I.
AFTER_STAGE1 = ("stage2.", "inference.")


def load_config(config_arg: str):
  """The ConfigDict `python -m scorejax.main --config=config_arg` starts from (before any override)."""
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def shared_phases(first_arg: str, variant_arg: str) -> tuple[str, ...]:
  """The phases a run copies from the first run of its seed: the base, and Stage I when nothing Stage I
  reads differs (overrides apply to every run alike, so the configs are compared without them)."""
  first, other = flatten(load_config(first_arg).to_dict()), flatten(load_config(variant_arg).to_dict())
  differing = {k for k in set(first) | set(other) if first.get(k) != other.get(k)}
  return ("base", "stage1") if all(k.startswith(AFTER_STAGE1) for k in differing) else ("base",)


def summarize(finals: dict[str, list[dict]]) -> dict:
  """{variant: {metric: {"mean", "std", "values"}}} from each run's final eval row."""
  out = {}
  for variant, rows in finals.items():
    out[variant] = {m: {"mean": float(np.mean([r[m] for r in rows])),
                        "std": float(np.std([r[m] for r in rows])),
                        "values": [r[m] for r in rows]} for m in METRICS}
  return out


def markdown(table: dict, seeds: list[str]) -> str:
  head = "| variant | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS)
  rows = [f"| {v} | " + " | ".join(f"{100 * t[m]['mean']:.1f} ± {100 * t[m]['std']:.1f}" for m in METRICS) + " |"
          for v, t in table.items()]
  return (f"Final model of each run, % of held-out problems, mean ± std over seeds {','.join(seeds)}\n\n"
          + "\n".join([head, *rows]) + "\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  root = _WORKDIR.value
  finals: dict[str, list[dict]] = {}
  for seed in _SEEDS.value:
    first = first_arg = None
    for variant in _VARIANTS.value:
      workdir = os.path.join(root, variant, f"seed{seed}")
      arg = config_arg(_CONFIG.value, variant, _EXTRA.value)
      if first is not None:
        share_phases(first, workdir, shared_phases(first_arg, arg))
      run_one(arg, workdir, seed, _OVERRIDES.value)
      first, first_arg = first or workdir, first_arg or arg
      with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
      finals.setdefault(variant, []).append(results["stage2"])
      if "stage2_best" in results:
        finals.setdefault(f"{variant} (best)", []).append(results["stage2_best"])
  table = summarize(finals)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "table.json"), "w") as f:
    json.dump(table, f, indent=2)
  text = markdown(table, _SEEDS.value)
  with open(os.path.join(root, "table.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
