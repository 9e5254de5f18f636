#!/usr/bin/env bash
# Cramming recipe, pre-training. No arguments: the tiny model on the embedded corpus (Python stdlib
# docstrings), CPU, a few minutes, output in out/cramming-tiny/. Arguments are config overrides, e.g.
#   bash cramming/start.sh method=2by4 run_name=tiny-2by4
#   bash cramming/start.sh --config-name crammed method=2by4 budget.expected_steps=20000
# Then GLUE: python -m cramming.eval.glue checkpoint=out/cramming-tiny/model data_dir=../shared/data/glue tasks=[cola,sst2,mrpc,stsb,rte]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m cramming.train "$@"
