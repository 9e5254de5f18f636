"""Bi-Mask (Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023,
arXiv 2302.06058).

Forward: row-wise 2:4 magnitude mask M_f (2:4 along in-features). Backward (dX = dY W_b): a
column-wise 2:4 mask, so that W_b^T is 2:4 too. The rows (output channels) are permuted first: among
`num_candidates` random permutations (the identity included) the one whose backward mask keeps the most
entries of M_f wins (the paper's "most eligible N:M blocks"; the authors' code counts kept entries; 100
candidates, as theirs), re-searched every `research_interval` steps. The backward mask
is M_b = M_f AND (column-wise mask, un-permuted): a subset of the forward mask. SR-STE decay on weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sparse_core.masks import mask_24
from sparse_core.methods.base import SparseMethod, register_method

if TYPE_CHECKING:
    from sparse_core.controller import SparseController
    from sparse_core.linear import SparseLinear


def backward_mask(weight: torch.Tensor, fwd_mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """M_f AND the column-wise 2:4 mask of |M_f * W| taken in row order `perm`."""
    masked = (weight.detach() * fwd_mask).abs()
    col_perm = mask_24(masked[perm], dim=0)
    col = torch.empty_like(col_perm)
    col[perm] = col_perm
    return fwd_mask & col


def best_permutation(weight: torch.Tensor, fwd_mask: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """The row permutation (of num_candidates, identity first) whose M_b keeps the most entries (first on ties).

    Candidates come from torch's global CPU generator (torch.randperm), whatever the weight's device,
    so a run is reproducible from torch.manual_seed / torch.get_rng_state."""
    rows = weight.shape[0]
    best, best_score = None, -1.0
    for i in range(num_candidates):
        perm = torch.arange(rows, device=weight.device) if i == 0 else torch.randperm(rows).to(weight.device)
        score = float(backward_mask(weight, fwd_mask, perm).sum())
        if score > best_score:
            best, best_score = perm, score
    return best


@register_method
@dataclass
class BiMask(SparseMethod):
    name = "bi-mask"
    description = "row-wise 2:4 forward mask; column-wise 2:4 backward mask after the best of N row permutations"
    reference = "Zhang et al., Bi-directional Masks for Efficient N:M Sparse Training, ICML 2023 (arXiv 2302.06058)"
    decay: str = "weight"
    lambda_w: Any = 2e-4
    num_candidates: int = 100
    research_interval: int = 100

    def validate(self, total_steps: int | None) -> None:
        super().validate(total_steps)
        if self.mask_kind != "magnitude":
            raise ValueError(f"bi-mask: the forward mask is row-wise magnitude; got mask_kind={self.mask_kind!r}")
        for name in ("num_candidates", "research_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"bi-mask: {name} must be an int >= 1, got {value!r}")

    def setup(self, ctl: "SparseController") -> None:
        self.perms: dict[str, torch.Tensor] = {}
        self._search(ctl)

    def _apply(self, fqn: str, layer: "SparseLinear") -> None:
        layer.backward_mask = backward_mask(layer.weight, layer.mask, self.perms[fqn])

    def _search(self, ctl: "SparseController") -> None:
        for fqn, layer in ctl.layers.items():
            self.perms[fqn] = best_permutation(layer.weight, layer.mask, self.num_candidates)
            self._apply(fqn, layer)

    def after_step(self, ctl: "SparseController", step: int) -> None:
        # a search due on a step without a mask refresh runs here (after_refresh is not called then)
        if (step + 1) % self.research_interval == 0 and (step + 1) % self.mask_refresh_interval != 0:
            self._search(ctl)

    def after_refresh(self, ctl: "SparseController", step: int) -> None:
        if (step + 1) % self.research_interval == 0:
            self._search(ctl)
        else:
            for fqn, layer in ctl.layers.items():
                self._apply(fqn, layer)

    def state_dict(self) -> dict[str, Any]:
        return {"perms": {k: v.cpu() for k, v in self.perms.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perms = dict(state["perms"])

    def restored(self, ctl: "SparseController") -> None:
        for fqn, layer in ctl.layers.items():
            self.perms[fqn] = self.perms[fqn].to(layer.weight.device)
            self._apply(fqn, layer)
