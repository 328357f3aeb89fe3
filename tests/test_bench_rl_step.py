"""`python -m scorejax.bench rl_step` on a tiny model: both sides run the same shapes, the JSON has its keys."""

import json

import numpy as np

from scorejax.bench import rl_step

TINY = ["--episodes=8", "--group=4", "--prompt_len=6", "--new_tokens=5", "--turn_len=3", "--vocab_size=97",
        "--d_model=32", "--n_layers=2", "--n_heads=4", "--n_kv_heads=2", "--head_dim=8", "--d_ff=64",
        "--repeats=1"]


def test_rloo_advantage_by_hand():
  np.testing.assert_allclose(rl_step.rloo_advantage(np.array([1.0, 0.0, 1.0, 1.0]), 2), [1.0, -1.0, 0.0, 0.0])
  np.testing.assert_allclose(rl_step.rloo_advantage(np.array([1.0, 0.0, 0.0]), 3), [1.0, -0.5, -0.5])


def test_both_sides_run_the_same_step(tmp_path, capsys):
  out = tmp_path / "rl.json"
  assert rl_step.main(TINY + [f"--out={out}"]) == 0
  r = json.loads(out.read_text())
  for key in ("scorejax_episodes_per_s", "torch_episodes_per_s", "ratio"):
    assert r[key] > 0
  assert abs(r["ratio"] - r["scorejax_episodes_per_s"] / r["torch_episodes_per_s"]) < 1e-9
  for side in ("scorejax", "torch"):
    assert all(r[side][part] > 0 for part in rl_step.PARTS)
    assert r[side]["tokens"] == 8 * 2 * 5  # every episode: two attempts of exactly new_tokens tokens
  assert r["scorejax"]["batch_shape"][0] == r["torch"]["batch_shape"][0] == 8
  assert "episodes/s" in capsys.readouterr().out
