#!/usr/bin/env bash
# Pre-LN transformer block acceleration benchmark; run from the repo root.
# Example: accelerate/run_block.sh --d 4096 --tokens 16384 --out results/accelerate
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 accelerate/bench_block.py "$@"
