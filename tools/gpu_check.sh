#!/usr/bin/env bash
# The GPU measurements of docs/performance.md ("GPU"): material and results under ${1:-bench_gpu}.
#     bash tools/gpu_check.sh "$OUT/bench_gpu"
set -euo pipefail
cd "$(dirname "$0")/.."
python tools/bench_gpu.py --out_dir "${1:-bench_gpu}"
