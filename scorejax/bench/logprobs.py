"""Peak memory of chunked vs plain token log-probs, forward and backward.

  python -m scorejax.bench logprobs [--out=FILE.json] [--vocab=151936 --batch=8 --seq=1024
                                     --dim=896 --chunk=128]

Both losses are `sum(token_logprobs)`, differentiated with value_and_grad
with respect to the hidden states and the [V, D] unembedding matrix; the
plain one materializes [B, T, V] fp32 logits and takes log_softmax. Nothing
is run: each function is compiled for the current backend and XLA's buffer
assignment is read from `compiled.memory_analysis()`. The reported peak is

  peak_bytes = argument + output + temp - alias

(temp is the single scratch allocation that buffer assignment sizes to the
largest set of intermediates live at once, so the sum bounds what the
computation holds at one time). The defaults are Qwen2-0.5B's hidden size
and vocabulary with 8 x 1024 tokens: bf16 hidden states, fp32 unembedding.
The target is chunked_peak_bytes <= plain_peak_bytes / 4.
"""

import argparse

import jax
import jax.numpy as jnp

from scorejax import bench
from scorejax.objectives.logprobs import token_logprobs, token_logprobs_plain

TARGET_RATIO = 4.0  # plain peak / chunked peak must reach this


def _compiled_memory(loss_fn, hidden, unembed, targets) -> dict[str, int]:
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
  stats = grad_fn.lower(hidden, unembed, targets).compile().memory_analysis()
  memory = {
      "argument_bytes": int(stats.argument_size_in_bytes),
      "output_bytes": int(stats.output_size_in_bytes),
      "temp_bytes": int(stats.temp_size_in_bytes),
      "alias_bytes": int(stats.alias_size_in_bytes),
  }
  memory["peak_bytes"] = (
      memory["argument_bytes"] + memory["output_bytes"] + memory["temp_bytes"] - memory["alias_bytes"]
  )
  return memory


def measure(*, vocab: int, batch: int, seq: int, dim: int, chunk: int, hidden_dtype: str,
            unembed_dtype: str) -> dict:
  """Compile both value_and_grads at this size and return their memory figures."""
  hidden = jax.ShapeDtypeStruct((batch, seq, dim), jnp.dtype(hidden_dtype))
  unembed = jax.ShapeDtypeStruct((vocab, dim), jnp.dtype(unembed_dtype))
  targets = jax.ShapeDtypeStruct((batch, seq), jnp.int32)

  def chunked_loss(h, w, t):
    return jnp.sum(token_logprobs(h, w, t, chunk_size=chunk))

  def plain_loss(h, w, t):
    logits = jnp.einsum("btd,vd->btv", h, w, preferred_element_type=jnp.float32)
    return jnp.sum(token_logprobs_plain(logits, t))

  chunked = _compiled_memory(chunked_loss, hidden, unembed, targets)
  plain = _compiled_memory(plain_loss, hidden, unembed, targets)
  ratio = plain["peak_bytes"] / chunked["peak_bytes"]
  return {
      "backend": jax.default_backend(),
      "shape": {"vocab": vocab, "batch": batch, "seq": seq, "dim": dim, "chunk": chunk,
                "hidden_dtype": hidden_dtype, "unembed_dtype": unembed_dtype},
      "peak_definition": "argument + output + temp - alias bytes of the compiled value_and_grad",
      "full_logits_bytes": batch * seq * vocab * 4,
      "chunked": chunked,
      "plain": plain,
      "chunked_peak_bytes": chunked["peak_bytes"],
      "plain_peak_bytes": plain["peak_bytes"],
      "plain_over_chunked": ratio,
      "target_ratio": TARGET_RATIO,
      "target_met": ratio >= TARGET_RATIO,
  }


def _table(result: dict) -> str:
  shape = result["shape"]
  mib = 2.0**20
  lines = [
      f"token log-probs, value_and_grad w.r.t. hidden and unembedding ({result['backend']}, "
      "XLA memory analysis, MiB)",
      f"B={shape['batch']} T={shape['seq']} D={shape['dim']} V={shape['vocab']} chunk={shape['chunk']} "
      f"hidden={shape['hidden_dtype']} unembed={shape['unembed_dtype']}; "
      f"full fp32 logits = {result['full_logits_bytes'] / mib:,.0f} MiB",
      f"{'':10}{'argument':>12}{'output':>12}{'temp':>12}{'peak':>12}",
  ]
  for name in ("chunked", "plain"):
    m = result[name]
    lines.append(f"{name:10}" + "".join(
        f"{m[key] / mib:>12,.1f}" for key in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes")))
  verdict = "met" if result["target_met"] else "MISSED"
  lines.append(f"plain / chunked peak = {result['plain_over_chunked']:.2f} "
               f"(target >= {result['target_ratio']:.0f}: {verdict})")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m scorejax.bench logprobs", description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, default=151_936)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--dim", type=int, default=896)
  parser.add_argument("--chunk", type=int, default=128, help="sequence positions per chunk")
  parser.add_argument("--hidden-dtype", default="bfloat16")
  parser.add_argument("--unembed-dtype", default="float32")
  parser.add_argument("--out", default=None, help="write the figures as JSON here")
  args = parser.parse_args(argv)
  result = measure(vocab=args.vocab, batch=args.batch, seq=args.seq, dim=args.dim, chunk=args.chunk,
                   hidden_dtype=args.hidden_dtype, unembed_dtype=args.unembed_dtype)
  bench.emit(result, _table(result), args.out)
  return 0
