"""The recipe's config schema: every default lives here; `configs/<size>.yaml` overrides a few keys.

Defaults are GPT-2 124M on OpenWebText with a ~0.5M-token batch (nanoGPT's baseline). Any field can
be set on the command line, e.g. `method=ste model.n_layer=6 train.max_steps=2000 sparse.lambda_w=auto`.
Unknown keys, wrong types and impossible values are errors before anything is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from sparse_core.train.metrics import WANDB_MODES

__all__ = ["ModelSection", "DataSection", "TrainSection", "SparseSection", "LogSection", "TrainConfig",
           "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class ModelSection:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # context length
    dropout: float = 0.0  # 0 for pre-training
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm


@dataclass
class DataSection:
    dir: str = "out/data/openwebtext"  # train.bin, val.bin, meta.json from nanogpt.data.prepare
    batch_size: int = 16  # sequences per micro-batch per process


@dataclass
class TrainSection:
    max_steps: int = 600_000  # optimizer steps; also the cosine horizon and the controller's total_steps
    grad_accum: int = 32  # micro-batches per optimizer step over ALL processes (divided by world size)
    lr: float = 6e-4
    min_lr: float = 6e-5  # cosine floor, lr / 10
    warmup_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    dtype: str = "bf16"  # autocast dtype on CUDA: bf16, fp16 (+ GradScaler) or fp32; CPU runs fp32
    compile: bool = False  # torch.compile the model
    cuda_graph: bool = False  # replay each micro-batch's forward+backward from a CUDA graph (sparse_core.graphs):
    # no per-call host cost; one CUDA process, bf16 or fp32, not with compile; recaptured at the dense switch
    eval_interval: int = 1000  # steps between val-loss evaluations (and the last step)
    eval_iters: int = 100  # val micro-batches per evaluation (split over processes)
    log_interval: int = 10  # steps between log lines (each costs a .item() sync)
    ckpt_interval: int = 1000  # steps between checkpoints (and the last step)
    keep_last: int = 3  # checkpoints kept
    stop_at: Optional[int] = None  # save and exit after this step (splits a run; resume=auto continues)
    max_bad_steps: int = 20  # stop (with a checkpoint) after this many non-finite steps in a row


@dataclass
class SparseSection:
    """Method options; None keeps the method's own default (see sparse_core.METHODS)."""

    lambda_w: Any = None  # masked-decay factor (float) or 'auto'
    mask_refresh_interval: Optional[int] = None  # steps between mask recomputations
    dense_ft_fraction: Any = None  # switch to dense at this fraction of max_steps; 'never' = stay sparse
    decay: Optional[str] = None  # 'gradient', 'weight' or 'none'
    mvue: Optional[bool] = None  # unbiased 2:4 sparsification of dY for dW
    mask_kind: Optional[str] = None  # 'magnitude' or 'transposable'
    warmup_steps: Optional[int] = None  # steps in which lambda_w='auto' is chosen
    backend: str = "auto"  # SparseLinear GEMM backend: 'auto' (fastest on the device), 'reference', ...

    def options(self) -> dict[str, Any]:
        """The options to pass to sparse_core.sparsify (None entries left out, 'never' passed as None)."""
        opts = {k: v for k, v in asdict(self).items() if v is not None}
        if opts.get("dense_ft_fraction") == "never":
            opts["dense_ft_fraction"] = None
        return opts


@dataclass
class LogSection:
    wandb: str = "offline"  # offline (sync later), online or disabled; metrics.jsonl is always written
    project: str = "sparse-nanogpt"
    progress: bool = True  # tqdm bar on the main process
    plots: bool = True  # PNG plots of losses and flip rates at the end


@dataclass
class TrainConfig:
    method: str = "2by4"  # one of sparse_core.METHODS
    size: str = "124M"  # label of the model size, used in the default run name
    run_name: str = ""  # '' -> <size>-<method>-<data folder name>
    out_dir: str = "out"  # runs write to <out_dir>/<run_name>/
    seed: int = 1337
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    resume: str = "auto"  # auto (latest checkpoint of this run if any), never, or a checkpoint path
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    sparse: SparseSection = field(default_factory=SparseSection)
    log: LogSection = field(default_factory=LogSection)

    @property
    def run_dir(self) -> Path:
        name = self.run_name or f"{self.size}-{self.method}-{Path(self.data.dir).name}"
        return Path(self.out_dir) / name

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        from sparse_core.methods import build_method

        m, d, t = self.model, self.data, self.train
        positive = {"model.n_layer": m.n_layer, "model.n_head": m.n_head, "model.n_embd": m.n_embd,
                    "model.block_size": m.block_size, "data.batch_size": d.batch_size,
                    "train.max_steps": t.max_steps, "train.grad_accum": t.grad_accum,
                    "train.eval_interval": t.eval_interval, "train.eval_iters": t.eval_iters,
                    "train.log_interval": t.log_interval, "train.ckpt_interval": t.ckpt_interval,
                    "train.keep_last": t.keep_last, "train.max_bad_steps": t.max_bad_steps}
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if m.n_embd % m.n_head:
            raise ValueError(f"model.n_embd={m.n_embd} must be divisible by model.n_head={m.n_head}")
        if m.n_embd % 4:
            raise ValueError(f"model.n_embd={m.n_embd} must be a multiple of 4 (2:4 groups of the FFN)")
        if not 0.0 <= m.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if not 0.0 <= t.min_lr <= t.lr:
            raise ValueError(f"need 0 <= train.min_lr <= train.lr, got min_lr={t.min_lr}, lr={t.lr}")
        if t.cuda_graph and t.compile:
            raise ValueError("train.cuda_graph=true and train.compile=true exclude each other; choose one")
        if t.cuda_graph and t.dtype == "fp16":
            raise ValueError("train.cuda_graph=true needs train.dtype bf16 or fp32 (fp16's GradScaler is not captured)")
        if not 0 <= t.warmup_steps <= t.max_steps:
            raise ValueError(f"train.warmup_steps={t.warmup_steps} must be in [0, train.max_steps={t.max_steps}]")
        for key, beta in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {beta}")
        if t.weight_decay < 0 or t.grad_clip < 0:
            raise ValueError(f"train.weight_decay and train.grad_clip must be >= 0, got {t.weight_decay}, {t.grad_clip}")
        if t.dtype not in DTYPES:
            raise ValueError(f"train.dtype must be one of {DTYPES}, got {t.dtype!r}")
        if t.stop_at is not None and not 1 <= t.stop_at <= t.max_steps:
            raise ValueError(f"train.stop_at={t.stop_at} must be in [1, train.max_steps={t.max_steps}]")
        if self.log.wandb not in WANDB_MODES:
            raise ValueError(f"log.wandb must be one of {WANDB_MODES}, got {self.log.wandb!r}")
        if self.resume not in ("auto", "never") and not Path(self.resume).is_file():
            raise ValueError(f"resume must be 'auto', 'never' or an existing checkpoint file, got {self.resume!r}")
        if isinstance(self.sparse.lambda_w, str) and self.sparse.lambda_w != "auto":
            raise ValueError(f"sparse.lambda_w must be a number >= 0 or 'auto', got {self.sparse.lambda_w!r}")
        spec = build_method(self.method, **self.sparse.options())
        spec.validate(t.max_steps)
        if spec.mvue and (d.batch_size * m.block_size) % 4:
            raise ValueError(f"MVUE groups tokens by 4: data.batch_size*model.block_size = "
                             f"{d.batch_size * m.block_size} must be a multiple of 4")
