"""Token log-probabilities from final hidden states, without [B, T, V] logits.

At Qwen2's vocabulary (V = 151,936) the fp32 logits of a modest batch are the
largest tensor of a training step (8 x 1024 tokens: 5 GB), and autodiff of a
plain log-softmax keeps them, plus their cotangent, for the backward pass.
`token_logprobs` instead scans over chunks of `chunk_size` sequence positions:
each step forms the [B, chunk_size, V] logits of one chunk, reduces them to
one log-probability (and optionally one entropy) per token, and drops them.
The step is wrapped in `jax.checkpoint`, so the backward pass recomputes each
chunk's logits instead of storing them; the gradient of the unembedding
matrix accumulates across steps in a single [V, D] buffer.

Chunks run along the sequence axis, not the batch axis, so the batch axis
keeps whatever data-parallel sharding the hidden states carry.

Alignment: `targets_BxT[b, t]` is the token that `hidden_BxTxD[b, t]`
predicts (callers shift tokens by one). Log-probabilities are those of the
sampling distribution softmax(logits / temperature), so that on-policy
ratios match a sampler run at that temperature.
"""

import math

import jax
import jax.numpy as jnp


def _check_shapes(hidden_BxTxD, unembed_VxD, targets_BxT):
  if hidden_BxTxD.ndim != 3:
    raise ValueError(f"hidden_BxTxD must be [B, T, D], got shape {hidden_BxTxD.shape}")
  if unembed_VxD.ndim != 2 or unembed_VxD.shape[1] != hidden_BxTxD.shape[2]:
    raise ValueError(
        f"unembed_VxD must be [V, D] with D={hidden_BxTxD.shape[2]} (the hidden size), "
        f"got shape {unembed_VxD.shape}"
    )
  if targets_BxT.shape != hidden_BxTxD.shape[:2]:
    raise ValueError(
        f"targets_BxT must be [B, T]={hidden_BxTxD.shape[:2]} like the hidden states, "
        f"got shape {targets_BxT.shape}"
    )


def _chunk_logprobs(hidden_BxCxD, unembed_VxD, targets_BxC, temperature: float, with_entropy: bool,
                    logit_softcap: float | None):
  """Log-probabilities (and entropies) of one chunk; its logits die here."""
  logits_BxCxV = jnp.einsum(
      "bcd,vd->bcv", hidden_BxCxD, unembed_VxD, preferred_element_type=jnp.float32
  )
  if logit_softcap is not None:  # Gemma 2: the model's logits are cap * tanh(raw / cap), then / temperature
    logits_BxCxV = logit_softcap * jnp.tanh(logits_BxCxV / logit_softcap)
  logits_BxCxV = logits_BxCxV / temperature
  lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  target_logit_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  logp_BxC = target_logit_BxC - lse_BxC
  if not with_entropy:
    return logp_BxC, None
  probs_BxCxV = jnp.exp(logits_BxCxV - lse_BxC[..., None])
  entropy_BxC = lse_BxC - jnp.sum(probs_BxCxV * logits_BxCxV, axis=-1)
  return logp_BxC, entropy_BxC


def _scan_chunks(hidden_BxTxD, unembed_VxD, targets_BxT, chunk_size: int, temperature: float,
                 logit_softcap: float | None,
                 with_entropy: bool):
  _check_shapes(hidden_BxTxD, unembed_VxD, targets_BxT)
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive number of sequence positions, got {chunk_size}")
  batch, length, dim = hidden_BxTxD.shape
  chunk = min(chunk_size, length)
  num_chunks = math.ceil(length / chunk)
  # Padding positions produce finite, discarded values; they keep every chunk one shape.
  pad = num_chunks * chunk - length
  hidden_BxLxD = jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0)))
  targets_BxL = jnp.pad(targets_BxT, ((0, 0), (0, pad)))
  hidden_NxBxCxD = hidden_BxLxD.reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)
  targets_NxBxC = targets_BxL.reshape(batch, num_chunks, chunk).swapaxes(0, 1)

  # Rematerialized: the backward pass recomputes the chunk's logits from its inputs.
  chunk_fn = jax.checkpoint(
      lambda h, w, t: _chunk_logprobs(h, w, t, temperature, with_entropy, logit_softcap), prevent_cse=False
  )

  def scan_step(carry, chunk_inputs):
    hidden_BxCxD, targets_BxC = chunk_inputs
    return carry, chunk_fn(hidden_BxCxD, unembed_VxD, targets_BxC)

  _, (logp_NxBxC, entropy_NxBxC) = jax.lax.scan(scan_step, None, (hidden_NxBxCxD, targets_NxBxC))

  def unchunk(x_NxBxC):
    return x_NxBxC.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :length]

  return unchunk(logp_NxBxC), (unchunk(entropy_NxBxC) if with_entropy else None)


def token_logprobs(hidden_BxTxD, unembed_VxD, targets_BxT, *, chunk_size: int,
                   temperature: float = 1.0, logit_softcap: float | None = None):
  """log softmax(hidden @ unembed.T / temperature)[targets], fp32 [B, T], in chunks.

  Args:
    hidden_BxTxD: final (post-norm) hidden states, any float dtype (bf16 is fine).
    unembed_VxD: the unembedding matrix in [V, D] layout (a tied embedding
      table, or HF's lm_head.weight).
    targets_BxT: int token ids; `targets_BxT[b, t]` is predicted at `[b, t]`.
    chunk_size: sequence positions per chunk; peak extra memory is about
      three [B, chunk_size, V] fp32 buffers, forward and backward.
    temperature: the sampling temperature the log-probabilities refer to.
    logit_softcap: the model's final-logit soft-cap (Gemma 2), applied before the temperature.
  """
  logp_BxT, _ = _scan_chunks(hidden_BxTxD, unembed_VxD, targets_BxT, chunk_size, temperature, logit_softcap,
                             with_entropy=False)
  return logp_BxT


def token_logprobs_and_entropy(hidden_BxTxD, unembed_VxD, targets_BxT, *, chunk_size: int,
                               temperature: float = 1.0, logit_softcap: float | None = None):
  """`token_logprobs` plus the entropy of each position's distribution, both fp32 [B, T]."""
  return _scan_chunks(hidden_BxTxD, unembed_VxD, targets_BxT, chunk_size, temperature, logit_softcap,
                      with_entropy=True)


def token_logprobs_plain(logits_BxTxV, targets_BxT):
  """Reference: log_softmax(logits)[targets] on materialized logits, fp32 [B, T]."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


def token_entropy_plain(logits_BxTxV):
  """Reference: entropy of softmax(logits) per position, fp32 [B, T]."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp_BxTxV) * logp_BxTxV, axis=-1)


def sequence_logprobs(lm, params, tokens_BxT, positions_BxT, mask_BxT, *, chunk_size: int,
                      temperature: float = 1.0, dropout_seed_B=None):
  """log p(tokens[:, t] | tokens[:, <t]) under the model `lm`, fp32 [B, T]; column 0 is 0.

  Teacher-forced: one forward pass over the whole sequence, then chunked
  log-probs. The valid tokens of a row must be contiguous (left and/or right
  padding only), because token t is scored from the hidden state at t - 1.
  `dropout_seed_B`: a training step's LoRA dropout seeds (None: no dropout).
  """
  hidden_BxTxD, _ = lm.hidden(params, tokens_BxT, positions_BxT, mask_BxT, dropout_seed_B=dropout_seed_B)
  logp_BxT = token_logprobs(hidden_BxTxD[:, :-1], lm.unembedding(params), tokens_BxT[:, 1:],
                            chunk_size=chunk_size, temperature=temperature,
                            logit_softcap=lm.config.final_logit_softcap)
  return jnp.pad(logp_BxT, ((0, 0), (1, 0)))
