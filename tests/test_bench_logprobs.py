"""Smoke run of `python -m scorejax.bench logprobs` at a tiny size."""

import json
import subprocess
import sys

from scorejax.bench import __main__ as bench_cli


def test_cli_writes_the_figures(tmp_path):
  out = tmp_path / "logprobs.json"
  cmd = [sys.executable, "-m", "scorejax.bench", "logprobs", "--vocab=512", "--batch=2", "--seq=64",
         "--dim=16", "--chunk=8", f"--out={out}"]
  completed = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
  assert "plain / chunked peak" in completed.stdout
  result = json.loads(out.read_text())
  assert result["full_logits_bytes"] == 2 * 64 * 512 * 4
  for name in ("chunked", "plain"):
    m = result[name]
    assert m["peak_bytes"] == m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - m["alias_bytes"]
    assert result[f"{name}_peak_bytes"] == m["peak_bytes"]
  # The plain backward keeps [B, T, V] fp32 buffers; one 8-position chunk holds 1/8 of them.
  assert result["plain"]["temp_bytes"] >= result["full_logits_bytes"]
  assert result["chunked"]["temp_bytes"] < result["full_logits_bytes"]
  assert result["plain_over_chunked"] == result["plain_peak_bytes"] / result["chunked_peak_bytes"]
  assert result["plain_over_chunked"] > 1.0


def test_dispatcher_lists_and_rejects_names(capsys):
  assert "logprobs" in bench_cli.available()
  assert bench_cli.main(["no_such_benchmark"]) == 2
  assert "unknown benchmark 'no_such_benchmark'" in capsys.readouterr().err
