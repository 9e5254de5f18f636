"""Triton building blocks of the compress kernels: one 64-row x BC-column tile of A -> cuSPARSELt's operand.

A metadata word holds the nibbles of rows (a, a + 8) x groups (q, q + 4) of a 16-row x 8-group tile. Each
tile is therefore read as sub-tiles that put the four nibbles of a word at the same tensor index, so a word
is shifts and ors of whole tensors, with no data exchange between threads:
  - `pack_rows_tile` (A = X, 2:4 along X's rows): four sub-tiles (s, h), each 32 rows (16t + 8s + a) x
    GT runs of 16 contiguous columns (32 bytes: groups 8g + 4h + q); loads and value stores are 16-byte
    vectors, all four sub-tiles are loaded before any store.
  - `pack_cols_tile` (A = X^T, 2:4 along X's columns, i.e. a group is 4 consecutive rows of X): for each
    half h and member e, the X rows (8g + 4h + q) * 4 + e over the tile's 64 contiguous X columns (128
    bytes); the rows a / a + 8 of A are combined by a 2-wide sum, and the values are transposed to A's
    row-major order in registers (one layout conversion) before 16-byte stores.
All in-tile offsets are int32; only each program's base pointers use int64.
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
        m0 = x0 & 0x7FFF
        m1 = x1 & 0x7FFF
        m2 = x2 & 0x7FFF
        m3 = x3 & 0x7FFF
        c0 = (m1 > m0).to(tl.int32) + (m2 > m0).to(tl.int32) + (m3 > m0).to(tl.int32)
        c1 = (m0 >= m1).to(tl.int32) + (m2 > m1).to(tl.int32) + (m3 > m1).to(tl.int32)
        c2 = (m0 >= m2).to(tl.int32) + (m1 >= m2).to(tl.int32) + (m3 > m2).to(tl.int32)
        c3 = (m0 >= m3).to(tl.int32) + (m1 >= m3).to(tl.int32) + (m2 >= m3).to(tl.int32)
        return c0 < 2, c1 < 2, c2 < 2, c3 < 2

    @triton.jit
    def nibble_of(nz0, nz1, nz2, TABLE: tl.constexpr):
        """cuSPARSELt's nibble from the non-zero flags of positions 0..2 (position 3 never matters)."""
        bits = nz0.to(tl.int32) | (nz1.to(tl.int32) << 1) | (nz2.to(tl.int32) << 2)
        return (tl.full(bits.shape, TABLE, tl.int32) >> (bits * 4)) & 15

    @triton.jit
    def first_of(i0, v0, v1, v2):
        """v[i0] for the lower kept position i0 in 0..2."""
        return tl.where(i0 == 0, v0, tl.where(i0 == 1, v1, v2))

    @triton.jit
    def second_of(i1, v1, v2, v3):
        """v[i1] for the upper kept position i1 in 1..3."""
        return tl.where(i1 == 3, v3, tl.where(i1 == 2, v2, v1))

    @triton.jit
    def pack_group(x0, x1, x2, x3, k0, k1, k2, k3, TABLE: tl.constexpr):
        """(lo, hi, nibble) of groups whose entries x (int16 patterns) are kept where k: the two stored
        values (cuSPARSELt's positions; -0.0 counts as zero) and the metadata nibble (int32)."""
        v0 = tl.where(k0, x0, 0).to(tl.int16)
        v1 = tl.where(k1, x1, 0).to(tl.int16)
        v2 = tl.where(k2, x2, 0).to(tl.int16)
        v3 = tl.where(k3, x3, 0).to(tl.int16)
        nib = nibble_of((v0 & 0x7FFF) != 0, (v1 & 0x7FFF) != 0, (v2 & 0x7FFF) != 0, TABLE)
        return first_of(nib & 3, v0, v1, v2), second_of(nib >> 2, v1, v2, v3), nib

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
    def mvue_group(x0, x1, x2, x3, u1, u2, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        """MVUE 2:4 of groups x (int16 patterns): two distinct draws without replacement, prop. to |x|, each
        kept value divided by its inclusion probability; all-zero groups zero, non-finite groups NaN.
        Returns (lo, hi, nibble) as pack_group, and the four float32 outputs (for the dense copy)."""
        f0 = to_float(x0, IS_BF16)
        f1 = to_float(x1, IS_BF16)
        f2 = to_float(x2, IS_BF16)
        f3 = to_float(x3, IS_BF16)
        a0 = tl.abs(f0)
        a1 = tl.abs(f1)
        a2 = tl.abs(f2)
        a3 = tl.abs(f3)
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
        inv = 1.0 / tl.where(pos, total, 1.0)
        p0 = a0 * inv
        p1 = a1 * inv
        p2 = a2 * inv
        p3 = a3 * inv
        # P(i is drawn second) = sum_{j != i} p_j * a_i / (S - a_j) = a_i * (ss - s_i), s_j = p_j / (S - a_j)
        s0 = tl.where(total - a0 > 0, p0 / tl.where(total - a0 > 0, total - a0, 1.0), 0.0)
        s1 = tl.where(total - a1 > 0, p1 / tl.where(total - a1 > 0, total - a1, 1.0), 0.0)
        s2 = tl.where(total - a2 > 0, p2 / tl.where(total - a2 > 0, total - a2, 1.0), 0.0)
        s3 = tl.where(total - a3 > 0, p3 / tl.where(total - a3 > 0, total - a3, 1.0), 0.0)
        ss = s0 + s1 + s2 + s3
        pi0 = tl.where(a0 > 0, p0 + (ss - s0) * a0, 0.0)
        pi1 = tl.where(a1 > 0, p1 + (ss - s1) * a1, 0.0)
        pi2 = tl.where(a2 > 0, p2 + (ss - s2) * a2, 0.0)
        pi3 = tl.where(a3 > 0, p3 + (ss - s3) * a3, 0.0)
        nan = total * 0.0  # NaN exactly when the group is not finite
        bad = nan != 0.0
        k0 = (((first == 0) | (second == 0)) & (a0 > 0)) | bad
        k1 = (((first == 1) | (second == 1)) & (a1 > 0)) | bad
        k2 = (((first == 2) | (second == 2)) & (a2 > 0)) | bad
        k3 = (((first == 3) | (second == 3)) & (a3 > 0)) | bad
        nib = nibble_of(k0, k1, k2, TABLE)
        i0 = nib & 3
        i1 = nib >> 2
        klo = first_of(i0, k0, k1, k2)
        khi = second_of(i1, k1, k2, k3)
        plo = first_of(i0, pi0, pi1, pi2)
        phi = second_of(i1, pi1, pi2, pi3)
        lo = tl.where(klo, first_of(i0, f0, f1, f2) / tl.where(plo > 0, plo, 1.0), 0.0)
        hi = tl.where(khi, second_of(i1, f1, f2, f3) / tl.where(phi > 0, phi, 1.0), 0.0)
        lo = to_bits(tl.where(bad, nan, lo), IS_BF16)
        hi = to_bits(tl.where(bad, nan, hi), IS_BF16)
        o0 = tl.where(bad, nan, tl.where(k0, f0 / tl.where(pi0 > 0, pi0, 1.0), 0.0))
        o1 = tl.where(bad, nan, tl.where(k1, f1 / tl.where(pi1 > 0, pi1, 1.0), 0.0))
        o2 = tl.where(bad, nan, tl.where(k2, f2 / tl.where(pi2 > 0, pi2, 1.0), 0.0))
        o3 = tl.where(bad, nan, tl.where(k3, f3 / tl.where(pi3 > 0, pi3, 1.0), 0.0))
        return lo, hi, nib, o0, o1, o2, o3

    # ---- A = X: 2:4 along X's rows -------------------------------------------------------------------

    @triton.jit
    def _rows_offsets(stride, s: tl.constexpr, h: tl.constexpr, GT: tl.constexpr):
        """(32, GT, 16) in-tile offsets of sub-tile (s, h): rows 16t + 8s + a, columns 32g + 16h + 0..15."""
        i = tl.arange(0, 32)
        r = (i // 8) * 16 + s * 8 + i % 8
        c = tl.arange(0, GT) * 32 + h * 16
        return r[:, None, None] * stride + c[None, :, None] + tl.arange(0, 16)[None, None, :]

    @triton.jit
    def _pack_rows_sub(x, m, vbase, hc, mobase, smo, s: tl.constexpr, h: tl.constexpr,
                       RULE: tl.constexpr, MASK_OUT: tl.constexpr, GT: tl.constexpr, TABLE: tl.constexpr):
        """Values (and kept flags) of sub-tile (s, h) stored; returns its (32, 4 GT) nibbles."""
        x0, x1, x2, x3 = split4(tl.reshape(x, (32, GT * 4, 4)))
        if RULE == 0:
            k0, k1, k2, k3 = split4(tl.reshape(m != 0, (32, GT * 4, 4)))
        else:
            k0, k1, k2, k3 = top2_of_4(x0, x1, x2, x3)
        lo, hi, nib = pack_group(x0, x1, x2, x3, k0, k1, k2, k3, TABLE)
        i = tl.arange(0, 32)
        r = (i // 8) * 16 + s * 8 + i % 8
        c = tl.arange(0, GT) * 16 + h * 8
        voff = r[:, None, None] * hc + c[None, :, None] + tl.arange(0, 8)[None, None, :]
        tl.store(vbase + voff, tl.reshape(tl.join(lo, hi), (32, GT, 8)))
        if MASK_OUT:
            kk = join4(k0.to(tl.int8), k1.to(tl.int8), k2.to(tl.int8), k3.to(tl.int8))
            tl.store(mobase + _rows_offsets(smo, s, h, GT), tl.reshape(kk, (32, GT, 16)))
        return nib

    @triton.jit
    def pack_rows_tile(x_ptr, sx, m_ptr, sm, mo_ptr, smo, out_ptr, rows, cols, row0, col0,
                       RULE: tl.constexpr, MASK_OUT: tl.constexpr, BC: tl.constexpr, TABLE: tl.constexpr):
        """Pack rows row0..+63, columns col0..+BC-1 of A = X (int16 X[r, c] at x_ptr + r*sx + c; BC a
        multiple of 32 dividing cols, rows a multiple of 64). RULE 0 keeps where the uint8 mask at
        m_ptr + r*sm + c is non-zero, 1 keeps the two largest |x|; MASK_OUT writes kept flags at mo_ptr."""
        GT: tl.constexpr = BC // 32
        r64 = row0.to(tl.int64)
        xb = x_ptr + r64 * sx + col0
        x00 = tl.load(xb + _rows_offsets(sx, 0, 0, GT))
        x01 = tl.load(xb + _rows_offsets(sx, 0, 1, GT))
        x10 = tl.load(xb + _rows_offsets(sx, 1, 0, GT))
        x11 = tl.load(xb + _rows_offsets(sx, 1, 1, GT))
        m00 = x00
        m01 = x01
        m10 = x10
        m11 = x11
        if RULE == 0:
            mb = m_ptr + r64 * sm + col0
            m00 = tl.load(mb + _rows_offsets(sm, 0, 0, GT))
            m01 = tl.load(mb + _rows_offsets(sm, 0, 1, GT))
            m10 = tl.load(mb + _rows_offsets(sm, 1, 0, GT))
            m11 = tl.load(mb + _rows_offsets(sm, 1, 1, GT))
        hc = cols // 2
        vb = out_ptr + r64 * hc + col0 // 2
        mob = mo_ptr + r64 * smo + col0
        word = _pack_rows_sub(x00, m00, vb, hc, mob, smo, 0, 0, RULE, MASK_OUT, GT, TABLE)
        word |= _pack_rows_sub(x10, m10, vb, hc, mob, smo, 1, 0, RULE, MASK_OUT, GT, TABLE) << 4
        word |= _pack_rows_sub(x01, m01, vb, hc, mob, smo, 0, 1, RULE, MASK_OUT, GT, TABLE) << 8
        word |= _pack_rows_sub(x11, m11, vb, hc, mob, smo, 1, 1, RULE, MASK_OUT, GT, TABLE) << 12
        # word (i = 8 rt + a, 4 g + q) -> metadata tile (row block, col0 / 32 + g), offset 32 rt + 4 a + q
        meta = out_ptr + rows.to(tl.int64) * hc + ((row0 // 64).to(tl.int64) * (cols // 32) + col0 // 32) * 128
        woff = (tl.arange(0, 32) * 4)[:, None, None] + (tl.arange(0, GT) * 128)[None, :, None] \
            + tl.arange(0, 4)[None, None, :]
        tl.store(meta + woff, tl.reshape(word, (32, GT, 4)).to(tl.int16))

    # ---- A = X^T: 2:4 along X's columns (a group is 4 consecutive rows of X) --------------------------

    @triton.jit
    def _cols_offsets(stride, h: tl.constexpr, e: tl.constexpr, GH: tl.constexpr):
        """(GH, 64) in-tile offsets of X rows 4 (8g + 4h + q) + e (g4 = 4g + q), X columns 0..63."""
        g4 = tl.arange(0, GH)
        xr = ((g4 // 4) * 8 + h * 4 + g4 % 4) * 4 + e
        return xr[:, None] * stride + tl.arange(0, 64)[None, :]

    @triton.jit
    def _pack_cols_half(x0, x1, x2, x3, m0, m1, m2, m3, u1, u2, vbase, hc, mobase, smo, dbase, cols,
                        h: tl.constexpr, RULE: tl.constexpr, MASK_OUT: tl.constexpr,
                        DENSE_OUT: tl.constexpr, GH: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        """Values (and flags / dense copy) of half h stored; returns nibbles combined over rows a, a + 8
        as (GH, 4 rt, 8 a) int32 (row a + 8 in bits 4..7)."""
        if RULE == 2:
            lo, hi, nib, o0, o1, o2, o3 = mvue_group(x0, x1, x2, x3, u1, u2, TABLE, IS_BF16)
            if DENSE_OUT:  # A row-major (rows x cols), only for checks: plain stores
                g4 = tl.arange(0, GH)
                dc = ((g4 // 4) * 8 + h * 4 + g4 % 4) * 4
                doff = tl.arange(0, 64)[None, :] * cols + dc[:, None]
                tl.store(dbase + doff, to_bits(o0, IS_BF16))
                tl.store(dbase + doff + 1, to_bits(o1, IS_BF16))
                tl.store(dbase + doff + 2, to_bits(o2, IS_BF16))
                tl.store(dbase + doff + 3, to_bits(o3, IS_BF16))
        else:
            if RULE == 0:
                k0 = m0 != 0
                k1 = m1 != 0
                k2 = m2 != 0
                k3 = m3 != 0
            else:
                k0, k1, k2, k3 = top2_of_4(x0, x1, x2, x3)
            lo, hi, nib = pack_group(x0, x1, x2, x3, k0, k1, k2, k3, TABLE)
            if MASK_OUT:
                tl.store(mobase + _cols_offsets(smo, h, 0, GH), k0.to(tl.int8))
                tl.store(mobase + _cols_offsets(smo, h, 1, GH), k1.to(tl.int8))
                tl.store(mobase + _cols_offsets(smo, h, 2, GH), k2.to(tl.int8))
                tl.store(mobase + _cols_offsets(smo, h, 3, GH), k3.to(tl.int8))
        GT: tl.constexpr = GH // 4
        vals = tl.reshape(tl.permute(tl.join(lo, hi), (1, 0, 2)), (64, GT, 8))  # A rows x (g, 4q + v)
        voff = (tl.arange(0, 64) * hc)[:, None, None] + (tl.arange(0, GT) * 16 + h * 8)[None, :, None] \
            + tl.arange(0, 8)[None, None, :]
        tl.store(vbase + voff, vals)
        shift = (tl.arange(0, 2) * 4)[None, None, :, None]
        return tl.sum(tl.reshape(nib, (GH, 4, 2, 8)) << shift, axis=2)

    @triton.jit
    def pack_cols_tile(x_ptr, sx, m_ptr, sm, mo_ptr, smo, d_ptr, out_ptr, rows, cols, row0, col0, seed,
                       RULE: tl.constexpr, MASK_OUT: tl.constexpr, DENSE_OUT: tl.constexpr,
                       BC: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        """Pack rows row0..+63, columns col0..+BC-1 of A = X^T (int16 X[c, r] at x_ptr + c*sx + r); rules
        as pack_rows_tile plus 2 = MVUE with Philox `seed`; masks in X's orientation; DENSE_OUT writes
        the MVUE estimate as a row-major A at d_ptr."""
        GH: tl.constexpr = BC // 8
        GT: tl.constexpr = BC // 32
        c64 = col0.to(tl.int64)
        xb = x_ptr + c64 * sx + row0
        x00 = tl.load(xb + _cols_offsets(sx, 0, 0, GH))
        x01 = tl.load(xb + _cols_offsets(sx, 0, 1, GH))
        x02 = tl.load(xb + _cols_offsets(sx, 0, 2, GH))
        x03 = tl.load(xb + _cols_offsets(sx, 0, 3, GH))
        x10 = tl.load(xb + _cols_offsets(sx, 1, 0, GH))
        x11 = tl.load(xb + _cols_offsets(sx, 1, 1, GH))
        x12 = tl.load(xb + _cols_offsets(sx, 1, 2, GH))
        x13 = tl.load(xb + _cols_offsets(sx, 1, 3, GH))
        m00 = x00
        m01 = x01
        m02 = x02
        m03 = x03
        m10 = x10
        m11 = x11
        m12 = x12
        m13 = x13
        if RULE == 0:
            mb = m_ptr + c64 * sm + row0
            m00 = tl.load(mb + _cols_offsets(sm, 0, 0, GH))
            m01 = tl.load(mb + _cols_offsets(sm, 0, 1, GH))
            m02 = tl.load(mb + _cols_offsets(sm, 0, 2, GH))
            m03 = tl.load(mb + _cols_offsets(sm, 0, 3, GH))
            m10 = tl.load(mb + _cols_offsets(sm, 1, 0, GH))
            m11 = tl.load(mb + _cols_offsets(sm, 1, 1, GH))
            m12 = tl.load(mb + _cols_offsets(sm, 1, 2, GH))
            m13 = tl.load(mb + _cols_offsets(sm, 1, 3, GH))
        u0 = tl.zeros((GH, 64), tl.float32)
        u1 = u0
        u2 = u0
        u3 = u0
        if RULE == 2:  # one Philox call per pair of groups (q, q + 4) of a row: offsets < rows * cols / 8
            g4 = tl.arange(0, GH)
            arow = (row0 + tl.arange(0, 64)) * (cols // 8)
            u0, u1, u2, u3 = tl.rand4x(seed, arow[None, :] + (col0 // 8 + g4)[:, None])
        hc = cols // 2
        vb = out_ptr + row0.to(tl.int64) * hc + col0 // 2
        mob = mo_ptr + c64 * smo + row0
        db = d_ptr + row0.to(tl.int64) * cols + col0
        word = _pack_cols_half(x00, x01, x02, x03, m00, m01, m02, m03, u0, u1, vb, hc, mob, smo, db, cols,
                               0, RULE, MASK_OUT, DENSE_OUT, GH, TABLE, IS_BF16)
        word |= _pack_cols_half(x10, x11, x12, x13, m10, m11, m12, m13, u2, u3, vb, hc, mob, smo, db, cols,
                                1, RULE, MASK_OUT, DENSE_OUT, GH, TABLE, IS_BF16) << 8
        # word (4 g + q, rt, a) -> metadata tile (row block, col0 / 32 + g), offset 32 rt + 4 a + q
        meta = out_ptr + rows.to(tl.int64) * hc + ((row0 // 64).to(tl.int64) * (cols // 32) + col0 // 32) * 128
        g4 = tl.arange(0, GH)
        woff = ((g4 // 4) * 128 + g4 % 4)[:, None, None] + (tl.arange(0, 4) * 32)[None, :, None] \
            + (tl.arange(0, 8) * 4)[None, None, :]
        tl.store(meta + woff, word.to(tl.int16))
