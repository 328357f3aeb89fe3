"""A tiny run of `python -m scorejax.bench train_step`: the figures are there and sane."""

import json
import os
import subprocess
import sys


def test_bench_train_step_writes_its_figures(tmp_path):
  out = tmp_path / "bench.json"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "scorejax.bench", "train_step", f"--out={out}", "--vocab=512", "--d_model=64",
       "--n_layers=2", "--n_heads=4", "--n_kv_heads=2", "--d_ff=128", "--batch=2", "--seq=32",
       "--chunk=16", "--steps=1", "--matmul=256", "--dtypes=float32,bfloat16"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  for key in ("achieved_flops_per_s", "matmul_peak_flops_per_s", "fraction_of_peak", "tokens_per_s"):
    assert result[key] > 0, key
  assert result["fraction_of_peak"] == result["achieved_flops_per_s"] / result["matmul_peak_flops_per_s"]
  assert "fraction_of_peak" in proc.stdout
  assert result["dtype"] == "float32" and set(result["by_dtype"]) == {"float32", "bfloat16"}
  bf16 = result["by_dtype"]["bfloat16"]
  assert bf16["fraction_of_peak"] == bf16["achieved_flops_per_s"] / bf16["matmul_peak_flops_per_s"]
  torch_peak = bf16["torch_matmul_peak_flops_per_s"]
  assert torch_peak is None or torch_peak > 0
  assert abs(bf16["loss"] - result["loss"]) < 0.1  # the same model and batch: bf16 compute moves the loss a little


def test_bench_train_step_names_an_unknown_dtype():
  proc = subprocess.run([sys.executable, "-m", "scorejax.bench", "train_step", "--dtypes=float32,fp8"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "--dtypes: 'fp8'" in proc.stderr
