"""Named training phases: checkpoints, resume, SIGTERM, metrics and the eval.json cache.

Every method is a sequence of phases ("base", "stage1", "sft", "rl",
"round2/critic", ...), each trained for some steps by `PhaseRunner.run` with
its own checkpoint folder (`checkpoints/<phase>`), so that a rerun of the
same command resumes inside the phase it stopped in and skips the finished
ones. A two-model method runs one phase per role in turn.

  runner = PhaseRunner(config, workdir, lm, mesh, writer, bar_keys=("loss", "reward"))
  params = runner.run("sft", steps, opt, params, loss_fn, make_batch, offsets["sft"])
  results = EvalCache(workdir);  results.get("sft", lambda: evaluate(params))

A workdir belongs to one config: `claim_workdir` saves it (config.json) on
the first run and refuses a rerun whose config differs in any key that can
change the results, naming the keys, so that a resumed run never reports an
old run's numbers as a new one's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from scorejax import files, parallel
from scorejax.checkpoint import CheckpointConfig, Checkpointer, abstract_like
from scorejax.metrics import MetricWriter, read_json, truncate_after, write_json
from scorejax.models import lora
from scorejax.objectives.loss import DROPOUT_SEEDS
from scorejax.tasks.base import stream_id
from scorejax.train_step import (
  OptimizerConfig,
  TrainState,
  init_train_state,
  make_optimizer,
  make_train_step,
)

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
# Keys that change how a run is logged, checkpointed or batched for evaluation, never what it computes:
# a rerun may change them. A prefix ending in "." covers a block.
RESULT_NEUTRAL_KEYS = ("log_every", "tensorboard", "eval.batch_size", "checkpoint.")


class Preempted(Exception):
  """SIGTERM arrived; the state was checkpointed and the run can be resumed."""


class ConfigMismatch(ValueError):
  """A workdir was rerun with a config that would change the results it already holds."""


# ----------------------------------------------------------------------------
# One workdir, one config
# ----------------------------------------------------------------------------


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
  """{"stage1.learning_rate": 1e-4, ...}: a nested config as dotted keys."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _neutral(key: str, extra: Sequence[str]) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in (*RESULT_NEUTRAL_KEYS, *extra))


def config_differences(saved: Mapping, current: Mapping, neutral: Sequence[str] = ()) -> list[str]:
  """'key: saved -> current' for every result-changing key that differs (or exists on one side only)."""
  old, new = flatten(saved), flatten(current)
  show = lambda tree, key: repr(tree[key]) if key in tree else "(absent)"
  return [f"{key}: {show(old, key)} -> {show(new, key)}" for key in sorted(set(old) | set(new))
          if (key not in old or key not in new or old[key] != new[key]) and not _neutral(key, neutral)]


def claim_workdir(workdir: str, config: ml_collections.ConfigDict, neutral: Sequence[str] = ()) -> None:
  """Saves the config in a new workdir; in a used one, refuses a config that would change its results."""
  files.makedirs(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(json.dumps(config.to_dict()))  # tuples as the saved file has them: lists
  if files.exists(path):
    diffs = config_differences(read_json(path), current, neutral)
    if diffs:
      raise ConfigMismatch(
          f"{workdir} holds a run of another config ({path}); rerunning there would resume that run and "
          "report its results as this one's. Differing keys (saved -> now):\n  " + "\n  ".join(diffs)
          + "\nUse a new --workdir, or rerun with the saved values.")
  write_json(path, current)  # neutral keys take their new values


# ----------------------------------------------------------------------------
# Step offsets and the eval.json cache
# ----------------------------------------------------------------------------


def phase_offsets(steps: Iterable[tuple[str, int]]) -> dict[str, tuple[int, int]]:
  """{phase: (first global step, last global step)} for phases run back to back in this order."""
  out, start = {}, 0
  for name, n in steps:
    out[name] = (start, start + n)
    start += n
  return out


class EvalCache:
  """Evaluations of finished phases, kept in workdir/eval.json (or another file) and never recomputed."""

  def __init__(self, workdir: str, filename: str = EVAL_FILE):
    self.path = os.path.join(workdir, filename)
    self.results = read_json(self.path)

  def __contains__(self, name: str) -> bool:
    return name in self.results

  def get(self, name: str, compute: Callable[[], dict]) -> dict:
    """results[name], computed (and saved at once) the first time it is asked for."""
    if name not in self.results:
      self.results[name] = compute()
      write_json(self.path, self.results)
    return self.results[name]


# ----------------------------------------------------------------------------
# The loop of one phase
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Selection:
  """Keep the checkpoint with the highest smoothed training reward, beside the last one.

  Every `every` steps (and at the phase's last step) the mean of `reward(metrics)`
  over the last `window` steps is compared with the best so far; a new best
  saves the params to `checkpoints/<phase>_best`. The paper's choice (Kumar et
  al. 2024 keep "the checkpoint with the highest training reward"); `every` is
  its own interval, not the checkpoint one, so that selection never depends on
  how often a run saves.
  """

  reward: Callable[[Mapping], float]  # a step's training reward from its metrics
  window: int = 10
  every: int = 10

  def __post_init__(self):
    if self.window < 1 or self.every < 1:
      raise ValueError(f"Selection(window={self.window}, every={self.every}): both must be >= 1")


class _Tracker:
  """The recent rewards and the best candidate so far; its state travels in the checkpoint's meta."""

  def __init__(self, select: Selection, saved: Mapping | None):
    saved = saved or {}
    self.select = select
    self.recent = list(saved.get("recent", []))
    self.best, self.best_step = saved.get("best"), saved.get("best_step")

  def add(self, metrics: Mapping) -> None:
    self.recent = (self.recent + [float(self.select.reward(metrics))])[-self.select.window:]

  def new_best(self, step: int, last: bool) -> bool:
    """True when `step` is a candidate whose smoothed reward beats every earlier candidate's."""
    if not (last or step % self.select.every == 0):
      return False
    smoothed = sum(self.recent) / len(self.recent)
    if self.best is not None and smoothed <= self.best:
      return False
    self.best, self.best_step = smoothed, step
    return True

  def state(self) -> dict:
    return {"recent": self.recent, "best": self.best, "best_step": self.best_step}


class PhaseRunner:
  """Runs named phases with checkpoints, metrics, a progress bar and SIGTERM handling.

  `bar_keys`: the metrics the progress bar shows, chosen by the experiment.
  `rules`: the partition rules the train state is sharded by.
  """

  def __init__(self, config, workdir: str, lm, mesh, writer: MetricWriter, bar_keys: Sequence[str] = ("loss",),
               rules=parallel.DEFAULT_RULES):
    self.config, self.workdir, self.lm, self.mesh, self.writer = config, workdir, lm, mesh, writer
    self.bar_keys, self.rules = tuple(bar_keys), rules
    self.preempted = False
    signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.preempted = True

  def checkpointer(self, phase: str) -> Checkpointer:
    c = self.config.checkpoint
    return Checkpointer(CheckpointConfig(
        directory=os.path.join(self.workdir, "checkpoints", *phase.split("/")), max_to_keep=c.max_to_keep,
        save_interval_steps=c.every, async_save=c.async_save))

  def _best_checkpointer(self, phase: str) -> Checkpointer:
    return Checkpointer(CheckpointConfig(
        directory=os.path.join(self.workdir, "checkpoints", *f"{phase}_best".split("/")), max_to_keep=1,
        async_save=False))

  def _trained(self, params):
    """(frozen, trained) parts of `params`: with LoRA the base and the adapters, else (None, params)."""
    if self.lm.config.lora is None:
      return None, params
    return lora.split(params)

  def _with_dropout_seeds(self, batch: dict, phase: str, step: int) -> dict:
    """A LoRA model with dropout trains on masks seeded per row by (seed, phase, step): a resumed phase
    draws the same ones. The objectives read them through `model_logprobs`."""
    config = self.lm.config.lora
    if config is None or not config.dropout:
      return batch
    rows = len(batch["tokens_BxT"])
    rng = np.random.default_rng([self.config.seed, stream_id(phase), step])
    return dict(batch, **{DROPOUT_SEEDS: rng.integers(0, 2**31 - 1, size=rows, dtype=np.int32)})

  def _joined(self, frozen, trained):
    return trained if frozen is None else lora.combine(frozen, trained)

  def best_params(self, phase: str, params):
    """(params, step) of a finished phase's best-reward candidate (see `Selection`), read into the
    shardings of `params`; the phase must have run with `select`."""
    frozen, trained = self._trained(params)
    with self._best_checkpointer(phase) as ckpt:
      if ckpt.latest_step() is None:
        raise FileNotFoundError(f"{self.workdir}: phase {phase!r} kept no best-reward checkpoint "
                                f"(checkpoints/{phase}_best); was it run with a Selection?")
      best, _ = ckpt.restore(abstract_like({"params": trained}))
      return self._joined(frozen, best["params"]), ckpt.latest_step()

  def finished_params(self, phase: str, opt_cfg: OptimizerConfig, params):
    """The params a finished phase ended with, read into the shardings of `params` (its shapes).

    `opt_cfg` needs only the phase's optimizer structure (whether it clips gradients), not its values.
    """
    frozen, trained = self._trained(params)
    state, _ = init_train_state(self.lm.init, make_optimizer(opt_cfg), jax.random.key(self.config.seed),
                                self.mesh, self.rules, params=trained)
    with self.checkpointer(phase) as ckpt:
      if ckpt.latest_step() is None:
        raise FileNotFoundError(f"{self.workdir}: phase {phase!r} has no checkpoint (checkpoints/{phase})")
      state, saved = ckpt.restore(abstract_like(state))
    if not saved.get("finished"):
      raise ValueError(f"{self.workdir}: phase {phase!r} stopped at step {int(state.step)}, unfinished; rerun its "
                       "experiment to finish it")
    return self._joined(frozen, state.params)

  def run(self, phase: str, steps: int, opt_cfg: OptimizerConfig, params, loss_fn,
          make_batch: Callable[[int, TrainState], tuple[dict, dict]], step_offset: int, eval_fn=None,
          select: Selection | None = None):
    """Trains `steps` steps from `params`; returns the final params. Resumes when it can.

    `make_batch(step, state) -> (batch, host metrics)` must be a function of
    the step (and the state) only, so that a resumed phase replays exactly.
    `eval_fn(params) -> metrics` runs every `config.eval.every` steps.
    `select` also keeps the best-reward candidate (`best_params` reads it).
    With LoRA (`lm.config.lora`) the state, its optimizer moments and the
    checkpoints hold the adapters alone; the base is read by every step and
    never copied. `make_batch` and `eval_fn` see the whole params.
    """
    if steps == 0:  # nothing to train (e.g. an instruct checkpoint is the base policy)
      return params
    optimizer = make_optimizer(opt_cfg)
    frozen, trained = self._trained(params)
    state, shardings = init_train_state(self.lm.init, optimizer, jax.random.key(self.config.seed),
                                        self.mesh, self.rules, params=trained)
    train = make_train_step(loss_fn, optimizer, shardings, self.mesh, opt_cfg.grad_accum_steps, frozen=frozen,
                            combine=lora.combine)
    whole = lambda state: state._replace(params=self._joined(frozen, state.params))  # what make_batch reads
    meta = {"phase": phase, "config": self.config.to_dict()}
    saved = {}
    with self.checkpointer(phase) as ckpt, (self._best_checkpointer(phase) if select
                                            else contextlib.nullcontext()) as best_ckpt:
      if ckpt.latest_step() is not None:
        state, saved = ckpt.restore(abstract_like(state))
        if saved.get("finished"):
          return self._joined(frozen, state.params)
      tracker = _Tracker(select, saved.get("select")) if select else None
      start = int(state.step)
      truncate_after(self.writer.path, phase, step_offset + start)
      bar = tqdm.tqdm(range(start, steps), desc=phase, initial=start, total=steps, dynamic_ncols=True,
                      disable=jax.process_index() != 0)
      for step in bar:
        t = time.perf_counter()
        batch, batch_metrics = make_batch(step, whole(state))
        batch = self._with_dropout_seeds(batch, phase, step)
        state, metrics = train(state, parallel.shard_batch(batch, self.mesh))
        metrics = dict(jax.device_get(metrics), **batch_metrics, step_s=time.perf_counter() - t)
        if tracker:
          tracker.add(metrics)
          # A replay after a crash reaches the same best again: a saved one is never rewritten.
          if tracker.new_best(step + 1, step + 1 == steps) and (best_ckpt.latest_step() or 0) < step + 1:
            best_ckpt.save(step + 1, {"params": state.params}, {"phase": phase, "smoothed_reward": tracker.best},
                           force=True)
          meta = dict(meta, select=tracker.state())
        if (step + 1) % self.config.log_every == 0 or step + 1 == steps:
          record = self.writer.write(step_offset + step + 1, phase, metrics)
          bar.set_postfix({k: f"{record[k]:.3g}" for k in self.bar_keys if k in record})
        if eval_fn is not None and self.config.eval.every and (step + 1) % self.config.eval.every == 0:
          self.writer.write(step_offset + step + 1, phase, eval_fn(self._joined(frozen, state.params)))
        # Step + 1 is never saved yet (a resume starts after the latest save), so forcing
        # the last step, or the step a SIGTERM arrived in, cannot collide with a save.
        stop, done = self.preempted, step + 1 == steps
        if ckpt.save(step + 1, state, dict(meta, finished=done), force=done or stop):
          self.writer.flush()  # a resume starts after this step: its records must be written by then
        if stop:
          ckpt.wait_until_finished()
          raise Preempted(f"SIGTERM at {phase} step {step + 1}; rerun the same command to resume")
      ckpt.wait_until_finished()
    return self._joined(frozen, state.params)
