"""Triton kernels for 2:4 training, each with a plain-torch twin named `torch_<op>` beside it.

Compressed operands are byte-identical to `torch._cslt_compress` of the masked dense matrix (cuSPARSELt
0.8 layout, see `cslt_layout`), so `torch._cslt_sparse_mm(packed, dense)` consumes them directly.
Shape rules for a compressed r x c operand (2:4 along its c columns): r % 64 == 0, c % 64 == 0,
float16/bfloat16 only; bad shapes raise ValueError naming the dim. The Triton ops run on CUDA (or on CPU
under TRITON_INTERPRET=1); without triton, use the torch twins.

    compress_24(dense, mask=None, *, transpose=False, return_mask=False) -> packed [, mask]
        packed operand of A = dense (or dense.T when transpose), 2:4 along A's rows; mask=None applies
        the magnitude rule (== masks.mask_24(A, dim=1)) in the same pass; mask is in dense's orientation.
    transposable_mask(w) -> mask
        exact transposable mask (== masks.transposable_mask_24 when the fp32 block sums are exact) of a
        float32/bfloat16/float16 w, dims multiples of 64; the mask refresh of SparseLinear on CUDA.
    transposable_compress(w, mask=None) -> (packed_w, packed_wt, mask)
        exact transposable mask (== masks.transposable_mask_24), or the given one, and both compressed
        operands, one launch.
    refresh_transposable_mask(w, mask) -> flips / refresh_transposable_compress(w, mask) -> (packed_w, packed_wt, flips)
        a mask refresh: the previous `mask` rewritten in place with w's transposable mask, the number of entries
        that changed (0-d int64, no host sync) counted in the same launch.
    mvue_compress_t(dy, seed, return_sum=False) -> packed [, dy.sum(0)]   seed: int, or a one-element int64
        tensor on dy's device (graph-safe). MVUE 2:4 of dY^T along tokens (dy: tokens x out), compressed as an
        (out x tokens) operand; return_sum adds the bias gradient from the same read.
    mvue_24_t(dy, seed) -> dense (out x tokens): the same estimate, uncompressed (the dense dW GEMM takes it).
    masked_decay_(grad, weight, mask, lam) -> grad      grad += lam * (1 - mask) * weight, in place.
    gated_forward(yt, act) / gated_backward(yt, dz, act)
        GEGLU ('gelu', 'gelu_tanh') / SwiGLU ('silu') on the column-major GEMM output yt = Y^T (2H x T):
        z^T = act(yt[:H]) * yt[H:], and the (2H x T) gradient; `geglu` / `swiglu` are the autograd ops.
"""

from sparse_core.kernels._triton import has_triton
from sparse_core.kernels.cslt_layout import (
    check_packable,
    packed_numel,
    packed_shape,
    torch_pack_24,
    torch_unpack_24,
)
from sparse_core.kernels.compress import compress_24, torch_compress_24
from sparse_core.kernels.transposable import (
    refresh_transposable_compress,
    refresh_transposable_mask,
    torch_refresh_transposable_compress,
    torch_refresh_transposable_mask,
    torch_transposable_compress,
    torch_transposable_mask,
    transposable_compress,
    transposable_mask,
)
from sparse_core.kernels.mvue import mvue_24_t, mvue_compress_t, torch_mvue_compress_t
from sparse_core.kernels.masked_decay import masked_decay_, torch_masked_decay_
from sparse_core.kernels.gated import (
    gated_backward,
    gated_forward,
    geglu,
    swiglu,
    torch_gated_backward,
    torch_gated_forward,
)

__all__ = [
    "has_triton",
    "check_packable",
    "packed_numel",
    "packed_shape",
    "torch_pack_24",
    "torch_unpack_24",
    "compress_24",
    "torch_compress_24",
    "transposable_mask",
    "torch_transposable_mask",
    "transposable_compress",
    "torch_transposable_compress",
    "refresh_transposable_mask",
    "torch_refresh_transposable_mask",
    "refresh_transposable_compress",
    "torch_refresh_transposable_compress",
    "mvue_compress_t",
    "mvue_24_t",
    "torch_mvue_compress_t",
    "masked_decay_",
    "torch_masked_decay_",
    "gated_forward",
    "gated_backward",
    "geglu",
    "swiglu",
    "torch_gated_forward",
    "torch_gated_backward",
]
