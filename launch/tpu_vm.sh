#!/usr/bin/env bash
# Runs a scorejax experiment on every host of a Cloud TPU VM (v4-8, v5e-8, or a pod slice).
#
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#
#   launch/tpu_vm.sh my-v4-8 us-central2-b configs/qwen_score.py:math,tpu /tmp/qwen_math
#   launch/tpu_vm.sh my-v5e-8 us-west4-a configs/llama_score.py:gsm8k,tpu /tmp/llama_gsm8k --config.seed=1
#
# Copies this checkout (without .git and virtual environments) to ~/scorejax on every
# worker, installs it with the TPU extra into ~/scorejax/.venv, and starts the same
# command on all workers at once (jax.distributed joins them on a multi-host slice).
# The model directory and data paths named by the config must exist on every worker.
# WORKDIR is local to each worker; rerunning the same line resumes from its checkpoints,
# after a preemption too.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
tpu="$1" zone="$2" config="$3" workdir="$4"
shift 4
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all)

archive="$(mktemp -d)/scorejax.tar.gz"
tar -C "$root" --exclude=.git --exclude='.venv*' --exclude=__pycache__ -czf "$archive" .
gcloud compute tpus tpu-vm scp "$archive" "$tpu:~/scorejax.tar.gz" --zone="$zone" --worker=all

"${ssh[@]}" --command="set -e; mkdir -p ~/scorejax && tar -C ~/scorejax -xzf ~/scorejax.tar.gz \
  && cd ~/scorejax && { [[ -x .venv/bin/python ]] || python3 -m venv .venv; } \
  && .venv/bin/pip install -q -e '.[tpu]'"

overrides="$(printf ' %q' "$@")"
"${ssh[@]}" --command="cd ~/scorejax && .venv/bin/python -m scorejax.main \
  --config=$(printf %q "$config") --workdir=$(printf %q "$workdir")${overrides}"
