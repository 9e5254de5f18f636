"""Turn a text corpus into `train.bin` / `val.bin` (uint16 token ids, memory-mapped) plus `meta.json`.

    python -m nanogpt.data.prepare stdlib_char                 # embedded default: no download
    python -m nanogpt.data.prepare shakespeare                 # GPT-2 BPE; shakespeare_char for chars
    python -m nanogpt.data.prepare openwebtext                 # HF datasets, streamed (needs `datasets`)
    python -m nanogpt.data.prepare path/to/file_or_folder --tokenizer char

Sources: `stdlib` is the Python standard library's own source (top-level public modules, sorted,
first ~2 MB), present on every machine. `shakespeare` is read from the project's shared data folder,
else downloaded once and checked against its sha256. `openwebtext` is streamed through Hugging Face
`datasets` (downloads only when asked for). Text sources split 90/10 by characters; OpenWebText and a
GPT-2 BPE folder of at least 1/val_fraction files send document (file) i to val when i % (1/val_fraction) == 0. The output folder is printed last on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from nanogpt.data.tokenizer import TOKENIZERS, GPT2Tokenizer, Tokenizer, build_tokenizer, shared_data_dir

__all__ = ["NAMED", "prepare", "stdlib_text", "shakespeare_text", "local_text", "write_tokens", "main"]

NAMED = {  # dataset name -> (source, tokenizer)
    "stdlib_char": ("stdlib", "char"),
    "stdlib": ("stdlib", "gpt2"),
    "shakespeare_char": ("shakespeare", "char"),
    "shakespeare": ("shakespeare", "gpt2"),
    "openwebtext": ("openwebtext", "gpt2"),
}
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
OPENWEBTEXT_HF = "Skylion007/openwebtext"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- sources ------------------------------------------------------------------------------------
def stdlib_text(max_bytes: int = 2_000_000) -> tuple[str, list[str]]:
    """The top-level public modules of this Python's standard library, sorted by name, up to max_bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    if not files:
        raise FileNotFoundError(f"no standard-library sources found under {root}")
    parts, used, size = [], [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(f"# ---- {path.name} ----\n{text}\n")
        used.append(path.name)
        size += len(parts[-1])
        if size >= max_bytes:
            break
    return "".join(parts), used


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shakespeare_text() -> str:
    """Tiny Shakespeare from the shared data folder, else downloaded; sha256-checked either way."""
    shared = shared_data_dir()
    local = shared / "tinyshakespeare" / "input.txt" if shared else None
    if local is not None and local.is_file():
        data = local.read_bytes()
        where = str(local)
    else:
        _log(f"downloading {SHAKESPEARE_URL}")
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=60) as r:
            data = r.read()
        where = SHAKESPEARE_URL
    digest = _sha256_bytes(data)
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(f"tiny shakespeare from {where} has sha256 {digest}, expected {SHAKESPEARE_SHA256}")
    return data.decode("utf-8")


def local_files(folder: str | Path, glob: str = "*.txt") -> list[Path]:
    """Every file matching `glob` under `folder` (recursive), sorted."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob(glob) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no files matching {glob!r} under {folder}")
    return files


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def local_text(path: str | Path, glob: str = "*.txt") -> tuple[str, list[str]]:
    """A text file, or every file matching `glob` under a folder (sorted, recursive), concatenated."""
    path = Path(path).expanduser()
    if path.is_file():
        return _read(path), [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is neither a text file nor a folder")
    files = local_files(path, glob)
    return "\n".join(_read(p) for p in files), [str(p.relative_to(path)) for p in files]


def _openwebtext_docs(max_docs: int | None) -> Iterator[str]:
    """Documents of OpenWebText, streamed from the Hugging Face hub (nothing stored but the tokens)."""
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError("openwebtext needs Hugging Face datasets: pip install datasets") from e
    stream = load_dataset(OPENWEBTEXT_HF, split="train", streaming=True)
    for i, row in enumerate(stream):
        if max_docs is not None and i >= max_docs:
            return
        yield row["text"]


# ---- writing ------------------------------------------------------------------------------------
class _TokenFile:
    """Append-only uint16 token file written to a temp name and renamed into place on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".part")
        self.f = open(self.tmp, "wb")
        self.count = 0

    def write(self, ids: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
            raise ValueError(f"token id {int(arr.max())} does not fit uint16 (vocabularies up to 65536)")
        arr.astype(np.uint16).tofile(self.f)
        self.count += int(arr.size)

    def close(self) -> int:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.count


def write_tokens(path: str | Path, ids: Iterable[int] | np.ndarray) -> int:
    """Write ids as uint16 to `path` atomically; returns how many were written."""
    out = _TokenFile(Path(path))
    out.write(ids)
    return out.close()


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    tmp = out_dir / "meta.json.part"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out_dir / "meta.json")  # written last: its presence marks a complete folder


def _prepare_text(text: str, tokenizer: Tokenizer, out_dir: Path, val_fraction: float) -> dict[str, int]:
    cut = int(len(text) * (1 - val_fraction))
    n_train = write_tokens(out_dir / "train.bin", tokenizer.encode(text[:cut]))
    n_val = write_tokens(out_dir / "val.bin", tokenizer.encode(text[cut:]))
    return {"train_tokens": n_train, "val_tokens": n_val}


def _prepare_documents(docs: Iterable[str], tokenizer: GPT2Tokenizer, out_dir: Path, val_every: int,
                       batch_docs: int = 1024) -> dict[str, int]:
    """Tokenize a document stream in batches (threaded), <|endoftext|> after each; doc i % val_every == 0 -> val."""
    threads = min(32, os.cpu_count() or 1)
    train, val = _TokenFile(out_dir / "train.bin"), _TokenFile(out_dir / "val.bin")
    batch: list[str] = []
    n_docs = 0

    def flush(start: int) -> None:
        for j, ids in enumerate(tokenizer.encode_batch(batch, num_threads=threads)):
            (val if (start + j) % val_every == 0 else train).write(ids + [tokenizer.eot])

    for doc in docs:
        batch.append(doc)
        n_docs += 1
        if len(batch) == batch_docs:
            flush(n_docs - len(batch))
            batch = []
            if n_docs % (batch_docs * 100) == 0:
                _log(f"  {n_docs} documents, {train.count + val.count} tokens")
    if batch:
        flush(n_docs - len(batch))
    return {"documents": n_docs, "train_tokens": train.close(), "val_tokens": val.close()}


def prepare(data: str, root: str | Path = "out/data", tokenizer: str | None = None, name: str | None = None,
            val_fraction: float | None = None, max_docs: int | None = None, glob: str = "*.txt",
            skip_existing: bool = False) -> Path:
    """Prepare `data` (a name in NAMED or a local path) into `root/<name>/`; returns that folder.

    val_fraction defaults to 0.1 for text sources and 0.005 (1 document in 200) for OpenWebText.
    """
    if data in NAMED:
        source, default_tok = NAMED[data]
        if tokenizer is not None and tokenizer != default_tok:  # one folder per name: one tokenizer per name
            other = [n for n, (src, tok) in NAMED.items() if src == source and tok == tokenizer]
            hint = f"; use {other[0]!r}" if other else ""
            raise ValueError(f"{data!r} is prepared with the {default_tok} tokenizer, got tokenizer={tokenizer!r}{hint}")
        name = name or data
    else:
        if not Path(data).expanduser().exists():
            raise FileNotFoundError(f"data source {data!r} is neither a known dataset {sorted(NAMED)} nor a path")
        source, default_tok = "path", "gpt2"
        name = name or Path(data).expanduser().resolve().stem + ("_char" if tokenizer == "char" else "")
    kind = tokenizer or default_tok
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {kind!r}; choose one of {TOKENIZERS}")
    if val_fraction is None:
        val_fraction = 0.005 if source == "openwebtext" else 0.1
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    out_dir = Path(root) / name
    if skip_existing and all((out_dir / f).is_file() for f in ("train.bin", "val.bin", "meta.json")):
        _log(f"{out_dir} already prepared")
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    _log(f"preparing {data!r} ({kind} tokens) into {out_dir}")

    meta: dict[str, Any] = {"source": source if source != "path" else str(Path(data).expanduser().resolve())}
    folder = Path(data).expanduser() if source == "path" and kind == "gpt2" else None
    if source == "openwebtext":
        tok = GPT2Tokenizer()
        counts = _prepare_documents(_openwebtext_docs(max_docs), tok, out_dir, val_every=round(1 / val_fraction))
        meta["hf_dataset"] = OPENWEBTEXT_HF
    elif folder is not None and folder.is_dir() and len(paths := local_files(folder, glob)) >= round(1 / val_fraction):
        # a large folder: one document per file, tokenized in threads, file i to val when i % round(1/val_fraction) == 0
        meta["files"] = [str(p.relative_to(folder)) for p in paths[:1000]]
        tok = GPT2Tokenizer()
        counts = _prepare_documents(map(_read, paths), tok, out_dir, val_every=round(1 / val_fraction))
    else:
        if source == "stdlib":
            text, files = stdlib_text()
            meta["files"] = files
            meta["python"] = sys.version.split()[0]
        elif source == "shakespeare":
            text = shakespeare_text()
        else:
            text, files = local_text(data, glob)
            meta["files"] = files[:1000]
        meta["text_sha256"] = _sha256_bytes(text.encode("utf-8"))
        tok = build_tokenizer(kind, text)
        counts = _prepare_text(text, tok, out_dir, val_fraction)
    empty = [k for k in ("train_tokens", "val_tokens") if counts[k] == 0]
    if empty:
        raise ValueError(f"preparing {data!r} left {' and '.join(empty)} at 0 (val_fraction={val_fraction}, "
                         f"{counts.get('documents', 'no')} documents): give more data or another val_fraction")
    meta.update(tok.meta())
    meta.update(counts)
    _write_meta(out_dir, meta)
    _log(f"wrote {counts['train_tokens']} train / {counts['val_tokens']} val tokens, vocab {tok.vocab_size}")
    return out_dir


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m nanogpt.data.prepare", description=__doc__.split("\n")[0])
    p.add_argument("data", help=f"one of {sorted(NAMED)} or a local text file / folder")
    p.add_argument("--root", default="out/data", help="parent folder of prepared data sets (default out/data)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, help="char or gpt2 (default: by dataset; gpt2 for paths)")
    p.add_argument("--name", help="folder name under --root (default: the dataset name or file stem)")
    p.add_argument("--val-fraction", type=float, help="val share (default 0.1; OpenWebText 0.005 of documents)")
    p.add_argument("--max-docs", type=int, help="OpenWebText: stop after this many documents")
    p.add_argument("--glob", default="*.txt", help="files taken from a folder (default *.txt)")
    p.add_argument("--skip-existing", action="store_true", help="do nothing if the folder is already complete")
    a = p.parse_args(argv)
    try:
        out = prepare(a.data, a.root, a.tokenizer, a.name, a.val_fraction, a.max_docs, a.glob, a.skip_existing)
    except (ValueError, FileNotFoundError) as e:  # bad source, tokenizer or split: one line, exit code 2
        p.error(str(e))
    print(out)
    return out


if __name__ == "__main__":
    main()
