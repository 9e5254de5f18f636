"""The shared glue of the recipes' loops (RunGuard, run_main, restore(optional=...)) and the fault-injection
hooks (SPARSE_CORE_FAULT): parsing, NaN loss, self-signals, SIGKILL in each phase and inside a checkpoint write."""

from __future__ import annotations

import multiprocessing as mp
import signal
import warnings

import pytest
import torch
import torch.nn as nn

from sparse_core.train import (
    CheckpointError,
    CheckpointManager,
    ConfigError,
    Preempted,
    RunGuard,
    TrainingDiverged,
    optimizer_step,
    restore,
    run_main,
)
from sparse_core.train.faults import ENV, Fault, FaultInjector, parse_faults


def test_parse_faults():
    assert parse_faults("") == ()
    assert parse_faults("nan_loss@3:2, kill_backward@7") == (Fault("nan_loss", 3, 2), Fault("kill_backward", 7, 1))
    for bad in ("nan_loss", "nan_loss@x", "boom@3", "nan_loss@3:0", "kill_forward@-1", "nan_loss@3:2:1"):
        with pytest.raises(ValueError, match=ENV):
            parse_faults(bad)


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _loop(guard: RunGuard, model, opt, steps: range, applied: list) -> None:
    for step in steps:
        guard.begin_step(step)
        loss = guard.loss(model(torch.randn(8, 4)).pow(2).mean())
        loss.backward()
        result = optimizer_step(model, opt, step=step)
        guard.after_step(step, result, loss)
        if not result.skipped:
            applied.append(step)
        guard.stop_if_requested(step + 1)


def test_nan_loss_is_skipped_counted_then_stops_with_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "nan_loss@1,nan_loss@4:10")
    model, opt = _setup()
    ckpt = CheckpointManager(tmp_path)
    guard = RunGuard(lambda s: ckpt.save(s, {"model": model, "guard": guard}), max_bad_steps=3)
    guard.install(model, opt)
    applied: list[int] = []
    with guard, pytest.raises(TrainingDiverged) as info:
        _loop(guard, model, opt, range(20), applied)
    assert applied == [0, 2, 3]
    msg = str(info.value)
    assert "3 optimizer steps in a row (steps 4..6)" in msg and "4 skipped in total" in msg
    assert f"checkpoint {ckpt.path_for(7)} of step 7" in msg and "resume=auto" in msg
    step, state = ckpt.load_latest()
    assert step == 7 and state["guard"] == {"total": 4, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert guard.metrics() == {"train/skipped_steps": 4.0, "train/consecutive_skipped": 0.0}


@pytest.mark.parametrize("kind, sig", [("sigterm", "SIGTERM"), ("sigint", "SIGINT")])
def test_self_signal_checkpoints_and_exits_0(tmp_path, monkeypatch, capsys, kind, sig):
    monkeypatch.setenv(ENV, f"{kind}@2")
    model, opt = _setup()
    ckpt = CheckpointManager(tmp_path)
    guard = RunGuard(lambda s: ckpt.save(s, {"model": model}))
    guard.install(model, opt)
    before = signal.getsignal(signal.SIGTERM)
    with guard, pytest.raises(Preempted) as info:
        _loop(guard, model, opt, range(10), [])
    assert info.value.code == 0 and info.value.step == 3 and ckpt.load_latest()[0] == 3
    assert f"pre-empted by {sig} at step 3; checkpoint {ckpt.path_for(3)}; resume with the same command plus " \
           "resume=auto" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_fault_set_installs_no_hooks(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    model, opt = _setup()
    injector = FaultInjector()
    injector.install(model, opt)
    assert not injector.enabled and not model._forward_pre_hooks and not opt._optimizer_step_pre_hooks
    with pytest.raises(ValueError, match="max_consecutive"):
        RunGuard(lambda s: None, max_bad_steps=0)
    with pytest.raises(TypeError, match="save"):
        RunGuard("not callable")
    monkeypatch.setenv(ENV, "explode@1")
    with pytest.raises(ValueError, match="explode"):
        RunGuard(lambda s: None)


def _phase_child(kind: str, directory: str) -> None:
    import os

    os.environ[ENV] = f"{kind}@1"
    model, opt = _setup()
    ckpt = CheckpointManager(directory)
    guard = RunGuard(lambda s: ckpt.save(s, {"model": model}))
    guard.install(model, opt)
    ckpt.save(0, {"model": model})
    for step in range(3):
        guard.begin_step(step)
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer_step(model, opt, step=step)
        ckpt.save(step + 1, {"model": model})
    os._exit(0)  # not reached when the fault fires


@pytest.mark.parametrize("kind, newest", [("kill_forward", 1), ("kill_backward", 1), ("kill_optimizer", 1),
                                          ("kill_checkpoint", 0), ("kill_manifest", 1)])
def test_sigkill_in_each_phase_leaves_a_good_newest_checkpoint(tmp_path, kind, newest):
    proc = mp.get_context("fork").Process(target=_phase_child, args=(kind, str(tmp_path)))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    ckpt = CheckpointManager(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, state = ckpt.load_latest()
    assert step == newest and set(state) == {"model"}
    if kind == "kill_checkpoint":  # the torn temp file is there, never the newest checkpoint
        assert list(tmp_path.glob(".tmp_*")) and not ckpt.path_for(1).exists()
    if kind == "kill_manifest":  # complete file, renamed in, not yet in the manifest: loaded, with a warning
        assert any("not listed" in str(w.message) for w in caught)


def test_restore_optional_entries(tmp_path):
    model, _ = _setup()
    guard = RunGuard(lambda s: None)
    guard.nonfinite.total = 2
    restore({"model": model, "guard": guard}, {"model": model.state_dict()}, optional=("guard",))
    assert guard.state_dict() == {"total": 2, "consecutive": 0}  # left as it was
    with pytest.raises(CheckpointError, match="'guard'"):
        restore({"model": model, "guard": guard}, {"model": model.state_dict()})


@pytest.mark.parametrize("error, prefix", [(ConfigError("bad key x"), "config error: bad key x"),
                                           (CheckpointError("no usable"), "checkpoint error: no usable"),
                                           (TrainingDiverged("nan"), "training stopped: nan")])
def test_run_main_turns_known_errors_into_exit_1(error, prefix):
    def main():
        raise error

    with pytest.raises(SystemExit) as info:
        run_main(main)
    assert info.value.code == prefix
    with pytest.raises(KeyError):  # anything else keeps its traceback
        run_main(lambda: {}["x"])
