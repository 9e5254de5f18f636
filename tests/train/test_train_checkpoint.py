"""CheckpointManager: atomic writes, manifest, pruning, corrupt fallbacks, weights_only, exact resume."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from sparse_core.train.checkpoint import CheckpointError, CheckpointManager, RNGState, load_checkpoint, restore


def _model_opt(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 8)  # draws from the global generator, so RNG state matters
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_save_writes_manifest_and_no_temp_files(tmp_path):
    model, opt = _model_opt()
    mgr = CheckpointManager(tmp_path / "ckpt")
    path = mgr.save(7, {"model": model, "optimizer": opt, "meta": {"tokens": 123, "name": "x"}})
    assert path.name == "ckpt_00000007.pt" and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt_00000007.pt", "manifest.json"]
    manifest = json.loads((path.parent / "manifest.json").read_text())
    (entry,) = manifest["checkpoints"]
    assert entry["file"] == path.name and entry["step"] == 7 and len(entry["sha256"]) == 64


def test_everything_loads_with_weights_only(tmp_path):
    model, opt = _model_opt()
    _train(model, opt, 2)
    scaler = torch.amp.GradScaler("cpu")
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(2, {"model": model, "optimizer": opt, "scaler": scaler, "rng": RNGState(),
                        "data": {"epoch": 1, "offsets": torch.arange(3), "names": ["a", "b"]}, "step": 2})
    raw = torch.load(path, weights_only=True)  # what the loader does, spelled out
    assert raw["step"] == 2 and torch.equal(raw["state"]["data"]["offsets"], torch.arange(3))
    step, state = mgr.load_latest()
    assert step == 2 and state["step"] == 2 and state["data"]["names"] == ["a", "b"]


def test_unloadable_values_are_refused_at_save(tmp_path):
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(TypeError, match=r"data\['arr'\].*ndarray"):
        mgr.save(0, {"data": {"arr": np.zeros(3)}})
    with pytest.raises(ValueError, match="step"):
        mgr.save(-1, {"x": 1})
    assert not list(tmp_path.glob("ckpt_*"))


def test_keep_last_prunes_oldest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30, 40):
        mgr.save(step, {"x": torch.tensor(step)})
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_00000030.pt", "ckpt_00000040.pt"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [e["step"] for e in manifest["checkpoints"]] == [30, 40]
    step, state = mgr.load_latest()
    assert step == 40 and state["x"].item() == 40
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


def test_stale_temp_file_is_cleaned_and_ignored(tmp_path):
    mgr = CheckpointManager(tmp_path)
    (tmp_path / ".tmp_crashed.part").write_bytes(b"half a checkpoint")
    assert mgr.load_latest() is None  # a temp file is not a checkpoint
    mgr.save(1, {"x": 1})
    assert not list(tmp_path.glob(".tmp_*"))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_newest_falls_back_with_warning(tmp_path, damage):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"x": torch.tensor(1.0)})
    newest = mgr.save(2, {"x": torch.tensor(2.0)})
    if damage == "flip":
        _flip_byte(newest)
    else:
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    with pytest.warns(UserWarning, match="ckpt_00000002.pt.*sha256"):
        step, state = mgr.load_latest()
    assert step == 1 and state["x"].item() == 1.0
    with pytest.raises(CheckpointError, match="sha256"):
        mgr.load(newest)


def test_truncated_without_manifest_fails_in_torch_load(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"x": torch.tensor(1.0)})
    newest = mgr.save(2, {"x": torch.tensor(2.0)})
    (tmp_path / "manifest.json").unlink()
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ckpt_00000002.pt.*torch.load failed"):
        step, _ = mgr.load_latest()
    assert step == 1


def test_all_corrupt_raises_and_empty_returns_none(tmp_path):
    mgr = CheckpointManager(tmp_path)
    assert mgr.load_latest() is None
    for step in (1, 2):
        _flip_byte(mgr.save(step, {"x": torch.tensor(float(step))}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"(?s)no usable checkpoint.*ckpt_00000002.pt.*ckpt_00000001.pt"):
            mgr.load_latest()


def test_checkpoint_missing_from_manifest_still_loads(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"x": 1})
    manifest = (tmp_path / "manifest.json").read_bytes()
    mgr.save(2, {"x": 2})
    (tmp_path / "manifest.json").write_bytes(manifest)  # as if we crashed before the manifest update
    with pytest.warns(UserWarning, match="not listed"):
        assert mgr.load_latest()[0] == 2


def test_load_specific_file_and_errors(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(3, {"x": 3})
    assert load_checkpoint(path) == (3, {"x": 3})
    assert mgr.load("ckpt_00000003.pt")[0] == 3
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "ckpt_00000009.pt")
    other = tmp_path / "other.pt"
    torch.save({"foo": 1}, other)
    with pytest.raises(CheckpointError, match="not a sparse_core checkpoint"):
        load_checkpoint(other)


def test_restore_missing_entry_is_named(tmp_path):
    model, _ = _model_opt()
    with pytest.raises(CheckpointError, match="'model'"):
        restore({"model": model}, {"optimizer": {}})


def test_rng_state_round_trip(tmp_path):
    rng = RNGState()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    CheckpointManager(tmp_path).save(0, {"rng": rng})
    expected = (random.random(), np.random.rand(4).tolist(), np.random.randn(), torch.rand(4))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    _, loaded = CheckpointManager(tmp_path).load_latest()
    restore({"rng": rng}, loaded)
    got = (random.random(), np.random.rand(4).tolist(), np.random.randn(), torch.rand(4))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_resume_continues_bit_exactly(tmp_path):
    """Train 3+3 steps with a save/rebuild/restore in between == 6 steps straight."""
    model, opt = _model_opt()
    torch.manual_seed(42)
    _train(model, opt, 6)
    straight = [p.detach().clone() for p in model.parameters()]

    model, opt = _model_opt()
    torch.manual_seed(42)
    _train(model, opt, 3)
    CheckpointManager(tmp_path).save(3, {"model": model, "optimizer": opt, "rng": RNGState()})
    torch.manual_seed(0)  # disturb everything the checkpoint must restore
    model, opt = _model_opt(seed=1)
    state = {"model": model, "optimizer": opt, "rng": RNGState()}
    step, loaded = CheckpointManager(tmp_path).load_latest()
    restore(state, loaded)
    _train(model, opt, 3)
    assert step == 3
    for a, b in zip(straight, model.parameters()):
        assert torch.equal(a, b)


def test_require_empty_refuses_a_directory_with_checkpoints(tmp_path):
    ckpt = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    ckpt.require_empty("resume=auto")  # missing or empty: a fresh run may start
    ckpt.save(5, {"x": torch.ones(1)})
    with pytest.raises(CheckpointError, match="already holds checkpoints; use resume=auto"):
        ckpt.require_empty("resume=auto")


def test_a_run_resumed_from_an_earlier_step_sets_the_later_checkpoints_aside(tmp_path):
    """Resumed from step 20 of a run that reached 40: its next save keeps its own checkpoints, moves 30 and 40 (the
    branch it left) to abandoned/branch_0 (still loadable, sha256-checked), and load_latest follows the new run."""
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (20, 30, 40):
        mgr.save(step, {"x": torch.tensor(step)})
    with pytest.warns(UserWarning, match=r"steps \[30, 40\], were moved"):
        path = mgr.save(25, {"x": torch.tensor(-25)})
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_00000020.pt", "ckpt_00000025.pt"]
    step, state = mgr.load_latest()
    assert step == 25 and state["x"].item() == -25
    aside = tmp_path / "abandoned" / "branch_0"
    assert [e["step"] for e in json.loads((aside / "manifest.json").read_text())["checkpoints"]] == [30, 40]
    step, state = load_checkpoint(aside / "ckpt_00000040.pt")
    assert step == 40 and state["x"].item() == 40
    mgr.load(tmp_path / "ckpt_00000020.pt")
    with pytest.warns(UserWarning, match="branch_1"):  # a second roll-back keeps the first one's files
        mgr.save(21, {"x": torch.tensor(21)})
    assert (aside / "ckpt_00000030.pt").is_file() and (tmp_path / "abandoned" / "branch_1" / "ckpt_00000025.pt").is_file()


def test_keep_last_one_keeps_the_checkpoint_just_written_after_a_roll_back(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(300, {"x": torch.tensor(300)})
    with pytest.warns(UserWarning, match="moved"):
        path = mgr.save(250, {"x": torch.tensor(250)})
    assert path.is_file() and mgr.load_latest()[0] == 250


class Killed(Exception):
    """A crash injected into a checkpoint save."""


def kill_at_stage(monkeypatch, stage: str) -> None:
    """The save dies at checkpoint.py's fault point `stage` ('file': before the rename, 'manifest': after it)."""
    import sparse_core.train.checkpoint as ckpt_module

    def fault(step, at, *args):
        if at == stage:
            raise Killed
    monkeypatch.setattr(ckpt_module, "at_checkpoint_write", fault)


def kill_at_move(monkeypatch, nth: int) -> None:
    """The save dies at its nth move of a checkpoint into abandoned/."""
    import sparse_core.train.checkpoint as ckpt_module

    moves, real_replace = [], os.replace

    def flaky_replace(src, dst):
        if "abandoned" in str(dst) and str(dst).endswith(".pt"):
            moves.append(src)
            if len(moves) == nth:
                raise Killed
        real_replace(src, dst)
    monkeypatch.setattr(ckpt_module.os, "replace", flaky_replace)


@pytest.mark.parametrize("crash_at", ["manifest", "second move"])
def test_a_crash_while_setting_a_branch_aside_never_resumes_the_left_branch(tmp_path, monkeypatch, crash_at):
    """The set-aside is decided in the manifest, then done, before the new file is written: killed after the write
    (the fault point before the manifest update) or half-way through the moves, load_latest never gives the left
    branch (it gives the new file, or the step the run went back to), and the next save finishes the moves."""
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (20, 30, 40):
        mgr.save(step, {"x": torch.tensor(step)})
    if crash_at == "manifest":
        kill_at_stage(monkeypatch, "manifest")
    else:
        kill_at_move(monkeypatch, 2)
    with pytest.raises(Killed):
        mgr.save(25, {"x": torch.tensor(-25)})
    monkeypatch.undo()
    written = crash_at == "manifest"  # the moves come first; a crash in them is before the new file exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the new file may not be in the manifest yet
        assert mgr.load_latest()[0] == (25 if written else 20)
        mgr.save(26, {"x": torch.tensor(26)})  # finishes an interrupted move
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == (
        ["ckpt_00000020.pt"] + ["ckpt_00000025.pt"] * written + ["ckpt_00000026.pt"])
    aside = tmp_path / "abandoned" / "branch_0"
    assert sorted(p.name for p in aside.glob("ckpt_*.pt")) == ["ckpt_00000030.pt", "ckpt_00000040.pt"]
    assert [e["step"] for e in json.loads((aside / "manifest.json").read_text())["checkpoints"]] == [30, 40]
    assert "set_aside" not in json.loads((tmp_path / "manifest.json").read_text())
    assert mgr.load_latest()[0] == 26 and load_checkpoint(aside / "ckpt_00000040.pt")[0] == 40


def test_resuming_a_set_aside_checkpoint_sets_the_other_branch_aside_too(tmp_path):
    """Back to the left branch by path (abandoned/branch_0/ckpt_40): the main folder's checkpoints are now the
    other branch, so the first save moves all of them aside instead of letting keep_last prune them."""
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (20, 30, 40):
        mgr.save(step, {"x": torch.tensor(step)})
    mgr.load(tmp_path / "ckpt_00000020.pt")
    with pytest.warns(UserWarning, match=r"steps \[30, 40\]"):
        mgr.save(25, {"x": torch.tensor(25)})
    resumed = CheckpointManager(tmp_path, keep_last=2)
    step, _ = resumed.load(tmp_path / "abandoned" / "branch_0" / "ckpt_00000040.pt")
    assert step == 40
    with pytest.warns(UserWarning, match=r"steps \[20, 25\], were moved to .*branch_1"):
        resumed.save(50, {"x": torch.tensor(50)})
    for step in (60, 70):
        resumed.save(step, {"x": torch.tensor(step)})
    assert sorted(p.name for p in (tmp_path / "abandoned" / "branch_1").glob("ckpt_*.pt")) == [
        "ckpt_00000020.pt", "ckpt_00000025.pt"]
    assert resumed.load_latest()[0] == 70


def test_a_roll_back_saving_at_a_step_the_left_branch_has_keeps_that_checkpoint(tmp_path):
    """Resumed from 20 (in the folder) and saving at 30 on the same interval grid as the left branch: its own ckpt_30
    is set aside, not overwritten. Resumed from outside and saving at 50: the folder's ckpt_50 is set aside too."""
    mgr = CheckpointManager(tmp_path, keep_last=5)
    for step in (20, 30, 40, 50):
        mgr.save(step, {"x": torch.tensor(1000 + step)})
    mgr.load(tmp_path / "ckpt_00000020.pt")
    with pytest.warns(UserWarning, match=r"steps \[30, 40, 50\]"):
        mgr.save(30, {"x": torch.tensor(30)})
    branch = tmp_path / "abandoned" / "branch_0"
    assert load_checkpoint(branch / "ckpt_00000030.pt")[1]["x"].item() == 1030
    assert load_checkpoint(tmp_path / "ckpt_00000030.pt")[1]["x"].item() == 30
    mgr.save(40, {"x": torch.tensor(40)})  # the new branch goes on: nothing set aside
    mgr.load(branch / "ckpt_00000040.pt")
    with pytest.warns(UserWarning, match=r"steps \[20, 30, 40\], were moved to .*branch_1"):
        mgr.save(50, {"x": torch.tensor(50)})
    assert load_checkpoint(tmp_path / "abandoned" / "branch_1" / "ckpt_00000040.pt")[1]["x"].item() == 40


def test_a_crash_before_the_first_checkpoint_of_a_run_resumed_from_outside_resumes_from_there_again(tmp_path,
                                                                                                 monkeypatch):
    """Every checkpoint of the folder is being set aside and the new one was never written: resume=auto must not
    start from step 0; it goes back to the file the run was resumed from."""
    other = CheckpointManager(tmp_path / "other")
    other.save(40, {"x": torch.tensor(40)})
    mgr = CheckpointManager(tmp_path / "run")
    for step in (10, 20):
        mgr.save(step, {"x": torch.tensor(step)})
    mgr.load(tmp_path / "other" / "ckpt_00000040.pt")
    kill_at_stage(monkeypatch, "file")
    with pytest.raises(Killed):
        mgr.save(50, {"x": torch.tensor(50)})
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="resuming from .*other.*ckpt_00000040.pt again"):
        step, state = CheckpointManager(tmp_path / "run").load_latest()
    assert step == 40 and state["x"].item() == 40


def test_resuming_a_file_a_crashed_save_was_setting_aside_keeps_every_branch(tmp_path, monkeypatch):
    """Roll-back to 20, crash half-way through setting 30 / 40 aside, then back to 40 (still in the folder) by path:
    that counts as resuming from elsewhere, so every branch is kept (40's moved aside, loadable) and none pruned."""
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (20, 30, 40):
        mgr.save(step, {"x": torch.tensor(step)})
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.load(tmp_path / "ckpt_00000030.pt")
    kill_at_move(monkeypatch, 1)
    with pytest.raises(Killed):
        mgr.save(35, {"x": torch.tensor(35)})
    monkeypatch.undo()
    assert (tmp_path / "ckpt_00000040.pt").is_file()  # pending, still in the folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mgr.load(tmp_path / "ckpt_00000040.pt")[0] == 40
        for step in (50, 60, 70):
            mgr.save(step, {"x": torch.tensor(step)})
    everything = {p.name for p in tmp_path.rglob("ckpt_*.pt")}
    assert {"ckpt_00000030.pt", "ckpt_00000040.pt", "ckpt_00000050.pt", "ckpt_00000070.pt"} <= everything
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_00000050.pt", "ckpt_00000060.pt",
                                                                   "ckpt_00000070.pt"]
