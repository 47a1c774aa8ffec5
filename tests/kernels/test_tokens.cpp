// tokens (kernels/tokens.cu): cls (and DeiT's distillation token) prepend + position embedding,
// against vitcuda::ref::tokens_forward / tokens_backward. Forward is one fp32 add rounded to T;
// backward copies the patch rows exactly and accumulates batch sums (fp32, batch order) into dcls
// / ddist / dpos. prefix: 0 (no prefix token), 1 (cls), 2 (cls, dist).
#include <cmath>
#include <cstring>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/tokens.h"

namespace vitcuda::test {
namespace {

struct Shape {
  int B, Np, D;
};
const Shape kShapes[] = {{1, 1, 1}, {2, 4, 8}, {3, 16, 24}, {5, 49, 33}, {7, 64, 64}, {2, 196, 96}};

const char* const kPrefixName[] = {" no cls", " cls", " cls+dist"};

std::string describe(const Shape& s, int prefix) {
  return "B=" + std::to_string(s.B) + " Np=" + std::to_string(s.Np) + " D=" + std::to_string(s.D) + kPrefixName[prefix];
}

template <typename T>
void check_forward(const Shape& s, int prefix) {
  SCOPED_TRACE(describe(s, prefix));
  const bool cls = prefix >= 1, dist = prefix >= 2;
  const int Tn = s.Np + prefix;
  auto q = [](std::vector<float> v) { return to_floats(convert<T>(v)); };
  const std::vector<float> patches = q(random_floats(size_t(s.B) * s.Np * s.D, -1.f, 1.f, 1)),
                           c = q(random_floats(s.D, -1.f, 1.f, 2)), d = q(random_floats(s.D, -1.f, 1.f, 12)),
                           pos = q(random_floats(size_t(Tn) * s.D, -1.f, 1.f, 3));
  const size_t n = size_t(s.B) * Tn * s.D;
  rt::DeviceBuffer<T> dp(convert<T>(patches)), dc(convert<T>(c)), dd(convert<T>(d)), dpos(convert<T>(pos)), out(n);
  tokens_forward<T>(dp.get(), cls ? dc.get() : nullptr, dist ? dd.get() : nullptr, dpos.get(), out.get(), s.B, s.Np,
                    s.D, nullptr);
  std::vector<float> want(n);
  ref::tokens_forward<float>(patches.data(), cls ? c.data() : nullptr, dist ? d.data() : nullptr, pos.data(),
                             want.data(), s.B, s.Np, s.D);
  const std::vector<float> got = to_floats(out.download());
  for (size_t i = 0; i < n; ++i) {
    // the same fp32 add on both sides; bf16 storage rounds the kernel's sum once (the reference's
    // float sum is exact here: two 8-bit-significand values)
    const double tol = std::is_same_v<T, __nv_bfloat16> ? kUBf16 * std::fabs(want[i]) : 0.0;
    ASSERT_NEAR(got[i], want[i], tol) << "out[" << i << "]";
  }
}

template <typename T, typename TG>
void check_backward(const Shape& s, int prefix, bool want_patches, bool want_pos) {
  SCOPED_TRACE(describe(s, prefix) + (want_patches ? " dpatches" : "") + (want_pos ? " dpos" : ""));
  const bool cls = prefix >= 1, dist = prefix >= 2;
  const int Tn = s.Np + prefix;
  const std::vector<float> dout = to_floats(convert<T>(random_floats(size_t(s.B) * Tn * s.D, -1.f, 1.f, 4))),
                           dcls0 = to_floats(convert<TG>(random_floats(s.D, -1.f, 1.f, 5))),
                           ddist0 = to_floats(convert<TG>(random_floats(s.D, -1.f, 1.f, 15))),
                           dpos0 = to_floats(convert<TG>(random_floats(size_t(Tn) * s.D, -1.f, 1.f, 6)));
  const size_t np = size_t(s.B) * s.Np * s.D;
  rt::DeviceBuffer<T> ddout(convert<T>(dout)), dpatches(convert<T>(std::vector<float>(np, 7.f)));
  rt::DeviceBuffer<TG> ddcls(convert<TG>(dcls0)), dddist(convert<TG>(ddist0)), ddpos(convert<TG>(dpos0));
  tokens_backward<T, TG>(ddout.get(), want_patches ? dpatches.get() : nullptr, cls ? ddcls.get() : nullptr,
                         dist ? dddist.get() : nullptr, want_pos ? ddpos.get() : nullptr, prefix, s.B, s.Np, s.D,
                         nullptr);
  std::vector<float> dp_ref(np), dcls_ref = dcls0, ddist_ref = ddist0, dpos_ref = dpos0;
  ref::tokens_backward<float>(dout.data(), dp_ref.data(), cls ? dcls_ref.data() : nullptr,
                              dist ? ddist_ref.data() : nullptr, dpos_ref.data(), s.B, s.Np, s.D);
  const std::vector<float> dp = to_floats(dpatches.download()), dc = to_floats(ddcls.download()),
                           ddi = to_floats(dddist.download()), dpos = to_floats(ddpos.download());
  for (size_t i = 0; i < np; ++i) ASSERT_EQ(dp[i], want_patches ? dp_ref[i] : 7.f) << "dpatches[" << i << "]";
  const double round = std::is_same_v<TG, __nv_bfloat16> ? 2 * kUBf16 : 0.0;
  auto col_abs = [&](int t, int j) {  // Σ_b |dout[b, t, j]|: scales the fp32 summation error
    double a = 0;
    for (int b = 0; b < s.B; ++b) a += std::fabs(dout[(size_t(b) * Tn + t) * s.D + j]);
    return a;
  };
  for (int t = 0; t < Tn; ++t)
    for (int j = 0; j < s.D; ++j) {
      const size_t i = size_t(t) * s.D + j;
      // B fp32 terms in batch order (the reference sums in double), then the old value
      const double tol =
          2.0 * (s.B + 2) * kU32 * (col_abs(t, j) + std::fabs(dpos0[i])) + round * std::fabs(dpos_ref[i]);
      if (want_pos)
        ASSERT_NEAR(dpos[i], dpos_ref[i], tol) << "dpos[" << t << "][" << j << "]";
      else
        ASSERT_EQ(dpos[i], dpos0[i]) << "dpos untouched";
    }
  for (int j = 0; j < s.D; ++j) {
    if (cls) {
      const double tol =
          2.0 * (s.B + 2) * kU32 * (col_abs(0, j) + std::fabs(dcls0[j])) + round * std::fabs(dcls_ref[j]);
      ASSERT_NEAR(dc[j], dcls_ref[j], tol) << "dcls[" << j << "]";
    }
    if (dist) {
      const double tol =
          2.0 * (s.B + 2) * kU32 * (col_abs(1, j) + std::fabs(ddist0[j])) + round * std::fabs(ddist_ref[j]);
      ASSERT_NEAR(ddi[j], ddist_ref[j], tol) << "ddist[" << j << "]";
    } else {
      ASSERT_EQ(ddi[j], ddist0[j]) << "ddist untouched";
    }
  }
}

class Tokens : public BackendTest {};

TEST_P(Tokens, ForwardF32) {
  for (const Shape& s : kShapes)
    for (int prefix : {0, 1, 2}) check_forward<float>(s, prefix);
}
TEST_P(Tokens, ForwardBf16) {
  for (const Shape& s : kShapes)
    for (int prefix : {0, 1, 2}) check_forward<__nv_bfloat16>(s, prefix);
}
// More samples than a grid's y dimension holds (65535): the forward's blocks take samples
// blockIdx.y, + gridDim.y, ...; short rows (Tn·D = 2 or 3) keep the emulated time small.
TEST_P(Tokens, ForwardBatchBeyondGridY) {
  check_forward<float>({65537, 1, 2}, 1);
  check_forward<__nv_bfloat16>({65538, 3, 1}, 0);
  check_forward<float>({65536, 1, 1}, 2);
}

TEST_P(Tokens, BackwardF32) {
  for (const Shape& s : kShapes)
    for (int prefix : {0, 1, 2}) check_backward<float, float>(s, prefix, true, true);
}
TEST_P(Tokens, BackwardBf16WithF32ParamGrads) {
  for (const Shape& s : kShapes)
    for (int prefix : {0, 1, 2}) check_backward<__nv_bfloat16, float>(s, prefix, true, true);
}
TEST_P(Tokens, BackwardBf16) {
  for (const Shape& s : kShapes)
    for (int prefix : {0, 1, 2}) check_backward<__nv_bfloat16, __nv_bfloat16>(s, prefix, true, true);
}
TEST_P(Tokens, BackwardSubsetsOfOutputs) {
  check_backward<__nv_bfloat16, float>({3, 9, 16}, 1, false, true);
  check_backward<__nv_bfloat16, float>({3, 9, 16}, 1, true, false);
  check_backward<float, float>({3, 9, 16}, 0, true, false);
  check_backward<float, float>({3, 9, 16}, 2, false, true);
  check_backward<__nv_bfloat16, float>({3, 9, 16}, 2, true, false);
}
TEST_P(Tokens, BackwardIsBitwiseReproducible) {
  const Shape s{9, 37, 40};
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    rt::DeviceBuffer<float> dout(random_floats(size_t(s.B) * (s.Np + 1) * s.D, -1.f, 1.f, 9)),
        dp(size_t(s.B) * s.Np * s.D), dc(std::vector<float>(s.D, 0.f)),
        dpos(std::vector<float>(size_t(s.Np + 1) * s.D, 0.f));
    tokens_backward<float, float>(dout.get(), dp.get(), dc.get(), nullptr, dpos.get(), 1, s.B, s.Np, s.D, nullptr);
    std::vector<float> all = dc.download();
    for (float v : dpos.download()) all.push_back(v);
    if (run == 0)
      first = all;
    else
      EXPECT_EQ(std::memcmp(first.data(), all.data(), all.size() * sizeof(float)), 0);
  }
}
TEST_P(Tokens, VitBaseShapesNative) {
  if (emulated()) GTEST_SKIP() << "ViT-B shapes run in the native build only";
  check_forward<__nv_bfloat16>({32, 196, 768}, 1);
  check_backward<__nv_bfloat16, float>({32, 196, 768}, 1, true, true);
  check_forward<__nv_bfloat16>({32, 196, 768}, 2);
  check_backward<__nv_bfloat16, float>({32, 196, 768}, 2, true, true);
}

TEST_P(Tokens, RejectsBadArguments) {
  rt::DeviceBuffer<float> a(64), b(64), c(64);
  expect_error([&] { tokens_forward<float>(nullptr, nullptr, nullptr, b.get(), c.get(), 1, 4, 8, nullptr); },
               {"tokens_forward", "patches"});
  expect_error([&] { tokens_forward<float>(a.get(), nullptr, nullptr, nullptr, c.get(), 1, 4, 8, nullptr); },
               {"tokens_forward", "pos"});
  expect_error([&] { tokens_forward<float>(a.get(), nullptr, nullptr, b.get(), c.get(), 1, 4, 0, nullptr); },
               {"tokens_forward", "D"});
  expect_error([&] { tokens_forward<float>(a.get(), nullptr, a.get(), b.get(), c.get(), 1, 2, 8, nullptr); },
               {"tokens_forward", "dist", "needs cls"});
  expect_error([&] { tokens_backward<float, float>(nullptr, a.get(), nullptr, nullptr, b.get(), 0, 1, 4, 8, nullptr); },
               {"tokens_backward", "dout"});
  expect_error([&] { tokens_backward<float, float>(a.get(), b.get(), c.get(), nullptr, nullptr, 0, 1, 4, 8, nullptr); },
               {"tokens_backward", "dcls", "num_prefix"});
  expect_error([&] { tokens_backward<float, float>(a.get(), b.get(), c.get(), a.get(), nullptr, 1, 1, 4, 8, nullptr); },
               {"tokens_backward", "ddist", "num_prefix"});
  expect_error([&] { tokens_backward<float, float>(a.get(), b.get(), nullptr, nullptr, nullptr, 3, 1, 4, 8, nullptr); },
               {"tokens_backward", "num_prefix"});
}

INSTANTIATE_TEST_SUITE_P(Backends, Tokens, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
