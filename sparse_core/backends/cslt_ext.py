"""cuSPARSELt 2:4 GEMMs with cached plans: a drop-in for `torch._cslt_sparse_mm` without its host cost.

torch re-creates the cuSPARSELt descriptors and plan on every eager call (0.4-0.7 ms of CPU time); the
small C++ extension in `csrc/cslt_plans.cpp` builds them once per (device, m, k, n, dtype, B order,
transpose_result, bias or not, alg_id) and afterwards only enqueues `cusparseLtMatmul` on the current stream,
with its workspace from torch's caching allocator (CUDA-graph capture safe). An optional bias (one value per
row of A @ B, i.e. per output feature of a linear layer) is added in the GEMM's epilogue, as cuBLAS does for
dense layers, instead of a separate pass over the output. It reads the same compressed
bytes as torch (`torch._cslt_compress`). Compiled lazily with torch.utils.cpp_extension on first use
(g++ and the CUDA toolkit headers needed; nothing compiles at import). cuSPARSELt's header and library
come from $CUSPARSELT_ROOT, the libcusparseLt torch has loaded, or the nvidia-cusparselt-cu13/-cu12 wheel.

    from sparse_core.backends import cslt_ext
    if cslt_ext.available() is None:
        y = cslt_ext.sparse_mm(torch._cslt_compress(w), x.t(), transpose_result=True)  # (T, out)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["available", "cache_info", "clear_cache", "find_cusparselt", "load", "search", "sparse_mm",
           "sparse_mm_prechecked"]

EXTENSION_NAME = "sparse_core_cslt_plans"
SOURCE = Path(__file__).resolve().parent / "csrc" / "cslt_plans.cpp"
ENV_ROOT = "CUSPARSELT_ROOT"
DTYPES = (torch.bfloat16, torch.float16)

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None  # a failed load is remembered: no second compile attempt in this process


# ---- locating cuSPARSELt ------------------------------------------------------------------------
def _loaded_library() -> Path | None:
    """Path of the libcusparseLt already mapped into this process (torch's), if any (Linux only)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith("libcusparseLt.so"):
            return Path(fields[5])
    return None


def _nvidia_dirs(package: str) -> list[Path]:
    """Folders `nvidia/<package>` of the installed NVIDIA wheels (a namespace package, maybe split)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return [Path(p) / package for p in (spec.submodule_search_locations or [])] if spec else []


def candidate_roots() -> list[Path]:
    """Where cuSPARSELt is looked for, in order: $CUSPARSELT_ROOT, torch's loaded copy, pip wheels, CUDA."""
    from torch.utils.cpp_extension import CUDA_HOME

    roots = [Path(os.environ[ENV_ROOT])] if os.environ.get(ENV_ROOT) else []
    loaded = _loaded_library()
    if loaded is not None:
        roots.append(loaded.parent.parent)
    roots += _nvidia_dirs("cusparselt")
    if CUDA_HOME:
        roots.append(Path(CUDA_HOME))
    roots.append(Path("/usr"))
    return list(dict.fromkeys(roots))


def find_cusparselt(roots: list[Path]) -> tuple[Path, Path]:
    """(include dir holding cusparseLt.h, libcusparseLt to link): the first root with a header; the library
    torch already loaded when there is one (the process can hold only one), else the root's own."""
    for root in roots:
        include = root / "include"
        if not (include / "cusparseLt.h").is_file():
            continue
        lib = _loaded_library()
        if lib is None:
            libs = [p for d in ("lib", "lib64", "lib/x86_64-linux-gnu") for p in sorted((root / d).glob("libcusparseLt.so*"))]
            if not libs:
                raise RuntimeError(f"cuSPARSELt header found in {include} but no libcusparseLt.so* under {root}/lib*")
            lib = libs[0]
        return include, lib
    searched = ", ".join(str(r / "include" / "cusparseLt.h") for r in roots)
    raise RuntimeError(f"cuSPARSELt header not found (searched {searched}); pip install nvidia-cusparselt-cu13 "
                       f"(or -cu12 to match torch's CUDA) or set {ENV_ROOT}")


def _cusparse_include(cuda_home: str) -> list[str]:
    """cusparseLt.h includes cusparse.h: CUDA's own, else the one of torch's nvidia-cusparse wheel."""
    if (Path(cuda_home) / "include" / "cusparse.h").is_file():
        return []
    for d in _nvidia_dirs("cu13") + _nvidia_dirs("cusparse"):
        if (d / "include" / "cusparse.h").is_file():
            return [str(d / "include")]
    raise RuntimeError(f"cusparse.h not found in {cuda_home}/include nor in the nvidia-cusparse wheel")


# ---- building -----------------------------------------------------------------------------------
def _build() -> ModuleType:
    if not torch.cuda.is_available():
        raise RuntimeError("the cuSPARSELt plan extension needs CUDA; torch.cuda.is_available() is False")
    if not torch.backends.cusparselt.is_available():
        raise RuntimeError("torch was built without cuSPARSELt (torch.backends.cusparselt.is_available() is False)")
    torch.backends.cusparselt.version()  # make sure torch's libcusparseLt is mapped before we look for it
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("CUDA toolkit not found (torch.utils.cpp_extension.CUDA_HOME is None); set CUDA_HOME")
    include, lib = find_cusparselt(candidate_roots())
    try:
        module = cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(SOURCE)],
            extra_include_paths=[str(include), *_cusparse_include(cpp_extension.CUDA_HOME)],
            extra_cflags=["-O2"],
            extra_ldflags=[str(lib), f"-Wl,-rpath,{lib.parent}"],
            with_cuda=True,
            verbose=False,
        )
    except Exception as e:  # compiler / linker / import errors: keep their text, it is the diagnosis
        raise RuntimeError(f"building {EXTENSION_NAME} from {SOURCE} (cuSPARSELt {include}, {lib}) failed: {e}") from e
    header, runtime = module.header_version(), torch.backends.cusparselt.version()
    if runtime is not None and header // 100 != runtime // 100:
        warnings.warn(f"{EXTENSION_NAME}: cuSPARSELt header {header} differs from torch's cuSPARSELt {runtime}",
                      stacklevel=3)
    return module


def load() -> ModuleType:
    """The compiled extension (built on first call, cached); RuntimeError naming what is missing."""
    global _module, _error
    if _module is not None:
        return _module
    with _lock:
        if _module is None and _error is None:
            try:
                _module = _build()
            except Exception as e:  # noqa: BLE001 - every failure becomes one remembered RuntimeError
                _error = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
        if _module is None:
            raise RuntimeError(_error)
        return _module


def available() -> str | None:
    """None when the extension is usable, else why not (builds it on first call; never raises)."""
    try:
        load()
    except Exception as e:  # noqa: BLE001 - the contract is to report, not raise
        return str(e) or type(e).__name__
    return None


# ---- calls --------------------------------------------------------------------------------------
def _check(a: torch.Tensor, b: torch.Tensor, alg_id: int = 0, bias: torch.Tensor | None = None) -> None:
    """ValueError/TypeError naming the offending input, before anything reaches C++."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"a and b must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dtype not in DTYPES or b.dtype != a.dtype:
        raise ValueError(f"a and b must both be bfloat16 or float16, got {a.dtype} and {b.dtype}")
    if b.dim() != 2:
        raise ValueError(f"b must be 2-D (k, n), got shape {tuple(b.shape)}")
    if a.dim() != 2 or not a.is_contiguous():
        raise ValueError(f"a must be the contiguous 2-D output of torch._cslt_compress, got shape {tuple(a.shape)} "
                         f"(contiguous={a.is_contiguous()})")
    if not (b.is_contiguous() or b.t().is_contiguous()):
        raise ValueError(f"b must be row-major or the transpose of a row-major tensor, got strides {b.stride()}")
    (m, _), (k, n) = a.shape, b.shape
    if min(m, k, n) == 0:
        raise ValueError(f"empty operand: compressed a {tuple(a.shape)}, b {tuple(b.shape)}")
    if m % 16 or k % 16:  # cuSPARSELt's structured descriptor refuses other sizes (from C++, which must not throw)
        raise ValueError(f"the 2:4 matrix A must be (m, k) with m and k multiples of 16, got ({m}, {k}) (k = b.shape[0])")
    ld = b.stride(0) if b.is_contiguous() else b.stride(1)
    if ld % 8:  # 16 bytes of a 16-bit type: the dense descriptor's alignment
        raise ValueError(f"b's leading dimension must be a multiple of 8 elements (16 bytes), got {ld} for shape "
                         f"{tuple(b.shape)}")
    if a.numel() * 16 < m * k * 9:  # values (half) + metadata (1/16) of an (m, k) 2:4 matrix
        raise ValueError(f"compressed a {tuple(a.shape)} is too small for an ({m}, {k}) 2:4 matrix (k = b.shape[0]); "
                         f"is b the right operand/orientation?")
    if isinstance(alg_id, bool) or not isinstance(alg_id, int) or not 0 <= alg_id < 2**31:
        raise ValueError(f"alg_id must be an int in [0, 2**31), got {alg_id!r}")
    misaligned = [name for name, t in (("a", a), ("b", b)) if t.data_ptr() % 16]
    if misaligned:
        raise ValueError(f"{' and '.join(misaligned)} must start on a 16-byte boundary (cuSPARSELt's alignment); "
                         f"pass a fresh or .clone()d tensor, not an offset view")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (m,) or bias.dtype != a.dtype
                             or bias.device != a.device):
        desc = (f"{tuple(bias.shape)} {bias.dtype} on {bias.device}" if isinstance(bias, torch.Tensor)
                else type(bias).__name__)
        raise ValueError(f"bias must be a ({m},) {a.dtype} tensor on {a.device} (one value per row of A), got {desc}")
    if a.device.type != "cuda" or b.device != a.device:
        raise ValueError(f"a and b must be on the same CUDA device, got {a.device} and {b.device}")


@functools.lru_cache(maxsize=None)
def _compressed_cols(m: int, k: int, dtype: torch.dtype, device: int) -> int:
    """Columns of torch._cslt_compress's (m, S) buffer for an (m, k) 2:4 matrix (asked of cuSPARSELt once)."""
    nbytes = load().compressed_bytes(m, k, dtype == torch.bfloat16, device)
    row_bytes = m * torch.empty((), dtype=dtype).element_size()
    return -(-nbytes // row_bytes)


def _check_operand_sizes(a: torch.Tensor, b: torch.Tensor) -> None:
    """The compressed a must be the buffer of an (m, k = b.shape[0]) matrix; checked here, not in C++: a C++
    exception thrown out of the extension crashed the process on the H200 (2026-11-30, cause not found), so
    every refusal the extension could make is made in Python first."""
    cols = _compressed_cols(a.shape[0], b.shape[0], a.dtype, a.device.index or 0)
    if a.shape[1] != cols:
        raise ValueError(f"compressed a has shape {tuple(a.shape)} but torch._cslt_compress of an ({a.shape[0]}, "
                         f"{b.shape[0]}) matrix (k = b.shape[0]) has shape ({a.shape[0]}, {cols}); is b the right "
                         f"operand/orientation?")


def sparse_mm(a: torch.Tensor, b: torch.Tensor, transpose_result: bool = False, alg_id: int = 0,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """`torch._cslt_sparse_mm(a, b, bias, transpose_result=..., alg_id=...)` with a cached plan: A (m, k) @ b
    (k, n) (+ bias[:, None]) as (m, n), or its transpose (n, m) contiguous; `a` = torch._cslt_compress(A), b
    row- or column-major, bias (m,) in a's dtype. A plan with a bias reads it from one buffer per plan key, which
    each call fills on the current stream: keep biased calls of one shape on one stream (training does)."""
    _check(a, b, alg_id, bias)
    _check_operand_sizes(a, b)
    return load().sparse_mm(a, b, bool(transpose_result), alg_id, bias)


def sparse_mm_prechecked(a: torch.Tensor, b: torch.Tensor, transpose_result: bool, alg_id: int,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """`sparse_mm` for a caller that has passed operands of this exact layout (shapes, strides, dtypes, device,
    alg_id, bias or not) through `sparse_mm` before: only the per-tensor 16-byte alignment is checked again."""
    if a.data_ptr() % 16 or b.data_ptr() % 16:
        _check(a, b, alg_id, bias)  # raises, naming the misaligned operand
    return load().sparse_mm(a, b, transpose_result, alg_id, bias)


def search(a: torch.Tensor, b: torch.Tensor, transpose_result: bool = False) -> int:
    """Fastest cuSPARSELt algorithm id for this product (cusparseLtMatmulSearch; runs it, not in a capture)."""
    _check(a, b)
    _check_operand_sizes(a, b)
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("cslt_ext.search times kernels and cannot run inside a CUDA-graph capture; search first")
    return int(load().search(a, b, bool(transpose_result)))


def cache_info() -> dict[str, int]:
    """Plan cache counters: size, hits, misses, handles (one handle per device)."""
    return dict(load().cache_info())


def clear_cache() -> None:
    """Drop every cached plan and zero the counters (work already enqueued is unaffected)."""
    load().clear_cache()
