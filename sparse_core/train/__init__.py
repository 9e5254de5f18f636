"""Shared training utilities for the recipes: config, checkpoint, metrics, plots, distributed,
LR schedules, the one optimizer step that calls the sparse controller, fault tolerance (pre-emption,
non-finite steps), and module timing (share of a step in the FFNs)."""

from sparse_core.train.checkpoint import (
    CheckpointError, CheckpointManager, RNGState, gather_rng_states, load_checkpoint, restore, restore_rng_states,
)
from sparse_core.train.config import ConfigError, config_to_dict, load_config, parse_cli
from sparse_core.train.distributed import (
    DistEnv, all_reduce_mean, barrier, broadcast_object, cleanup, distributed_session, init_distributed, no_sync_unless,
    wrap_ddp,
)
from sparse_core.train.metrics import (
    FanoutLogger,
    JsonlLogger,
    MetricLogger,
    NullLogger,
    WandbLogger,
    build_logger,
    progress_bar,
    read_jsonl,
)
from sparse_core.train.plots import plot_metrics, plot_prefix
from sparse_core.train.profile import ModuleTimer, time_steps
from sparse_core.train.resilience import (
    NonFiniteGuard,
    Preempted,
    PreemptionHandler,
    RunGuard,
    TrainingDiverged,
    any_rank,
    exit_preempted,
    loss_is_finite,
    run_main,
)
from sparse_core.train.schedules import one_cycle_lr, set_lr, warmup_cosine_lr
from sparse_core.train.step import StepResult, decay_param_groups, optimizer_step

__all__ = [
    "CheckpointError", "CheckpointManager", "RNGState", "gather_rng_states", "load_checkpoint", "restore",
    "restore_rng_states",
    "ConfigError", "config_to_dict", "load_config", "parse_cli",
    "DistEnv", "all_reduce_mean", "barrier", "broadcast_object", "cleanup", "init_distributed",
    "no_sync_unless", "wrap_ddp",
    "distributed_session",
    "FanoutLogger", "JsonlLogger", "MetricLogger", "NullLogger", "WandbLogger", "build_logger", "progress_bar",
    "read_jsonl",
    "plot_metrics", "plot_prefix",
    "ModuleTimer", "time_steps",
    "one_cycle_lr", "set_lr", "warmup_cosine_lr",
    "StepResult", "optimizer_step", "decay_param_groups",
    "NonFiniteGuard", "Preempted", "PreemptionHandler", "TrainingDiverged", "any_rank", "exit_preempted",
    "loss_is_finite", "RunGuard", "run_main",
]
