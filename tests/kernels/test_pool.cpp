// Token and average pooling (kernels/pool.cu) against the CPU reference
// (vitcuda::ref::pool_forward / pool_backward), with and without a cls prefix, fp32 and bf16.
// Token pooling of 1 prefix token (cls: out [B, D]) and of 2 (cls and DeiT's distillation token:
// out [2·B, D], token-major).
#include <cmath>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/pool.h"

namespace vitcuda::test {
namespace {

class PoolKernel : public BackendTest {};

struct Shape {
  int64_t B, N, D;
};
// 1 token; odd widths below and above a warp; the tiny-ViT (17 tokens) and ViT-B (197) lengths.
const Shape kShapes[] = {{1, 1, 1}, {2, 5, 3}, {3, 17, 64}, {2, 65, 33}, {2, 197, 300}};

template <typename T>
void check(const Shape& s, Pool pool, int num_prefix) {
  SCOPED_TRACE("B=" + std::to_string(s.B) + " N=" + std::to_string(s.N) + " D=" + std::to_string(s.D) +
               (pool == Pool::Avg ? " avg" : " token") + " num_prefix=" + std::to_string(num_prefix));
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const int64_t n = s.B * s.N * s.D;
  const std::vector<float> x = to_floats(convert<T>(random_floats(n, -2.f, 2.f, 31 + n)));
  const int64_t rows = pool == Pool::Token ? num_prefix * s.B : s.B;  // of out and dout
  const std::vector<float> dout = to_floats(convert<T>(random_floats(rows * s.D, -2.f, 2.f, 37 + n)));

  rt::DeviceBuffer<T> dx_in(convert<T>(x)), out(rows * s.D), ddout(convert<T>(dout)), dx(n);
  pool_forward<T>(dx_in.get(), pool, num_prefix, out.get(), s.B, s.N, s.D, nullptr);
  dx.upload(convert<T>(std::vector<float>(n, 7.f)));  // overwritten, not accumulated
  pool_backward<T>(ddout.get(), pool, num_prefix, dx.get(), s.B, s.N, s.D, nullptr);

  std::vector<float> out_ref(rows * s.D), dx_ref(n);
  ref::pool_forward<float>(x.data(), pool, num_prefix, out_ref.data(), s.B, s.N, s.D);
  ref::pool_backward<float>(dout.data(), pool, num_prefix, dx_ref.data(), s.B, s.N, s.D);
  const std::vector<float> got_out = to_floats(out.download()), got_dx = to_floats(dx.download());

  if (pool == Pool::Token) {
    // copies and zeros: exact, and the layout independent of the reference's: out[p, b] = x[b, p]
    for (int64_t p = 0; p < num_prefix; ++p)
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t c = 0; c < s.D; ++c) {
          const int64_t i = (p * s.B + b) * s.D + c;
          ASSERT_EQ(got_out[i], out_ref[i]) << "out[" << p << "][" << b << "][" << c << "] (a copy)";
          ASSERT_EQ(got_out[i], x[(b * s.N + p) * s.D + c]) << "out[" << p << "][" << b << "][" << c << "]";
          ASSERT_EQ(got_dx[(b * s.N + p) * s.D + c], dout[i]) << "dx[" << b << "][" << p << "][" << c << "]";
        }
  }
  const int64_t n_avg = s.N - num_prefix;
  for (int64_t b = 0; b < s.B && pool == Pool::Avg; ++b)
    for (int64_t c = 0; c < s.D; ++c) {
      const int64_t i = b * s.D + c;
      // fp32 sum of n_avg terms in token order (the reference sums in double): recursive
      // summation bound n_avg·u·Σ|x|, divided by n_avg, plus the division's rounding; bf16
      // storage adds one rounding of the result, with one ulp (2u) of slack for a tie crossed.
      double abs_mean = 0;
      for (int64_t t = num_prefix; t < s.N; ++t) abs_mean += std::fabs(x[(b * s.N + t) * s.D + c]) / n_avg;
      const double tol = (n_avg + 2) * kU32 * abs_mean + (bf16 ? 2 * kUBf16 * std::fabs(out_ref[i]) : 0);
      ASSERT_NEAR(got_out[i], out_ref[i], tol) << "out[" << b << "][" << c << "]";
    }
  for (int64_t i = 0; i < n; ++i) {
    // Token: copies and zeros, exact. Avg: one fp32 division g / n_avg against the reference's
    // g·(1/n_avg) in double: within one fp32 ulp (2u relative); bf16 storage one bf16 ulp more.
    const double tol = pool == Pool::Token ? 0.0 : (bf16 ? 2 * kUBf16 : 2 * kU32) * std::fabs(dx_ref[i]);
    ASSERT_NEAR(got_dx[i], dx_ref[i], tol) << "dx[" << i << "]";
    if (dx_ref[i] == 0.f) {
      ASSERT_EQ(got_dx[i], 0.f) << "dx[" << i << "] must be overwritten";
    }
  }
}

template <typename T>
void suite() {
  for (const Shape& s : kShapes)
    for (Pool pool : {Pool::Token, Pool::Avg})
      for (int num_prefix : {0, 1, 2}) {
        // Token pools 1..N prefix tokens, Avg the tokens after 0..N-1 of them
        const bool valid = pool == Pool::Token ? num_prefix >= 1 && num_prefix <= s.N : num_prefix < s.N;
        if (valid) check<T>(s, pool, num_prefix);
      }
}

TEST_P(PoolKernel, F32) { suite<float>(); }
TEST_P(PoolKernel, Bf16) { suite<__nv_bfloat16>(); }

TEST_P(PoolKernel, ArgumentChecks) {
  rt::DeviceBuffer<float> b(64);
  float* p = b.get();
  expect_error([&] { pool_forward<float>(nullptr, Pool::Avg, 1, p, 2, 4, 8, nullptr); }, {"pool_forward", "x is null"});
  expect_error([&] { pool_forward<float>(p, Pool::Avg, 1, nullptr, 2, 4, 8, nullptr); },
               {"pool_forward", "out is null"});
  expect_error([&] { pool_forward<float>(p, Pool::Avg, 4, p, 2, 4, 8, nullptr); }, {"pool_forward", "num_prefix"});
  expect_error([&] { pool_forward<float>(p, Pool::Avg, -1, p, 2, 4, 8, nullptr); }, {"pool_forward", "num_prefix"});
  expect_error([&] { pool_forward<float>(p, Pool::Flatten, 0, p, 2, 4, 8, nullptr); }, {"pool_forward", "Flatten"});
  expect_error([&] { pool_forward<float>(p, Pool::Token, 1, p, 2, 0, 8, nullptr); }, {"pool_forward", "N and D"});
  expect_error([&] { pool_forward<float>(p, Pool::Token, 0, p, 2, 4, 8, nullptr); },
               {"pool_forward", "num_prefix", "Token"});
  expect_error([&] { pool_forward<float>(p, Pool::Token, 5, p, 2, 4, 8, nullptr); },
               {"pool_forward", "num_prefix", "Token"});
  expect_error([&] { pool_backward<float>(p, Pool::Token, 0, p, 2, 4, 8, nullptr); },
               {"pool_backward", "num_prefix", "Token"});
  expect_error([&] { pool_backward<float>(nullptr, Pool::Avg, 1, p, 2, 4, 8, nullptr); },
               {"pool_backward", "dout is null"});
  const float* odd = reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + 2);
  expect_error([&] { pool_backward<float>(odd, Pool::Avg, 1, p, 2, 4, 8, nullptr); },
               {"pool_backward", "dout is not aligned"});
  expect_error([&] { pool_backward<float>(p, Pool::Avg, 1, p, -2, 4, 8, nullptr); },
               {"pool_backward", "B must be >= 0"});
}

TEST_P(PoolKernel, NativeViTBShape) {
  if (emulated()) GTEST_SKIP() << "full-size shape: native build only (the emulator is too slow)";
  check<__nv_bfloat16>({64, 197, 768}, Pool::Avg, 1);
  check<float>({64, 197, 768}, Pool::Token, 1);
  check<__nv_bfloat16>({64, 198, 768}, Pool::Token, 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, PoolKernel, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
