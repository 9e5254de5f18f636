#!/usr/bin/env bash
# DeiT recipe launcher. With no arguments: the built-in digits demo (tiny ViT, method 2by4) on CPU in
# a few minutes, output in out/tiny/ (metrics.jsonl, ckpt/, plots/).
#
#   METHOD  sparse method, one of sparse_core.METHODS (default 2by4)
#   CONFIG  a file of deit/configs/ (default tiny; deit_tiny, deit_small, deit_base, cifar10, cifar100, cifar10_subset)
#   MODEL   timm model name, e.g. deit_small_patch16_224 (default: the config's)
#   NGPU    0: CPU; 1: one GPU (bf16 autocast); N > 1: torchrun DDP on N GPUs (default 0)
#   DATA    an ImageFolder root (train/ + val/), an .npz file, or a torchvision CIFAR root (CONFIG=cifar10 or
#           cifar100 names the set; with data.download=true the root may be new) (default: the config's)
# Any arguments are passed on as config overrides, e.g.  bash deit/start.sh max_steps=50 optim.lr=1e-3
#
#   NGPU=8 CONFIG=deit_small DATA=/data/imagenet bash deit/start.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-tiny}
METHOD=${METHOD:-2by4}
NGPU=${NGPU:-0}
args=(--config-name "$CONFIG" "method=$METHOD")
if [[ -n "${MODEL:-}" ]]; then args+=("model.name=$MODEL"); fi
if [[ -n "${DATA:-}" ]]; then
  if [[ -f "$DATA" && "$DATA" == *.npz ]]; then args+=("data.source=npz")
  elif [[ -d "$DATA/train" && -d "$DATA/val" ]]; then args+=("data.source=imagefolder")
  elif [[ "$CONFIG" == cifar10 || "$CONFIG" == cifar100 ]]; then
    :  # a CIFAR config names its set; torchvision reads it from DATA (or downloads it there: data.download=true)
  elif [[ -d "$DATA/cifar-10-batches-py" && -d "$DATA/cifar-100-python" ]]; then
    echo "DATA=$DATA holds CIFAR-10 and CIFAR-100: use CONFIG=cifar10 or CONFIG=cifar100" >&2; exit 2
  elif [[ -d "$DATA/cifar-10-batches-py" ]]; then args+=("data.source=cifar10")
  elif [[ -d "$DATA/cifar-100-python" ]]; then args+=("data.source=cifar100")
  else echo "DATA=$DATA is not an .npz file, an ImageFolder root (train/ + val/) or a CIFAR root" >&2; exit 2
  fi
  args+=("data.path=$DATA")
fi
if ! [[ "$NGPU" =~ ^[0-9]+$ ]]; then echo "NGPU must be a number, got '$NGPU'" >&2; exit 2; fi
if (( NGPU == 0 )); then
  args+=("device=cpu" "dtype=float32")
  # One intra-op thread unless asked otherwise: on a shared 2-core box the tiny demo took 1m15s with 1
  # thread and 12m39s with torch's default of 2 (its ops are too small to split).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  args+=("device=cuda")
fi

if (( NGPU > 1 )); then
  exec torchrun --standalone --nproc_per_node "$NGPU" -m deit.train "${args[@]}" "$@"
fi
exec python -m deit.train "${args[@]}" "$@"
