"""Checkpoint faults beyond test_train_checkpoint.py: a corrupt or truncated manifest, checkpoints with missing
keys, state that does not fit, and a full disk (ENOSPC) at each write of a save."""

from __future__ import annotations

import errno
import json
import os
import warnings

import pytest
import torch
import torch.nn as nn

import sparse_core.train.checkpoint as C
from sparse_core.train import CheckpointError, CheckpointManager, restore


def _two_checkpoints(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"x": torch.tensor(1.0)})
    mgr.save(2, {"x": torch.tensor(2.0)})
    return mgr


MANIFESTS = {
    "truncated": lambda text: text[: len(text) // 2],
    "binary": lambda text: "\udcff\x00garbage",
    "not_an_object": lambda text: "[1, 2]",
    "null": lambda text: "null",
    "entry_without_sha": lambda text: json.dumps({"format": 1, "checkpoints": [{"file": "ckpt_00000002.pt"}]}),
    "sha_not_a_string": lambda text: json.dumps({"format": 1, "checkpoints": [{"file": "ckpt_00000002.pt",
                                                                               "sha256": 12}]}),
    "entries_not_objects": lambda text: json.dumps({"format": 1, "checkpoints": ["ckpt_00000002.pt"]}),
}


@pytest.mark.parametrize("damage", sorted(MANIFESTS))
def test_corrupt_manifest_warns_and_still_loads_newest(tmp_path, damage):
    mgr = _two_checkpoints(tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(MANIFESTS[damage](manifest.read_text()).encode("utf-8", "surrogateescape"))
    with pytest.warns(UserWarning, match="unreadable manifest"):
        step, state = mgr.load_latest()
    assert step == 2 and state["x"].item() == 2.0
    with pytest.warns(UserWarning, match="unreadable manifest"):
        mgr.save(3, {"x": torch.tensor(3.0)})  # the next save writes a good manifest again
    assert [e["step"] for e in json.loads(manifest.read_text())["checkpoints"]] == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # newest is listed now: no warning
        assert mgr.load_latest()[0] == 3


def test_corrupt_manifest_and_truncated_newest_falls_back(tmp_path):
    mgr = _two_checkpoints(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 1, "checkpoi')
    newest = mgr.path_for(2)
    newest.write_bytes(newest.read_bytes()[:200])
    with pytest.warns(UserWarning) as record:
        step, _ = mgr.load_latest()
    assert step == 1
    assert any("ckpt_00000002.pt" in str(w.message) and "torch.load failed" in str(w.message) for w in record)


@pytest.mark.filterwarnings("ignore:.*not listed in manifest")
@pytest.mark.parametrize("payload, named", [
    ({"format": 1, "state": {"x": 2}}, "'step'"),
    ({"format": 1, "step": 2}, "'state'"),
    ({"step": 2, "state": {"x": 2}}, "format"),
    ({"format": 1, "step": "2", "state": {"x": 2}}, "int 'step'"),
    ([1, 2], "list"),
])
def test_checkpoint_with_missing_keys_is_skipped_then_refused(tmp_path, payload, named):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"x": 1})
    torch.save(payload, mgr.path_for(2))  # a foreign/partial file that the manifest does not list
    with pytest.warns(UserWarning, match=r"(?s)skipping checkpoint .*ckpt_00000002.pt.*not a sparse_core"):
        assert mgr.load_latest() == (1, {"x": 1})
    with pytest.raises(CheckpointError, match=named):
        mgr.load(mgr.path_for(2))
    mgr.path_for(1).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="no usable checkpoint"):
            mgr.load_latest()


def test_restore_names_the_entry_that_does_not_fit(tmp_path):
    model = nn.Linear(4, 2)
    sd = model.state_dict()
    del sd["bias"]
    with pytest.raises(CheckpointError, match=r"(?s)'model'.*Linear.*Missing key.*bias"):
        restore({"model": model}, {"model": sd})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match=r"'optimizer'"):
        restore({"optimizer": opt}, {"optimizer": {"state": {}, "param_groups": []}})


def _disk_full_after_half(real_save):
    def save(obj, f):
        import io
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save


def test_disk_full_while_writing_checkpoint(tmp_path, monkeypatch):
    mgr = _two_checkpoints(tmp_path)
    manifest = (tmp_path / "manifest.json").read_bytes()
    monkeypatch.setattr(C.torch, "save", _disk_full_after_half(torch.save))
    with pytest.raises(OSError, match=r"ckpt_00000003.pt failed: No space left on device.*intact.*free disk") as info:
        mgr.save(3, {"x": torch.tensor(3.0)})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt", "ckpt_00000002.pt", "manifest.json"]
    assert (tmp_path / "manifest.json").read_bytes() == manifest
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # sha256-verified, nothing skipped
        step, state = mgr.load_latest()
    assert step == 2 and state["x"].item() == 2.0


def test_disk_full_while_writing_manifest(tmp_path, monkeypatch):
    mgr = _two_checkpoints(tmp_path)
    manifest = (tmp_path / "manifest.json").read_bytes()
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("manifest.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(C.os, "replace", replace)
    with pytest.raises(OSError, match=r"manifest.json failed: No space left on device"):
        mgr.save(3, {"x": torch.tensor(3.0)})
    monkeypatch.undo()
    assert len(calls) == 2 and not list(tmp_path.glob(".tmp_*"))
    assert (tmp_path / "manifest.json").read_bytes() == manifest  # the old manifest, whole
    with pytest.warns(UserWarning, match="not listed"):  # ckpt 3 itself was renamed in complete
        assert mgr.load_latest()[0] == 3
    assert mgr.load(mgr.path_for(2))[0] == 2  # earlier ones still verify against the old manifest
