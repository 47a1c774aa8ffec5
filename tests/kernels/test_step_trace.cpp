// The runtime's counters and the op trace of whole steps (include/vitcuda/step_trace.h) on the
// CUDA backend ("cuda-emu" here, "cuda" natively): the counts of a small model are pinned, so an
// added launch, copy or blocking sync is a visible change (update the numbers in the same commit,
// with the reason).
#include <map>
#include <memory>
#include <string>

#include "kernel_test.h"
#include "kernels/cuda_backend.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/step_trace.h"

namespace vitcuda::test {
namespace {

std::map<std::string, int> ops_by_name(const StepTrace& t) {
  std::map<std::string, int> n;
  for (const OpTrace& o : t.ops) ++n[o.op];
  return n;
}

void expect_counters(const RuntimeCounters& got, const RuntimeCounters& want, const char* what) {
  EXPECT_EQ(to_string(got), to_string(want)) << what;
  EXPECT_EQ(got.launches, want.launches) << what;
  EXPECT_EQ(got.gemms, want.gemms) << what;
  EXPECT_EQ(got.syncs, want.syncs) << what;
}

struct Traced {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Model> model;
  std::unique_ptr<AdamW> opt;
  explicit Traced(std::unique_ptr<Backend> backend, int batch = 4) : be(std::move(backend)) {
    model = std::make_unique<Model>(tiny_vit_config(), *be, batch);
    model->init(1);
    opt = std::make_unique<AdamW>(*model, AdamWConfig{});
  }
};

class StepTraceTest : public KernelTest {};

// The pinned budget of one step of tiny_vit_config() at batch 4 in bf16, as TrainStep runs it
// (the second step: the first sizes the workspaces). Training: 64 kernel launches and 32
// cuBLASLt matmuls (2 blocks of 4 forward + 7 backward GEMMs, the patch embedding's 1 + 1, the
// pre-logits' and classifier's 1 + 2 each); one upload of the staging slot (512 B: the step's lr
// and dropout offset, the labels, the images) on the copy stream, then three device copies from
// it (lr and dropout offset into the StepState, labels, images); nothing copied to the host and no
// blocking wait: the loss, hits, gradient norm, clipping and AdamW's step count stay on the device
// (step_metrics, grad_norm_clip's grad_norm_finish and adamw_update's prepare kernel are 3 of the
// launches; grad_norm_clip is traced as its two ops, grad_sumsq and grad_norm_finish); two
// memsets (zero_grad, the residual gradient). Attention reads the packed qkv projection (no split
// and merge kernels) and its backward is 2 kernels (D and the dQ conversion fused); fc1's dropout
// rides in the GELU pass of linear_forward and in the activation-backward pass of
// linear_backward; where drop-path is at rate 0 (the first block) the branch gradient is one
// dropout from d res, not a copy and a dropout. Inference: the evaluation step, 15 launches (with
// step_metrics) and 11 matmuls, the slot uploaded and its labels and images copied into place,
// nothing read back.
TEST_F(StepTraceTest, CountsOfASmallModelArePinned) {
  Traced t(make_cuda_backend(DType::BF16));
  const StepTrace train = trace_train_step(*t.model, *t.opt, 4);
  RuntimeCounters want_train;
  want_train.launches = 64, want_train.gemms = 32, want_train.h2d = 1, want_train.h2d_bytes = 512;
  want_train.d2d = 3, want_train.memsets = 2;
  expect_counters(train.total, want_train, "training step");

  const StepTrace infer = trace_inference_step(*t.model, 4);
  RuntimeCounters want_infer;
  want_infer.launches = 15, want_infer.gemms = 11, want_infer.h2d = 1, want_infer.h2d_bytes = 512;
  want_infer.d2d = 2;
  expect_counters(infer.total, want_infer, "inference step");

  // The op list is the host graph's: 2 blocks of (2 LayerNorms, attention, 4 linears: qkv, proj,
  // fc1, fc2) and the head.
  const std::map<std::string, int> ops = ops_by_name(train);
  EXPECT_EQ(ops.at("attention_forward"), 2);
  EXPECT_EQ(ops.at("attention_backward"), 2);
  EXPECT_EQ(ops.count("qkv_forward"), 0u);  // the qkv projection is a plain linear_forward
  EXPECT_EQ(ops.at("layernorm_forward"), 5);
  EXPECT_EQ(ops.at("linear_forward"), 11);
  EXPECT_EQ(ops.at("adamw_update"), 1);
  EXPECT_EQ(ops.at("step_metrics"), 1);
  EXPECT_EQ(ops.at("grad_sumsq"), 1);
  EXPECT_EQ(ops.at("grad_norm_finish"), 1);
  EXPECT_EQ(ops.count("grad_norm_clip"), 0u);  // a composition of the two above, not an op
}

// Without dropout and drop-path (timm's presets train so), the backward passes the residual
// gradient into the branches as it is: no device copies, no dropout launches.
TEST_F(StepTraceTest, BranchGradientsWithoutDropoutAreNotCopied) {
  ViTConfig c = tiny_vit_config();
  c.drop_rate = c.attn_drop_rate = c.drop_path_rate = 0.f;
  auto be = make_cuda_backend(DType::BF16);
  Model model(c, *be, 4);
  model.init(1);
  AdamW opt(model, AdamWConfig{});
  const StepTrace train = trace_train_step(model, opt, 4);
  EXPECT_EQ(train.total.d2d, 3);  // only the staging slot into place: lr and offset, labels, images
  for (const OpTrace& o : train.ops) {
    if (std::string(o.op) == "drop_path" || std::string(o.op) == "dropout") {
      EXPECT_EQ(o.runtime.launches + o.runtime.d2d, 0) << o.op;
    }
  }
}

// Every launch and matmul belongs to an op and is recorded with it; costs are positive where
// the op computes.
TEST_F(StepTraceTest, LaunchesAreAttributedToOps) {
  Traced t(make_cuda_backend(DType::BF16));
  const StepTrace train = trace_train_step(*t.model, *t.opt, 4);
  int64_t launches = 0, gemms = 0;
  for (const OpTrace& o : train.ops) {
    launches += o.runtime.launches;
    gemms += o.runtime.gemms;
    EXPECT_EQ(int64_t(o.launches.size()), o.runtime.launches + o.runtime.gemms) << o.op;
    for (const LaunchRecord& r : o.launches) {
      EXPECT_FALSE(r.kernel.empty()) << o.op;
      EXPECT_NE(r.kernel.back(), ')') << "argument list left in " << r.kernel;
      EXPECT_EQ(r.kernel.find("kernels_emu"), std::string::npos) << r.kernel;
      if (r.kernel == "cublasLtMatmul") {
        EXPECT_GT(r.m * r.n * r.k, 0) << o.op;
      } else {
        EXPECT_GT(r.block[0] * r.block[1] * r.block[2], 0u) << r.kernel;
      }
    }
    if (std::string(o.op).find("linear") == 0 || std::string(o.op).find("attention") == 0) {
      EXPECT_GT(o.cost.flops, 0) << o.op;
    }
  }
  EXPECT_EQ(launches, train.total.launches);
  EXPECT_EQ(gemms, train.total.gemms);
}

// The trace's FLOPs agree with the model's own count of multiply-accumulates (Model::
// macs_per_image, GEMMs and attention only): the forward's FLOPs are 2·MACs plus the
// element-wise work, a few percent at this size (measured: 4.6%).
TEST_F(StepTraceTest, ForwardFlopsMatchTheModelsMacs) {
  Traced t(make_cuda_backend(DType::BF16));
  const StepTrace infer = trace_inference_step(*t.model, 4);
  const double gemm_flops = 2.0 * t.model->macs_per_image() * 4;
  EXPECT_GE(infer.flops(), gemm_flops);
  EXPECT_LE(infer.flops(), 1.25 * gemm_flops);
  EXPECT_GT(infer.bytes(), 0);
}

#if defined(VITCUDA_EMU)
// A dry run (the step model's mode) issues exactly the launches, matmuls, copies and syncs of a
// real run.
TEST_F(StepTraceTest, DryRunTracesTheSameStep) {
  Traced real(make_cuda_backend(DType::BF16));
  const StepTrace a = trace_train_step(*real.model, *real.opt, 4);
  Traced dry(make_cuda_backend(DType::BF16));
  rt::set_dry_run(true);
  const StepTrace b = trace_train_step(*dry.model, *dry.opt, 4);
  rt::set_dry_run(false);
  expect_counters(b.total, a.total, "dry run");
  ASSERT_EQ(a.ops.size(), b.ops.size());
  for (size_t i = 0; i < a.ops.size(); ++i) {
    EXPECT_STREQ(a.ops[i].op, b.ops[i].op);
    ASSERT_EQ(a.ops[i].launches.size(), b.ops[i].launches.size()) << a.ops[i].op;
    for (size_t j = 0; j < a.ops[i].launches.size(); ++j)
      EXPECT_EQ(a.ops[i].launches[j].kernel, b.ops[i].launches[j].kernel);
  }
}

// Model sizes its footprint against Backend::memory_capacity(): the host's memory for the
// emulated device, no limit in a dry run (the step model sizes ViT-H at batch 128 on a small
// host: nothing is touched).
TEST(EmuMemoryCapacity, HostMemoryAndUnlimitedInADryRun) {
  const std::unique_ptr<Backend> be = make_cuda_backend(DType::F32);
  const uint64_t cap = be->memory_capacity();
  EXPECT_GT(cap, uint64_t(1) << 28);
  EXPECT_LT(cap, UINT64_MAX);
  rt::set_dry_run(true);
  EXPECT_EQ(be->memory_capacity(), UINT64_MAX);
  rt::set_dry_run(false);
}
#endif

}  // namespace
}  // namespace vitcuda::test
