#!/usr/bin/env bash
# On a CUDA machine: all kernel tests, then the bandwidth benchmark; logs and results under ${OUT:-results/kernels}.
set -o pipefail
OUT=${OUT:-results/kernels}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pytest tests/kernels -q -rfE -p no:cacheprovider --junitxml="$OUT/pytest.xml" 2>&1 | tee "$OUT/pytest.log"
python3 accelerate/bench_kernels.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
