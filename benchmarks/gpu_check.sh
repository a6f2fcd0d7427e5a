#!/usr/bin/env bash
# One GPU check: everything in hpcseg that needs CUDA, measured in one run, printed as one table.
#   benchmarks/gpu_check.sh               # on a node with at least one GPU (about 3-5 minutes on one GPU)
#   benchmarks/gpu_check.sh --cpu-smoke   # the same code on CPU with tiny sizes (what the tests run)
# Checks: mamba_ssm kernels vs the pure-PyTorch scan; hpcseg's loop vs a plain DataLoader fp32 loop; one
# epoch of microbead_optimized at full size extrapolated to 100 epochs x 3 models; DDP on all visible GPUs
# vs one GPU. See benchmarks/gpu_check.py. The whole run is capped at 8 minutes (HPCSEG_GPU_CHECK_LIMIT).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="$(command -v python3)"; fi
fi
limit="${HPCSEG_GPU_CHECK_LIMIT:-480}"
cd "$repo"
exec timeout --signal=TERM --kill-after=10 "$limit" "$python" "$here/gpu_check.py" "$@"
