#!/usr/bin/env bash
# One check of everything that needs a GPU, in under 8 minutes on one GPU: the CUDA build of the
# rasteriser, its tests against the PyTorch reference, the rasteriser against gsplat (100k-500k
# Gaussians, 512² and 1024², stereo pairs), and a `quality` fit of ../shared/data/talk_b.mp4 with its
# eval. Writes benchmarks/results/gpu_check.json and prints a table (benchmarks/gpu_check.py).
#
# Expects: a CUDA build of torch and this checkout's dependencies, e.g.
#   python3 -m venv .venv && . .venv/bin/activate && pip install torch  # a CUDA build
#   pip install -e ".[cuda,test]"                                       # + gsplat, pytest
# Python: $PYTHON, else this checkout's .venv/bin/python, else python3; the checkout's avatar3d is
# used whether or not it is installed. Without CUDA it exits 2 with one line, before any work.
#
#   bash benchmarks/gpu_check.sh [--steps 2000] [--clip talk_b] [--stages build,tests,raster,fit]
#   bash benchmarks/gpu_check.sh --dry-run     # the same code on CPU at toy sizes
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py="$(command -v python3 || true)"; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "$py" ] || ! "$py" -c "import torch, numpy, yaml" >/dev/null 2>&1; then
    echo "gpu_check: error: no Python with torch and avatar3d's dependencies (tried ${py:-python3}); set up:" \
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch (a CUDA build) &&" \
        "pip install -e \".[cuda,test]\"" >&2
    exit 2
fi
cd "$repo"
exec "$py" "$here/gpu_check.py" "$@"
