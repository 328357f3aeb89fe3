"""SCoRe on code: Qwen2.5-Coder-1.5B-Instruct trained on MBPP, HumanEval held out, MBPP-R as offline repair.

The argument is the host: "tpu" (a TPU v4-8 / v5e-8 VM), "gpu" (an 8-GPU
host) or empty (whatever devices JAX sees, one FSDP axis over all of them).

Get the model and the data once (on a machine with network access):

  huggingface-cli download Qwen/Qwen2.5-Coder-1.5B-Instruct --local-dir /data/models/Qwen2.5-Coder-1.5B-Instruct
  # MBPP, all 974 problems in one JSONL (split by task_id as published):
  curl -L -o /data/mbpp/mbpp.jsonl \\
      https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl
  # HumanEval (164 problems):
  curl -L https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz | gunzip > /data/humaneval/HumanEval.jsonl

Run (every host of a TPU VM runs the same command; see launch/tpu_vm.sh):

  python -m scorejax.main --config=configs/qwen_score_code.py:tpu --workdir=/tmp/qwen_code
  python -m scorejax.main --config=configs/qwen_score_code.py:gpu --workdir=/tmp/qwen_code \\
      --config.task.repair_path=/data/mbpp_r.jsonl
  python -m scorejax.evaluate code --tasks=/data/humaneval/HumanEval.jsonl --completions=samples.jsonl

Rewards run each program against its tests in the sandbox
(`scorejax/sandbox.py`; config.task.sandbox): bubblewrap where it is
installed and works (`apt-get install bubblewrap`), unshare next, resource
limits alone otherwise; eval.json records which one a run used. MBPP-R
(config.task.repair_path) is a JSONL of task_id and completion: first
attempts at MBPP problems known to be wrong (e.g. a base model's failing
samples, checked with `python -m scorejax.evaluate code`); each is given as
y1 and the policy's greedy y2 is tested ("repair" in eval.json).

Hyperparameters follow the paper's MBPP run (Kumar et al., arXiv 2409.12917:
lr 1e-5, beta2 0.25, 1500 steps of batch 128); the rest is the MATH run's
(`scorejax/experiments/hf_score_config.py`).
"""

from scorejax.experiments import hf_score_config

MODEL_DIR = "/data/models/Qwen2.5-Coder-1.5B-Instruct"


def get_config(arg: str = ""):
  return hf_score_config.get_config(",".join(["code"] + [p for p in arg.split(",") if p]), MODEL_DIR,
                                    "configs/qwen_score_code.py")
