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
  - `mvue_cols_tile` (MVUE 2:4 of X^T): like pack_cols_tile, but read as the four parts (s, h) of the
    rows path (X columns 16t + 8s + a, still 16-byte loads), so that the four groups of a metadata word
    share one Philox call and the word needs no exchange between threads. With SUMS it also writes X
    summed over each 64-row chunk (a linear layer's bias gradient when X = dY), from the same loads.
All in-tile offsets are int32; only each program's base pointers use int64.
"""

from __future__ import annotations

from sparse_core.kernels._triton import has_triton, interpreting

RULE_MASK, RULE_MAGNITUDE, RULE_MVUE = 0, 1, 2

if has_triton():
    import triton
    import triton.language as tl

    _INTERPRET = tl.constexpr(interpreting())  # the CPU interpreter runs no PTX

    @triton.jit
    def rcp(x):
        """1 / x for float32 x >= 0: one MUFU.RCP on the GPU (~1 ulp; subnormal x -> inf, x > 2**126 -> 0),
        an exact division under the interpreter."""
        if _INTERPRET:
            return 1.0 / x
        else:
            return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                             is_pure=True, pack=1)

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
    def copysign(mag, sgn):
        """|mag| with the sign bit of sgn (float32; mag non-negative)."""
        bits = mag.to(tl.uint32, bitcast=True) | (sgn.to(tl.uint32, bitcast=True) & 0x80000000)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def mvue_pair(x0, x1, x2, x3, rnd, IS_BF16: tl.constexpr):
        """MVUE 2:4 of groups x (int16 patterns) from one random uint32 `rnd` per group: the kept pair is
        drawn with P({i, j}) = p_i a_j / (S - a_i) + p_j a_i / (S - a_j) (p = a / S, a = |x|), the law of
        two draws without replacement prop. to a, by inverse CDF over the six pairs; each kept value is
        x_i / pi_i = sign(x_i) S / (1 + sum_{k != i} q_k), q_k = a_k / (S - a_k). Groups with < 2
        non-zeros keep them as they are, non-finite groups give NaN. Returns float32 (lo, hi), the
        nibble (int32) and the non-finite flag."""
        f0 = to_float(x0, IS_BF16)
        f1 = to_float(x1, IS_BF16)
        f2 = to_float(x2, IS_BF16)
        f3 = to_float(x3, IS_BF16)
        a0 = tl.abs(f0)
        a1 = tl.abs(f1)
        a2 = tl.abs(f2)
        a3 = tl.abs(f3)
        s01 = a0 + a1
        s23 = a2 + a3
        total = s01 + s23
        # S - a_k summed from the other three (no cancellation when a_k dominates); 0 -> inf/NaN, caught by ok
        q0 = a0 * rcp(a1 + s23)
        q1 = a1 * rcp(a0 + s23)
        q2 = a2 * rcp(a3 + s01)
        q3 = a3 * rcp(a2 + s01)
        # cumulative S * P(pair) over the pairs (0,1) (0,2) (1,2) (1,3) (0,3) (2,3): one index changes per step
        c1 = a0 * q1 + a1 * q0
        c2 = c1 + a0 * q2 + a2 * q0
        c3 = c2 + a1 * q2 + a2 * q1
        c4 = c3 + a1 * q3 + a3 * q1
        c5 = c4 + a0 * q3 + a3 * q0
        c6 = c5 + a2 * q3 + a3 * q2
        # u = top 23 bits of rnd in [0, 1 - 2**-23] (1 + u is exact): t < c6, so t never lands past the
        # last pair of positive weight, and a pair of weight 0 (a zero entry) is never drawn
        v = ((rnd >> 9) | 0x3F800000).to(tl.float32, bitcast=True)
        t = v * c6 - c6
        p1 = c1 <= t
        p2 = c2 <= t
        p3 = c3 <= t
        p4 = c4 <= t
        p5 = c5 <= t
        nib = tl.where(p5, 14, tl.where(p4, 12, tl.where(p3, 13, tl.where(p2, 9, tl.where(p1, 8, 4)))))
        e01 = (q0 + q1) + 1.0
        e23 = (q2 + q3) + 1.0
        e0 = q1 + e23  # 1 + sum_{k != 0} q_k
        e1 = q0 + e23
        e2 = q3 + e01
        e3 = q2 + e01
        flo = tl.where(p5, f2, tl.where(p4, f0, tl.where(p2, f1, f0)))
        elo = tl.where(p5, e2, tl.where(p4, e0, tl.where(p2, e1, e0)))
        fhi = tl.where(p3, f3, tl.where(p1, f2, f1))
        ehi = tl.where(p3, e3, tl.where(p1, e2, e1))
        lo = copysign(total * rcp(elo), flo)
        hi = copysign(total * rcp(ehi), fhi)
        bad = ~(total <= 3.4028234663852886e38)  # inf, NaN, or a sum past float32's range
        ok = (c6 > 0) & (c6 <= 3.4028234663852886e38) & ~bad  # >= 2 non-zeros and finite weights
        nan = total - total  # NaN where bad
        # < 2 non-zeros: the one non-zero x_k (k <= 2 at position k, k = 3 as hi) and cuSPARSELt's fillers
        lo = tl.where(ok, lo, tl.where(bad, nan, f0 + f1 + f2))
        hi = tl.where(ok, hi, tl.where(bad, nan, f3))
        nib = tl.where(ok, nib, tl.where(bad, 4, tl.where(a0 > 0, 12, tl.where(a1 > 0, 13, 14))))
        return lo, hi, nib, bad

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
    def _pack_cols_half(x0, x1, x2, x3, m0, m1, m2, m3, vbase, hc, mobase, smo, h: tl.constexpr,
                        RULE: tl.constexpr, MASK_OUT: tl.constexpr, GH: tl.constexpr, TABLE: tl.constexpr):
        """Values (and flags) of half h stored; returns nibbles combined over rows a, a + 8 as
        (GH, 4 rt, 8 a) int32 (row a + 8 in bits 4..7)."""
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
    def _mvue_offsets(stride, s: tl.constexpr, h: tl.constexpr, e: tl.constexpr, GH: tl.constexpr):
        """(GH, 32) in-tile offsets of X rows 4 (8g + 4h + q) + e (g4 = 4g + q), X columns 16 rt + 8s + a
        (i = 8 rt + a): the member e of the groups whose nibble goes to bits 4 (s + 2h) of word (g4, i)."""
        g4 = tl.arange(0, GH)
        i = tl.arange(0, 32)
        xr = ((g4 // 4) * 8 + h * 4 + g4 % 4) * 4 + e
        return xr[:, None] * stride + ((i // 8) * 16 + s * 8 + i % 8)[None, :]

    @triton.jit
    def _mvue_part(x0, x1, x2, x3, rnd, vbase, hc, dbase, cols, s: tl.constexpr, h: tl.constexpr,
                   DENSE_OUT: tl.constexpr, GH: tl.constexpr, IS_BF16: tl.constexpr):
        """MVUE of the (GH, 32) groups of part (s, h): the packed values, or with DENSE_OUT the dense estimate
        instead, stored; nibbles returned."""
        lo, hi, nib, bad = mvue_pair(x0, x1, x2, x3, rnd, IS_BF16)
        GT: tl.constexpr = GH // 4
        i = tl.arange(0, 32)
        ar = (i // 8) * 16 + s * 8 + i % 8  # A rows of the part
        if not DENSE_OUT:
            vals = tl.reshape(tl.permute(tl.join(to_bits(lo, IS_BF16), to_bits(hi, IS_BF16)), (1, 0, 2)),
                              (32, GT, 8))
            voff = (ar * hc)[:, None, None] + (tl.arange(0, GT) * 16 + h * 8)[None, :, None] \
                + tl.arange(0, 8)[None, None, :]
            tl.store(vbase + voff, vals)
        else:  # A row-major (rows x cols) for a dense dW GEMM: the kept entries, plain stores
            g4 = tl.arange(0, GH)
            doff = ar[None, :] * cols + (((g4 // 4) * 8 + h * 4 + g4 % 4) * 4)[:, None]
            i0 = nib & 3
            i1 = nib >> 2
            for k in tl.static_range(4):
                o = tl.where(bad, lo, tl.where(i0 == k, lo, tl.where(i1 == k, hi, 0.0)))
                tl.store(dbase + doff + k, to_bits(o, IS_BF16))
        return nib

    @triton.jit
    def _chunk_sums(a, b, c, d, e, f, g, h, IS_BF16: tl.constexpr, GH: tl.constexpr):
        """(GH / 8, 32) float32: eight (GH, 32) parts of one s (both halves, all members) summed over each
        64-row chunk of X (the 8 consecutive g4 = 4g + q with g in {2c, 2c + 1} hold X rows 64c .. 64c + 63)."""
        t = (to_float(a, IS_BF16) + to_float(b, IS_BF16) + to_float(c, IS_BF16) + to_float(d, IS_BF16)
             + to_float(e, IS_BF16) + to_float(f, IS_BF16) + to_float(g, IS_BF16) + to_float(h, IS_BF16))
        return tl.sum(tl.reshape(t, (GH // 8, 8, 32)), axis=1)

    @triton.jit
    def _store_chunk_sums(s_ptr, sums, rows, row0, col0, s: tl.constexpr, GH: tl.constexpr):
        """Chunk sums of part s to s_ptr[(col0 / 64 + chunk) * rows + A row]: one slot per 64 X rows, whatever
        BC is, so every slot is written exactly once (autotuning trials leave no stale slots)."""
        i = tl.arange(0, 32)
        ar = row0 + (i // 8) * 16 + s * 8 + i % 8
        chunk = col0 // 64 + tl.arange(0, GH // 8)
        tl.store(s_ptr + chunk[:, None] * rows + ar[None, :], sums)

    @triton.jit
    def mvue_cols_tile(x_ptr, sx, d_ptr, out_ptr, s_ptr, rows, cols, row0, col0, seed_ptr,
                       DENSE_OUT: tl.constexpr, SUMS: tl.constexpr, BC: tl.constexpr, IS_BF16: tl.constexpr):
        """MVUE (`mvue_pair`) of rows row0..+63, columns col0..+BC-1 of A = X^T, packed like pack_cols_tile.
        The tile is read as four parts (s, h) = the four nibbles of a metadata word, so one Philox call
        (counter = the word's index, key = the int64 at seed_ptr) gives the uniforms of all four groups."""
        GH: tl.constexpr = BC // 8
        xb = x_ptr + col0.to(tl.int64) * sx + row0
        x000 = tl.load(xb + _mvue_offsets(sx, 0, 0, 0, GH))
        x001 = tl.load(xb + _mvue_offsets(sx, 0, 0, 1, GH))
        x002 = tl.load(xb + _mvue_offsets(sx, 0, 0, 2, GH))
        x003 = tl.load(xb + _mvue_offsets(sx, 0, 0, 3, GH))
        x100 = tl.load(xb + _mvue_offsets(sx, 1, 0, 0, GH))
        x101 = tl.load(xb + _mvue_offsets(sx, 1, 0, 1, GH))
        x102 = tl.load(xb + _mvue_offsets(sx, 1, 0, 2, GH))
        x103 = tl.load(xb + _mvue_offsets(sx, 1, 0, 3, GH))
        x010 = tl.load(xb + _mvue_offsets(sx, 0, 1, 0, GH))
        x011 = tl.load(xb + _mvue_offsets(sx, 0, 1, 1, GH))
        x012 = tl.load(xb + _mvue_offsets(sx, 0, 1, 2, GH))
        x013 = tl.load(xb + _mvue_offsets(sx, 0, 1, 3, GH))
        x110 = tl.load(xb + _mvue_offsets(sx, 1, 1, 0, GH))
        x111 = tl.load(xb + _mvue_offsets(sx, 1, 1, 1, GH))
        x112 = tl.load(xb + _mvue_offsets(sx, 1, 1, 2, GH))
        x113 = tl.load(xb + _mvue_offsets(sx, 1, 1, 3, GH))
        if SUMS:  # X summed over its rows (tokens) per 64-row chunk: the bias gradient, from these loads
            _store_chunk_sums(s_ptr, _chunk_sums(x000, x001, x002, x003, x010, x011, x012, x013, IS_BF16, GH),
                              rows, row0, col0, 0, GH)
            _store_chunk_sums(s_ptr, _chunk_sums(x100, x101, x102, x103, x110, x111, x112, x113, IS_BF16, GH),
                              rows, row0, col0, 1, GH)
        # word (4 g + q, i = 8 rt + a) -> metadata tile (row block, col0 / 32 + g), offset 32 rt + 4 a + q
        tile = ((row0 // 64) * (cols // 32) + col0 // 32) * 128  # < rows * cols / 16 < 2**31
        g4 = tl.arange(0, GH)
        woff = ((g4 // 4) * 128 + g4 % 4)[:, None] + (tl.arange(0, 32) * 4)[None, :]
        r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), tile + woff)
        hc = cols // 2
        vb = out_ptr + row0.to(tl.int64) * hc + col0 // 2
        db = d_ptr + row0.to(tl.int64) * cols + col0
        word = _mvue_part(x000, x001, x002, x003, r0, vb, hc, db, cols, 0, 0, DENSE_OUT, GH, IS_BF16)
        word |= _mvue_part(x100, x101, x102, x103, r1, vb, hc, db, cols, 1, 0, DENSE_OUT, GH, IS_BF16) << 4
        word |= _mvue_part(x010, x011, x012, x013, r2, vb, hc, db, cols, 0, 1, DENSE_OUT, GH, IS_BF16) << 8
        word |= _mvue_part(x110, x111, x112, x113, r3, vb, hc, db, cols, 1, 1, DENSE_OUT, GH, IS_BF16) << 12
        if not DENSE_OUT:
            meta = out_ptr + rows.to(tl.int64) * hc + tile
            tl.store(meta + woff, word.to(tl.int16))

    @triton.jit
    def pack_cols_tile(x_ptr, sx, m_ptr, sm, mo_ptr, smo, d_ptr, out_ptr, s_ptr, rows, cols, row0, col0, seed,
                       RULE: tl.constexpr, MASK_OUT: tl.constexpr, DENSE_OUT: tl.constexpr, SUMS: tl.constexpr,
                       BC: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        """Pack rows row0..+63, columns col0..+BC-1 of A = X^T (int16 X[c, r] at x_ptr + c*sx + r); rules
        as pack_rows_tile plus 2 = MVUE (`mvue_cols_tile`, seed = pointer to an int64; DENSE_OUT writes
        the estimate as a row-major A at d_ptr instead of the packed operand); masks in X's orientation."""
        if RULE == 2:
            mvue_cols_tile(x_ptr, sx, d_ptr, out_ptr, s_ptr, rows, cols, row0, col0, seed, DENSE_OUT, SUMS, BC,
                           IS_BF16)
        else:
            GH: tl.constexpr = BC // 8
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
            hc = cols // 2
            vb = out_ptr + row0.to(tl.int64) * hc + col0 // 2
            mob = mo_ptr + c64 * smo + row0
            word = _pack_cols_half(x00, x01, x02, x03, m00, m01, m02, m03, vb, hc, mob, smo, 0,
                                   RULE, MASK_OUT, GH, TABLE)
            word |= _pack_cols_half(x10, x11, x12, x13, m10, m11, m12, m13, vb, hc, mob, smo, 1,
                                    RULE, MASK_OUT, GH, TABLE) << 8
            # word (4 g + q, rt, a) -> metadata tile (row block, col0 / 32 + g), offset 32 rt + 4 a + q
            meta = out_ptr + rows.to(tl.int64) * hc + ((row0 // 64).to(tl.int64) * (cols // 32) + col0 // 32) * 128
            g4 = tl.arange(0, GH)
            woff = ((g4 // 4) * 128 + g4 % 4)[:, None, None] + (tl.arange(0, 4) * 32)[None, :, None] \
                + (tl.arange(0, 8) * 4)[None, None, :]
            tl.store(meta + woff, word.to(tl.int16))
