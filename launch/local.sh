#!/usr/bin/env bash
# Runs a command inside the project's virtual environment, creating it first if needed.
#
#   launch/local.sh python -m scorejax.main --config=configs/arith_score.py --workdir=/tmp/score
#   launch/local.sh pytest
#
# The environment lives in $SCOREJAX_VENV (default: .venv beside this repo's pyproject.toml)
# and is reinstalled whenever pyproject.toml or the extras change. $SCOREJAX_EXTRAS picks the
# extras (default: test; gpu or tpu for accelerator builds of jax). PyTorch is installed only
# with the test extra, for the parity checks against transformers; the CPU build is enough.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCOREJAX_VENV:-$root/.venv}"
extras="${SCOREJAX_EXTRAS:-test}"
torch_spec="${SCOREJAX_TORCH:-torch==2.13.0}"
stamp="$venv/.scorejax-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) $extras $torch_spec"

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "[local.sh] installing scorejax into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip
  if [[ ",$extras," == *",test,"* ]]; then
    # torch first, so that the test extra's plain `torch` requirement is already met.
    "$venv/bin/python" -m pip install -q "$torch_spec"
  fi
  "$venv/bin/python" -m pip install -q -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
cd "$root"
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
exec "$@"
