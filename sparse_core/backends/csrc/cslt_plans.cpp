// Cached cuSPARSELt plans for 2:4 sparse GEMMs: same inputs, outputs and compressed layout as
// torch._cslt_sparse_mm, but descriptors, algorithm selection and plan are built once per
// (device, m, k, n, dtype, B order, transpose_result, bias or not, alg_id) and reused; a call after
// the first only allocates the output and workspace (torch's caching allocator) and enqueues
// cusparseLtMatmul on the current stream, so it is cheap on the host and safe inside CUDA-graph capture.
//
// Bias: cuSPARSELt adds a per-row bias of D in the GEMM epilogue (CUSPARSELT_MATMUL_BIAS_POINTER), but
// reads the pointer when the plan is built. A plan with bias therefore owns a fixed device buffer; each
// call copies the caller's bias into it on the stream first (m elements, stream-ordered, captured by
// graphs like the GEMM). The buffers are never freed: a captured graph may still read them.
//
// Layout conventions (the ones torch's own cuSPARSELt ops use, so the compressed bytes agree):
//   A: torch._cslt_compress of a row-major (m, k) 2:4 matrix: an (m, S) buffer holding the compressed
//      values and metadata; structured descriptor (m, k, ld k, row order, 16-byte alignment).
//   B: (k, n); row-major when contiguous, else read as the transpose of a row-major (n, k) buffer.
//   D: (m, n) row-major, or with transpose_result an (n, m) row-major buffer = (m, n) column-major.

#include <torch/extension.h>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cusparseLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

namespace {

#define CSLT_CHECK(expr)                                                                      \
  do {                                                                                        \
    cusparseStatus_t status_ = (expr);                                                        \
    TORCH_CHECK(status_ == CUSPARSE_STATUS_SUCCESS, "cuSPARSELt: ", #expr, " failed with ", \
                cusparseLtGetErrorName(status_), ": ", cusparseLtGetErrorString(status_));    \
  } while (0)

constexpr uint32_t kAlignment = 16;  // bytes, as torch declares for every operand

// One GEMM problem: everything a plan depends on except the algorithm id.
struct Problem {
  c10::DeviceIndex device;
  int64_t m, k, n;
  c10::ScalarType dtype;
  bool b_row_major;
  bool transpose_result;
  bool bias;
};

using PlanKey = std::tuple<c10::DeviceIndex, int64_t, int64_t, int64_t, int8_t, bool, bool, bool, int>;

PlanKey key_of(const Problem& p, int alg_id) {
  return {p.device, p.m, p.k, p.n, static_cast<int8_t>(p.dtype), p.b_row_major, p.transpose_result, p.bias, alg_id};
}

cudaDataType cuda_type(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::BFloat16:
      return CUDA_R_16BF;
    case c10::ScalarType::Half:
      return CUDA_R_16F;
    default:
      break;
  }
  TORCH_CHECK(false, "cslt_plans: dtype must be bfloat16 or float16, got ", t);
  return CUDA_R_16BF;  // unreachable
}

// Descriptors, algorithm selection and plan of one problem. Heap-allocated and never moved:
// cuSPARSELt objects may keep pointers to the handle and to each other.
class Plan {
 public:
  // bias_buffer: the (m,) device buffer the epilogue reads (defined iff p.bias), kept alive by the caller
  Plan(const cusparseLtHandle_t* handle, const Problem& p, int alg_id, const at::Tensor& bias_buffer)
      : handle_(handle), bias_buffer_(bias_buffer) {
    try {
      init(p, alg_id);
    } catch (...) {
      release();  // a throwing constructor gets no destructor call
      throw;
    }
  }

  ~Plan() { release(); }

  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // D = A @ B (or the search over algorithms) on the current stream, workspace from torch's caching
  // allocator: stream-ordered and private to the graph pool under capture, as in torch's own op.
  void run(const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& bias, at::Tensor& d,
           bool search) {
    // torch._cslt_compress's shape: (m, ceil(compressed bytes / (m * itemsize))); anything else means a
    // different (m, k) than the one the buffer was compressed for (e.g. b passed the wrong way round)
    const int64_t row_bytes = a.size(0) * static_cast<int64_t>(a.element_size());
    const int64_t cols = (static_cast<int64_t>(compressed_bytes_) + row_bytes - 1) / row_bytes;
    TORCH_CHECK(a.size(1) == cols, "cslt_plans: compressed a has shape ", a.sizes(), " but torch._cslt_compress of a (",
                a.size(0), ", ", b.size(0), ") matrix (k = b.size(0)) has shape (", a.size(0), ", ", cols, ")");
    TORCH_CHECK(bias.has_value() == bias_buffer_.defined(), "cslt_plans: bias given to a plan built without one");
    if (bias.has_value()) bias_buffer_.copy_(*bias, /*non_blocking=*/true);  // same stream as the GEMM
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    c10::DataPtr workspace = c10::cuda::CUDACachingAllocator::get()->allocate(workspace_);
    const float alpha = 1.0f, beta = 0.0f;
    if (search) {
      CSLT_CHECK(cusparseLtMatmulSearch(handle_, &plan_, &alpha, a.data_ptr(), b.data_ptr(), &beta, d.data_ptr(),
                                        d.data_ptr(), workspace.get(), &stream, 1));
    } else {
      CSLT_CHECK(cusparseLtMatmul(handle_, &plan_, &alpha, a.data_ptr(), b.data_ptr(), &beta, d.data_ptr(),
                                  d.data_ptr(), workspace.get(), &stream, 1));
    }
  }

  int alg_id() const {
    int id = 0;
    CSLT_CHECK(cusparseLtMatmulAlgGetAttribute(handle_, &alg_sel_, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &id, sizeof(id)));
    return id;
  }

 private:
  void init(const Problem& p, int alg_id) {
    const cudaDataType type = cuda_type(p.dtype);
    CSLT_CHECK(cusparseLtStructuredDescriptorInit(handle_, &a_, p.m, p.k, p.k, kAlignment, type,
                                                  CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT));
    a_ok_ = true;
    size_t compress_buffer = 0;
    CSLT_CHECK(cusparseLtSpMMACompressedSize2(handle_, &a_, &compressed_bytes_, &compress_buffer));
    // B (k, n): row-major as is, or the row-major (n, k) buffer it is a transposed view of
    const int64_t b_rows = p.b_row_major ? p.k : p.n;
    const int64_t b_cols = p.b_row_major ? p.n : p.k;
    CSLT_CHECK(cusparseLtDenseDescriptorInit(handle_, &b_, b_rows, b_cols, b_cols, kAlignment, type,
                                             CUSPARSE_ORDER_ROW));
    b_ok_ = true;
    // D (m, n): row-major, or column-major (= the row-major (n, m) result buffer) when transposed
    CSLT_CHECK(cusparseLtDenseDescriptorInit(handle_, &d_, p.m, p.n, p.transpose_result ? p.m : p.n, kAlignment,
                                             type, p.transpose_result ? CUSPARSE_ORDER_COL : CUSPARSE_ORDER_ROW));
    d_ok_ = true;
    CSLT_CHECK(cusparseLtMatmulDescriptorInit(
        handle_, &matmul_, CUSPARSE_OPERATION_NON_TRANSPOSE,
        p.b_row_major ? CUSPARSE_OPERATION_NON_TRANSPOSE : CUSPARSE_OPERATION_TRANSPOSE, &a_, &b_, &d_, &d_,
        CUSPARSE_COMPUTE_32F));
    if (p.bias) {  // read at plan init: the buffer's address is fixed for the plan's life
      void* bias_ptr = bias_buffer_.data_ptr();
      CSLT_CHECK(cusparseLtMatmulDescSetAttribute(handle_, &matmul_, CUSPARSELT_MATMUL_BIAS_POINTER, &bias_ptr,
                                                  sizeof(bias_ptr)));
    }
    CSLT_CHECK(cusparseLtMatmulAlgSelectionInit(handle_, &alg_sel_, &matmul_, CUSPARSELT_MATMUL_ALG_DEFAULT));
    alg_ok_ = true;
    CSLT_CHECK(cusparseLtMatmulAlgSetAttribute(handle_, &alg_sel_, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &alg_id,
                                               sizeof(alg_id)));
    CSLT_CHECK(cusparseLtMatmulPlanInit(handle_, &plan_, &matmul_, &alg_sel_));
    plan_ok_ = true;
    CSLT_CHECK(cusparseLtMatmulGetWorkspace(handle_, &plan_, &workspace_));
  }

  void release() noexcept {  // statuses ignored: nothing useful can be done with a failed destroy
    if (plan_ok_) cusparseLtMatmulPlanDestroy(&plan_);
    if (alg_ok_) cusparseLtMatmulAlgSelectionDestroy(&alg_sel_);
    if (d_ok_) cusparseLtMatDescriptorDestroy(&d_);
    if (b_ok_) cusparseLtMatDescriptorDestroy(&b_);
    if (a_ok_) cusparseLtMatDescriptorDestroy(&a_);
    plan_ok_ = alg_ok_ = d_ok_ = b_ok_ = a_ok_ = false;
  }

  const cusparseLtHandle_t* handle_;
  at::Tensor bias_buffer_;
  cusparseLtMatDescriptor_t a_{}, b_{}, d_{};
  cusparseLtMatmulDescriptor_t matmul_{};
  cusparseLtMatmulAlgSelection_t alg_sel_{};
  cusparseLtMatmulPlan_t plan_{};
  size_t workspace_ = 0, compressed_bytes_ = 0;
  bool a_ok_ = false, b_ok_ = false, d_ok_ = false, alg_ok_ = false, plan_ok_ = false;
};

// Process-wide state, leaked on purpose: destroying cuSPARSELt objects during interpreter exit can
// run after the CUDA context is gone.
struct State {
  std::mutex mutex;
  std::map<c10::DeviceIndex, std::unique_ptr<cusparseLtHandle_t>> handles;
  std::map<PlanKey, std::shared_ptr<Plan>> plans;  // shared: clear_cache may run beside a call
  std::map<PlanKey, at::Tensor> bias_buffers;      // never cleared: captured graphs may read them
  int64_t hits = 0, misses = 0;
};

State& state() {
  static State* s = new State();
  return *s;
}

// Caller holds state().mutex and a CUDAGuard on `device`.
const cusparseLtHandle_t* handle_locked(c10::DeviceIndex device) {
  auto& handles = state().handles;
  auto it = handles.find(device);
  if (it == handles.end()) {
    auto h = std::make_unique<cusparseLtHandle_t>();
    CSLT_CHECK(cusparseLtInit(h.get()));
    it = handles.emplace(device, std::move(h)).first;
  }
  return it->second.get();
}

Problem problem_of(const at::Tensor& a, const at::Tensor& b, bool transpose_result,
                   const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda(), "cslt_plans: a and b must be CUDA tensors, got ", a.device(), " and ",
              b.device());
  TORCH_CHECK(a.device() == b.device(), "cslt_plans: a and b are on different devices: ", a.device(), " vs ",
              b.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "cslt_plans: a and b dtypes differ: ", a.scalar_type(), " vs ",
              b.scalar_type());
  cuda_type(b.scalar_type());
  TORCH_CHECK(a.dim() == 2 && a.is_contiguous(),
              "cslt_plans: the compressed a must be the contiguous (m, S) output of torch._cslt_compress, got shape ",
              a.sizes());
  TORCH_CHECK(b.dim() == 2, "cslt_plans: b must be 2-D (k, n), got ", b.dim(), "-D");
  const int64_t m = a.size(0), k = b.size(0), n = b.size(1);
  TORCH_CHECK(m > 0 && k > 0 && n > 0, "cslt_plans: empty operand: a ", a.sizes(), ", b ", b.sizes());
  const bool row_major = b.is_contiguous();
  TORCH_CHECK(row_major || b.t().is_contiguous(),
              "cslt_plans: b must be row-major or the transpose of a row-major tensor, got strides ", b.strides());
  TORCH_CHECK(reinterpret_cast<uintptr_t>(a.data_ptr()) % kAlignment == 0 &&
                  reinterpret_cast<uintptr_t>(b.data_ptr()) % kAlignment == 0,
              "cslt_plans: a and b data pointers must be ", kAlignment, "-byte aligned");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == m && bias->scalar_type() == a.scalar_type() &&
                    bias->device() == a.device(),
                "cslt_plans: bias must be a (", m, ",) ", a.scalar_type(), " tensor on ", a.device(), ", got ",
                bias->sizes(), " ", bias->scalar_type(), " on ", bias->device());
  }
  return {b.device().index(), m, k, n, b.scalar_type(), row_major, transpose_result, bias.has_value()};
}

// The fixed bias buffer of a plan key (caller holds state().mutex; undefined tensor when p has no bias).
at::Tensor bias_buffer_locked(const PlanKey& key, const Problem& p) {
  if (!p.bias) return at::Tensor();
  auto& buffers = state().bias_buffers;
  auto it = buffers.find(key);
  if (it == buffers.end()) {
    it = buffers.emplace(key, at::empty({p.m}, at::TensorOptions().dtype(p.dtype).device(at::kCUDA, p.device))).first;
  }
  return it->second;
}

at::Tensor empty_result(const at::Tensor& b, const Problem& p) {
  return p.transpose_result ? at::empty({p.n, p.m}, b.options()) : at::empty({p.m, p.n}, b.options());
}

at::Tensor sparse_mm(const at::Tensor& a, const at::Tensor& b, bool transpose_result, int64_t alg_id,
                     const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(alg_id >= 0 && alg_id <= INT32_MAX, "cslt_plans: alg_id must be a non-negative int, got ", alg_id);
  const Problem p = problem_of(a, b, transpose_result, bias);
  c10::cuda::CUDAGuard guard(p.device);
  std::shared_ptr<Plan> plan;
  {
    std::lock_guard<std::mutex> lock(state().mutex);
    auto& plans = state().plans;
    const PlanKey key = key_of(p, static_cast<int>(alg_id));
    auto it = plans.find(key);
    if (it != plans.end()) {
      ++state().hits;
    } else {
      ++state().misses;
      it = plans.emplace(key, std::make_shared<Plan>(handle_locked(p.device), p, static_cast<int>(alg_id),
                                                     bias_buffer_locked(key, p))).first;
    }
    plan = it->second;
  }
  at::Tensor d = empty_result(b, p);
  plan->run(a, b, bias, d, /*search=*/false);
  return d;
}

int64_t search(const at::Tensor& a, const at::Tensor& b, bool transpose_result) {
  const Problem p = problem_of(a, b, transpose_result, c10::nullopt);
  c10::cuda::CUDAGuard guard(p.device);
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              "cslt_plans: search times kernels and cannot run inside a CUDA-graph capture; search before capturing");
  std::unique_ptr<Plan> plan;
  {
    std::lock_guard<std::mutex> lock(state().mutex);
    plan = std::make_unique<Plan>(handle_locked(p.device), p, 0, at::Tensor());
  }
  at::Tensor d = empty_result(b, p);
  plan->run(a, b, c10::nullopt, d, /*search=*/true);
  return plan->alg_id();
}

py::dict cache_info() {
  std::lock_guard<std::mutex> lock(state().mutex);
  py::dict info;
  info["size"] = state().plans.size();
  info["hits"] = state().hits;
  info["misses"] = state().misses;
  info["handles"] = state().handles.size();
  info["bias_buffers"] = state().bias_buffers.size();
  return info;
}

void clear_cache() {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().plans.clear();  // work already enqueued does not need the host-side plan
  state().hits = state().misses = 0;
}

// Bytes of torch._cslt_compress's buffer for an (m, k) 2:4 matrix: lets Python refuse a mismatched
// operand before any call that would have to throw (a C++ exception out of this module crashed the
// H200 run, 2026-11-30; see cslt_ext.py).
int64_t compressed_bytes(int64_t m, int64_t k, bool bf16, int64_t device_index) {
  const auto device = static_cast<c10::DeviceIndex>(device_index);
  const at::ScalarType dtype = bf16 ? at::kBFloat16 : at::kHalf;
  c10::cuda::CUDAGuard guard(device);
  std::lock_guard<std::mutex> lock(state().mutex);
  const cusparseLtHandle_t* handle = handle_locked(device);
  cusparseLtMatDescriptor_t desc{};
  CSLT_CHECK(cusparseLtStructuredDescriptorInit(handle, &desc, m, k, k, kAlignment, cuda_type(dtype),
                                                CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT));
  size_t bytes = 0, buffer = 0;
  const cusparseStatus_t status = cusparseLtSpMMACompressedSize2(handle, &desc, &bytes, &buffer);
  cusparseLtMatDescriptorDestroy(&desc);
  CSLT_CHECK(status);
  return static_cast<int64_t>(bytes);
}

int64_t header_version() { return CUSPARSELT_VERSION; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cuSPARSELt 2:4 sparse GEMM with plans cached per shape/layout (same semantics as torch._cslt_sparse_mm)";
  m.def("sparse_mm", &sparse_mm, "compressed A @ B (+ bias per row of A @ B; or the transpose) with a cached plan",
        py::arg("a_compressed"), py::arg("b"), py::arg("transpose_result"), py::arg("alg_id"),
        py::arg("bias") = py::none());
  m.def("search", &search, "best cuSPARSELt algorithm id for this problem (cusparseLtMatmulSearch)",
        py::arg("a_compressed"), py::arg("b"), py::arg("transpose_result"));
  m.def("cache_info", &cache_info, "plan cache statistics: size, hits, misses, handles");
  m.def("clear_cache", &clear_cache, "drop every cached plan and reset the counters");
  m.def("compressed_bytes", &compressed_bytes, "bytes of torch._cslt_compress's buffer for an (m, k) 2:4 matrix",
        py::arg("m"), py::arg("k"), py::arg("bf16"), py::arg("device"));
  m.def("header_version", &header_version, "CUSPARSELT_VERSION of the header this module was built with");
}
