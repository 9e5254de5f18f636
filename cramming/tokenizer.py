"""WordPiece tokenizer on HF `tokenizers`: trained on the pre-training corpus (as Cramming does), or
loaded from a vocab.txt / a saved folder (e.g. ../shared/data/bert_base_uncased, offline).

Plain `tokenizers` (no `transformers` import): `save(dir)` writes tokenizer.json and vocab.txt, which
`transformers.BertTokenizerFast.from_pretrained(dir)` also reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "train_wordpiece", "load_tokenizer", "build_tokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class WordPieceTokenizer:
    """An uncased BERT WordPiece `tokenizers.Tokenizer` plus its special ids and pair encoding."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special tokens {missing}")
        self.pad_token_id, self.unk_token_id = ids["[PAD]"], ids["[UNK]"]
        self.cls_token_id, self.sep_token_id, self.mask_token_id = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without [CLS]/[SEP] (for packing)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int = 128
               ) -> dict[str, list[list[int]]]:
        """[CLS] a [SEP] (b [SEP]) per row, truncated to `max_length` (longest first), not padded."""
        from tokenizers.processors import BertProcessing

        tok = self.tokenizer
        tok.post_processor = BertProcessing(("[SEP]", self.sep_token_id), ("[CLS]", self.cls_token_id))
        tok.enable_truncation(max_length=max_length, strategy="longest_first")
        tok.no_padding()
        try:
            inputs = list(texts) if pairs is None else list(zip(texts, pairs))
            enc = tok.encode_batch(inputs)
        finally:
            tok.no_truncation()
        return {"input_ids": [e.ids for e in enc], "token_type_ids": [e.type_ids for e in enc]}

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        """tokenizer.json + vocab.txt (id order) + tokenizer_config.json in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (directory / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> WordPieceTokenizer:
    """Train an uncased BERT WordPiece vocabulary of at most `vocab_size` on `texts`."""
    from tokenizers import BertWordPieceTokenizer

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                           special_tokens=SPECIAL_TOKENS, show_progress=False)
    # The trainer numbers tokens in hash-map order, so ids change from run to run: renumber them
    # (specials first, then sorted). Greedy WordPiece only needs the token set, so encoding is unchanged.
    learned = sorted(set(wp.get_vocab()) - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + learned)}
    return WordPieceTokenizer(BertWordPieceTokenizer(vocab, lowercase=True)._tokenizer)


def load_tokenizer(path: str | Path) -> WordPieceTokenizer:
    """A WordPiece vocab.txt, or a folder with tokenizer.json (preferred) or vocab.txt."""
    from tokenizers import BertWordPieceTokenizer, Tokenizer

    path = Path(path).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return WordPieceTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")))
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}: give a vocab.txt or a folder with tokenizer.json/vocab.txt")
    return WordPieceTokenizer(BertWordPieceTokenizer(str(vocab), lowercase=True)._tokenizer)


def build_tokenizer(spec: str, texts: Iterable[str], vocab_size: int) -> WordPieceTokenizer:
    """`spec`='train' trains WordPiece on `texts`; otherwise it is a path given to `load_tokenizer`."""
    if spec == "train":
        return train_wordpiece(texts, vocab_size)
    return load_tokenizer(spec)
