#!/usr/bin/env bash
# Evidence runs on a lent 2-GPU H200 machine, in one call: kernel checks + bandwidth, then GPT-2 124M
# dense / 2by4 / sr-ste, DeiT-tiny and a small Cramming BERT (dense vs 2by4, then GLUE), two GPUs in parallel.
#   OUT=<dir> SPARSE_CORE_SHARED_DATA=<shared data copy> bash scripts/gpu_evidence.sh
# Everything lands in $OUT/evidence.tar.gz (logs, metrics.jsonl of every run, kernel results).
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-out/gpu}
SHARED=${SPARSE_CORE_SHARED_DATA:?set SPARSE_CORE_SHARED_DATA to a copy of shared/data}
export TIKTOKEN_CACHE_DIR="$SHARED/gpt2_bpe/tiktoken_cache"
RUNS=out/evidence
mkdir -p "$OUT" "$RUNS"
if [[ -d .whl ]]; then  # hydra-core, omegaconf, antlr4: not on the GPU image
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cusparselt', torch.backends.cusparselt.version(), 'triton', triton.__version__)"; } > "$RUNS/env.txt" 2>&1

# Corpus the model cannot memorise in 200 steps: this machine's Python standard library source, GPT-2 BPE.
STDLIB=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
python3 -m nanogpt.data.prepare "$STDLIB" --glob '*.py' --name pysrc --root out/data --tokenizer gpt2 > "$RUNS/prepare.log" 2>&1

GPT=(--config-name 124M data.dir=out/data/pysrc out_dir=$RUNS train.max_steps=200 train.warmup_steps=20
     train.grad_accum=2 data.batch_size=16 train.lr=1e-3 train.min_lr=1e-4 train.eval_interval=50 train.eval_iters=20
     train.ckpt_interval=200 train.log_interval=10 log.wandb=disabled log.progress=false resume=never)
DEIT=(--config-name cifar10_subset data.path=$SHARED/cifar10_subset/cifar10_subset.npz device=cuda
      model.embed_dim=192 model.depth=12 model.num_heads=3 optim.epochs=15 data.num_workers=6 out_dir=$RUNS)
CRAM=(model.hidden_size=256 model.num_layers=4 model.num_heads=4 model.intermediate_size=2048 budget.steps=800
      optim.batch_size=64 optim.micro_batch_size=64 optim.lr=1e-3 out_dir=$RUNS progress=false)
GLUE=(--config-name glue-quick data_dir=$SHARED/glue epochs=2 max_train_rows=4000 max_eval_rows=1000)

DEADLINE=${DEADLINE:-540}  # seconds after start by which every run has ended, so the archive is always written
JOBS=${JOBS:-all}  # space-separated job names to run (default: all)
gpu() {  # gpu <index> <name> <command...>: run on one GPU within the deadline, log to $RUNS/<name>.log, time it
  local idx=$1 name=$2; shift 2
  if [[ "$JOBS" != all && " $JOBS " != *" $name "* ]]; then return; fi
  local t0=$SECONDS left=$((DEADLINE - SECONDS))
  if (( left < 10 )); then echo "$name skipped: deadline" >> "$RUNS/timings.txt"; return; fi
  CUDA_VISIBLE_DEVICES=$idx timeout "$left" "$@" > "$RUNS/$name.log" 2>&1
  echo "$name rc=$? seconds=$((SECONDS - t0))" >> "$RUNS/timings.txt"
}

(
  gpu 0 gpt-dense  python3 -m nanogpt.train "${GPT[@]}" method=dense run_name=gpt124M-dense
  gpu 0 gpt-2by4   python3 -m nanogpt.train "${GPT[@]}" method=2by4 sparse.mask_refresh_interval=10 run_name=gpt124M-2by4
  gpu 0 gpt-srste  python3 -m nanogpt.train "${GPT[@]}" method=sr-ste run_name=gpt124M-sr-ste
  gpu 0 cram-dense python3 -m cramming.train "${CRAM[@]}" method=dense run_name=cram-dense
  gpu 0 glue-dense python3 -m cramming.eval.glue "${GLUE[@]}" checkpoint=$RUNS/cram-dense/model
  gpu 0 cram-2by4  python3 -m cramming.train "${CRAM[@]}" method=2by4 run_name=cram-2by4
  gpu 0 glue-2by4  python3 -m cramming.eval.glue "${GLUE[@]}" checkpoint=$RUNS/cram-2by4/model
) &
(
  gpu 1 deit-dense python3 -m deit.train "${DEIT[@]}" method=dense run_name=deit-dense
  gpu 1 deit-2by4  python3 -m deit.train "${DEIT[@]}" method=2by4 run_name=deit-2by4
  gpu 1 gpu-tests  python3 -m pytest -q -p no:cacheprovider ${GPU_TESTS:-tests/kernels tests/backends}
  gpu 1 kernels    env OUT="$RUNS/kernels" bash accelerate/run_kernels.sh
) &
wait
cat "$RUNS/timings.txt"
find "$RUNS" -name "*.pt" -delete; find "$RUNS" -name "*.safetensors" -delete
tar -czf "$OUT/evidence.tar.gz" "$RUNS"
