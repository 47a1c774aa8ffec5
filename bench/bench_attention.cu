// vitcuda — fused attention (kernels/attention.h) at the ViT shapes, each beside an unfused
// cuBLAS baseline timed in the same benchmark: S = scale·Q Kᵀ (batched GEMM, bf16 S in memory),
// a row softmax kernel, O = P V (batched GEMM); backward from the stored P: dV = Pᵀ dO,
// dP = dO Vᵀ, dS = P∘(dP − rowsum(P∘dP))·scale, dQ = dS K, dK = dSᵀ Q. That is PyTorch's "math"
// SDPA path in bf16; it writes O head-major [B, H, N, d] (ours writes [B, N, H·d], which the
// output projection needs: the baseline is spared that transpose).
//
// TODO(attention baseline): cuDNN's fused SDPA (the flash-attention engine of cuDNN 9, reached
// through the backend graph API — cudnn_frontend is not available here) is the baseline the
// design names. Without a GPU to validate an operation graph built from raw cudnnBackend*
// descriptors it is not wired in yet; when CMake finds cuDNN (VITCUDA_BENCH_HAVE_CUDNN) its
// version is reported in the benchmark context so that results say which cuDNN a future
// comparison will use. Add "cudnn_fwd"/"cudnn_bwd" timings next to the cuBLAS ones below.
//
//   ./build/bench/bench_attention --benchmark_counters_tabular=true [--benchmark_filter=vit_b/]
//
// Names: <model>/B<batch>/attention_{fwd,bwd}[_drop], model vit_ti | vit_s | vit_b (H = 3, 6, 12;
// d = 64; N = 197), batch 128 and 256; _drop: attention dropout p = 0.1 (Philox per element).
// Counters: TFLOP/s and cublas_TFLOP/s count the algorithmic FLOPs — forward 4·B·H·N²·d,
// backward 8·B·H·N²·d (no recomputation), the same for both, so the rates compare like times —
// and vs_cublas = baseline time / fused time (> 1: the fused kernel is faster).
#include <cublas_v2.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "bench/bench_common.cuh"
#include "kernels/attention.h"

#if defined(VITCUDA_BENCH_HAVE_CUDNN)
#include <cudnn.h>
#endif

using namespace vitcuda;
using namespace vitcuda::bench;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kHeadDim = 64;

void report(benchmark::State& st, double flops, double s, double baseline_s) {
  st.counters["TFLOP/s"] = flops / s / 1e12;
  st.counters["cublas_TFLOP/s"] = flops / baseline_s / 1e12;
  st.counters["vs_cublas"] = baseline_s / s;
}

// ---- the unfused baseline ------------------------------------------------------------------

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("bench_attention: ") + what + " failed: " + cublasGetStatusString(s));
}

cublasHandle_t cublas_handle() {
  static const cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "cublasCreate");
    return h;
  }();
  return handle;
}

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
__global__ void softmax_backward_rows_kernel(const bf16* p, bf16* dp, int64_t rows, int N,
                                             float scale) {
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

// Row-major X [N, d] is the column-major [d, N] matrix with ld = d, so every product below is
// written for cuBLAS's column-major convention on the transposed problem.
void gemm_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                  const bf16* A, int lda, int64_t sa, const bf16* B, int ldb, int64_t sb, bf16* C,
                  int ldc, int64_t sc, int batch) {
  const float beta = 0.f;
  check_cublas(cublasGemmStridedBatchedEx(cublas_handle(), ta, tb, m, n, k, &alpha, A, CUDA_R_16BF,
                                          lda, sa, B, CUDA_R_16BF, ldb, sb, &beta, C, CUDA_R_16BF,
                                          ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx");
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
      launch(softmax_backward_rows_kernel, grid, dim3(32 * kWarpsPerBlock), 0, nullptr,
             static_cast<const bf16*>(s), ds_inout, rows, N, scale);
    else
      launch(softmax_rows_kernel, grid, dim3(32 * kWarpsPerBlock), 0, nullptr, s, rows, N);
  }

  // q, k, v, o: [BH, N, d].
  void forward(const bf16* q, const bf16* k, const bf16* v, bf16* o) {
    const int64_t sx = int64_t(N) * d, ss = int64_t(N) * N;
    // Sᵀ (col-major) = K Qᵀ: S[i][j] = q_i·k_j, row-major.
    gemm_batched(CUBLAS_OP_T, CUBLAS_OP_N, N, N, d, scale, k, d, sx, q, d, sx, P.get(), N, ss, BH);
    softmax(P.get(), nullptr, false);
    // Oᵀ = Vᵀ Pᵀ.
    gemm_batched(CUBLAS_OP_N, CUBLAS_OP_N, d, N, N, 1.f, v, d, sx, P.get(), N, ss, o, d, sx, BH);
  }

  // From the P of the last forward; dO, dq, dk, dv: [BH, N, d].
  void backward(const bf16* dO, const bf16* q, const bf16* k, const bf16* v, bf16* dq, bf16* dk,
                bf16* dv) {
    const int64_t sx = int64_t(N) * d, ss = int64_t(N) * N;
    gemm_batched(CUBLAS_OP_N, CUBLAS_OP_T, d, N, N, 1.f, dO, d, sx, P.get(), N, ss, dv, d, sx, BH);   // dV = Pᵀ dO
    gemm_batched(CUBLAS_OP_T, CUBLAS_OP_N, N, N, d, 1.f, v, d, sx, dO, d, sx, dP.get(), N, ss, BH);   // dP = dO Vᵀ
    softmax(P.get(), dP.get(), true);                                                                // dS
    gemm_batched(CUBLAS_OP_N, CUBLAS_OP_N, d, N, N, 1.f, k, d, sx, dP.get(), N, ss, dq, d, sx, BH);  // dQ = dS K
    gemm_batched(CUBLAS_OP_N, CUBLAS_OP_T, d, N, N, 1.f, q, d, sx, dP.get(), N, ss, dk, d, sx, BH);  // dK = dSᵀ Q
  }
};

// ---- the benchmarks ------------------------------------------------------------------------

struct Problem {
  int B, H, N = kTokens, d = kHeadDim;
  size_t elems() const { return size_t(B) * H * N * d; }
  double forward_flops() const { return 4.0 * B * H * double(N) * N * d; }
};

struct Tensors {
  rt::DeviceBuffer<bf16> q, k, v, out, dout, dq, dk, dv;
  rt::DeviceBuffer<float> lse;
  rt::DeviceBuffer<unsigned char> ws;
  explicit Tensors(const Problem& p)
      : q(filled<bf16>(p.elems(), -2.f, 2.f, 1)), k(filled<bf16>(p.elems(), -2.f, 2.f, 2)),
        v(filled<bf16>(p.elems(), -1.f, 1.f, 3)), out(p.elems()), dout(filled<bf16>(p.elems(), -1.f, 1.f, 4)),
        dq(p.elems()), dk(p.elems()), dv(p.elems()), lse(size_t(p.B) * p.H * p.N),
        ws(attention_backward_workspace_bytes(p.B, p.H, p.N, p.d)) {}
};

void bench_forward(benchmark::State& st, Problem p, float drop_p) {
  const float scale = 1.f / std::sqrt(float(p.d));
  const DropoutSpec drop{drop_p, 42, 7};
  Tensors t(p);
  Unfused base(p.B * p.H, p.N, p.d, scale);
  const double base_s =
      seconds_per_call([&] { base.forward(t.q.get(), t.k.get(), t.v.get(), t.dq.get()); }, 3, 20);
  const double s = run_timed(st, [&] {
    attention_forward<bf16>(t.q.get(), t.k.get(), t.v.get(), scale, drop, t.out.get(), t.lse.get(),
                            p.B, p.H, p.N, p.d, nullptr);
  });
  report(st, p.forward_flops(), s, base_s);
}

void bench_backward(benchmark::State& st, Problem p, float drop_p) {
  const float scale = 1.f / std::sqrt(float(p.d));
  const DropoutSpec drop{drop_p, 42, 7};
  Tensors t(p);
  attention_forward<bf16>(t.q.get(), t.k.get(), t.v.get(), scale, drop, t.out.get(), t.lse.get(),
                          p.B, p.H, p.N, p.d, nullptr);
  Unfused base(p.B * p.H, p.N, p.d, scale);
  base.forward(t.q.get(), t.k.get(), t.v.get(), t.dq.get());  // P for the baseline's backward
  const double base_s = seconds_per_call(
      [&] { base.backward(t.dout.get(), t.q.get(), t.k.get(), t.v.get(), t.dq.get(), t.dk.get(), t.dv.get()); },
      3, 20);
  const double s = run_timed(st, [&] {
    attention_backward<bf16>(t.dout.get(), t.q.get(), t.k.get(), t.v.get(), t.out.get(),
                             t.lse.get(), scale, drop, t.dq.get(), t.dk.get(), t.dv.get(),
                             t.ws.get(), t.ws.size(), p.B, p.H, p.N, p.d, nullptr);
  });
  report(st, 2.0 * p.forward_flops(), s, base_s);
}

void register_all() {
  struct Model {
    const char* name;
    int heads;
  };
  for (const Model m : {Model{"vit_ti", 3}, Model{"vit_s", 6}, Model{"vit_b", 12}})
    for (int batch : {128, 256}) {
      const Problem p{batch, m.heads};
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
    benchmark::AddCustomContext("cudnn_sdpa_baseline", "TODO: not wired in (see bench_attention.cu)");
#endif
    register_all();
  });
}
