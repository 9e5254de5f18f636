"""MLM masking statistics (15%, 80/10/10), packing, and resume-exact batch addressing."""

import math

import pytest
import torch

from cramming.data import MLMBatches, mask_tokens, pack_documents, text_file_documents

MASK, VOCAB, SPECIAL = 4, 1000, (0, 2, 3)


def _ids(n=200, t=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, t), generator=g)
    ids[:, 0], ids[:, -1], ids[:10, 64:] = 2, 3, 0  # [CLS], [SEP], some padding
    return ids


def test_mask_statistics():
    ids = _ids()
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(1))
    special = torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != -100
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])  # unselected tokens untouched
    n = int((~special).sum())
    k = int(selected.sum())
    assert abs(k / n - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n)
    to_mask = int((inputs[selected] == MASK).sum())
    kept = int((inputs[selected] == ids[selected]).sum())
    other = k - to_mask - kept
    for count, p in ((to_mask, 0.8), (kept, 0.1), (other, 0.1)):  # random ids rarely equal the original
        assert abs(count / k - p) < 4 * math.sqrt(p * (1 - p) / k) + 0.002, (count, k, p)


def test_mask_deterministic_and_never_empty():
    ids = _ids(4, 16)
    a = mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    one = torch.tensor([[2, 7, 3]])
    for seed in range(20):
        _, labels = mask_tokens(one, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, probability=0.01,
                                generator=torch.Generator().manual_seed(seed))
        assert labels.tolist() == [[-100, 7, -100]]
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, probability=1.5)


def test_pack_documents():
    rows = pack_documents([[10, 11, 12], [], [13, 14], [15, 16, 17, 18]], seq_len=4, cls_id=2, sep_id=3)
    # stream: 10 11 12 3 13 14 3 15 16 17 18 3 -> rows of 3 behind [CLS]
    assert rows.tolist() == [[2, 10, 11, 12], [2, 3, 13, 14], [2, 3, 15, 16], [2, 17, 18, 3]]
    with pytest.raises(ValueError, match="fewer than one sequence"):
        pack_documents([[1]], seq_len=8, cls_id=2, sep_id=3)


def test_batches_cover_epoch_and_are_addressable():
    rows = torch.arange(24 * 8).view(24, 8) + 10
    kw = dict(micro_batch_size=4, accumulation=2, seed=3, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL)
    b = MLMBatches(rows, world_size=1, rank=0, **kw)
    inputs = torch.cat([b.batch(s, m)["input_ids"] for s in range(3) for m in range(2)])  # 24 samples = one epoch
    assert inputs.shape == (24, 8)
    # addressing: a fresh object gives the same batch for the same (step, micro), in any order
    fresh = MLMBatches(rows, world_size=1, rank=0, **kw)
    for s, m in ((2, 1), (0, 0), (7, 1)):
        x, y = b.batch(s, m), fresh.batch(s, m)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    # one epoch visits every row exactly once (rows are told apart by their first token)
    orig = []
    for s in range(3):
        for m in range(2):
            slot = s * 2 + m
            orig += [int(b._permutation(0)[k]) for k in range(slot * 4, slot * 4 + 4)]
    assert sorted(orig) == list(range(24))
    # two ranks read disjoint rows
    r0 = MLMBatches(rows, world_size=2, rank=0, **kw)
    r1 = MLMBatches(rows, world_size=2, rank=1, **kw)
    assert not torch.equal(r0.batch(0, 0)["labels"], r1.batch(0, 0)["labels"])


def test_text_file_documents(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("line one\nline two\n\n\nnext paragraph\n")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    assert list(text_file_documents(tmp_path)) == ["line one line two", "next paragraph", "second file"]
    with pytest.raises(FileNotFoundError):
        list(text_file_documents(tmp_path / "nope"))
