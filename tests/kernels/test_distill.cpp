// Backend::distill_loss (kernels/distill.cu on the device backend, ref::distill_loss on "cpu"),
// through the public op on both backends of this binary: small explicit examples against the
// textbook formulas in double (tests/distill_expected.h), α = 0 and 1, accumulate against write,
// ties in the teacher's argmax, and random rows against the CPU reference in f32 and bf16.
#include <cmath>
#include <cstring>
#include <memory>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/cuda_backend.h"
#include "kernels/distill.h"
#include "tests/distill_expected.h"

namespace vitcuda::test {
namespace {

// Tensors in one backend's memory, released with it.
class OnDevice {
 public:
  explicit OnDevice(const std::string& name)
      : be_(name == "cpu" ? make_backend("cpu") : make_cuda_backend(DType::F32)) {}
  ~OnDevice() {
    for (void* p : buffers_) be_->release(p);
  }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

  Backend& be() { return *be_; }

  // values stored as dtype (F32 or BF16)
  Tensor upload(const std::vector<float>& v, std::initializer_list<int64_t> shape, DType dtype) {
    void* p = nullptr;
    if (dtype == DType::BF16) {
      const std::vector<__nv_bfloat16> h = convert<__nv_bfloat16>(v);
      p = alloc(h.size() * sizeof(h[0]));
      be_->copy_to_device(p, h.data(), h.size() * sizeof(h[0]));
    } else {
      p = alloc(v.size() * sizeof(float));
      be_->copy_to_device(p, v.data(), v.size() * sizeof(float));
    }
    return Tensor::view(p, shape, dtype, be_->device());
  }
  std::vector<float> download(const Tensor& t) {
    if (t.dtype() == DType::BF16) {
      std::vector<__nv_bfloat16> h(size_t(t.numel()));
      be_->copy_to_host(h.data(), t.data(), t.nbytes());
      return to_floats(h);
    }
    std::vector<float> h(size_t(t.numel()));
    be_->copy_to_host(h.data(), t.data(), t.nbytes());
    return h;
  }

 private:
  void* alloc(size_t bytes) {
    void* p = be_->alloc(bytes);
    buffers_.push_back(p);
    return p;
  }
  std::unique_ptr<Backend> be_;
  std::vector<void*> buffers_;
};

class DistillLoss : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "cpu") VITCUDA_SKIP_WITHOUT_DEVICE();
  }
};

std::vector<double> to_doubles(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// B = 2, C = 3: the first row's teacher has a tie (indices 1 and 2), the argmax is index 1.
const std::vector<float> kS = {1.f, 2.f, 0.5f, -1.f, 0.f, 3.f};
const std::vector<float> kT = {0.25f, 1.5f, 1.5f, 2.f, -1.f, 0.f};

// losses = (1 − α)·old + α·L and dlogits = α·dscale·grad (written, then accumulated onto a
// pre-filled buffer) against the double formulas. f32: every quantity is a few fp32 roundings of
// values of order 1 (the sums have 3 terms): 1e-6 absolute covers them with ~10x room.
TEST_P(DistillLoss, SmallExampleAgainstFormulas) {
  OnDevice d(GetParam());
  const int B = 2, C = 3;
  const float alpha = 0.625f, dscale = 0.25f;
  const std::vector<float> old = {1.5f, -0.75f}, prefill = {0.5f, -1.f, 2.f, 0.f, 3.f, -0.25f};
  for (Distill kind : {Distill::Hard, Distill::Soft})
    for (float tau : {1.f, 2.f, 0.5f}) {
      if (kind == Distill::Hard && tau != 1.f) continue;  // τ does not enter the hard term
      SCOPED_TRACE(std::string(distill_name(kind)) + " tau=" + std::to_string(tau));
      const DistillExpected e = distill_expected(to_doubles(kS), to_doubles(kT), B, C, kind, tau);
      const Tensor s = d.upload(kS, {B, C}, DType::F32), t = d.upload(kT, {B, C}, DType::F32);
      const Tensor losses = d.upload(old, {B}, DType::F32), dl = d.upload(prefill, {B, C}, DType::F32);
      d.be().distill_loss(s, t, kind, tau, alpha, dscale, losses, dl, /*accumulate=*/false);
      const std::vector<float> l = d.download(losses), g = d.download(dl);
      for (int b = 0; b < B; ++b) {
        EXPECT_NEAR(l[b], (1 - alpha) * old[b] + alpha * e.loss[b], 1e-6) << "loss[" << b << "]";
      }
      for (int i = 0; i < B * C; ++i) {
        EXPECT_NEAR(g[i], alpha * dscale * e.grad[i], 1e-6) << "dlogits[" << i << "]";
      }
      // accumulate: the same term added to what the buffer holds
      const Tensor losses2 = d.upload(old, {B}, DType::F32), dl2 = d.upload(prefill, {B, C}, DType::F32);
      d.be().distill_loss(s, t, kind, tau, alpha, dscale, losses2, dl2, /*accumulate=*/true);
      const std::vector<float> l2 = d.download(losses2), g2 = d.download(dl2);
      for (int b = 0; b < B; ++b) {
        EXPECT_TRUE(same_bits(l2[b], l[b])) << "losses do not depend on accumulate";
      }
      for (int i = 0; i < B * C; ++i) {
        EXPECT_NEAR(g2[i], prefill[i] + alpha * dscale * e.grad[i], 1e-6) << "accumulated dlogits[" << i << "]";
        // the written term plus the pre-filled value, rounded once
        EXPECT_NEAR(g2[i], prefill[i] + g[i], 2 * kU32 * (std::fabs(prefill[i]) + std::fabs(g[i])))
            << "accumulate = write + prefill, [" << i << "]";
      }
    }
}

// α = 0: losses keep their bits ((1 − 0)·x + 0·L = x for finite L), dlogits accumulate nothing
// (x + 0 = x) and are written as zeros. α = 1: the old losses are ignored.
TEST_P(DistillLoss, AlphaZeroAndOne) {
  OnDevice d(GetParam());
  const int B = 2, C = 3;
  const std::vector<float> old = {1.2345678f, 9.87654f}, prefill = {0.1f, -0.2f, 0.3f, 1e-3f, 7.f, -5.f};
  for (Distill kind : {Distill::Hard, Distill::Soft}) {
    SCOPED_TRACE(distill_name(kind));
    const Tensor s = d.upload(kS, {B, C}, DType::F32), t = d.upload(kT, {B, C}, DType::F32);
    const Tensor losses = d.upload(old, {B}, DType::F32), dl = d.upload(prefill, {B, C}, DType::F32);
    d.be().distill_loss(s, t, kind, 2.f, 0.f, 0.5f, losses, dl, /*accumulate=*/true);
    const std::vector<float> l = d.download(losses), g = d.download(dl);
    for (int b = 0; b < B; ++b) {
      EXPECT_TRUE(same_bits(l[b], old[b])) << "alpha 0 changed loss[" << b << "]: " << l[b] << " vs " << old[b];
    }
    for (int i = 0; i < B * C; ++i) {
      EXPECT_TRUE(same_bits(g[i], prefill[i])) << "alpha 0 changed accumulated dlogits[" << i << "]";
    }
    d.be().distill_loss(s, t, kind, 2.f, 0.f, 0.5f, losses, dl, /*accumulate=*/false);
    for (float v : d.download(dl)) EXPECT_EQ(v, 0.f) << "alpha 0 writes zeros";

    const DistillExpected e = distill_expected(to_doubles(kS), to_doubles(kT), B, C, kind, 2.0);
    const Tensor losses1 = d.upload({1e30f, -1e30f}, {B}, DType::F32);
    d.be().distill_loss(s, t, kind, 2.f, 1.f, 1.f, losses1, Tensor{}, false);
    const std::vector<float> l1 = d.download(losses1);
    for (int b = 0; b < B; ++b) {
      EXPECT_NEAR(l1[b], e.loss[b], 1e-6) << "alpha 1: loss[" << b << "] is L alone";
    }
  }
}

// Ties in the teacher's maximum take the first index (torch.argmax on the CPU), also when the
// tied classes fall in different lanes of the kernel's warp (C = 70: indices 7, 39 and 40 are
// lanes 7, 7 and 8) and when the first of them is not the lowest lane's.
TEST_P(DistillLoss, TeacherTiesTakeTheFirstIndex) {
  OnDevice d(GetParam());
  const int B = 3, C = 70;
  std::vector<float> t(size_t(B) * C, -1.f);
  const int first[B] = {7, 33, 0};
  for (int j : {7, 39, 40}) t[j] = 4.f;             // row 0: 7
  for (int j : {33, 34, 66, 69}) t[C + j] = 2.f;    // row 1: 33 (lane 1), before lanes 2 and 5 of the first pass
  for (int j = 0; j < C; ++j) t[2 * C + j] = 0.5f;  // row 2: all tied, 0
  const std::vector<float> s = random_floats(size_t(B) * C, -2.f, 2.f, 71);
  const DistillExpected e = distill_expected(to_doubles(s), to_doubles(t), B, C, Distill::Hard, 1.0);
  const Tensor ts = d.upload(s, {B, C}, DType::F32), tt = d.upload(t, {B, C}, DType::F32);
  const Tensor losses = d.upload(std::vector<float>(B, 0.f), {B}, DType::F32);
  const Tensor dl = d.upload(std::vector<float>(size_t(B) * C, 0.f), {B, C}, DType::F32);
  d.be().distill_loss(ts, tt, Distill::Hard, 1.f, 1.f, 1.f, losses, dl, false);
  const std::vector<float> l = d.download(losses), g = d.download(dl);
  for (int b = 0; b < B; ++b) {
    EXPECT_NEAR(l[b], e.loss[b], 1e-5) << "loss[" << b << "]";  // lse of 70 terms of order 1: 1e-5 is ~100 ulp
    for (int j = 0; j < C; ++j) {
      const float v = g[size_t(b) * C + j];
      EXPECT_EQ(v < 0.f, j == first[b]) << "row " << b << ": only the label's gradient p − 1 is negative, j " << j;
      EXPECT_NEAR(v, e.grad[size_t(b) * C + j], 1e-6) << "dlogits[" << b << "][" << j << "]";
    }
  }
}

// dlogits undefined: only the losses.
TEST_P(DistillLoss, WithoutDlogits) {
  OnDevice d(GetParam());
  const Tensor s = d.upload(kS, {2, 3}, DType::F32), t = d.upload(kT, {2, 3}, DType::F32);
  const Tensor losses = d.upload({0.f, 0.f}, {2}, DType::F32);
  d.be().distill_loss(s, t, Distill::Soft, 1.f, 1.f, 1.f, losses, Tensor{}, false);
  const DistillExpected e = distill_expected(to_doubles(kS), to_doubles(kT), 2, 3, Distill::Soft, 1.0);
  const std::vector<float> l = d.download(losses);
  for (int b = 0; b < 2; ++b) EXPECT_NEAR(l[b], e.loss[b], 1e-6);
}

// Random rows against ref::distill_loss (double inside) on the same stored inputs.
// Tolerance, f32: the kernel's log-sum-exp of z/τ (|z| ≤ 8) over ceil(C/32) terms a lane and a
// 5-level butterfly is off by about (2·ceil(C/32) + 12)·u absolute (as softmax_xent's); log p and
// log q add the rounding of z/τ − lse; the loss sums q·(log q − log p) with the same summation
// bound and scales by τ²; dlogits: p and q carry the error of their arguments relatively.
// bf16 (device only): the inputs are bf16 on both sides, so the math is the same fp32; only the
// stored dlogits round once more to bf16 (one bf16 ulp, 2·2⁻⁸ relative, for a tie crossed); the
// losses are fp32 either way.
void check_random(OnDevice& d, DType dtype, int64_t B, int64_t C, Distill kind, float tau, float alpha, float dscale,
                  bool accumulate) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " B=" + std::to_string(B) + " C=" + std::to_string(C) + " " +
               distill_name(kind) + " tau=" + std::to_string(tau) + " alpha=" + std::to_string(alpha) +
               (accumulate ? " accumulate" : ""));
  const bool bf16 = dtype == DType::BF16;
  const int64_t n = B * C;
  auto stored = [&](std::vector<float> v) { return bf16 ? to_floats(convert<__nv_bfloat16>(v)) : v; };
  const std::vector<float> s = stored(random_floats(n, -8.f, 8.f, 101 + n)),
                           t = stored(random_floats(n, -8.f, 8.f, 103 + n)), old = random_floats(B, 0.f, 5.f, 107 + n),
                           pre = stored(random_floats(n, -1.f, 1.f, 109));
  const Tensor ts = d.upload(s, {B, C}, dtype), tt = d.upload(t, {B, C}, dtype);
  const Tensor losses = d.upload(old, {B}, DType::F32), dl = d.upload(pre, {B, C}, dtype);
  d.be().distill_loss(ts, tt, kind, tau, alpha, dscale, losses, dl, accumulate);
  std::vector<float> l_ref = old, g_ref = pre;
  ref::distill_loss<float>(s.data(), t.data(), kind, tau, alpha, dscale, l_ref.data(), g_ref.data(), accumulate, B, C);
  const std::vector<float> l = d.download(losses), g = d.download(dl);
  const double lane_terms = double((C + 31) / 32), lse_err = (2 * lane_terms + 12) * kU32;
  const double zmax = 8.0 / (kind == Distill::Soft ? tau : 1.f);
  const double arg_err = 2 * lse_err + 4 * kU32 * 2 * (zmax + zmax + std::log(double(C)));
  const double t2 = kind == Distill::Soft ? double(tau) * tau : 1.0;
  for (int64_t b = 0; b < B; ++b) {
    const double L = (l_ref[b] - (1 - alpha) * old[b]) / std::max(alpha, 1e-30f);
    const double tol =
        alpha * t2 * (arg_err + (lane_terms + 6) * kU32 * (std::fabs(L) / t2 + 2 * zmax + std::log(double(C)))) +
        4 * kU32 * (std::fabs(old[b]) + std::fabs(l_ref[b]));
    ASSERT_NEAR(l[b], l_ref[b], tol) << "loss[" << b << "]";
    for (int64_t j = 0; j < C; ++j) {
      const int64_t i = b * C + j;
      const double term = double(g_ref[i]) - (accumulate ? pre[i] : 0.0);
      const double gt = std::fabs(alpha * dscale) * (kind == Distill::Soft ? tau : 1.f);
      const double tol_g = 2 * gt * (arg_err + 8 * kU32) + 4 * kU32 * (std::fabs(term) + gt) +
                           (accumulate ? 2 * kU32 * std::fabs(pre[i]) : 0.0) +
                           (bf16 ? 2 * kUBf16 * std::fabs(g_ref[i]) : 0);
      ASSERT_NEAR(g[i], g_ref[i], tol_g) << "dlogits[" << b << "][" << j << "]";
    }
  }
}

struct RandomCase {
  int64_t B, C;
  float tau, alpha, dscale;
};
// C = 1 (loss 0), 2, CIFAR's 10 and 100, ImageNet's 1000, odd sizes around the warp width; DeiT's
// τ = 1 and 3 (soft), α 0.5 and 0.1.
const RandomCase kRandom[] = {{1, 1, 1.f, 0.5f, 1.f},       {3, 2, 3.f, 0.5f, 1.f / 3},  {5, 10, 1.f, 0.1f, 0.2f},
                              {7, 33, 0.5f, 0.5f, 1.f / 7}, {9, 100, 3.f, 1.f, 1.f / 9}, {4, 1000, 1.f, 0.5f, 0.25f},
                              {3, 1037, 2.f, 0.3f, -2.f}};

TEST_P(DistillLoss, RandomRowsF32) {
  OnDevice d(GetParam());
  for (const RandomCase& k : kRandom)
    for (Distill kind : {Distill::Hard, Distill::Soft})
      for (bool acc : {false, true}) check_random(d, DType::F32, k.B, k.C, kind, k.tau, k.alpha, k.dscale, acc);
}

TEST_P(DistillLoss, RandomRowsBf16) {
  if (GetParam() == "cpu") GTEST_SKIP() << "the cpu backend computes in f32 or f64";
  OnDevice d(GetParam());
  for (const RandomCase& k : kRandom)
    for (Distill kind : {Distill::Hard, Distill::Soft})
      for (bool acc : {false, true}) check_random(d, DType::BF16, k.B, k.C, kind, k.tau, k.alpha, k.dscale, acc);
}

TEST_P(DistillLoss, KernelArgumentChecks) {
  if (GetParam() == "cpu") GTEST_SKIP() << "the kernel launcher's own checks";
  rt::DeviceBuffer<float> f(64);
  float* p = f.get();
  expect_error([&] { distill_loss<float>(p, p, Distill::Hard, 1.f, 1.5f, 1.f, p, p, false, 2, 4, nullptr); },
               {"distill_loss", "alpha"});
  expect_error([&] { distill_loss<float>(p, p, Distill::Soft, 0.f, 0.5f, 1.f, p, p, false, 2, 4, nullptr); },
               {"distill_loss", "tau"});
  expect_error([&] { distill_loss<float>(p, p, Distill::Soft, 1.f, 0.5f, NAN, p, p, false, 2, 4, nullptr); },
               {"distill_loss", "dscale"});
  expect_error([&] { distill_loss<float>(p, p, Distill::Soft, 1.f, 0.5f, 1.f, p, p, false, 2, 0, nullptr); },
               {"distill_loss", "C"});
  expect_error([&] { distill_loss<float>(nullptr, p, Distill::Soft, 1.f, 0.5f, 1.f, p, p, false, 2, 4, nullptr); },
               {"distill_loss", "student"});
  expect_error([&] { distill_loss<float>(p, p, Distill::Soft, 1.f, 0.5f, 1.f, nullptr, p, false, 2, 4, nullptr); },
               {"distill_loss", "losses"});
}

INSTANTIATE_TEST_SUITE_P(Backends, DistillLoss, ::testing::Values(std::string("cpu"), std::string(rt::backend_name())),
                         backend_param_name);

}  // namespace
}  // namespace vitcuda::test
