#!/usr/bin/env bash
# Evidence runs on a lent 2-GPU H200 machine, in one call: first the jobs that take both GPUs (torchrun
# DDP), then two chains of single-GPU jobs side by side (GPU 0 and GPU 1).
#   OUT=<dir> SPARSE_CORE_SHARED_DATA=<shared data copy> [CHAIN0="job ..."] [CHAIN1="job ..."] [BOTH="job ..."] \
#     [DEADLINE=540] bash scripts/gpu_evidence.sh
# Jobs (defaults reproduce the first evidence call):
#   gpt-dense gpt-2by4 gpt-srste   GPT-2 124M, 200 steps on the stdlib corpus (results/nanogpt)
#   ddp-1gpu / ddp-2gpu            GPT-2 124M 2by4, 300 steps, same global batch on 1 and 2 GPUs (BOTH: ddp-2gpu)
#   long-dense long-2by4[+parts]   GPT-2 124M, LONG_STEPS steps on the site-packages corpus
#   ab-dense ab-srste ab-2by4[+nomvue][+magnitude][+r<N>][+l<X>] ab-2by4-ref  GPT-2 124M ablation, AB_STEPS steps
#   (jobs pin the mask refresh interval the committed results ran with where the method default has changed since)
#   deit-dense deit-2by4           DeiT-tiny on the CIFAR-10 subset; deit-profile-{dense,2by4}: FFN share of a step
#   cram-dense cram-2by4 glue-dense glue-2by4   a small Cramming BERT and its GLUE fine-tuning
#   gpu-tests (GPU_TESTS, default tests/kernels tests/backends)  gpu-marked (the gpu-marked tests of the other areas)
#   ffn-{torch,plans,amp,grid} gated-{plans,grid} block-{torch,plans,amp,grid}  FFN / gated FFN / block benchmarks
#                                  (BENCH_TOKENS, default 16384; BENCH_D; BENCH_ROUNDS; files named <job><BENCH_SUFFIX>-gpu<N>,
#                                  so one job can run on both chains), by sparse-GEMM
#                                  path; *-amp: fp32 master weights under bf16 autocast; *-grid: 8192 and 65536 tokens
#   ffn-profile                    FFN kernel time by kind (torch.profiler)
#   kernels (accelerate/run_kernels.sh; kernel-bench: its benchmark alone)  cslt-host (host cost of torch's sparse GEMM vs the plan-caching extension)
# Everything lands in $OUT/evidence.tar.gz (logs, metrics.jsonl of every run, kernel and profile JSON).
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

CHAIN0=${CHAIN0:-gpt-dense gpt-2by4 gpt-srste cram-dense glue-dense cram-2by4 glue-2by4}
CHAIN1=${CHAIN1:-deit-dense deit-2by4 gpu-tests kernels}
BOTH=${BOTH:-}
LONG_STEPS=${LONG_STEPS:-2000}

corpus() {  # corpus <name> <folder> [prepare args]: GPT-2 BPE of every *.py under a folder of this machine, once
  local name=$1 folder=$2; shift 2
  mkdir -p out/data
  flock "out/data/.$name.lock" python3 -m nanogpt.data.prepare "$folder" --glob '*.py' --name "$name" --root out/data \
    --tokenizer gpt2 --skip-existing "$@" >> "$RUNS/prepare-$name.log" 2>&1
}
STDLIB=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
SITE=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

GPT=(--config-name 124M out_dir=$RUNS train.warmup_steps=20 data.batch_size=16 train.lr=1e-3 train.min_lr=1e-4
     train.eval_interval=50 train.eval_iters=20 train.log_interval=10 log.wandb=disabled log.progress=false resume=never)
SHORT=(data.dir=out/data/pysrc train.max_steps=200 train.grad_accum=2 train.ckpt_interval=200)
DDP=(data.dir=out/data/pysrc train.max_steps=300 train.grad_accum=4 train.ckpt_interval=300 method=2by4
     sparse.mask_refresh_interval=10)
LONG=(data.dir=out/data/sitepy train.max_steps=$LONG_STEPS train.grad_accum=2 train.warmup_steps=100
      train.eval_interval=250 train.ckpt_interval=$LONG_STEPS)
AB_STEPS=${AB_STEPS:-400}
AB=(data.dir=out/data/sitepy train.max_steps=$AB_STEPS train.grad_accum=2 train.warmup_steps=40
    train.eval_interval=100 train.ckpt_interval=$AB_STEPS sparse.lambda_w=6e-5)
DEIT=(--config-name cifar10_subset data.path=$SHARED/cifar10_subset/cifar10_subset.npz device=cuda
      model.embed_dim=192 model.depth=12 model.num_heads=3 data.num_workers=6 out_dir=$RUNS)
CRAM=(model.hidden_size=256 model.num_layers=4 model.num_heads=4 model.intermediate_size=2048 budget.steps=800
      optim.batch_size=64 optim.micro_batch_size=64 optim.lr=1e-3 out_dir=$RUNS progress=false)
GLUE=(--config-name glue-quick data_dir=$SHARED/glue epochs=2 max_train_rows=4000 max_eval_rows=1000)
TORCHRUN=(torchrun --standalone --nproc_per_node=2 -m nanogpt.train)

sparse_parts() {  # sparse_parts "+r1+l2e-4": sets extra=(overrides); parts: nomvue, magnitude (mask kind),
  # r<N> (mask refresh interval), l<X> (lambda_w, e.g. l2e-4, lauto)
  extra=()
  local part parts
  IFS=+ read -ra parts <<< "${1#+}"
  for part in "${parts[@]}"; do case $part in
    nomvue) extra+=(sparse.mvue=false) ;;
    magnitude) extra+=(sparse.mask_kind=magnitude) ;;
    r[0-9]*) extra+=(sparse.mask_refresh_interval=${part#r}) ;;
    l?*) extra+=(sparse.lambda_w=${part#l}) ;;
    *) echo "unknown part $part" >&2; return 2 ;;
  esac; done
}

job() {  # job <name>: the command of one job
  case $1 in
    gpt-dense)  corpus pysrc "$STDLIB" && python3 -m nanogpt.train "${GPT[@]}" "${SHORT[@]}" method=dense run_name=gpt124M-dense ;;
    gpt-2by4)   corpus pysrc "$STDLIB" && python3 -m nanogpt.train "${GPT[@]}" "${SHORT[@]}" method=2by4 sparse.mask_refresh_interval=10 run_name=gpt124M-2by4 ;;
    gpt-srste)  corpus pysrc "$STDLIB" && python3 -m nanogpt.train "${GPT[@]}" "${SHORT[@]}" method=sr-ste run_name=gpt124M-sr-ste ;;
    ddp-1gpu)   corpus pysrc "$STDLIB" && python3 -m nanogpt.train "${GPT[@]}" "${DDP[@]}" run_name=ddp-1gpu ;;
    ddp-2gpu)   corpus pysrc "$STDLIB" && "${TORCHRUN[@]}" "${GPT[@]}" "${DDP[@]}" run_name=ddp-2gpu ;;
    long-dense) corpus sitepy "$SITE" --val-fraction 0.02 && python3 -m nanogpt.train "${GPT[@]}" "${LONG[@]}" method=dense run_name=long-dense ;;
    long-2by4|long-2by4+*)  # '+'-joined parts as for ab-*; the 2000-step run of results/nanogpt: long-2by4+r40+l6e-5
                local extra
                sparse_parts "${1#long-2by4}" || return 2
                corpus sitepy "$SITE" --val-fraction 0.02 && python3 -m nanogpt.train "${GPT[@]}" "${LONG[@]}" method=2by4 \
                  "${extra[@]}" run_name=$1 ;;
    ab-2by4-ref)  # the same 2by4 on the plain-torch reference backend, torch mask rule: no kernel or cuSPARSELt
                corpus sitepy "$SITE" --val-fraction 0.02 && SPARSE_CORE_MASK_KERNEL=0 python3 -m nanogpt.train "${GPT[@]}" \
                  "${AB[@]}" method=2by4 sparse.mask_refresh_interval=40 sparse.backend=reference run_name=$1 ;;
    ab-dense|ab-srste|ab-2by4|ab-2by4+*)  # ablation of 2by4's parts, AB_STEPS steps ('+'-joined parts: sparse_parts)
                local m=${1#ab-} extra
                sparse_parts "${m#"${m%%+*}"}" || return 2
                case ${m%%+*} in  # 2by4 pinned to the 40-step refresh these runs had, unless a part says r<N>
                  dense) extra=(method=dense "${extra[@]}") ;;
                  srste) extra=(method=sr-ste "${extra[@]}") ;;
                  *) extra=(method=2by4 sparse.mask_refresh_interval=40 "${extra[@]}") ;;
                esac
                corpus sitepy "$SITE" --val-fraction 0.02 && python3 -m nanogpt.train "${GPT[@]}" "${AB[@]}" "${extra[@]}" run_name=$1 ;;
    deit-dense) python3 -m deit.train "${DEIT[@]}" optim.epochs=15 method=dense run_name=deit-dense ;;
    deit-2by4)  python3 -m deit.train "${DEIT[@]}" optim.epochs=15 method=2by4 sparse.mask_refresh_interval=40 run_name=deit-2by4 ;;
    deit-profile-dense|deit-profile-2by4)
                python3 -m deit.eval.step_profile "${DEIT[@]}" method=${1#deit-profile-} --warmup 5 --steps 15 --out "$RUNS/$1.json" ;;
    cram-dense) python3 -m cramming.train "${CRAM[@]}" method=dense run_name=cram-dense ;;
    cram-2by4)  python3 -m cramming.train "${CRAM[@]}" method=2by4 sparse.mask_refresh_interval=40 run_name=cram-2by4 ;;
    glue-dense) python3 -m cramming.eval.glue "${GLUE[@]}" checkpoint=$RUNS/cram-dense/model ;;
    glue-2by4)  python3 -m cramming.eval.glue "${GLUE[@]}" checkpoint=$RUNS/cram-2by4/model ;;
    gpu-tests)  python3 -m pytest -q -p no:cacheprovider ${GPU_TESTS:-tests/kernels tests/backends} ;;
    gpu-marked) python3 -m pytest -q -p no:cacheprovider -m gpu tests/core tests/train tests/deit tests/nanogpt tests/cramming ;;
    cslt-host)  python3 accelerate/bench_cslt_host.py --search --out "$RUNS/accelerate" ;;
    kernels)    env OUT="$RUNS/kernels" bash accelerate/run_kernels.sh ;;
    kernel-bench) python3 accelerate/bench_kernels.py --out "$RUNS/kernels" ;;
    ffn-torch|ffn-plans|gated-plans|block-torch|block-plans|ffn-amp|block-amp|ffn-grid|gated-grid|block-grid)
                # FFN / gated FFN / block benchmarks (BENCH_TOKENS, default 16384; BENCH_D) with torch's sparse GEMM
                # or the plan-caching extension; *-amp: fp32 master weights under bf16 autocast; *-grid: the
                # plan-caching extension at 8192 and 65536 tokens
                local module=${1%%-*} mm=${1#*-} extra=() tokens=${BENCH_TOKENS:-16384}
                [[ $mm == amp ]] && mm=plans && extra=(--precision amp --variants dense sc-fwd-dx sc-fwd-dx-mvue sc-all)
                [[ $mm == grid ]] && mm=plans && tokens="8192 65536"
                case $module in gated|ffn) extra+=(--kinds "$module") ;; esac
                SPARSE_CORE_CUSPARSELT_MM=$mm python3 accelerate/bench_${module/gated/ffn}.py \
                  --tokens $tokens --d ${BENCH_D:-768 1024 2048 4096} --rep-ms 30 --rounds ${BENCH_ROUNDS:-1} "${extra[@]}" \
                  --name $1${BENCH_SUFFIX:-}-gpu${CUDA_VISIBLE_DEVICES:-0} --out "$RUNS/accelerate" ;;
    ffn-profile) python3 accelerate/profile_ffn.py --d ${BENCH_D:-768 4096} --out "$RUNS/accelerate" ;;
    *)          echo "unknown job $1" >&2; return 2 ;;
  esac
}

DEADLINE=${DEADLINE:-540}  # seconds after start by which every job has ended, so the archive is always written
run() {  # run <gpus> <name>: one job on the given GPUs within the deadline, log to $RUNS/<name>.gpu<gpus>.log, time it
  local gpus=$1 name=$2 t0=$SECONDS left=$((DEADLINE - SECONDS))
  if (( left < 10 )); then echo "$name skipped: deadline" >> "$RUNS/timings.txt"; return; fi
  CUDA_VISIBLE_DEVICES=$gpus timeout "$left" bash -c "$(declare -p GPT SHORT DDP LONG DEIT CRAM GLUE TORCHRUN \
    AB RUNS SHARED STDLIB SITE; declare -f job corpus sparse_parts); job $name" > "$RUNS/$name.gpu${gpus/,/+}.log" 2>&1
  echo "$name gpus=$gpus rc=$? seconds=$((SECONDS - t0))" >> "$RUNS/timings.txt"
}

for name in $BOTH; do run 0,1 "$name"; done
( for name in $CHAIN0; do run 0 "$name"; done ) &
( for name in $CHAIN1; do run 1 "$name"; done ) &
wait
cat "$RUNS/timings.txt"
find "$RUNS" -name "*.pt" -delete; find "$RUNS" -name "*.safetensors" -delete
tar -czf "$OUT/evidence.tar.gz" "$RUNS"
