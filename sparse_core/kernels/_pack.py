"""Triton building blocks shared by the compress kernels: one 64-row x BC-column tile of A -> packed.

A tile covers one 64-row metadata block and BC/32 metadata tiles. It is read as four sub-tiles
(s, h) in 0..1 x 0..1: sub-tile (s, h) holds rows 16*t + 8*s + a and groups 8*g + 4*h + q, so the four
nibbles of a metadata word ((a, q), (a+8, q), (a, q+4), (a+8, q+4)) sit at the same index of the four
sub-tiles and each word is three shifts and ors, with no data exchange between threads.
"""

from __future__ import annotations

from sparse_core.kernels._triton import has_triton

RULE_MASK, RULE_MAGNITUDE, RULE_MVUE = 0, 1, 2

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def split4(x):
        """(M, N, 4) -> the four (M, N) slices x[..., 0], ..., x[..., 3]."""
        x = tl.reshape(x, (x.shape[0], x.shape[1], 2, 2))  # e = 2u + v
        a, b = tl.split(x)  # v = 0: e in (0, 2); v = 1: e in (1, 3)
        x0, x2 = tl.split(a)
        x1, x3 = tl.split(b)
        return x0, x1, x2, x3

    @triton.jit
    def join4(x0, x1, x2, x3):
        """Inverse of split4: four (M, N) -> (M, N, 4)."""
        a = tl.join(x0, x2)
        b = tl.join(x1, x3)
        x = tl.join(a, b)  # (M, N, 2u, 2v)
        return tl.reshape(x, (x.shape[0], x.shape[1], 4))

    @triton.jit
    def to_float(bits, IS_BF16: tl.constexpr):
        """16-bit pattern (int16) -> float32 value."""
        if IS_BF16:
            return bits.to(tl.bfloat16, bitcast=True).to(tl.float32)
        else:
            return bits.to(tl.float16, bitcast=True).to(tl.float32)

    @triton.jit
    def to_bits(x, IS_BF16: tl.constexpr):
        """float32 value -> 16-bit pattern (int16) of the rounded value."""
        if IS_BF16:
            return x.to(tl.bfloat16).to(tl.int16, bitcast=True)
        else:
            return x.to(tl.float16).to(tl.int16, bitcast=True)

    @triton.jit
    def top2_of_4(x0, x1, x2, x3):
        """Keep flags of the two largest |x| (16-bit patterns; ties to the lower index)."""
        m0 = x0.to(tl.int32) & 0x7FFF
        m1 = x1.to(tl.int32) & 0x7FFF
        m2 = x2.to(tl.int32) & 0x7FFF
        m3 = x3.to(tl.int32) & 0x7FFF
        c0 = (m1 > m0).to(tl.int32) + (m2 > m0).to(tl.int32) + (m3 > m0).to(tl.int32)
        c1 = (m0 >= m1).to(tl.int32) + (m2 > m1).to(tl.int32) + (m3 > m1).to(tl.int32)
        c2 = (m0 >= m2).to(tl.int32) + (m1 >= m2).to(tl.int32) + (m3 > m2).to(tl.int32)
        c3 = (m0 >= m3).to(tl.int32) + (m1 >= m3).to(tl.int32) + (m2 >= m3).to(tl.int32)
        return c0 < 2, c1 < 2, c2 < 2, c3 < 2

    @triton.jit
    def draw4(w0, w1, w2, w3, u):
        """Index drawn by inverse CDF from weights w (not all zero) with a uniform u in [0, 1)."""
        c1 = w0 + w1
        c2 = c1 + w2
        c3 = c2 + w3
        t = u * c3
        idx = (w0 <= t).to(tl.int32) + (c1 <= t).to(tl.int32) + (c2 <= t).to(tl.int32) + (c3 <= t).to(tl.int32)
        last = tl.where(w3 > 0, 3, tl.where(w2 > 0, 2, tl.where(w1 > 0, 1, 0)))
        return tl.minimum(idx, last)

    @triton.jit
    def incl_prob(a, p, total, sec_sum, sec):
        """P(index i is one of the two drawn): p_i + a_i * sum_{j != i} p_j / (S - a_j)."""
        return tl.where(a > 0, p + (sec_sum - sec) * a, 0.0)

    @triton.jit
    def mvue4(x0, x1, x2, x3, u1, u2):
        """MVUE 2:4 of one group (float32 values): two distinct draws without replacement, prop. to |x|,
        each kept value divided by its inclusion probability; returns the four outputs."""
        a0 = tl.abs(x0)
        a1 = tl.abs(x1)
        a2 = tl.abs(x2)
        a3 = tl.abs(x3)
        total = a0 + a1 + a2 + a3
        pos = total > 0
        first = draw4(tl.where(pos, a0, 1.0), tl.where(pos, a1, 1.0), tl.where(pos, a2, 1.0),
                      tl.where(pos, a3, 1.0), u1)
        r0 = tl.where(first == 0, 0.0, a0)
        r1 = tl.where(first == 1, 0.0, a1)
        r2 = tl.where(first == 2, 0.0, a2)
        r3 = tl.where(first == 3, 0.0, a3)
        rpos = (r0 + r1 + r2 + r3) > 0
        second = draw4(tl.where(rpos, r0, (first != 0).to(tl.float32)),
                       tl.where(rpos, r1, (first != 1).to(tl.float32)),
                       tl.where(rpos, r2, (first != 2).to(tl.float32)),
                       tl.where(rpos, r3, (first != 3).to(tl.float32)), u2)
        safe = tl.where(pos, total, 1.0)
        p0 = tl.where(pos, a0 / safe, 0.0)
        p1 = tl.where(pos, a1 / safe, 0.0)
        p2 = tl.where(pos, a2 / safe, 0.0)
        p3 = tl.where(pos, a3 / safe, 0.0)
        s0 = tl.where(total - a0 > 0, p0 / tl.where(total - a0 > 0, total - a0, 1.0), 0.0)
        s1 = tl.where(total - a1 > 0, p1 / tl.where(total - a1 > 0, total - a1, 1.0), 0.0)
        s2 = tl.where(total - a2 > 0, p2 / tl.where(total - a2 > 0, total - a2, 1.0), 0.0)
        s3 = tl.where(total - a3 > 0, p3 / tl.where(total - a3 > 0, total - a3, 1.0), 0.0)
        ss = s0 + s1 + s2 + s3
        pi0 = incl_prob(a0, p0, total, ss, s0)
        pi1 = incl_prob(a1, p1, total, ss, s1)
        pi2 = incl_prob(a2, p2, total, ss, s2)
        pi3 = incl_prob(a3, p3, total, ss, s3)
        nan = total * 0.0  # NaN exactly when the group is not finite
        fin = nan == 0.0
        o0 = tl.where(((first == 0) | (second == 0)) & (a0 > 0), x0 / tl.where(pi0 > 0, pi0, 1.0), 0.0)
        o1 = tl.where(((first == 1) | (second == 1)) & (a1 > 0), x1 / tl.where(pi1 > 0, pi1, 1.0), 0.0)
        o2 = tl.where(((first == 2) | (second == 2)) & (a2 > 0), x2 / tl.where(pi2 > 0, pi2, 1.0), 0.0)
        o3 = tl.where(((first == 3) | (second == 3)) & (a3 > 0), x3 / tl.where(pi3 > 0, pi3, 1.0), 0.0)
        return (tl.where(fin, o0, nan), tl.where(fin, o1, nan), tl.where(fin, o2, nan), tl.where(fin, o3, nan))

    @triton.jit
    def pick(i, v0, v1, v2, v3):
        return tl.where(i == 0, v0, tl.where(i == 1, v1, tl.where(i == 2, v2, v3)))

    @triton.jit
    def pack_tile(x_ptr, sxr, sxc, m_ptr, smr, smc, mo_ptr, d_ptr, out_ptr,
                  rows, cols, row0, col0, seed,
                  RULE: tl.constexpr, MASK_OUT: tl.constexpr, DENSE_OUT: tl.constexpr,
                  BC: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        """Pack rows row0..row0+63, columns col0..col0+BC-1 of A (element (r, c) at x_ptr + r*sxr + c*sxc,
        int16 patterns). RULE: 0 = keep where mask (uint8 at m_ptr + r*smr + c*smc), 1 = magnitude,
        2 = MVUE with Philox `seed`. MASK_OUT writes the kept flags at mo_ptr (mask strides),
        DENSE_OUT the kept values densely at d_ptr + r*cols + c."""
        G2: tl.constexpr = BC // 8
        i = tl.arange(0, 32)
        j = tl.arange(0, G2)
        e = tl.arange(0, 4)
        word = tl.zeros((32, G2), tl.int32)
        for s in tl.static_range(2):
            row = row0 + (i // 8) * 16 + s * 8 + (i % 8)  # (32,)
            row_ok = row < rows
            for h in tl.static_range(2):
                grp = col0 // 4 + (j // 4) * 8 + h * 4 + (j % 4)  # (G2,)
                col = grp[None, :, None] * 4 + e[None, None, :]  # (1, G2, 4)
                ok = row_ok[:, None, None] & (col < cols)
                r64 = row[:, None, None].to(tl.int64)
                xb = tl.load(x_ptr + r64 * sxr + col.to(tl.int64) * sxc, mask=ok, other=0)
                x0, x1, x2, x3 = split4(xb)
                if RULE == 0:
                    mk = tl.load(m_ptr + r64 * smr + col.to(tl.int64) * smc, mask=ok, other=0) != 0
                    k0, k1, k2, k3 = split4(mk)
                elif RULE == 1:
                    k0, k1, k2, k3 = top2_of_4(x0, x1, x2, x3)
                else:
                    gid = (row[:, None] * (cols // 4) + grp[None, :]) * 2
                    u1 = tl.rand(seed, gid)
                    u2 = tl.rand(seed, gid + 1)
                    o0, o1, o2, o3 = mvue4(to_float(x0, IS_BF16), to_float(x1, IS_BF16),
                                           to_float(x2, IS_BF16), to_float(x3, IS_BF16), u1, u2)
                    x0 = to_bits(o0, IS_BF16)
                    x1 = to_bits(o1, IS_BF16)
                    x2 = to_bits(o2, IS_BF16)
                    x3 = to_bits(o3, IS_BF16)
                    k0 = (x0.to(tl.int32) & 0x7FFF) != 0
                    k1 = (x1.to(tl.int32) & 0x7FFF) != 0
                    k2 = (x2.to(tl.int32) & 0x7FFF) != 0
                    k3 = (x3.to(tl.int32) & 0x7FFF) != 0
                v0 = tl.where(k0, x0, 0).to(tl.int16)
                v1 = tl.where(k1, x1, 0).to(tl.int16)
                v2 = tl.where(k2, x2, 0).to(tl.int16)
                v3 = tl.where(k3, x3, 0).to(tl.int16)
                nzb = (((v0.to(tl.int32) & 0x7FFF) != 0).to(tl.int32)
                       | (((v1.to(tl.int32) & 0x7FFF) != 0).to(tl.int32) << 1)
                       | (((v2.to(tl.int32) & 0x7FFF) != 0).to(tl.int32) << 2)
                       | (((v3.to(tl.int32) & 0x7FFF) != 0).to(tl.int32) << 3))
                table = tl.full(nzb.shape, TABLE, tl.int64)
                nib = ((table >> (nzb.to(tl.int64) * 4)) & 15).to(tl.int32)
                i0 = nib & 3
                i1 = nib >> 2
                val = tl.join(pick(i0, v0, v1, v2, v3), pick(i1, v0, v1, v2, v3))  # (32, G2, 2)
                voff = r64 * (cols // 2) + (grp[None, :, None] * 2 + tl.arange(0, 2)[None, None, :])
                tl.store(out_ptr + voff, val, mask=row_ok[:, None, None] & (grp[None, :, None] < cols // 4))
                nib = tl.where(row_ok[:, None], nib, 0xE)
                word = word | (nib << (4 * (2 * h + s)))
                if MASK_OUT:
                    kk = join4(k0.to(tl.int8), k1.to(tl.int8), k2.to(tl.int8), k3.to(tl.int8))
                    tl.store(mo_ptr + r64 * smr + col.to(tl.int64) * smc, kk, mask=ok)
                if DENSE_OUT:
                    tl.store(d_ptr + r64 * cols + col, join4(v0, v1, v2, v3), mask=ok)
        gt = col0 // 32 + j // 4  # (G2,) metadata group-tile
        rt = i // 8
        tile = (row0 // 64 * (cols // 32) + gt[None, :]).to(tl.int64) * 4 + rt[:, None]
        woff = (rows * (cols // 2)).to(tl.int64) + tile * 32 + (i % 8)[:, None] * 4 + (j % 4)[None, :]
        tl.store(out_ptr + woff, word.to(tl.int16), mask=(gt < cols // 32)[None, :] & (rt[:, None] < 4))
