// vitcuda — fused attention (kernels/attention.h) at the ViT shapes, each beside an unfused
// cuBLASLt baseline timed in the same benchmark (batched GEMMs through the project GEMM without
// epilogue, kernels/gemm.h): S = scale·Q Kᵀ (batched GEMM, bf16 S in memory),
// a row softmax kernel, O = P V (batched GEMM); backward from the stored P: dV = Pᵀ dO,
// dP = dO Vᵀ, dS = P∘(dP − rowsum(P∘dP))·scale, dQ = dS K, dK = dSᵀ Q. That is PyTorch's "math"
// SDPA path in bf16; it writes O head-major [B, H, N, d] (ours writes [B, N, H·d], which the
// output projection needs: the baseline is spared that transpose).
//
// Beside it, when CMake finds cuDNN and the header-only cudnn_frontend (VITCUDA_BENCH_HAVE_CUDNN),
// cuDNN's own fused flash attention: the SDPA forward and backward nodes of the cudnn_frontend v1
// graph API (Graph::sdpa / Graph::sdpa_backward), bf16 in and out, fp32 compute and statistics,
// no mask, attn_scale = 1/sqrt(d), the forward generating Stats (logsumexp, which the backward
// reads); q, k, v, O, dO, dQ, dK, dV all [B, H, N, d] (strides {H·N·d, N·d, d, 1}): q, k, v are
// ours, O and dO are cuDNN's own buffers (our out/dout are [B, N, H·d]), so cuDNN, like the
// cuBLAS baseline, is spared the transpose that ours does. The _drop variants use cuDNN's own
// attention dropout (p = 0.1, Philox from device seed/offset tensors, forward and backward): the
// same work, another mask.
// The graphs are built once per shape and cached; the handle is created on first use. Any cuDNN
// or frontend failure (no engine for the shape, unsupported configuration, ...) leaves our kernel
// and the cuBLAS baseline timed and reported and puts "cudnn: <error>" in the benchmark's label.
//
//   ./build/bench/bench_attention --benchmark_counters_tabular=true [--benchmark_filter=vit_b/]
//
// Names: <model>/B<batch>/attention_{fwd,bwd}[_drop], model vit_ti | vit_s | vit_b (H = 3, 6, 12;
// d = 64; N = 197), batch 128 and 256; _drop: attention dropout p = 0.1 (Philox per element).
// Counters: TFLOP/s, cublas_TFLOP/s and cudnn_TFLOP/s count the algorithmic FLOPs — forward
// 4·B·H·N²·d, backward 8·B·H·N²·d (no recomputation), the same for all, so the rates compare like
// times; of_peak = TFLOP/s / the dense bf16 GEMM rate measured in this binary (8192³ cuBLASLt);
// vs_cublas = cuBLAS time / fused time and vs_cudnn = cuDNN time / fused time (> 1: ours is
// faster). The cuDNN baseline is checked against ours in every run: fwd: cudnn_max_abs_diff =
// max |O_cudnn − O_ours| over all elements (not in _drop: the two masks differ) and
// cudnn_lse_diff = max |Stats_cudnn − lse_ours| (in _drop too: the logsumexp precedes dropout);
// bwd without dropout (dO the same values, each side from its own forward): cudnn_max_abs_diff =
// max over dQ, dK and dV of |cuDNN − ours|. bf16 values of magnitude ~1 should agree to ~1e-2.
// The cuBLAS baseline is checked the same way (cublas_max_abs_diff: O forward; dQ, dK, dV
// backward, from our dout transposed to its layout; not in _drop, the baseline has no dropout).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "bench/bench_common.cuh"
#include "kernels/attention.h"
#include "kernels/gemm.h"

#if defined(VITCUDA_BENCH_HAVE_CUDNN)
// <cstring> (above) first: cudnn_frontend_shim.h (1.32) uses std::strlen without it, which the
// frontend's bundled json.hpp would otherwise bring in (CMake defines CUDNN_FRONTEND_SKIP_JSON_LIB).
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <vector>
#endif

using namespace vitcuda;
using namespace vitcuda::bench;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kHeadDim = 64;
// How far the cuBLAS baseline's O, dQ, dK, dV may lie from ours (report_agreement): the values are
// O(1) (q, k in [-2, 2], v and dO in [-1, 1]), where a bf16 ulp is 2^-8..2^-7; the baseline rounds P
// and dS to bf16 before its second GEMM, ours keeps them in fp32 registers, so a few ulps apart
// (measured at the smoke shapes: 4e-3 forward, 8e-3 backward). A layout or index error is O(1).
constexpr double kAgreementTol = 0.05;
// Attention dropout: our DropoutSpec's Philox seed and stream; cuDNN gets them as its seed and offset.
constexpr uint64_t kDropSeed = 42, kDropStream = 7;

void report(benchmark::State& st, double flops, double s, double baseline_s) {
  st.counters["TFLOP/s"] = flops / s / 1e12;
  st.counters["of_peak"] = flops / s / 1e12 / measured_peak_tflops();
  st.counters["cublas_TFLOP/s"] = flops / baseline_s / 1e12;
  st.counters["vs_cublas"] = baseline_s / s;
}

// ---- the unfused baseline ------------------------------------------------------------------

// Row softmax in place, one warp per row of N bf16 values, fp32 math.
__global__ void softmax_rows_kernel(bf16* s, int64_t rows, int N) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  bf16* r = s + row * N;
  float m = -INFINITY;
  for (int j = lane; j < N; j += 32) m = fmaxf(m, __bfloat162float(r[j]));
  m = warp_reduce_max(m);
  float l = 0.f;
  for (int j = lane; j < N; j += 32) l += __expf(__bfloat162float(r[j]) - m);
  const float inv = 1.f / warp_reduce_sum(l);
  for (int j = lane; j < N; j += 32) r[j] = __float2bfloat16(__expf(__bfloat162float(r[j]) - m) * inv);
}

// dS = P∘(dP − Σ_j P∘dP)·scale, in place over dP.
__global__ void softmax_backward_rows_kernel(const bf16* p, bf16* dp, int64_t rows, int N, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const bf16* pr = p + row * N;
  bf16* dr = dp + row * N;
  float D = 0.f;
  for (int j = lane; j < N; j += 32) D += __bfloat162float(pr[j]) * __bfloat162float(dr[j]);
  D = warp_reduce_sum(D);
  for (int j = lane; j < N; j += 32)
    dr[j] = __float2bfloat16(__bfloat162float(pr[j]) * (__bfloat162float(dr[j]) - D) * scale);
}

// One bf16 batched GEMM through the project GEMM (kernels/gemm.h: plain cuBLASLt, no epilogue, in
// the native build; the CPU GEMM in the smoke build), row-major: D[M, N] = alpha·op(A)·op(B) with
// the leading dimensions of dense [rows, cols] matrices, `batch` of them at the given strides.
void gemm_batched(bool ta, bool tb, int M, int N, int K, float alpha, const bf16* A, int64_t sa, const bf16* B,
                  int64_t sb, bf16* D, int64_t sd, int batch) {
  // Epilogue None needs no scratch beside cuBLASLt's share: one buffer serves every call.
  static rt::DeviceBuffer<unsigned char> ws(gemm_workspace_bytes(GemmArgs{}));
  GemmArgs g = dense_gemm(ta, tb, M, N, K, GemmType::BF16, GemmType::BF16, A, B, D, ws.get(), ws.size());
  g.batch = batch;
  g.stride_a = sa;
  g.stride_b = sb;
  g.stride_d = sd;
  g.alpha = alpha;
  gemm(g, nullptr);
}

struct Unfused {
  int BH, N, d;
  float scale;
  rt::DeviceBuffer<bf16> P, dP;  // [BH, N, N]
  Unfused(int bh, int n, int dim, float s)
      : BH(bh), N(n), d(dim), scale(s), P(size_t(bh) * n * n), dP(size_t(bh) * n * n) {}

  void softmax(bf16* s, bf16* ds_inout, bool backward) {
    const int64_t rows = int64_t(BH) * N;
    constexpr int kWarpsPerBlock = 8;
    const dim3 grid(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
    if (backward)
      launch(softmax_backward_rows_kernel, grid, dim3(32 * kWarpsPerBlock), 0, nullptr, static_cast<const bf16*>(s),
             ds_inout, rows, N, scale);
    else
      launch(softmax_rows_kernel, grid, dim3(32 * kWarpsPerBlock), 0, nullptr, s, rows, N);
  }

  // q, k, v, o: [BH, N, d].
  void forward(const bf16* q, const bf16* k, const bf16* v, bf16* o) {
    const int64_t sx = int64_t(N) * d, ss = int64_t(N) * N;
    gemm_batched(false, true, N, N, d, scale, q, sx, k, sx, P.get(), ss, BH);  // S = scale·Q Kᵀ
    softmax(P.get(), nullptr, false);                                          // P = softmax(S)
    gemm_batched(false, false, N, d, N, 1.f, P.get(), ss, v, sx, o, sx, BH);   // O = P V
  }

  // From the P of the last forward; dO, dq, dk, dv: [BH, N, d].
  void backward(const bf16* dO, const bf16* q, const bf16* k, const bf16* v, bf16* dq, bf16* dk, bf16* dv) {
    const int64_t sx = int64_t(N) * d, ss = int64_t(N) * N;
    gemm_batched(true, false, N, d, N, 1.f, P.get(), ss, dO, sx, dv, sx, BH);   // dV = Pᵀ dO
    gemm_batched(false, true, N, N, d, 1.f, dO, sx, v, sx, dP.get(), ss, BH);   // dP = dO Vᵀ
    softmax(P.get(), dP.get(), true);                                           // dS
    gemm_batched(false, false, N, d, N, 1.f, dP.get(), ss, k, sx, dq, sx, BH);  // dQ = dS K
    gemm_batched(true, false, N, d, N, 1.f, dP.get(), ss, q, sx, dk, sx, BH);   // dK = dSᵀ Q
  }
};

// ---- the problems ---------------------------------------------------------------------------

struct Problem {
  int B, H, N = kTokens, d = kHeadDim;
  size_t elems() const { return size_t(B) * H * N * d; }
  size_t rows() const { return size_t(B) * H * N; }
  double forward_flops() const { return 4.0 * B * H * double(N) * N * d; }
};

// q, k, v [B, H, N, d] (the baselines' layout) <-> the packed qkv [B, N, 3, H, d] our kernels
// read and write (the qkv projection's output); s = 0, 1, 2 for q, k, v.
__device__ __forceinline__ int64_t packed_offset(int64_t i, int s, int H, int N, int d) {
  const int64_t c = i % d, r = i / d;
  const int64_t n = r % N, bh = r / N;
  const int64_t h = bh % H, b = bh / H;
  return (((b * N + n) * 3 + s) * H + h) * d + c;
}

__global__ void pack_qkv_kernel(const bf16* q, const bf16* k, const bf16* v, bf16* qkv, int64_t n, int H, int N,
                                int d) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    qkv[packed_offset(i, 0, H, N, d)] = q[i];
    qkv[packed_offset(i, 1, H, N, d)] = k[i];
    qkv[packed_offset(i, 2, H, N, d)] = v[i];
  }
}

__global__ void unpack_qkv_kernel(const bf16* qkv, bf16* q, bf16* k, bf16* v, int64_t n, int H, int N, int d) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    q[i] = qkv[packed_offset(i, 0, H, N, d)];
    k[i] = qkv[packed_offset(i, 1, H, N, d)];
    v[i] = qkv[packed_offset(i, 2, H, N, d)];
  }
}

struct Tensors {
  rt::DeviceBuffer<bf16> q, k, v, out, dout, dq, dk, dv;
  rt::DeviceBuffer<bf16> qkv, dqkv;  // packed [B, N, 3, H, d]: what our kernels take
  rt::DeviceBuffer<float> lse;
  rt::DeviceBuffer<unsigned char> ws;
  Problem p;
  explicit Tensors(const Problem& p_)
      : q(filled<bf16>(p_.elems(), -2.f, 2.f, 1)),
        k(filled<bf16>(p_.elems(), -2.f, 2.f, 2)),
        v(filled<bf16>(p_.elems(), -1.f, 1.f, 3)),
        out(p_.elems()),
        dout(filled<bf16>(p_.elems(), -1.f, 1.f, 4)),
        dq(p_.elems()),
        dk(p_.elems()),
        dv(p_.elems()),
        qkv(3 * p_.elems()),
        dqkv(3 * p_.elems()),
        lse(p_.rows()),
        ws(attention_backward_workspace_bytes(p_.B, p_.H, p_.N, p_.d)),
        p(p_) {
    launch(pack_qkv_kernel, dim3(kSmoke ? 8 : 1024), dim3(256), 0, nullptr, static_cast<const bf16*>(q.get()),
           static_cast<const bf16*>(k.get()), static_cast<const bf16*>(v.get()), qkv.get(), int64_t(p.elems()), p.H,
           p.N, p.d);
  }
  // dq, dk, dv [B, H, N, d] from our packed dqkv, for the comparisons with the baselines.
  void unpack_gradients() {
    launch(unpack_qkv_kernel, dim3(kSmoke ? 8 : 1024), dim3(256), 0, nullptr, static_cast<const bf16*>(dqkv.get()),
           dq.get(), dk.get(), dv.get(), int64_t(p.elems()), p.H, p.N, p.d);
  }
};

// ---- comparing layouts -----------------------------------------------------------------------

// The offset in a [B, N, H, d] tensor (= our [B, N, H·d]) of the element at offset i of a
// [B, H, N, d] tensor.
__device__ __forceinline__ int64_t bnhd_offset(int64_t i, int H, int N, int d) {
  const int64_t c = i % d, r = i / d;
  const int64_t n = r % N, bh = r / N;
  const int64_t h = bh % H, b = bh / H;
  return ((b * N + n) * H + h) * d + c;
}

// out [B, H, N, d] = in [B, N, H, d] (n elements).
__global__ void bnhd_to_bhnd_kernel(const bf16* in, bf16* out, int64_t n, int H, int N, int d) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = in[bnhd_offset(i, H, N, d)];
}

// *max_bits = max(*max_bits, bits of max_i |a_i − b_j|) over the n elements of a; j = i, or the
// [B, N, H, d] offset of i when b_bnhd. NaN counts as +inf. Non-negative floats order like their
// bit patterns, so an unsigned atomicMax does the reduction across warps.
template <typename T>
__global__ void max_abs_diff_kernel(const T* a, const T* b, int64_t n, int H, int N, int d, bool b_bnhd,
                                    unsigned* max_bits) {
  float m = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float diff = fabsf(to_float(a[i]) - to_float(b[b_bnhd ? bnhd_offset(i, H, N, d) : i]));
    if (!(diff <= m)) m = (diff != diff) ? INFINITY : diff;
  }
  m = warp_reduce_max(m);
  if (threadIdx.x % 32 == 0) atomicMax(max_bits, __float_as_uint(m));
}

template <typename T>
double max_abs_diff(const T* a, const T* b, int64_t n, const Problem& p, bool b_bnhd) {
  rt::DeviceBuffer<unsigned> bits(1);
  bits.zero();
  launch(max_abs_diff_kernel<T>, dim3(kSmoke ? 8 : 1024), dim3(256), 0, nullptr, a, b, n, p.H, p.N, p.d, b_bnhd,
         bits.get());
  const unsigned u = bits.download()[0];
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---- the cuDNN fused-SDPA baseline ---------------------------------------------------------
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
namespace fe = cudnn_frontend;

// A cuDNN or frontend failure; its text goes into the benchmark's label.
struct CudnnError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_fe(fe::error_t e, const char* step) {
  if (e.is_bad()) throw CudnnError(std::string(step) + ": " + e.get_message());
}

// The process's cuDNN handle, created on first use (it runs on the default stream, like every
// kernel here). Throws CudnnError when cudnnCreate failed (once; later calls repeat the text).
cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t handle = nullptr;
  static std::string error;
  if (!handle && error.empty()) {
    const cudnnStatus_t s = cudnnCreate(&handle);
    if (s != CUDNN_STATUS_SUCCESS) {
      handle = nullptr;
      error = std::string("cudnnCreate: ") + cudnnGetErrorString(s);
    }
  }
  if (!handle) throw CudnnError(error);
  return handle;
}

// Tensor uids of the variant packs.
enum : int64_t { kUidQ = 1, kUidK, kUidV, kUidO, kUidStats, kUidDO, kUidDQ, kUidDK, kUidDV, kUidSeed, kUidOffset };

using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// A [B, H, N, d] tensor, dense head-major: strides {H·N·d, N·d, d, 1}.
fe::graph::Tensor_attributes bhnd(const char* name, int64_t uid, const Problem& p) {
  const int64_t B = p.B, H = p.H, N = p.N, d = p.d;
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({B, H, N, d})
      .set_stride({H * N * d, N * d, d, 1});
}

// Stats: fp32 [B, H, N, 1], the layout of our lse [B, H, N].
fe::graph::Tensor_attributes stats_tensor(const Problem& p) {
  const int64_t B = p.B, H = p.H, N = p.N;
  return fe::graph::Tensor_attributes()
      .set_name("Stats")
      .set_uid(kUidStats)
      .set_dim({B, H, N, 1})
      .set_stride({H * N, N, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
}

// A Philox seed or offset: one int64 in device memory (as PyTorch passes them).
TensorPtr philox_tensor(fe::graph::Graph& g, const char* name, int64_t uid) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({1, 1, 1, 1})
                      .set_stride({1, 1, 1, 1})
                      .set_data_type(fe::DataType_t::INT64));
}

struct CudnnGraph {
  std::shared_ptr<fe::graph::Graph> graph;  // null when building failed
  int64_t workspace_bytes = 0;
  std::string error;
};

// Builds cuDNN's SDPA forward (O and Stats from Q, K, V) or backward (dQ, dK, dV from Q, K, V, O,
// dO, Stats) for one problem: bf16 I/O, fp32 intermediates and compute, no mask, scale 1/sqrt(d),
// cuDNN's Philox dropout when drop_p > 0. Never throws: a failure comes back as the error text.
CudnnGraph build_cudnn_graph(const Problem& p, float drop_p, bool backward) {
  CudnnGraph r;
  try {
    const float scale = 1.f / std::sqrt(float(p.d));
    const int64_t B = p.B, H = p.H, N = p.N, d = p.d;
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const TensorPtr Q = g->tensor(bhnd("Q", kUidQ, p));
    const TensorPtr K = g->tensor(bhnd("K", kUidK, p));
    const TensorPtr V = g->tensor(bhnd("V", kUidV, p));
    TensorPtr seed, offset;
    if (drop_p > 0) {
      seed = philox_tensor(*g, "Seed", kUidSeed);
      offset = philox_tensor(*g, "Offset", kUidOffset);
    }
    if (!backward) {
      // Training forward: generate_stats (is_inference false), so that a backward can follow.
      auto attrs = fe::graph::SDPA_attributes().set_name("sdpa_fwd").set_generate_stats(true).set_attn_scale(scale);
      if (drop_p > 0) attrs.set_dropout(drop_p, seed, offset);
      const auto outs = g->sdpa(Q, K, V, attrs);  // {O, Stats}
      outs[0]->set_output(true).set_uid(kUidO).set_dim({B, H, N, d}).set_stride({H * N * d, N * d, d, 1});
      outs[1]
          ->set_output(true)
          .set_uid(kUidStats)
          .set_data_type(fe::DataType_t::FLOAT)
          .set_dim({B, H, N, 1})
          .set_stride({H * N, N, 1, 1});
    } else {
      const TensorPtr O = g->tensor(bhnd("O", kUidO, p));
      const TensorPtr dO = g->tensor(bhnd("dO", kUidDO, p));
      const TensorPtr Stats = g->tensor(stats_tensor(p));
      auto attrs = fe::graph::SDPA_backward_attributes().set_name("sdpa_bwd").set_attn_scale(scale);
      if (drop_p > 0) attrs.set_dropout(drop_p, seed, offset);
      const auto grads = g->sdpa_backward(Q, K, V, O, dO, Stats, attrs);  // {dQ, dK, dV}
      const int64_t uids[3] = {kUidDQ, kUidDK, kUidDV};
      for (int i = 0; i < 3; ++i)
        grads[i]->set_output(true).set_uid(uids[i]).set_dim({B, H, N, d}).set_stride({H * N * d, N * d, d, 1});
    }
    check_fe(g->validate(), "validate");
    check_fe(g->build_operation_graph(cudnn_handle()), "build_operation_graph");
    check_fe(g->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
    check_fe(g->check_support(), "check_support");
    check_fe(g->build_plans(fe::BuildPlanPolicy_t::HEURISTICS_CHOICE), "build_plans");
    check_fe(g->get_workspace_size(r.workspace_bytes), "get_workspace_size");
    r.graph = std::move(g);
  } catch (const std::exception& e) {
    r.graph.reset();
    r.error = e.what();
  }
  return r;
}

// The graphs, built once per (shape, dropout, direction); a failure is cached too. Never destroyed:
// no cuDNN teardown at exit, after the CUDA runtime's.
const CudnnGraph& cudnn_graph(const Problem& p, float drop_p, bool backward) {
  static auto* const cache = new std::map<std::tuple<int, int, int, int, float, bool>, CudnnGraph>;
  const auto key = std::make_tuple(p.B, p.H, p.N, p.d, drop_p, backward);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, build_cudnn_graph(p, drop_p, backward)).first;
  return it->second;
}

// cuDNN's SDPA on one benchmark's q, k, v, with its own O, Stats, dO (our dout transposed to
// [B, H, N, d]), dQ, dK, dV, workspace and Philox seed/offset. Throws CudnnError (or vitcuda::Error)
// on any failure.
class CudnnSdpa {
 public:
  CudnnSdpa(const Problem& p, float drop_p, const Tensors& t, bool backward)
      : fwd_(cudnn_graph(p, drop_p, false)), bwd_(backward ? &cudnn_graph(p, drop_p, true) : nullptr) {
    if (!fwd_.graph) throw CudnnError("forward: " + fwd_.error);
    if (bwd_ && !bwd_->graph) throw CudnnError("backward: " + bwd_->error);
    const size_t n = p.elems();
    o_ = rt::DeviceBuffer<bf16>(n);
    stats_ = rt::DeviceBuffer<float>(p.rows());
    ws_ = rt::DeviceBuffer<unsigned char>(
        static_cast<size_t>(std::max(fwd_.workspace_bytes, bwd_ ? bwd_->workspace_bytes : int64_t(0))));
    fwd_pack_ = {
        {kUidQ, t.q.get()}, {kUidK, t.k.get()}, {kUidV, t.v.get()}, {kUidO, o_.get()}, {kUidStats, stats_.get()}};
    if (drop_p > 0) {
      philox_ = rt::DeviceBuffer<int64_t>(std::vector<int64_t>{int64_t(kDropSeed), int64_t(kDropStream)});
      fwd_pack_[kUidSeed] = philox_.get();
      fwd_pack_[kUidOffset] = philox_.get() + 1;
    }
    if (bwd_) {
      dout_ = rt::DeviceBuffer<bf16>(n);
      dq_ = rt::DeviceBuffer<bf16>(n);
      dk_ = rt::DeviceBuffer<bf16>(n);
      dv_ = rt::DeviceBuffer<bf16>(n);
      launch(bnhd_to_bhnd_kernel, dim3(1024), dim3(256), 0, nullptr, static_cast<const bf16*>(t.dout.get()),
             dout_.get(), static_cast<int64_t>(n), p.H, p.N, p.d);
      bwd_pack_ = {{kUidQ, t.q.get()},  {kUidK, t.k.get()},    {kUidV, t.v.get()},
                   {kUidO, o_.get()},   {kUidDO, dout_.get()}, {kUidStats, stats_.get()},
                   {kUidDQ, dq_.get()}, {kUidDK, dk_.get()},   {kUidDV, dv_.get()}};
      if (drop_p > 0) {
        bwd_pack_[kUidSeed] = philox_.get();
        bwd_pack_[kUidOffset] = philox_.get() + 1;
      }
    }
  }

  void forward() { check_fe(fwd_.graph->execute(cudnn_handle(), fwd_pack_, ws_.get()), "execute (forward)"); }
  void backward() { check_fe(bwd_->graph->execute(cudnn_handle(), bwd_pack_, ws_.get()), "execute (backward)"); }

  const bf16* o() const { return o_.get(); }
  const float* stats() const { return stats_.get(); }
  const bf16* dq() const { return dq_.get(); }
  const bf16* dk() const { return dk_.get(); }
  const bf16* dv() const { return dv_.get(); }

 private:
  const CudnnGraph& fwd_;
  const CudnnGraph* bwd_;
  rt::DeviceBuffer<bf16> o_, dout_, dq_, dk_, dv_;
  rt::DeviceBuffer<float> stats_;
  rt::DeviceBuffer<int64_t> philox_;
  rt::DeviceBuffer<unsigned char> ws_;
  std::unordered_map<int64_t, void*> fwd_pack_, bwd_pack_;
};

// What the cuDNN baseline adds to one benchmark: its seconds per call and correctness counters,
// or the failure, which goes into the label (our kernel's figures are reported either way).
struct CudnnOutcome {
  double seconds = 0;
  std::map<std::string, double> checks;
  std::string error;
};

void report_cudnn(benchmark::State& st, double flops, double s, const CudnnOutcome& c) {
  if (!c.error.empty()) {
    st.SetLabel("cudnn: " + c.error);
    return;
  }
  st.counters["cudnn_TFLOP/s"] = flops / c.seconds / 1e12;
  st.counters["vs_cudnn"] = c.seconds / s;
  for (const auto& [name, value] : c.checks) st.counters[name] = value;
}
#endif  // VITCUDA_BENCH_HAVE_CUDNN

// ---- the benchmarks ------------------------------------------------------------------------

void bench_forward(benchmark::State& st, Problem p, float drop_p) {
  const float scale = 1.f / std::sqrt(float(p.d));
  const DropoutSpec drop{drop_p, kDropSeed, kDropStream};
  Tensors t(p);
  Unfused base(p.B * p.H, p.N, p.d, scale);
  const double base_s = seconds_per_call([&] { base.forward(t.q.get(), t.k.get(), t.v.get(), t.dq.get()); }, 3, 20);
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
  std::optional<CudnnSdpa> cudnn;
  CudnnOutcome cudnn_out;
  try {
    cudnn.emplace(p, drop_p, t, false);
    cudnn->forward();  // a checked call first: a failure surfaces here, not inside the timing
    rt::device_synchronize();
    cudnn_out.seconds = seconds_per_call([&] { cudnn->forward(); }, 3, 20);
  } catch (const std::exception& e) {
    cudnn_out.error = e.what();
  }
#endif
  const double s = run_timed(st, [&] {
    attention_forward<bf16>(t.qkv.get(), scale, drop, t.out.get(), t.lse.get(), p.B, p.H, p.N, p.d, nullptr);
  });
  report(st, p.forward_flops(), s, base_s);
  // The baseline's O (in t.dq, [B, H, N, d]) against ours; it has no dropout.
  if (drop_p == 0)
    report_agreement(st, "cublas_max_abs_diff",
                     max_abs_diff(static_cast<const bf16*>(t.dq.get()), static_cast<const bf16*>(t.out.get()),
                                  int64_t(p.elems()), p, true),
                     kAgreementTol);
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
  if (cudnn_out.error.empty()) {
    try {
      // The logsumexp precedes dropout, so it is compared in the _drop variants too; O is not.
      cudnn_out.checks["cudnn_lse_diff"] =
          max_abs_diff(cudnn->stats(), static_cast<const float*>(t.lse.get()), int64_t(p.rows()), p, false);
      if (drop_p == 0)
        cudnn_out.checks["cudnn_max_abs_diff"] =
            max_abs_diff(cudnn->o(), static_cast<const bf16*>(t.out.get()), int64_t(p.elems()), p, true);
    } catch (const std::exception& e) {
      cudnn_out.error = std::string("comparison: ") + e.what();
    }
  }
  report_cudnn(st, p.forward_flops(), s, cudnn_out);
#endif
}

void bench_backward(benchmark::State& st, Problem p, float drop_p) {
  const float scale = 1.f / std::sqrt(float(p.d));
  const DropoutSpec drop{drop_p, kDropSeed, kDropStream};
  Tensors t(p);
  attention_forward<bf16>(t.qkv.get(), scale, drop, t.out.get(), t.lse.get(), p.B, p.H, p.N, p.d, nullptr);
  Unfused base(p.B * p.H, p.N, p.d, scale);
  base.forward(t.q.get(), t.k.get(), t.v.get(), t.dq.get());  // P for the baseline's backward
  // The baseline's dO: our dout [B, N, H·d] as [B, H, N, d]; its gradients in buffers of its own.
  rt::DeviceBuffer<bf16> base_dout(p.elems()), base_dq(p.elems()), base_dk(p.elems()), base_dv(p.elems());
  launch(bnhd_to_bhnd_kernel, dim3(kSmoke ? 8 : 1024), dim3(256), 0, nullptr, static_cast<const bf16*>(t.dout.get()),
         base_dout.get(), int64_t(p.elems()), p.H, p.N, p.d);
  const double base_s = seconds_per_call(
      [&] {
        base.backward(base_dout.get(), t.q.get(), t.k.get(), t.v.get(), base_dq.get(), base_dk.get(), base_dv.get());
      },
      3, 20);
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
  std::optional<CudnnSdpa> cudnn;
  CudnnOutcome cudnn_out;
  try {
    cudnn.emplace(p, drop_p, t, true);
    cudnn->forward();  // cuDNN's own O and Stats for its backward
    cudnn->backward();
    rt::device_synchronize();
    cudnn_out.seconds = seconds_per_call([&] { cudnn->backward(); }, 3, 20);
  } catch (const std::exception& e) {
    cudnn_out.error = e.what();
  }
#endif
  const double s = run_timed(st, [&] {
    attention_backward<bf16>(t.dout.get(), t.qkv.get(), t.out.get(), t.lse.get(), scale, drop, t.dqkv.get(), t.ws.get(),
                             t.ws.size(), p.B, p.H, p.N, p.d, nullptr);
  });
  t.unpack_gradients();
  report(st, 2.0 * p.forward_flops(), s, base_s);
  if (drop_p == 0) {  // the baseline has no dropout
    const int64_t n = int64_t(p.elems());
    report_agreement(
        st, "cublas_max_abs_diff",
        std::max(
            {max_abs_diff(static_cast<const bf16*>(base_dq.get()), static_cast<const bf16*>(t.dq.get()), n, p, false),
             max_abs_diff(static_cast<const bf16*>(base_dk.get()), static_cast<const bf16*>(t.dk.get()), n, p, false),
             max_abs_diff(static_cast<const bf16*>(base_dv.get()), static_cast<const bf16*>(t.dv.get()), n, p, false)}),
        kAgreementTol);
  }
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
  if (cudnn_out.error.empty() && drop_p == 0) {
    try {
      const int64_t n = int64_t(p.elems());
      cudnn_out.checks["cudnn_max_abs_diff"] =
          std::max({max_abs_diff(cudnn->dq(), static_cast<const bf16*>(t.dq.get()), n, p, false),
                    max_abs_diff(cudnn->dk(), static_cast<const bf16*>(t.dk.get()), n, p, false),
                    max_abs_diff(cudnn->dv(), static_cast<const bf16*>(t.dv.get()), n, p, false)});
    } catch (const std::exception& e) {
      cudnn_out.error = std::string("comparison: ") + e.what();
    }
  }
  report_cudnn(st, 2.0 * p.forward_flops(), s, cudnn_out);
#endif
}

void register_all() {
  struct Model {
    const char* name;
    int heads;
  };
  for (const Model m : {Model{"vit_ti", 3}, Model{"vit_s", 6}, Model{"vit_b", 12}})
    for (int batch : {128, 256}) {
      const Problem p{bench_batch(batch), m.heads};
      const std::string prefix = std::string(m.name) + "/B" + std::to_string(batch) + "/attention_";
      for (float drop_p : {0.f, 0.1f}) {
        const std::string suffix = drop_p > 0 ? "_drop" : "";
        register_timed(prefix + "fwd" + suffix, [p, drop_p](benchmark::State& st) { bench_forward(st, p, drop_p); });
        register_timed(prefix + "bwd" + suffix, [p, drop_p](benchmark::State& st) { bench_backward(st, p, drop_p); });
      }
    }
}

}  // namespace

int main(int argc, char** argv) {
  return bench_main(argc, argv, "bench_attention", [] {
#if defined(VITCUDA_BENCH_HAVE_CUDNN)
    benchmark::AddCustomContext("cudnn_version", std::to_string(cudnnGetVersion()));
    benchmark::AddCustomContext("cudnn_frontend_version", std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) + "." +
                                                              std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
                                                              std::to_string(CUDNN_FRONTEND_PATCH_VERSION));
    benchmark::AddCustomContext(
        "cudnn_sdpa_baseline",
        "cudnn_frontend Graph::sdpa/sdpa_backward, bf16 I/O, fp32 compute and stats, [B,H,N,d]; _drop: "
        "cuDNN's own Philox dropout p=0.1 (another mask than ours: no O/gradient diff there)");
#else
    benchmark::AddCustomContext("cudnn_sdpa_baseline", "not built (CMake found no cuDNN or no cudnn_frontend)");
#endif
    register_all();
  });
}
