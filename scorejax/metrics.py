"""Where a run's numbers go: metrics.jsonl, TensorBoard events, eval tables and plots."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from scorejax import files


def _scalar(value) -> float | int | None:
  value = np.asarray(jax.device_get(value))
  if value.size != 1:
    return None
  value = value.item()
  return value if isinstance(value, (int, float)) else float(value)


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and mirrors scalars to TensorBoard.

  Only process 0 writes. Steps are global across phases (`phase` names the
  stage), so one file holds the whole run's curves. In a remote workdir
  (gs://), where a file cannot be appended to, records are written out at most
  every `remote_flush_s` seconds, at every checkpoint (`flush`) and at `close`.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, remote_flush_s: float = 60.0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._pending: list[str] = []
    self._flush_every = remote_flush_s if files.is_remote(workdir) else 0.0
    self._flushed_at = time.monotonic()
    if self.enabled:
      files.makedirs(workdir)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, phase: str, metrics: Mapping[str, Any]) -> dict:
    record = {"step": int(step), "phase": phase}
    for key, value in metrics.items():
      scalar = _scalar(value)
      if scalar is not None and not (isinstance(scalar, float) and math.isnan(scalar)):
        record[key] = scalar
    if self.enabled:
      self._pending.append(json.dumps(record) + "\n")
      if time.monotonic() - self._flushed_at >= self._flush_every:
        self.flush()
      if self._tb is not None:
        for key, value in record.items():
          if key not in ("step", "phase"):
            self._tb.add_scalar(f"{phase}/{key}", value, step)
    return record

  def flush(self):
    """Writes the records not yet in metrics.jsonl."""
    if self._pending:
      files.append_text(self.path, "".join(self._pending))
      self._pending = []
    self._flushed_at = time.monotonic()

  def close(self):
    if self.enabled:
      self.flush()
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str) -> list[dict]:
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


def read_json(path: str) -> dict:
  """A JSON file's object, or {} when the file does not exist yet."""
  if not files.exists(path):
    return {}
  return json.loads(files.read_text(path))


def truncate_after(path: str, phase: str, step: int) -> None:
  """Drops records of `phase` logged after `step`: a resumed run rewrites them identically."""
  records = read_jsonl(path)
  kept = [r for r in records if not (r.get("phase") == phase and r["step"] > step)]
  if len(kept) != len(records):
    files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def write_json(path: str, obj: Any) -> None:
  """Writes atomically: a reader never sees half a file."""
  if jax.process_index() != 0:
    return
  files.write_text(path, json.dumps(obj, indent=2))


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
  """A fixed-width text table, one row per name, values as percentages."""
  widths = [max(11, len(c) + 2) for c in columns]
  head = f"{'':<22}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))
  lines = [head]
  for name, values in rows.items():
    cells = "".join(f"{100 * values[c]:>{w - 1}.1f}%" if values.get(c) is not None else f"{'-':>{w}}"
                    for c, w in zip(columns, widths))
    lines.append(f"{name:<22}{cells}")
  return "\n".join(lines)


def plot_curves(metrics_path: str, out_path: str, panels: Mapping[str, Sequence[str]], *, from_step: int = 0,
                x_label: str = "step", bars: tuple[str, Mapping[str, Mapping[str, float]], Sequence[str]] | None = None,
                phase_starts: Mapping[str, int] | None = None) -> None:
  """One PNG with a panel per entry: title -> metric keys plotted against the global step.

  `from_step`: only records from that global step on, on an axis of their own
  (x = step - from_step, labelled `x_label`), e.g. the RL phases after a long
  SFT phase. `bars`: (title, {row: {metric: value}}, metrics), a last panel
  with one group of bars per row (a results table, in % for fractions).
  `phase_starts`: {phase: global first step} for the phase lines (default: each
  phase's first logged record).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  records = [r for r in read_jsonl(metrics_path) if r["step"] >= from_step]
  n = len(panels) + (bars is not None)
  fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.6), squeeze=False)
  for ax, (title, keys) in zip(axes[0], panels.items()):
    for key in keys:
      points = [(r["step"] - from_step, r[key]) for r in records if key in r]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=key, marker="." if len(points) < 30 else None)
    phases = {}
    for r in records:
      phases.setdefault(r["phase"], r["step"] - from_step)
    if phase_starts is not None:
      phases = {name: start - from_step for name, start in phase_starts.items() if start >= from_step}
    for phase, start in phases.items():
      ax.axvline(start, color="grey", lw=0.5, ls=":")
      ax.text(start, ax.get_ylim()[1], phase, fontsize=7, va="top", rotation=90, color="grey")
    ax.set_title(title)
    ax.set_xlabel(x_label)
    if ax.get_legend_handles_labels()[0]:  # a panel whose metrics were never logged stays empty
      ax.legend(fontsize=7)
  if bars is not None:
    _bar_panel(axes[0][-1], *bars)
  fig.tight_layout()
  files.save_figure(fig, out_path, dpi=100)
  plt.close(fig)


def _bar_panel(ax, title: str, table: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> None:
  """Grouped bars: one group per row of `table`, one bar per key, values in %."""
  rows = list(table)
  width = 0.8 / max(1, len(keys))
  for j, key in enumerate(keys):
    xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(rows))]
    ax.bar(xs, [100 * table[r][key] for r in rows], width, label=key)
  ax.axhline(0, color="black", lw=0.5)
  ax.set_xticks(range(len(rows)), rows, rotation=30, fontsize=7)
  ax.set_ylabel("%")
  ax.set_title(title)
  ax.legend(fontsize=7)
