"""The plain-torch cuSPARSELt packer against a loop-by-loop reading of the layout description."""

import pytest
import torch

from sparse_core.kernels.cslt_layout import (
    NIBBLE_OF_NONZEROS,
    check_packable,
    packed_numel,
    packed_shape,
    torch_pack_24,
    torch_unpack_24,
)
from sparse_core.masks import mask_24


def slow_pack(a: torch.Tensor) -> torch.Tensor:
    """Direct transcription of the layout: values row by row, then nibbles tile by tile."""
    r, c = a.shape
    R = (r + 63) // 64 * 64
    vals, nib = [], {}
    for i in range(r):
        for g in range(c // 4):
            grp = a[i, 4 * g : 4 * g + 4]
            nz = [k for k in range(4) if grp[k] != 0]
            keep = sorted((nz + [k for k in (3, 2, 1, 0) if k not in nz])[:2])
            vals += [grp[keep[0]], grp[keep[1]]]
            nib[i, g] = keep[0] | keep[1] << 2
    words = []
    for rb in range(R // 64):
        for gt in range(c // 32):
            for rt in range(4):
                seq = []
                for k in range(128):
                    a_, q, h, s = k // 16, (k // 4) % 4, (k // 2) % 2, k % 2
                    row, grp = rb * 64 + rt * 16 + a_ + 8 * s, gt * 8 + q + 4 * h
                    seq.append(nib.get((row, grp), 0xE))
                words += [seq[4 * w] | seq[4 * w + 1] << 4 | seq[4 * w + 2] << 8 | seq[4 * w + 3] << 12 for w in range(32)]
    v = torch.stack(vals).view(torch.int16)
    w = torch.tensor([x - 65536 if x >= 32768 else x for x in words], dtype=torch.int16)
    return torch.cat([v, w])


@pytest.mark.parametrize("shape", [(64, 64), (64, 192), (128, 128)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pack_matches_description(shape, dtype):
    x = torch.randn(shape).to(dtype)
    x.view(-1, 4)[::7] = 0  # some all-zero groups
    m = mask_24(x, dim=1)
    a = torch.where(m, x, torch.zeros((), dtype=dtype))
    packed = torch_pack_24(x, m)
    assert packed.shape == packed_shape(*shape)
    assert torch.equal(packed.reshape(-1)[: packed_numel(*shape)].view(torch.int16), slow_pack(a))
    assert torch.equal(torch_unpack_24(packed, *shape), a)


def test_nibble_table():
    assert NIBBLE_OF_NONZEROS[0b0101] == 0 | 2 << 2
    assert NIBBLE_OF_NONZEROS[0b1100] == 2 | 3 << 2
    # groups with < 2 non-zeros, as _cslt_compress wrote them on the H200 (cuSPARSELt 0.8.0)
    assert [NIBBLE_OF_NONZEROS[b] for b in (0, 1, 2, 4, 8)] == [14, 12, 13, 14, 14]


def test_bad_shapes_refused():
    with pytest.raises(ValueError, match="rows"):
        check_packable(48, 64)
    with pytest.raises(ValueError, match="columns"):
        check_packable(64, 48)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        torch_pack_24(torch.randn(64, 64))
