"""SCoRe on Llama-3.2-1B-Instruct, on MATH (MATH500 held out) or GSM8K.

The argument is a comma-separated list: the data set ("math", the default, or
"gsm8k") and the host ("tpu": a TPU v4-8 / v5e-8 VM; "gpu": an 8-GPU host;
neither: whatever devices JAX sees, one FSDP axis over all of them).

Get the model and the data once (on a machine with network access):

  huggingface-cli download meta-llama/Llama-3.2-1B-Instruct --local-dir /data/models/Llama-3.2-1B-Instruct
  huggingface-cli download HuggingFaceH4/MATH-500 test.jsonl --repo-type dataset --local-dir /data/math500
  # the MATH train split as one JSONL (fields problem, solution, level, type) at /data/math/train.jsonl
  python -m scorejax.tasks.gsm8k --data_dir=/data/tfds

Run (every host of a TPU VM runs the same command; see launch/tpu_vm.sh):

  python -m scorejax.main --config=configs/llama_score.py:math,tpu --workdir=/tmp/llama_math
  python -m scorejax.main --config=configs/llama_score.py:gsm8k,gpu --workdir=/tmp/llama_gsm8k
  python -m scorejax.main --config=configs/llama_score.py:math,gpu --workdir=/tmp/llama_math \\
      --config.task.eval_path=/data/math500/test.jsonl --config.seed=1
  launch/tpu_vm.sh my-tpu us-central2-b configs/llama_score.py:math,tpu /tmp/llama_math
  launch/gpu_host.sh configs/llama_score.py:gsm8k,gpu /tmp/llama_gsm8k

The loaded model is the base policy (base.steps = 0: no SFT phase); it is
evaluated as "base", then trained by Stage I and Stage II. Hyperparameters
follow the paper's MATH run (Kumar et al., arXiv 2409.12917: Adam, lr 5e-6,
temperature 1.0, alpha 10, beta1 0.01, beta2 0.1); batch and steps are
scaled down to a single 8-chip host (comments below).

Llama 3.2's chat template writes today's date into its system turn, so
prompts (and the rollouts drawn from them) differ between runs on different
days; a run resumed on another day continues with the new date.
"""

from scorejax.experiments import hf_score_config

MODEL_DIR = "/data/models/Llama-3.2-1B-Instruct"


def get_config(arg: str = "math"):
  return hf_score_config.get_config(arg, MODEL_DIR, "configs/llama_score.py")
