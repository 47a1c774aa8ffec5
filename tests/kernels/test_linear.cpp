// Linear layers (kernels/linear.cu) against the CPU reference vitcuda::ref::linear_forward /
// linear_backward in fp64, on inputs exactly representable in the storage type: every activation,
// with and without bias, odd sizes, fp32 and bf16 activations with fp32 or bf16 parameter
// gradients, and the Backend's conventions (dy overwritten by d(pre), dx overwritten, dw and db
// accumulated). ViT-B shapes natively only; argument validation everywhere.
#include <cmath>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/dropout.h"
#include "kernels/linear.h"

namespace vitcuda::test {
namespace {

struct Shape {
  int R, K, N;
};
const Shape kShapes[] = {{1, 8, 8}, {7, 13, 5}, {37, 24, 40}, {65, 64, 96}, {50, 3, 17}};

std::string describe(const Shape& s) {
  return "R=" + std::to_string(s.R) + " K=" + std::to_string(s.K) + " N=" + std::to_string(s.N);
}

std::vector<double> dbl(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<double> absd(const std::vector<float>& v) {
  std::vector<double> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = std::fabs(v[i]);
  return o;
}

template <typename T>
std::vector<float> rnd(size_t n, float lo, float hi, uint32_t seed) {
  return to_floats(convert<T>(random_floats(n, lo, hi, seed)));
}

template <typename T>
void check_forward(const Shape& s, Act act, bool with_bias) {
  SCOPED_TRACE(describe(s) + " act=" + act_name(act) + (with_bias ? " +bias" : ""));
  const std::vector<float> x = rnd<T>(size_t(s.R) * s.K, -1.f, 1.f, 10 + s.R),
                           w = rnd<T>(size_t(s.N) * s.K, -1.f, 1.f, 11 + s.K), b = rnd<T>(s.N, -1.f, 1.f, 12 + s.N);
  rt::DeviceBuffer<T> dx(convert<T>(x)), dw(convert<T>(w)), db(convert<T>(b)), dpre(size_t(s.R) * s.N),
      dy(size_t(s.R) * s.N);
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(s.R, s.K, s.N));
  linear_forward<T>(dx.get(), dw.get(), with_bias ? db.get() : nullptr, act, act == Act::None ? nullptr : dpre.get(),
                    dy.get(), s.R, s.K, s.N, ws.get(), ws.size(), nullptr);
  const std::vector<float> y = to_floats(dy.download());
  const std::vector<float> pre = act == Act::None ? y : to_floats(dpre.download());

  // fp64 reference, and |x|·|w|ᵀ to scale the fp32 accumulation error.
  const std::vector<double> xd = dbl(x), wd = dbl(w), bd = dbl(b);
  std::vector<double> pre_ref(size_t(s.R) * s.N), y_ref(pre_ref.size()), absdot(pre_ref.size());
  ref::linear_forward<double>(xd.data(), wd.data(), with_bias ? bd.data() : nullptr, act, pre_ref.data(), y_ref.data(),
                              s.R, s.K, s.N);
  if (act == Act::None) pre_ref = y_ref;
  const std::vector<double> xa = absd(x), wa = absd(w);
  ref::gemm<double>(false, true, s.R, s.N, s.K, 1.0, xa.data(), s.K, wa.data(), s.K, 0.0, absdot.data(), s.N);
  const double round = kIsBf16<T> ? 2 * kUBf16 : 0.0;  // one bf16 rounding, doubled for slack
  for (int r = 0; r < s.R; ++r)
    for (int n = 0; n < s.N; ++n) {
      const size_t i = size_t(r) * s.N + n;
      const double bi = with_bias ? b[n] : 0.0;
      // K fp32 products summed in any order: 2(K+1)·u32·Σ|x·w|, the bias add, one rounding to T.
      const double pre_tol = 2.0 * (s.K + 1) * kU32 * absdot[i] + 4 * kU32 * (std::fabs(bi) + std::fabs(pre_ref[i])) +
                             round * std::fabs(pre_ref[i]);
      ASSERT_NEAR(pre[i], pre_ref[i], pre_tol) << "pre[" << r << "][" << n << "]";
      if (act == Act::None) continue;
      // y = act(pre) from the stored pre (or the unrounded one, cuBLASLt's GELU-tanh): |act'| times
      // that rounding, fp32 evaluation of act, one rounding of y.
      const double xp = pre[i], want = ref::act_forward(act, xp);
      const double y_tol = std::fabs(ref::act_derivative(act, xp)) * (round * std::fabs(xp) + pre_tol) +
                           16 * kU32 * (std::fabs(xp) + 1.0) + round * std::fabs(want);
      ASSERT_NEAR(y[i], want, y_tol) << "y[" << r << "][" << n << "] pre=" << xp;
    }
}

template <typename T, typename TG>
void check_backward(const Shape& s, Act act, bool want_dx, bool want_dw, bool want_db) {
  SCOPED_TRACE(describe(s) + " act=" + act_name(act) + (want_dx ? " dx" : "") + (want_dw ? " dw" : "") +
               (want_db ? " db" : ""));
  const size_t rn = size_t(s.R) * s.N, rk = size_t(s.R) * s.K, nk = size_t(s.N) * s.K;
  const std::vector<float> dy0 = rnd<T>(rn, -1.f, 1.f, 20 + s.R), x = rnd<T>(rk, -1.f, 1.f, 21),
                           w = rnd<T>(nk, -1.f, 1.f, 22), pre = rnd<T>(rn, -3.f, 3.f, 23),
                           dw0 = rnd<TG>(nk, -1.f, 1.f, 24), db0 = rnd<TG>(s.N, -1.f, 1.f, 25);
  rt::DeviceBuffer<T> ddy(convert<T>(dy0)), dx_in(convert<T>(x)), dwt(convert<T>(w)), dpre(convert<T>(pre)), ddx(rk);
  rt::DeviceBuffer<TG> ddw(convert<TG>(dw0)), ddb(convert<TG>(db0));
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(s.R, s.K, s.N));
  linear_backward<T, TG>(ddy.get(), dx_in.get(), dwt.get(), act, act == Act::None ? nullptr : dpre.get(),
                         want_dx ? ddx.get() : nullptr, want_dw ? ddw.get() : nullptr, want_db ? ddb.get() : nullptr,
                         s.R, s.K, s.N, ws.get(), ws.size(), nullptr);
  const std::vector<float> dpre_got = to_floats(ddy.download());
  const double round = kIsBf16<T> ? 2 * kUBf16 : 0.0, round_g = kIsBf16<TG> ? 2 * kUBf16 : 0.0;

  // 1. dy is overwritten by dy ⊙ act'(pre) (untouched for act None): act' in fp32, one rounding.
  for (size_t i = 0; i < rn; ++i) {
    const double want = dy0[i] * ref::act_derivative(act, pre[i]);
    const double tol = 16 * kU32 * std::fabs(dy0[i]) * (1 + std::fabs(pre[i])) + round * std::fabs(want);
    ASSERT_NEAR(dpre_got[i], want, tol) << "dy (d pre)[" << i << "]";
  }
  // 2. The GEMMs and the bias reduction are checked on the stored d(pre), so step 1's rounding is
  // not counted twice: the fp64 reference runs with act None on dpre_got.
  std::vector<double> g = dbl(dpre_got), xd = dbl(x), wd = dbl(w);
  std::vector<double> dx_ref(rk, 0.0), dw_ref = dbl(dw0), db_ref = dbl(db0);
  ref::linear_backward<double>(g.data(), xd.data(), wd.data(), Act::None, nullptr, dx_ref.data(), dw_ref.data(),
                               db_ref.data(), s.R, s.K, s.N);
  const std::vector<double> ga = absd(dpre_got), xa = absd(x), wa = absd(w);
  std::vector<double> dx_abs(rk), dw_abs(nk);
  ref::gemm<double>(false, false, s.R, s.K, s.N, 1.0, ga.data(), s.N, wa.data(), s.K, 0.0, dx_abs.data(), s.K);
  ref::gemm<double>(true, false, s.N, s.K, s.R, 1.0, ga.data(), s.N, xa.data(), s.K, 0.0, dw_abs.data(), s.K);

  if (want_dx) {
    const std::vector<float> dx = to_floats(ddx.download());
    for (size_t i = 0; i < rk; ++i) {  // N products per element; one rounding to T
      const double tol = 2.0 * (s.N + 1) * kU32 * dx_abs[i] + round * std::fabs(dx_ref[i]);
      ASSERT_NEAR(dx[i], dx_ref[i], tol) << "dx[" << i << "]";
    }
  }
  const std::vector<float> dw = to_floats(ddw.download()), db = to_floats(ddb.download());
  for (size_t i = 0; i < nk; ++i) {  // R products added to the old value; one rounding to TG
    if (!want_dw) {
      ASSERT_EQ(dw[i], dw0[i]) << "dw[" << i << "] must be untouched";
      continue;
    }
    const double tol = 2.0 * (s.R + 1) * kU32 * (dw_abs[i] + std::fabs(dw0[i])) + round_g * std::fabs(dw_ref[i]);
    ASSERT_NEAR(dw[i], dw_ref[i], tol) << "dw[" << i << "]";
  }
  for (int n = 0; n < s.N; ++n) {  // R terms in a fixed fp32 order, plus the old value
    if (!want_db) {
      ASSERT_EQ(db[n], db0[n]) << "db[" << n << "] must be untouched";
      continue;
    }
    double abs_sum = std::fabs(db0[n]);
    for (int r = 0; r < s.R; ++r) abs_sum += ga[size_t(r) * s.N + n];
    const double tol = 2.0 * (s.R + 2) * kU32 * abs_sum + round_g * std::fabs(db_ref[n]) + 1e-7;
    ASSERT_NEAR(db[n], db_ref[n], tol) << "db[" << n << "]";
  }
}

// ---- dropout fused into the epilogues ---------------------------------------------------------
// The fused forward must give exactly (bitwise) the reference dropout (vitcuda::ref::dropout, the
// spec over the [R, N] output, element r·N + n) of the un-dropped output, rounded to T as the
// separate op stores it; pre is unchanged. Shapes cover N a multiple of 8 (16-byte path), N % 4 == 0
// but not of 8 (bf16 scalar path, whole Philox blocks), odd N (a Philox call per element), and
// `offset` shifts y and pre by one element (scalar path for every N; the un-dropped run gets the
// same offset, since it decides between cuBLASLt's fused GELU-tanh and our kernel).
const Shape kDropShapes[] = {{1, 8, 8}, {7, 13, 5}, {37, 24, 40}, {9, 8, 12}, {50, 3, 17}, {33, 16, 264}};

template <typename T>
std::vector<float> ref_dropout_of(const std::vector<float>& v, const DropoutSpec& spec) {
  std::vector<float> out(v.size());
  ref::dropout<float>(v.data(), out.data(), int64_t(v.size()), spec);
  return to_floats(convert<T>(out));
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <typename T>
void check_forward_dropout(const Shape& s, Act act, const DropoutSpec& spec, const DropoutSpec& ref_spec, int offset) {
  SCOPED_TRACE(describe(s) + " act=" + act_name(act) + " p=" + std::to_string(spec.p) +
               " offset=" + std::to_string(offset));
  const size_t rn = size_t(s.R) * s.N;
  rt::DeviceBuffer<T> dx(convert<T>(rnd<T>(size_t(s.R) * s.K, -1.f, 1.f, 30))),
      dw(convert<T>(rnd<T>(size_t(s.N) * s.K, -1.f, 1.f, 31))), db(convert<T>(rnd<T>(s.N, -1.f, 1.f, 32))),
      pre0(rn + offset), y0(rn + offset), pre1(rn + offset), y1(rn + offset);
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(s.R, s.K, s.N));
  const bool has_pre = act != Act::None;
  linear_forward<T>(dx.get(), dw.get(), db.get(), act, has_pre ? pre0.get() + offset : nullptr, y0.get() + offset, s.R,
                    s.K, s.N, ws.get(), ws.size(), nullptr);
  linear_forward<T>(dx.get(), dw.get(), db.get(), act, has_pre ? pre1.get() + offset : nullptr, y1.get() + offset, s.R,
                    s.K, s.N, ws.get(), ws.size(), nullptr, spec);
  std::vector<T> got_y(rn), got_pre(rn), y_plain(rn), pre_plain(rn);
  rt::copy_to_host(got_y.data(), y1.get() + offset, rn * sizeof(T));
  rt::copy_to_host(got_pre.data(), pre1.get() + offset, rn * sizeof(T));
  rt::copy_to_host(y_plain.data(), y0.get() + offset, rn * sizeof(T));
  rt::copy_to_host(pre_plain.data(), pre0.get() + offset, rn * sizeof(T));
  EXPECT_TRUE(bitwise_equal(to_floats(got_y), ref_dropout_of<T>(to_floats(y_plain), ref_spec)))
      << "y must be the reference dropout of the un-dropped y";
  if (has_pre) {
    EXPECT_TRUE(bitwise_equal(to_floats(got_pre), to_floats(pre_plain))) << "pre must not change";
  }
}

// Backward: dy ← act'(pre) ⊙ dropout(dy). Checked three ways: the elements the reference drops are
// exactly zero and the others are the reference's dropout(dy)·act'(pre) (act' in fp32, one
// rounding: the tolerance of check_backward); the whole result (dy, dx, dw, db) is bitwise that of
// the separate dropout op followed by the unfused backward (same kernels, same order; with act None
// the unfused db comes from the GEMM's bias-gradient epilogue, so db there gets the fp32 tolerance).
template <typename T, typename TG>
void check_backward_dropout(const Shape& s, Act act, const DropoutSpec& spec, const DropoutSpec& ref_spec) {
  SCOPED_TRACE(describe(s) + " act=" + act_name(act) + " p=" + std::to_string(spec.p));
  const size_t rn = size_t(s.R) * s.N, rk = size_t(s.R) * s.K, nk = size_t(s.N) * s.K;
  const std::vector<float> dy0 = rnd<T>(rn, -1.f, 1.f, 40 + s.R), x = rnd<T>(rk, -1.f, 1.f, 41),
                           w = rnd<T>(nk, -1.f, 1.f, 42), pre = rnd<T>(rn, -3.f, 3.f, 43);
  const bool has_pre = act != Act::None;
  rt::DeviceBuffer<T> dxin(convert<T>(x)), dwt(convert<T>(w)), dpre(convert<T>(pre));
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(s.R, s.K, s.N));
  std::vector<float> out[2][4];  // [fused?][dy, dx, dw, db]
  for (int fused = 0; fused < 2; ++fused) {
    rt::DeviceBuffer<T> ddy(convert<T>(dy0)), ddx(rk);
    rt::DeviceBuffer<TG> ddw(std::vector<TG>(nk, from_float<TG>(0.f))), ddb(std::vector<TG>(s.N, from_float<TG>(0.f)));
    if (!fused) dropout<T>(ddy.get(), ddy.get(), int64_t(rn), spec, nullptr);
    linear_backward<T, TG>(ddy.get(), dxin.get(), dwt.get(), act, has_pre ? dpre.get() : nullptr, ddx.get(), ddw.get(),
                           ddb.get(), s.R, s.K, s.N, ws.get(), ws.size(), nullptr, fused ? spec : DropoutSpec{});
    out[fused][0] = to_floats(ddy.download());
    out[fused][1] = to_floats(ddx.download());
    out[fused][2] = to_floats(ddw.download());
    out[fused][3] = to_floats(ddb.download());
  }
  const std::vector<float> dropped = ref_dropout_of<T>(dy0, ref_spec);
  const double round = kIsBf16<T> ? 2 * kUBf16 : 0.0;
  for (size_t i = 0; i < rn; ++i) {
    if (dropped[i] == 0.f && dy0[i] != 0.f) {
      ASSERT_EQ(out[1][0][i], 0.f) << "dy[" << i << "] is dropped by the reference";
      continue;
    }
    const double want = dropped[i] * ref::act_derivative(act, pre[i]);
    const double tol = 16 * kU32 * std::fabs(dropped[i]) * (1 + std::fabs(pre[i])) + round * std::fabs(want);
    ASSERT_NEAR(out[1][0][i], want, tol) << "dy (d pre)[" << i << "]";
  }
  EXPECT_TRUE(bitwise_equal(out[1][0], out[0][0])) << "dy differs from the separate dropout + backward";
  EXPECT_TRUE(bitwise_equal(out[1][1], out[0][1])) << "dx differs from the separate dropout + backward";
  EXPECT_TRUE(bitwise_equal(out[1][2], out[0][2])) << "dw differs from the separate dropout + backward";
  if (has_pre) {
    EXPECT_TRUE(bitwise_equal(out[1][3], out[0][3])) << "db differs from the separate dropout + backward";
  } else {
    for (int n = 0; n < s.N; ++n) {  // R terms summed in two fp32 orders
      double abs_sum = 0;
      for (int r = 0; r < s.R; ++r) abs_sum += std::fabs(out[1][0][size_t(r) * s.N + n]);
      const double tol = 4.0 * (s.R + 2) * kU32 * abs_sum + (kIsBf16<TG> ? 2 * kUBf16 * abs_sum : 0.0) + 1e-7;
      ASSERT_NEAR(out[1][3][n], out[0][3][n], tol) << "db[" << n << "]";
    }
  }
}

class Linear : public BackendTest {};

TEST_P(Linear, ForwardFusedDropoutIsTheReferenceMask) {
  const DropoutSpec spec{0.3f, 0x123456789abcdefull, 0xfedcba98ull << 20};
  for (const Shape& s : kDropShapes)
    for (Act act : kActs)
      for (int offset : {0, 1}) {
        check_forward_dropout<float>(s, act, spec, spec, offset);
        check_forward_dropout<__nv_bfloat16>(s, act, spec, spec, offset);
      }
}

TEST_P(Linear, BackwardFusedDropout) {
  const DropoutSpec spec{0.25f, 17, 3};
  for (const Shape& s : kDropShapes)
    for (Act act : kActs) {
      check_backward_dropout<float, float>(s, act, spec, spec);
      check_backward_dropout<__nv_bfloat16, float>(s, act, spec, spec);
    }
  check_backward_dropout<__nv_bfloat16, __nv_bfloat16>({37, 24, 40}, Act::GeluErf, spec, spec);
}

// stream_offset in device memory, read by the fused kernels: the same result as the stream folded in.
TEST_P(Linear, FusedDropoutReadsStreamOffsetOnDevice) {
  const uint64_t offset = 0x100000007ull;
  rt::DeviceBuffer<uint64_t> dev_offset(std::vector<uint64_t>{offset});
  const DropoutSpec dev{0.5f, 9, 40, dev_offset.get()}, folded{0.5f, 9, 40 + offset};
  for (Act act : {Act::None, Act::GeluErf, Act::GeluTanh}) {
    check_forward_dropout<__nv_bfloat16>({37, 24, 40}, act, dev, folded, 0);
    check_backward_dropout<__nv_bfloat16, float>({37, 24, 40}, act, dev, folded);
  }
}

TEST_P(Linear, ForwardF32) {
  for (const Shape& s : kShapes)
    for (Act act : kActs) {
      check_forward<float>(s, act, true);
      check_forward<float>(s, act, false);
    }
}
TEST_P(Linear, ForwardBf16) {
  for (const Shape& s : kShapes)
    for (Act act : kActs) {
      check_forward<__nv_bfloat16>(s, act, true);
      check_forward<__nv_bfloat16>(s, act, false);
    }
}
TEST_P(Linear, BackwardF32) {
  for (const Shape& s : kShapes)
    for (Act act : kActs) check_backward<float, float>(s, act, true, true, true);
}
TEST_P(Linear, BackwardBf16WithF32ParamGrads) {
  for (const Shape& s : kShapes)
    for (Act act : kActs) check_backward<__nv_bfloat16, float>(s, act, true, true, true);
}
TEST_P(Linear, BackwardBf16) {
  for (const Shape& s : kShapes)
    for (Act act : kActs) check_backward<__nv_bfloat16, __nv_bfloat16>(s, act, true, true, true);
}
TEST_P(Linear, BackwardSubsetsOfOutputs) {
  const Shape s{29, 24, 40};
  for (Act act : {Act::None, Act::GeluErf}) {
    check_backward<__nv_bfloat16, float>(s, act, false, true, true);   // patch_embed: no dx
    check_backward<__nv_bfloat16, float>(s, act, true, false, true);   // db without dw
    check_backward<__nv_bfloat16, float>(s, act, true, true, false);   // no bias
    check_backward<__nv_bfloat16, float>(s, act, true, false, false);  // dx only
  }
}
TEST_P(Linear, BackwardIsBitwiseReproducible) {
  const Shape s{77, 32, 48};
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    rt::DeviceBuffer<float> dy(random_floats(size_t(s.R) * s.N, -1.f, 1.f, 5)),
        x(random_floats(size_t(s.R) * s.K, -1.f, 1.f, 6)), w(random_floats(size_t(s.N) * s.K, -1.f, 1.f, 7)),
        pre(random_floats(size_t(s.R) * s.N, -2.f, 2.f, 8)), dx(size_t(s.R) * s.K),
        dw(std::vector<float>(size_t(s.N) * s.K, 0.f)), db(std::vector<float>(s.N, 0.f));
    rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(s.R, s.K, s.N));
    linear_backward<float, float>(dy.get(), x.get(), w.get(), Act::GeluErf, pre.get(), dx.get(), dw.get(), db.get(),
                                  s.R, s.K, s.N, ws.get(), ws.size(), nullptr);
    std::vector<float> all = dx.download();
    for (float v : dw.download()) all.push_back(v);
    for (float v : db.download()) all.push_back(v);
    if (run == 0)
      first = all;
    else
      EXPECT_EQ(std::memcmp(first.data(), all.data(), all.size() * sizeof(float)), 0);
  }
}

TEST_P(Linear, VitBaseShapesNative) {
  if (emulated()) GTEST_SKIP() << "ViT-B shapes run in the native build only";
  const int R = 2 * 197;
  for (Act act : {Act::GeluErf, Act::GeluTanh}) {
    check_forward<__nv_bfloat16>({R, 768, 3072}, act, true);  // fc1
    check_backward<__nv_bfloat16, float>({R, 768, 3072}, act, true, true, true);
  }
  check_forward<__nv_bfloat16>({R, 768, 2304}, Act::None, true);                      // qkv
  check_backward<__nv_bfloat16, float>({R, 3072, 768}, Act::None, true, true, true);  // fc2
  check_backward<__nv_bfloat16, float>({R, 768, 768}, Act::None, true, true, true);   // proj
}

TEST_P(Linear, RejectsBadArguments) {
  const int R = 4, K = 8, N = 8;
  rt::DeviceBuffer<float> x(R * K), w(N * K), b(N), pre(R * N), y(R * N), dx(R * K), dw(N * K), db(N);
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(R, K, N));
  float *wp = w.get(), *bp = b.get(), *yp = y.get();
  auto fwd = [=](const float* xp, Act act, float* prep, void* wsp, size_t wsb, int k) {
    return [=] { linear_forward<float>(xp, wp, bp, act, prep, yp, R, k, N, wsp, wsb, nullptr); };
  };
  fwd(x.get(), Act::GeluErf, pre.get(), ws.get(), ws.size(), K)();  // accepted
  expect_error(fwd(nullptr, Act::None, nullptr, ws.get(), ws.size(), K), {"linear_forward", "x is null"});
  expect_error(fwd(x.get(), Act::GeluErf, nullptr, ws.get(), ws.size(), K), {"linear_forward", "pre"});
  expect_error(fwd(x.get(), Act::None, nullptr, nullptr, 0, K), {"linear_forward", "workspace"});
  expect_error(fwd(x.get(), Act::None, nullptr, ws.get(), 4096, K), {"linear_forward", "workspace_bytes"});
  expect_error(fwd(x.get(), Act::None, nullptr, ws.get(), ws.size(), 0), {"linear_forward", "K"});
  expect_error(
      [&] {
        linear_forward<float>(x.get(), wp, bp, Act::GeluErf, pre.get(), yp, R, K, N, ws.get(), ws.size(), nullptr,
                              DropoutSpec{1.f, 1, 2});
      },
      {"linear_forward", "dropout p"});
  expect_error(
      [&] {
        linear_backward<float, float>(y.get(), x.get(), w.get(), Act::Tanh, nullptr, dx.get(), dw.get(), db.get(), R, K,
                                      N, ws.get(), ws.size(), nullptr);
      },
      {"linear_backward", "pre"});
  expect_error(
      [&] {
        linear_backward<float, float>(y.get(), nullptr, w.get(), Act::None, nullptr, dx.get(), dw.get(), db.get(), R, K,
                                      N, ws.get(), ws.size(), nullptr);
      },
      {"linear_backward", "x"});
  expect_error(
      [&] {
        linear_backward<float, float>(nullptr, x.get(), w.get(), Act::None, nullptr, dx.get(), dw.get(), db.get(), R, K,
                                      N, ws.get(), ws.size(), nullptr);
      },
      {"linear_backward", "dy"});
  expect_error(
      [&] {
        linear_backward<float, float>(y.get(), x.get(), w.get(), Act::None, nullptr, dx.get(), dw.get(), db.get(), R, K,
                                      N, ws.get(), 100, nullptr);
      },
      {"linear_backward", "workspace_bytes"});
}

INSTANTIATE_TEST_SUITE_P(Backends, Linear, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
