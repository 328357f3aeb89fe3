"""Tests for scorejax/checkpoint.py: exact round trips, retention, resharding, atomicity."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from scorejax.checkpoint import (
    CheckpointConfig,
    CheckpointMismatchError,
    Checkpointer,
    abstract_like,
)


def tiny_state(seed: int = 0):
  """Params in two dtypes, Adam moments that are not all zero, a step and two typed keys."""
  k_embed, k_mlp, k_rng = jax.random.split(jax.random.key(seed), 3)
  params = {
      "embed": {"w_VxD": jax.random.normal(k_embed, (8, 4), jnp.float32)},
      "mlp": {
          "w_DxF": jax.random.normal(k_mlp, (4, 8), jnp.float32).astype(jnp.bfloat16),
          "b_F": jnp.arange(8, dtype=jnp.float32) / 7,
      },
  }
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)
  # One update so mu/nu hold data: a restore that re-initialises the optimizer
  # (zeros) would pass a test on a fresh Adam state.
  _, opt_state = optimizer.update(params, opt_state, params)
  return {
      "params": params,
      "opt_state": opt_state,
      "step": jnp.int32(7 + seed),
      "rng": k_rng,  # threefry2x32, key data uint32[2]
      "sampler_rng": jax.random.key(seed, impl="rbg"),  # key data uint32[4]
  }


def tiny_meta():
  config = ml_collections.ConfigDict({"lr": 1e-3, "mesh": {"shape": (2, 2, 2)}, "name": "tiny"})
  return {"data": {"position": np.int64(123), "epoch": 1}, "config": config}


def assert_bitwise_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    name = jax.tree_util.keystr(path)
    assert g.dtype == w.dtype, name
    if jax.dtypes.issubdtype(w.dtype, jax.dtypes.prng_key):
      g, w = jax.random.key_data(g), jax.random.key_data(w)
    g, w = np.asarray(g), np.asarray(w)
    assert g.shape == w.shape, name
    assert g.tobytes() == w.tobytes(), name


def shard(state, mesh, spec_2d):
  """2-D arrays get `spec_2d(shape)`; everything else (vectors, scalars, keys) is replicated."""

  def leaf(x):
    spec = spec_2d(x.shape) if x.ndim == 2 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))

  return jax.tree.map(leaf, state)


def checkpointer(tmp_path, **overrides):
  fields = {"directory": str(tmp_path / "ckpt"), "max_to_keep": 3, "async_save": False}
  return Checkpointer(CheckpointConfig(**{**fields, **overrides}))


@pytest.mark.parametrize("async_save", [False, True])
def test_round_trip_is_bitwise_exact_with_typed_keys_and_meta(tmp_path, async_save):
  state = tiny_state()
  with checkpointer(tmp_path, async_save=async_save) as ckpt:
    assert ckpt.save(7, state, tiny_meta())
    ckpt.wait_until_finished()
  with checkpointer(tmp_path) as ckpt:  # a fresh process's view: nothing cached
    assert ckpt.latest_step() == 7
    got, meta = ckpt.restore(abstract_like(state))
  # Storing keys as raw data without wrapping back would give uint32[2] and
  # uint32[4] leaves here; a lost impl would turn the rbg key into key<fry>.
  assert got["rng"].dtype == state["rng"].dtype
  assert got["sampler_rng"].dtype == state["sampler_rng"].dtype
  assert isinstance(got["opt_state"][0], optax.ScaleByAdamState)
  assert_bitwise_equal(got, state)
  # The restored key draws what the saved one would.
  draw = lambda key: jax.random.uniform(key, (3,))
  np.testing.assert_array_equal(draw(got["rng"]), draw(state["rng"]))
  # The ConfigDict comes back as a dict, its tuple as a list; numpy ints as ints.
  assert meta == {
      "data": {"position": 123, "epoch": 1},
      "config": {"lr": 0.001, "mesh": {"shape": [2, 2, 2]}, "name": "tiny"},
  }


def test_keeps_the_last_n_and_respects_the_save_interval(tmp_path):
  state = tiny_state()
  with checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2, async_save=True) as ckpt:
    saved = [ckpt.save(step, state, {"position": step}) for step in range(1, 9)]
    ckpt.wait_until_finished()
    # Step 1 is saved as the first checkpoint of the run, then every 2nd step.
    assert saved == [True, True, False, True, False, True, False, True]
    assert ckpt.all_steps() == [6, 8]
    assert ckpt.save(9, state, {"position": 9}, force=True)
  on_disk = sorted(n for n in os.listdir(tmp_path / "ckpt") if n.isdigit())
  # Keeping max_to_keep=2 of the forced save too gives [8, 9]; a manager that
  # never deletes would leave [1, 2, 4, 6, 8, 9].
  assert on_disk == ["8", "9"]
  with checkpointer(tmp_path) as ckpt:
    _, meta = ckpt.restore(abstract_like(state))
    assert meta == {"position": 9}
    _, meta = ckpt.restore(abstract_like(state), step=8)
    assert meta == {"position": 8}


def test_a_saved_step_is_never_overwritten(tmp_path):
  first, second = tiny_state(0), tiny_state(1)
  with checkpointer(tmp_path) as ckpt:
    assert ckpt.save(4, first, {"which": "first"})
    assert not ckpt.save(4, second, {"which": "second"})  # quietly skipped: not newer
    assert not ckpt.save(3, second, {"which": "second"})
    with pytest.raises(FileExistsError, match=r"ckpt/4 already holds a committed checkpoint"):
      ckpt.save(4, second, {"which": "second"}, force=True)
    got, meta = ckpt.restore(abstract_like(first))
  assert meta == {"which": "first"}
  assert_bitwise_equal(got, first)


@pytest.mark.parametrize("target", ["data2_fsdp2_tensor2", "single_device"])
def test_restore_onto_a_mesh_of_another_shape(tmp_path, target):
  fsdp8 = jax.make_mesh((8,), ("fsdp",), devices=jax.devices()[:8])
  # The size-8 axis of (8, 4) and (4, 8) is split over all 8 devices.
  state = shard(tiny_state(), fsdp8, lambda shape: P("fsdp") if shape[0] == 8 else P(None, "fsdp"))
  assert len(state["params"]["embed"]["w_VxD"].sharding.device_set) == 8
  with checkpointer(tmp_path) as ckpt:
    ckpt.save(7, state, {})

  if target == "data2_fsdp2_tensor2":
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), devices=jax.devices()[:8])
    layout = shard(tiny_state(), mesh, lambda shape: P(("data", "fsdp"), "tensor"))
  else:
    layout = jax.device_put(tiny_state(5), jax.devices()[3])
  abstract = abstract_like(layout)
  with checkpointer(tmp_path) as ckpt:
    got, _ = ckpt.restore(abstract)

  assert_bitwise_equal(got, state)
  for (path, g), a in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(abstract)):
    assert g.sharding == a.sharding, jax.tree_util.keystr(path)
  if target == "data2_fsdp2_tensor2":
    # (8, 4) over data x fsdp (4 ways) and tensor (2 ways): (2, 2) per device.
    assert got["params"]["embed"]["w_VxD"].addressable_shards[0].data.shape == (2, 2)
  else:
    assert got["opt_state"][0].mu["mlp"]["w_DxF"].devices() == {jax.devices()[3]}


def test_mismatching_target_names_every_path_and_shape(tmp_path):
  state = tiny_state()
  with checkpointer(tmp_path) as ckpt:
    ckpt.save(7, state, {})
    abstract = abstract_like(state)
    abstract["params"]["embed"]["w_VxD"] = jax.ShapeDtypeStruct((8, 5), jnp.float32)
    abstract["params"]["mlp"]["b_new"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    del abstract["sampler_rng"]
    with pytest.raises(CheckpointMismatchError) as error:
      ckpt.restore(abstract)
  message = str(error.value)
  assert "ckpt/7/state does not match the restore target" in message
  assert "'params/embed/w_VxD': expected shape (8, 5), checkpoint has shape (8, 4)" in message
  assert "'params/mlp/b_new': expected shape (3,), missing from the checkpoint" in message
  # The rbg key is stored as its uint32[4] key data.
  assert "'sampler_rng': in the checkpoint (shape (4,)) but not in the restore target" in message
  assert message.count("\n  '") == 3  # nothing else is reported: the Adam moments match


def test_meta_that_json_cannot_hold_names_its_path(tmp_path):
  with checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match=r"meta/data/sampler is a object"):
      ckpt.save(1, tiny_state(), {"data": {"sampler": object()}})
    assert ckpt.latest_step() is None


def test_leftover_temporary_directories_are_not_checkpoints(tmp_path):
  state = tiny_state()
  with checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, {"position": 3})
  # The names orbax gives a step while it is being written.
  for name in ("5.orbax-checkpoint-tmp", "6.orbax-checkpoint-tmp-1712345678"):
    os.makedirs(tmp_path / "ckpt" / name / "state")
    (tmp_path / "ckpt" / name / "commit_success.txt").write_text("")
  with checkpointer(tmp_path) as ckpt:
    # Taking the unfinished step 6 as the latest would restore half-written arrays.
    assert ckpt.latest_step() == 3
    assert ckpt.all_steps() == [3]
    got, meta = ckpt.restore(abstract_like(state))
  assert meta == {"position": 3}
  assert_bitwise_equal(got, state)


_KILLED = 17
_DIE_AT_COMMIT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_checkpoint import tiny_state
    from scorejax.checkpoint import CheckpointConfig, Checkpointer

    ckpt = Checkpointer(CheckpointConfig({directory!r}, async_save=True))
    ckpt.save(1, tiny_state(1), {{"position": 1}})
    ckpt.wait_until_finished()

    rename = os.rename
    def die_before_commit(src, dst, *args, **kwargs):
      # The process dies at the last moment of step 2: every array written,
      # only the commit (renaming the temporary directory) missing.
      if os.path.basename(os.fspath(dst)) == "2":
        os._exit({killed})
      return rename(src, dst, *args, **kwargs)
    os.rename = die_before_commit
    ckpt.save(2, tiny_state(2), {{"position": 2}})
    ckpt.wait_until_finished()
    """
)


def test_save_killed_before_commit_is_never_taken_as_latest(tmp_path):
  directory = str(tmp_path / "ckpt")
  script = _DIE_AT_COMMIT.format(
      tests=os.path.dirname(__file__), directory=directory, killed=_KILLED
  )
  child = subprocess.run(
      [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
  )
  # Any other exit code means the child did not die where intended (for
  # example orbax no longer commits by renaming), and the test proves nothing.
  assert child.returncode == _KILLED, child.stderr[-3000:]
  left = sorted(os.listdir(directory))
  assert "1" in left and "2" not in left, left
  assert any(n.startswith("2.orbax-checkpoint-tmp") for n in left), left

  with checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 1
    got, meta = ckpt.restore(abstract_like(tiny_state(1)))
  assert meta == {"position": 1}
  assert_bitwise_equal(got, tiny_state(1))
  # The same step can be saved again once the run resumes.
  with checkpointer(tmp_path) as ckpt:
    assert ckpt.save(2, tiny_state(2), {"position": 2})
    got, meta = ckpt.restore(abstract_like(tiny_state(2)))
  assert meta == {"position": 2}
  assert_bitwise_equal(got, tiny_state(2))


def test_target_dtype_is_cast_and_a_missing_step_is_named(tmp_path):
  state = {"w": jnp.linspace(0.0, 1.0, 5, dtype=jnp.float32)}
  with checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, {})
    target = {"w": jax.ShapeDtypeStruct((5,), jnp.bfloat16, sharding=state["w"].sharding)}
    got, _ = ckpt.restore(target)
    # Quarters are exact in bf16; ignoring the target dtype would give float32.
    assert got["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got["w"], np.float32), [0.0, 0.25, 0.5, 0.75, 1.0])
    missing = r"no checkpoint for step 5 under .*ckpt; steps on disk: \[1\]"
    with pytest.raises(FileNotFoundError, match=missing):
      ckpt.restore(target, step=5)
  with checkpointer(tmp_path / "empty") as ckpt:
    with pytest.raises(FileNotFoundError, match=r"no committed checkpoint under"):
      ckpt.restore(target)
