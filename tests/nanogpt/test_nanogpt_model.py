"""The GPT-2 model: shapes, tied embeddings, causality, and what `sparsify` swaps for each method."""

from __future__ import annotations

import pytest
import torch

import sparse_core
from nanogpt.model import GPT, GPTConfig
from nanogpt.train import build_model

TINY = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


def test_forward_shapes_loss_and_tied_head() -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 64, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 64)
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.5  # near uniform at init
    assert model.lm_head.weight is model.wte.weight
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    a = torch.randint(0, 64, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 64
    la, _ = model(a)
    lb, _ = model(b)
    assert torch.allclose(la[0, :10], lb[0, :10], atol=1e-6)
    assert not torch.allclose(la[0, 10:], lb[0, 10:])


@pytest.mark.parametrize("method", list(sparse_core.METHODS))
def test_every_method_builds_and_trains_a_step(method: str) -> None:
    torch.manual_seed(0)
    hidden = sparse_core.ffn_hidden_dim(4 * TINY.n_embd, method)
    model, ctl = build_model(GPTConfig(**{**vars(TINY), "ffn_hidden": hidden}), method, 10, {})
    swapped = {n for n, m in model.named_modules() if isinstance(m, sparse_core.SparseLinear)}
    if method in ("dense", "half"):
        assert not swapped
    else:
        assert swapped == {f"h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")}
    assert model.h[0].mlp.c_fc.out_features == (64 if method == "half" else 128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl.bind_optimizer(opt)
    idx = torch.randint(0, 64, (4, 16))
    _, loss = model(idx, idx)
    loss.backward()
    ctl.before_optimizer_step(0)
    opt.step()
    ctl.after_optimizer_step(0)
    assert torch.isfinite(loss)


def test_generate_stays_in_vocab_limit() -> None:
    torch.manual_seed(0)
    out = GPT(TINY).generate(torch.zeros(2, 1, dtype=torch.long), 20, top_k=5, vocab_limit=10,
                             generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 21) and int(out.max()) < 10
