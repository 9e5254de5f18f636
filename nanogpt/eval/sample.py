"""Sample text from a checkpoint with the tokenizer its training data used."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import sparse_core
from nanogpt.data.tokenizer import tokenizer_from_meta
from nanogpt.eval.checkpoint import load_run

__all__ = ["sample"]


def sample(path: str | Path, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = 40, num_samples: int = 1, seed: int = 0, device: str = "cpu",
           semi_structured: bool = False) -> list[str]:
    """`num_samples` continuations of `prompt`; `semi_structured` runs the 2:4 FFNs as sparse tensors (CUDA)."""
    if max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"max_new_tokens and num_samples must be >= 1, got {max_new_tokens}, {num_samples}")
    run = load_run(path, device)
    tok = tokenizer_from_meta(run.meta)
    model = run.model
    if semi_structured:
        if run.compressed:  # 2:4 weights stored dense again: wrap them so their masks are found
            sparse_core.sparsify(model, "ste", include=[re.escape(fqn) for fqn in run.compressed])
        model = sparse_core.export_semi_structured(model.to(torch.bfloat16))
    ids = tok.encode(prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; give at least one character")
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)  # (num_samples, T)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, vocab_limit=tok.vocab_size,
                         generator=gen)
    return [tok.decode(row.tolist()) for row in out]
