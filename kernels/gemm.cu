// vitcuda — the project GEMM (see gemm.h): cuBLASLt in the native build, the CPU reference GEMM in
// the emulation build, and the epilogue kernels that both builds share.
//
// The native path maps the row-major product onto cuBLASLt's column-major one: a row-major D[M, N]
// is a column-major Dᵀ[N, M] = op(B)ᵀ·op(A)ᵀ, so cuBLASLt's A is our B, its B is our A, m = N,
// n = M. A bias over our columns n is then cuBLASLt's per-row bias (length m), our DAct bias
// gradient (Σ over rows m) its DGELU_BGRAD (length m), and our BiasGradA (Σ_k op(A)[m, k]) its
// BGRADB (bias gradient of its B, length n).
#include "kernels/gemm.h"

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/dropout.h"  // dropout_params: the fused dropout of the epilogues
#include "kernels/vec.cuh"
// act_value / act_derivative_value: the activation formulas of the CPU reference, in both builds
// and on the host (the emulated cuBLASLt epilogue).
#include "kernels/activation.h"

#if defined(VITCUDA_EMU)
#include "kernels/emu/emu_blas.h"
#else
#include <cublasLt.h>

#include <array>
#include <map>
#include <mutex>
#endif

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
// The activation-backward reduction: blocks of 32 columns × kColsumRows threads, each block summing
// one chunk of rows. At most kColsumMaxChunks chunks, so the partials stay small (≤ 128·N floats,
// 1.5 MiB for N = 3072) while a ViT-B fc1 gradient (50432 × 3072) still runs 96 × 128 blocks,
// enough to keep every SM streaming at close to full HBM bandwidth.
constexpr int kColsumCols = 32;
constexpr int kColsumRows = 8;
constexpr int kColsumMaxChunks = 128;
constexpr int kColsumMinRowsPerChunk = 32;
constexpr int kElementwiseThreads = 256;
constexpr size_t kWorkspaceAlign = 256;

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// One thread per 16-byte chunk of a row (kVec = 8 bf16 or 4 fp32 columns from c0), grid.x over
// the column chunks and grid.y (with threadIdx.y) walking the rows: (row, column) without any
// division, 16-byte loads and stores when `vec` (N and ld multiples of kVec, every pointer 16-byte
// aligned), else the same chunk element by element. The rows loop (grid-stride in y).
// p = in[m, n] (+ bias[n]); with pre_out the rounded p is stored there and is what act sees (so
// backward differentiates at exactly the stored pre-activation); y = act(p) rounded to T, then,
// with kDrop, dropout of that stored value: keep(m·N + n) ? y·scale : 0, rounded to T — the bits
// of the separate dropout op over the [M, N] output (kernels/dropout.cu). in may alias pre_out or
// y.
// __launch_bounds__: at most 48 registers without dropout (5 CTAs of 256 threads, 40 warps per SM;
// the bf16 forms spill at 40), 64 with it (at least 4 CTAs; the bf16 GELU-tanh and tanh forms spill
// at 48). Unbounded, nvcc gave up to 44 and 48.
template <typename T, Act A, bool kDrop>
__global__ void __launch_bounds__(kElementwiseThreads, kDrop ? 4 : 5)
    bias_act_kernel(const T* in, const T* __restrict__ bias, T* pre_out, T* y, int M, int N, int64_t ld, bool vec,
                    DropoutParams drop) {
  constexpr int kVec = Vec16<T>::kVec;
  const int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * kVec;  // the launcher checks N + kVec·threads fits
  if (c0 >= N) return;
  const int valid = min(kVec, N - c0);
  float bv[kVec];
  VITCUDA_UNROLL
  for (int k = 0; k < kVec; ++k) bv[k] = 0.f;
  if (bias) {
    if (vec) {
      const Vec16<T> b = load_vec16(bias + c0);
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k) bv[k] = to_float(b.v[k]);
    } else {
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k)
        if (k < valid) bv[k] = to_float(bias[c0 + k]);
    }
  }
  uint64_t stream_id = 0;
  if constexpr (kDrop) stream_id = drop.stream_id();
  VITCUDA_NO_UNROLL
  for (int m = blockIdx.y * blockDim.y + threadIdx.y; m < M; m += gridDim.y * blockDim.y) {
    const int64_t at = static_cast<int64_t>(m) * ld + c0;
    Vec16<T> v;
    if (vec) {
      v = load_vec16(in + at);
    } else {
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k) v.v[k] = k < valid ? in[at + k] : from_float<T>(0.f);
    }
    uint32_t keep = 0;
    if constexpr (kDrop) keep = dropout_keep_bits<kVec>(drop, stream_id, static_cast<uint64_t>(m) * N + c0);
    Vec16<T> pv, yv;
    VITCUDA_UNROLL
    for (int k = 0; k < kVec; ++k) {
      float p = to_float(v.v[k]);
      if (bias) p += bv[k];  // not + 0.f without a bias: -0 stays -0, as in the reference
      pv.v[k] = from_float<T>(p);
      if (pre_out) p = to_float(pv.v[k]);
      yv.v[k] = from_float<T>(act_value<A>(p));
      if constexpr (kDrop)
        yv.v[k] = (keep >> k) & 1u ? from_float<T>(to_float(yv.v[k]) * drop.scale) : from_float<T>(0.f);
    }
    if (vec) {
      if (pre_out) store_vec16(pre_out + at, pv);
      store_vec16(y + at, yv);
    } else {
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k)
        if (k < valid) {
          if (pre_out) pre_out[at + k] = pv.v[k];
          y[at + k] = yv.v[k];
        }
    }
  }
}

// Block (32, 8): thread x covers the kVec columns c0 = (blockIdx.x·32 + x)·kVec .. + kVec (16-byte
// accesses when `vec`, as bias_act_kernel), thread y every 8th row of chunk blockIdx.y. Each
// thread walks its columns down the chunk: with kDrop, dz ← dropout(dz) (keep(r·N + c), rounded to
// T as the separate dropout op stores it); when A != None, dz ⊙= act'(pre) (rounded to T); the
// result is written back when either applies, and the stored values are summed in fp32. The 8
// partial sums of a column are added in row order through shared memory and written to
// partials[chunk][col]; a second kernel adds the chunks in order. No atomics: the result is bitwise
// reproducible.
// __launch_bounds__(256, 4): at most 64 registers (32 warps per SM, each thread with two 16-byte
// loads in flight); unbounded, the activation forms took 58-72 (3 CTAs).
template <typename T, Act A, bool kDrop>
__global__ void __launch_bounds__(kColsumCols* kColsumRows, 4)
    act_backward_colsum_kernel(T* dz, const T* __restrict__ pre, int M, int N, int64_t ld, int rows_per_chunk,
                               float* __restrict__ partials, bool vec, DropoutParams drop) {
  constexpr int kVec = Vec16<T>::kVec;
  constexpr bool kWrite = A != Act::None || kDrop;
  __shared__ float part[kColsumRows][kVec][kColsumCols];  // [row][k][x]: conflict-free
  const int c0 = (blockIdx.x * kColsumCols + threadIdx.x) * kVec;
  const int valid = min(kVec, N - c0);  // <= 0: no column of this thread
  const int row0 = blockIdx.y * rows_per_chunk;
  const int row1 = min(M, row0 + rows_per_chunk);
  uint64_t stream_id = 0;
  if constexpr (kDrop) stream_id = drop.stream_id();
  float sum[kVec];
  VITCUDA_UNROLL
  for (int k = 0; k < kVec; ++k) sum[k] = 0.f;
  if (valid > 0) {
    VITCUDA_NO_UNROLL
    for (int r = row0 + threadIdx.y; r < row1; r += kColsumRows) {
      const int64_t at = static_cast<int64_t>(r) * ld + c0;
      Vec16<T> v, pv;
      if (vec) {
        v = load_vec16(dz + at);
        if constexpr (A != Act::None) pv = load_vec16(pre + at);
      } else {
        VITCUDA_UNROLL
        for (int k = 0; k < kVec; ++k) {
          v.v[k] = k < valid ? dz[at + k] : from_float<T>(0.f);
          if constexpr (A != Act::None) pv.v[k] = k < valid ? pre[at + k] : from_float<T>(0.f);
        }
      }
      if constexpr (kWrite) {
        uint32_t keep = 0;
        if constexpr (kDrop) keep = dropout_keep_bits<kVec>(drop, stream_id, static_cast<uint64_t>(r) * N + c0);
        VITCUDA_UNROLL
        for (int k = 0; k < kVec; ++k) {
          float g = to_float(v.v[k]);
          if constexpr (kDrop) g = (keep >> k) & 1u ? to_float(from_float<T>(g * drop.scale)) : 0.f;
          if constexpr (A != Act::None) g *= act_derivative_value<A>(to_float(pv.v[k]));
          v.v[k] = from_float<T>(g);
        }
        if (vec) {
          store_vec16(dz + at, v);
        } else {
          VITCUDA_UNROLL
          for (int k = 0; k < kVec; ++k)
            if (k < valid) dz[at + k] = v.v[k];
        }
      }
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k) sum[k] += to_float(v.v[k]);
    }
  }
  if (partials == nullptr) return;  // uniform over the block: no barrier is skipped by some
  VITCUDA_UNROLL
  for (int k = 0; k < kVec; ++k) part[threadIdx.y][k][threadIdx.x] = sum[k];
  __syncthreads();
  if (threadIdx.y == 0 && valid > 0) {
    VITCUDA_UNROLL
    for (int k = 0; k < kVec; ++k) {
      float s = 0.f;
      VITCUDA_UNROLL
      for (int j = 0; j < kColsumRows; ++j) s += part[j][k][threadIdx.x];
      if (k < valid) partials[static_cast<size_t>(blockIdx.y) * N + c0 + k] = s;
    }
  }
}

// bias_grad[n] += Σ_c partials[c][n], chunks in order.
template <typename TG>
__global__ void bias_grad_accumulate_kernel(const float* __restrict__ partials, int chunks, int N,
                                            TG* __restrict__ bias_grad) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float s = 0.f;
  for (int c = 0; c < chunks; ++c) s += partials[static_cast<size_t>(c) * N + n];
  bias_grad[n] = from_float<TG>(to_float(bias_grad[n]) + s);
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

size_t type_size(GemmType t) { return t == GemmType::F32 ? 4 : 2; }

int colsum_rows_per_chunk(int M) { return std::max(kColsumMinRowsPerChunk, ceil_div(M, kColsumMaxChunks)); }
int colsum_chunks(int M) { return std::max(1, ceil_div(M, colsum_rows_per_chunk(M))); }

// 16-byte accesses for the [M, N] matrix with leading dimension ld at these pointers?
template <typename T>
bool vec16_ok(int N, int64_t ld, std::initializer_list<const void*> ptrs) {
  constexpr int kVec = Vec16<T>::kVec;
  if (N % kVec != 0 || ld % kVec != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned_to(p, 16)) return false;
  return true;
}

void check_int_columns(const char* op, int N) {
  // c0 = (block·threads + thread)·kVec must stay an int: N plus one block of columns.
  if (N > INT_MAX - kElementwiseThreads * 8)
    throw Error(std::string(op) + ": N is too large for 32-bit column indices");
}

template <typename T, Act A>
void launch_bias_act_as(const T* in, const T* bias, T* pre_out, T* y, int M, int N, int64_t ld, const DropoutSpec& drop,
                        rt::Stream stream) {
  constexpr int kVec = Vec16<T>::kVec;
  check_int_columns("bias_act", N);
  const bool vec = vec16_ok<T>(N, ld, {in, bias, pre_out, y});
  // threads.x over the row's chunks (a multiple of 32, at most 256), blocks over the rest of the row;
  // narrow rows stack rows in threads.y so a block stays 256 threads (a 32-thread block would cap
  // an SM at 32 warps: 32 blocks). grid.y takes enough rows for ~16 blocks per SM of a 132-SM H100,
  // at most 65535 (CUDA's limit), each block walking its rows with stride grid.y·threads.y.
  const int chunks = ceil_div(N, kVec);
  const int tx = std::min(kElementwiseThreads, ceil_div(chunks, 32) * 32);
  const int ty = kElementwiseThreads / tx;
  const int grid_x = ceil_div(chunks, tx);
  const int grid_y = std::max(1, std::min({ceil_div(M, ty), 65535, ceil_div(132 * 16, grid_x) * 4}));
  const dim3 grid(grid_x, grid_y), block(tx, ty);
  const DropoutParams d = drop.active() ? dropout_params(drop) : DropoutParams{};
  if (drop.active())
    launch(bias_act_kernel<T, A, true>, grid, block, 0, stream, in, bias, pre_out, y, M, N, ld, vec, d);
  else
    launch(bias_act_kernel<T, A, false>, grid, block, 0, stream, in, bias, pre_out, y, M, N, ld, vec, d);
}

// y = dropout(act(in + bias)) over [M, N] (dropout when drop is active).
template <typename T>
void launch_bias_act(const T* in, const T* bias, T* pre_out, T* y, Act act, int M, int N, int64_t ld,
                     const DropoutSpec& drop, rt::Stream stream) {
  if (M == 0 || N == 0) return;
  switch (act) {
    case Act::None: launch_bias_act_as<T, Act::None>(in, bias, pre_out, y, M, N, ld, drop, stream); break;
    case Act::GeluErf: launch_bias_act_as<T, Act::GeluErf>(in, bias, pre_out, y, M, N, ld, drop, stream); break;
    case Act::GeluTanh: launch_bias_act_as<T, Act::GeluTanh>(in, bias, pre_out, y, M, N, ld, drop, stream); break;
    case Act::Tanh: launch_bias_act_as<T, Act::Tanh>(in, bias, pre_out, y, M, N, ld, drop, stream); break;
  }
}

template <typename T, Act A>
void launch_colsum_as(T* dz, const T* pre, int M, int N, int64_t ld, float* out, const DropoutSpec& drop,
                      rt::Stream stream) {
  constexpr int kVec = Vec16<T>::kVec;
  check_int_columns("act_backward", N);
  const bool vec = vec16_ok<T>(N, ld, {dz, A == Act::None ? nullptr : pre});
  const int rpc = colsum_rows_per_chunk(M), chunks = colsum_chunks(M);
  const dim3 grid(ceil_div(N, kColsumCols * kVec), chunks), block(kColsumCols, kColsumRows);
  const DropoutParams d = drop.active() ? dropout_params(drop) : DropoutParams{};
  if (drop.active())
    launch(act_backward_colsum_kernel<T, A, true>, grid, block, 0, stream, dz, pre, M, N, ld, rpc, out, vec, d);
  else
    launch(act_backward_colsum_kernel<T, A, false>, grid, block, 0, stream, dz, pre, M, N, ld, rpc, out, vec, d);
}

// dz ← dropout(dz) (drop active), dz ⊙= act'(pre) (act != None), and/or the column sums of dz into
// bias_grad (when given); the partials go to `partials` (colsum_chunks(M)·N floats).
template <typename T, typename TG>
void launch_act_backward(T* dz, const T* pre, Act act, int M, int N, int64_t ld, TG* bias_grad, float* partials,
                         rt::Stream stream, const DropoutSpec& drop = DropoutSpec{}) {
  if (act == Act::None && !drop.active() && !bias_grad) return;
  if (M == 0 || N == 0) return;
  float* out = bias_grad ? partials : nullptr;
  switch (act) {
    case Act::None: launch_colsum_as<T, Act::None>(dz, pre, M, N, ld, out, drop, stream); break;
    case Act::GeluErf: launch_colsum_as<T, Act::GeluErf>(dz, pre, M, N, ld, out, drop, stream); break;
    case Act::GeluTanh: launch_colsum_as<T, Act::GeluTanh>(dz, pre, M, N, ld, out, drop, stream); break;
    case Act::Tanh: launch_colsum_as<T, Act::Tanh>(dz, pre, M, N, ld, out, drop, stream); break;
  }
  if (bias_grad) {
    launch(bias_grad_accumulate_kernel<TG>, dim3(ceil_div(N, 256)), dim3(256), 0, stream,
           static_cast<const float*>(partials), colsum_chunks(M), N, bias_grad);
  }
}

// bias_grad (typed by `type`) += partials summed over `chunks`.
void launch_bias_grad_accumulate(const float* partials, int chunks, int N, void* bias_grad, GemmType type,
                                 rt::Stream stream) {
  if (type == GemmType::F32)
    launch(bias_grad_accumulate_kernel<float>, dim3(ceil_div(N, 256)), dim3(256), 0, stream, partials, chunks, N,
           static_cast<float*>(bias_grad));
  else
    launch(bias_grad_accumulate_kernel<__nv_bfloat16>, dim3(ceil_div(N, 256)), dim3(256), 0, stream, partials, chunks,
           N, static_cast<__nv_bfloat16*>(bias_grad));
}

// ---- the matrix product itself -------------------------------------------------------------
enum class LtEpilogue : uint8_t { Default, Bias, GeluAuxBias, DGelu, DGeluBgrad, BgradB };

// One cuBLASLt call (or its CPU stand-in): D = alpha·op(A)op(B) + beta·D with `epi`. `d`, `bias`,
// `aux`, `bgrad` override the GemmArgs pointers; bgrad is fp32 (length N for DGeluBgrad, M for
// BgradB) and is OVERWRITTEN.
struct LtCall {
  LtEpilogue epi = LtEpilogue::Default;
  void* d = nullptr;
  const void* bias = nullptr;
  void* aux = nullptr;
  float* bgrad = nullptr;
};

#if defined(VITCUDA_EMU)

std::vector<float> to_float_matrix(const void* p, GemmType t, int rows, int cols, int64_t ld) {
  const size_t n = rows == 0 ? 0 : static_cast<size_t>(rows - 1) * ld + cols;
  std::vector<float> out(n, 0.f);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r) * ld + c;
      out[i] = t == GemmType::F32 ? static_cast<const float*>(p)[i]
                                  : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    }
  return out;
}
float load(const void* p, GemmType t, size_t i) {
  return t == GemmType::F32 ? static_cast<const float*>(p)[i]
                            : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
void store(void* p, GemmType t, size_t i, float v) {
  if (t == GemmType::F32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
}

// The emulated cuBLASLt: fp32 products through the CPU reference GEMM (OpenBLAS), then the
// epilogue with cuBLASLt's documented math, rounding once to D's type.
void emulated_lt_matmul(const GemmArgs& a, const LtCall& call);
bool lt_matmul(const GemmArgs& a, const LtCall& call, rt::Stream stream) {
  rt::refuse_other_stream_while_capturing(stream, "gemm (cublasLtMatmul)");
  rt::note_gemm(a.M, a.N, a.K, a.batch);
  if (emu::capturing(stream)) {  // a graph node: the arguments are copied, the matmul runs at replay
    emu::capture_node([a, call] {
      if (!rt::dry_run()) emulated_lt_matmul(a, call);
    });
    return true;
  }
  if (!rt::dry_run()) emulated_lt_matmul(a, call);
  return true;
}
void emulated_lt_matmul(const GemmArgs& a, const LtCall& call) {
  const int a_rows = a.trans_a ? a.K : a.M, a_cols = a.trans_a ? a.M : a.K;
  const int b_rows = a.trans_b ? a.N : a.K, b_cols = a.trans_b ? a.K : a.N;
  const GemmType dt = a.d_type;
  std::vector<float> acc(static_cast<size_t>(a.M) * a.N);
  for (int batch = 0; batch < a.batch; ++batch) {
    const size_t ea = type_size(a.ab_type);
    const auto* A = static_cast<const unsigned char*>(a.A) + batch * a.stride_a * ea;
    const auto* B = static_cast<const unsigned char*>(a.B) + batch * a.stride_b * ea;
    void* D = static_cast<unsigned char*>(call.d) + batch * a.stride_d * type_size(dt);
    const std::vector<float> Af = to_float_matrix(A, a.ab_type, a_rows, a_cols, a.lda);
    const std::vector<float> Bf = to_float_matrix(B, a.ab_type, b_rows, b_cols, a.ldb);
    emu::sgemm(a.trans_a, a.trans_b, a.M, a.N, a.K, a.alpha, Af.data(), a.lda, Bf.data(), a.ldb, 0.f, acc.data(), a.N);
    if (call.epi == LtEpilogue::BgradB) {
      for (int m = 0; m < a.M; ++m) {
        float s = 0.f;
        for (int k = 0; k < a.K; ++k)
          s += a.trans_a ? Af[static_cast<size_t>(k) * a.lda + m] : Af[static_cast<size_t>(m) * a.lda + k];
        call.bgrad[m] = s;
      }
    }
    if (call.epi == LtEpilogue::DGeluBgrad) std::fill(call.bgrad, call.bgrad + a.N, 0.f);
    for (int m = 0; m < a.M; ++m) {
      for (int n = 0; n < a.N; ++n) {
        const size_t at = static_cast<size_t>(m) * a.ldd + n;
        float v = acc[static_cast<size_t>(m) * a.N + n];
        if (a.beta != 0.f) v += a.beta * load(D, dt, at);
        switch (call.epi) {
          case LtEpilogue::Default:
          case LtEpilogue::BgradB: break;
          case LtEpilogue::Bias: v += load(call.bias, dt, n); break;
          case LtEpilogue::GeluAuxBias:
            if (call.bias) v += load(call.bias, dt, n);
            store(call.aux, dt, at, v);
            v = act_value<Act::GeluTanh>(v);
            break;
          case LtEpilogue::DGelu:
          case LtEpilogue::DGeluBgrad:
            v *= act_derivative_value<Act::GeluTanh>(load(call.aux, dt, at));
            if (call.epi == LtEpilogue::DGeluBgrad) call.bgrad[n] += v;
            break;
        }
        store(D, dt, at, v);
      }
    }
  }
}

#else  // native: cuBLASLt

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("gemm: cuBLASLt ") + what + " failed: " + cublasLtGetStatusName(s) + " (" +
                cublasLtGetStatusString(s) + ")");
}

// One handle per device, created on first use and kept for the life of the process.
cublasLtHandle_t lt_handle(int device) {
  static std::mutex mu;
  static std::map<int, cublasLtHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  check_lt(cublasLtCreate(&h), "cublasLtCreate");
  handles[device] = h;
  return h;
}

struct LtOp {
  cublasLtMatmulDesc_t d = nullptr;
  ~LtOp() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& v) {
    check_lt(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), "cublasLtMatmulDescSetAttribute");
  }
};
struct LtLayout {
  cublasLtMatrixLayout_t d = nullptr;
  LtLayout(cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld, int batch, int64_t stride) {
    check_lt(cublasLtMatrixLayoutCreate(&d, t, rows, cols, ld), "cublasLtMatrixLayoutCreate");
    if (batch > 1) {
      check_lt(cublasLtMatrixLayoutSetAttribute(d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
               "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
      check_lt(
          cublasLtMatrixLayoutSetAttribute(d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
    }
  }
  ~LtLayout() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct LtPref {
  cublasLtMatmulPreference_t d = nullptr;
  LtPref() { check_lt(cublasLtMatmulPreferenceCreate(&d), "cublasLtMatmulPreferenceCreate"); }
  ~LtPref() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const V& v) {
    check_lt(cublasLtMatmulPreferenceSetAttribute(d, attr, &v, sizeof(v)), "cublasLtMatmulPreferenceSetAttribute");
  }
};

cudaDataType cuda_type(GemmType t) { return t == GemmType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

// Largest power of two (<= 256) dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned operands unless told otherwise, and picks vectorised kernels that fault on less.
uint32_t alignment_of(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

// The heuristic's answer per problem (shape, layout, types, epilogue, alignments, workspace):
// a query costs tens of µs, a ViT step makes ~100 GEMM calls of ~10 distinct shapes.
struct AlgoEntry {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
};
using AlgoKey = std::array<int64_t, 24>;

bool lt_matmul(const GemmArgs& a, const LtCall& call, rt::Stream stream) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) throw Error("gemm: cudaGetDevice failed");
  cublasLtHandle_t handle = lt_handle(device);

  LtOp op;
  check_lt(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  // cuBLASLt's A is our B and vice versa (see the top of this file).
  op.set(CUBLASLT_MATMUL_DESC_TRANSA, a.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  op.set(CUBLASLT_MATMUL_DESC_TRANSB, a.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  switch (call.epi) {
    case LtEpilogue::Default: epi = CUBLASLT_EPILOGUE_DEFAULT; break;
    case LtEpilogue::Bias: epi = CUBLASLT_EPILOGUE_BIAS; break;
    case LtEpilogue::GeluAuxBias: epi = call.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX; break;
    case LtEpilogue::DGelu: epi = CUBLASLT_EPILOGUE_DGELU; break;
    case LtEpilogue::DGeluBgrad: epi = CUBLASLT_EPILOGUE_DGELU_BGRAD; break;
    case LtEpilogue::BgradB: epi = CUBLASLT_EPILOGUE_BGRADB; break;
  }
  op.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epi);
  const void* bias_ptr = call.bias;
  if (call.bgrad) {
    bias_ptr = call.bgrad;
    op.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_32F);  // fp32 bias gradients
  }
  if (bias_ptr) op.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias_ptr);
  if (call.aux) {
    op.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(call.aux));
    op.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, a.ldd);
  }

  const cudaDataType ab = cuda_type(a.ab_type), dt = cuda_type(a.d_type);
  const LtLayout la(ab, a.trans_b ? a.K : a.N, a.trans_b ? a.N : a.K, a.ldb, a.batch, a.stride_b);
  const LtLayout lb(ab, a.trans_a ? a.M : a.K, a.trans_a ? a.K : a.M, a.lda, a.batch, a.stride_a);
  const LtLayout ld(dt, a.N, a.M, a.ldd, a.batch, a.stride_d);

  // Scratch for the bias-gradient partials sits at the front of the workspace; cuBLASLt gets the
  // rest (the caller checked it holds at least kGemmLtWorkspaceBytes).
  const size_t scratch = align_up(gemm_workspace_bytes(a) - kGemmLtWorkspaceBytes, kWorkspaceAlign);
  void* lt_ws = static_cast<unsigned char*>(a.workspace) + scratch;
  const uint64_t lt_ws_bytes = a.workspace_bytes - scratch;

  const uint32_t align_a = alignment_of(a.B), align_b = alignment_of(a.A), align_d = alignment_of(call.d);
  const AlgoKey key{a.trans_a,
                    a.trans_b,
                    a.M,
                    a.N,
                    a.K,
                    static_cast<int64_t>(a.ab_type),
                    static_cast<int64_t>(a.d_type),
                    a.lda,
                    a.ldb,
                    a.ldd,
                    a.batch,
                    a.stride_a,
                    a.stride_b,
                    a.stride_d,
                    static_cast<int64_t>(epi),
                    call.bgrad != nullptr,
                    a.beta != 0.f,
                    align_a,
                    align_b,
                    align_d,
                    call.aux ? static_cast<int64_t>(alignment_of(call.aux)) : 0,
                    static_cast<int64_t>(lt_ws_bytes),
                    device,
                    0};
  static std::mutex cache_mu;
  static std::map<AlgoKey, AlgoEntry> cache;
  AlgoEntry entry;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      entry = it->second;
      cached = true;
    }
  }
  if (!cached) {
    LtPref pref;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, lt_ws_bytes);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(handle, op.d, la.d, lb.d, ld.d, ld.d, pref.d, 1, &result, &count);
    entry.found = s == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (entry.found) entry.algo = result.algo;
    std::lock_guard<std::mutex> lock(cache_mu);
    cache[key] = entry;
  }
  if (!entry.found) return false;
  const float alpha = a.alpha, beta = a.beta;
  rt::note_gemm(a.M, a.N, a.K, a.batch);
  check_lt(cublasLtMatmul(handle, op.d, &alpha, a.B, la.d, a.A, lb.d, &beta, call.d, ld.d, call.d, ld.d, &entry.algo,
                          lt_ws, lt_ws_bytes, reinterpret_cast<cudaStream_t>(stream)),
           "cublasLtMatmul");
  return true;
}

#endif

void plain_matmul(const GemmArgs& a, void* d, const void* bias, rt::Stream stream) {
  LtCall call;
  call.epi = bias ? LtEpilogue::Bias : LtEpilogue::Default;
  call.d = d;
  call.bias = bias;
  if (lt_matmul(a, call, stream)) return;
  if (bias) {  // cuBLASLt refused the bias epilogue: plain product, then the bias kernel
    call.epi = LtEpilogue::Default;
    call.bias = nullptr;
    if (lt_matmul(a, call, stream)) {
      if (a.d_type == GemmType::F32)
        launch_bias_act<float>(static_cast<float*>(d), static_cast<const float*>(bias), nullptr, static_cast<float*>(d),
                               Act::None, a.M, a.N, a.ldd, DropoutSpec{}, stream);
      else
        launch_bias_act<__nv_bfloat16>(static_cast<__nv_bfloat16*>(d), static_cast<const __nv_bfloat16*>(bias), nullptr,
                                       static_cast<__nv_bfloat16*>(d), Act::None, a.M, a.N, a.ldd, DropoutSpec{},
                                       stream);
      return;
    }
  }
  throw Error("gemm: cuBLASLt has no algorithm for M=" + std::to_string(a.M) + " N=" + std::to_string(a.N) +
              " K=" + std::to_string(a.K) + " with these leading dimensions and alignments");
}

[[noreturn]] void fail(const std::string& what) { throw Error("gemm: " + what); }

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

void validate(const GemmArgs& a) {
  if (a.M <= 0 || a.N <= 0 || a.K <= 0)
    fail("M, N and K must be positive (got M=" + std::to_string(a.M) + ", N=" + std::to_string(a.N) +
         ", K=" + std::to_string(a.K) + ")");
  if (a.ab_type == GemmType::F32 && a.d_type == GemmType::BF16)
    fail("d_type BF16 needs ab_type BF16 (fp32 inputs give fp32 outputs)");
  if (!a.A) fail("A is null");
  if (!a.B) fail("B is null");
  if (!a.D) fail("D is null");
  const size_t e = type_size(a.ab_type), ed = type_size(a.d_type);
  if (!aligned(a.A, e)) fail("A is not aligned to its element size");
  if (!aligned(a.B, e)) fail("B is not aligned to its element size");
  if (!aligned(a.D, ed)) fail("D is not aligned to its element size");
  const int64_t min_lda = a.trans_a ? a.M : a.K, min_ldb = a.trans_b ? a.K : a.N;
  if (a.lda < min_lda) fail("lda=" + std::to_string(a.lda) + " is less than " + std::to_string(min_lda));
  if (a.ldb < min_ldb) fail("ldb=" + std::to_string(a.ldb) + " is less than " + std::to_string(min_ldb));
  if (a.ldd < a.N) fail("ldd=" + std::to_string(a.ldd) + " is less than N=" + std::to_string(a.N));
  if (a.batch < 1) fail("batch must be >= 1 (got " + std::to_string(a.batch) + ")");
  if (a.batch > 1 && a.epilogue != GemmEpilogue::None) fail("batch > 1 is supported with epilogue None only");
  if (a.bias && !aligned(a.bias, ed)) fail("bias is not aligned to its element size");
  if (a.aux && !aligned(a.aux, ed)) fail("aux is not aligned to its element size");
  if (!(a.drop.p >= 0.f && a.drop.p < 1.f)) fail("drop.p must lie in [0, 1)");
  if (a.drop.active() && (a.epilogue != GemmEpilogue::BiasAct || a.batch != 1))
    fail("dropout (drop) is an epilogue of BiasAct, unbatched");
  switch (a.epilogue) {
    case GemmEpilogue::None:
      if (a.act != Act::None) fail("epilogue None takes act None (use BiasAct)");
      break;
    case GemmEpilogue::BiasAct:
      if (a.beta != 0.f) fail("epilogue BiasAct needs beta = 0");
      if (a.act != Act::None && !a.aux)
        fail(std::string("aux (the pre-activation output) is null with act ") + act_name(a.act));
      break;
    case GemmEpilogue::DAct:
      if (a.beta != 0.f) fail("epilogue DAct needs beta = 0");
      if (a.act != Act::None && !a.aux)
        fail(std::string("aux (the forward pre-activation) is null with act ") + act_name(a.act));
      if (a.bias) fail("epilogue DAct takes no bias (bias_grad is its output)");
      break;
    case GemmEpilogue::BiasGradA:
      if (!a.trans_a) fail("epilogue BiasGradA needs trans_a (op(A) = dYᵀ of a weight gradient)");
      if (!a.bias_grad) fail("bias_grad is null with epilogue BiasGradA");
      if (a.bias) fail("epilogue BiasGradA takes no bias");
      break;
  }
  if (a.bias_grad && a.epilogue != GemmEpilogue::DAct && a.epilogue != GemmEpilogue::BiasGradA)
    fail("bias_grad is given but the epilogue is neither DAct nor BiasGradA");
  if (a.bias_grad && !aligned(a.bias_grad, type_size(a.bias_grad_type)))
    fail("bias_grad is not aligned to its element size");
  const size_t need = gemm_workspace_bytes(a);
  if (!a.workspace) fail("workspace is null (" + std::to_string(need) + " bytes needed)");
  if (!aligned(a.workspace, kWorkspaceAlign)) fail("workspace is not 256-byte aligned");
  if (a.workspace_bytes < need)
    fail("workspace_bytes=" + std::to_string(a.workspace_bytes) + " is less than the " + std::to_string(need) +
         " bytes needed (gemm_workspace_bytes)");
}

}  // namespace

size_t gemm_workspace_bytes(const GemmArgs& a) {
  size_t scratch = 0;
  if (a.epilogue == GemmEpilogue::DAct && a.bias_grad)
    scratch = act_backward_workspace_bytes(std::max(a.M, 1), std::max(a.N, 1));
  else if (a.epilogue == GemmEpilogue::BiasGradA)  // column sums over stored A: [K rows, M cols]
    scratch = act_backward_workspace_bytes(std::max(a.K, 1), std::max(a.M, 1));
  return align_up(scratch, kWorkspaceAlign) + kGemmLtWorkspaceBytes;
}

size_t act_backward_workspace_bytes(int M, int N) {
  if (M <= 0 || N <= 0) return 0;
  return align_up(static_cast<size_t>(colsum_chunks(M)) * N * sizeof(float), kWorkspaceAlign);
}

void gemm(const GemmArgs& a, rt::Stream stream) {
  validate(a);
  float* scratch = static_cast<float*>(a.workspace);
  const bool bf16 = a.d_type == GemmType::BF16;
  switch (a.epilogue) {
    case GemmEpilogue::None: plain_matmul(a, a.D, a.bias, stream); return;

    case GemmEpilogue::BiasAct: {
      // The dropout pass alone, in place on D, when the activation did not run as our kernel.
      auto dropout_d = [&] {
        if (!a.drop.active()) return;
        if (bf16)
          launch_bias_act<__nv_bfloat16>(static_cast<__nv_bfloat16*>(a.D), nullptr, nullptr,
                                         static_cast<__nv_bfloat16*>(a.D), Act::None, a.M, a.N, a.ldd, a.drop, stream);
        else
          launch_bias_act<float>(static_cast<float*>(a.D), nullptr, nullptr, static_cast<float*>(a.D), Act::None, a.M,
                                 a.N, a.ldd, a.drop, stream);
      };
      if (a.act == Act::None) {
        plain_matmul(a, a.D, a.bias, stream);
        dropout_d();
        return;
      }
      // cuBLASLt's GELU_AUX epilogues need the aux leading dimension to be a multiple of 8 and
      // a 16-byte aligned aux buffer.
      if (a.act == Act::GeluTanh && a.fuse_epilogue && a.ldd % 8 == 0 && aligned(a.aux, 16)) {
        LtCall call;
        call.epi = LtEpilogue::GeluAuxBias;
        call.d = a.D;
        call.bias = a.bias;
        call.aux = a.aux;
        if (lt_matmul(a, call, stream)) {
          dropout_d();
          return;
        }
      }
      plain_matmul(a, a.aux, a.bias, stream);  // aux = pre-activation
      if (bf16)
        launch_bias_act<__nv_bfloat16>(static_cast<const __nv_bfloat16*>(a.aux), nullptr, nullptr,
                                       static_cast<__nv_bfloat16*>(a.D), a.act, a.M, a.N, a.ldd, a.drop, stream);
      else
        launch_bias_act<float>(static_cast<const float*>(a.aux), nullptr, nullptr, static_cast<float*>(a.D), a.act, a.M,
                               a.N, a.ldd, a.drop, stream);
      return;
    }

    case GemmEpilogue::DAct: {
      if (a.act == Act::GeluTanh && a.fuse_epilogue && a.ldd % 8 == 0 && aligned(a.aux, 16)) {
        LtCall call;
        call.epi = a.bias_grad ? LtEpilogue::DGeluBgrad : LtEpilogue::DGelu;
        call.d = a.D;
        call.aux = a.aux;
        call.bgrad = a.bias_grad ? scratch : nullptr;
        if (lt_matmul(a, call, stream)) {
          if (a.bias_grad) launch_bias_grad_accumulate(scratch, 1, a.N, a.bias_grad, a.bias_grad_type, stream);
          return;
        }
      }
      plain_matmul(a, a.D, nullptr, stream);
      if (bf16) {
        auto* d = static_cast<__nv_bfloat16*>(a.D);
        auto* pre = static_cast<const __nv_bfloat16*>(a.aux);
        if (a.bias_grad_type == GemmType::F32)
          launch_act_backward(d, pre, a.act, a.M, a.N, a.ldd, static_cast<float*>(a.bias_grad), scratch, stream);
        else
          launch_act_backward(d, pre, a.act, a.M, a.N, a.ldd, static_cast<__nv_bfloat16*>(a.bias_grad), scratch,
                              stream);
      } else {
        if (a.bias_grad_type != GemmType::F32) fail("bias_grad_type BF16 needs d_type BF16");
        launch_act_backward(static_cast<float*>(a.D), static_cast<const float*>(a.aux), a.act, a.M, a.N, a.ldd,
                            static_cast<float*>(a.bias_grad), scratch, stream);
      }
      return;
    }

    case GemmEpilogue::BiasGradA: {
      if (a.fuse_epilogue) {
        LtCall call;
        call.epi = LtEpilogue::BgradB;
        call.d = a.D;
        call.bgrad = scratch;
        if (lt_matmul(a, call, stream)) {
          launch_bias_grad_accumulate(scratch, 1, a.M, a.bias_grad, a.bias_grad_type, stream);
          return;
        }
      }
      plain_matmul(a, a.D, nullptr, stream);
      // op(A) = Aᵀ with A stored [K, M]: Σ_k op(A)[m, k] is the column sum of the stored A.
      // launch_act_backward with act None only reads A (const_cast is safe: nothing is written).
      if (a.ab_type == GemmType::BF16) {
        auto* A = const_cast<__nv_bfloat16*>(static_cast<const __nv_bfloat16*>(a.A));
        if (a.bias_grad_type == GemmType::F32)
          launch_act_backward(A, static_cast<const __nv_bfloat16*>(nullptr), Act::None, a.K, a.M, a.lda,
                              static_cast<float*>(a.bias_grad), scratch, stream);
        else
          launch_act_backward(A, static_cast<const __nv_bfloat16*>(nullptr), Act::None, a.K, a.M, a.lda,
                              static_cast<__nv_bfloat16*>(a.bias_grad), scratch, stream);
      } else {
        auto* A = const_cast<float*>(static_cast<const float*>(a.A));
        if (a.bias_grad_type == GemmType::F32)
          launch_act_backward(A, static_cast<const float*>(nullptr), Act::None, a.K, a.M, a.lda,
                              static_cast<float*>(a.bias_grad), scratch, stream);
        else
          fail("bias_grad_type BF16 needs ab_type BF16");
      }
      return;
    }
  }
}

template <typename T>
void act_forward(const T* pre, T* y, Act act, int M, int N, int64_t ld, rt::Stream stream, const DropoutSpec& drop) {
  if (M < 0 || N < 0) throw Error("act_forward: M and N must be >= 0");
  if (M == 0 || N == 0) return;
  if (!pre) throw Error("act_forward: pre is null");
  if (!y) throw Error("act_forward: y is null");
  if (ld < N) throw Error("act_forward: ld is less than N");
  if (!(drop.p >= 0.f && drop.p < 1.f)) throw Error("act_forward: dropout p must lie in [0, 1)");
  launch_bias_act<T>(pre, nullptr, nullptr, y, act, M, N, ld, drop, stream);
}

template <typename T, typename TG>
void act_backward(T* dz, const T* pre, Act act, int M, int N, int64_t ld, TG* bias_grad, void* workspace,
                  size_t workspace_bytes, rt::Stream stream, const DropoutSpec& drop) {
  if (M < 0 || N < 0) throw Error("act_backward: M and N must be >= 0");
  if (M == 0 || N == 0) return;
  if (!dz) throw Error("act_backward: dz is null");
  if (act != Act::None && !pre) throw Error("act_backward: pre is null");
  if (ld < N) throw Error("act_backward: ld is less than N");
  if (bias_grad) {
    const size_t need = act_backward_workspace_bytes(M, N);
    if (!workspace) throw Error("act_backward: workspace is null (" + std::to_string(need) + " bytes needed)");
    if (workspace_bytes < need)
      throw Error("act_backward: workspace_bytes=" + std::to_string(workspace_bytes) + " is less than the " +
                  std::to_string(need) + " bytes needed");
    if (!aligned(workspace, alignof(float))) throw Error("act_backward: workspace is misaligned");
  }
  if (!(drop.p >= 0.f && drop.p < 1.f)) throw Error("act_backward: dropout p must lie in [0, 1)");
  launch_act_backward<T, TG>(dz, pre, act, M, N, ld, bias_grad, static_cast<float*>(workspace), stream, drop);
}

template void act_forward<float>(const float*, float*, Act, int, int, int64_t, rt::Stream, const DropoutSpec&);
template void act_forward<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, Act, int, int, int64_t, rt::Stream,
                                         const DropoutSpec&);
template void act_backward<float, float>(float*, const float*, Act, int, int, int64_t, float*, void*, size_t,
                                         rt::Stream, const DropoutSpec&);
template void act_backward<__nv_bfloat16, float>(__nv_bfloat16*, const __nv_bfloat16*, Act, int, int, int64_t, float*,
                                                 void*, size_t, rt::Stream, const DropoutSpec&);
template void act_backward<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, Act, int, int, int64_t,
                                                         __nv_bfloat16*, void*, size_t, rt::Stream, const DropoutSpec&);

VITCUDA_KERNELS_END
}  // namespace vitcuda
