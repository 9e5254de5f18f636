"""Pre-emption: SIGTERM/SIGINT only set a flag; the loop checkpoints, says how to resume and exits 0; a signal
mid-save never leaves a broken newest checkpoint (real signals to real subprocesses); ranks agree on stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sparse_core.train import CheckpointManager, Preempted, PreemptionHandler, any_rank, exit_preempted, loss_is_finite
from sparse_core.train import distributed as D
from dist_testutil import free_port

REPO = Path(__file__).resolve().parents[2]

# A fake training loop: periodic checkpoint at step 2, prints READY, then keeps stepping until signalled;
# the pre-emption save pauses mid-write (after printing MIDSAVE) so the test can signal again.
LOOP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch, torch.nn as nn
    from sparse_core.train import CheckpointManager, PreemptionHandler, optimizer_step

    out = Path(sys.argv[1])
    real_save, slow = torch.save, False

    def save_maybe_slowly(obj, f):
        real_save(obj, f)
        if slow:
            f.flush()
            print("MIDSAVE", flush=True)
            time.sleep(1.0)  # a signal arrives while the temp file is half-way to its rename

    torch.save = save_maybe_slowly
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = CheckpointManager(out, keep_last=5)
    state = {"model": model, "optimizer": opt}

    def train_forever(preempt):
        global slow
        for step in range(10**6):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            optimizer_step(model, opt, step=step)
            done = step + 1
            if done == 2:
                ckpt.save(done, state)
                slow = True
            preempt.stop_if_requested(done, lambda: ckpt.save(done, state))
            if done == 2:
                print("READY", flush=True)  # after step 2's check: a signal from now on stops at step >= 3
            time.sleep(0.01)

    with PreemptionHandler() as preempt:
        train_forever(preempt)
""")


def _start(tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "ckpt")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == word:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"child never printed {word}; stderr:\n{proc.stderr.read()}")


def test_sigterm_checkpoints_and_exits_0_even_when_signalled_again_mid_save(tmp_path):
    proc = _start(tmp_path)
    _wait_for(proc, "READY")
    os.kill(proc.pid, signal.SIGTERM)
    _wait_for(proc, "MIDSAVE")  # the pre-emption save is half-way
    os.kill(proc.pid, signal.SIGTERM)  # the cluster (or an impatient user) insists
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (line,) = [ln for ln in err.splitlines() if "pre-empted" in ln]
    step = int(line.split("at step ")[1].split(";")[0])
    path = CheckpointManager(tmp_path / "ckpt").path_for(step)
    assert line == f"pre-empted by SIGTERM at step {step}; checkpoint {path}; resume with the same command " \
                   "plus resume=auto"
    assert step > 2 and path.is_file() and not list(path.parent.glob(".tmp_*"))
    found_step, state = CheckpointManager(tmp_path / "ckpt").load_latest()  # sha256-verified against the manifest
    assert found_step == step and set(state) == {"model", "optimizer"}


def _save_until_killed(directory: Path, midsave) -> None:
    """Forked child without a handler: checkpoint 2, then checkpoint 3 with a pause half-way through its write."""
    import sparse_core.train.checkpoint as C

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    mgr = CheckpointManager(directory)
    mgr.save(2, {"x": torch.tensor(2)})
    real_save = torch.save

    def half_then_wait(obj, f):
        real_save(obj, f)
        f.flush()
        midsave.set()
        time.sleep(60)

    C.torch.save = half_then_wait  # the child's own copy of the module: the test process is untouched
    mgr.save(3, {"x": torch.tensor(3)})


def test_sigterm_without_handler_mid_save_keeps_previous_checkpoint(tmp_path):
    ctx = mp.get_context("fork")  # the child need not re-import torch (CPU only, so forking is safe)
    midsave = ctx.Event()
    directory = tmp_path / "ckpt"
    proc = ctx.Process(target=_save_until_killed, args=(directory, midsave))
    proc.start()
    assert midsave.wait(60), "the child never reached the middle of its second save"
    os.kill(proc.pid, signal.SIGTERM)  # default action: die now, half-way through writing ckpt 3
    proc.join(30)
    assert proc.exitcode == -signal.SIGTERM
    assert list(directory.glob(".tmp_*")), "the child should have died with its temp file half-written"
    assert sorted(p.name for p in directory.glob("ckpt_*.pt")) == ["ckpt_00000002.pt"]
    step, state = CheckpointManager(directory).load_latest()
    assert step == 2 and state["x"].item() == 2
    CheckpointManager(directory).save(3, {"x": 1})  # the next save sweeps the dead temp file
    assert not list(directory.glob(".tmp_*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_handler_sets_flag_and_restores_previous_handlers(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with PreemptionHandler() as preempt:
        assert not preempt.requested and not preempt.should_stop()
        signal.raise_signal(sig)  # would kill the test process (or raise KeyboardInterrupt) without the handler
        signal.raise_signal(sig)
        assert preempt.requested and preempt.should_stop() and preempt.count == 2
        assert preempt.signal_name == sig.name
    assert {s: signal.getsignal(s) for s in before} == before


def test_stop_if_requested_saves_then_raises_preempted(tmp_path, capsys):
    mgr = CheckpointManager(tmp_path)
    calls = []

    def save():
        calls.append(1)
        return mgr.save(5, {"x": torch.tensor(5)})

    with PreemptionHandler(signals=(signal.SIGTERM,)) as preempt:
        preempt.stop_if_requested(4, save)  # nothing requested: no save, no exit
        assert calls == []
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Preempted) as info:
            preempt.stop_if_requested(5, save, hint="resubmit the job", code=3)
    assert calls == [1] and info.value.code == 3 and info.value.step == 5 and info.value.path == mgr.path_for(5)
    assert capsys.readouterr().err.strip() == f"pre-empted by SIGTERM at step 5; checkpoint {mgr.path_for(5)}; " \
                                              "resubmit the job"
    assert mgr.load_latest()[0] == 5
    with pytest.raises(Preempted) as info:
        exit_preempted(7, None)
    assert info.value.code == 0 and "no checkpoint path" in capsys.readouterr().err


def test_outside_main_thread_is_a_noop_with_warning():
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def run():
        with pytest.warns(UserWarning, match="main thread"):
            with PreemptionHandler() as preempt:
                seen["inside"] = signal.getsignal(signal.SIGTERM)
                seen["requested"] = preempt.requested

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"inside": before, "requested": False}


def test_bad_arguments():
    with pytest.raises(ValueError, match="signals"):
        PreemptionHandler(signals=())
    with pytest.raises(ValueError):
        PreemptionHandler(signals=(99999,))
    handler = PreemptionHandler()
    with handler:
        with pytest.raises(RuntimeError, match="already installed"):
            handler.__enter__()


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    D.init_distributed("cpu")
    try:
        with PreemptionHandler(signals=(signal.SIGTERM,)) as preempt:
            first = preempt.should_stop()
            if rank == 1:
                signal.raise_signal(signal.SIGTERM)  # only rank 1 is told; both must stop at the same step
            results[rank] = (first, preempt.requested, preempt.should_stop(), any_rank(rank == 0),
                             loss_is_finite(torch.tensor(float("nan") if rank == 0 else 1.0)),
                             loss_is_finite(torch.tensor([1.0, 2.0])))
    finally:
        D.cleanup()


def test_one_signalled_rank_stops_every_rank():
    port = free_port()
    results = mp.Manager().dict()
    # fork, not spawn: the children need not re-import torch (CPU only, so forking is safe)
    mp.start_processes(_worker, args=(port, results), nprocs=2, join=True, start_method="fork")
    assert results[0] == (False, False, True, True, False, True)
    assert results[1] == (False, True, True, True, False, True)  # rank 1's loss is finite, rank 0's is not
