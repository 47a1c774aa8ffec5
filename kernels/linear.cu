// vitcuda — linear forward/backward: three GEMMs and the activation epilogues of kernels/gemm.h.
//   forward            y = drop(act(x·wᵀ + b))  one GEMM; bias fused, GELU-tanh fused (cuBLASLt), erf
//                                          GELU / tanh one extra elementwise pass (gemm.h) that
//                                          also applies the dropout (an extra in-place pass after
//                                          cuBLASLt's GELU-tanh or without an activation)
//   backward, act      dy ← act'(pre) ⊙ drop(dy), db += Σ dy   one fused elementwise + column-sum
//                                          pass (also when only the dropout applies)
//   backward, dx       dx = dy·w            GEMM [R, N]·[N, K]
//   backward, dw (db)  dw += dyᵀ·x          GEMM with beta = 1 into TG; without an activation the
//                                          bias gradient rides on it (cuBLASLt BGRADB)
#include "kernels/linear.h"

#include <algorithm>
#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {

void check_sizes(const char* op, int R, int K, int N) {
  if (R < 0 || K <= 0 || N <= 0)
    throw Error(std::string(op) + ": R must be >= 0, K and N > 0 (got R=" + std::to_string(R) +
                ", K=" + std::to_string(K) + ", N=" + std::to_string(N) + ")");
}
void require(const char* op, const void* p, const char* name) {
  if (!p) throw Error(std::string(op) + ": " + name + " is null");
}
void check_workspace(const char* op, const void* ws, size_t bytes, int R, int K, int N) {
  const size_t need = linear_workspace_bytes(R, K, N);
  if (!ws) throw Error(std::string(op) + ": workspace is null (" + std::to_string(need) + " bytes needed)");
  if (bytes < need)
    throw Error(std::string(op) + ": workspace_bytes=" + std::to_string(bytes) + " is less than the " +
                std::to_string(need) + " bytes needed (linear_workspace_bytes)");
}

void check_drop(const char* op, const DropoutSpec& drop) {
  if (!(drop.p >= 0.f && drop.p < 1.f))
    throw Error(std::string(op) + ": dropout p must lie in [0, 1), got " + std::to_string(drop.p));
}

// Re-throws a gemm() error with the linear op and the GEMM's role in front.
template <typename Fn>
void run_gemm(const char* op, const char* role, Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    throw Error(std::string(op) + " (" + role + "): " + e.what());
  }
}

}  // namespace

size_t linear_workspace_bytes(int R, int K, int N) {
  check_sizes("linear_workspace_bytes", R, K, N);
  // The largest gemm() scratch: the bias-gradient partials over dy [R, N] (act_backward or the
  // column-sum fallback of the dw GEMM), plus cuBLASLt's part.
  GemmArgs a;
  a.M = N;
  a.N = K;
  a.K = R > 0 ? R : 1;
  a.epilogue = GemmEpilogue::BiasGradA;
  return std::max(gemm_workspace_bytes(a), act_backward_workspace_bytes(R > 0 ? R : 1, N) + kGemmLtWorkspaceBytes);
}

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, Act act, T* pre, T* y, int R, int K, int N, void* workspace,
                    size_t workspace_bytes, rt::Stream stream, const DropoutSpec& drop) {
  constexpr const char* op = "linear_forward";
  check_sizes(op, R, K, N);
  require(op, x, "x");
  require(op, w, "w");
  require(op, y, "y");
  if (act != Act::None) require(op, pre, "pre (needed when act != None)");
  check_drop(op, drop);
  check_workspace(op, workspace, workspace_bytes, R, K, N);
  if (R == 0) return;
  // y = x · wᵀ
  GemmArgs g =
      dense_gemm(false, true, R, N, K, gemm_type_of<T>(), gemm_type_of<T>(), x, w, y, workspace, workspace_bytes);
  g.epilogue = act == Act::None ? GemmEpilogue::None : GemmEpilogue::BiasAct;
  g.act = act;
  g.bias = b;
  g.aux = act == Act::None ? nullptr : pre;
  g.drop = drop;
  if (drop.active()) g.epilogue = GemmEpilogue::BiasAct;  // act None: bias, then the dropout pass
  run_gemm(op, "y = drop(act(x·wᵀ + b))", [&] { gemm(g, stream); });
}

template <typename T, typename TG>
void linear_backward(T* dy, const T* x, const T* w, Act act, const T* pre, T* dx, TG* dw, TG* db, int R, int K, int N,
                     void* workspace, size_t workspace_bytes, rt::Stream stream, const DropoutSpec& drop) {
  constexpr const char* op = "linear_backward";
  check_sizes(op, R, K, N);
  require(op, dy, "dy");
  if (act != Act::None) require(op, pre, "pre (needed when act != None)");
  if (dx) require(op, w, "w (needed for dx)");
  if (dw) require(op, x, "x (needed for dw)");
  check_drop(op, drop);
  check_workspace(op, workspace, workspace_bytes, R, K, N);
  if (R == 0) return;

  // 1. dy ← act'(pre) ⊙ dropout(dy), with db += Σ dy in the same pass.
  bool db_done = false;
  if (act != Act::None || drop.active()) {
    run_gemm(op, "dy ← act'(pre) ⊙ drop(dy)",
             [&] { act_backward<T, TG>(dy, pre, act, R, N, N, db, workspace, workspace_bytes, stream, drop); });
    db_done = true;
  }
  // 2. dx[R, K] = dy[R, N] · w[N, K].
  if (dx) {
    const GemmArgs g =
        dense_gemm(false, false, R, K, N, gemm_type_of<T>(), gemm_type_of<T>(), dy, w, dx, workspace, workspace_bytes);
    run_gemm(op, "dx = dy·w", [&] { gemm(g, stream); });
  }
  // 3. dw[N, K] += dy[R, N]ᵀ · x[R, K], carrying db += Σ_rows dy when not done yet.
  if (dw) {
    GemmArgs g =
        dense_gemm(true, false, N, K, R, gemm_type_of<T>(), gemm_type_of<TG>(), dy, x, dw, workspace, workspace_bytes);
    g.beta = 1.f;
    if (db && !db_done) {
      g.epilogue = GemmEpilogue::BiasGradA;
      g.bias_grad = db;
      g.bias_grad_type = gemm_type_of<TG>();
      db_done = true;
    }
    run_gemm(op, "dw += dyᵀ·x", [&] { gemm(g, stream); });
  }
  // 4. db alone (no dw wanted): the column sums of dy.
  if (db && !db_done) {
    run_gemm(op, "db += Σ dy",
             [&] { act_backward<T, TG>(dy, nullptr, Act::None, R, N, N, db, workspace, workspace_bytes, stream); });
  }
}

template void linear_forward<float>(const float*, const float*, const float*, Act, float*, float*, int, int, int, void*,
                                    size_t, rt::Stream, const DropoutSpec&);
template void linear_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, Act,
                                            __nv_bfloat16*, __nv_bfloat16*, int, int, int, void*, size_t, rt::Stream,
                                            const DropoutSpec&);
template void linear_backward<float, float>(float*, const float*, const float*, Act, const float*, float*, float*,
                                            float*, int, int, int, void*, size_t, rt::Stream, const DropoutSpec&);
template void linear_backward<__nv_bfloat16, float>(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, Act,
                                                    const __nv_bfloat16*, __nv_bfloat16*, float*, float*, int, int, int,
                                                    void*, size_t, rt::Stream, const DropoutSpec&);
template void linear_backward<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                            Act, const __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*,
                                                            __nv_bfloat16*, int, int, int, void*, size_t, rt::Stream,
                                                            const DropoutSpec&);

VITCUDA_KERNELS_END
}  // namespace vitcuda
