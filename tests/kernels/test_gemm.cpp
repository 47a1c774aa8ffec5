// The project GEMM (kernels/gemm.cu) against an fp64 reference product (vitcuda::ref::gemm<double>
// on the same, exactly representable inputs): every transpose combination, odd sizes, padded
// leading dimensions, batches, fp32 and bf16, accumulation (beta = 1), and every epilogue with
// every activation, both through cuBLASLt's fused epilogues (fuse_epilogue = true; the CPU stand-in
// for cuBLASLt under emulation) and through the project's epilogue kernels (false).
// ViT-B shapes run natively only; argument validation runs everywhere.
#include <cmath>
#include <limits>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/gemm.h"

namespace vitcuda::test {
namespace {

struct Case {
  bool ta, tb;
  int M, N, K;
  int pad;  // extra elements per row of every stored matrix (ld = cols + pad)
};

std::string describe(const Case& c) {
  return std::string("ta=") + (c.ta ? "T" : "N") + " tb=" + (c.tb ? "T" : "N") + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " pad=" + std::to_string(c.pad);
}

// Odd sizes, sizes below and above a tile, 1s, and padded leading dimensions.
const Case kCases[] = {{false, false, 7, 13, 5, 0},   {false, true, 7, 13, 5, 3},   {true, false, 33, 17, 70, 0},
                       {true, true, 33, 17, 70, 1},   {false, true, 1, 1, 1, 0},    {false, true, 65, 48, 96, 8},
                       {true, false, 48, 40, 129, 0}, {false, false, 16, 24, 32, 0}};

struct Matrix {
  std::vector<float> v;  // values exactly representable in the storage type
  int rows, cols;
  int64_t ld;
};

template <typename T>
Matrix make_matrix(int rows, int cols, int64_t ld, float lo, float hi, uint32_t seed) {
  Matrix m{to_floats(convert<T>(random_floats(static_cast<size_t>(rows - 1) * ld + cols, lo, hi, seed))), rows, cols,
           ld};
  return m;
}

struct Product {
  std::vector<double> value;   // op(A)·op(B), row-major [M, N]
  std::vector<double> absdot;  // |op(A)|·|op(B)|: scales the rounding error of the fp32 sums
};

Product reference_product(const Case& c, const Matrix& A, const Matrix& B) {
  std::vector<double> a(A.v.begin(), A.v.end()), b(B.v.begin(), B.v.end());
  Product p;
  p.value.assign(static_cast<size_t>(c.M) * c.N, 0.0);
  p.absdot.assign(p.value.size(), 0.0);
  ref::gemm<double>(c.ta, c.tb, c.M, c.N, c.K, 1.0, a.data(), A.ld, b.data(), B.ld, 0.0, p.value.data(), c.N);
  for (double& x : a) x = std::fabs(x);
  for (double& x : b) x = std::fabs(x);
  ref::gemm<double>(c.ta, c.tb, c.M, c.N, c.K, 1.0, a.data(), A.ld, b.data(), B.ld, 0.0, p.absdot.data(), c.N);
  return p;
}

// fp32 accumulation of K products (exact for bf16 inputs, one rounding for fp32 inputs) in an
// unknown order: |error| <= K·u32·Σ|a·b| (recursive-summation bound), doubled for slack.
double gemm_tol(const Case& c, double absdot) { return 2.0 * (c.K + 1) * kU32 * absdot; }

struct Operands {
  Matrix A, B;
};
template <typename TAB>
Operands make_operands(const Case& c, uint32_t seed) {
  const int a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  return {make_matrix<TAB>(a_rows, a_cols, a_cols + c.pad, -1.f, 1.f, seed),
          make_matrix<TAB>(b_rows, b_cols, b_cols + c.pad, -1.f, 1.f, seed + 1)};
}

template <typename TAB, typename TD>
GemmArgs base_args(const Case& c, const void* A, const void* B, void* D, int64_t ldd) {
  GemmArgs g = dense_gemm(c.ta, c.tb, c.M, c.N, c.K, gemm_type_of<TAB>(), gemm_type_of<TD>(), A, B, D, nullptr, 0);
  g.lda += c.pad;  // padded rows: leading dimensions past the dense ones
  g.ldb += c.pad;
  g.ldd = ldd;
  return g;
}

struct Workspace {
  explicit Workspace(size_t bytes) : buf(bytes) {}
  rt::DeviceBuffer<unsigned char> buf;
};

// D = alpha·op(A)op(B) + beta·D0 (+ bias), batched.
template <typename TAB, typename TD>
void check_plain(const Case& c, float alpha, float beta, bool with_bias, int batch) {
  SCOPED_TRACE(describe(c) + " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) +
               (with_bias ? " +bias" : "") + " batch=" + std::to_string(batch));
  const int64_t ldd = c.N + c.pad;
  std::vector<Operands> ops;
  for (int b = 0; b < batch; ++b) ops.push_back(make_operands<TAB>(c, 1000 + 17 * b + c.M + c.K));
  const int64_t sa = ops[0].A.v.size() + 5, sb = ops[0].B.v.size() + 3;  // odd batch strides
  const int64_t sd = static_cast<int64_t>(c.M - 1) * ldd + c.N + 7;
  std::vector<float> a_all(sa * batch, 0.f), b_all(sb * batch, 0.f), d0(sd * batch);
  for (int b = 0; b < batch; ++b) {
    std::copy(ops[b].A.v.begin(), ops[b].A.v.end(), a_all.begin() + b * sa);
    std::copy(ops[b].B.v.begin(), ops[b].B.v.end(), b_all.begin() + b * sb);
  }
  d0 = to_floats(convert<TD>(random_floats(d0.size(), -1.f, 1.f, 77)));
  if (beta == 0.f)  // never read: NaN shows up if it is
    std::fill(d0.begin(), d0.end(), std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> bias = to_floats(convert<TD>(random_floats(c.N, -1.f, 1.f, 78)));

  rt::DeviceBuffer<TAB> dA(convert<TAB>(a_all)), dB(convert<TAB>(b_all));
  rt::DeviceBuffer<TD> dD(convert<TD>(d0)), dbias(convert<TD>(bias));
  GemmArgs g = base_args<TAB, TD>(c, dA.get(), dB.get(), dD.get(), ldd);
  g.alpha = alpha;
  g.beta = beta;
  g.batch = batch;
  g.stride_a = sa;
  g.stride_b = sb;
  g.stride_d = sd;
  g.bias = with_bias ? dbias.get() : nullptr;
  Workspace ws(gemm_workspace_bytes(g));
  g.workspace = ws.buf.get();
  g.workspace_bytes = ws.buf.size();
  gemm(g, nullptr);
  const std::vector<float> got = to_floats(dD.download());

  for (int b = 0; b < batch; ++b) {
    const Product p = reference_product(c, ops[b].A, ops[b].B);
    for (int m = 0; m < c.M; ++m)
      for (int n = 0; n < c.N; ++n) {
        const size_t at = b * sd + static_cast<size_t>(m) * ldd + n, i = static_cast<size_t>(m) * c.N + n;
        const double old = beta == 0.f ? 0.0 : beta * d0[at];
        const double bi = with_bias ? bias[n] : 0.0;
        const double want = alpha * p.value[i] + old + bi;
        // the product's rounding, then fp32 adds of the old value and the bias (u32 each), then
        // one rounding to bf16 output (half an ulp; twice for slack).
        const double tol = gemm_tol(c, std::fabs(alpha) * p.absdot[i]) +
                           4 * kU32 * (std::fabs(old) + std::fabs(bi) + std::fabs(want)) +
                           (kIsBf16<TD> ? 2 * kUBf16 * std::fabs(want) : 0.0);
        ASSERT_NEAR(got[at], want, tol) << "D[" << b << "][" << m << "][" << n << "]";
      }
    // padding between rows and batches untouched
    for (int m = 0; m + 1 < c.M; ++m)
      for (int n = c.N; n < ldd; ++n) {
        const size_t at = b * sd + static_cast<size_t>(m) * ldd + n;
        if (std::isnan(d0[at]))
          ASSERT_TRUE(std::isnan(got[at])) << "padding D[" << b << "][" << m << "][" << n << "]";
        else
          ASSERT_EQ(got[at], d0[at]) << "padding D[" << b << "][" << m << "][" << n << "]";
      }
  }
}

class Gemm : public BackendTest {};

TEST_P(Gemm, PlainF32) {
  for (const Case& c : kCases) check_plain<float, float>(c, 1.f, 0.f, false, 1);
}
TEST_P(Gemm, PlainBf16) {
  for (const Case& c : kCases) check_plain<__nv_bfloat16, __nv_bfloat16>(c, 1.f, 0.f, false, 1);
}
TEST_P(Gemm, Bf16InputsF32Output) {
  for (const Case& c : kCases) check_plain<__nv_bfloat16, float>(c, 1.f, 0.f, false, 1);
}
TEST_P(Gemm, AccumulatesWithBetaOne) {
  for (const Case& c : kCases) {
    check_plain<float, float>(c, 0.5f, 1.f, false, 1);
    check_plain<__nv_bfloat16, float>(c, 1.f, 1.f, false, 1);  // fp32 parameter gradients
    check_plain<__nv_bfloat16, __nv_bfloat16>(c, 1.f, 1.f, false, 1);
  }
}
TEST_P(Gemm, Bias) {
  for (const Case& c : kCases) {
    check_plain<float, float>(c, 1.f, 0.f, true, 1);
    check_plain<__nv_bfloat16, __nv_bfloat16>(c, 1.f, 0.f, true, 1);
  }
}
TEST_P(Gemm, Batched) {
  check_plain<float, float>({false, true, 9, 11, 13, 1}, 1.f, 0.f, false, 3);
  check_plain<__nv_bfloat16, __nv_bfloat16>({true, false, 17, 8, 24, 0}, 1.f, 0.f, true, 4);
  check_plain<__nv_bfloat16, float>({false, false, 5, 7, 3, 2}, 1.f, 1.f, false, 2);
}

// ---- BiasAct: aux = op(A)op(B) + bias, D = act(aux) ----------------------------------------
template <typename T>
void check_bias_act(const Case& c, Act act, bool with_bias, bool fuse) {
  SCOPED_TRACE(describe(c) + " act=" + act_name(act) + (with_bias ? " +bias" : "") + (fuse ? " fused" : " unfused"));
  const int64_t ldd = c.N + c.pad;
  const Operands o = make_operands<T>(c, 2000 + c.M + c.N);
  const std::vector<float> bias = to_floats(convert<T>(random_floats(c.N, -1.f, 1.f, 79)));
  const size_t dsize = static_cast<size_t>(c.M - 1) * ldd + c.N;
  rt::DeviceBuffer<T> dA(convert<T>(o.A.v)), dB(convert<T>(o.B.v)), dbias(convert<T>(bias)), dD(dsize), daux(dsize);
  GemmArgs g = base_args<T, T>(c, dA.get(), dB.get(), dD.get(), ldd);
  g.epilogue = GemmEpilogue::BiasAct;
  g.act = act;
  g.bias = with_bias ? dbias.get() : nullptr;
  g.aux = daux.get();
  g.fuse_epilogue = fuse;
  Workspace ws(gemm_workspace_bytes(g));
  g.workspace = ws.buf.get();
  g.workspace_bytes = ws.buf.size();
  gemm(g, nullptr);
  const std::vector<float> y = to_floats(dD.download()), pre = to_floats(daux.download());
  const Product p = reference_product(c, o.A, o.B);
  for (int m = 0; m < c.M; ++m)
    for (int n = 0; n < c.N; ++n) {
      const size_t at = static_cast<size_t>(m) * ldd + n, i = static_cast<size_t>(m) * c.N + n;
      const double bi = with_bias ? bias[n] : 0.0;
      const double want_pre = p.value[i] + bi;
      const double round = kIsBf16<T> ? 2 * kUBf16 : 0.0;  // one bf16 rounding (x2 slack)
      const double pre_tol =
          gemm_tol(c, p.absdot[i]) + 4 * kU32 * (std::fabs(bi) + std::fabs(want_pre)) + round * std::fabs(want_pre);
      if (act == Act::None) {  // plain bias: no aux is written, D holds the pre-activation
        ASSERT_NEAR(y[at], want_pre, pre_tol) << "y[" << m << "][" << n << "]";
        continue;
      }
      ASSERT_NEAR(pre[at], want_pre, pre_tol) << "pre[" << m << "][" << n << "]";
      // y is act of the stored pre (unfused) or of the unrounded fp32 value (cuBLASLt): compare
      // with act(stored pre) allowing |act'|·(that rounding), fp32 evaluation of act (a few ulp of
      // |x| + |act|), and the rounding of y itself.
      const double x = pre[at];
      const double want_y = ref::act_forward(act, x);
      const double y_tol = std::fabs(ref::act_derivative(act, x)) * (round * std::fabs(x) + pre_tol) +
                           16 * kU32 * (std::fabs(x) + 1.0) + round * std::fabs(want_y);
      ASSERT_NEAR(y[at], want_y, y_tol) << "y[" << m << "][" << n << "] pre=" << x;
    }
}

TEST_P(Gemm, BiasActEveryActivation) {
  for (const Case& c : kCases)
    for (Act act : kActs)
      for (bool fuse : {true, false}) {
        check_bias_act<float>(c, act, true, fuse);
        check_bias_act<__nv_bfloat16>(c, act, true, fuse);
      }
  check_bias_act<__nv_bfloat16>({false, true, 9, 16, 24, 0}, Act::GeluTanh, false, true);
  check_bias_act<__nv_bfloat16>({false, true, 9, 16, 24, 0}, Act::GeluErf, false, false);
}

// ---- DAct: D = (op(A)op(B)) ⊙ act'(aux), bias_grad += Σ_m D ----------------------------------
template <typename T, typename TG>
void check_dact(const Case& c, Act act, bool with_bgrad, bool fuse) {
  SCOPED_TRACE(describe(c) + " act=" + act_name(act) + (with_bgrad ? " +bias_grad" : "") +
               (fuse ? " fused" : " unfused"));
  const int64_t ldd = c.N + c.pad;
  const Operands o = make_operands<T>(c, 3000 + c.M + c.N);
  const size_t dsize = static_cast<size_t>(c.M - 1) * ldd + c.N;
  const std::vector<float> aux = to_floats(convert<T>(random_floats(dsize, -3.f, 3.f, 80)));
  const std::vector<float> bg0 = to_floats(convert<TG>(random_floats(c.N, -1.f, 1.f, 81)));
  rt::DeviceBuffer<T> dA(convert<T>(o.A.v)), dB(convert<T>(o.B.v)), dD(dsize), daux(convert<T>(aux));
  rt::DeviceBuffer<TG> dbg(convert<TG>(bg0));
  GemmArgs g = base_args<T, T>(c, dA.get(), dB.get(), dD.get(), ldd);
  g.epilogue = GemmEpilogue::DAct;
  g.act = act;
  g.aux = daux.get();
  g.bias_grad = with_bgrad ? dbg.get() : nullptr;
  g.bias_grad_type = gemm_type_of<TG>();
  g.fuse_epilogue = fuse;
  Workspace ws(gemm_workspace_bytes(g));
  g.workspace = ws.buf.get();
  g.workspace_bytes = ws.buf.size();
  gemm(g, nullptr);
  const std::vector<float> d = to_floats(dD.download()), bg = to_floats(dbg.download());
  const Product p = reference_product(c, o.A, o.B);
  const double round = kIsBf16<T> ? 2 * kUBf16 : 0.0;
  for (int m = 0; m < c.M; ++m)
    for (int n = 0; n < c.N; ++n) {
      const size_t at = static_cast<size_t>(m) * ldd + n, i = static_cast<size_t>(m) * c.N + n;
      const double dact = ref::act_derivative(act, aux[at]);
      const double want = p.value[i] * dact;
      // the product's error scaled by |act'|, act' in fp32 (a few ulp of its terms, |x|·|φ| <= 1),
      // then one rounding of D.
      const double tol = gemm_tol(c, p.absdot[i]) * std::fabs(dact) +
                         16 * kU32 * std::fabs(p.value[i]) * (1 + std::fabs(aux[at])) + round * std::fabs(want) +
                         (kIsBf16<T> ? 2 * kUBf16 * gemm_tol(c, p.absdot[i]) : 0.0);
      ASSERT_NEAR(d[at], want, tol) << "D[" << m << "][" << n << "]";
    }
  if (!with_bgrad) {
    for (int n = 0; n < c.N; ++n) ASSERT_EQ(bg[n], bg0[n]);
    return;
  }
  for (int n = 0; n < c.N; ++n) {
    // Σ_m of D: summed as stored (unfused) or before D's rounding (cuBLASLt), in fp32 in some
    // order: M·u32·Σ|D| plus one bf16 rounding per term, then added to the old value (and
    // rounded to TG).
    double want = 0, abs_sum = 0;
    for (int m = 0; m < c.M; ++m) {
      const double v = d[static_cast<size_t>(m) * ldd + n];
      want += v;
      abs_sum += std::fabs(v);
    }
    want += bg0[n];
    const double tol = 2.0 * (c.M + 2) * kU32 * (abs_sum + std::fabs(bg0[n])) + round * abs_sum +
                       (kIsBf16<TG> ? 2 * kUBf16 * std::fabs(want) : 0.0) + 1e-6;
    ASSERT_NEAR(bg[n], want, tol) << "bias_grad[" << n << "]";
  }
}

TEST_P(Gemm, DActEveryActivation) {
  for (const Case& c : kCases)
    for (Act act : kActs)
      for (bool fuse : {true, false}) {
        check_dact<float, float>(c, act, true, fuse);
        check_dact<__nv_bfloat16, float>(c, act, true, fuse);
      }
  check_dact<__nv_bfloat16, __nv_bfloat16>({false, false, 40, 24, 16, 0}, Act::GeluTanh, true, true);
  check_dact<__nv_bfloat16, float>({false, false, 40, 24, 16, 0}, Act::GeluErf, false, false);
  check_dact<__nv_bfloat16, float>({false, false, 40, 24, 16, 0}, Act::GeluTanh, false, true);
}

// ---- BiasGradA: D += op(A)op(B), bias_grad[m] += Σ_k op(A)[m, k] (a weight gradient) ----------
template <typename T, typename TG>
void check_bias_grad_a(const Case& c, bool fuse) {
  SCOPED_TRACE(describe(c) + (fuse ? " fused" : " unfused"));
  const int64_t ldd = c.N + c.pad;
  const Operands o = make_operands<T>(c, 4000 + c.M + c.N);
  const size_t dsize = static_cast<size_t>(c.M - 1) * ldd + c.N;
  const std::vector<float> d0 = to_floats(convert<TG>(random_floats(dsize, -1.f, 1.f, 82)));
  const std::vector<float> bg0 = to_floats(convert<TG>(random_floats(c.M, -1.f, 1.f, 83)));
  rt::DeviceBuffer<T> dA(convert<T>(o.A.v)), dB(convert<T>(o.B.v));
  rt::DeviceBuffer<TG> dD(convert<TG>(d0)), dbg(convert<TG>(bg0));
  GemmArgs g = base_args<T, TG>(c, dA.get(), dB.get(), dD.get(), ldd);
  g.beta = 1.f;
  g.epilogue = GemmEpilogue::BiasGradA;
  g.bias_grad = dbg.get();
  g.bias_grad_type = gemm_type_of<TG>();
  g.fuse_epilogue = fuse;
  Workspace ws(gemm_workspace_bytes(g));
  g.workspace = ws.buf.get();
  g.workspace_bytes = ws.buf.size();
  gemm(g, nullptr);
  const std::vector<float> d = to_floats(dD.download()), bg = to_floats(dbg.download());
  const Product p = reference_product(c, o.A, o.B);
  const double round = kIsBf16<TG> ? 2 * kUBf16 : 0.0;
  for (int m = 0; m < c.M; ++m) {
    for (int n = 0; n < c.N; ++n) {
      const size_t at = static_cast<size_t>(m) * ldd + n, i = static_cast<size_t>(m) * c.N + n;
      const double want = p.value[i] + d0[at];
      const double tol =
          gemm_tol(c, p.absdot[i]) + 4 * kU32 * (std::fabs(d0[at]) + std::fabs(want)) + round * std::fabs(want);
      ASSERT_NEAR(d[at], want, tol) << "D[" << m << "][" << n << "]";
    }
    double want = bg0[m], abs_sum = std::fabs(bg0[m]);
    for (int k = 0; k < c.K; ++k) {  // op(A)[m, k] = A[k, m]
      const double v = o.A.v[static_cast<size_t>(k) * o.A.ld + m];
      want += v;
      abs_sum += std::fabs(v);
    }
    ASSERT_NEAR(bg[m], want, 2.0 * (c.K + 2) * kU32 * abs_sum + round * std::fabs(want) + 1e-6)
        << "bias_grad[" << m << "]";
  }
}

TEST_P(Gemm, BiasGradOfA) {
  for (const Case& c : kCases) {
    if (!c.ta) continue;
    for (bool fuse : {true, false}) {
      check_bias_grad_a<float, float>(c, fuse);
      check_bias_grad_a<__nv_bfloat16, float>(c, fuse);
      check_bias_grad_a<__nv_bfloat16, __nv_bfloat16>(c, fuse);
    }
  }
}

// ---- ViT-B shapes (batch 2 · 197 tokens), natively only: too slow for the emulator under ASan --
TEST_P(Gemm, VitBaseShapesNative) {
  if (emulated()) GTEST_SKIP() << "ViT-B shapes run in the native build only";
  const int R = 2 * 197, D = 768, Hd = 3072;
  check_plain<__nv_bfloat16, __nv_bfloat16>({false, true, R, 3 * D, D, 0}, 1.f, 0.f, true, 1);  // qkv
  for (bool fuse : {true, false}) {
    check_bias_act<__nv_bfloat16>({false, true, R, Hd, D, 0}, Act::GeluTanh, true, fuse);  // fc1
    check_bias_act<__nv_bfloat16>({false, true, R, Hd, D, 0}, Act::GeluErf, true, fuse);
    check_dact<__nv_bfloat16, float>({false, false, R, Hd, D, 0}, Act::GeluTanh, true, fuse);  // fc2 dx
    check_bias_grad_a<__nv_bfloat16, float>({true, false, Hd, D, R, 0}, fuse);                 // fc1 dw, db
  }
  check_plain<__nv_bfloat16, float>({true, false, D, Hd, R, 0}, 1.f, 1.f, false, 1);  // fc2 dw
}

// ---- argument validation ------------------------------------------------------------------
TEST_P(Gemm, RejectsBadArguments) {
  const Case c{false, true, 8, 8, 8, 0};
  rt::DeviceBuffer<float> A(64), B(64), D(64), aux(64), bg(8);
  GemmArgs good = base_args<float, float>(c, A.get(), B.get(), D.get(), 8);
  Workspace ws(gemm_workspace_bytes(good));
  good.workspace = ws.buf.get();
  good.workspace_bytes = ws.buf.size();
  gemm(good, nullptr);  // the baseline is accepted

  auto with = [&](auto change) {
    GemmArgs g = good;
    change(g);
    return [g] { gemm(g, nullptr); };
  };
  expect_error(with([](GemmArgs& g) { g.A = nullptr; }), {"gemm", "A is null"});
  expect_error(with([](GemmArgs& g) { g.D = nullptr; }), {"gemm", "D is null"});
  expect_error(with([](GemmArgs& g) { g.K = 0; }), {"gemm", "K"});
  expect_error(with([](GemmArgs& g) { g.lda = 4; }), {"gemm", "lda"});
  expect_error(with([](GemmArgs& g) { g.ldb = 7; }), {"gemm", "ldb"});
  expect_error(with([](GemmArgs& g) { g.ldd = 7; }), {"gemm", "ldd"});
  expect_error(with([](GemmArgs& g) { g.workspace = nullptr; }), {"gemm", "workspace"});
  expect_error(with([](GemmArgs& g) { g.workspace_bytes = 1024; }), {"gemm", "workspace_bytes"});
  expect_error(with([](GemmArgs& g) { g.d_type = GemmType::BF16; }), {"gemm", "d_type"});
  expect_error(with([&](GemmArgs& g) {
                 g.epilogue = GemmEpilogue::BiasAct;
                 g.act = Act::GeluErf;
               }),
               {"gemm", "aux"});
  expect_error(with([&](GemmArgs& g) {
                 g.epilogue = GemmEpilogue::BiasAct;
                 g.act = Act::GeluErf;
                 g.aux = aux.get();
                 g.beta = 1.f;
               }),
               {"gemm", "beta"});
  expect_error(with([&](GemmArgs& g) {
                 g.epilogue = GemmEpilogue::BiasGradA;
                 g.bias_grad = bg.get();
               }),
               {"gemm", "trans_a"});
  expect_error(with([&](GemmArgs& g) {
                 g.batch = 2;
                 g.epilogue = GemmEpilogue::BiasAct;
               }),
               {"gemm", "batch"});
  // a bias gradient needs scratch: the plain workspace size is too small for it
  expect_error(with([&](GemmArgs& g) {
                 g.trans_a = true;
                 g.epilogue = GemmEpilogue::BiasGradA;
                 g.bias_grad = bg.get();
                 g.workspace_bytes = kGemmLtWorkspaceBytes;
               }),
               {"gemm", "workspace_bytes"});
  expect_error(
      [&] { act_backward<float, float>(D.get(), nullptr, Act::GeluErf, 8, 8, 8, nullptr, nullptr, 0, nullptr); },
      {"act_backward", "pre"});
  expect_error(
      [&] { act_backward<float, float>(D.get(), aux.get(), Act::GeluErf, 8, 8, 8, bg.get(), nullptr, 0, nullptr); },
      {"act_backward", "workspace"});
}

INSTANTIATE_TEST_SUITE_P(Backends, Gemm, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
