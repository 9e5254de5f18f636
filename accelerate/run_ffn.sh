#!/usr/bin/env bash
# FFN acceleration benchmark (dense vs sparse_core vs to_sparse_semi_structured); run from the repo root.
# Example: accelerate/run_ffn.sh --d 2048 4096 --tokens 16384 --out results/accelerate
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 accelerate/bench_ffn.py "$@"
