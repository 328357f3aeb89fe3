"""Variants x grid points x seeds of any experiment, side by side: one table, mean and std over seeds.

  python -m scorejax.sweep --config=configs/arith_score.py --workdir=/tmp/sweep --variants=all --seeds=0,1,2
  python -m scorejax.sweep --config=configs/arith_spc.py --workdir=/tmp/spc_grid \\
      --grid=game.balance=true,false --seeds=0,1
  python -m scorejax.sweep --config=configs/arith_deepcritic.py --workdir=/tmp/dc --seeds=0,1,2 --emit

Each point (variant, grid point, seed) is an ordinary main-job run in
WORKDIR/<variant>[/<key=value,...>]/seed<S>, so rerunning the sweep resumes
a partly finished one and skips finished runs. Variants are the config's
`name:arg` variants (its VARIANTS); the config itself is named after its
experiment ("score", "deepcritic", "spc", "critique_loop"), the default;
`--variants=all` takes it and every variant. `--grid=KEY=V1,V2` (repeatable)
crosses config overrides. `--emit` prints one `python -m scorejax.main`
command per point (for a cluster or a set of TPU VMs) and runs nothing;
`--collect` then builds the table from the points' workdirs once they have
finished (WORKDIR may be a gs:// path every machine writes to).

The table's rows come from each run's eval.json through its experiment's
`sweep_rows` (SCoRe: the final model, and its best-training-reward Stage II
checkpoint as "<variant> (best)"; DeepCritic: the RL critic; SPC: the last
round's critic; critique-in-the-loop: the last iteration). SCoRe runs of one
seed share their base policy: the first run trains it and the others start
from a copy of its checkpoint, and a variant differing from the first run
only in Stage II's keys (or the inference-time evaluation's) also starts from
a copy of its Stage I (`shared_phases`). Emitted commands share nothing.

Writes WORKDIR/table.json, table.md and table.png and prints the table.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import shlex
import subprocess
import sys

import numpy as np
from absl import app, flags

from scorejax import files
from scorejax.config_blocks import config_module, load_config
from scorejax.phases import flatten

_CONFIG = flags.DEFINE_string("config", "configs/arith_score.py", "Config file of the main job.")
_VARIANTS = flags.DEFINE_list("variants", [], "Config variants ('all': every one); default: the config itself.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds, one run per point and seed.")
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: one point per value, crossed with the others.")
_EXTRA = flags.DEFINE_string("extra", "", "Variant parts added to every run, e.g. 'smoke'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE passed to every run.")
_EMIT = flags.DEFINE_bool("emit", False, "Print one main-job command per point instead of running them.")
_COLLECT = flags.DEFINE_bool("collect", False, "Run nothing: build the table from the points' finished workdirs "
                             "(after running the emitted commands elsewhere, e.g. launch/tpu_sweep.sh).")


# ----------------------------------------------------------------------------
# Points
# ----------------------------------------------------------------------------


def default_variant(config_path: str) -> str:
  """The config itself, named after its experiment."""
  return load_config(config_path).experiment


def variants(config_path: str, asked: list[str], default: str | None = None) -> list[str]:
  """The variants a sweep runs: `asked`, or the default, or with "all" the default and every VARIANTS key."""
  default = default or default_variant(config_path)
  if not asked:
    return [default]
  known = [default, *getattr(config_module(config_path), "VARIANTS", {})]
  if asked == ["all"]:
    return known
  unknown = [v for v in asked if v not in known]
  if unknown:
    raise app.UsageError(f"{config_path}: no variant {', '.join(unknown)}; its variants: {', '.join(known)}")
  return asked


def config_arg(config: str, variant: str, extra: str, default: str = "score") -> str:
  parts = [p for p in ([] if variant == default else [variant]) + extra.split(",") if p]
  return config + (":" + ",".join(parts) if parts else "")


def grid_points(grid: list[str]) -> list[tuple[tuple[str, str], ...]]:
  """Every combination of the --grid values: ((key, value), ...) per point; one empty point without a grid."""
  axes = []
  for spec in grid:
    key, sep, values = spec.partition("=")
    if not sep or not key or not values:
      raise app.UsageError(f"--grid={spec!r}: expected KEY=V1,V2,...")
    axes.append([(key, v) for v in values.split(",")])
  return list(itertools.product(*axes))


def point_name(point) -> str:
  return ",".join(f"{k}={v}" for k, v in point)


def point_workdir(root: str, variant: str, point, seed: str) -> str:
  return os.path.join(root, variant, *([point_name(point)] if point else []), f"seed{seed}")


def main_command(config_arg_: str, workdir: str, seed: str, overrides: list[str], point) -> list[str]:
  return [sys.executable, "-m", "scorejax.main", f"--config={config_arg_}", f"--workdir={workdir}",
          f"--config.seed={seed}", *overrides, *[f"--config.{k}={v}" for k, v in point]]


def share_phases(src_workdir: str, dst_workdir: str, phases) -> None:
  """Starts a run from another run's finished phases (their checkpoints, best-reward ones included)."""
  for phase in phases:
    for name in (phase, f"{phase}_best"):
      src = os.path.join(src_workdir, "checkpoints", name)
      dst = os.path.join(dst_workdir, "checkpoints", name)
      if files.isdir(src) and not files.exists(dst):
        files.copytree(src, dst)


# Keys that only Stage II and the final evaluations read: a variant differing from the first run in these
# alone trained the same Stage I.
AFTER_STAGE1 = ("stage2.", "inference.")


def shared_phases(first_arg: str, variant_arg: str) -> tuple[str, ...]:
  """SCoRe: the phases a run copies from the first run of its seed: the base, and Stage I when nothing
  Stage I reads differs (overrides apply to every run alike, so the configs are compared without them)."""
  first, other = flatten(load_config(first_arg).to_dict()), flatten(load_config(variant_arg).to_dict())
  differing = {k for k in set(first) | set(other) if first.get(k) != other.get(k)}
  return ("base", "stage1") if all(k.startswith(AFTER_STAGE1) for k in differing) else ("base",)


# ----------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------


def summarize(rows: dict[str, list[dict]], metrics) -> dict:
  """{row: {metric: {"mean", "std", "values"}}} over seeds; a metric a run left undefined (None) is
  left out of its mean, and is None where no run defined it."""
  out = {}
  for name, runs in rows.items():
    out[name] = {}
    for m in metrics:
      values = [r.get(m) for r in runs]
      defined = [v for v in values if v is not None]
      out[name][m] = {"mean": float(np.mean(defined)) if defined else None,
                      "std": float(np.std(defined)) if defined else None, "values": values}
  return out


def markdown(table: dict, seeds: list[str], metrics) -> str:
  cell = lambda t: "-" if t["mean"] is None else f"{100 * t['mean']:.1f} ± {100 * t['std']:.1f}"
  head = "| variant | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics)
  lines = [f"| {v} | " + " | ".join(cell(t[m]) for m in metrics) + " |" for v, t in table.items()]
  return (f"Each run's final model, %, mean ± std over seeds {','.join(seeds)}\n\n"
          + "\n".join([head, *lines]) + "\n")


def plot(table: dict, metrics, path: str) -> None:
  """Grouped bars: one group per metric, one bar per row, the std over seeds as error bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(table)
  width = 0.8 / max(1, len(names))
  fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 0.4 * len(names)), 4))
  for i, name in enumerate(names):
    means = [100 * (table[name][m]["mean"] or 0.0) for m in metrics]
    stds = [100 * (table[name][m]["std"] or 0.0) for m in metrics]
    ax.bar(np.arange(len(metrics)) + i * width, means, width, yerr=stds, capsize=2, label=name)
  ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
  ax.set_ylabel("% (mean ± std over seeds)")
  ax.axhline(0, color="black", linewidth=0.5)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  files.save_figure(fig, path, dpi=120)
  plt.close(fig)


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  root, config = _WORKDIR.value, _CONFIG.value
  experiment_name = default_variant(config)
  experiment = importlib.import_module(f"scorejax.experiments.{experiment_name}")
  names, points = variants(config, _VARIANTS.value, experiment_name), grid_points(_GRID.value)
  if _EMIT.value:
    for seed, variant, point in itertools.product(_SEEDS.value, names, points):
      arg = config_arg(config, variant, _EXTRA.value, experiment_name)
      print(shlex.join(main_command(arg, point_workdir(root, variant, point, seed), seed, _OVERRIDES.value, point)))
    return
  rows: dict[str, list[dict]] = {}
  for seed, point in itertools.product(_SEEDS.value, points):
    first = first_arg = None
    for variant in names:
      workdir = point_workdir(root, variant, point, seed)
      arg = config_arg(config, variant, _EXTRA.value, experiment_name)
      if _COLLECT.value:
        if not files.exists(os.path.join(workdir, "eval.json")):
          raise app.UsageError(f"--collect: {workdir}/eval.json does not exist (that point has not run yet)")
      else:
        if first is not None and experiment_name == "score":
          share_phases(first, workdir, shared_phases(first_arg, arg))
        cmd = main_command(arg, workdir, seed, _OVERRIDES.value, point)
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        first, first_arg = first or workdir, first_arg or arg
      results = json.loads(files.read_text(os.path.join(workdir, "eval.json")))
      label = " ".join(p for p in (variant, point_name(point)) if p)
      try:
        point_rows = experiment.sweep_rows(results)
      except (KeyError, ValueError) as e:  # a run still going has only its first evaluations
        raise app.UsageError(f"{workdir}/eval.json lacks the finished run's results ({e}): has it ended?") from e
      for suffix, row in point_rows.items():
        rows.setdefault(label + suffix, []).append(row)
  table = summarize(rows, experiment.SWEEP_METRICS)
  files.makedirs(root)
  files.write_text(os.path.join(root, "table.json"), json.dumps(table, indent=2))
  text = markdown(table, _SEEDS.value, experiment.SWEEP_METRICS)
  files.write_text(os.path.join(root, "table.md"), text)
  plot(table, experiment.SWEEP_METRICS, os.path.join(root, "table.png"))
  print(text)


if __name__ == "__main__":
  app.run(main)
