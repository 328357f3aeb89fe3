"""`python -m scorejax.convert`: the check a user runs before trusting a checkpoint."""

import os
import re
import subprocess
import sys

import pytest
from hf_fixtures import save_hf_model


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gemma3"])
def test_convert_check_prints_small_diff_and_exports(tmp_path, family):
  src = save_hf_model(family, tmp_path / "src")
  out = tmp_path / "out"
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "scorejax.convert", f"--hf_dir={src}", "--check", f"--out_dir={out}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  match = re.search(r"^max_abs_logit_diff=(\S+)$", proc.stdout, re.M)
  assert match, proc.stdout
  assert float(match.group(1)) <= 1e-4
  assert (out / "config.json").exists() and (out / "model.safetensors").exists()


def test_convert_without_hf_dir_is_a_usage_error():
  proc = subprocess.run([sys.executable, "-m", "scorejax.convert", "--check"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "--hf_dir is required" in proc.stderr
