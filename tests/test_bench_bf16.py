"""`python -m scorejax.bench bf16`: the drift of bf16 from fp32 on the same weights."""

import json

from scorejax.bench import bf16


def test_bf16_drift_is_small_but_not_zero(tmp_path, capsys):
  out = tmp_path / "bf16.json"
  assert bf16.main(["--families=qwen2,gemma2", "--new_tokens=8", f"--out={out}"]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["family"] for r in rows] == ["qwen2", "gemma2"]
  for r in rows:
    # bf16 rounds (a drift of exactly 0 would mean the bf16 model ran in fp32), but by little on this scale
    assert 0 < r["mean_abs_logit_diff"] <= r["max_abs_logit_diff"] < 0.2 * r["fp32_logit_std"]
    assert 0.0 <= r["greedy_token_agreement"] <= 1.0 and 0 <= r["greedy_shared_prefix"] <= 8
  assert "random gemma2" in capsys.readouterr().out
