// The StepState ops of the CUDA backend ("cuda-emu" here, "cuda" natively) against the CPU
// reference backend, through the public Backend API: step_metrics with accumulate (the
// micro-batches of one step) and commit, and grad_norm_clip's two halves, grad_sumsq and
// grad_norm_finish, including a Σ g² the host overwrote in between (a data-parallel all-reduce).
//
// Bitwise comparisons across backends need sums whose order does not matter: the losses are
// floats in [0.5, 4) (multiples of 2^-24, a sum of up to 2^10 of them < 2^12: 36 bits, exact in
// double) and the gradients k/1024 with |k| <= 1000 (squares k²·2^-20, a sum of 4001 of them
// < 2^32·2^-20: exact). The kernels' fixed block order and the reference's sample order then give
// the same bits.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernel_test.h"
#include "kernels/cuda_backend.h"

namespace vitcuda::test {
namespace {

class StepStateOps : public BackendTest {};

// One backend with a StepState and a few tensors in its memory.
struct OnBackend {
  std::unique_ptr<Backend> be;
  StepState* state = nullptr;
  std::vector<void*> buffers;

  explicit OnBackend(std::unique_ptr<Backend> b) : be(std::move(b)) {
    state = static_cast<StepState*>(be->alloc(sizeof(StepState)));
    set(StepState{});
  }
  ~OnBackend() {
    for (void* p : buffers) be->release(p);
    be->release(state);
  }
  OnBackend(const OnBackend&) = delete;
  OnBackend& operator=(const OnBackend&) = delete;

  template <typename T>
  Tensor upload(const std::vector<T>& v, DType dtype) {
    void* p = be->alloc(v.size() * sizeof(T));
    buffers.push_back(p);
    be->copy_to_device(p, v.data(), v.size() * sizeof(T));
    return Tensor::view(p, {int64_t(v.size())}, dtype, be->device());
  }
  StepState get() {
    StepState s;
    be->copy_to_host(&s, state, sizeof(StepState));
    return s;
  }
  void set(const StepState& s) { be->copy_to_device(state, &s, sizeof(StepState)); }
};

std::unique_ptr<OnBackend> cpu() { return std::make_unique<OnBackend>(make_backend("cpu")); }
std::unique_ptr<OnBackend> dut() { return std::make_unique<OnBackend>(make_cuda_backend(DType::F32)); }

// Same bits (any NaN matches any NaN: its payload is not part of the contract).
bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }
bool same(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }

void expect_same_state(const StepState& a, const StepState& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(same(a.step_loss, b.step_loss)) << a.step_loss << " vs " << b.step_loss;
  EXPECT_EQ(a.step_samples, b.step_samples);
  EXPECT_EQ(a.step_top1, b.step_top1);
  EXPECT_EQ(a.step_top5, b.step_top5);
  EXPECT_TRUE(same(a.grad_sumsq, b.grad_sumsq)) << a.grad_sumsq << " vs " << b.grad_sumsq;
  EXPECT_TRUE(same(a.grad_scale, b.grad_scale)) << a.grad_scale << " vs " << b.grad_scale;
  EXPECT_EQ(a.skip, b.skip);
  EXPECT_EQ(a.adam_step, b.adam_step);
  EXPECT_TRUE(same(a.loss_sum, b.loss_sum)) << a.loss_sum << " vs " << b.loss_sum;
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.top1, b.top1);
  EXPECT_EQ(a.top5, b.top5);
  EXPECT_EQ(a.skipped_steps, b.skipped_steps);
}

struct Batch {
  std::vector<float> losses;
  std::vector<int32_t> hits;
  double loss = 0;  // by hand: Σ in sample order
  int64_t top1 = 0, top5 = 0;
};

Batch make_batch(int B, uint32_t seed) {
  Batch b;
  b.losses = random_floats(B, 0.5f, 4.f, seed);
  std::mt19937 g(seed + 1);
  for (int i = 0; i < B; ++i) {
    const int32_t h = int32_t(g() % 4);  // bit 0: top-1, bit 1: top-5
    b.hits.push_back(h);
    b.loss += double(b.losses[i]);
    b.top1 += h & 1;
    b.top5 += (h >> 1) & 1;
  }
  return b;
}

StepState with_accumulators() {
  StepState s;
  s.loss_sum = 10.5, s.samples = 7, s.top1 = 3, s.top5 = 5, s.skipped_steps = 2, s.adam_step = 4;
  return s;
}

// Three micro-batches (the last one more than the kernel's 256 threads): the first replaces the
// step's metrics, the next two add to them; committed or not.
void check_accumulate(bool commit) {
  const std::vector<Batch> batches = {make_batch(5, 11), make_batch(37, 12), make_batch(300, 13)};
  auto ref = cpu();
  auto gpu = dut();
  StepState start = with_accumulators();
  start.step_loss = 1e9, start.step_samples = 99, start.step_top1 = 98, start.step_top5 = 97;  // replaced first
  ref->set(start);
  gpu->set(start);
  double loss = 0;
  int64_t samples = 0, top1 = 0, top5 = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& b = batches[i];
    for (OnBackend* o : {ref.get(), gpu.get()})
      o->be->step_metrics(o->upload(b.losses, DType::F32), o->upload(b.hits, DType::I32), o->state, commit,
                          /*accumulate=*/i > 0);
    loss = loss + b.loss;  // old + this batch's sum, as the op adds
    samples += int64_t(b.losses.size()), top1 += b.top1, top5 += b.top5;
    const StepState r = ref->get(), d = gpu->get();
    expect_same_state(d, r, "after micro-batch " + std::to_string(i));
    EXPECT_EQ(r.step_loss, loss) << "micro-batch " << i;  // exact sums (file comment)
    EXPECT_EQ(r.step_samples, samples);
    EXPECT_EQ(r.step_top1, top1);
    EXPECT_EQ(r.step_top5, top5);
    // commit adds each call's own values to the accumulators; without it they are untouched.
    EXPECT_EQ(r.loss_sum, start.loss_sum + (commit ? loss : 0.0));
    EXPECT_EQ(r.samples, start.samples + (commit ? samples : 0));
    EXPECT_EQ(r.top1, start.top1 + (commit ? top1 : 0));
    EXPECT_EQ(r.top5, start.top5 + (commit ? top5 : 0));
    EXPECT_EQ(r.skipped_steps, start.skipped_steps);
  }
}

TEST_P(StepStateOps, StepMetricsAccumulate) { check_accumulate(false); }
TEST_P(StepStateOps, StepMetricsAccumulateAndCommit) { check_accumulate(true); }

std::vector<float> exact_grads(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(int(g() % 2001) - 1000) / 1024.f;
  return v;
}

double sumsq_of(const std::vector<float>& g) {
  double s = 0;
  for (float x : g) s += double(x) * double(x);
  return s;
}

// grad_sumsq then grad_norm_finish leaves the state grad_norm_clip leaves, on both backends.
TEST_P(StepStateOps, GradNormHalvesEqualClip) {
  struct Case {
    const char* name;
    float max_norm;
    bool nan_grad, nan_loss;
  };
  const std::vector<float> g = exact_grads(4001, 21);
  const double norm = std::sqrt(sumsq_of(g));  // ~18.3
  for (const Case& c : {Case{"unclipped", 1000.f, false, false}, Case{"clipped", 1.f, false, false},
                        Case{"no clipping (max_norm 0)", 0.f, false, false}, Case{"NaN gradient", 1.f, true, false},
                        Case{"NaN loss", 1.f, false, true}}) {
    SCOPED_TRACE(c.name);
    std::vector<float> grads = g;
    if (c.nan_grad) grads[1234] = std::nanf("");
    StepState start = with_accumulators();
    start.step_loss = c.nan_loss ? std::nan("") : 7.25;
    start.step_samples = 4, start.step_top1 = 2, start.step_top5 = 3;
    start.grad_scale = 0.125f, start.skip = 1;  // stale values of the last step: overwritten
    StepState clip[2], halves[2];
    int k = 0;
    for (auto make : {cpu, dut}) {
      auto a = make(), b = make();
      a->set(start);
      b->set(start);
      a->be->grad_norm_clip(a->upload(grads, DType::F32), c.max_norm, a->state);
      b->be->grad_sumsq(b->upload(grads, DType::F32), b->state);
      b->be->grad_norm_finish(c.max_norm, b->state);
      clip[k] = a->get(), halves[k] = b->get();
      ++k;
    }
    expect_same_state(halves[0], clip[0], "cpu: halves vs grad_norm_clip");
    expect_same_state(halves[1], clip[1], "cuda: halves vs grad_norm_clip");
    expect_same_state(halves[1], halves[0], "cuda vs cpu");
    const StepState& s = halves[1];
    const bool skip = c.nan_grad || c.nan_loss;
    EXPECT_EQ(s.skip, skip ? 1 : 0);
    EXPECT_EQ(s.skipped_steps, start.skipped_steps + (skip ? 1 : 0));
    EXPECT_EQ(s.samples, start.samples + (skip ? 0 : 4));
    EXPECT_EQ(s.top1, start.top1 + (skip ? 0 : 2));
    EXPECT_EQ(s.top5, start.top5 + (skip ? 0 : 3));
    if (!c.nan_grad) {
      EXPECT_EQ(s.grad_sumsq, sumsq_of(g));
    }
    if (skip) continue;
    EXPECT_EQ(s.loss_sum, start.loss_sum + 7.25);
    const bool clipped = c.max_norm > 0.f && norm > c.max_norm;
    EXPECT_EQ(s.grad_scale, clipped ? float(c.max_norm / (norm + 1e-6)) : 1.f);
    EXPECT_EQ(clipped, std::string(c.name) == "clipped");
  }
}

// grad_norm_finish uses whatever Σ g² is in the state when it runs: a data-parallel step
// all-reduces it between the halves.
TEST_P(StepStateOps, GradNormFinishReadsTheStoredSumsq) {
  const std::vector<float> g = exact_grads(1001, 31);
  const double local = sumsq_of(g);
  const float max_norm = 1.f;
  for (const double reduced : {4 * local, double(std::nan(""))}) {
    SCOPED_TRACE("Σ g² overwritten with " + std::to_string(reduced));
    StepState got[2];
    int k = 0;
    for (auto make : {cpu, dut}) {
      auto o = make();
      StepState start = with_accumulators();
      start.step_loss = 3.5, start.step_samples = 2, start.step_top1 = 1, start.step_top5 = 2;
      o->set(start);
      o->be->grad_sumsq(o->upload(g, DType::F32), o->state);
      StepState s = o->get();
      EXPECT_EQ(s.grad_sumsq, local);
      s.grad_sumsq = reduced;  // the all-reduced sum, as the host writes it back
      o->set(s);
      o->be->grad_norm_finish(max_norm, o->state);
      got[k++] = o->get();
    }
    expect_same_state(got[1], got[0], "cuda vs cpu");
    const StepState& s = got[1];
    if (std::isnan(reduced)) {
      EXPECT_EQ(s.skip, 1);
      EXPECT_EQ(s.skipped_steps, 3);
      EXPECT_EQ(s.samples, 7);  // not committed
      EXPECT_EQ(s.loss_sum, 10.5);
    } else {
      EXPECT_EQ(s.grad_sumsq, reduced);
      EXPECT_EQ(s.skip, 0);
      // ‖g‖ doubles: the factor is the one of the reduced norm, about half the local one.
      const double norm = std::sqrt(reduced);
      ASSERT_GT(norm, max_norm);
      EXPECT_EQ(s.grad_scale, float(max_norm / (norm + 1e-6)));
      EXPECT_NEAR(s.grad_scale, 0.5 * max_norm / std::sqrt(local), 1e-6);
      EXPECT_EQ(s.samples, 9);
      EXPECT_EQ(s.loss_sum, 14.0);
    }
  }
}

TEST_P(StepStateOps, ArgumentChecks) {
  auto o = dut();
  const Tensor g = o->upload(exact_grads(8, 41), DType::F32);
  expect_error([&] { o->be->grad_sumsq(g, nullptr); }, {"grad_sumsq", "state is null"});
  expect_error([&] { o->be->grad_sumsq(Tensor(), o->state); }, {"grad_sumsq", "grads"});
  expect_error([&] { o->be->grad_norm_finish(std::nanf(""), o->state); }, {"grad_norm_finish", "max_norm"});
  expect_error([&] { o->be->grad_norm_finish(-1.f, o->state); }, {"grad_norm_finish", "max_norm"});
  expect_error([&] { o->be->grad_norm_finish(1.f, nullptr); }, {"grad_norm_finish", "state is null"});
  // grad_norm_clip checks max_norm before computing Σ g²: the state is untouched.
  StepState s = o->get();
  s.grad_sumsq = 123.0;
  o->set(s);
  expect_error([&] { o->be->grad_norm_clip(g, INFINITY, o->state); }, {"grad_norm_clip", "max_norm"});
  EXPECT_EQ(o->get().grad_sumsq, 123.0);
}

INSTANTIATE_TEST_SUITE_P(Backends, StepStateOps, ::testing::Values(std::string(rt::backend_name())),
                         backend_param_name);

}  // namespace
}  // namespace vitcuda::test
