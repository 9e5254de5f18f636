#!/usr/bin/env bash
# GPT-2 pre-training with 2:4 sparsity (Hu et al., ICML 2024), the recipe's one entry point.
#
#   bash nanogpt/start.sh                      # tiny 2by4 GPT-2 on the Python stdlib source, CPU, a few minutes
#   METHOD=2by4 SIZE=124M NGPU=8 DATA=openwebtext bash nanogpt/start.sh      # the paper's runs
#   bash nanogpt/start.sh train.max_steps=50 sparse.lambda_w=auto            # any config override
#
# METHOD  dense | half | ste | sr-ste | 2by4 | step | bi-mask | s-ste      (default 2by4)
# SIZE    tiny | 124M | 350M | 774M | 1558M  = nanogpt/configs/<SIZE>.yaml  (default tiny)
# NGPU    processes; > 1 launches torchrun (DDP, NCCL on GPUs, gloo on CPU) (default 1)
# DATA    stdlib_char | stdlib | shakespeare_char | shakespeare | openwebtext | a text file or folder
#         (default stdlib_char for tiny, openwebtext otherwise); prepared once under DATA_ROOT (out/data)
# TOKENIZER  char | gpt2, for a file or folder given as DATA (default gpt2; a named DATA has its own)
# Writes out/<SIZE>-<METHOD>-<data>/: ckpt/, metrics.jsonl, plots/*.png (and wandb/ when installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

METHOD="${METHOD:-2by4}"
SIZE="${SIZE:-tiny}"
NGPU="${NGPU:-1}"
if [[ "$SIZE" == tiny ]]; then DATA="${DATA:-stdlib_char}"; else DATA="${DATA:-openwebtext}"; fi
DATA_ROOT="${DATA_ROOT:-out/data}"
if [[ "$SIZE" == tiny ]]; then
  # the tiny model's matmuls gain little from threads, and spinning threads crawl on a busy CPU
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
PYTHON="${PYTHON:-python}"

if [[ ! -f "nanogpt/configs/$SIZE.yaml" ]]; then
  echo "SIZE=$SIZE: there is no nanogpt/configs/$SIZE.yaml (tiny, 124M, 350M, 774M, 1558M)" >&2
  exit 2
fi
if ! [[ "$NGPU" =~ ^[1-9][0-9]*$ ]]; then
  echo "NGPU=$NGPU: give a number of processes >= 1" >&2
  exit 2
fi

prepare=("$PYTHON" -m nanogpt.data.prepare "$DATA" --root "$DATA_ROOT" --skip-existing)
if [[ -n "${TOKENIZER:-}" ]]; then prepare+=(--tokenizer "$TOKENIZER"); fi
DATA_DIR="$("${prepare[@]}" | tail -n 1)"

args=(--config-name "$SIZE" "method=$METHOD" "data.dir=$DATA_DIR" "$@")
if (( NGPU > 1 )); then
  torchrun --standalone --nproc_per_node="$NGPU" -m nanogpt.train "${args[@]}"
else
  "$PYTHON" -m nanogpt.train "${args[@]}"
fi
echo "done: outputs under out/ (python -m nanogpt.eval evaluate|sample|export <run folder>)" >&2
