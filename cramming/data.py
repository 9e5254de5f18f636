"""Pre-training text: sources, packing into fixed-length sequences, MLM masking (15%, 80/10/10).

Sources: the embedded default (English docstrings of the Python standard library, no download),
local text files/folders, or any HF `datasets` text corpus (imported lazily, streamed).
Batches are a pure function of (seed, step, micro-batch, rank), so resuming at a step is exact.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from cramming.config import DataConfig

__all__ = ["stdlib_docstrings", "text_file_documents", "hf_documents", "iter_documents", "pack_documents",
           "mask_tokens", "MLMBatches", "build_corpus", "TEXT_SUFFIXES"]

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


def stdlib_docstrings(min_chars: int = 40) -> Iterator[str]:
    """Module, class and function docstrings of the standard library, files in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars and sum(c.isascii() for c in doc) >= 0.98 * len(doc):
                    yield doc


def text_file_documents(path: str | Path) -> Iterator[str]:
    """Paragraphs (blank-line separated) of a text file, or of every text file under a folder, sorted."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}")
    else:
        raise FileNotFoundError(f"data.path {str(path)!r} is neither a file nor a folder")
    for f in files:
        paragraph: list[str] = []
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    paragraph.append(line.strip())
                elif paragraph:
                    yield " ".join(paragraph)
                    paragraph = []
        if paragraph:
            yield " ".join(paragraph)


def hf_documents(name: str, config: str | None, split: str, text_field: str) -> Iterator[str]:
    """Texts of a HF `datasets` corpus, streamed (e.g. wikitext / wikitext-103-raw-v1, allenai/c4 / en)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("data.source=hf needs the `datasets` package: pip install datasets") from e
    stream = datasets.load_dataset(name, config, split=split, streaming=True)
    for row in stream:
        if text_field not in row:
            raise ValueError(f"dataset {name!r} has no field {text_field!r}; fields: {sorted(row)}")
        text = row[text_field]
        if isinstance(text, str) and text.strip():
            yield text.strip()


def iter_documents(cfg: DataConfig) -> Iterator[str]:
    """The documents of `cfg.source`, stopped at `max_documents` / `max_chars`."""
    if cfg.source == "stdlib":
        docs: Iterable[str] = stdlib_docstrings()
    elif cfg.source == "files":
        docs = text_file_documents(cfg.path)
    elif cfg.source == "hf":
        docs = hf_documents(cfg.hf_name, cfg.hf_config, cfg.hf_split, cfg.hf_text_field)
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}")
    chars = 0
    for n, doc in enumerate(docs):
        if (cfg.max_documents is not None and n >= cfg.max_documents) or (
                cfg.max_chars is not None and chars >= cfg.max_chars):
            return
        chars += len(doc)
        yield doc


def pack_documents(token_ids: Iterable[list[int]], seq_len: int, cls_id: int, sep_id: int) -> torch.Tensor:
    """Concatenate documents (each closed by [SEP]) and cut into rows of [CLS] + (seq_len - 1) tokens.

    Returns int64 (N, seq_len); the last partial row is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    stream: list[int] = []
    for ids in token_ids:
        if ids:
            stream.extend(ids)
            stream.append(sep_id)
    body = seq_len - 1
    n = len(stream) // body
    if n == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one sequence of {seq_len}")
    rows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)  # (N, T-1)
    return torch.cat([torch.full((n, 1), cls_id, dtype=torch.long), rows], dim=1)  # (N, T)


def mask_tokens(input_ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                probability: float = 0.15, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of the non-special tokens; of those 80% -> [MASK], 10% -> a random
    token, 10% unchanged. Returns (inputs, labels) with labels -100 where nothing is predicted."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if input_ids.dtype != torch.long:
        raise TypeError(f"input_ids must be int64, got {input_ids.dtype}")
    special = torch.isin(input_ids, torch.tensor(sorted(set(special_ids)), dtype=torch.long))
    prob = torch.full(input_ids.shape, probability).masked_fill_(special, 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool()
    if not selected.any() and not special.all():  # an empty target set would give a NaN loss
        candidates = (~special).reshape(-1).nonzero().squeeze(1)
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
        selected.view(-1)[pick] = True
    labels = input_ids.masked_fill(~selected, -100)
    r = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (r < 0.8)] = mask_id
    swap = selected & (r >= 0.8) & (r < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


class MLMBatches:
    """Masked micro-batches over packed sequences, addressed by (step, micro, rank): resume-exact.

    Sample k of the global stream is row perm_e[k mod N] with e = k // N, perm_e a seeded permutation
    per epoch; each micro-batch's masks come from a generator seeded by (seed, step, micro, rank).
    """

    def __init__(self, sequences: torch.Tensor, *, micro_batch_size: int, accumulation: int, world_size: int,
                 rank: int, seed: int, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                 probability: float = 0.15) -> None:
        if sequences.dim() != 2 or len(sequences) == 0:
            raise ValueError(f"sequences must be a non-empty (N, T) tensor, got shape {tuple(sequences.shape)}")
        self.sequences = sequences
        self.micro_batch_size, self.accumulation = micro_batch_size, accumulation
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.mask_args: dict[str, Any] = dict(mask_id=mask_id, vocab_size=vocab_size,
                                              special_ids=list(special_ids), probability=probability)
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.sequences), generator=g), epoch
        return self._perm

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        """{'input_ids', 'labels'} (micro_batch_size, T) for micro-batch `micro` of optimizer step `step`."""
        slot = (step * self.accumulation + micro) * self.world_size + self.rank
        n = len(self.sequences)
        ks = torch.arange(slot * self.micro_batch_size, (slot + 1) * self.micro_batch_size)
        rows = torch.empty_like(ks)
        epochs = ks // n
        for epoch in epochs.unique().tolist():  # one epoch, or two where the micro-batch crosses a boundary
            at = epochs == epoch
            rows[at] = self._permutation(epoch)[ks[at] % n]
        ids = self.sequences[rows]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + slot) % (2**63))
        inputs, labels = mask_tokens(ids, generator=g, **self.mask_args)
        return {"input_ids": inputs, "labels": labels}


def _tokenize(tokenizer: Any, docs: list[str], chunk: int = 1000) -> Iterator[list[int]]:
    for i in range(0, len(docs), chunk):
        yield from tokenizer.encode_plain(docs[i:i + chunk])


def build_corpus(cfg: DataConfig, run_dir: Path, seed: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(tokenizer, train rows, validation rows), cached in `run_dir` (tokenizer/, corpus.pt) for resume.

    A cached corpus is reused only when it was built with the same data config.
    """
    from cramming.tokenizer import build_tokenizer, load_tokenizer

    tok_dir, cache = run_dir / "tokenizer", run_dir / "corpus.pt"
    key = repr(sorted(vars(cfg).items()))
    if cache.is_file() and tok_dir.is_dir():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key and saved.get("seed") == seed:
            return load_tokenizer(tok_dir), saved["train"], saved["val"]
    docs = list(iter_documents(cfg))
    if not docs:
        where = {"files": f" at {cfg.path}", "hf": f" {cfg.hf_name}"}.get(cfg.source, "")
        raise ValueError(f"data source {cfg.source!r}{where} gave no documents (empty files?)")
    tokenizer = build_tokenizer(cfg.tokenizer, docs, cfg.vocab_size)
    rows = pack_documents(_tokenize(tokenizer, docs), cfg.seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    n_val = min(cfg.max_val_sequences, int(len(rows) * cfg.val_fraction))
    val, train = rows[perm[:n_val]], rows[perm[n_val:]]
    if len(train) == 0:
        raise ValueError(f"corpus too small: {len(rows)} sequences of {cfg.seq_len} tokens, none left to train on")
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(tok_dir)
    tmp = cache.with_suffix(".tmp")
    torch.save({"key": key, "seed": seed, "train": train, "val": val}, tmp)
    tmp.replace(cache)
    return tokenizer, train, val
