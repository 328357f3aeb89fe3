"""The drift of bf16 parameters + compute from the fp32 model, per family.

  python -m scorejax.bench bf16 [--hf_dir=DIR ...] [--new_tokens=128] [--out=FILE.json]

For each model the same weights run twice: fp32 parameters and compute (the
reference) and bf16 parameters and compute (norms, attention softmax and
logits stay fp32 in both, as in the families' HF implementations). Reported:
max and mean |logit difference| over the valid positions of a left-padded
batch (4 rows, prompts of 32 / 24 / 12 / 5 tokens), and over `new_tokens`
greedy tokens per row the share of positions where bf16 picks fp32's token
and the mean length of the prefix they share before the first divergence.

Without --hf_dir it measures a random model of each family (Llama, Qwen2,
Qwen3, Gemma 2, Gemma 3; 4 layers of width 256, a 2,048-token vocabulary,
Gemma with a 16-position sliding window) built here, no checkpoint needed:
random weights give small logit margins, so their greedy agreement says
little (a random Gemma repeats its last token, so it agrees trivially); pass
real checkpoints for the figure that matters. `fp32_logit_std` puts the
differences on the reference's scale.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from scorejax import bench
from scorejax.models import LM, ModelConfig, hf
from scorejax.sampling import Greedy, SamplerConfig, left_pad, sample

PROMPT_LENGTHS = (32, 24, 12, 5)
_BASE = dict(vocab_size=2048, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, d_ff=512,
             max_position_embeddings=1024, initializer_range=0.05)
_GEMMA = dict(sandwich_norms=True, norm_offset=1.0, scale_embeddings=True, mlp_activation="gelu_tanh",
              tie_embeddings=True, sliding_window=16, query_pre_attn_scalar=64.0,
              layer_types=("sliding_attention", "full_attention") * 2)
RANDOM_FAMILIES = {
    "llama": dict(family="llama", rope_theta=500_000.0),
    "qwen2": dict(family="qwen2", qkv_bias=True, tie_embeddings=True, rope_theta=1_000_000.0),
    "qwen3": dict(family="qwen3", qk_norm=True, rope_theta=1_000_000.0),
    "gemma2": dict(family="gemma2", attn_logit_softcap=50.0, final_logit_softcap=30.0, **_GEMMA),
    "gemma3": dict(family="gemma3", qk_norm=True, rope_theta=1_000_000.0, rope_local_theta=10_000.0, **_GEMMA),
}


def _prompts(vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  tokens, mask = left_pad([rng.integers(4, vocab, n).tolist() for n in PROMPT_LENGTHS], pad_id=0, buckets=None)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, positions, mask


def drift(name: str, lm32: LM, params32, new_tokens: int) -> dict:
  """The bf16 model's logits and greedy tokens against the fp32 model's."""
  config16 = dataclasses.replace(lm32.config, param_dtype="bfloat16", dtype="bfloat16")
  lm16 = LM.from_config(config16)
  params16 = jax.tree.map(lambda x: x.astype(config16.jnp_param_dtype), params32)
  tokens, positions, mask = _prompts(lm32.config.vocab_size)
  logits32 = np.asarray(jax.jit(lm32.apply)(params32, tokens, positions, mask)[0])
  logits16 = np.asarray(jax.jit(lm16.apply)(params16, tokens, positions, mask)[0])
  diff = np.abs(logits16 - logits32)[mask]
  sampler = SamplerConfig(max_new_tokens=new_tokens, stop_tokens=())
  greedy32 = np.asarray(sample(lm32, params32, tokens, mask, jax.random.key(0), Greedy(), sampler).tokens_BxN)
  greedy16 = np.asarray(sample(lm16, params16, tokens, mask, jax.random.key(0), Greedy(), sampler).tokens_BxN)
  same = greedy16 == greedy32
  prefix = [int(np.argmin(row)) if not row.all() else len(row) for row in same]
  return {"model": name, "family": lm32.config.family, "fp32_logit_std": float(logits32[mask].std()),
          "max_abs_logit_diff": float(diff.max()),
          "mean_abs_logit_diff": float(diff.mean()), "greedy_token_agreement": float(same.mean()),
          "greedy_shared_prefix": float(np.mean(prefix)), "new_tokens": new_tokens}


def random_model(family: str) -> tuple[LM, dict]:
  lm = LM.from_config(ModelConfig(**_BASE, **RANDOM_FAMILIES[family]))
  return lm, lm.init(jax.random.key(0))


def format_rows(rows: list[dict]) -> str:
  lines = [f"{'model':24s} {'family':7s} {'logit std':>9s} {'max |dlogit|':>12s} {'mean |dlogit|':>13s} {'greedy agree':>12s} "
           f"{'shared prefix':>13s}"]
  for r in rows:
    lines.append(f"{r['model'][-24:]:24s} {r['family']:7s} {r['fp32_logit_std']:9.4f} {r['max_abs_logit_diff']:12.4f} "
                 f"{r['mean_abs_logit_diff']:13.5f} {r['greedy_token_agreement']:12.3f} "
                 f"{r['greedy_shared_prefix']:9.1f}/{r['new_tokens']}")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m scorejax.bench bf16", description=__doc__.split("\n\n")[0])
  parser.add_argument("--hf_dir", action="append", default=[], help="an HF checkpoint (repeatable)")
  parser.add_argument("--families", default=",".join(RANDOM_FAMILIES),
                      help="random models measured when no --hf_dir is given")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--out", default=None, help="write the figures as JSON")
  args = parser.parse_args(argv)
  rows = []
  for path in args.hf_dir:
    lm, params = hf.load_hf(path, param_dtype="float32", dtype="float32")
    rows.append(drift(path, lm, params, args.new_tokens))
  if not args.hf_dir:
    for family in [f for f in args.families.split(",") if f]:
      if family not in RANDOM_FAMILIES:
        parser.error(f"--families: unknown {family!r}; expected some of {sorted(RANDOM_FAMILIES)}")
      rows.append(drift(f"random {family}", *random_model(family), args.new_tokens))
  bench.emit({"rows": rows}, format_rows(rows), args.out)
  return 0
