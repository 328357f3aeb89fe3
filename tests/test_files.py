"""scorejax/files.py and what writes a workdir through it, on local paths and on gs:// (an in-memory stand-in).

The stand-in registers fsspec's memory filesystem for the gs / gcs protocols,
which is where etils.epath sends a gs:// path when TensorFlow is absent (with
gcsfs installed it is Google Cloud Storage itself).
"""

import json
import os

import ml_collections
import pytest

from scorejax import files, metrics, phases


@pytest.fixture
def gcs():
  import fsspec
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

  fsspec.register_implementation("gs", FakeGCS, clobber=True)
  fsspec.register_implementation("gcs", FakeGCS, clobber=True)
  yield FakeGCS
  FakeGCS.store.clear()


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  request.getfixturevalue("gcs")
  return "gs://bucket/runs"


def test_write_read_append_list(root):
  files.makedirs(f"{root}/run")
  files.write_text(f"{root}/run/a.txt", "one\n")
  files.append_text(f"{root}/run/a.txt", "two\n")
  files.append_text(f"{root}/run/new.txt", "first\n")  # appending creates
  assert files.read_text(f"{root}/run/a.txt") == "one\ntwo\n"
  assert files.read_text(f"{root}/run/new.txt") == "first\n"
  assert files.isfile(f"{root}/run/a.txt") and not files.isdir(f"{root}/run/a.txt")
  assert files.isdir(f"{root}/run") and not files.isfile(f"{root}/run")
  assert not files.exists(f"{root}/run/missing.txt")
  assert files.listdir(f"{root}/run") == ["a.txt", "new.txt"]


def test_local_writes_leave_no_temporary_file(tmp_path):
  files.write_text(str(tmp_path / "x.json"), "{}")
  assert os.listdir(tmp_path) == ["x.json"]


@pytest.mark.parametrize("direction", ["gs_to_gs", "gs_to_local", "local_to_gs"])
def test_copytree_across_filesystems(direction, gcs, tmp_path):
  src = "gs://bucket/src" if direction.startswith("gs") else str(tmp_path / "src")
  dst = "gs://bucket/dst" if direction.endswith("gs") else str(tmp_path / "dst")
  files.makedirs(f"{src}/ckpt/7")
  files.write_text(f"{src}/ckpt/7/meta.json", '{"step": 7}')
  files.write_bytes(f"{src}/ckpt/7/array.bin", bytes(range(256)))
  files.write_text(f"{src}/top.txt", "t")
  files.copytree(src, dst)
  assert files.listdir(dst) == ["ckpt", "top.txt"]
  assert files.read_text(f"{dst}/ckpt/7/meta.json") == '{"step": 7}'
  assert files.read_text(f"{dst}/top.txt") == "t"


def test_metric_writer_buffers_remote_records_until_flush(gcs):
  writer = metrics.MetricWriter("gs://bucket/run", tensorboard=False, remote_flush_s=3600)
  writer.write(1, "stage1", {"loss": 1.5})
  writer.write(2, "stage1", {"loss": 1.25})
  assert metrics.read_jsonl(writer.path) == []  # an object is rewritten whole: not once per record
  writer.flush()
  writer.write(3, "stage1", {"loss": 1.0})
  writer.close()
  assert [r["loss"] for r in metrics.read_jsonl(writer.path)] == [1.5, 1.25, 1.0]
  metrics.truncate_after(writer.path, "stage1", 2)
  assert [r["step"] for r in metrics.read_jsonl(writer.path)] == [1, 2]


def test_metric_writer_writes_local_records_at_once(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(1, "base", {"loss": 2.0, "skipped": float("nan")})
  assert metrics.read_jsonl(writer.path) == [{"step": 1, "phase": "base", "loss": 2.0}]


def test_workdir_config_eval_cache_and_plots(root):
  workdir = f"{root}/score"
  config = ml_collections.ConfigDict({"seed": 0, "stage1": {"steps": 4}})
  phases.claim_workdir(workdir, config)
  assert json.loads(files.read_text(f"{workdir}/config.json")) == {"seed": 0, "stage1": {"steps": 4}}
  other = ml_collections.ConfigDict({"seed": 1, "stage1": {"steps": 4}})
  with pytest.raises(phases.ConfigMismatch, match="seed: 0 -> 1"):
    phases.claim_workdir(workdir, other)

  cache = phases.EvalCache(workdir)
  assert cache.get("base", lambda: {"acc_t1": 0.5}) == {"acc_t1": 0.5}
  assert phases.EvalCache(workdir).get("base", lambda: pytest.fail("recomputed")) == {"acc_t1": 0.5}

  writer = metrics.MetricWriter(workdir, tensorboard=False)
  for step in range(1, 6):
    writer.write(step, "stage1", {"reward": step / 5})
  writer.close()
  metrics.plot_curves(writer.path, f"{workdir}/curves.png", {"reward": ["reward"]},
                      bars=("table", {"base": {"acc_t1": 0.5}}, ["acc_t1"]))
  assert files.read_bytes(f"{workdir}/curves.png")[:8] == b"\x89PNG\r\n\x1a\n"
