"""Effective bandwidth of the sparse_core Triton kernels on one GPU, against torch's own compressors.

bandwidth = (bytes read + bytes written) / median time (triton.testing.do_bench). Shapes: FFN weights of
GPT-2 124M..1.5B and LLaMA-7B; dY^T of 16k-64k tokens. Writes kernels.json and kernels.md under --out.
Run: python3 accelerate/bench_kernels.py --out results/kernels
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import warnings

import torch

# FFN weights (out x in) of GPT-2 124M, 355M, 774M, 1.5B (both orientations at 124M, 1.5B) and LLaMA-7B
WEIGHTS = [(3072, 768), (768, 3072), (4096, 1024), (5120, 1280), (6400, 1600), (1600, 6400), (11008, 4096),
           (4096, 11008)]
DY = [(16384, 768), (16384, 3072), (32768, 4096), (65536, 3072)]  # (tokens, out features)


def bench(fn) -> float:
    """Median milliseconds of fn()."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=5, rep=25, return_mode="median")


def copy_bandwidth() -> float:
    x = torch.randn(512 * 2**20, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    return 2 * x.numel() * 2 / bench(lambda: y.copy_(x)) / 1e9  # TB/s


def probe_zero_groups() -> dict:
    """cuSPARSELt's nibble for every group with <= 2 non-zeros, read back from _cslt_compress."""
    from sparse_core.kernels.cslt_layout import NIBBLE_OF_NONZEROS, torch_nibbles

    pats = [b for b in range(16) if bin(b).count("1") <= 2]
    x = torch.zeros(64, 64)
    for r in range(64):
        for g in range(16):
            b = pats[(r + g) % len(pats)]
            for i in range(4):
                if b >> i & 1:
                    x[r, 4 * g + i] = 1.0 + i
    out = {}
    for neg_zero in (False, True):
        xx = torch.where((x == 0) & neg_zero, torch.tensor(-0.0), x).to(torch.bfloat16).cuda()
        nib = torch_nibbles(torch._cslt_compress(xx), 64, 64).cpu()
        seen = {}
        for r in range(64):
            for g in range(16):
                seen.setdefault(pats[(r + g) % len(pats)], set()).add(int(nib[r, g]))
        out["negzero" if neg_zero else "poszero"] = {
            b: sorted(v) for b, v in seen.items()}
    out["ours"] = {b: NIBBLE_OF_NONZEROS[b] for b in pats}
    return out


def torch_baselines(masked: torch.Tensor, tile_input: torch.Tensor) -> dict:
    """Times of torch's own compressors: `_cslt_compress(masked)` and, where this stack has it, the tile op."""
    base = {"cslt_compress_ms": bench(lambda: torch._cslt_compress(masked))}
    try:
        base["semi_structured_tile_ms"] = bench(lambda: torch._sparse_semi_structured_tile(
            tile_input, algorithm="largest_abs_values_greedy", use_cutlass=False))
    except Exception:  # not every torch build has the tile op
        pass
    return base


def row(name, shape, ms, nbytes, base=None):
    r = {"kernel": name, "shape": list(shape), "ms": round(ms, 5), "bytes": nbytes, "TBps": round(nbytes / ms / 1e9, 3)}
    if base:
        r.update({k: round(v, 5) for k, v in base.items()})
        if "cslt_compress_ms" in base:
            r["speedup_vs_cslt_compress"] = round(base["cslt_compress_ms"] / ms, 1)
        if "semi_structured_tile_ms" in base:
            r["speedup_vs_tile_op"] = round(base["semi_structured_tile_ms"] / ms, 2)
        if "torch_rule_ms" in base:
            r["speedup_vs_torch_rule"] = round(base["torch_rule_ms"] / ms, 1)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/kernels")
    ap.add_argument("--quick", action="store_true", help="first two shapes of each list only")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    warnings.filterwarnings("ignore")
    import triton

    from sparse_core.kernels import (compress_24, gated_backward, gated_forward, masked_decay_, mvue_compress_t,
                                     packed_numel, refresh_transposable_compress, transposable_compress,
                                     transposable_mask)
    from sparse_core.masks import transposable_mask_24

    torch.manual_seed(0)
    dt = torch.bfloat16
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cusparselt": torch.backends.cusparselt.version(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv), "dtype": "bfloat16",
            "bytes": "read + written, each tensor once; bandwidth = bytes / median time"}
    meta["copy_TBps"] = round(copy_bandwidth(), 3)
    try:
        meta["cslt_nibble_probe"] = probe_zero_groups()
    except Exception as e:  # a probe, not a result
        meta["cslt_nibble_probe"] = repr(e)[:200]
    rows = []
    weights = WEIGHTS[:2] if args.quick else WEIGHTS
    dys = DY[:2] if args.quick else DY
    for r, c in weights:
        w = torch.randn(r, c, device="cuda", dtype=dt)
        pk = 2 * packed_numel(r, c)
        _, mask = compress_24(w, return_mask=True)
        masked = torch.where(mask, w, 0)
        base = torch_baselines(masked, w)
        rows.append(row("compress_24(mask)", (r, c), bench(lambda: compress_24(w, mask)), 2 * r * c + r * c + pk, base))
        rows.append(row("compress_24(magnitude)", (r, c), bench(lambda: compress_24(w)), 2 * r * c + pk, base))
        rows.append(row("compress_24(magnitude,T)", (c, r), bench(lambda: compress_24(w, transpose=True)), 2 * r * c + pk, base))
        both = {"cslt_compress_ms": base["cslt_compress_ms"] + bench(lambda: torch._cslt_compress(masked.t().contiguous()))}
        if "semi_structured_tile_ms" in base:
            both["semi_structured_tile_ms"] = base["semi_structured_tile_ms"]
        rows.append(row("transposable_compress", (r, c), bench(lambda: transposable_compress(w)), 2 * r * c + r * c + 2 * pk, both))
        previous = mask.clone()  # a mask refresh: the previous mask read, rewritten in place, flips counted
        rows.append(row("refresh_transposable_compress", (r, c), bench(lambda: refresh_transposable_compress(w, previous)),
                        2 * r * c + 2 * r * c + 2 * pk, both))
        g32 = torch.randn(r, c, device="cuda")
        w32 = torch.randn(r, c, device="cuda")
        for x, name in ((w32, "fp32"), (w, "bf16")):  # the per-refresh mask of a master weight, vs the torch rule
            rule = {"torch_rule_ms": bench(lambda: transposable_mask_24(x))}
            rows.append(row(f"transposable_mask({name})", (r, c), bench(lambda: transposable_mask(x)),
                            x.element_size() * r * c + r * c, rule))
        rows.append(row("masked_decay_(fp32)", (r, c), bench(lambda: masked_decay_(g32, w32, mask, 1e-4)), 4 * r * c * 3 + r * c))
        print(rows[-2], flush=True)
    for t, n in dys:
        dy = torch.randn(t, n, device="cuda", dtype=dt)
        pk = 2 * packed_numel(n, t)
        _, m = compress_24(dy, transpose=True, return_mask=True)
        dyt_masked = torch.where(m, dy, 0).t().contiguous()
        base = torch_baselines(dyt_masked, dyt_masked)
        seed = torch.tensor([1234], device="cuda")  # a device seed, as the backend passes it (no fill launch)
        rows.append(row("mvue_compress_t", (n, t), bench(lambda: mvue_compress_t(dy, seed)), 2 * t * n + pk, base))
        rows.append(row("compress_24(magnitude,T) dY", (n, t), bench(lambda: compress_24(dy, transpose=True)), 2 * t * n + pk, base))
        print(rows[-2], flush=True)
    for t, h in [(16384, 3072), (16384, 11008)]:
        y = torch.randn(2 * h, t, device="cuda", dtype=dt).t()  # column-major GEMM output
        dz = torch.randn(h, t, device="cuda", dtype=dt).t()
        for act in ("gelu", "silu"):
            rows.append(row(f"gated_forward({act}, col-major)", (t, 2 * h), bench(lambda: gated_forward(y, act)), 2 * 3 * t * h))
            rows.append(row(f"gated_backward({act}, col-major)", (t, 2 * h), bench(lambda: gated_backward(y, dz, act)), 2 * 5 * t * h))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "kernels.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    half = meta["copy_TBps"] / 2
    lines = [f"# Kernel bandwidth, {meta['gpu']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, cuSPARSELt {meta['cusparselt']}, {meta['date']}, "
             f"`{meta['command']}`. Copy bandwidth {meta['copy_TBps']} TB/s (target: >= {half:.2f} TB/s, 50%).", "",
             "| kernel | shape (rows x cols of the operand) | ms | TB/s | % of copy | _cslt_compress ms | x faster | tile op ms | x faster than tile op | torch rule ms | x faster than torch rule |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['shape'][0]}x{r['shape'][1]} | {r['ms']:.4f} | {r['TBps']:.2f} | "
                     f"{100 * r['TBps'] / meta['copy_TBps']:.0f}% | {r.get('cslt_compress_ms', '')} | "
                     f"{r.get('speedup_vs_cslt_compress', '')} | {r.get('semi_structured_tile_ms', '')} | "
                     f"{r.get('speedup_vs_tile_op', '')} | {r.get('torch_rule_ms', '')} | "
                     f"{r.get('speedup_vs_torch_rule', '')} |")
    with open(os.path.join(args.out, "kernels.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
