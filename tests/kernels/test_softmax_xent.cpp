// Fused softmax cross-entropy (kernels/softmax_xent.cu) against the CPU reference
// (vitcuda::ref::softmax_xent, double inside): losses within fp32 error bounds, dlogits within
// fp32 (+ bf16 storage) bounds, hits identical (the rank is a count of exact comparisons of the
// stored logits, the same on both sides, ties included).
#include <cmath>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/softmax_xent.h"

namespace vitcuda::test {
namespace {

class SoftmaxXent : public BackendTest {};

struct Case {
  int64_t B, C;
  float smoothing, dscale;
  bool integer_logits;  // small integers: many ties with the label's logit
};

template <typename T>
void check(const Case& k, bool with_dlogits, bool with_hits) {
  SCOPED_TRACE("B=" + std::to_string(k.B) + " C=" + std::to_string(k.C) + " smoothing=" + std::to_string(k.smoothing) +
               " dscale=" + std::to_string(k.dscale) + (k.integer_logits ? " integer logits" : ""));
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const int64_t n = k.B * k.C;
  const std::vector<float> z =
      to_floats(convert<T>(k.integer_logits ? random_ints(n, -3, 3, 41 + n) : random_floats(n, -8.f, 8.f, 43 + n)));
  std::vector<int32_t> labels(k.B);
  const std::vector<float> lab = random_ints(k.B, 0, static_cast<int>(k.C - 1), 47 + n);
  for (int64_t b = 0; b < k.B; ++b) labels[b] = static_cast<int32_t>(lab[b]);

  rt::DeviceBuffer<T> dz(convert<T>(z)), ddl(n);
  rt::DeviceBuffer<int32_t> dlab(labels), dhits(k.B);
  rt::DeviceBuffer<float> dloss(k.B);
  ddl.upload(convert<T>(std::vector<float>(n, 5.f)));  // overwritten
  softmax_xent<T>(dz.get(), dlab.get(), k.smoothing, k.dscale, dloss.get(), with_dlogits ? ddl.get() : nullptr,
                  with_hits ? dhits.get() : nullptr, k.B, k.C, nullptr);

  std::vector<float> loss_ref(k.B), dl_ref(n);
  std::vector<int32_t> hits_ref(k.B);
  ref::softmax_xent<float>(z.data(), labels.data(), k.smoothing, k.dscale, loss_ref.data(), dl_ref.data(),
                           hits_ref.data(), k.B, k.C);
  const std::vector<float> loss = dloss.download();
  const std::vector<float> dl = to_floats(ddl.download());
  const std::vector<int32_t> hits = dhits.download();

  for (int64_t b = 0; b < k.B; ++b) {
    const float* zr = z.data() + b * k.C;
    double m = zr[0], mean_abs = 0;
    for (int64_t j = 0; j < k.C; ++j) {
      m = std::max(m, double(zr[j]));
      mean_abs += std::fabs(zr[j]) / k.C;
    }
    double sum = 0;
    for (int64_t j = 0; j < k.C; ++j) sum += std::exp(zr[j] - m);
    const double lse = m + std::log(sum);
    // The kernel's sums run over ceil(C/32) terms per lane, then a 5-level butterfly, so the
    // recursive-summation bound is (ceil(C/32) + 5)·u relative to the (positive) terms. Σ exp:
    // each term also carries expf's few ulp and each rescale by a new maximum one more rounding,
    // so log(sum) is off by about (2·ceil(C/32) + 12)·u absolute. m + log(sum) and lse - z_y
    // round relative to |lse| and |z_y|; mean_j z_j adds (ceil(C/32) + 6)·u·mean|z|.
    const double lane_terms = double((k.C + 31) / 32);
    const double lse_err = (2 * lane_terms + 12) * kU32;
    const double tol =
        lse_err + 4 * kU32 * (std::fabs(lse) + std::fabs(zr[labels[b]])) + (lane_terms + 6) * kU32 * mean_abs;
    ASSERT_NEAR(loss[b], loss_ref[b], tol) << "loss[" << b << "]";
    if (with_hits) {
      ASSERT_EQ(hits[b], hits_ref[b]) << "hits[" << b << "]";
    }
    if (!with_dlogits) continue;
    for (int64_t j = 0; j < k.C; ++j) {
      const double p = std::exp(zr[j] - lse);
      // p = exp(z - lse): relative error = the absolute error of its argument (lse_err, plus
      // the rounding of z - lse) plus expf's few ulp; p - target and ·dscale round once each;
      // bf16 storage rounds the result (one bf16 ulp, 2·2⁻⁸, for a tie crossed).
      const double arg_err = lse_err + 2 * kU32 * (std::fabs(zr[j]) + std::fabs(lse));
      const double t = std::fabs(k.dscale) * (p * (arg_err + 8 * kU32) + 4 * kU32 * (p + 1)) +
                       (bf16 ? 2 * kUBf16 * std::fabs(dl_ref[b * k.C + j]) : 0);
      ASSERT_NEAR(dl[b * k.C + j], dl_ref[b * k.C + j], t) << "dlogits[" << b << "][" << j << "]";
    }
  }
}

// C = 1 (loss 0), 2, CIFAR's 10 and 100, ImageNet's 1000, odd sizes around the warp width.
const Case kCases[] = {{1, 1, 0.f, 1.f, false},      {3, 2, 0.1f, 1.f / 3, false},   {5, 10, 0.f, 0.2f, true},
                       {7, 33, 0.1f, 1.f / 7, true}, {9, 100, 0.1f, 1.f / 9, false}, {4, 1000, 0.1f, 0.25f, false},
                       {3, 1037, 0.3f, -2.f, true},  {2, 31, 1.f, 1.f, false},       {4, 64, 0.1f, 0.f, false}};

TEST_P(SoftmaxXent, F32) {
  for (const Case& k : kCases) check<float>(k, true, true);
}
TEST_P(SoftmaxXent, Bf16) {
  for (const Case& k : kCases) check<__nv_bfloat16>(k, true, true);
}
TEST_P(SoftmaxXent, WithoutDlogitsOrHits) {
  check<float>(kCases[4], false, true);
  check<__nv_bfloat16>(kCases[6], false, false);
}

TEST_P(SoftmaxXent, BadLabelGivesNaN) {
  const int64_t B = 3, C = 5;
  rt::DeviceBuffer<float> z(std::vector<float>(B * C, 1.f)), loss(B), dl(B * C);
  rt::DeviceBuffer<int32_t> labels(std::vector<int32_t>{1, 5, -1}), hits(B);
  dl.upload(std::vector<float>(B * C, 9.f));
  softmax_xent<float>(z.get(), labels.get(), 0.1f, 1.f, loss.get(), dl.get(), hits.get(), B, C, nullptr);
  const std::vector<float> l = loss.download(), d = dl.download();
  const std::vector<int32_t> h = hits.download();
  EXPECT_NEAR(l[0], std::log(5.0), 1e-6);  // uniform logits: log C whatever the smoothing
  EXPECT_EQ(h[0], 3);                      // nothing scores strictly above the label
  for (int b = 1; b < 3; ++b) {
    EXPECT_TRUE(std::isnan(l[b])) << "loss[" << b << "]";
    EXPECT_EQ(h[b], 0);
    for (int j = 0; j < C; ++j) EXPECT_EQ(d[b * C + j], 0.f);
  }
}

TEST_P(SoftmaxXent, ArgumentChecks) {
  rt::DeviceBuffer<float> f(64);
  rt::DeviceBuffer<int32_t> i(8);
  float* p = f.get();
  int32_t* q = i.get();
  const char* op = "softmax_xent";
  expect_error([&] { softmax_xent<float>(nullptr, q, 0.f, 1.f, p, p, q, 2, 4, nullptr); }, {op, "logits is null"});
  expect_error([&] { softmax_xent<float>(p, nullptr, 0.f, 1.f, p, p, q, 2, 4, nullptr); }, {op, "labels is null"});
  expect_error([&] { softmax_xent<float>(p, q, 0.f, 1.f, nullptr, p, q, 2, 4, nullptr); }, {op, "losses is null"});
  const float* odd = reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + 1);
  expect_error([&] { softmax_xent<float>(odd, q, 0.f, 1.f, p, p, q, 2, 4, nullptr); }, {op, "logits is not aligned"});
  expect_error([&] { softmax_xent<float>(p, q, 0.f, 1.f, p, p, q, 2, 0, nullptr); }, {op, "C must be > 0"});
  expect_error([&] { softmax_xent<float>(p, q, 0.f, 1.f, p, p, q, -1, 4, nullptr); }, {op, "B must be >= 0"});
  expect_error([&] { softmax_xent<float>(p, q, 1.5f, 1.f, p, p, q, 2, 4, nullptr); }, {op, "smoothing"});
  expect_error([&] { softmax_xent<float>(p, q, 0.f, NAN, p, p, q, 2, 4, nullptr); }, {op, "dscale"});
}

TEST_P(SoftmaxXent, NativeImageNetShapes) {
  if (emulated()) GTEST_SKIP() << "full-size shape: native build only (the emulator is too slow)";
  check<__nv_bfloat16>({256, 1000, 0.1f, 1.f / 256, false}, true, true);
  check<float>({8, 21843, 0.1f, 1.f / 8, false}, true, true);
}

INSTANTIATE_TEST_SUITE_P(Backends, SoftmaxXent, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
