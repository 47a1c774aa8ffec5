// LayerNorm forward and backward (kernels/layernorm.cu) against the CPU reference
// (vitcuda::ref, fp64 inside), at the ViT widths and odd row counts, fp32 and bf16 storage.
#include <cmath>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/layernorm.h"

namespace vitcuda::test {
namespace {

constexpr float kEps = 1e-6f;

struct Shape {
  int rows;
  int C;
};

// ViT-Ti/S/B/L widths and a small one; 1, odd and non-multiple-of-the-block row counts.
// C multiple of 8 up to 2048 takes the vectorised forward; C = 70 (not a multiple of 8 or 4) and
// C = 1280 in fp32 (over 32·8 chunks of 4) take the general one.
const Shape kShapes[] = {{1, 64},   {7, 64},  {197, 64}, {3, 192},   {65, 192}, {5, 384},
                         {51, 384}, {1, 768}, {29, 768}, {13, 1024}, {3, 70},   {2, 1280}};

// The backward's parameter-gradient paths on top of kShapes: every model width (ViT-Ti 192, S 384,
// B 768, L 1024, H 1280) and odd widths (10, 33: the general kernel) at 1 and 17 rows, and row
// counts past 512 blocks × 8 warps = 4096 (the block cap: warps take several rows, and the
// parameter-gradient kernel sums 512 partials per column, 32 per slice): 4100 rows in the vectorised
// kernel with 1 chunk per lane (C = 64) and 1-2 chunks with idle lanes (C = 192: 24 bf16 or 48
// fp32 chunks), and in the general kernel (C = 33). ViT-B's 768 at 4099 rows runs in the bf16 test
// only, to keep the emulated time reasonable.
const Shape kBackwardShapes[] = {{1, 10},   {17, 10},   {1, 33},   {17, 33},   {17, 192},  {17, 384},  {1, 768},
                                 {17, 768}, {17, 1024}, {1, 1280}, {17, 1280}, {4100, 64}, {4100, 33}, {4103, 192}};
const Shape kLargeBf16Shape{4099, 768};

class LayerNorm : public BackendTest {};

template <typename T>
struct Data {
  std::vector<float> x, res, gamma, beta, dy, dx0, dg0, db0;  // values exactly representable in T
};

template <typename T>
Data<T> make_data(const Shape& s, uint32_t seed) {
  auto q = [](std::vector<float> v) { return to_floats(convert<T>(v)); };  // round to T
  Data<T> d;
  const size_t n = static_cast<size_t>(s.rows) * s.C;
  d.x = random_floats(n, -2.f, 2.f, seed);
  for (size_t i = 0; i < n; ++i) d.x[i] += 0.5f * static_cast<float>(i / s.C % 3);  // row means differ
  d.x = q(d.x);
  d.res = q(random_floats(n, -1.f, 1.f, seed + 1));
  d.gamma = q(random_floats(s.C, 0.5f, 1.5f, seed + 2));
  d.beta = q(random_floats(s.C, -0.5f, 0.5f, seed + 3));
  d.dy = q(random_floats(n, -1.f, 1.f, seed + 4));
  d.dx0 = q(random_floats(n, -1.f, 1.f, seed + 5));
  d.dg0 = q(random_floats(s.C, -1.f, 1.f, seed + 6));
  d.db0 = q(random_floats(s.C, -1.f, 1.f, seed + 7));
  return d;
}

template <typename T>
void check_forward(const Shape& s, bool with_residual) {
  SCOPED_TRACE("rows=" + std::to_string(s.rows) + " C=" + std::to_string(s.C) + (with_residual ? " +residual" : ""));
  const Data<T> d = make_data<T>(s, 100 + s.C + s.rows);
  const size_t n = d.x.size();
  rt::DeviceBuffer<T> x(convert<T>(d.x)), res(convert<T>(d.res)), sum(n), gamma(convert<T>(d.gamma)),
      beta(convert<T>(d.beta)), y(n);
  rt::DeviceBuffer<float> mean(s.rows), rstd(s.rows);
  layernorm_forward<T>(x.get(), with_residual ? res.get() : nullptr, with_residual ? sum.get() : nullptr, gamma.get(),
                       beta.get(), kEps, y.get(), mean.get(), rstd.get(), s.rows, s.C, nullptr);
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;

  // The kernel normalises the stored sum, bf16(x + r) in bf16: that is exact rounding of an exact
  // fp32 sum, so it must match bit for bit. The reference then normalises the same values.
  std::vector<float> s_in = d.x;
  if (with_residual) {
    const std::vector<float> got_sum = to_floats(sum.download());
    for (size_t i = 0; i < n; ++i) s_in[i] = to_float(from_float<T>(d.x[i] + d.res[i]));
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got_sum[i], s_in[i]) << "sum_out[" << i << "]";
  }
  std::vector<float> y_ref(n), mean_ref(s.rows), rstd_ref(s.rows);
  ref::layernorm_forward<float>(s_in.data(), nullptr, nullptr, d.gamma.data(), d.beta.data(), kEps, y_ref.data(),
                                mean_ref.data(), rstd_ref.data(), s.rows, s.C);

  const std::vector<float> got_y = to_floats(y.download());
  const std::vector<float> got_mean = mean.download(), got_rstd = rstd.download();
  // fp32 sums of C terms in a different order: |error| <= C·u32·Σ|terms| (recursive-summation
  // bound), relative to the quantity; the statistics and y inherit about that relative error.
  const double stat_rel = 2.0 * s.C * kU32;
  for (int r = 0; r < s.rows; ++r) {
    double abs_mean = 0;
    for (int c = 0; c < s.C; ++c) abs_mean += std::fabs(s_in[size_t(r) * s.C + c]) / s.C;
    ASSERT_NEAR(got_mean[r], mean_ref[r], stat_rel * abs_mean + 1e-7) << "mean[" << r << "]";
    ASSERT_NEAR(got_rstd[r], rstd_ref[r], stat_rel * rstd_ref[r] * 4) << "rstd[" << r << "]";
    for (int c = 0; c < s.C; ++c) {
      const size_t i = size_t(r) * s.C + c;
      // |y| is O(|xhat|·gamma + beta); fp32 math gives stat_rel relative to the terms, and bf16
      // storage rounds the result to 8 significant bits (half an ulp: u·|y|), with one ulp of
      // slack for a rounding boundary crossed by the fp32 difference.
      const double terms = std::fabs((s_in[i] - mean_ref[r]) * rstd_ref[r] * d.gamma[c]) + std::fabs(d.beta[c]);
      const double tol = stat_rel * 8 * terms + (bf16 ? 2 * kUBf16 * std::fabs(y_ref[i]) : 0) + 1e-6;
      ASSERT_NEAR(got_y[i], y_ref[i], tol) << "y[" << r << "][" << c << "]";
    }
  }
}

template <typename T, typename TG>
void check_backward(const Shape& s) {
  SCOPED_TRACE("rows=" + std::to_string(s.rows) + " C=" + std::to_string(s.C));
  const Data<T> d = make_data<T>(s, 200 + s.C + s.rows);
  const size_t n = d.x.size();
  // mean and rstd from the reference forward, so forward errors do not enter this comparison.
  std::vector<float> y_ref(n), mean(s.rows), rstd(s.rows);
  ref::layernorm_forward<float>(d.x.data(), nullptr, nullptr, d.gamma.data(), d.beta.data(), kEps, y_ref.data(),
                                mean.data(), rstd.data(), s.rows, s.C);
  rt::DeviceBuffer<T> dy(convert<T>(d.dy)), x(convert<T>(d.x)), gamma(convert<T>(d.gamma)), dx(convert<T>(d.dx0));
  rt::DeviceBuffer<TG> dgamma(convert<TG>(d.dg0)), dbeta(convert<TG>(d.db0));
  rt::DeviceBuffer<float> d_mean(mean), d_rstd(rstd), scratch(layernorm_backward_scratch_floats(s.rows, s.C));
  layernorm_backward<T, TG>(dy.get(), x.get(), gamma.get(), d_mean.get(), d_rstd.get(), dx.get(), dgamma.get(),
                            dbeta.get(), scratch.get(), s.rows, s.C, nullptr);

  std::vector<float> dx_ref = d.dx0, dg_ref = d.dg0, db_ref = d.db0;  // they accumulate
  ref::layernorm_backward<float>(d.dy.data(), d.x.data(), d.gamma.data(), mean.data(), rstd.data(), dx_ref.data(),
                                 dg_ref.data(), db_ref.data(), s.rows, s.C);
  const bool bf16_x = std::is_same_v<T, __nv_bfloat16>;
  const bool bf16_g = std::is_same_v<TG, __nv_bfloat16>;
  const std::vector<float> got_dx = to_floats(dx.download());
  const std::vector<float> got_dg = to_floats(dgamma.download()), got_db = to_floats(dbeta.download());

  for (int r = 0; r < s.rows; ++r) {
    // dx = rstd·(g - mean(g) - xhat·mean(g·xhat)): the two means are fp32 sums of C terms.
    double g_abs = 0;
    for (int c = 0; c < s.C; ++c) g_abs += std::fabs(d.dy[size_t(r) * s.C + c] * d.gamma[c]) / s.C;
    for (int c = 0; c < s.C; ++c) {
      const size_t i = size_t(r) * s.C + c;
      const double xhat = std::fabs((d.x[i] - mean[r]) * rstd[r]);
      const double delta_terms = rstd[r] * (std::fabs(d.dy[i] * d.gamma[c]) + g_abs * (1 + xhat * (1 + xhat)));
      const double tol = 4.0 * s.C * kU32 * delta_terms + 4 * kU32 * std::fabs(d.dx0[i]) +
                         (bf16_x ? 2 * kUBf16 * std::fabs(dx_ref[i]) : 0) + 1e-6;
      ASSERT_NEAR(got_dx[i], dx_ref[i], tol) << "dx[" << r << "][" << c << "]";
    }
  }
  for (int c = 0; c < s.C; ++c) {
    // dgamma, dbeta: fp32 sums over the rows in block order, then added to the old value.
    double g_terms = std::fabs(d.dg0[c]), b_terms = std::fabs(d.db0[c]);
    for (int r = 0; r < s.rows; ++r) {
      const size_t i = size_t(r) * s.C + c;
      g_terms += std::fabs(d.dy[i] * (d.x[i] - mean[r]) * rstd[r]);
      b_terms += std::fabs(d.dy[i]);
    }
    const double rel = 2.0 * (s.rows + 2) * kU32;
    const double g_tol = rel * g_terms + (bf16_g ? 2 * kUBf16 * std::fabs(dg_ref[c]) : 0) + 1e-6;
    const double b_tol = rel * b_terms + (bf16_g ? 2 * kUBf16 * std::fabs(db_ref[c]) : 0) + 1e-6;
    ASSERT_NEAR(got_dg[c], dg_ref[c], g_tol) << "dgamma[" << c << "]";
    ASSERT_NEAR(got_db[c], db_ref[c], b_tol) << "dbeta[" << c << "]";
  }
}

TEST_P(LayerNorm, ForwardF32) {
  for (const Shape& s : kShapes) {
    check_forward<float>(s, false);
    check_forward<float>(s, true);
  }
}

TEST_P(LayerNorm, ForwardBf16) {
  for (const Shape& s : kShapes) {
    check_forward<__nv_bfloat16>(s, false);
    check_forward<__nv_bfloat16>(s, true);
  }
}

TEST_P(LayerNorm, BackwardF32) {
  for (const Shape& s : kShapes) check_backward<float, float>(s);
  for (const Shape& s : kBackwardShapes) check_backward<float, float>(s);
}

TEST_P(LayerNorm, BackwardBf16) {
  for (const Shape& s : kShapes) check_backward<__nv_bfloat16, __nv_bfloat16>(s);
  for (const Shape& s : kBackwardShapes) check_backward<__nv_bfloat16, __nv_bfloat16>(s);
}

TEST_P(LayerNorm, BackwardBf16WithF32ParamGrads) {
  for (const Shape& s : kShapes) check_backward<__nv_bfloat16, float>(s);
  for (const Shape& s : kBackwardShapes) check_backward<__nv_bfloat16, float>(s);
  check_backward<__nv_bfloat16, float>(kLargeBf16Shape);
}

// Two runs give the same bits, with the scratch holding different garbage before each (zeros, then
// NaNs): every partial the parameter-gradient kernel reads was written by this call. On the GPU
// this also catches an order that depends on block scheduling; the emulator runs blocks in order.
template <typename T, typename TG>
void check_reproducible(const Shape& s) {
  SCOPED_TRACE("rows=" + std::to_string(s.rows) + " C=" + std::to_string(s.C));
  const Data<T> d = make_data<T>(s, 7);
  const std::vector<float> mean(s.rows, 0.1f), rstd(s.rows, 1.3f);
  std::vector<uint8_t> first;
  for (int run = 0; run < 2; ++run) {
    const size_t scratch_n = layernorm_backward_scratch_floats(s.rows, s.C);
    rt::DeviceBuffer<T> dy(convert<T>(d.dy)), x(convert<T>(d.x)), gamma(convert<T>(d.gamma)), dx(convert<T>(d.dx0));
    rt::DeviceBuffer<TG> dg(convert<TG>(d.dg0)), db(convert<TG>(d.db0));
    rt::DeviceBuffer<float> m(mean), r(rstd), scratch(std::vector<float>(scratch_n, run == 0 ? 0.f : NAN));
    layernorm_backward<T, TG>(dy.get(), x.get(), gamma.get(), m.get(), r.get(), dx.get(), dg.get(), db.get(),
                              scratch.get(), s.rows, s.C, nullptr);
    std::vector<uint8_t> all;
    auto append = [&](const auto& v) {
      const auto* p = reinterpret_cast<const uint8_t*>(v.data());
      all.insert(all.end(), p, p + v.size() * sizeof(v[0]));
    };
    append(dx.download());
    append(dg.download());
    append(db.download());
    if (run == 0)
      first = all;
    else
      EXPECT_TRUE(first == all) << "the second run differs";
  }
}

TEST_P(LayerNorm, BackwardIsBitwiseReproducible) {
  check_reproducible<float, float>({77, 384});           // vectorised, fp32
  check_reproducible<float, float>({4100, 33});          // general kernel, 512 blocks
  check_reproducible<__nv_bfloat16, float>({4100, 64});  // vectorised bf16, 512 blocks
  check_reproducible<__nv_bfloat16, __nv_bfloat16>({33, 1280});
}

TEST_P(LayerNorm, ResidualNeedsSumOut) {
  rt::DeviceBuffer<float> b(64), m(1), r(1);
  EXPECT_THROW(layernorm_forward<float>(b.get(), b.get(), nullptr, b.get(), b.get(), kEps, b.get(), m.get(), r.get(), 1,
                                        64, nullptr),
               Error);
}

INSTANTIATE_TEST_SUITE_P(Backends, LayerNorm, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
