"""Tokenizers for the recipe: character level (vocabulary stored in meta.json) and GPT-2 BPE (tiktoken).

GPT-2 BPE loads offline when the project's shared data folder is present: tiktoken's cache is pointed
at `shared/data/gpt2_bpe/tiktoken_cache` (files named by sha1 of their URL, checked by sha256), unless
TIKTOKEN_CACHE_DIR is already set. Without it tiktoken downloads the two GPT-2 files once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Tokenizer", "CharTokenizer", "GPT2Tokenizer", "build_tokenizer", "tokenizer_from_meta",
           "shared_data_dir", "TOKENIZERS"]

TOKENIZERS = ("char", "gpt2")
UNK = "\x00"  # stands for every character outside a char vocabulary; decoded as '?'


def shared_data_dir() -> Path | None:
    """The project's shared data folder: $SPARSE_CORE_SHARED_DATA, else <repo>/../shared/data."""
    env = os.environ.get("SPARSE_CORE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    return path.resolve() if path.is_dir() else None


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def meta(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One id per character; characters outside `chars` map to the UNK id when the vocab has one."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be a non-empty string of distinct characters, got {chars[:40]!r}")
        self.chars = chars
        self.vocab_size = len(chars)
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.unk = self.stoi.get(UNK)

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        """Vocabulary of `text`: its printable ASCII, tab and newline (at most 97); the rest shares UNK."""
        found = set(text)
        keep = {c for c in found if c in "\t\n" or " " <= c <= "~"}
        return cls((UNK if found - keep else "") + "".join(sorted(keep)))

    def encode(self, text: str) -> list[int]:
        if self.unk is None:
            try:
                return [self.stoi[c] for c in text]
            except KeyError as e:
                raise ValueError(f"character {e.args[0]!r} is not in this char vocabulary") from None
        return [self.stoi.get(c, self.unk) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join("?" if self.chars[i] == UNK else self.chars[i] for i in ids)

    def meta(self) -> dict[str, Any]:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size, "chars": self.chars}


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken (50257 ids, <|endoftext|> = 50256)."""

    kind = "gpt2"
    vocab_size = 50257

    def __init__(self) -> None:
        shared = shared_data_dir()
        cache = shared / "gpt2_bpe" / "tiktoken_cache" if shared else None
        if "TIKTOKEN_CACHE_DIR" not in os.environ and cache is not None and cache.is_dir():
            os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        import tiktoken

        self.enc = tiktoken.get_encoding("gpt2")
        self.eot = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)

    def meta(self) -> dict[str, Any]:
        return {"tokenizer": self.kind, "vocab_size": self.vocab_size}


def build_tokenizer(kind: str, text: str | None = None) -> Tokenizer:
    """A tokenizer of `kind`; 'char' learns its vocabulary from `text`."""
    if kind == "char":
        if text is None:
            raise ValueError("a char tokenizer needs the text to build its vocabulary from")
        return CharTokenizer.fit(text)
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {TOKENIZERS}")


def tokenizer_from_meta(meta: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer that meta.json (or a checkpoint's copy of it) describes."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer(meta["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"meta names unknown tokenizer {kind!r}; expected one of {TOKENIZERS}")
