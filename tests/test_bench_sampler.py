"""Smoke run of `python -m scorejax.bench sampler` at a tiny size."""

import json
import math

from scorejax.bench import sampler as bench


def test_tiny_run_writes_consistent_figures(tmp_path, capsys):
  out = tmp_path / "sampler.json"
  argv = ["--vocab_size=256", "--d_model=32", "--n_layers=2", "--n_heads=4", "--n_kv_heads=2",
          "--head_dim=8", "--d_ff=64", "--batch=2", "--prompt_len=8", "--new_tokens=8", "--turn_len=4",
          "--shapes=default", f"--out={out}"]
  assert bench.main(argv) == 0
  r = json.loads(out.read_text())
  for key in ("scorejax_tokens_per_s", "hf_tokens_per_s", "ratio_vs_hf", "turn2_reuse_s",
              "turn2_reprefill_s", "bandwidth_gb_s"):
    assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
  # At this size a decode step is below timer noise; the figure only has to be the defined ratio.
  assert math.isclose(r["fraction_of_bandwidth_bound"],
                      r["bandwidth_bound_step_s"] / r["scorejax_decode_step_s"])
  # Throughputs are new tokens (2 rows x 8) over the generation's wall time.
  assert math.isclose(r["scorejax_tokens_per_s"], 16 / r["scorejax_s"])
  assert math.isclose(r["hf_tokens_per_s"], 16 / r["hf_s"])
  assert math.isclose(r["ratio_vs_hf"], r["scorejax_tokens_per_s"] / r["hf_tokens_per_s"])
  # Same weights, fp32, greedy: identical tokens; and reuse decodes what re-prefill decodes.
  assert r["greedy_tokens_equal_hf"] == 1.0 and r["turn2_tokens_equal"] is True
  # Weights (fp32) plus a 2 x 2 layers x 2 rows x 32 slots x 2 heads x 8 K/V cache per step.
  params = r["model"]["params"]
  assert r["decode_bytes_per_step"] == 4 * params + 4 * 2 * 2 * 2 * 32 * 2 * 8
  # The prefill is timed on its own (a one-token generation); the decode step is the rest per step.
  assert math.isclose(r["scorejax_decode_step_s"], (r["scorejax_s"] - r["scorejax_prefill_s"]) / 7)
  assert r["hf_prefill_s"] > 0 and r["group8_prefill_ratio"] > 0
  # Both turn-2 prefills are timed on their own (one-token attempts 2), so neither can come out negative.
  assert r["turn2_turn_prefill_s"] > 0 and r["turn2_context_prefill_s"] > 0
  assert math.isclose(r["turn2_decode_s"], r["turn2_reprefill_s"] - r["turn2_context_prefill_s"])
  assert set(r["shapes"]) == {"default"} and r["min_ratio_vs_hf"] == r["ratio_vs_hf"]
  table = capsys.readouterr().out
  assert "ratio vs transformers" in table and "reuse / re-prefill" in table


def test_named_shapes_set_the_model_and_unknown_ones_are_refused(capsys):
  import pytest
  assert bench.SHAPES["qwen2.5_0.5b"]["d_model"] == 896 and bench.SHAPES["qwen2_100m_v32k"]["vocab_size"] == 32_000
  with pytest.raises(SystemExit):
    bench.main(["--shapes=default,nonexistent"])
  assert "nonexistent" in capsys.readouterr().err
