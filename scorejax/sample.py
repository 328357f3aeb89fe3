"""Generate from an HF checkpoint with the in-JAX sampler.

  python -m scorejax.sample --hf_dir=DIR --prompt="2+3=" --max_new_tokens=32 --greedy
  python -m scorejax.sample --hf_dir=DIR --prompt_ids=1,2,3 --max_new_tokens=32 \
      --temperature=0.7 --top_p=0.9 --seed=0

Prints the generated token ids (stop token included) on a line
`ids=<comma-separated>`, then the decoded text when the directory holds a
tokenizer. --prompt needs one; --prompt_ids does not. Generation stops at the
model's EOS (or --stop_ids) or after --max_new_tokens tokens.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

_HF_DIR = flags.DEFINE_string("hf_dir", None,
                              "HF model directory (config.json + *.safetensors [+ tokenizer]).")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt text, encoded with the directory's tokenizer.")
_PROMPT_IDS = flags.DEFINE_string("prompt_ids", None, "Prompt token ids, comma-separated.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Most tokens to generate.")
_GREEDY = flags.DEFINE_bool("greedy", False, "Argmax decoding (overrides the sampling flags).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass kept, in (0, 1].")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k highest logits (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_STOP_IDS = flags.DEFINE_string("stop_ids", None,
                                "Stop token ids, comma-separated (default: the model's EOS).")
_CACHE_LENGTH = flags.DEFINE_integer("cache_length", None,
                                     "KV cache slots (default: prompt + max_new_tokens, bucketed).")


def parse_ids(flag: str, value: str) -> list[int]:
  """'1, 2,3' -> [1, 2, 3], or a usage error naming the flag and the bad item."""
  ids = []
  for item in value.split(","):
    try:
      ids.append(int(item.strip()))
    except ValueError:
      raise app.UsageError(f"--{flag}={value!r}: {item.strip()!r} is not an integer token id") from None
  return ids


def _tokenizer(hf_dir: str, required: bool):
  """The directory's tokenizer, None when it has none and none is required."""
  from scorejax.tokenizers import HFTokenizer
  try:
    return HFTokenizer(hf_dir)
  except FileNotFoundError as e:
    if required:
      raise app.UsageError(f"--prompt needs a tokenizer in --hf_dir: {e}; or pass --prompt_ids") from None
    return None


def generate(hf_dir: str, prompt_ids: list[int], tokenizer) -> tuple[list[int], str | None]:
  """(generated ids, decoded text or None) for one prompt."""
  import jax

  from scorejax.models import hf
  from scorejax.sampling import SamplerConfig, rule_from_flags, sample
  from scorejax.sampling.buckets import left_pad

  lm, params = hf.load_hf(hf_dir)
  stops = None
  if _STOP_IDS.value is not None:
    stops = tuple(parse_ids("stop_ids", _STOP_IDS.value))
  elif lm.config.eos_token_id is None and tokenizer is not None:
    stops = (tokenizer.eos_id,)
  pad_id = tokenizer.pad_id if tokenizer is not None and tokenizer.pad_id < lm.config.vocab_size else 0
  config = SamplerConfig(max_new_tokens=_MAX_NEW_TOKENS.value, stop_tokens=stops, pad_id=pad_id)
  rule = rule_from_flags(_GREEDY.value, _TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  tokens_BxT, mask_BxT = left_pad([prompt_ids], pad_id, buckets=config.buckets)
  rollout = sample(lm, params, tokens_BxT, mask_BxT, jax.random.key(_SEED.value), rule, config,
                   cache_length=_CACHE_LENGTH.value)
  ids = [int(t) for t in jax.device_get(rollout.tokens_BxN)[0, :int(rollout.lengths_B[0])]]
  text = None if tokenizer is None else tokenizer.decode(ids, skip_special_tokens=True)
  return ids, text


def main(argv):
  del argv
  if not _HF_DIR.value:
    raise app.UsageError("--hf_dir is required")
  if (_PROMPT.value is None) == (_PROMPT_IDS.value is None):
    raise app.UsageError("pass exactly one of --prompt=TEXT and --prompt_ids=1,2,3")
  if not os.path.isdir(_HF_DIR.value):
    raise app.UsageError(f"--hf_dir={_HF_DIR.value!r} is not a directory")
  if _PROMPT.value is None:
    prompt_ids = parse_ids("prompt_ids", _PROMPT_IDS.value)
  tokenizer = _tokenizer(_HF_DIR.value, required=_PROMPT.value is not None)
  if _PROMPT.value is not None:
    prompt_ids = tokenizer.encode(_PROMPT.value)
  try:
    ids, text = generate(_HF_DIR.value, prompt_ids, tokenizer)
  except ValueError as e:  # bad input found by the sampler: say what, without a traceback
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print("ids=" + ",".join(str(t) for t in ids))
  if text is not None:
    print(text)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
