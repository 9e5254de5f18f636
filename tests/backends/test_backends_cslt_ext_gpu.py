"""GPU checks of the cached-plan cuSPARSELt extension against torch._cslt_sparse_mm (same bytes, same results)."""

import warnings

import pytest
import torch

from sparse_core.backends import cslt_ext
from sparse_core.masks import mask_24

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DTYPES = [torch.bfloat16, torch.float16]
# (out features, in features, tokens) of the backend's products
SIZES = [(768, 3072, 8192), (3072, 768, 8192), (4096, 16384, 16384)]


@pytest.fixture(scope="module")
def ext():
    reason = cslt_ext.available()
    if reason is None:
        return cslt_ext
    major, _ = torch.cuda.get_device_capability()
    if major in (8, 9) and torch.backends.cusparselt.is_available():
        pytest.fail(f"cuSPARSELt works on this sm_{major}x GPU but the plan extension does not: {reason}")
    pytest.skip(reason)


def problem(product: str, out_f: int, in_f: int, tokens: int) -> tuple[int, int, int, bool, bool]:
    """(m, k, n, b row-major, transpose_result) of SparseLinear's three products, as the backend calls them."""
    return {
        "fwd": (out_f, in_f, tokens, False, True),  # W (out, in) @ X^T, X (T, in) -> Y (T, out)
        "dx": (in_f, out_f, tokens, False, True),  # W^T (in, out) @ dY^T, dY (T, out) -> dX (T, in)
        "dw": (out_f, tokens, in_f, True, False),  # S(dY^T) (out, T) @ X (T, in) -> dW (out, in)
    }[product]


def operands(m, k, n, row_major, dtype, seed=0):
    """A dense 2:4 (m, k) matrix and B (k, n), row-major or a transposed view of a row-major (n, k)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn(m, k, device="cuda", generator=g)
    a = (a * mask_24(a)).to(dtype)
    b = torch.randn(k, n, device="cuda", generator=g) if row_major else torch.randn(n, k, device="cuda", generator=g).t()
    return a, b.to(dtype)


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return float((x - y).norm() / y.norm().clamp_min(1e-30))


def torch_mm(ac, b, transpose_result, alg_id=0):
    return torch._cslt_sparse_mm(ac, b, transpose_result=transpose_result, alg_id=alg_id)


def assert_same_as_torch(ours, ac, b, transpose_result, alg_id=0):
    """Bit-identical to torch's call whenever torch itself is deterministic for this problem."""
    ref, again = torch_mm(ac, b, transpose_result, alg_id), torch_mm(ac, b, transpose_result, alg_id)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype and ours.is_contiguous()
    if torch.equal(ref, again):
        assert torch.equal(ours, ref), rel(ours, ref)
    else:
        assert rel(ours, ref) < 1e-3


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("product", ["fwd", "dx", "dw"])
def test_backend_products_match_torch(ext, product, size, dtype):
    m, k, n, row_major, tr = problem(product, *size)
    a, b = operands(m, k, n, row_major, dtype)
    ac = torch._cslt_compress(a)
    ours = ext.sparse_mm(ac, b, transpose_result=tr)
    assert_same_as_torch(ours, ac, b, tr)
    dense = a @ b
    assert rel(ours, dense.t() if tr else dense) < 1e-2


@pytest.mark.parametrize("row_major", [True, False])
@pytest.mark.parametrize("transpose_result", [True, False])
def test_every_layout_combination(ext, row_major, transpose_result):
    a, b = operands(320, 640, 192, row_major, torch.bfloat16, seed=1)
    ac = torch._cslt_compress(a)
    ours = ext.sparse_mm(ac, b, transpose_result=transpose_result)
    assert_same_as_torch(ours, ac, b, transpose_result)
    assert ours.shape == ((192, 320) if transpose_result else (320, 192))


def test_plan_cache_is_hit_on_repeat_calls(ext):
    ext.clear_cache()
    a, b = operands(256, 512, 1024, False, torch.bfloat16)
    ac = torch._cslt_compress(a)
    ext.sparse_mm(ac, b, transpose_result=True)
    assert ext.cache_info()["size"] == 1 and ext.cache_info()["misses"] == 1 and ext.cache_info()["hits"] == 0
    ext.sparse_mm(ac, b, transpose_result=True)
    ext.sparse_mm(ac, torch.randn_like(b.t()).t(), transpose_result=True)  # new buffers, same problem
    info = ext.cache_info()
    assert (info["size"], info["misses"], info["hits"]) == (1, 1, 2)
    ext.sparse_mm(ac, b, transpose_result=False)  # another result layout
    ext.sparse_mm(ac, b.contiguous(), transpose_result=True)  # another B order
    ext.sparse_mm(torch._cslt_compress(a.half()), b.half(), transpose_result=True)  # another dtype
    assert ext.cache_info()["size"] == 4 and ext.cache_info()["misses"] == 4


def test_search_gives_an_alg_that_matches_torch(ext):
    a, b = operands(1024, 2048, 4096, False, torch.bfloat16, seed=2)
    ac = torch._cslt_compress(a)
    alg = ext.search(ac, b, transpose_result=True)
    assert alg >= 0
    assert_same_as_torch(ext.sparse_mm(ac, b, transpose_result=True, alg_id=alg), ac, b, True, alg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch marks _cslt_sparse_mm_search deprecated
        torch_alg = int(torch._cslt_sparse_mm_search(ac, b, transpose_result=True))
    assert_same_as_torch(ext.sparse_mm(ac, b, transpose_result=True, alg_id=torch_alg), ac, b, True, torch_alg)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("transpose_result", [True, False])
def test_bias_in_the_epilogue_matches_torch(ext, transpose_result, dtype):
    a, b = operands(384, 768, 1024, False, dtype, seed=6)
    ac = torch._cslt_compress(a)
    bias = torch.randn(384, device="cuda").to(dtype)
    ours = ext.sparse_mm(ac, b, transpose_result=transpose_result, bias=bias)
    ref = torch._cslt_sparse_mm(ac, b, bias=bias, transpose_result=transpose_result)
    if torch.equal(ref, torch._cslt_sparse_mm(ac, b, bias=bias, transpose_result=transpose_result)):
        assert torch.equal(ours, ref), rel(ours, ref)
    dense = a.float() @ b.float() + bias.float()[:, None]  # one bias value per row of A @ B
    assert rel(ours, dense.t() if transpose_result else dense) < 1e-2


def test_one_bias_plan_serves_layers_of_the_same_shape(ext):
    ext.clear_cache()
    a, b = operands(256, 512, 640, False, torch.bfloat16, seed=7)
    ac = torch._cslt_compress(a)
    biases = [torch.randn(256, device="cuda").bfloat16() for _ in range(3)]
    outs = [ext.sparse_mm(ac, b, transpose_result=True, bias=bias) for bias in biases]  # queued back to back
    plain = ext.sparse_mm(ac, b, transpose_result=True)
    for out, bias in zip(outs, biases):
        assert torch.allclose(out.float(), plain.float() + bias.float(), atol=0.05, rtol=1e-2)
    info = ext.cache_info()
    assert info["size"] == 2 and info["bias_buffers"] >= 1  # one plan with bias, one without


def test_cuda_graph_replay_reads_the_bias_tensor(ext):
    a, b = operands(512, 1024, 2048, False, torch.bfloat16, seed=8)
    static_a, static_x = torch._cslt_compress(a), b.t().contiguous()
    static_bias = torch.randn(512, device="cuda").bfloat16()
    call = lambda: ext.sparse_mm(static_a, static_x.t(), transpose_result=True, bias=static_bias)  # noqa: E731
    call()
    torch.cuda.synchronize()
    graph, out = _capture(call)
    for _ in range(2):
        static_bias.copy_(torch.randn(512, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        ref = torch._cslt_sparse_mm(static_a, static_x.t(), bias=static_bias, transpose_result=True)
        assert rel(out, ref) < 1e-3


def _capture(fn):
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@pytest.mark.parametrize("warm", [True, False], ids=["plan-before-capture", "plan-built-in-capture"])
def test_cuda_graph_replay_follows_input_buffers(ext, warm):
    a0, b0 = operands(64, 64, 64, True, torch.bfloat16)
    ext.sparse_mm(torch._cslt_compress(a0), b0)  # the device's cuSPARSELt handle exists from here on,
    ext.clear_cache()  # but no plan: without the warm-up below the plan is built inside the capture
    a, b = operands(512, 1024, 2048, False, torch.bfloat16, seed=3)
    static_a, static_x = torch._cslt_compress(a), b.t().contiguous()  # X (T, in); the call reads X^T
    call = lambda: ext.sparse_mm(static_a, static_x.t(), transpose_result=True)  # noqa: E731
    if warm:
        call()
        torch.cuda.synchronize()
    graph, out = _capture(call)
    graph.replay()
    torch.cuda.synchronize()
    assert_same_as_torch(out, static_a, static_x.t(), True)
    first = out.clone()
    a2, b2 = operands(512, 1024, 2048, False, torch.bfloat16, seed=4)
    static_a.copy_(torch._cslt_compress(a2))
    static_x.copy_(b2.t())
    graph.replay()
    torch.cuda.synchronize()
    assert not torch.equal(out, first)
    assert_same_as_torch(out, static_a, static_x.t(), True)
    assert ext.cache_info()["size"] == 1


def test_runs_on_the_current_stream(ext):
    a, b = operands(256, 512, 768, True, torch.float16, seed=5)
    ac = torch._cslt_compress(a)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = ext.sparse_mm(ac, b, transpose_result=False)
    torch.cuda.current_stream().wait_stream(stream)
    assert_same_as_torch(out, ac, b, False)


def test_wrong_operand_orientation_is_refused(ext):
    a, b = operands(256, 512, 768, True, torch.bfloat16, seed=6)
    ac = torch._cslt_compress(a)
    with pytest.raises(ValueError, match="too small"):
        ext.sparse_mm(ac, torch.randn(1024, 768, device="cuda", dtype=torch.bfloat16))  # k too large
    with pytest.raises(ValueError, match="torch._cslt_compress of an"):
        ext.sparse_mm(ac, b[:256])  # k too small: caught (in Python) against cuSPARSELt's compressed size
    with pytest.raises(ValueError, match="same CUDA device|bfloat16"):
        ext.sparse_mm(ac, b.cpu())
