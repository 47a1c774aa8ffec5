// The StepState ops of include/vitcuda/backend.h on the "cpu" backend (the reference the CUDA
// kernels are checked against in tests/kernels/test_step_state.cpp): step_metrics with
// accumulate and commit against hand sums, and grad_norm_clip against its two halves,
// grad_sumsq and grad_norm_finish, with f32 and f64 gradients and a Σ g² overwritten in between.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "vitcuda/backend.h"

namespace vitcuda {
namespace {

template <typename T>
Tensor view(std::vector<T>& v, DType dtype) {
  return Tensor::view(v.data(), {int64_t(v.size())}, dtype);
}

StepState with_accumulators() {
  StepState s;
  s.loss_sum = 10.5, s.samples = 7, s.top1 = 3, s.top5 = 5, s.skipped_steps = 2, s.adam_step = 4;
  return s;
}

// Three micro-batches: the first replaces the step's metrics, the next two add to them (step_loss
// = old + the batch's Σ in sample order); commit adds each call's own values to the accumulators.
TEST(StepStateOps, StepMetricsAccumulate) {
  auto be = make_backend("cpu");
  for (const bool commit : {false, true}) {
    SCOPED_TRACE(commit ? "commit" : "no commit");
    StepState s = with_accumulators();
    s.step_loss = 1e9, s.step_samples = 99, s.step_top1 = 98, s.step_top5 = 97;  // replaced by the first
    const StepState start = s;
    std::mt19937 g(5);
    std::uniform_real_distribution<float> dist(0.01f, 5.f);  // any values: same order both ways
    double loss = 0;
    int64_t samples = 0, top1 = 0, top5 = 0;
    for (int call = 0; call < 3; ++call) {
      const int B = 3 + 4 * call;
      std::vector<float> losses(B);
      std::vector<int32_t> hits(B);
      double batch = 0;
      for (int i = 0; i < B; ++i) {
        losses[i] = dist(g);
        hits[i] = int32_t(g() % 4);
        batch += double(losses[i]);
        top1 += hits[i] & 1;
        top5 += (hits[i] >> 1) & 1;
      }
      loss = call == 0 ? batch : loss + batch;
      samples += B;
      be->step_metrics(view(losses, DType::F32), view(hits, DType::I32), &s, commit, /*accumulate=*/call > 0);
      EXPECT_EQ(s.step_loss, loss) << "call " << call;  // bitwise: the same additions in the same order
      EXPECT_EQ(s.step_samples, samples);
      EXPECT_EQ(s.step_top1, top1);
      EXPECT_EQ(s.step_top5, top5);
    }
    EXPECT_EQ(s.samples, start.samples + (commit ? samples : 0));
    EXPECT_EQ(s.top1, start.top1 + (commit ? top1 : 0));
    EXPECT_EQ(s.top5, start.top5 + (commit ? top5 : 0));
    // Committed call by call: 10.5 + s0 + s1 + s2, within rounding of 10.5 + the step's total.
    if (commit) {
      EXPECT_NEAR(s.loss_sum, start.loss_sum + loss, 1e-12 * (start.loss_sum + loss));
    } else {
      EXPECT_EQ(s.loss_sum, start.loss_sum);
    }
    EXPECT_EQ(s.skipped_steps, start.skipped_steps);
  }
}

// Same bits, any NaN matching any NaN.
bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }

void expect_same_state(const StepState& a, const StepState& b) {
  EXPECT_TRUE(same(a.grad_sumsq, b.grad_sumsq)) << a.grad_sumsq << " vs " << b.grad_sumsq;
  EXPECT_EQ(std::memcmp(&a.grad_scale, &b.grad_scale, sizeof(float)), 0) << a.grad_scale << " vs " << b.grad_scale;
  EXPECT_EQ(a.skip, b.skip);
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.top1, b.top1);
  EXPECT_EQ(a.top5, b.top5);
  EXPECT_EQ(a.skipped_steps, b.skipped_steps);
  EXPECT_EQ(a.adam_step, b.adam_step);
}

template <typename T>
void check_halves(DType dtype) {
  auto be = make_backend("cpu");
  // k/1024 with |k| <= 1000: the squares and their sums are exact in double, so Σ g² does not
  // depend on the order ref::sum_squares' OpenMP reduction takes.
  std::mt19937 gen(17);
  std::vector<T> g(1000);
  double want = 0;
  for (T& x : g) {
    x = T(int(gen() % 2001) - 1000) / T(1024);
    want += double(x) * double(x);
  }
  const double norm = std::sqrt(want);  // ~17.8
  struct Case {
    const char* name;
    float max_norm;
    bool nan_grad;
  };
  for (const Case& c : {Case{"unclipped", 100.f, false}, Case{"clipped", 2.f, false},
                        Case{"max_norm 0: no clipping", 0.f, false}, Case{"NaN gradient", 2.f, true}}) {
    SCOPED_TRACE(c.name);
    std::vector<T> grads = g;
    if (c.nan_grad) grads[500] = T(NAN);
    StepState start = with_accumulators();
    start.step_loss = 7.25, start.step_samples = 4, start.step_top1 = 2, start.step_top5 = 3;
    start.grad_scale = 0.125f, start.skip = 1;  // the last step's: overwritten
    StepState clip = start, halves = start;
    be->grad_norm_clip(view(grads, dtype), c.max_norm, &clip);
    be->grad_sumsq(view(grads, dtype), &halves);
    if (!c.nan_grad) {
      EXPECT_EQ(halves.grad_sumsq, want);
    }
    EXPECT_EQ(halves.skip, 1) << "grad_sumsq changed more than grad_sumsq";
    be->grad_norm_finish(c.max_norm, &halves);
    expect_same_state(halves, clip);
    EXPECT_EQ(halves.skip, c.nan_grad ? 1 : 0);
    EXPECT_EQ(halves.skipped_steps, start.skipped_steps + (c.nan_grad ? 1 : 0));
    EXPECT_EQ(halves.samples, start.samples + (c.nan_grad ? 0 : 4));
    if (c.nan_grad) continue;
    EXPECT_EQ(halves.loss_sum, start.loss_sum + 7.25);
    const bool clipped = std::string(c.name) == "clipped";
    EXPECT_EQ(halves.grad_scale, clipped ? float(c.max_norm / (norm + 1e-6)) : 1.f);
  }
}

TEST(StepStateOps, GradNormHalvesEqualClipF32) { check_halves<float>(DType::F32); }
TEST(StepStateOps, GradNormHalvesEqualClipF64) { check_halves<double>(DType::F64); }

// grad_norm_finish reads Σ g² from the state: what a data-parallel all-reduce wrote there.
TEST(StepStateOps, GradNormFinishReadsTheStoredSumsq) {
  auto be = make_backend("cpu");
  std::vector<float> g(100, 0.5f);  // Σ g² = 25, ‖g‖ = 5
  const float max_norm = 1.f;
  for (const double reduced : {100.0, std::nan("")}) {
    StepState s = with_accumulators();
    s.step_loss = 3.5, s.step_samples = 2;
    be->grad_sumsq(view(g, DType::F32), &s);
    EXPECT_EQ(s.grad_sumsq, 25.0);
    s.grad_sumsq = reduced;
    be->grad_norm_finish(max_norm, &s);
    if (std::isnan(reduced)) {
      EXPECT_EQ(s.skip, 1);
      EXPECT_EQ(s.skipped_steps, 3);
      EXPECT_EQ(s.samples, 7);
    } else {
      EXPECT_EQ(s.skip, 0);
      EXPECT_EQ(s.grad_sumsq, 100.0);
      EXPECT_EQ(s.grad_scale, float(1.0 / (10.0 + 1e-6)));  // ‖g‖ = 10, not the local 5
      EXPECT_EQ(s.samples, 9);
    }
  }
}

TEST(StepStateOps, ArgumentChecks) {
  auto be = make_backend("cpu");
  std::vector<float> g(4, 1.f);
  std::vector<int32_t> gi(4, 1);
  StepState s;
  using test::error_of;
  EXPECT_NE(error_of([&] { be->grad_sumsq(view(g, DType::F32), nullptr); }).find("grad_sumsq: "), std::string::npos);
  EXPECT_NE(error_of([&] { be->grad_sumsq(view(gi, DType::I32), &s); }).find("f32 or f64"), std::string::npos);
  EXPECT_NE(error_of([&] { be->grad_norm_finish(-1.f, &s); }).find("grad_norm_finish"), std::string::npos);
  EXPECT_NE(error_of([&] { be->grad_norm_finish(NAN, &s); }).find("max_norm"), std::string::npos);
  EXPECT_NE(error_of([&] { be->grad_norm_finish(1.f, nullptr); }).find("state is null"), std::string::npos);
  EXPECT_EQ(error_of([&] { be->grad_norm_finish(1.f, &s); }), "(no error)");
}

}  // namespace
}  // namespace vitcuda
