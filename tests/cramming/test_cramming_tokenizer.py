"""WordPiece training on a small corpus, save/load round trip, and the offline BERT vocab."""

import os
from pathlib import Path

import pytest

from cramming.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_wordpiece

SHARED = Path(os.environ.get("SPARSE_CORE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sparse training keeps two of every four weights.",
    "Return the number of elements in the container.",
    "The dog sleeps; the fox runs quickly over the hills.",
] * 50


def test_train_wordpiece_vocab_and_ids(tmp_path):
    tok = train_wordpiece(CORPUS, vocab_size=300, min_frequency=1)
    assert len(SPECIAL_TOKENS) < len(tok) <= 300
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    ids = tok.encode_plain(["the quick fox"])[0]
    assert tok.unk_token_id not in ids and tok.decode(ids) == "the quick fox"
    assert tok.encode_plain(["THE Quick"]) == tok.encode_plain(["the quick"])  # uncased
    pair = tok.encode(["the dog"], ["the fox"], max_length=16)
    assert pair["input_ids"][0][0] == tok.cls_token_id and pair["input_ids"][0].count(tok.sep_token_id) == 2
    assert pair["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1]
    long = tok.encode(["the dog " * 40], max_length=16)["input_ids"][0]
    assert len(long) == 16 and long[-1] == tok.sep_token_id
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.encode_plain(CORPUS[:4]) == tok.encode_plain(CORPUS[:4])
    lines = (tmp_path / "tok" / "vocab.txt").read_text().splitlines()
    assert lines[:5] == SPECIAL_TOKENS and len(lines) == len(tok)


def test_bad_vocab_size():
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(CORPUS, vocab_size=3)


def test_load_missing_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_bert_base_vocab_offline():
    vocab = SHARED / "bert_base_uncased" / "vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"shared data not found at {SHARED}")
    for path in (vocab, vocab.parent):
        tok = load_tokenizer(path)
        assert len(tok) == 30522 and tok.mask_token_id == 103
        assert tok.encode(["Hello world!"])["input_ids"] == [[101, 7592, 2088, 999, 102]]
