"""One SCoRe Stage I step, scorejax against the same step in transformers + PyTorch, on the same weights.

  python -m scorejax.bench rl_step [--episodes=8] [--prompt_len=64] [--new_tokens=64] [--turn_len=16] \\
      [--n_layers=12 --d_model=768 --n_heads=12 --n_kv_heads=4 --d_ff=2048 --vocab_size=32000] \\
      [--repeats=2] [--out=rl_step.json]

A step is what `experiments/score.py` runs for B episodes: y1 sampled from
each prompt (temperature 1), the self-correction instruction appended, y2
sampled after it (scorejax continues y1's KV cache; transformers' `generate`
continues its `past_key_values`), the reference model's log-probs of
[x, y1, p, y2], Stage I's loss (a policy gradient on y2's reward with a
leave-one-out baseline, KL to the reference on both attempts), its gradient
and an AdamW update. Both sides read the same random Qwen2-architecture
checkpoint (default: 12 layers of width 768, 12 query / 4 KV heads, a
32,000-token vocabulary: about 100M parameters), sample exactly `new_tokens`
tokens per attempt (no stop token), and train on batches of the same shape;
rewards are a fixed function of the sampled tokens, so both do the same work.

Reported: episodes per second of each side (the best of `repeats` timed
steps, after one untimed step that compiles scorejax's programs and warms
transformers up), their ratio, and each side's split into sampling,
reference log-probs and the update. Target: ratio >= 2.0.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from scorejax import bench, parallel
from scorejax.bench.sampler import SHAPES, add_model_flags, model_config
from scorejax.models import hf
from scorejax.models.lm import LM
from scorejax.objectives import score as score_obj
from scorejax.objectives.logprobs import sequence_logprobs
from scorejax.objectives.loss import build_loss_fn, model_logprobs
from scorejax.rollouts import Segment, first_turn, next_turn, padded_width, to_batch
from scorejax.sampling import Sample, SamplerConfig
from scorejax.train_step import (
  OptimizerConfig,
  init_train_state,
  make_optimizer,
  make_train_step,
)

TARGET_RATIO = 2.0  # scorejax_episodes_per_s / torch_episodes_per_s must reach this
PARTS = ("sampling_s", "reference_s", "update_s")
LEARNING_RATE, BETA1, BETA2, CHUNK = 1e-6, 0.01, 0.1, 128  # Stage I's KL weights (configs/qwen_score.py)


def rewards(ids_BxN: np.ndarray) -> np.ndarray:
  """A reward both sides compute alike from what they sampled: 1 when the attempt's last token is even."""
  return (np.asarray(ids_BxN)[:, -1] % 2 == 0).astype(np.float32)


def rloo_advantage(reward_B: np.ndarray, group: int) -> np.ndarray:
  """reward minus the mean of the other rows of its prompt's group (rows prompt-major)."""
  r = reward_B.reshape(-1, group)
  return ((r - (r.sum(1, keepdims=True) - r) / (group - 1)) if group > 1 else r).reshape(-1)


# ----------------------------------------------------------------------------
# scorejax
# ----------------------------------------------------------------------------


def scorejax_step(hf_dir: str, prompts: list[list[int]], turn: list[int], args):
  """A function key -> {part: seconds} running one whole step (compiled on its first call)."""
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  lm, params = hf.load_hf(hf_dir, mesh)
  n, group = args.new_tokens, args.group
  sampler = SamplerConfig(max_new_tokens=n, stop_tokens=())
  rule = Sample(temperature=1.0)
  cache_length = sampler.buckets(padded_width(prompts) + 2 * n + len(turn))
  ref_params = params
  ref_logprobs = jax.jit(lambda p, t, pos, m: sequence_logprobs(lm, p, t, pos, m, chunk_size=CHUNK))
  loss_fn = build_loss_fn(score_obj.stage1_loss, model_logprobs(lm, CHUNK, score_obj.attempts_view),
                          score_obj.episode_inputs,
                          score_obj.ScoreConfig(beta1=BETA1, beta2=BETA2, group_size=group, baseline="rloo"))
  optimizer = make_optimizer(OptimizerConfig(learning_rate=LEARNING_RATE, warmup_steps=0, grad_clip_norm=1.0))
  state, shardings = init_train_state(lm.init, optimizer, jax.random.key(0), mesh, params=params)
  train = make_train_step(loss_fn, optimizer, shardings, mesh)
  holder = {"state": state}

  def step(key):
    times = {}
    start = time.perf_counter()
    k1, k2 = jax.random.split(key)
    t1 = first_turn(lm, holder["state"].params, prompts, k1, rule, sampler, mesh, pad_id=0,
                    cache_length=cache_length)
    t2 = next_turn(lm, holder["state"].params, t1, [turn] * len(prompts), k2, rule, sampler, mesh, pad_id=0)
    y1, y2 = t1.ids, t2.ids
    times["sampling_s"] = time.perf_counter() - start
    start = time.perf_counter()
    rows = [[Segment(x), Segment(a, "y1"), Segment(turn), Segment(b, "y2")] for x, a, b in zip(prompts, y1, y2)]
    batch = to_batch(rows, 0, ("y1", "y2"))
    batch.update(reward_y1_B=rewards(np.array(y1)), reward_y2_B=rewards(np.array(y2)))
    with jax.set_mesh(mesh):
      batch["ref_logp_BxT"] = np.asarray(ref_logprobs(ref_params, batch["tokens_BxT"], batch["positions_BxT"],
                                                      batch["mask_BxT"]))
    times["reference_s"] = time.perf_counter() - start
    start = time.perf_counter()
    holder["state"], metrics = train(holder["state"], batch)
    jax.block_until_ready(metrics)
    times["update_s"] = time.perf_counter() - start
    times["tokens"] = sum(len(a) + len(b) for a, b in zip(y1, y2))
    times["batch_shape"] = list(batch["tokens_BxT"].shape)
    return times

  return step


# ----------------------------------------------------------------------------
# transformers + PyTorch
# ----------------------------------------------------------------------------


def torch_step(hf_dir: str, prompts: list[list[int]], turn: list[int], args):
  """A function seed -> {part: seconds} running the same step with transformers + PyTorch."""
  import torch
  import transformers
  torch.set_num_threads(os.cpu_count() or 1)
  policy = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  reference = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  for model in (policy, reference):
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
  optimizer = torch.optim.AdamW(policy.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
  n, group, p, t = args.new_tokens, args.group, len(prompts[0]), len(turn)
  x = torch.tensor(prompts, dtype=torch.long)
  instruction = torch.tensor([turn] * len(prompts), dtype=torch.long)
  sample = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n, min_new_tokens=n,
                return_dict_in_generate=True)

  def token_logp(model, tokens):
    logits = model(input_ids=tokens).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]

  def step(seed):
    times = {}
    torch.manual_seed(seed)
    start = time.perf_counter()
    policy.eval()
    with torch.no_grad():
      first = policy.generate(input_ids=x, attention_mask=torch.ones_like(x), **sample)
      context = torch.cat([first.sequences, instruction], 1)
      second = policy.generate(input_ids=context, attention_mask=torch.ones_like(context),
                               past_key_values=first.past_key_values, **sample)
    tokens = second.sequences
    times["sampling_s"] = time.perf_counter() - start
    y1, y2 = tokens[:, p:p + n], tokens[:, p + n + t:]
    start = time.perf_counter()
    with torch.no_grad():
      ref = token_logp(reference, tokens)
    times["reference_s"] = time.perf_counter() - start
    start = time.perf_counter()
    policy.train()
    logp = token_logp(policy, tokens)
    # token t is scored at column t - 1
    s1, s2 = slice(p - 1, p - 1 + n), slice(p + n + t - 1, p + n + t - 1 + n)
    advantage = torch.tensor(rloo_advantage(rewards(y2.numpy()), group))
    pg = -(advantage * logp[:, s2].sum(1)).mean()
    k2 = lambda s: (0.5 * (logp[:, s] - ref[:, s]) ** 2).sum(1).mean()
    loss = pg + BETA2 * k2(s1) + BETA1 * k2(s2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    times["update_s"] = time.perf_counter() - start
    times["tokens"] = int(y1.numel() + y2.numel())
    times["batch_shape"] = list(tokens.shape)
    return times

  return step


# ----------------------------------------------------------------------------
# Both
# ----------------------------------------------------------------------------


def best_of(step, repeats: int, arg_of) -> dict:
  """The step's split at its fastest of `repeats` timed calls, after one untimed call."""
  step(arg_of(-1))
  runs = [step(arg_of(i)) for i in range(repeats)]
  fastest = min(runs, key=lambda r: sum(r[k] for k in PARTS))
  return dict(fastest, step_s=sum(fastest[k] for k in PARTS))


def measure(args) -> dict:
  if args.episodes % args.group or args.episodes % jax.device_count():
    raise ValueError(f"--episodes={args.episodes} must be a multiple of --group={args.group} and of the "
                     f"{jax.device_count()} devices the batch is split over")
  config = model_config(args)
  rng = np.random.default_rng(args.seed)
  distinct = rng.integers(1, config.vocab_size, (args.episodes // args.group, args.prompt_len)).tolist()
  prompts = [row for row in distinct for _ in range(args.group)]  # prompt-major groups, as SCoRe samples
  turn = rng.integers(1, config.vocab_size, args.turn_len).tolist()
  with tempfile.TemporaryDirectory() as hf_dir:
    lm = LM.from_config(config)
    hf.save_hf(lm, lm.init(jax.random.key(args.seed)), hf_dir)
    ours = best_of(scorejax_step(hf_dir, prompts, turn, args), args.repeats,
                   lambda i: jax.random.key(args.seed + 1 + i))
    theirs = best_of(torch_step(hf_dir, prompts, turn, args), args.repeats, lambda i: args.seed + 1 + i)
  n_params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(jax.eval_shape(lm.init, jax.random.key(0))))
  result = {
      "model": {"n_layers": config.n_layers, "d_model": config.d_model, "n_heads": config.n_heads,
                "n_kv_heads": config.n_kv_heads, "d_ff": config.d_ff, "vocab_size": config.vocab_size,
                "parameters": n_params},
      "episodes": args.episodes, "group": args.group, "prompt_len": args.prompt_len,
      "new_tokens": args.new_tokens, "turn_len": args.turn_len, "devices": jax.device_count(),
      "scorejax_episodes_per_s": args.episodes / ours["step_s"],
      "torch_episodes_per_s": args.episodes / theirs["step_s"],
      "scorejax": ours, "torch": theirs,
  }
  result["ratio"] = result["scorejax_episodes_per_s"] / result["torch_episodes_per_s"]
  result["target_ratio"] = TARGET_RATIO
  return result


def table(r: dict) -> str:
  m = r["model"]
  lines = [f"SCoRe Stage I step: {r['episodes']} episodes ({r['episodes'] // r['group']} prompts x {r['group']}), "
           f"prompt {r['prompt_len']} + y1 {r['new_tokens']} + instruction {r['turn_len']} + y2 {r['new_tokens']} "
           f"tokens; {m['parameters'] / 1e6:.0f}M parameters ({m['n_layers']} x {m['d_model']}, V {m['vocab_size']})",
           f"{'':<16}{'scorejax':>12}{'torch':>12}{'ratio':>8}"]
  for part in PARTS + ("step_s",):
    a, b = r["scorejax"][part], r["torch"][part]
    lines.append(f"{part:<16}{a:>11.2f}s{b:>11.2f}s{b / a:>8.2f}")
  lines.append(f"{'episodes/s':<16}{r['scorejax_episodes_per_s']:>12.3f}{r['torch_episodes_per_s']:>12.3f}"
               f"{r['ratio']:>8.2f}   (target >= {TARGET_RATIO})")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m scorejax.bench rl_step", description=__doc__.split("\n")[0])
  parser.add_argument("--episodes", type=int, default=8)
  parser.add_argument("--group", type=int, default=4, help="samples per prompt (the leave-one-out groups)")
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=64, help="tokens per attempt")
  parser.add_argument("--turn_len", type=int, default=16, help="instruction tokens between the attempts")
  add_model_flags(parser, SHAPES["qwen2_100m_v32k"])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=2, help="timed steps per side; the fastest is reported")
  parser.add_argument("--out", default=None, help="write the figures as JSON here")
  args = parser.parse_args(argv)
  args.dtype = "float32"
  result = measure(args)
  bench.emit(result, table(result), args.out)
  return 0
