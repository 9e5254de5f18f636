"""CPU checks of the cached-plan cuSPARSELt extension: availability report, input validation, library lookup."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparse_core.backends import cslt_ext

M, K, N = 64, 128, 32  # a compressed (M, K) 2:4 matrix is an (M, >= 72) buffer
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")


def compressed(dtype=torch.bfloat16, shape=(M, K * 9 // 16)):
    return torch.zeros(shape, dtype=dtype)


def dense_b(dtype=torch.bfloat16):
    return torch.zeros(K, N, dtype=dtype)


@no_cuda
def test_unavailable_without_cuda_is_reported_not_raised():
    reason = cslt_ext.available()
    assert isinstance(reason, str) and "CUDA" in reason
    with pytest.raises(RuntimeError, match="needs CUDA"):
        cslt_ext.load()
    assert cslt_ext.available() == reason  # remembered, not retried


@no_cuda
def test_valid_cpu_tensors_get_a_clear_error():
    with pytest.raises(ValueError, match="same CUDA device, got cpu"):
        cslt_ext.sparse_mm(compressed(), dense_b(), transpose_result=True)
    with pytest.raises(ValueError, match="CUDA device"):
        cslt_ext.search(compressed(), dense_b().t().contiguous().t())


@pytest.mark.parametrize("a, b, kwargs, error, match", [
    (compressed(torch.float32), dense_b(torch.float32), {}, ValueError, "bfloat16 or float16, got torch.float32"),
    (compressed(), dense_b(torch.float16), {}, ValueError, "got torch.bfloat16 and torch.float16"),
    (compressed(), torch.zeros(2, K, N, dtype=torch.bfloat16), {}, ValueError, r"2-D \(k, n\)"),
    (compressed().flatten(), dense_b(), {}, ValueError, "2-D output of torch._cslt_compress"),
    (compressed().t(), dense_b(), {}, ValueError, "contiguous=False"),
    (compressed(), torch.zeros(K, 2 * N, dtype=torch.bfloat16)[:, ::2], {}, ValueError, "row-major or the transpose"),
    (compressed(), torch.zeros(2 * K, N, dtype=torch.bfloat16), {}, ValueError, "too small for an \\(64, 256\\)"),
    (compressed(), torch.zeros(K, 0, dtype=torch.bfloat16), {}, ValueError, "empty operand"),
    (compressed(), torch.zeros(K - 8, N, dtype=torch.bfloat16), {}, ValueError, r"multiples of 16, got \(64, 120\)"),
    (compressed(), torch.zeros(K, 36, dtype=torch.bfloat16), {}, ValueError,
     r"leading dimension must be a multiple of 8 elements \(16 bytes\), got 36 for shape \(128, 36\)"),
    (compressed(), dense_b(), {"alg_id": -1}, ValueError, r"alg_id must be an int in \[0, 2\*\*31\), got -1"),
    (compressed(), dense_b(), {"alg_id": 2**31}, ValueError, "got 2147483648"),
    (compressed(), torch.zeros(K * N + 1, dtype=torch.bfloat16)[1:].view(K, N), {}, ValueError, "b must start on a 16-byte"),
    (compressed(), dense_b(), {"alg_id": 1.0}, ValueError, "got 1.0"),
    (compressed(), dense_b(), {"alg_id": True}, ValueError, "got True"),
    ([[1.0]], dense_b(), {}, TypeError, "got list and Tensor"),
    (compressed(), dense_b(), {"bias": torch.zeros(M + 1, dtype=torch.bfloat16)}, ValueError,
     r"bias must be a \(64,\) torch.bfloat16 tensor on cpu \(one value per row of A\), got \(65,\)"),
    (compressed(), dense_b(), {"bias": torch.zeros(M)}, ValueError, "got \\(64,\\) torch.float32"),
    (compressed(), dense_b(), {"bias": torch.zeros(1, M, dtype=torch.bfloat16)}, ValueError, "got \\(1, 64\\)"),
    (compressed(), dense_b(), {"bias": [0.0] * M}, ValueError, "got list"),
])
def test_bad_inputs_are_named(a, b, kwargs, error, match):
    with pytest.raises(error, match=match):
        cslt_ext.sparse_mm(a, b, **kwargs)


def test_import_compiles_nothing():
    code = ("import sys; import sparse_core.backends.cslt_ext as c; "
            "assert c._module is None and c._error is None; "
            "assert c.EXTENSION_NAME not in sys.modules, 'extension loaded at import time'")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


def _fake_root(tmp_path: Path, header: bool = True, lib: bool = True) -> Path:
    root = tmp_path / "cusparselt"
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    if header:
        (root / "include" / "cusparseLt.h").write_text("/* fake */\n")
    if lib:
        (root / "lib" / "libcusparseLt.so.0").write_bytes(b"")
    return root


def test_find_uses_the_first_root_with_a_header(tmp_path, monkeypatch):
    monkeypatch.setattr(cslt_ext, "_loaded_library", lambda: None)
    root = _fake_root(tmp_path)
    include, lib = cslt_ext.find_cusparselt([tmp_path / "nothing", root])
    assert include == root / "include" and lib == root / "lib" / "libcusparseLt.so.0"


def test_find_links_the_library_torch_already_loaded(tmp_path, monkeypatch):
    loaded = tmp_path / "torch_libs" / "libcusparseLt.so.0"
    monkeypatch.setattr(cslt_ext, "_loaded_library", lambda: loaded)
    include, lib = cslt_ext.find_cusparselt([_fake_root(tmp_path, lib=False)])
    assert lib == loaded and include.name == "include"


def test_find_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(cslt_ext, "_loaded_library", lambda: None)
    with pytest.raises(RuntimeError, match=f"searched {tmp_path}/a/include/cusparseLt.h.*CUSPARSELT_ROOT"):
        cslt_ext.find_cusparselt([tmp_path / "a"])
    with pytest.raises(RuntimeError, match="no libcusparseLt.so"):
        cslt_ext.find_cusparselt([_fake_root(tmp_path, lib=False)])


def test_env_root_is_searched_first(tmp_path, monkeypatch):
    monkeypatch.setenv(cslt_ext.ENV_ROOT, str(tmp_path))
    assert cslt_ext.candidate_roots()[0] == tmp_path


def test_source_ships_with_the_package():
    assert cslt_ext.SOURCE.is_file() and "PYBIND11_MODULE" in cslt_ext.SOURCE.read_text()


def test_prechecked_call_still_refuses_a_misaligned_operand():
    misaligned = torch.zeros(K * N + 1, dtype=torch.bfloat16)[1:].view(K, N)
    with pytest.raises(ValueError, match="b must start on a 16-byte"):
        cslt_ext.sparse_mm_prechecked(compressed(), misaligned, False, 0)
