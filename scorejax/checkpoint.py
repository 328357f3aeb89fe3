"""Save and restore the whole training state with orbax-checkpoint.

A checkpoint at step N is the directory `<directory>/N` holding three items:

  state  the training-state pytree (parameters, optimizer state, step, RNG
         keys, ...), written by orbax's StandardCheckpointHandler;
  meta   a JSON dict (data-iterator position, the experiment config);
  prng   a JSON map from the path of every typed PRNG key in `state` to its
         implementation name, because `state` stores such keys as their raw
         `jax.random.key_data` and restore has to wrap them back.

Orbax writes each step into `N.orbax-checkpoint-tmp*` and renames it to `N`
only once every item (on every host) is complete, so a save that dies
halfway never looks like a checkpoint: `latest_step()` skips it and the
previous step stays restorable. Old steps beyond `max_to_keep` are deleted
only after the new one has been committed.

Restore reads into the shardings of an abstract target (a pytree of
`jax.ShapeDtypeStruct(shape, dtype, sharding=...)`), so a state saved from
one mesh restores onto a mesh of any other shape, or onto one device. The
target is checked against what the checkpoint holds before any array is
read: a missing or extra key, or a wrong shape, raises
`CheckpointMismatchError` naming every offending path.

Typical use:

  config = CheckpointConfig(directory=workdir + "/checkpoints", max_to_keep=3)
  with Checkpointer(config) as ckpt:
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(abstract_like(state))
    ...
    ckpt.save(step, state, {"data_position": pos, "config": config_dict})
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

_STATE, _META, _PRNG = "state", "meta", "prng"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Where and how often to checkpoint."""

  directory: str  # root holding one sub-directory per saved step
  max_to_keep: int | None = 3  # newest steps kept on disk; None keeps all
  save_interval_steps: int = 1  # save() without force only writes at multiples of this
  async_save: bool = True  # write in a background thread; training continues meanwhile


class CheckpointMismatchError(ValueError):
  """The stored state tree does not match the restore target."""


def abstract_like(state: Any) -> Any:
  """The restore target for `state`: every array replaced by its ShapeDtypeStruct.

  jax.Arrays keep their sharding, so restoring into the result places each
  array exactly where it lives in `state`. Typed PRNG keys keep their key
  dtype. numpy arrays and Python scalars get no sharding and restore as numpy.
  """

  def leaf(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)

  return jax.tree.map(leaf, state)


class Checkpointer:
  """Saves and restores (state, meta) pairs at integer steps. Call on every host."""

  def __init__(self, config: CheckpointConfig):
    self.config = config
    self.directory = _absolute(config.directory)
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(_STATE, ocp.args.StandardSave)
    registry.add(_STATE, ocp.args.StandardRestore)
    for item in (_META, _PRNG):
      registry.add(item, ocp.args.JsonSave)
      registry.add(item, ocp.args.JsonRestore)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.max_to_keep,
        save_interval_steps=config.save_interval_steps,
        enable_async_checkpointing=config.async_save,
        # Leftovers of interrupted saves are never restorable; reclaim their disk.
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, handler_registry=registry
    )

  def save(self, step: int, state: Any, meta: Mapping[str, Any], *, force: bool = False) -> bool:
    """Starts saving `state` and `meta` as step `step`; True if a save was started.

    Without `force`, steps off `save_interval_steps` and steps at or below the
    latest saved one are skipped (returns False). With `force`, a step that
    already exists raises FileExistsError: a committed checkpoint is never
    overwritten. `meta` must be JSON-like; ConfigDicts and numpy/jax scalars in
    it are converted, and tuples come back as lists. With `async_save` the
    call returns once arrays are copied off the accelerator, so `state` may be
    donated to the next step right away.
    """
    key_data, impls = _split_typed_keys(state)
    args = ocp.args.Composite(**{
        _STATE: ocp.args.StandardSave(key_data),
        _META: ocp.args.JsonSave(_jsonable(meta, "meta")),
        _PRNG: ocp.args.JsonSave(impls),
    })
    try:
      return self._manager.save(step, args=args, force=force)
    except ocp.checkpoint_manager.StepAlreadyExistsError as e:
      raise FileExistsError(
          f"{self.directory}/{step} already holds a committed checkpoint; it is not"
          " overwritten. Save at another step, or delete that directory first."
      ) from e

  def latest_step(self) -> int | None:
    """The newest committed step (or one this process is still writing); None if none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every step on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Reads step `step` (default: the latest) into the shardings of `abstract_state`.

    `abstract_state` has the tree structure of the saved state with a
    ShapeDtypeStruct at each leaf (see `abstract_like`); the sharding of each
    leaf decides where the restored array lives, so the mesh may differ from
    the one saved from. A leaf dtype that differs from the stored one is cast,
    which is how fp32 weights are read into a bf16 run. Returns (state, meta).
    """
    self._manager.wait_until_finished()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no committed checkpoint under {self.directory}")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint for step {step} under {self.directory}; steps on disk: {self.all_steps()}"
      )
    target, _ = _split_typed_keys(abstract_state)
    stored = self._manager.metadata(step).item_metadata[_STATE]
    _check_matches(target, stored.tree, where=f"{self.directory}/{step}/{_STATE}")
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(target),
            _META: ocp.args.JsonRestore(),
            _PRNG: ocp.args.JsonRestore(),
        }),
    )
    state = _wrap_typed_keys(restored[_STATE], abstract_state, restored[_PRNG],
                             where=f"{self.directory}/{step}")
    return state, restored[_META]

  def wait_until_finished(self) -> None:
    """Blocks until every started save is committed (or raises its error)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and deletions and releases orbax's threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _absolute(directory: str) -> str:
  # Local paths are made absolute so a later chdir cannot split one run's
  # checkpoints over two places; URLs such as gs://... are left as they are.
  return directory if "://" in directory else os.path.abspath(directory)


def _path_str(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_typed_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _split_typed_keys(tree: Any) -> tuple[Any, dict[str, str]]:
  """Replaces typed PRNG keys by their uint32 key data; returns the tree and {path: impl}.

  Works on concrete arrays and on ShapeDtypeStructs alike. The key data is
  placed with the key's own sharding: its extra trailing axis is unnamed in a
  NamedSharding's spec, so it is simply replicated.
  """
  impls = {}

  def leaf(path, x):
    if not _is_typed_key(x):
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
    impls[_path_str(path)] = str(jax.random.key_impl(x))
    return jax.random.key_data(x)

  return jax.tree_util.tree_map_with_path(leaf, tree), impls


def _wrap_typed_keys(
    restored: Any, abstract_state: Any, impls: Mapping[str, str], where: str
) -> Any:
  """Wraps the key data back into typed keys wherever `abstract_state` has one."""

  def leaf(path, target, x):
    if not _is_typed_key(target):
      return x
    name = _path_str(path)
    if name not in impls:
      raise CheckpointMismatchError(
          f"{where}: the target holds a typed PRNG key ({target.dtype}) at '{name}', but the"
          " checkpoint stored plain integers there; restore it with a uint32 target instead"
      )
    key = jax.random.wrap_key_data(x, impl=impls[name])
    if key.dtype != target.dtype:
      raise CheckpointMismatchError(
          f"{where}: '{name}' expected a {target.dtype} key, checkpoint has a {key.dtype} key"
      )
    return key

  return jax.tree_util.tree_map_with_path(leaf, abstract_state, restored)


def _check_matches(target: Any, stored: Any, where: str) -> None:
  """Raises CheckpointMismatchError listing every path whose presence or shape differs."""
  want = {_path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(target)}
  have = {_path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(stored)}
  problems = []
  for name, x in want.items():
    if name not in have:
      problems.append(f"  '{name}': expected shape {tuple(x.shape)}, missing from the checkpoint")
      continue
    stored_shape = getattr(have[name], "shape", None)
    if stored_shape is not None and tuple(stored_shape) != tuple(x.shape):
      problems.append(
          f"  '{name}': expected shape {tuple(x.shape)}, checkpoint has shape {tuple(stored_shape)}"
      )
  for name in have.keys() - want.keys():
    shape = getattr(have[name], "shape", None)
    problems.append(f"  '{name}': in the checkpoint (shape {shape}) but not in the restore target")
  if problems:
    raise CheckpointMismatchError(
        f"{where} does not match the restore target:\n" + "\n".join(sorted(problems))
    )


def _jsonable(x: Any, path: str) -> Any:
  """A plain JSON copy of `x`; names the offending path if something cannot be stored."""
  if isinstance(x, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    x = x.to_dict()
  if isinstance(x, Mapping):
    out = {}
    for k, v in x.items():
      if not isinstance(k, str):
        raise TypeError(
            f"checkpoint {path}: key {k!r} is a {type(k).__name__}; JSON keys are strings"
        )
      out[k] = _jsonable(v, f"{path}/{k}")
    return out
  if isinstance(x, (list, tuple)):
    return [_jsonable(v, f"{path}/{i}") for i, v in enumerate(x)]
  if isinstance(x, (np.ndarray, np.generic, jax.Array)) and not _is_typed_key(x):
    return np.asarray(x).tolist()
  if x is None or isinstance(x, (str, bool, int, float)):
    return x
  raise TypeError(
      f"checkpoint {path} is a {type(x).__name__}, which JSON cannot hold; store arrays in"
      " the state pytree and only plain numbers, strings, lists and dicts in meta"
  )
