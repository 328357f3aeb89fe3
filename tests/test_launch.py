"""`launch/tpu_vm.sh --dry-run`: the gcloud commands a v4-8, a v5e-8 and a multi-host v4-32 launch runs."""

import os
import shlex
import subprocess
import sys

import pytest

from scorejax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run(*args):
  proc = subprocess.run([os.path.join(ROOT, "launch", "tpu_vm.sh"), "--dry-run", *args], capture_output=True,
                        text=True, timeout=60)
  return proc.returncode, [shlex.split(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.parametrize("accelerator, version", [("v4-8", "tpu-ubuntu2204-base"),
                                                  ("v5litepod-8", "v2-alpha-tpuv5-lite"),
                                                  ("v4-32", "tpu-ubuntu2204-base")])
def test_dry_run_prints_create_install_and_run_on_every_worker(accelerator, version):
  rc, commands, err = dry_run("my-tpu", "us-central2-b", "configs/qwen_score.py:math,tpu", "/tmp/q",
                              f"--accelerator={accelerator}", "--", "--config.seed=1",
                              "--config.task.eval_path=/data/a b.jsonl")
  assert rc == 0, err
  describe, create, scp, install, launch = commands
  assert describe == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "my-tpu", "--zone=us-central2-b"]
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu", "--zone=us-central2-b",
                    f"--accelerator-type={accelerator}", f"--version={version}"]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and scp[-2:] == ["--zone=us-central2-b",
                                                                                   "--worker=all"]
  for ssh in (install, launch):  # every worker, a v4-32's four hosts included, runs the same command
    assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-central2-b",
                       "--worker=all"]
  assert "pip install -q -e '.[tpu]'" in install[8]
  remote = shlex.split(launch[8].removeprefix("--command="))
  assert remote == ["cd", "~/scorejax", "&&", ".venv/bin/python", "-m", "scorejax.main",
                    "--config=configs/qwen_score.py:math,tpu", "--workdir=/tmp/q", "--config.seed=1",
                    "--config.task.eval_path=/data/a b.jsonl"]


def test_a_multi_host_slice_starts_jax_distributed(monkeypatch):
  """What the launched command does on each of a v4-32's workers: the TPU runtime lists 4 hosts."""
  calls = []
  monkeypatch.setattr(parallel.jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda: calls.append("initialize"))
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t-w-0,t-w-1,t-w-2,t-w-3")
  for key in parallel._COORDINATOR_ENV:
    monkeypatch.delenv(key, raising=False)
  parallel.initialize_distributed()
  assert calls == ["initialize"]
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t-w-0")  # a v4-8 / v5e-8: one host, nothing to join
  parallel.initialize_distributed()
  assert calls == ["initialize"]


def test_an_unknown_argument_or_a_missing_one_is_refused():
  rc, _, err = dry_run("t", "z", "c", "w", "--bogus")
  assert rc == 2 and "unknown argument '--bogus' (overrides go after --)" in err
  rc, _, err = dry_run("t", "z")
  assert rc == 2 and "launch/tpu_vm.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR" in err


def test_sweep_dry_run_launches_one_vm_per_point_then_collects():
  env = dict(os.environ, PYTHON=sys.executable, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run([os.path.join(ROOT, "launch", "tpu_sweep.sh"), "--dry-run", "sweep-v4", "us-central2-b",
                         "configs/arith_spc.py", "gs://bucket/spc sweep", "--accelerator=v4-8", "--",
                         "--seeds=0,1", "--grid=game.rounds=1,2"],
                        capture_output=True, text=True, timeout=120, env=env, cwd="/")
  assert proc.returncode == 0, proc.stderr
  commands = [shlex.split(line) for line in proc.stdout.splitlines()]
  assert commands[0][1:4] == ["-m", "scorejax.sweep", "--config=configs/arith_spc.py"] and commands[0][-1] == "--emit"
  assert commands[-1][1:3] == ["-m", "scorejax.sweep"] and commands[-1][-1] == "--collect"
  launches = [c for c in commands if c[4:5] == ["ssh"] and "scorejax.main" in c[-1]]
  creates = [c for c in commands if c[4:5] == ["create"]]
  assert [c[5] for c in creates] == [f"sweep-v4-{i}" for i in range(4)]  # seeds x grid points, a VM each
  remotes = [shlex.split(c[-1].removeprefix("--command=")) for c in launches]
  assert [c[5] for c in launches] == [f"sweep-v4-{i}" for i in range(4)]
  assert remotes[0][3:] == [".venv/bin/python", "-m", "scorejax.main", "--config=configs/arith_spc.py",
                            "--workdir=gs://bucket/spc sweep/spc/game.rounds=1/seed0", "--config.seed=0",
                            "--config.game.rounds=1"]
  assert remotes[3][7:9] == ["--workdir=gs://bucket/spc sweep/spc/game.rounds=2/seed1", "--config.seed=1"]


def test_sweep_launch_refuses_a_bad_sweep_flag():
  env = dict(os.environ, PYTHON=sys.executable, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run([os.path.join(ROOT, "launch", "tpu_sweep.sh"), "--dry-run", "v", "z", "configs/arith_spc.py",
                         "gs://b/s", "--", "--variants=nonexistent"], capture_output=True, text=True, timeout=120,
                        env=env)
  assert proc.returncode != 0 and "nonexistent" in proc.stderr
  assert "gcloud" not in proc.stdout
