"""Import an HF checkpoint, check it against transformers, and export it back.

  python -m scorejax.convert --hf_dir=DIR --check            # prints max_abs_logit_diff=<float>
  python -m scorejax.convert --hf_dir=DIR --out_dir=OUT      # writes config.json + safetensors

--check runs scorejax and transformers (PyTorch, CPU) in fp32 on the same fixed
batch, one row full and one left-padded, and compares the logits of every real
token. Run it before trusting a new checkpoint.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

_HF_DIR = flags.DEFINE_string("hf_dir", None, "HF model directory (config.json + *.safetensors).")
_CHECK = flags.DEFINE_bool("check", False, "Compare logits against transformers on a fixed batch.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Write the imported parameters back as an HF directory.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 16, "Length of the fixed check batch.")


def check_batch(vocab_size: int, seq_len: int, seed: int = 0):
  """tokens, positions, mask [2, seq_len]: a full row and a left-padded half row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab_size, size=(2, seq_len)).astype(np.int32)
  mask = np.ones((2, seq_len), bool)
  mask[1, : seq_len // 2] = False
  tokens[~mask] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, positions, mask


def max_abs_logit_diff(hf_dir: str, seq_len: int = 16) -> float:
  """Max |scorejax - transformers| fp32 logit over the real tokens of the check batch."""
  try:
    import torch
    import transformers
  except ImportError as e:
    raise SystemExit(f"--check needs PyTorch and transformers ({e}); install with: pip install torch") from e
  import jax

  from scorejax.models import hf

  lm, params = hf.load_hf(hf_dir, param_dtype="float32", dtype="float32")
  tokens, positions, mask = check_batch(lm.config.vocab_size, seq_len)
  ours = np.asarray(jax.jit(lm.apply)(params, tokens, positions, mask)[0])
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                   attention_mask=torch.tensor(mask, dtype=torch.long),
                   position_ids=torch.tensor(positions, dtype=torch.long)).logits.float().numpy()
  return float(np.abs(ours - theirs)[mask].max())


def main(argv):
  del argv
  if not _HF_DIR.value:
    raise app.UsageError("--hf_dir is required")
  if not (_CHECK.value or _OUT_DIR.value):
    raise app.UsageError("nothing to do: pass --check and/or --out_dir")
  if _CHECK.value:
    print(f"max_abs_logit_diff={max_abs_logit_diff(_HF_DIR.value, _SEQ_LEN.value):.6g}")
    sys.stdout.flush()
  if _OUT_DIR.value:
    from scorejax.models import hf
    lm, params = hf.load_hf(_HF_DIR.value)
    hf.save_hf(lm, params, _OUT_DIR.value)
    print(f"wrote {_OUT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
