"""A few hundred steps of a small GPT on the cuSPARSELt backend track the reference backend's loss."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sparse_core.backends import BACKENDS
from sparse_core.linear import SparseLinear

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

VOCAB, D, HEADS, LAYERS, SEQ, BATCH, STEPS = 64, 128, 4, 2, 64, 32, 300


class Block(nn.Module):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        opts = dict(mask_kind="transposable", mvue=True, backend=backend)
        self.fc = SparseLinear(D, 4 * D, **opts)
        self.out = SparseLinear(4 * D, D, **opts)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, HEADS, D // HEADS).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(D, -1))
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, D), nn.Embedding(SEQ, D)
        self.blocks = nn.ModuleList(Block(backend) for _ in range(LAYERS))
        self.ln = nn.LayerNorm(D)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x) @ self.tok.weight.t()  # tied head


def batches(seed: int):
    """Learnable synthetic text: each sequence follows t -> (a t + c) mod VOCAB, with 10% noise tokens."""
    g = torch.Generator().manual_seed(seed)
    while True:
        a = torch.randint(1, 8, (BATCH, 1), generator=g) * 2 + 1
        c = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
        start = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
        seq = [start]
        for _ in range(SEQ):
            seq.append((a * seq[-1] + c) % VOCAB)
        s = torch.cat(seq, 1)
        noise = torch.rand(s.shape, generator=g) < 0.1
        s = torch.where(noise, torch.randint(0, VOCAB, s.shape, generator=g), s)
        yield s[:, :-1].cuda(), s[:, 1:].cuda()


def train(backend: str) -> list[float]:
    torch.manual_seed(0)
    model = TinyGPT(backend).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    data = batches(1)
    for step in range(STEPS):
        x, y = next(data)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float().view(-1, VOCAB), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 9:
            for m in model.modules():
                if isinstance(m, SparseLinear):
                    m.refresh_mask()
        losses.append(loss.item())
    return losses


def test_small_gpt_tracks_reference_loss():
    if BACKENDS["cusparselt-all"].unavailable_reason(torch.device("cuda")):
        pytest.skip("no cuSPARSELt")
    ref, fast = train("reference"), train("cusparselt-all")
    assert all(math.isfinite(v) for v in fast)
    tail_ref, tail_fast = sum(ref[-50:]) / 50, sum(fast[-50:]) / 50
    assert tail_ref < 0.6 * ref[0]  # the task is learnable: the reference really trains
    assert abs(tail_fast - tail_ref) < 0.05 * tail_ref + 0.02, (tail_fast, tail_ref)
