// vitcuda — the project GEMM (kernels/gemm.cu): one function for every matrix product of the ViT,
// with the epilogues it needs, over cuBLASLt in the native build and over the emulator's fp32
// GEMM (vitcuda::emu::sgemm, OpenBLAS; kernels/emu/emu_blas.h) in the emulation build. Epilogues that cuBLASLt cannot
// fuse (exact erf GELU, tanh, and any fused epilogue cuBLASLt refuses for a shape) run as the
// project's elementwise / reduction kernels below, in both builds, so CI exercises them.
//
// Everything is ROW-MAJOR: D[M, N] = alpha · op(A)[M, K] · op(B)[K, N] (+ beta · D), where
// op(A) = A (stored [M, K], lda >= K) or Aᵀ (stored [K, M], lda >= M), likewise B.
// Arithmetic is fp32 (CUBLAS_COMPUTE_32F: no TF32 for fp32 inputs); outputs round once to D's type.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"  // Act

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

enum class GemmType : uint8_t { F32, BF16 };

template <typename T>
constexpr GemmType gemm_type_of();
template <>
constexpr GemmType gemm_type_of<float>() {
  return GemmType::F32;
}
template <>
constexpr GemmType gemm_type_of<__nv_bfloat16>() {
  return GemmType::BF16;
}

enum class GemmEpilogue : uint8_t {
  // D = alpha·op(A)op(B) + beta·D (+ bias[n] when bias is given).
  None,
  // pre = alpha·op(A)op(B) (+ bias[n]) is written to aux, D = act(pre); beta must be 0.
  // act = GeluTanh fuses into cuBLASLt (CUBLASLT_EPILOGUE_GELU_AUX_BIAS, which computes the tanh
  // approximation). GeluErf and Tanh run the GEMM with a bias epilogue into aux, then one
  // elementwise kernel reads aux and writes D: one extra read and write of the M·N output
  // (~4 bytes/element in bf16; ViT-B fc1 at batch 256: 2·310 MB ≈ 0.2 ms at 3 TB/s, about
  // 20–30% on top of the ~0.4 ms GEMM). act = None is plain bias.
  BiasAct,
  // D = (alpha·op(A)op(B)) ⊙ act'(aux), aux holding the pre-activation of the forward; beta must
  // be 0. With bias_grad: bias_grad[n] += Σ_m D[m, n] (D as stored). act = GeluTanh fuses into
  // cuBLASLt (CUBLASLT_EPILOGUE_DGELU_BGRAD); GeluErf and Tanh run the GEMM into D, then one
  // kernel applies act' in place and reduces the bias gradient in a fixed order.
  DAct,
  // D as None (beta = 1 accumulates), and bias_grad[m] += Σ_k op(A)[m, k]: the bias gradient of a
  // weight-gradient GEMM dW = dYᵀ·X, where op(A) = dYᵀ (cuBLASLt CUBLASLT_EPILOGUE_BGRADB in its
  // column-major view, or a column-sum kernel over A).
  BiasGradA,
};

struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int M = 0, N = 0, K = 0;
  GemmType ab_type = GemmType::F32;  // A and B share one type
  GemmType d_type = GemmType::F32;   // F32 with BF16 inputs: fp32 outputs / accumulators
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  void* D = nullptr;
  int64_t ldd = 0;
  // Batched GEMM (epilogue None only): batch b uses A + b·stride_a, ... (elements). bias, when
  // given, is the same for every batch.
  int batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
  float alpha = 1.f;
  float beta = 0.f;  // 0: D is overwritten (never read); 1: D accumulates (parameter gradients)

  GemmEpilogue epilogue = GemmEpilogue::None;
  Act act = Act::None;         // BiasAct / DAct: the activation
  const void* bias = nullptr;  // [N], type d_type (None, BiasAct)
  void* aux = nullptr;         // [M, N] with leading dimension ldd, type d_type (BiasAct, DAct)
  void* bias_grad = nullptr;   // DAct: [N]; BiasGradA: [M]; ACCUMULATES (+=)
  GemmType bias_grad_type = GemmType::F32;

  // Device memory of at least gemm_workspace_bytes(*this) bytes (256-byte aligned): scratch
  // for bias-gradient partial sums, then cuBLASLt's workspace (whatever is left is offered).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // BiasAct only (unbatched): D = dropout(act(pre)) when drop is active, the mask that of
  // Backend::dropout with this spec over the [M, N] output (element m·N + n), applied to D as
  // stored. With the exact-erf GELU or tanh it rides in the activation kernel; after cuBLASLt's
  // fused GELU-tanh or with act None it is one extra in-place pass over D.
  DropoutSpec drop;

  // false: never use cuBLASLt's fused epilogues, run them as project kernels (tests compare the
  // two paths; also the automatic fallback when cuBLASLt has no algorithm for the fused form).
  bool fuse_epilogue = true;
};

// GemmArgs for dense row-major operands, no epilogue: D[M, N] = op(A)·op(B), each matrix stored
// contiguously (lda = ta ? M : K, ldb = tb ? K : N, ldd = N). Callers add beta, batching, an
// epilogue as they need.
inline GemmArgs dense_gemm(bool ta, bool tb, int M, int N, int K, GemmType ab_type, GemmType d_type, const void* A,
                           const void* B, void* D, void* workspace, size_t workspace_bytes) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.M = M;
  g.N = N;
  g.K = K;
  g.ab_type = ab_type;
  g.d_type = d_type;
  g.A = A;
  g.lda = ta ? M : K;
  g.B = B;
  g.ldb = tb ? K : N;
  g.D = D;
  g.ldd = N;
  g.workspace = workspace;
  g.workspace_bytes = workspace_bytes;
  return g;
}

// The cuBLASLt part of every GEMM workspace: 32 MiB, what cuBLAS itself uses on Hopper.
constexpr size_t kGemmLtWorkspaceBytes = size_t(32) << 20;

// Workspace gemm() needs for these arguments (depends on shape and epilogue only).
size_t gemm_workspace_bytes(const GemmArgs& args);

// Validates (throwing vitcuda::Error naming "gemm" and the argument), then runs on `stream`.
void gemm(const GemmArgs& args, rt::Stream stream);

// ---- the epilogue kernels, usable alone -----------------------------------------------------
// y[m, n] = act(pre[m, n]) over an [M, N] matrix with leading dimension ld (T: float or bf16); with
// drop active, then dropout of the stored y (the mask of Backend::dropout at element m·N + n).
template <typename T>
void act_forward(const T* pre, T* y, Act act, int M, int N, int64_t ld, rt::Stream stream,
                 const DropoutSpec& drop = DropoutSpec{});

// dz[m, n] ⊙= act'(pre[m, n]) in place (act = None leaves dz as is) and, with bias_grad,
// bias_grad[n] += Σ_m dz[m, n] (after the product, as stored in T), summed in a fixed order:
// deterministic. With drop active, dz[m, n] first goes through dropout (the mask of
// Backend::dropout with that spec at element m·N + n, the dropped-out value rounded to T as that op
// stores it): the backward of y = dropout(act(pre)), in the same pass. TG: float or T. Needs
// act_backward_workspace_bytes(M, N) of workspace when bias_grad is given.
template <typename T, typename TG>
void act_backward(T* dz, const T* pre, Act act, int M, int N, int64_t ld, TG* bias_grad, void* workspace,
                  size_t workspace_bytes, rt::Stream stream, const DropoutSpec& drop = DropoutSpec{});
size_t act_backward_workspace_bytes(int M, int N);

VITCUDA_KERNELS_END
}  // namespace vitcuda
