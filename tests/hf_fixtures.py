"""Tiny random HF checkpoints of each supported family, built locally with transformers + torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from scorejax import config_blocks
from scorejax.config_blocks import set_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILY_KWARGS = {
    "llama": dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        rope_theta=500_000.0, bos_token_id=1, eos_token_id=2),
    "qwen2": dict(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=1_000_000.0,
        bos_token_id=None, eos_token_id=3),
    "qwen3": dict(
        vocab_size=103, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1_000_000.0,
        bos_token_id=None, eos_token_id=3),
    # A window of 5 positions, so that the 12-token test rows and long prompts cross it; caps small enough to bind
    # at this init (each one skipped moves the logits by more than 1e-3) and a
    # query scalar unlike head_dim, so that a skipped soft-cap or the wrong scale shows.
    "gemma2": dict(
        vocab_size=107, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=10_000.0, query_pre_attn_scalar=24, sliding_window=5,
        attn_logit_softcapping=0.05, final_logit_softcapping=5.0, bos_token_id=2, eos_token_id=1, pad_token_id=0),
    # Layers sliding, full, sliding: each with its own RoPE base, the full one scaled linearly.
    "gemma3": dict(
        vocab_size=109, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-6, query_pre_attn_scalar=24, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0}},
        bos_token_id=2, eos_token_id=1, pad_token_id=0),
}


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789+-*=: \n<>\\{}"
VOCAB = 4 + len(ALPHABET)  # 52


def save_char_tokenizer(path):
  """A one-character-per-token HF tokenizer: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, then ALPHABET."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3}
  vocab.update({c: i + 4 for i, c in enumerate(ALPHABET)})
  backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
  backend.decoder = decoders.Fuse()
  PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]",
                          eos_token="[EOS]", unk_token="[UNK]").save_pretrained(str(path))


QWEN_TEMPLATE = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def save_bpe_tokenizer(path, corpus, chat_template=QWEN_TEMPLATE, eos="<|im_end|>", vocab_size=600) -> int:
  """A byte-level BPE trained on `corpus` with Qwen's special tokens; returns its size."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(corpus, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>",
                                 chat_template=chat_template)
  fast.save_pretrained(path)
  return len(fast)


def build_hf_model(family: str, seed: int = 0, **overrides):
  """A random tiny transformers model of `family` (fp32, eval mode)."""
  import torch
  import transformers
  kwargs = dict(FAMILY_KWARGS[family], **overrides)
  cls_config = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                "qwen3": transformers.Qwen3Config, "gemma2": transformers.Gemma2Config,
                "gemma3": transformers.Gemma3TextConfig}[family]
  cls_model = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
               "qwen3": transformers.Qwen3ForCausalLM, "gemma2": transformers.Gemma2ForCausalLM,
               "gemma3": transformers.Gemma3ForCausalLM}[family]
  torch.manual_seed(seed)
  model = cls_model(cls_config(**kwargs)).eval()
  with torch.no_grad():  # random biases and norms, so a mis-mapped tensor shows
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def save_hf_model(family: str, path: str, seed: int = 0, **overrides) -> str:
  build_hf_model(family, seed, **overrides).save_pretrained(path, safe_serialization=True)
  return str(path)


def tiny_qwen(hf_dir, corpus) -> str:
  """A tiny random Qwen2 with a byte-level BPE trained on `corpus` and the chat template's words; returns its
  directory."""
  vocab = save_bpe_tokenizer(hf_dir, [*corpus, "system user assistant You are a helpful assistant."])
  return save_hf_model("qwen2", hf_dir, vocab_size=vocab, eos_token_id=2, max_position_embeddings=1024)


def padded_batch(vocab_size: int, seed: int = 0):
  """tokens, positions, mask [3, 12]: a full row and two left-padded rows."""
  rng = np.random.default_rng(seed)
  lengths = [12, 7, 3]
  tokens = rng.integers(4, vocab_size, size=(3, 12)).astype(np.int32)
  mask = np.zeros((3, 12), bool)
  for i, n in enumerate(lengths):
    mask[i, 12 - n:] = True
  tokens = np.where(mask, tokens, 0).astype(np.int32)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, positions, mask


def hf_logits(model, tokens, positions, mask) -> np.ndarray:
  import torch
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()


def config_module(config_file: str):
  """The module of configs/<config_file> (its get_config, its VARIANTS)."""
  return config_blocks.config_module(os.path.join(ROOT, "configs", config_file))


def config_with(config_file: str, arg: str, overrides: dict):
  """configs/<config_file>'s get_config(arg) with dotted-key overrides, as the command line would set them."""
  return set_keys(config_module(config_file).get_config(arg), overrides)


def config_flags(overrides: dict) -> list[str]:
  """`--config.key=value` flags of dotted-key overrides (a tuple written as Python, as the flags parse it)."""
  return [f"--config.{k}={repr(v) if isinstance(v, tuple) else v}" for k, v in overrides.items()]


def main_env() -> dict:
  """A `python -m scorejax.main` subprocess's environment: one CPU device, whatever the test process has."""
  return dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")


def main_command(args, workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "scorejax.main", *args, f"--workdir={workdir}", *extra]


def run_main(args, workdir, *extra):
  """Runs an experiment to the end in a subprocess (10 minutes at most); returns the CompletedProcess."""
  return subprocess.run(main_command(args, workdir, *extra), capture_output=True, text=True, timeout=600,
                        env=main_env())


def killed_main(args, workdir, ready, timeout: float = 600):
  """Starts an experiment and SIGKILLs it as soon as `ready()` holds (or it ends); a run still short of
  `ready()` after `timeout` seconds is killed and fails the test as too slow, not as a run that lost data."""
  proc = subprocess.Popen(main_command(args, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=main_env())
  deadline = time.time() + timeout
  while not ready() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  late = proc.poll() is None and not ready()
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  if late:
    raise TimeoutError(f"{workdir}: the run to be killed was not at its kill point after {timeout:.0f} s "
                       "(a loaded machine?); nothing was checked")


def finished_main(args, workdir):
  """(workdir, CompletedProcess) of an experiment run to the end, which must succeed."""
  proc = run_main(args, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


# ----------------------------------------------------------------------------
# Tiny real-data files: MATH-format problems, ProcessBench subsets
# ----------------------------------------------------------------------------

PROBLEMS = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 9 - 7?", "2"), ("What is 3 * 3?", "9")]


def solution_steps(q, a, wrong=False) -> list[str]:
  """Steps of a solution to one of PROBLEMS; with `wrong`, the second step is off."""
  x = q.removeprefix("What is ").removesuffix("?")
  value = str(int(a) + 1) if wrong else a
  return [f"We compute {x}.", f"So {x} = {value}.", f"The final answer is \\boxed{{{value}}}."]


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def processbench_files(root) -> list[str]:
  paths = []
  for subset, problems in (("gsm8k", PROBLEMS[:2]), ("math", PROBLEMS[2:])):
    rows = []
    for i, (q, a) in enumerate(problems):
      rows.append({"id": f"{subset}-{i}", "generator": "tiny", "problem": q, "steps": solution_steps(q, a),
                   "final_answer_correct": True, "label": -1})
      rows.append({"id": f"{subset}-{i}w", "generator": "tiny", "problem": q, "steps": solution_steps(q, a, True),
                   "final_answer_correct": False, "label": 1})
    paths.append(write_jsonl(root / f"{subset}.jsonl", rows))
  return paths


def math_file(root, name) -> str:
  """PROBLEMS as a MATH-format JSONL (problem, solution with a boxed answer, level, type, unique_id)."""
  return write_jsonl(root / name, [{"problem": q, "solution": f"So it is \\boxed{{{a}}}.", "level": "Level 1",
                                     "type": "Algebra", "unique_id": f"{name}/{i}"}
                                    for i, (q, a) in enumerate(PROBLEMS)])
