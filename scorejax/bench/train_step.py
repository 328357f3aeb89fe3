"""Benchmark: throughput and FLOP utilization of a full train step.

  python -m scorejax.bench train_step [--dtypes=float32,bfloat16] [--out=FILE.json] [--d_model=768 ...]

One run measures, on the same machine and in the same process, for each
compute dtype: the peak FLOP/s of a large matmul in that dtype (the best this
backend does on dense work), and a full train step (forward, backward, AdamW
update; SFT loss with chunked log-probs) of a Qwen2-architecture model of
about 100M parameters computing in that dtype (parameters and optimizer state
stay fp32, log-probs are fp32). The achieved FLOP/s count the model FLOPs per
token (6 N for the matmuls with parameters plus 12 L D T for attention scores
and values, the usual MFU convention) divided by the measured step time.
Where PyTorch is installed, the same matmul in PyTorch is measured too, a peer
for what this machine's own kernels reach in each dtype (on CPU, XLA computes
a bf16 dot as an fp32 one between converts). With several dtypes the JSON's
top level holds the first one's figures and `by_dtype` holds each.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import bench, parallel
from scorejax.models import LM, ModelConfig
from scorejax.objectives.logprobs import token_logprobs
from scorejax.objectives.sft import nll_token_mean
from scorejax.train_step import OptimizerConfig, init_train_state, make_optimizer, make_train_step


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m scorejax.bench train_step", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default=None, help="write the figures as JSON here")
  p.add_argument("--vocab", type=int, default=32_768)
  p.add_argument("--d_model", type=int, default=768)
  p.add_argument("--n_layers", type=int, default=12)
  p.add_argument("--n_heads", type=int, default=12)
  p.add_argument("--n_kv_heads", type=int, default=4)
  p.add_argument("--d_ff", type=int, default=2048)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--chunk", type=int, default=128, help="log-prob chunk (tokens per row)")
  p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
  p.add_argument("--matmul", type=int, default=3072, help="size n of the n x n x n peak matmul")
  p.add_argument("--remat", action="store_true")
  p.add_argument("--dtypes", default="float32",
                 help="comma-separated compute dtypes to measure, each against its own matmul peak: float32, bfloat16")
  args = p.parse_args(argv)
  args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  for dtype in args.dtypes:
    if dtype not in _DTYPES:
      p.error(f"--dtypes: {dtype!r} is not one of {', '.join(_DTYPES)}")
  return args


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _best_seconds(fn, repeats: int) -> float:
  """The fastest of `repeats` timed calls of `fn` after one untimed (warm-up) call."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def matmul_peak_flops(n: int, dtype=jnp.float32, repeats: int = 5) -> float:
  """Best FLOP/s of an n x n x n matmul with operands and result in `dtype`."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.matmul)
  return 2 * n**3 / _best_seconds(lambda: f(a, b).block_until_ready(), repeats)


def torch_matmul_peak_flops(n: int, dtype: str, repeats: int = 5) -> float | None:
  """The same matmul's best FLOP/s in PyTorch (a peer for what this CPU's kernels reach), None without torch."""
  try:
    import torch
  except ImportError:
    return None
  a = torch.randn(n, n, dtype=getattr(torch, dtype))
  b = torch.randn(n, n, dtype=getattr(torch, dtype))
  return 2 * n**3 / _best_seconds(lambda: a @ b, repeats)


def model_flops_per_token(config: ModelConfig, seq: int) -> float:
  """6 N (every parameter matmul, forward + backward) + 12 L D T (attention)."""
  n_matmul = config.num_params() - config.vocab_size * config.d_model * (0 if config.tie_embeddings else 1)
  n_matmul -= config.d_model * (2 * config.n_layers + 1)  # norms are not matmuls
  attn = 12 * config.n_layers * config.n_heads * config.head_dim * seq
  return 6 * n_matmul + attn


def sft_loss(lm: LM, chunk: int):
  def loss_fn(params, batch):
    tokens, mask = batch["tokens"], batch["mask"]
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    h, _ = lm.hidden(params, tokens, positions, mask)
    logp = token_logprobs(h[:, :-1], lm.unembedding(params), tokens[:, 1:], chunk_size=chunk,
                          logit_softcap=lm.config.final_logit_softcap)
    return nll_token_mean(logp, mask[:, 1:]), {}
  return loss_fn


def run(args) -> dict:
  by_dtype = {dtype: run_dtype(args, dtype) for dtype in args.dtypes}
  first = by_dtype[args.dtypes[0]]
  return first if len(by_dtype) == 1 else {**first, "by_dtype": by_dtype}


def run_dtype(args, dtype: str) -> dict:
  """The matmul peak and the train step's figures with activations computed in `dtype`."""
  peak = matmul_peak_flops(args.matmul, _DTYPES[dtype])
  config = ModelConfig(
      family="qwen2", vocab_size=args.vocab, d_model=args.d_model, n_layers=args.n_layers,
      n_heads=args.n_heads, n_kv_heads=args.n_kv_heads, head_dim=args.d_model // args.n_heads,
      d_ff=args.d_ff, qkv_bias=True, tie_embeddings=True, remat=args.remat, dtype=dtype)
  lm = LM.from_config(config)
  mesh = parallel.make_mesh({"data": -1})
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-4))
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh)
  step = make_train_step(sft_loss(lm, args.chunk), optimizer, shardings, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({"tokens": rng.integers(0, args.vocab, (args.batch, args.seq)).astype(np.int32),
                                "mask": np.ones((args.batch, args.seq), bool)}, mesh)
  t = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_and_first_s = time.perf_counter() - t
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  tokens = args.batch * args.seq
  achieved = model_flops_per_token(config, args.seq) * tokens / step_s
  return {
      "device": jax.devices()[0].device_kind, "num_devices": jax.device_count(), "dtype": dtype,
      "params": config.num_params(), "batch": args.batch, "seq": args.seq,
      "step_s": step_s, "first_step_s": compile_and_first_s,
      "tokens_per_s": tokens / step_s,
      "achieved_flops_per_s": achieved,
      "matmul_peak_flops_per_s": peak,
      "fraction_of_peak": achieved / peak,
      "torch_matmul_peak_flops_per_s": torch_matmul_peak_flops(args.matmul, dtype),
      "loss": float(metrics["loss"]),
  }


def _table(result: dict) -> str:
  by_dtype = result.get("by_dtype", {result["dtype"]: result})
  lines = [f"{'metric':<26}" + "".join(f"{dtype:>16}" for dtype in by_dtype)]
  for key in ("params", "batch", "seq", "step_s", "tokens_per_s", "achieved_flops_per_s",
              "matmul_peak_flops_per_s", "fraction_of_peak", "torch_matmul_peak_flops_per_s", "loss"):
    values = [figures[key] for figures in by_dtype.values()]
    values = ["-" if v is None else v for v in values]
    lines.append(f"{key:<26}" + "".join(f"{v:>16.4g}" if isinstance(v, float) else f"{v:>16}" for v in values))
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  bench.emit(result, _table(result), args.out)
  return 0


if __name__ == "__main__":
  main()
