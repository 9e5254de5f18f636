"""The pre-training recipe: model + sparsify for every method, config errors, start.sh, exact resume
(one process, and 2 gloo ranks that each continue their own random streams)."""

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import sparse_core
from cramming.config import CONFIG_DIR, CrammingConfig
from cramming.data import stdlib_docstrings
from cramming.model import CrammedBertConfig, CrammedBertForMaskedLM, CrammedBertForSequenceClassification
from cramming.tokenizer import train_wordpiece
from cramming.train import build_model, train
from sparse_core.train import CheckpointError, ConfigError, load_config, read_jsonl
from state_compare import assert_same
from clock_testutil import make_slow
from dist_testutil import free_port

ROOT = Path(__file__).resolve().parents[2]
# A model and corpus small enough for seconds per run on 2 CPU cores.
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.max_position=32", "data.seq_len=32", "data.max_chars=60000", "data.vocab_size=512",
        "optim.batch_size=8", "optim.micro_batch_size=4", "progress=false", "eval_interval=0"]


@pytest.mark.parametrize("method", sorted(sparse_core.METHODS))
def test_every_method_sparsifies_the_ffn(method):
    cfg = load_config(CrammingConfig, CONFIG_DIR, "tiny", TINY + [f"method={method}"])
    model = build_model(cfg, vocab_size=64, pad_token_id=0)
    ctl = sparse_core.sparsify(model, method=method, total_steps=4)
    expect = {f"bert.layers.0.ffn.{n}" for n in ("dense_in", "dense_out")}
    swapped = {n for n, m in model.named_modules() if isinstance(m, sparse_core.SparseLinear)}
    assert swapped == (set() if method in ("dense", "half") else expect)
    assert model.bert.layers[0].ffn.dense_in.out_features == (32 if method == "half" else 64)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl.bind_optimizer(opt)
    x = torch.randint(5, 64, (2, 16))
    labels = torch.where(torch.rand(2, 16) < 0.3, x, torch.full_like(x, -100))
    labels[0, 1] = x[0, 1]
    loss = model(x, labels=labels).loss
    loss.backward()
    ctl.before_optimizer_step(0)
    opt.step()
    ctl.after_optimizer_step(0)
    assert torch.isfinite(loss)


def test_hf_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = CrammedBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=8)
    mlm = CrammedBertForMaskedLM(cfg)
    mlm.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    again = CrammedBertForMaskedLM.from_pretrained(tmp_path)
    x = torch.randint(0, 50, (2, 8))
    assert torch.equal(mlm(x).logits, again(x).logits)
    clf = CrammedBertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert torch.equal(clf.bert.layers[1].ffn.dense_out.weight, mlm.bert.layers[1].ffn.dense_out.weight)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 5:] = 0  # padding must not change the unpadded row's output
    short = clf(x[:1, :5]).logits
    assert torch.allclose(clf(x, mask).logits[:1], short, atol=1e-5)
    sparse_core.sparsify(mlm, method="ste", total_steps=2)
    with pytest.raises(ValueError, match="densify"):
        mlm.save_pretrained(tmp_path / "sparse")
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "crammed_bert"
    with pytest.raises(FileNotFoundError):
        CrammedBertForMaskedLM.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("overrides, match", [
    (["budget.minutes=5"], "exactly one"),
    (["budget.steps=null", "budget.minutes=5"], "expected_steps"),
    (["method=nope"], "method"),
    (["model.hidden_size=30"], "hidden_size"),
    (["data.seq_len=256"], "max_position"),
    (["no_such_key=1"], "no_such_key"),
    (["optim.lr=fast"], "lr"),
    (["method=2by4", "sparse.mask_refresh_interval=0"], "mask_refresh_interval"),
    (["method=2by4", "sparse.dense_ft_fraction=1.5"], "dense_ft_fraction"),
    (["method=2by4", "sparse.no_such_option=1"], "no_such_option"),
    (["max_bad_steps=0"], "max_bad_steps"),
    (["max_bad_steps=x"], "max_bad_steps"),
    (["model.num_heads=3"], "num_heads"),
    (["method=2by4", "+sparse.mvue=3"], "mvue must be bool"),
    (["optim.eps=-1"], "optim.eps > 0"),
    (["optim.lr=inf"], "values must be finite"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CrammingConfig, CONFIG_DIR, "tiny", overrides)
    load_config(CrammingConfig, CONFIG_DIR, "crammed", [])  # the full-size config is valid as written


def test_start_sh_default_run(tmp_path):
    args = TINY + ["budget.steps=12", "log_interval=3", "checkpoint_interval=6", f"out_dir={tmp_path}",
                   "run_name=smoke", "optim.lr=3e-3"]
    proc = subprocess.run(["bash", str(ROOT / "cramming" / "start.sh"), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "smoke"
    losses = [r["train/loss"] for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]  # MLM loss falls from ~ln(vocab)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["finished"] == 1.0
    assert (run / "plots" / "loss.png").is_file() and (run / "model" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt_*.pt")) == ["ckpt_00000006.pt", "ckpt_00000012.pt"]
    CrammedBertForSequenceClassification.from_pretrained(run / "model", num_labels=2)


def test_tokens_per_second_leave_out_evaluation_and_checkpoints(tmp_path, monkeypatch):
    """Every evaluation takes 1000 s of a fake clock: no logged tokens/s window may carry it."""
    import cramming.train as recipe

    make_slow(monkeypatch, recipe, "evaluate_mlm")
    args = TINY[:-1] + ["budget.steps=6", "log_interval=2", "eval_interval=2", "checkpoint_interval=2",
                        f"out_dir={tmp_path}", "run_name=tps"]
    train(load_config(CrammingConfig, CONFIG_DIR, "tiny", args))
    rates = [r["train/tokens_per_s"] for r in read_jsonl(tmp_path / "tps" / "metrics.jsonl") if "train/tokens_per_s" in r]
    assert len(rates) == 3 and min(rates) > 8 * 32 * 2 / 100.0  # 2 steps of 8 x 32 tokens took far less than 100 s


def _final_state(run_dir: Path) -> dict:
    path = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    return torch.load(path, weights_only=True)["state"]


def test_resume_is_exact(tmp_path):
    # `tokenizers` breaks count ties at the vocab cut-off differently from run to run, so both runs share
    # one tokenizer here (a run resumes with the tokenizer cached in its own folder).
    train_wordpiece(itertools.islice(stdlib_docstrings(), 400), vocab_size=512).save(tmp_path / "tok")
    base = TINY + ["method=2by4", "budget.steps=8", "log_interval=2", "checkpoint_interval=0",
                   "sparse.warmup_steps=2", "sparse.dense_ft_fraction=0.75", f"out_dir={tmp_path}",
                   f"data.tokenizer={tmp_path / 'tok'}"]
    train(load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=straight"]))
    part = load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=resumed", "stop_after_steps=4"])
    assert train(part)["steps"] == 4 and not (tmp_path / "resumed" / "model").exists()
    # a stop_after_steps that ends with the budget: the run is finished and exported
    last = train(load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=resumed", "stop_after_steps=4"]))
    assert last["steps"] == 8 and last["finished"] == 1.0 and (tmp_path / "resumed" / "model").is_dir()
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["sparse"] == b["sparse"] and a["sparse"]["dense"]  # the dense switch happened in both
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    with pytest.raises(CheckpointError, match="already holds checkpoints"):  # a fresh run would lose them
        train(load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=straight", "resume=false"]))


def _rank_worker(rank: int, base: list[str], ports: list[int]) -> None:
    """One of 2 gloo ranks: 4 steps straight, then 2 + resume + 2 (a fresh process group per run)."""
    torch.set_num_threads(1)  # 2 processes on a 2-core CI box
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    for port, extra in zip(ports, (["run_name=straight"], ["run_name=resumed", "stop_after_steps=2"],
                                   ["run_name=resumed"])):
        os.environ["MASTER_PORT"] = str(port)
        train(load_config(CrammingConfig, CONFIG_DIR, "tiny", base + extra))


def test_resume_is_exact_on_two_gloo_ranks(tmp_path):
    """Each rank draws its own MVUE numbers; a resume restores every rank's torch stream (a reseeded
    rank 1 changes the all-reduced gradients, hence the weights)."""
    train_wordpiece(itertools.islice(stdlib_docstrings(), 400), vocab_size=512).save(tmp_path / "tok")
    base = TINY + ["method=2by4", "budget.steps=4", "log_interval=2", "checkpoint_interval=0", "sparse.warmup_steps=1",
                   "device=cpu", f"out_dir={tmp_path}", f"data.tokenizer={tmp_path / 'tok'}"]
    mp.spawn(_rank_worker, args=(base, [free_port() for _ in range(3)]), nprocs=2, join=True)
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    for key in ("model", "optimizer", "sparse", "guard", "rng"):
        assert_same(a[key], b[key], key)
    assert len(a["rng"]) == 2 and not torch.equal(a["rng"][0]["torch"], a["rng"][1]["torch"])
