"""Config schema of the Cramming recipe: every default lives here, YAML files override a few keys.

    cfg = load_config(CrammingConfig, CONFIG_DIR, "tiny", ["method=2by4", "budget.steps=50"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sparse_core.train.metrics import WANDB_MODES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DATA_SOURCES = ("stdlib", "files", "hf")


@dataclass
class ModelConfig:
    """Budget BERT (Geiping & Goldstein 2022): pre-LN, no linear biases, GELU-GLU FFN."""

    hidden_size: int = 128  # 768 for the crammed full size
    num_layers: int = 2  # 16 for the full size
    num_heads: int = 2  # 12 for the full size
    intermediate_size: int = 512  # output width of ffn.dense_in (value and gate halves); 3072 full size
    max_position: int = 128  # learned position embeddings
    type_vocab_size: int = 2  # sentence A / B, used by GLUE pairs
    dropout: float = 0.0  # Cramming trains without dropout
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def validate(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"model.hidden_size={self.hidden_size} must be a multiple of 4 for 2:4 layers")
        if self.intermediate_size % 16:  # halved by GLU, maybe halved again by 'half', then 2:4 groups
            raise ValueError(f"model.intermediate_size={self.intermediate_size} must be a multiple of 16")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DataConfig:
    """Where the text comes from, how it is tokenized, packed and masked."""

    source: str = "stdlib"  # 'stdlib' (embedded: Python stdlib docstrings), 'files' (path), 'hf' (datasets)
    path: Optional[str] = None  # source=files: a text file or a folder of them
    hf_name: Optional[str] = None  # source=hf: e.g. 'wikitext' or 'allenai/c4'
    hf_config: Optional[str] = None  # e.g. 'wikitext-103-raw-v1' or 'en'
    hf_split: str = "train"
    hf_text_field: str = "text"
    max_documents: Optional[int] = None  # cap on documents read (None: all)
    max_chars: Optional[int] = 2_000_000  # cap on characters read (None: all)
    tokenizer: str = "train"  # 'train' (WordPiece on this corpus) or a vocab.txt / tokenizer folder
    vocab_size: int = 8192  # for tokenizer=train
    seq_len: int = 128  # packed sequence length, [CLS] and [SEP] included
    mlm_probability: float = 0.15
    val_fraction: float = 0.02  # packed sequences held out for the validation MLM loss
    max_val_sequences: int = 256

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
        if self.source == "files" and not self.path:
            raise ValueError("data.source=files needs data.path (a text file or folder)")
        if self.source == "hf" and not self.hf_name:
            raise ValueError("data.source=hf needs data.hf_name, e.g. data.hf_name=wikitext")
        if self.seq_len < 8:
            raise ValueError(f"data.seq_len must be >= 8, got {self.seq_len}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"data.mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ValueError(f"data.val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.tokenizer == "train" and self.vocab_size < 128:
            raise ValueError(f"data.vocab_size must be >= 128, got {self.vocab_size}")


@dataclass
class BudgetConfig:
    """The compute budget: exactly one of steps / minutes; the LR schedule spans the whole budget."""

    steps: Optional[int] = 300  # optimizer steps
    minutes: Optional[float] = None  # wall-clock minutes of training (evaluation time included)
    expected_steps: Optional[int] = None  # minutes budget: steps the sparse controller plans for

    def validate(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ValueError(f"give exactly one of budget.steps / budget.minutes, got {self.steps} / {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"budget.steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"budget.minutes must be > 0, got {self.minutes}")
        if self.minutes is not None and self.expected_steps is None:
            raise ValueError("budget.minutes needs budget.expected_steps (the step count the sparse controller "
                             "schedules dense fine-tuning and lambda warm-up over); measure it with a short run")

    @property
    def total_steps(self) -> int:
        return int(self.steps if self.steps is not None else self.expected_steps)


@dataclass
class OptimConfig:
    """AdamW and the one-cycle (triangle) schedule of Cramming."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-12
    weight_decay: float = 0.01
    clip_norm: float = 0.5
    warmup_fraction: float = 0.5  # triangle: peak at half the budget
    final_fraction: float = 0.0  # LR at the end of the budget, as a fraction of lr
    batch_size: int = 32  # sequences per optimizer step, over all ranks
    micro_batch_size: int = 16  # sequences per forward/backward on one rank

    def validate(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not self.eps > 0 or self.weight_decay < 0:
            raise ValueError(f"need optim.eps > 0 and optim.weight_decay >= 0, got {self.eps} / {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be in [0, 1), got {self.betas}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"optim.clip_norm must be > 0, got {self.clip_norm}")
        if not 0.0 <= self.warmup_fraction <= 1.0 or not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"optim.warmup_fraction / final_fraction must be in [0, 1], "
                             f"got {self.warmup_fraction} / {self.final_fraction}")
        if self.micro_batch_size < 1 or self.batch_size < self.micro_batch_size:
            raise ValueError(f"need 1 <= optim.micro_batch_size <= optim.batch_size, "
                             f"got {self.micro_batch_size} / {self.batch_size}")


@dataclass
class CrammingConfig:
    """Top level: model, data, budget, optimizer, the sparse method and the run's bookkeeping."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: str = "dense"  # any name in sparse_core.METHODS
    sparse: dict[str, Any] = field(default_factory=dict)  # options passed to sparse_core.sparsify
    seed: int = 0
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    dtype: str = "bfloat16"  # autocast dtype on CUDA; CPU trains in float32
    compile: bool = False  # torch.compile the model (CUDA)
    out_dir: str = "out"
    run_name: str = "cramming-tiny"
    log_interval: int = 10
    eval_interval: int = 100  # steps between validation MLM losses (0: only at the end)
    checkpoint_interval: int = 100  # steps between atomic checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    max_bad_steps: int = 20  # stop (with a checkpoint) after this many non-finite steps in a row
    resume: bool = True  # continue from out_dir/run_name/checkpoints if one is there
    stop_after_steps: Optional[int] = None  # end this process after this many steps (checkpointed), budget
    #                                          unchanged: for preemptible jobs; a later run resumes
    wandb: str = "disabled"  # 'offline', 'online' or 'disabled'; metrics.jsonl is always written
    wandb_project: str = "sparse-core-cramming"
    progress: bool = True

    def validate(self) -> None:
        import sparse_core

        self.model.validate()
        self.data.validate()
        self.budget.validate()
        self.optim.validate()
        if self.data.seq_len > self.model.max_position:
            raise ValueError(f"data.seq_len={self.data.seq_len} exceeds model.max_position={self.model.max_position}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"wandb must be offline, online or disabled, got {self.wandb!r}")
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            raise ValueError(f"stop_after_steps must be >= 1, got {self.stop_after_steps}")
        for name in ("log_interval", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("keep_checkpoints", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # unknown or impossible sparse.* options (mask_refresh_interval=0, dense_ft_fraction=1.5) fail here,
        # before the corpus and tokenizer are built
        sparse_core.methods.build_method(self.method, **self.sparse).validate(self.budget.total_steps)
