#!/usr/bin/env bash
# Runs every point of a sweep on a TPU VM of its own, all at once, then collects the sweep's table.
#
#   launch/tpu_sweep.sh [--dry-run] VM_PREFIX ZONE CONFIG ROOT [--accelerator=TYPE] [--version=RUNTIME] \
#       [-- sweep flags: --seeds=0,1,2 --variants=... --grid=KEY=V1,V2 --override=--config.KEY=VALUE ...]
#
#   launch/tpu_sweep.sh sweep-v4 us-central2-b configs/qwen_score.py:math,tpu gs://my-bucket/qwen_sweep \
#       --accelerator=v4-8 -- --seeds=0,1,2
#
# 1. `python -m scorejax.sweep --emit` lists the points (one main-job command each; python is the
#    one on PATH, or $PYTHON).
# 2. Point i runs on the TPU VM VM_PREFIX-i through launch/tpu_vm.sh (created when missing, the
#    project installed on every worker), all points at once; each point's output goes to
#    logs/VM_PREFIX-i.log here, and a line says when it ends.
# 3. When every point has ended well, `python -m scorejax.sweep --collect` writes ROOT/table.json,
#    table.md and table.png from the points' eval.json (logs/ and CONFIG are relative to this checkout). ROOT should be a gs:// path, so that every VM
#    writes its point there and this machine can read them all (a local ROOT stays on each VM).
# Rerunning the same line resumes every point that did not finish (a preempted VM included) and
# skips finished ones. --dry-run prints the sweep command, each point's tpu_vm.sh --dry-run
# commands and the collect command, and runs nothing.
set -euo pipefail
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 4 ]]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
prefix="$1" zone="$2" config="$3" sweep_root="$4"
shift 4
vm_flags=() sweep_flags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --accelerator=*|--version=*) vm_flags+=("$1") ;;
    --) shift; sweep_flags+=("$@"); break ;;
    *) echo "tpu_sweep.sh: unknown argument '$1' (sweep flags go after --)" >&2; exit 2 ;;
  esac
  shift
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."  # CONFIG is relative to the checkout, as on the VMs
python="${PYTHON:-python}"
sweep=("$python" -m scorejax.sweep "--config=$config" "--workdir=$sweep_root" "${sweep_flags[@]+"${sweep_flags[@]}"}")

[[ $dry_run == 1 ]] && { printf '%q ' "${sweep[@]}" --emit; printf '\n'; }
emitted="$("${sweep[@]}" --emit)"  # a bad sweep flag stops here, with the sweep's message
mapfile -t points <<< "$emitted"
if [[ -z "$emitted" ]]; then
  echo "tpu_sweep.sh: the sweep has no points" >&2
  exit 2
fi

# Each emitted line: PYTHON -m scorejax.main --config=ARG --workdir=DIR [--config.KEY=VALUE ...]
launch_point() {  # i, the emitted line
  local i="$1" words point_config="" point_workdir="" overrides=()
  eval "words=($2)"  # the sweep prints shell-quoted words (shlex.join)
  for word in "${words[@]:3}"; do
    case "$word" in
      --config=*) point_config="${word#--config=}" ;;
      --workdir=*) point_workdir="${word#--workdir=}" ;;
      *) overrides+=("$word") ;;
    esac
  done
  local args=("$prefix-$i" "$zone" "$point_config" "$point_workdir" "${vm_flags[@]+"${vm_flags[@]}"}" --
              "${overrides[@]+"${overrides[@]}"}")
  if [[ $dry_run == 1 ]]; then
    "$here/tpu_vm.sh" --dry-run "${args[@]}"
  else
    "$here/tpu_vm.sh" "${args[@]}"
  fi
}

if [[ $dry_run == 1 ]]; then
  for i in "${!points[@]}"; do
    launch_point "$i" "${points[$i]}"
  done
else
  mkdir -p logs
  pids=()
  for i in "${!points[@]}"; do
    echo "[tpu_sweep] point $i on $prefix-$i: ${points[$i]}  (log: logs/$prefix-$i.log)"
    launch_point "$i" "${points[$i]}" > "logs/$prefix-$i.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      echo "[tpu_sweep] point $i ($prefix-$i) finished"
    else
      echo "[tpu_sweep] point $i ($prefix-$i) failed: see logs/$prefix-$i.log; rerun this line to resume it" >&2
      failed=1
    fi
  done
  [[ $failed == 0 ]] || exit 1
fi
collect=("${sweep[@]}" --collect)
if [[ $dry_run == 1 ]]; then
  printf '%q ' "${collect[@]}"
  printf '\n'
else
  "${collect[@]}"
fi
