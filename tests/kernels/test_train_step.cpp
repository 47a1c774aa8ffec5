// TrainStep (vitcuda/train_step.h) on the CUDA backend ("cuda-emu" here, "cuda" natively):
// steps replayed from CUDA Graphs equal the same steps run op by op, bit for bit, with the
// learning-rate schedule, dropout, attention dropout and drop-path on; the replayed steps wait
// for nothing; a step with a non-finite loss is skipped and counted; the metrics the device
// accumulates equal the per-step losses.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernel_test.h"
#include "kernels/cuda_backend.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/train_step.h"

namespace vitcuda::test {
namespace {

constexpr int kBatch = 3;
constexpr int kSteps = 20;

struct TrainRun {
  std::vector<float> master;
  std::vector<StepMetrics> metrics;  // after every step
  int64_t adam_steps = 0;
  int64_t captured = 0;
  RuntimeCounters replayed;  // the runtime's counts over the steps after the first two
};

// 20 steps of a tiny ViT (dropout 0.1, attention dropout 0.1, drop-path 0.2) from the same
// weights and batches, with a warmup + cosine schedule and clipping; batch size 3, except
// step 7, of 2 (another graph), as a last partial batch would.
// distill: a student with the distillation token (no pre_logits: timm's two linear heads),
// soft-distilled from a teacher of another depth that runs inside each step (issue #15).
TrainRun train(DType dtype, bool graph, bool distill = false) {
  std::unique_ptr<Backend> be = make_cuda_backend(dtype);
  ViTConfig student_cfg = tiny_vit_config(), teacher_cfg = tiny_vit_config();
  if (distill) {
    student_cfg.pre_logits = 0;
    student_cfg.distilled = true;
  }
  teacher_cfg.depth = 1;
  std::unique_ptr<Model> teacher;
  if (distill) {
    teacher = std::make_unique<Model>(teacher_cfg, *be, kBatch);
    teacher->init(7);
  }
  Model model(student_cfg, *be, kBatch);
  model.init(5);
  AdamWConfig oc;
  oc.lr = 3e-3f;
  oc.clip_grad = 0.5f;
  AdamW opt(model, oc);
  LrSchedule sched;
  sched.base_lr = oc.lr;
  sched.warmup_steps = 5;
  sched.total_steps = kSteps;
  TrainStepOptions so;
  so.smoothing = 0.1f;
  so.seed = 9;
  so.graph = graph;
  if (distill) {
    so.teacher = teacher.get();
    so.distill = Distill::Soft;
    so.distill_alpha = 0.5f;
    so.distill_tau = 2.f;
  }
  TrainStep step(model, &opt, so);
  std::mt19937 g(3);
  TrainRun r;
  for (int s = 0; s < kSteps; ++s) {
    if (s == 2) r.replayed = be->runtime_counters();
    const int n = s == 7 ? 2 : kBatch;
    uint8_t* images = step.images();
    int32_t* labels = step.labels();
    for (int i = 0; i < n * 64; ++i) images[i] = uint8_t(g() & 0xFF);
    for (int b = 0; b < n; ++b) labels[b] = int32_t(g() % 5);
    step.run(n, sched.at(s), s);
    if (s == kSteps - 1) r.replayed = be->runtime_counters() - r.replayed;
    r.metrics.push_back(step.take_metrics());
  }
  r.master = model.get_master();
  r.adam_steps = opt.steps_taken();
  r.captured = step.graphs_captured();
  EXPECT_EQ(step.graphs(), graph);
  return r;
}

class TrainStepTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { VITCUDA_SKIP_WITHOUT_DEVICE(); }
};

TEST_P(TrainStepTest, GraphReplayEqualsEagerBitwise) {
  const TrainRun eager = train(GetParam(), false);
  const TrainRun graph = train(GetParam(), true);
  // Slot 0 and slot 1 at batch 3 (the first step of a size runs eagerly and sizes the
  // workspaces); batch 2 is seen once, so it runs eagerly.
  EXPECT_EQ(graph.captured, 2);
  EXPECT_EQ(eager.captured, 0);
  ASSERT_EQ(graph.master.size(), eager.master.size());
  EXPECT_EQ(std::memcmp(graph.master.data(), eager.master.data(), eager.master.size() * sizeof(float)), 0)
      << "the weights after 20 replayed steps differ from 20 eager ones";
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_EQ(graph.metrics[s].loss_sum, eager.metrics[s].loss_sum) << "step " << s;
    EXPECT_EQ(graph.metrics[s].top1, eager.metrics[s].top1) << "step " << s;
    EXPECT_EQ(graph.metrics[s].samples, s == 7 ? 2 : kBatch) << "step " << s;
    EXPECT_EQ(graph.metrics[s].skipped_steps, 0) << "step " << s;
    EXPECT_TRUE(std::isfinite(graph.metrics[s].loss_sum)) << "step " << s;
  }
  EXPECT_EQ(graph.adam_steps, kSteps);
  // Replayed steps are graph launches that wait for nothing: the only blocking waits over steps
  // 2..19 are take_metrics' reads (one per step here) and staging reuse.
  EXPECT_GE(graph.replayed.graph_launches, kSteps - 3);
  EXPECT_EQ(eager.replayed.graph_launches, 0);
  EXPECT_EQ(graph.replayed.launches, eager.replayed.launches) << "a replay counts the launches it contains";
  EXPECT_EQ(graph.replayed.syncs, eager.replayed.syncs);
  // The weights moved (the test would pass trivially if no step applied).
  const TrainRun none = [&] {
    std::unique_ptr<Backend> be = make_cuda_backend(GetParam());
    Model model(tiny_vit_config(), *be, kBatch);
    model.init(5);
    return TrainRun{model.get_master(), {}, 0, 0, {}};
  }();
  EXPECT_NE(std::memcmp(none.master.data(), eager.master.data(), eager.master.size() * sizeof(float)), 0);
}

// The same with a teacher: its forward pass is captured into the step's graph with the student's
// (the staged images copied into its input), and the replays equal the eager steps bit for bit.
TEST_P(TrainStepTest, GraphReplayWithATeacherEqualsEagerBitwise) {
  const TrainRun eager = train(GetParam(), false, true);
  const TrainRun graph = train(GetParam(), true, true);
  EXPECT_EQ(graph.captured, 2);
  ASSERT_EQ(graph.master.size(), eager.master.size());
  EXPECT_EQ(std::memcmp(graph.master.data(), eager.master.data(), eager.master.size() * sizeof(float)), 0)
      << "the weights after 20 replayed distilled steps differ from 20 eager ones";
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_EQ(graph.metrics[s].loss_sum, eager.metrics[s].loss_sum) << "step " << s;
    EXPECT_EQ(graph.metrics[s].skipped_steps, 0) << "step " << s;
  }
  EXPECT_EQ(graph.adam_steps, kSteps);
  EXPECT_GE(graph.replayed.graph_launches, kSteps - 3);
  EXPECT_EQ(graph.replayed.launches, eager.replayed.launches) << "a replay counts the launches it contains";
  EXPECT_EQ(graph.replayed.syncs, eager.replayed.syncs);
}

// A step whose loss is not finite changes nothing and is counted; the next step applies.
TEST_P(TrainStepTest, NonFiniteStepIsSkippedAndCounted) {
  std::unique_ptr<Backend> be = make_cuda_backend(GetParam());
  Model model(tiny_vit_config(), *be, kBatch);
  model.init(5);
  AdamW opt(model, AdamWConfig{});
  TrainStepOptions so;
  TrainStep step(model, &opt, so);
  auto stage = [&] {
    uint8_t* images = step.images();
    for (int i = 0; i < kBatch * 64; ++i) images[i] = uint8_t(i * 7);
    for (int b = 0; b < kBatch; ++b) step.labels()[b] = b;
  };
  // An infinite learning rate would be refused; a NaN weight makes the loss NaN instead.
  std::vector<float> w = model.get_master();
  w[model.param_spec("head.bias").offset] = std::nanf("");
  model.set_master(w);
  stage();
  step.run(kBatch, 1e-3f, 0);
  const StepMetrics m = step.take_metrics();
  EXPECT_EQ(m.skipped_steps, 1);
  EXPECT_EQ(m.samples, 0);
  EXPECT_EQ(opt.steps_taken(), 0);
  const std::vector<float> after = model.get_master();
  for (size_t i = 0; i < w.size(); ++i)
    if (!std::isnan(w[i])) {
      ASSERT_EQ(after[i], w[i]) << "element " << i << " changed in a skipped step";
    }
  // Repaired, the next step applies.
  w[model.param_spec("head.bias").offset] = 0.f;
  model.set_master(w);
  stage();
  step.run(kBatch, 1e-3f, 1);
  const StepMetrics m2 = step.take_metrics();
  EXPECT_EQ(m2.skipped_steps, 0);
  EXPECT_EQ(m2.samples, kBatch);
  EXPECT_EQ(opt.steps_taken(), 1);
}

// The device's metrics equal Model::loss's on the same batch: the sum of the per-sample losses.
TEST_P(TrainStepTest, MetricsEqualTheLossOfTheBatch) {
  std::unique_ptr<Backend> be = make_cuda_backend(GetParam());
  Model model(tiny_vit_config(), *be, kBatch);
  model.init(5);
  std::vector<uint8_t> img(kBatch * 64);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 13);
  const std::vector<int32_t> labels = {1, 2, 4};
  model.forward(Tensor::view(img.data(), {kBatch, 1, 8, 8}, DType::U8), true, 9, 0);
  const StepStats st = model.loss(labels.data(), 0.1f, true);
  AdamW opt(model, AdamWConfig{});
  TrainStepOptions so;
  so.smoothing = 0.1f;
  so.seed = 9;
  TrainStep step(model, &opt, so);
  std::memcpy(step.images(), img.data(), img.size());
  std::memcpy(step.labels(), labels.data(), labels.size() * sizeof(int32_t));
  step.run(kBatch, 1e-3f, 0);  // the same masks: seed 9, step 0
  const StepMetrics m = step.take_metrics();
  EXPECT_EQ(m.samples, kBatch);
  EXPECT_EQ(m.top1, st.top1);
  EXPECT_EQ(m.top5, st.top5);
  // loss() sums the same fp32 losses in fp64 in sample order; the kernel in a fixed tree order.
  EXPECT_NEAR(m.loss_sum, st.loss * kBatch, 1e-12 * std::fabs(st.loss * kBatch));
  // A bad label is refused on the host, naming it.
  step.labels()[1] = 5;
  expect_error([&] { step.run(kBatch, 1e-3f, 1); }, {"label 5", "sample 1"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TrainStepTest, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace vitcuda::test
