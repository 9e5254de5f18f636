"""Data preparation (shared tiny Shakespeare, generated files and folders, the stdlib default) and the loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nanogpt.data.loader import TokenBatches, read_meta
from nanogpt.data.prepare import main as prepare_main
from nanogpt.data.prepare import prepare
from nanogpt.data.tokenizer import tokenizer_from_meta
from sparse_core.train.config import ConfigError


def test_shakespeare_gpt2_matches_reference_counts(shared_data, tmp_path) -> None:
    out = prepare("shakespeare", root=tmp_path)
    meta = read_meta(out)
    assert (meta["train_tokens"], meta["val_tokens"]) == (301966, 36059)  # nanoGPT's shakespeare numbers
    ids = np.memmap(out / "train.bin", dtype=np.uint16, mode="r")
    assert ids[:3].tolist() == [5962, 22307, 25]  # "First Citizen:"


def test_shakespeare_char_round_trips(shared_data, tmp_path) -> None:
    out = prepare("shakespeare_char", root=tmp_path)
    meta = read_meta(out)
    assert meta["vocab_size"] == 65
    tok = tokenizer_from_meta(meta)
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    assert tok.decode(train[:200].tolist()) == text[:200]
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)


def test_generated_file_and_folder(shared_data, tmp_path) -> None:  # shared_data: offline GPT-2 BPE files
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "épsilon"]
    text = "\n".join(" ".join(rng.choice(words, 12)) for _ in range(400))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(text[:5000])
    (tmp_path / "corpus" / "b.txt").write_text(text[5000:])
    (tmp_path / "corpus" / "skip.log").write_text("not taken")
    single = prepare(str(tmp_path / "corpus" / "a.txt"), root=tmp_path / "data", tokenizer="char")
    assert single.name == "a_char"
    meta = read_meta(single)
    assert meta["tokenizer"] == "char" and "\x00" in meta["chars"]  # é is outside ASCII: UNK
    assert tokenizer_from_meta(meta).decode(np.fromfile(single / "train.bin", np.uint16)[:40].tolist()) == \
        text[:40].replace("é", "?")
    folder = prepare(str(tmp_path / "corpus"), root=tmp_path / "data")
    meta = read_meta(folder)
    assert meta["tokenizer"] == "gpt2" and meta["files"] == ["a.txt", "b.txt"]
    assert tokenizer_from_meta(meta).decode(np.fromfile(folder / "train.bin", np.uint16).tolist()).startswith(text[:100])
    # --skip-existing keeps a complete folder untouched
    stamp = (folder / "train.bin").stat().st_mtime_ns
    assert prepare(str(tmp_path / "corpus"), root=tmp_path / "data", skip_existing=True) == folder
    assert (folder / "train.bin").stat().st_mtime_ns == stamp


def test_large_folder_is_split_by_file(shared_data, tmp_path) -> None:
    """A folder of >= 1/val_fraction files: one document per file, files 0 and 5 (val_fraction 0.2) to val."""
    (tmp_path / "corpus").mkdir()
    texts = [f"file {i} says " + "word " * (i + 3) for i in range(10)]
    for i, t in enumerate(texts):
        (tmp_path / "corpus" / f"f{i:02d}.txt").write_text(t)
    out = prepare(str(tmp_path / "corpus"), root=tmp_path / "data", val_fraction=0.2)
    tok = tokenizer_from_meta(read_meta(out))
    eot = "<|endoftext|>"
    val = tok.decode(np.fromfile(out / "val.bin", np.uint16).tolist())
    train = tok.decode(np.fromfile(out / "train.bin", np.uint16).tolist())
    assert val == texts[0] + eot + texts[5] + eot
    assert train == "".join(t + eot for i, t in enumerate(texts) if i not in (0, 5))


def test_bad_sources_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a known dataset"):
        prepare(str(tmp_path / "missing"), root=tmp_path)
    with pytest.raises(ValueError, match="tokenizer"):
        prepare("stdlib", root=tmp_path, tokenizer="bytes")
    # a named dataset has one folder, so one tokenizer: the other one is another name
    with pytest.raises(ValueError, match="'shakespeare' is prepared with the gpt2 tokenizer, got tokenizer='char'; "
                                         "use 'shakespeare_char'"):
        prepare("shakespeare", root=tmp_path, tokenizer="char")
    with pytest.raises(ValueError, match="openwebtext' is prepared with the gpt2 tokenizer"):
        prepare("openwebtext", root=tmp_path, tokenizer="char")
    with pytest.raises(SystemExit) as exit_info:  # the CLI (start.sh's TOKENIZER): one line, exit code 2
        prepare_main(["shakespeare", "--tokenizer", "char", "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_meta(tmp_path)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 0.5\], got 0.7"):
        prepare("stdlib_char", root=tmp_path, val_fraction=0.7)
    (tmp_path / "one.txt").write_text("a")  # 90/10 of one character: nothing for train
    with pytest.raises(ValueError, match="train_tokens at 0"):
        prepare(str(tmp_path / "one.txt"), root=tmp_path, tokenizer="char")


def test_stdlib_default_is_small_and_deterministic(stdlib_char, tmp_path) -> None:
    meta = read_meta(stdlib_char)
    assert meta["tokenizer"] == "char" and meta["vocab_size"] <= 98
    assert meta["train_tokens"] > 1_000_000
    again = prepare("stdlib_char", root=tmp_path)
    assert (again / "train.bin").read_bytes() == (stdlib_char / "train.bin").read_bytes()
    assert json.loads((again / "meta.json").read_text())["files"] == meta["files"]


def test_loader_resumes_and_splits_over_processes(stdlib_char) -> None:
    path = stdlib_char / "train.bin"
    one = TokenBatches(path, block_size=16, batch_size=3, micro_batches=4, seed=5)
    steps = [one.next_step() for _ in range(3)]
    x, y = steps[0][0]
    assert x.shape == (3, 16) and x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    # a fresh loader restored to position 2 continues with step 2's batches
    resumed = TokenBatches(path, 16, 3, 4, seed=5)
    resumed.load_state_dict({**one.state_dict(), "position": 2})
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed.next_step(), steps[2]))
    with pytest.raises(ConfigError, match="1 micro-batches per step cannot be split over 2 processes"):
        TokenBatches(path, 16, 3, 1, seed=5, rank=0, world_size=2)  # a config error: one line from the CLI
    # two processes together see exactly the one-process global batch
    ranks = [TokenBatches(path, 16, 3, 4, seed=5, rank=r, world_size=2).next_step() for r in (0, 1)]
    expected = steps[0][0::2] + steps[0][1::2]  # rank r takes micro-batches r, r+2, ...
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ranks[0] + ranks[1], expected, strict=True))
    with pytest.raises(ValueError, match="multiple"):
        TokenBatches(path, 16, 3, micro_batches=3, seed=5, world_size=2)
    with pytest.raises(ValueError, match="not the same data stream"):
        TokenBatches(path, 16, 3, 4, seed=6).load_state_dict(one.state_dict())


def test_document_stream_writer(shared_data, tmp_path) -> None:
    """The OpenWebText path minus the download: batched threaded BPE, <|endoftext|> after each document,
    every val_every-th document to val."""
    from nanogpt.data.prepare import _prepare_documents
    from nanogpt.data.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    docs = [f"Document number {i} says hello." for i in range(7)]
    counts = _prepare_documents(iter(docs), tok, tmp_path, val_every=3, batch_docs=2)
    train = np.fromfile(tmp_path / "train.bin", np.uint16).tolist()
    val = np.fromfile(tmp_path / "val.bin", np.uint16).tolist()
    assert counts == {"documents": 7, "train_tokens": len(train), "val_tokens": len(val)}
    assert tok.decode(val).split("<|endoftext|>")[:-1] == [docs[0], docs[3], docs[6]]
    assert tok.decode(train).split("<|endoftext|>")[:-1] == [docs[i] for i in (1, 2, 4, 5)]
