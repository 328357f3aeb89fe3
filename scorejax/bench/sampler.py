"""Greedy decoding: scorejax's in-JAX sampler against transformers `generate`, and turn-2 reuse.

  python -m scorejax.bench sampler [--out=FILE.json] [--shapes=default,qwen2_100m_v32k,qwen2.5_0.5b]
                                    [--batch=16 --prompt_len=128 --new_tokens=128 --turn_len=64
                                    --vocab_size=151936 --d_model=512 --n_layers=8 --n_heads=8
                                    --n_kv_heads=2 --head_dim=64 --d_ff=2048 --dtype=float32 --repeats=3]

Each shape is one set of random weights of a Qwen2-architecture model
(`default`: the model flags, about 108M parameters at their defaults, 78M of
them the tied 151,936-token embedding; `qwen2_100m_v32k`: 12 layers of width
768, 12 query / 4 KV heads, a 32,000-token vocabulary; `qwen2.5_0.5b`:
Qwen2.5-0.5B's shape), one batch of random prompts, greedy decoding with no
stop token so every row generates exactly new_tokens tokens. The JSON holds
the first shape's figures at its top level, every shape's under `shapes`,
and `min_ratio_vs_hf`, the smallest ratio over the shapes.

Every program is compiled and warmed up first; then --repeats rounds each
time every variant once, interleaved, and each figure is the best of its
rounds (the machine is shared: a burst of load then spoils one round of one
variant, not a whole side). Figures:

- scorejax_tokens_per_s / hf_tokens_per_s: new tokens (batch x new_tokens)
  over the wall time of one whole generation, prefill included.
  transformers runs PyTorch on the CPU with its default threads. Each side
  is also split into prefill, measured directly (a generation of one token:
  the prompt's forward and the first token), and the mean decode step
  (the rest of the generation over the remaining new_tokens - 1 steps).
- group8_prefill_ratio: the prefill (one-token generation) of the batch's
  prompts with 8 sampled rows each (one prefill per prompt, its cache copied
  to the 8 rows) over the same prompts with one row each. Target <= 1.25.
- turn2_reuse_s: attempt 2 (turn_len new instruction tokens, then
  new_tokens tokens) continued from attempt 1's cache; turn2_reprefill_s: the
  same attempt 2 sampled from scratch on the packed [prompt, attempt 1,
  instruction] context. Both produce the same tokens (checked) and both
  decode over the same cache length, so they differ only in what they
  prefill. Each prefill is measured directly, as a one-token attempt 2
  (turn2_turn_prefill_s, turn2_context_prefill_s); turn2_decode_s is the
  re-prefilled attempt 2 less its prefill, and turn2_reuse_floor is the ratio
  a free prefill of the turn would give.
- fraction_of_bandwidth_bound: (bytes one decode step must read: every
  parameter, plus the K/V cache the step attends over) / (bandwidth of a
  large jitted reduction measured in this run), divided by the measured
  decode step time. 1.0 would mean decode streams memory at the measured
  rate. The FLOP rate of the step is reported beside it, with that of a
  lone matmul of the unembedding's shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import bench
from scorejax.models import hf
from scorejax.models.config import ModelConfig
from scorejax.models.lm import LM
from scorejax.sampling import (
    Greedy,
    SamplerConfig,
    continue_sampling,
    resample_from_scratch,
    sample,
)

TARGET_RATIO_VS_HF = 2.0  # scorejax_tokens_per_s / hf_tokens_per_s must reach this
TARGET_REUSE_FRACTION = 0.6  # turn2_reuse_s / turn2_reprefill_s must stay below this
TARGET_GROUP_PREFILL = 1.25  # group8_prefill_ratio must stay below this
GROUP = 8  # rows per prompt of the grouped prefill

# The model flags (a Qwen2-architecture model, read by `model_config`) and their defaults.
MODEL_FLAGS = dict(vocab_size=151_936, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2, head_dim=64, d_ff=2048)

# Named model shapes: the model flags they set (`default` sets none: the flags as given).
SHAPES = {
    "default": {},
    "qwen2_100m_v32k": dict(vocab_size=32_000, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64,
                            d_ff=2048),
    "qwen2.5_0.5b": dict(vocab_size=151_936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64,
                         d_ff=4864),
}


def add_model_flags(parser: argparse.ArgumentParser, defaults: dict) -> None:
  """--vocab_size, --d_model, ...: the shape of the random model, `defaults` for each of MODEL_FLAGS."""
  for name in MODEL_FLAGS:
    parser.add_argument(f"--{name}", type=int, default=defaults[name])


def model_config(args) -> ModelConfig:
  return ModelConfig(
      family="qwen2", vocab_size=args.vocab_size, d_model=args.d_model, n_layers=args.n_layers,
      n_heads=args.n_heads, n_kv_heads=args.n_kv_heads, head_dim=args.head_dim, d_ff=args.d_ff,
      rope_theta=1_000_000.0, max_position_embeddings=4096, tie_embeddings=True, qkv_bias=True,
      param_dtype=args.dtype, dtype=args.dtype, eos_token_id=None)


def _timed(fn):
  """(output, wall seconds) of one call, run to completion."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


BANDWIDTH_BYTES = 512 * 2**20  # the array summed to measure bandwidth: far larger than any cache


def bandwidth_probe():
  """A function that sums a BANDWIDTH_BYTES fp32 array (compiled): its time gives bytes per second."""
  x = jnp.ones((BANDWIDTH_BYTES // 4,), jnp.float32)
  reduce = jax.jit(jnp.sum)
  reduce(x).block_until_ready()
  return lambda: reduce(x)


def unembedding_probe(vocab: int, dim: int, batch: int, dtype):
  """A function running one [V, D] x [D, B] matmul (compiled): the decode step's unembedding alone."""
  w = jnp.ones((vocab, dim), dtype)
  h = jnp.ones((dim, batch), dtype)
  mm = jax.jit(lambda w, h: jnp.dot(w, h, preferred_element_type=jnp.float32))
  mm(w, h).block_until_ready()
  return lambda: mm(w, h)


def hf_greedy(hf_dir: str, prompt_BxT: np.ndarray, dtype: str):
  """A function n -> tokens [B, n] running transformers greedy generate (loaded and warmed up)."""
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  ids = torch.tensor(prompt_BxT, dtype=torch.long)
  mask = torch.ones_like(ids)

  def run(n):
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False)
    return out[:, prompt_BxT.shape[1]:].numpy()

  run(2)
  return run


def measure(args) -> dict:
  config = model_config(args)
  lm = LM.from_config(config)
  rng = np.random.default_rng(args.seed)
  b, t, n, p = args.batch, args.prompt_len, args.new_tokens, args.turn_len
  prompt_BxT = rng.integers(0, config.vocab_size, (b, t)).astype(np.int32)
  mask_BxT = np.ones((b, t), bool)
  turn_BxP = rng.integers(0, config.vocab_size, (b, p)).astype(np.int32)
  turn_mask_BxP = np.ones((b, p), bool)
  greedy = Greedy()
  full = SamplerConfig(max_new_tokens=n, stop_tokens=())
  first_token = dataclasses.replace(full, max_new_tokens=1)  # the prefill, and the first token
  episode = full.buckets(full.buckets(t) + n + full.buckets(p) + n)  # cache for both turns
  key = jax.random.key(args.seed)

  with tempfile.TemporaryDirectory() as hf_dir:
    hf.save_hf(lm, lm.init(jax.random.key(args.seed)), hf_dir)
    lm, params = hf.load_hf(hf_dir)  # the very weights transformers reads
    hf_run = hf_greedy(hf_dir, prompt_BxT, args.dtype)

  def one_turn(cfg, samples_per_prompt=1):
    return sample(lm, params, prompt_BxT, mask_BxT, key, greedy, cfg, samples_per_prompt=samples_per_prompt)

  def attempt1():
    return sample(lm, params, prompt_BxT, mask_BxT, key, greedy, full, cache_length=episode)

  def reuse(r1, cfg):
    return continue_sampling(lm, params, r1.context, turn_BxP, turn_mask_BxP, key, greedy, cfg)

  def reprefill(r1, cfg):
    return resample_from_scratch(lm, params, prompt_BxT, mask_BxT, r1, turn_BxP, turn_mask_BxP, key,
                                 greedy, cfg)

  # COMPILE every program once
  read_all = bandwidth_probe()
  unembed = unembedding_probe(config.vocab_size, config.d_model, b, config.jnp_dtype)
  for cfg in (full, first_token):
    jax.block_until_ready(one_turn(cfg))
  jax.block_until_ready(one_turn(first_token, GROUP))
  r1 = jax.block_until_ready(attempt1())
  for cfg in (full, first_token):
    jax.block_until_ready(reprefill(r1, cfg))
  for cfg in (full, first_token):
    jax.block_until_ready(reuse(jax.block_until_ready(attempt1()), cfg))  # reuse consumes attempt 1's cache

  # MEASURE in interleaved rounds; each figure is its best round, so a burst of load on the shared
  # machine hits one round of one side rather than a whole side.
  times: dict[str, list[float]] = {}

  def timed(name, fn):
    out, seconds = _timed(fn)
    times.setdefault(name, []).append(seconds)
    return out

  for _ in range(args.repeats):
    for _ in range(5):
      timed("bandwidth_sum", read_all)
      timed("unembedding_matmul", unembed)
    ours_tokens = np.asarray(timed("ours", lambda: one_turn(full)).tokens_BxN)
    timed("ours_prefill", lambda: one_turn(first_token))
    timed("ours_prefill_group", lambda: one_turn(first_token, GROUP))
    hf_tokens = timed("hf", lambda: hf_run(n))
    timed("hf_prefill", lambda: hf_run(1))
    r1 = jax.block_until_ready(attempt1())
    reprefilled = timed("reprefill", lambda: reprefill(r1, full))
    timed("reprefill_first", lambda: reprefill(r1, first_token))
    timed("reuse_first", lambda: reuse(r1, first_token))  # consumes r1's cache
    r1 = jax.block_until_ready(attempt1())
    reused = timed("reuse", lambda: reuse(r1, full))
  best = {name: min(seconds) for name, seconds in times.items()}
  ours_s, hf_s, reuse_s, reprefill_s = best["ours"], best["hf"], best["reuse"], best["reprefill"]
  turn2_match = bool(np.array_equal(np.asarray(reused.tokens_BxN), np.asarray(reprefilled.tokens_BxN)))

  # BOUNDS
  bandwidth = BANDWIDTH_BYTES / best["bandwidth_sum"] / 1e9
  itemsize = jnp.dtype(args.dtype).itemsize
  param_bytes = config.num_params() * itemsize
  cache_slots = full.buckets(full.buckets(t) + n)
  cache_bytes = 2 * config.n_layers * b * cache_slots * config.n_kv_heads * config.head_dim * itemsize
  bound_step_s = (param_bytes + cache_bytes) / (bandwidth * 1e9)
  prefill_s, hf_prefill_s = best["ours_prefill"], best["hf_prefill"]
  decode_step_s = (ours_s - prefill_s) / max(n - 1, 1)
  hf_step_s = (hf_s - hf_prefill_s) / max(n - 1, 1)
  group_ratio = best["ours_prefill_group"] / prefill_s
  # Both turn-2 variants decode n tokens over the same cache length; they differ in what they prefill,
  # each measured directly as a one-token attempt 2.
  context_prefill_s, turn_prefill_s = best["reprefill_first"], best["reuse_first"]
  turn2_decode_s = reprefill_s - context_prefill_s
  embed = config.vocab_size * config.d_model
  # Each matmul weight is used once per row; the input embedding is a gather (free) unless tied.
  matmul_params = config.num_params() - (0 if config.tie_embeddings else embed)
  step_flops = 2 * b * matmul_params
  matmul_rate = 2 * b * embed / best["unembedding_matmul"] / 1e9

  ours_rate = b * n / ours_s
  hf_rate = b * n / hf_s
  ratio = ours_rate / hf_rate
  reuse_fraction = reuse_s / reprefill_s
  return {
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "shape": dict(batch=b, prompt_len=t, new_tokens=n, turn_len=p, dtype=args.dtype, repeats=args.repeats),
      "model": dict(family="qwen2", params=config.num_params(), vocab_size=config.vocab_size,
                    d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                    n_kv_heads=config.n_kv_heads, head_dim=config.head_dim, d_ff=config.d_ff),
      "scorejax_s": ours_s,
      "hf_s": hf_s,
      "scorejax_tokens_per_s": ours_rate,
      "hf_tokens_per_s": hf_rate,
      "ratio_vs_hf": ratio,
      "greedy_tokens_equal_hf": float(np.mean(ours_tokens == hf_tokens)),
      "scorejax_prefill_s": prefill_s,
      "scorejax_decode_step_s": decode_step_s,
      "hf_prefill_s": hf_prefill_s,
      "hf_decode_step_s": hf_step_s,
      "group8_prefill_s": best["ours_prefill_group"],
      "group8_prefill_ratio": group_ratio,
      "turn2_reuse_s": reuse_s,
      "turn2_reprefill_s": reprefill_s,
      "turn2_reuse_over_reprefill": reuse_fraction,
      "turn2_decode_s": turn2_decode_s,
      "turn2_context_prefill_s": context_prefill_s,
      "turn2_turn_prefill_s": turn_prefill_s,
      # Even a free prefill of the new turn leaves reuse / re-prefill at least this.
      "turn2_reuse_floor": turn2_decode_s / reprefill_s,
      "turn2_tokens_equal": turn2_match,
      "bandwidth_gb_s": bandwidth,
      "decode_bytes_per_step": param_bytes + cache_bytes,
      "bandwidth_bound_step_s": bound_step_s,
      "fraction_of_bandwidth_bound": bound_step_s / decode_step_s,
      "decode_gflop_per_s": step_flops / decode_step_s / 1e9,
      "unembedding_matmul_gflop_per_s": matmul_rate,
      "seconds_per_round": times,
      "targets": {
          "ratio_vs_hf": f">= {TARGET_RATIO_VS_HF}: {'met' if ratio >= TARGET_RATIO_VS_HF else 'MISSED'}",
          "turn2_reuse_over_reprefill": (f"<= {TARGET_REUSE_FRACTION}: "
                                         f"{'met' if reuse_fraction <= TARGET_REUSE_FRACTION else 'MISSED'}"),
          "group8_prefill_ratio": (f"<= {TARGET_GROUP_PREFILL}: "
                                   f"{'met' if group_ratio <= TARGET_GROUP_PREFILL else 'MISSED'}"),
      },
  }


def table(r: dict) -> str:
  s, m = r["shape"], r["model"]
  rows = [
      ("scorejax tokens/s", f"{r['scorejax_tokens_per_s']:.1f}", f"{r['scorejax_s']:.2f} s per generation"),
      ("transformers tokens/s", f"{r['hf_tokens_per_s']:.1f}", f"{r['hf_s']:.2f} s per generation"),
      ("ratio vs transformers", f"{r['ratio_vs_hf']:.2f}", r["targets"]["ratio_vs_hf"]),
      ("greedy tokens equal", f"{r['greedy_tokens_equal_hf']:.3f}", "fraction of [B, N] equal to HF"),
      ("prefill s", f"{r['scorejax_prefill_s']:.3f}", f"transformers: {r['hf_prefill_s']:.3f}"),
      ("decode step s", f"{r['scorejax_decode_step_s']:.4f}", f"transformers: {r['hf_decode_step_s']:.4f}"),
      (f"prefill x{GROUP} rows / x1", f"{r['group8_prefill_ratio']:.2f}",
       f"{r['targets']['group8_prefill_ratio']}; {r['group8_prefill_s']:.3f} s with {GROUP} rows per prompt"),
      ("turn 2, cache reuse s", f"{r['turn2_reuse_s']:.2f}",
       f"prefill of the turn alone {r['turn2_turn_prefill_s']:.2f}"),
      ("turn 2, re-prefill s", f"{r['turn2_reprefill_s']:.2f}",
       f"prefill of the context {r['turn2_context_prefill_s']:.2f} + decode {r['turn2_decode_s']:.2f}; tokens equal: "
       f"{r['turn2_tokens_equal']}"),
      ("reuse / re-prefill", f"{r['turn2_reuse_over_reprefill']:.2f}",
       f"{r['targets']['turn2_reuse_over_reprefill']}; floor with a free turn prefill: "
       f"{r['turn2_reuse_floor']:.2f}"),
      ("bandwidth GB/s", f"{r['bandwidth_gb_s']:.1f}", f"jitted sum over {BANDWIDTH_BYTES // 2**20} MiB"),
      ("bandwidth-bound step s", f"{r['bandwidth_bound_step_s']:.4f}",
       f"{r['decode_bytes_per_step'] / 2**20:.0f} MiB of weights + cache per step"),
      ("fraction of bw bound", f"{r['fraction_of_bandwidth_bound']:.2f}", ""),
      ("decode GFLOP/s", f"{r['decode_gflop_per_s']:.1f}",
       f"unembedding-shaped matmul alone: {r['unembedding_matmul_gflop_per_s']:.1f}"),
  ]
  head = (f"greedy sampling, {r['backend']} x{r['devices']}: qwen2 {m['params'] / 1e6:.0f}M params "
          f"(V={m['vocab_size']}, D={m['d_model']}, L={m['n_layers']}), B={s['batch']}, "
          f"prompt={s['prompt_len']}, new={s['new_tokens']}, turn 2 instruction={s['turn_len']}, "
          f"{s['dtype']}")
  width = max(len(name) for name, _, _ in rows)
  return "\n".join([head] + [f"{name:<{width}}  {value:>10}  {note}" for name, value, note in rows])


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m scorejax.bench sampler",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--shapes", default=",".join(SHAPES),
                      help=f"comma-separated model shapes, of {', '.join(SHAPES)} ('default': the model flags)")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--turn_len", type=int, default=64, help="turn-2 instruction tokens")
  add_model_flags(parser, MODEL_FLAGS)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="parameters and compute, for both scorejax and transformers")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=3,
                      help="rounds of measurements; each figure is the best of its rounds")
  parser.add_argument("--out", default=None, help="write the figures as JSON here")
  args = parser.parse_args(argv)
  names = [name for name in args.shapes.split(",") if name]
  unknown = [name for name in names if name not in SHAPES]
  if unknown or not names:
    parser.error(f"--shapes: unknown {unknown}; expected some of {', '.join(SHAPES)}")
  shapes = {}
  for name in names:
    shapes[name] = measure(argparse.Namespace(**dict(vars(args), **SHAPES[name])))
    print(f"[{name}]\n{table(shapes[name])}\n", flush=True)
  result = dict(shapes[names[0]], shapes=shapes,
                min_ratio_vs_hf=min(r["ratio_vs_hf"] for r in shapes.values()))
  bench.emit(result, f"min ratio vs transformers over {len(shapes)} shape(s): {result['min_ratio_vs_hf']:.2f} "
             f"(target >= {TARGET_RATIO_VS_HF})", args.out)
  return 0
