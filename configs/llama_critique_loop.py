"""Critique-in-the-loop on Llama-3-8B-Instruct (actor, annotator and the critic's start), on MATH or GSM8K.

The argument is a comma-separated list: the data set ("math", the default, or
"gsm8k"), the host ("tpu": a TPU v4-8 / v5e-8 VM; "gpu": an 8-GPU host;
neither: whatever devices JAX sees, one FSDP axis over all of them) and the
variants "vanilla_si", "vanilla_si_n" and "no_filter".

Get the model and the data once (on a machine with network access):

  huggingface-cli download meta-llama/Meta-Llama-3-8B-Instruct --local-dir /data/models/Meta-Llama-3-8B-Instruct
  huggingface-cli download HuggingFaceH4/MATH-500 test.jsonl --repo-type dataset --local-dir /data/math500
  # the MATH train split as one JSONL (fields problem, solution, level, type) at /data/math/train.jsonl
  python -m scorejax.tasks.gsm8k --data_dir=/data/tfds  # gsm8k only
  huggingface-cli download Qwen/ProcessBench --repo-type dataset --local-dir /data/processbench
  #   (its four subsets as /data/processbench/{gsm8k,math,olympiadbench,omnimath}.jsonl)

Run (every host of a TPU VM runs the same command; see launch/tpu_vm.sh):

  python -m scorejax.main --config=configs/llama_critique_loop.py:math,tpu --workdir=gs://bucket/llama_cl
  python -m scorejax.main --config=configs/llama_critique_loop.py:gsm8k,gpu,vanilla_si --workdir=/tmp/llama_cl_vsi
  python -m scorejax.main --config=configs/llama_critique_loop.py:math,gpu --workdir=/tmp/llama_cl_small \\
      --config.model.hf_dir=/data/models/Llama-3.2-1B-Instruct --config.model.lora.rank=16

What runs and what each setting is: scorejax/experiments/hf_critique_loop_config.py.
"""

from scorejax.experiments import hf_critique_loop_config

MODEL_DIR = "/data/models/Meta-Llama-3-8B-Instruct"  # the paper's actor and critique model base


def get_config(arg: str = "math"):
  return hf_critique_loop_config.get_config(arg, MODEL_DIR, "configs/llama_critique_loop.py")
