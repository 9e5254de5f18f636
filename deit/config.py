"""The DeiT recipe's config: every default here (DeiT's ImageNet recipe, Touvron et al. 2021), YAML
files in `deit/configs/` override a few keys, the command line overrides more (`optim.lr=1e-3`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import sparse_core
from sparse_core.train.metrics import WANDB_MODES

__all__ = ["DataConfig", "ModelConfig", "AugConfig", "OptimConfig", "DeiTConfig", "config_from_dict",
           "DATA_SOURCES", "OPTIMIZERS"]

DATA_SOURCES = ("digits", "npz", "imagefolder", "cifar10", "cifar100")
OPTIMIZERS = ("adamw", "lion")


@dataclass
class DataConfig:
    source: str = "imagefolder"  # one of DATA_SOURCES; 'digits' is built in (scikit-learn), no download
    path: str = ""  # imagefolder: root with train/ and val/; npz: the file; cifar*: the torchvision root
    download: bool = False  # cifar*: fetch through torchvision if missing (only when asked)
    img_size: int = 224  # images are cropped/resized to this square
    num_workers: int = 8  # DataLoader worker processes per rank (0: load in the training process)
    val_fraction: float = 0.15  # digits only: share held out for validation (fixed split)
    crop_pct: float = 0.875  # eval: resize to img_size / crop_pct, then center-crop img_size


@dataclass
class ModelConfig:
    name: str = "deit_small_patch16_224"  # any timm ViT: deit_tiny/small/base_patch16_224, vit_*
    patch_size: Optional[int] = None  # None: the model's own; small images want 4 (32x32) or 8
    embed_dim: Optional[int] = None  # None keeps the model's size; set these for a custom tiny ViT
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: Optional[float] = None  # FFN width / embed_dim (4.0 in DeiT); method=half halves it
    drop_path: float = 0.1  # stochastic depth (DeiT: 0.1 for tiny/small, 0.1 for base too)


@dataclass
class AugConfig:
    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"  # RandAugment policy string (timm); None: off
    interpolation: str = "bicubic"
    scale_min: float = 0.08  # RandomResizedCrop's smallest area fraction
    hflip: float = 0.5
    color_jitter: float = 0.3  # used only when auto_augment is None (timm's rule)
    re_prob: float = 0.25  # random erasing
    re_mode: str = "pixel"
    mixup: float = 0.8  # mixup alpha (0: off)
    cutmix: float = 1.0  # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1  # label smoothing
    repeated_aug: bool = False  # timm's RepeatAugSampler (3 repeats; DeiT used it on ImageNet)


@dataclass
class OptimConfig:
    opt: str = "adamw"  # 'adamw' or 'lion' (timm's create_optimizer_v2)
    lr: float = 5e-4  # DeiT: 5e-4 * global_batch / 512 (Lion wants ~3-10x smaller)
    weight_decay: float = 0.05
    betas: Optional[list] = None  # None: the optimizer's default
    clip_grad: Optional[float] = None  # max grad norm (None: no clipping)
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    epochs: int = 300  # the cosine schedule (and the sparse controller) span epochs * steps_per_epoch


@dataclass
class DeiTConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: str = "2by4"  # any of sparse_core.METHODS
    sparse: Dict[str, Any] = field(default_factory=dict)  # method options, e.g. {lambda_w: auto, backend: reference}
    batch_size: int = 128  # per rank and micro-step; global batch = batch_size * grad_accum * world_size
    grad_accum: int = 1
    max_steps: Optional[int] = None  # stop after this many optimizer steps (the schedule still spans all epochs)
    eval_interval: int = 1000  # optimizer steps between evaluations (and at the end)
    log_interval: int = 10
    ckpt_interval: int = 1000  # optimizer steps between checkpoints (and at the end)
    keep_last: int = 3
    max_bad_steps: int = 20  # stop (with a checkpoint) after this many non-finite steps in a row
    ema: bool = False  # keep an EMA of the weights (timm ModelEmaV3) and evaluate it too
    ema_decay: float = 0.99996
    seed: int = 0
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    dtype: str = "bfloat16"  # autocast dtype on CUDA ('bfloat16' or 'float32'); CPU runs in float32
    out_dir: str = "out"
    run_name: str = "deit"
    resume: str = "auto"  # 'auto': newest checkpoint in out_dir/run_name if any; 'never'; or a file path
    wandb: str = "disabled"  # 'offline', 'online' or 'disabled' (metrics.jsonl is always written)
    wandb_project: str = "sparse-deit"

    def validate(self) -> None:
        """Refuse values that cannot work, naming the key."""
        d, m, a, o = self.data, self.model, self.aug, self.optim
        if d.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {d.source!r}")
        if d.source in ("imagefolder", "npz") and not d.path:
            raise ValueError(f"data.source={d.source!r} needs data.path")
        if d.img_size < 8:
            raise ValueError(f"data.img_size must be >= 8, got {d.img_size}")
        if d.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {d.num_workers}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if not 0.0 < d.crop_pct <= 1.0:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {d.crop_pct}")
        if "distilled" in m.name:
            raise ValueError(f"model.name {m.name!r}: distilled DeiT needs a teacher, which this recipe has not")
        if m.patch_size is not None and (m.patch_size < 1 or d.img_size % m.patch_size):
            raise ValueError(f"model.patch_size={m.patch_size} must divide data.img_size={d.img_size}")
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(m, key)
            if value is not None and value < 1:
                raise ValueError(f"model.{key} must be >= 1, got {value}")
        if m.embed_dim is not None and m.num_heads is not None and m.embed_dim % m.num_heads:
            raise ValueError(f"model.embed_dim={m.embed_dim} is not divisible by model.num_heads={m.num_heads}")
        if m.mlp_ratio is not None and m.mlp_ratio <= 0:
            raise ValueError(f"model.mlp_ratio must be > 0, got {m.mlp_ratio}")
        if not 0.0 <= m.drop_path < 1.0:
            raise ValueError(f"model.drop_path must be in [0, 1), got {m.drop_path}")
        for key in ("re_prob", "mixup_prob", "mixup_switch_prob", "hflip", "smoothing"):
            if not 0.0 <= getattr(a, key) <= 1.0:
                raise ValueError(f"aug.{key} must be in [0, 1], got {getattr(a, key)}")
        if not 0.0 < a.scale_min <= 1.0:
            raise ValueError(f"aug.scale_min must be in (0, 1], got {a.scale_min}")
        if a.mixup < 0 or a.cutmix < 0:
            raise ValueError(f"aug.mixup and aug.cutmix must be >= 0, got {a.mixup}, {a.cutmix}")
        if a.mixup_mode not in ("batch", "pair", "elem"):
            raise ValueError(f"aug.mixup_mode must be 'batch', 'pair' or 'elem', got {a.mixup_mode!r}")
        if o.opt not in OPTIMIZERS:
            raise ValueError(f"optim.opt must be one of {OPTIMIZERS}, got {o.opt!r}")
        if o.lr <= 0 or o.weight_decay < 0 or o.min_lr < 0 or o.warmup_lr < 0:
            raise ValueError(f"optim.lr must be > 0 and weight_decay, min_lr, warmup_lr >= 0, got "
                             f"{o.lr}, {o.weight_decay}, {o.min_lr}, {o.warmup_lr}")
        if o.betas is not None and len(o.betas) != 2:
            raise ValueError(f"optim.betas must be two numbers, got {o.betas}")
        if o.clip_grad is not None and o.clip_grad <= 0:
            raise ValueError(f"optim.clip_grad must be > 0 or null, got {o.clip_grad}")
        if o.epochs < 1 or not 0 <= o.warmup_epochs < o.epochs:
            raise ValueError(f"need optim.epochs >= 1 and 0 <= optim.warmup_epochs < epochs, got "
                             f"{o.epochs}, {o.warmup_epochs}")
        # unknown sparse.* options and impossible values (mask_refresh_interval=0, dense_ft_fraction=1.5) fail
        # here; the schedule's length depends on the data set, so only the values are checked (a huge horizon)
        sparse_core.methods.build_method(self.method, **self.sparse).validate(10**9)
        if self.method not in ("dense", "half") and m.embed_dim is not None:
            hidden = int(m.embed_dim * (m.mlp_ratio or 4.0))
            if m.embed_dim % 4 or hidden % 4:
                raise ValueError(f"model.embed_dim={m.embed_dim} and its FFN width {hidden} (embed_dim x mlp_ratio) "
                                 f"must be multiples of 4 for the 2:4 layers of method={self.method}")
        if self.method == "step" and o.opt != "adamw":
            raise ValueError(f"method=step freezes Adam's second moment; it needs optim.opt=adamw, got {o.opt!r}")
        for key in ("batch_size", "grad_accum", "eval_interval", "log_interval", "ckpt_interval", "keep_last",
                    "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if (a.mixup > 0 or a.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f"mixup/cutmix need an even batch_size, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}")
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"wandb must be 'offline', 'online' or 'disabled', got {self.wandb!r}")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"run_name must be a non-empty name without '/', got {self.run_name!r}")


def config_from_dict(d: dict[str, Any]) -> DeiTConfig:
    """The DeiTConfig saved in a checkpoint (`config_to_dict` output) back as dataclasses."""
    sections = {"data": DataConfig, "model": ModelConfig, "aug": AugConfig, "optim": OptimConfig}
    try:
        parts = {k: cls(**d[k]) for k, cls in sections.items()}
        return DeiTConfig(**parts, **{k: v for k, v in d.items() if k not in sections})
    except (KeyError, TypeError) as e:
        raise ValueError(f"checkpoint config does not match DeiTConfig: {e}") from e
