"""Where a mask refresh's time goes at FFN shapes: fused vs split kernels, num_warps, flip count."""
import json, sys, torch, triton
sys.path.insert(0, ".")
from sparse_core.kernels import transposable_compress, transposable_mask, compress_24
from sparse_core.kernels import transposable as T
from sparse_core.kernels.cslt_layout import NIBBLE_TABLE32, new_packed

def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=50)

def fused(w, mask, score, warps):
    rows, cols = w.shape
    pats, codes = T._pattern_operands(str(w.device))
    out = new_packed(rows, cols, w.dtype, w.device); out_t = new_packed(cols, rows, w.dtype, w.device)
    def f():
        T._transposable_kernel[(rows // 64, cols // 64)](
            w.view(torch.int16), pats, codes, mask.view(torch.uint8), out.view(torch.int16), out_t.view(torch.int16),
            rows, cols, TABLE=NIBBLE_TABLE32, IS_BF16=True, SCORE=score, num_warps=warps)
    return f

res = []
for r, c in [(3072, 768), (16384, 4096), (4096, 16384)]:
    w = torch.randn(r, c, device="cuda", dtype=torch.bfloat16)
    _, _, m = transposable_compress(w)
    old = transposable_mask(torch.randn_like(w))
    row = {"shape": [r, c], "bytes_w": w.numel() * 2}
    row["fused_w8"] = bench(lambda: transposable_compress(w))
    for warps in (2, 4, 8, 16):
        row[f"score_w{warps}"] = bench(fused(w, m.clone(), True, warps))
        row[f"pack_only_w{warps}"] = bench(fused(w, m, False, warps))
    row["mask_kernel"] = bench(lambda: transposable_mask(w, check_nan=False))
    row["compress_w"] = bench(lambda: compress_24(w, m))
    row["compress_wT"] = bench(lambda: compress_24(w, m, transpose=True))
    row["flips_sum_copy"] = bench(lambda: ((m != old).sum(), old.copy_(m)))
    row["ne_sum"] = bench(lambda: (m != old).sum())
    row["copy_mask"] = bench(lambda: old.copy_(m))
    row["copy_w"] = bench(lambda: w.clone())
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    res.append(row)
import os
os.makedirs(os.environ.get("OUT", "out"), exist_ok=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "out"), "refresh_sweep.json"), "w"), indent=1)
