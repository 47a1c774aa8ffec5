// Fused AdamW and the global sum of squares (kernels/adamw.cu) against the CPU reference
// (vitcuda::ref::adamw_update, ref::sum_squares): segments with and without weight decay, off
// the 4-element vector grid, unsorted, with gaps, more than one launch's worth; fp32 and bf16
// compute copies; deterministic sums.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/adamw.h"

namespace vitcuda::test {
namespace {

class AdamWKernel : public BackendTest {};

struct State {
  std::vector<float> p, g, m, v;
};

State make_state(int64_t n, uint32_t seed) {
  State s;
  s.p = random_floats(n, -1.f, 1.f, seed);
  s.g = random_floats(n, -0.1f, 0.1f, seed + 1);
  s.m = random_floats(n, -0.05f, 0.05f, seed + 2);
  s.v = random_floats(n, 0.f, 1e-2f, seed + 3);
  for (int64_t i = 0; i < n; i += 17) s.g[i] = 0.f;  // a zero gradient: update from m alone
  return s;
}

bool covered(const std::vector<AdamWSegment>& segs, int64_t i) {
  for (const auto& s : segs)
    if (i >= s.offset && i < s.offset + s.count) return true;
  return false;
}

// params: 0 none, 1 separate buffer, 2 the master arena itself (fp32 only).
template <typename TP>
void check_adamw(int64_t n, const std::vector<AdamWSegment>& segs, const AdamWHyper& h, int params_mode) {
  SCOPED_TRACE("n=" + std::to_string(n) + " segments=" + std::to_string(segs.size()) +
               " step=" + std::to_string(h.step) + " params_mode=" + std::to_string(params_mode));
  const State s0 = make_state(n, 500 + static_cast<uint32_t>(n));
  State ref = s0;
  ref::adamw_update(ref.p.data(), ref.g.data(), ref.m.data(), ref.v.data(), h, segs.data(),
                    static_cast<int>(segs.size()));

  rt::DeviceBuffer<float> p(s0.p), g(s0.g), m(s0.m), v(s0.v);
  const TP sentinel = from_float<TP>(-7.f);
  rt::DeviceBuffer<TP> params(std::vector<TP>(std::max<int64_t>(n, 1), sentinel));
  TP* pp = nullptr;
  if (params_mode == 1) pp = params.get();
  if constexpr (std::is_same_v<TP, float>)
    if (params_mode == 2) pp = p.get();
  adamw_update<TP>(p.get(), g.get(), m.get(), v.get(), pp, n, h, segs.data(), static_cast<int>(segs.size()), nullptr);
  const std::vector<float> gp = p.download(), gm = m.download(), gv = v.download();
  const std::vector<TP> gparams = params.download();
  ASSERT_EQ(g.download(), s0.g) << "grads must not change";

  const double inv_bc1 = 1.0 / (1.0 - std::pow(double(h.beta1), double(h.step)));
  const double inv_bc2 = 1.0 / (1.0 - std::pow(double(h.beta2), double(h.step)));
  for (int64_t i = 0; i < n; ++i) {
    if (!covered(segs, i)) {  // untouched, bit for bit
      ASSERT_EQ(gp[i], s0.p[i]) << "master[" << i << "] outside every segment";
      ASSERT_EQ(gm[i], s0.m[i]) << "m[" << i << "] outside every segment";
      ASSERT_EQ(gv[i], s0.v[i]) << "v[" << i << "] outside every segment";
      if (params_mode == 1) {
        ASSERT_EQ(to_float(gparams[i]), to_float(sentinel)) << "params[" << i << "] outside every segment";
      }
      continue;
    }
    // The kernel computes the reference's expressions in its order; they differ by FMA
    // contraction (nvcc contracts a·b + c; the reference may or may not, with -march=native)
    // and by m̂ = m·float(1/bc1) instead of float(m/bc1): 2 roundings per side of each
    // update, i.e. 4u relative to the terms of m and v, 2u more for m̂ and v̂, then propagated
    // through lr·m̂/(sqrt(v̂)+eps) (|sqrt(a) - sqrt(b)| <= sqrt(|a - b|) bounds the square root
    // where v̂ is tiny), plus 2 roundings of p·decay - update.
    const double gs = double(s0.g[i]) * h.grad_scale;
    const double terms_m = std::fabs(h.beta1 * s0.m[i]) + std::fabs((1.0 - h.beta1) * gs);
    const double terms_v = std::fabs(h.beta2 * s0.v[i]) + std::fabs((1.0 - h.beta2) * gs * gs);
    ASSERT_NEAR(gm[i], ref.m[i], 4 * kU32 * terms_m) << "m[" << i << "]";
    ASSERT_NEAR(gv[i], ref.v[i], 4 * kU32 * terms_v) << "v[" << i << "]";
    const double mhat = std::fabs(ref.m[i] * inv_bc1), vhat = ref.v[i] * inv_bc2;
    const double err_mhat = inv_bc1 * 4 * kU32 * terms_m + 4 * kU32 * mhat;
    const double err_vhat = inv_bc2 * 4 * kU32 * terms_v + 4 * kU32 * vhat;
    const double den = std::sqrt(vhat) + h.eps;
    const double err_sqrt =
        vhat > 0 ? std::min(err_vhat / (2 * std::sqrt(vhat)), std::sqrt(err_vhat)) : std::sqrt(err_vhat);
    const double upd = h.lr * mhat / den;
    const double err_upd = h.lr * (err_mhat / den + mhat * (err_sqrt + 2 * kU32 * den) / (den * den)) + 4 * kU32 * upd;
    const double tol = 4 * kU32 * std::fabs(s0.p[i]) + err_upd + 2 * kU32 * std::fabs(ref.p[i]);
    ASSERT_NEAR(gp[i], ref.p[i], tol) << "master[" << i << "]";
    if (params_mode == 1) {  // the compute copy is the stored master, rounded once
      ASSERT_EQ(to_float(gparams[i]), to_float(from_float<TP>(gp[i]))) << "params[" << i << "]";
    }
  }
}

AdamWHyper hyper(int64_t step) {
  AdamWHyper h;
  h.lr = 3e-3f;
  h.weight_decay = 0.05f;
  h.step = step;
  h.grad_scale = 0.7f;
  return h;
}

// Arena of n elements covered by alternating decay / no-decay runs of the given lengths.
std::vector<AdamWSegment> runs(const std::vector<int64_t>& lengths, int64_t start = 0) {
  std::vector<AdamWSegment> segs;
  int64_t off = start;
  bool decay = true;
  for (int64_t len : lengths) {
    segs.push_back({off, len, decay});
    off += len;
    decay = !decay;
  }
  return segs;
}

template <typename TP>
void suite() {
  // A ViT-like layout: weights (decay) between biases and norms (none), sizes off the 4-grid,
  // one segment of 2.2 tiles (4096 elements each).
  const std::vector<AdamWSegment> vit_like = runs({1, 2, 3, 5, 64, 7, 9001, 13, 100});
  int64_t n = 0;
  for (const auto& s : vit_like) n = std::max(n, s.offset + s.count);
  for (int64_t step : {1, 2, 1000}) check_adamw<TP>(n, vit_like, hyper(step), 1);
  check_adamw<TP>(n, vit_like, hyper(3), 0);
  if constexpr (std::is_same_v<TP, float>) check_adamw<TP>(n, vit_like, hyper(3), 2);

  // Unsorted, with gaps and an empty segment; adjacent same-flag segments (merged).
  std::vector<AdamWSegment> gaps = {{50, 30, true}, {3, 10, false},  {13, 6, false},
                                    {90, 0, true},  {200, 77, true}, {19, 21, true}};
  check_adamw<TP>(301, gaps, hyper(4), 1);

  // 300 alternating segments: more than one launch (128 segments per launch).
  std::vector<int64_t> lengths(300);
  for (size_t i = 0; i < lengths.size(); ++i) lengths[i] = 1 + static_cast<int64_t>(i % 7);
  const std::vector<AdamWSegment> many = runs(lengths, 2);
  check_adamw<TP>(many.back().offset + many.back().count + 3, many, hyper(5), 1);

  // No weight decay anywhere, lr 0 (m and v still move), and n = 1.
  AdamWHyper h0 = hyper(2);
  h0.lr = 0.f;
  check_adamw<TP>(11, {{0, 11, true}}, h0, 1);
  check_adamw<TP>(1, {{0, 1, false}}, hyper(1), 1);
}

TEST_P(AdamWKernel, Fp32Params) { suite<float>(); }
TEST_P(AdamWKernel, Bf16Params) { suite<__nv_bfloat16>(); }

TEST_P(AdamWKernel, ArgumentChecks) {
  const int64_t n = 64;
  rt::DeviceBuffer<float> a(n), b(n), c(n), d(n), e(n);
  rt::DeviceBuffer<__nv_bfloat16> hb(n);
  const AdamWSegment all[] = {{0, n, true}};
  const AdamWHyper h = hyper(1);
  const char* op = "adamw_update";
  auto call = [&](float* p, const float* g, float* m, float* v, float* params, const AdamWHyper& hh,
                  const AdamWSegment* segs,
                  int ns) { adamw_update<float>(p, g, m, v, params, n, hh, segs, ns, nullptr); };
  expect_error([&] { call(nullptr, b.get(), c.get(), d.get(), nullptr, h, all, 1); }, {op, "master is null"});
  expect_error([&] { call(a.get(), nullptr, c.get(), d.get(), nullptr, h, all, 1); }, {op, "grads is null"});
  expect_error([&] { call(a.get(), b.get(), nullptr, d.get(), nullptr, h, all, 1); }, {op, "m is null"});
  expect_error([&] { call(a.get(), b.get(), c.get(), nullptr, nullptr, h, all, 1); }, {op, "v is null"});
  expect_error([&] { call(a.get() + 1, b.get(), c.get(), d.get(), nullptr, h, all, 1); },
               {op, "master is not aligned"});
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), e.get() + 2, h, all, 1); },
               {op, "params is not aligned"});
  expect_error([&] { call(a.get(), a.get(), c.get(), d.get(), nullptr, h, all, 1); }, {op, "master and grads overlap"});
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), c.get(), h, all, 1); }, {op, "params overlaps m"});
  expect_error(
      [&] {
        adamw_update<__nv_bfloat16>(a.get(), b.get(), c.get(), d.get(), reinterpret_cast<__nv_bfloat16*>(a.get()), n, h,
                                    all, 1, nullptr);
      },
      {op, "params overlaps master"});
  const AdamWSegment outside[] = {{60, 5, true}};
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, h, outside, 1); }, {op, "segments[0]"});
  const AdamWSegment overlapping[] = {{0, 10, true}, {8, 4, false}};
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, h, overlapping, 2); }, {op, "overlap"});
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, h, nullptr, 1); }, {op, "segments is null"});
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, h, all, -1); }, {op, "num_segments"});
  AdamWHyper bad = h;
  bad.step = 0;
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, bad, all, 1); }, {op, "h.step"});
  bad = h;
  bad.beta2 = 1.f;
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, bad, all, 1); }, {op, "h.beta2"});
  bad = h;
  bad.grad_scale = INFINITY;
  expect_error([&] { call(a.get(), b.get(), c.get(), d.get(), nullptr, bad, all, 1); }, {op, "h.grad_scale"});
  call(nullptr, nullptr, nullptr, nullptr, nullptr, h, nullptr, 0);  // no segments: nothing to do
}

// ---- sum_squares ---------------------------------------------------------------------------

template <typename T>
void check_sum_squares(int64_t n, int offset) {
  SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
  const std::vector<float> x = to_floats(convert<T>(random_floats(n, -3.f, 3.f, 61 + n)));
  rt::DeviceBuffer<T> dx(n + offset);
  rt::copy_to_device(dx.get() + offset, convert<T>(x).data(), n * sizeof(T));
  rt::DeviceBuffer<double> scratch(sum_squares_scratch_doubles());
  const double got = sum_squares<T>(dx.get() + offset, n, scratch.get(), nullptr);
  const double want = ref::sum_squares<float>(x.data(), n);
  // Both sum exact squares (a float squared is exact in double) in double, in different
  // orders: recursive-summation bound n·u64·Σ (all terms positive).
  EXPECT_NEAR(got, want, (n + 2) * 0x1p-53 * want) << "sum of squares";
  // Same n, same alignment: the same bits.
  const double again = sum_squares<T>(dx.get() + offset, n, scratch.get(), nullptr);
  EXPECT_EQ(std::memcmp(&got, &again, sizeof(double)), 0) << "not reproducible";
}

TEST_P(AdamWKernel, SumSquares) {
  for (int64_t n : {int64_t(1), int64_t(5), int64_t(8), int64_t(1000), int64_t(20011)})
    for (int offset : {0, 1}) {
      check_sum_squares<float>(n, offset);
      check_sum_squares<__nv_bfloat16>(n, offset);
    }
  rt::DeviceBuffer<double> scratch(sum_squares_scratch_doubles());
  EXPECT_EQ(sum_squares<float>(nullptr, 0, scratch.get(), nullptr), 0.0);
}

TEST_P(AdamWKernel, SumSquaresArgumentChecks) {
  rt::DeviceBuffer<float> x(8);
  rt::DeviceBuffer<double> scratch(sum_squares_scratch_doubles());
  expect_error([&] { sum_squares<float>(nullptr, 8, scratch.get(), nullptr); }, {"sum_squares", "x is null"});
  expect_error([&] { sum_squares<float>(x.get(), 8, nullptr, nullptr); }, {"sum_squares", "scratch is null"});
  expect_error([&] { sum_squares<float>(x.get(), -8, scratch.get(), nullptr); }, {"sum_squares", "n must be >= 0"});
}

// ViT-B/16's 86M parameters in one arena: the grid at full size and the 1024-block reduction.
TEST_P(AdamWKernel, NativeViTBArena) {
  if (emulated()) GTEST_SKIP() << "full-size shape: native build only (the emulator is too slow)";
  std::vector<int64_t> lengths;
  for (int layer = 0; layer < 12; ++layer)
    for (int64_t len : {768 * 2, 2304 * 768, 2304, 768 * 768, 768 + 768 * 2, 3072 * 768, 3072, 768 * 3072, 768})
      lengths.push_back(len);
  const std::vector<AdamWSegment> segs = runs(lengths);
  const int64_t n = segs.back().offset + segs.back().count;
  check_adamw<__nv_bfloat16>(n, segs, hyper(10), 1);
  check_sum_squares<float>(n, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, AdamWKernel, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
