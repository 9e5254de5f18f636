"""deit.eval.step_profile end to end on CPU: a tiny digits ViT, 2 warm-up + 2 timed steps, JSON written."""

from __future__ import annotations

import json

import pytest

from deit.eval import step_profile

TINY = ["--config-name", "tiny", "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "batch_size=16",
        "device=cpu"]
FIELDS = ("method", "model", "batch_size", "images_per_s", "step_ms", "step_ms_hooked", "data_ms", "ffn_forward_ms",
          "ffn_backward_ms", "ffn_ms", "ffn_share", "sparse_layers", "backends", "gpu", "torch", "date", "command",
          "config")


@pytest.mark.parametrize("method,flags", [
    ("2by4", ["--warmup", "2", "--steps", "2", "--out", "{out}"]),  # argparse flags
    ("dense", ["profile.warmup=2", "profile.steps=2", "profile.out={out}"]),  # override style
])
def test_profile_writes_the_json(tmp_path, capsys, method, flags):
    out = tmp_path / "sub" / "profile.json"
    argv = [*TINY, f"method={method}", *(f.format(out=out) for f in flags)]
    result = step_profile.main(argv)
    written = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == written
    assert all(key in written for key in FIELDS)
    assert written["method"] == method and written["batch_size"] == 16 and written["depth"] == 2
    assert written["warmup"] == 2 and written["steps"] == 2 and written["device"] == "cpu"
    assert written["embed_dim"] == 32 and written["ffn_hidden"] == 128
    assert written["sparse_layers"] == (4 if method == "2by4" else 0)  # fc1 + fc2 of 2 blocks
    assert written["backends"] == (["reference"] if method == "2by4" else [])
    assert written["step_ms"] > 0 and written["images_per_s"] == pytest.approx(16 / (written["step_ms"] / 1e3))
    assert written["ffn_forward_ms"] > 0 and written["ffn_backward_ms"] > 0
    assert 0.0 < written["ffn_share"] <= 1.0
    assert written["ffn_share"] == pytest.approx(written["ffn_ms"] / written["step_ms_hooked"])
    assert result["ffn_ms"] == written["ffn_ms"]


def test_bad_profile_keys_are_refused():
    with pytest.raises(ValueError, match="profile.stepz"):
        step_profile.main([*TINY, "profile.stepz=3"])
    with pytest.raises(ValueError, match="integers"):
        step_profile.main([*TINY, "profile.steps=many"])
    with pytest.raises(ValueError, match="n_steps"):
        step_profile.main([*TINY, "--steps", "0"])
