#!/usr/bin/env bash
# Runs a scorejax experiment on this GPU host (e.g. 8 GPUs, CUDA 12).
#
#   launch/gpu_host.sh CONFIG WORKDIR [--config.key=value ...]
#
#   launch/gpu_host.sh configs/qwen_score.py:math,gpu /data/runs/qwen_math
#   launch/gpu_host.sh configs/llama_score.py:gsm8k,gpu /data/runs/llama_gsm8k --config.seed=1
#
# Installs the project with the GPU extra into $SCOREJAX_VENV (default: .venv beside
# pyproject.toml; see launch/local.sh) when pyproject.toml has changed, then runs the experiment on all the
# GPUs JAX sees. Rerunning the same line resumes from WORKDIR's checkpoints. On several
# hosts, start it on each under SLURM (`srun --ntasks-per-node=1 launch/gpu_host.sh ...`):
# jax.distributed reads the job from SLURM's environment.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
config="$1" workdir="$2"
shift 2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCOREJAX_EXTRAS=gpu exec "$root/launch/local.sh" python -m scorejax.main --config="$config" --workdir="$workdir" "$@"
