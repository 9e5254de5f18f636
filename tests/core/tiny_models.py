"""Tiny transformer models built locally (no download) for sparse_core tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, hidden)
        self.c_proj = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (b, h, t, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.mlp = MLP(d, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """GPT-2-shaped (nanoGPT module names) language model."""

    def __init__(self, vocab: int = 32, d: int = 32, layers: int = 2, heads: int = 2, hidden: int | None = None,
                 block_size: int = 32) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block_size, d)
        self.h = nn.ModuleList(Block(d, heads, hidden or 4 * d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def affine_sequence_batch(gen: torch.Generator, batch: int = 16, seq: int = 16, vocab: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences following x_{t+1} = (5 x_t + 3) mod vocab from random starts, with 10% noise tokens:
    learnable, so a loss must fall, but not to zero."""
    x = torch.empty(batch, seq, dtype=torch.long)
    x[:, 0] = torch.randint(0, vocab, (batch,), generator=gen)
    for t in range(1, seq):
        x[:, t] = (5 * x[:, t - 1] + 3) % vocab
    noise = torch.rand(batch, seq, generator=gen) < 0.1
    x = torch.where(noise, torch.randint(0, vocab, (batch, seq), generator=gen), x)
    return x[:, :-1], x[:, 1:]


def train_tiny(method: str, steps: int = 60, seed: int = 0, lr: float = 3e-3, **options) -> tuple[list[float], object, nn.Module]:
    """Train TinyGPT with `method` on the copy task; returns (losses, controller, model)."""
    import sparse_core

    torch.manual_seed(seed)
    model = TinyGPT(hidden=sparse_core.ffn_hidden_dim(128, method))
    ctl = sparse_core.sparsify(model, method=method, total_steps=steps, **options)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    ctl.bind_optimizer(opt)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        x, y = affine_sequence_batch(gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        ctl.before_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)
        losses.append(loss.item())
    return losses, ctl, model
