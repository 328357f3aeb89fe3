#!/usr/bin/env bash
# Runs a scorejax experiment on every host of a Cloud TPU VM (v4-8, v5e-8, or a multi-host slice).
#
#   launch/tpu_vm.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--accelerator=TYPE] [--version=RUNTIME] \
#       [-- --config.key=value ...]
#
#   launch/tpu_vm.sh my-v4-8 us-central2-b configs/qwen_score.py:math,tpu /tmp/qwen_math --accelerator=v4-8
#   launch/tpu_vm.sh my-v5e us-west4-a configs/llama_score.py:gsm8k,tpu /tmp/llama_gsm8k \
#       --accelerator=v5litepod-8 -- --config.seed=1
#   launch/tpu_vm.sh --dry-run my-v4-32 us-central2-b configs/qwen_score.py:math,tpu /tmp/q --accelerator=v4-32
#
# 1. Creates the TPU VM when `gcloud compute tpus tpu-vm describe` does not find it (--accelerator is
#    then required; --version defaults to the runtime image of its generation), else reuses it.
# 2. Copies this checkout (without .git and virtual environments) to ~/scorejax on every worker and
#    installs it with the TPU extra into ~/scorejax/.venv.
# 3. Starts the same command on all workers at once and streams their output here; on a multi-host
#    slice (v4-32: 4 workers) jax.distributed joins them (scorejax.parallel.initialize_distributed
#    reads TPU_WORKER_HOSTNAMES).
# The model directory and data paths named by the config must exist on every worker. WORKDIR is a
# path on each worker (process 0 writes the results there) or a gs:// bucket path, which outlives the
# VM; rerunning the same line resumes from its checkpoints, after a preemption too. --dry-run prints
# every gcloud command instead of running it. launch/tpu_sweep.sh runs a sweep's points, a VM each.
set -euo pipefail
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 4 ]]; then
  sed -n '2,23p' "$0" >&2
  exit 2
fi
tpu="$1" zone="$2" config="$3" workdir="$4"
shift 4
accelerator="" version="" overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --) shift; overrides+=("$@"); break ;;
    --config.*) overrides+=("$1") ;;  # overrides may also come without the --
    *) echo "tpu_vm.sh: unknown argument '$1' (overrides go after --)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$version" ]]; then
  case "$accelerator" in
    v5litepod-*|v5e-*) version="v2-alpha-tpuv5-lite" ;;
    v5p-*) version="v2-alpha-tpuv5" ;;
    v6e-*) version="v2-alpha-tpuv6e" ;;
    *) version="tpu-ubuntu2204-base" ;;  # v4 and older generations
  esac
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

run() {  # prints the command under --dry-run, else runs it
  if [[ $dry_run == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# 1. THE VM
describe=(gcloud compute tpus tpu-vm describe "$tpu" --zone="$zone")
create=(gcloud compute tpus tpu-vm create "$tpu" --zone="$zone" --accelerator-type="$accelerator"
        --version="$version")
if [[ $dry_run == 1 ]]; then
  run "${describe[@]}"
  [[ -n "$accelerator" ]] && run "${create[@]}"
elif ! "${describe[@]}" >/dev/null 2>&1; then
  if [[ -z "$accelerator" ]]; then
    echo "tpu_vm.sh: TPU VM $tpu does not exist in $zone; pass --accelerator=TYPE (e.g. v4-8) to create it" >&2
    exit 2
  fi
  "${create[@]}"
fi

# 2. THE PROJECT, ON EVERY WORKER
archive="ARCHIVE/scorejax.tar.gz"  # --dry-run: packs nothing
if [[ $dry_run == 0 ]]; then
  archive="$(mktemp -d)/scorejax.tar.gz"
  tar -C "$root" --exclude=.git --exclude='.venv*' --exclude=__pycache__ -czf "$archive" .
fi
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all)
run gcloud compute tpus tpu-vm scp "$archive" "$tpu:~/scorejax.tar.gz" --zone="$zone" --worker=all
run "${ssh[@]}" --command="set -e; mkdir -p ~/scorejax && tar -C ~/scorejax -xzf ~/scorejax.tar.gz \
&& cd ~/scorejax && { [[ -x .venv/bin/python ]] || python3 -m venv .venv; } && .venv/bin/pip install -q -e '.[tpu]'"

# 3. THE RUN, ON EVERY WORKER AT ONCE (their output streams here)
quoted="$(printf ' %q' "${overrides[@]+"${overrides[@]}"}")"
[[ ${#overrides[@]} -eq 0 ]] && quoted=""
run "${ssh[@]}" --command="cd ~/scorejax && .venv/bin/python -m scorejax.main \
--config=$(printf %q "$config") --workdir=$(printf %q "$workdir")${quoted}"
