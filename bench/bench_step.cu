// vitcuda — whole training and inference steps of four ViTs on the CUDA backend (bf16 compute,
// fp32 master weights, gradients and AdamW state), the numbers bench/torch_step.py measures for
// PyTorch eager and torch.compile on the same GPU (tools/gpu/gpu_session.sh full writes the ratio
// table).
//
//   ./build/bench/bench_step --benchmark_counters_tabular=true [--benchmark_filter=train/]
//   ./build/bench/bench_step --benchmark_format=json > bench_step.json
//
// Names (stable, for tables): <mode>/<model>/B<batch>, mode train | infer, model and batch
//   vit_fmnist B128, vit_keras_cifar100 B256, vit_small_patch16_224 B128, vit_base_patch16_224 B128
// (vitcuda presets, include/vitcuda/config.h; the last two are also timm's names), and
// peak/gemm_bf16_8192 (the MFU denominator, measured in this binary).
//   train: forward (train: dropout, attention dropout, drop-path as the preset sets them),
//          softmax cross-entropy with label smoothing 0.1, zero_grad, backward, AdamW step
//          (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.05; the global gradient norm is
//          computed every step, as vit_train does) — trace_train_step's sequence
//          (include/vitcuda/step_trace.h);
//   infer: forward without dropout + the loss (trace_inference_step's sequence).
// Each step starts from the same host uint8 batch (synthetic_batch(), step_trace.h) and uploads
// it, as vit_train's steps do; torch_step.py uploads the same kind of batch every step too.
// Timing: bench_common's run_timed (CUDA events around kRepsPerIteration consecutive steps,
// manual time), after the traced step and three warm-up steps; the reported time is per step.
// Counters:
//   img/s        batch / step time (also items_per_second)
//   step_ms      milliseconds per step
//   GFLOP/img    model FLOPs per image: 2·MACs forward (infer), 6·MACs (train: forward + 2×
//                for backward), MACs = Model::macs_per_image() (GEMMs and the two attention
//                matmuls, as timm/fvcore count them; no elementwise ops, no recomputation).
//                torch_step.py uses the same formula.
//   TFLOP/s      batch · GFLOP/img / step time
//   MFU          TFLOP/s / the measured dense bf16 GEMM rate (peak/gemm_bf16_8192: cuBLASLt
//                8192³, bf16 in and out, fp32 accumulation), not the datasheet peak
//   peak_TFLOP/s that measured rate
//   launches, gemms, syncs, h2d, d2h   per step, from the runtime's counters over the traced
//                step (StepTrace::total): the project's kernel launches, cuBLASLt matmuls (each
//                one or more kernels of its own, not in launches), blocking host waits, copies
//                to / from the device
//   traced_GFLOP/img   every op's FLOPs as the step trace counts them (host/op_cost.cpp:
//                elementwise ops and the optimizer included), for reference
//   params       parameters, as timm counts them (torch_step.py prints its own count)
// The label carries "<model> B<batch> bf16 <mode>".
//
// Smoke build (VITCUDA_BENCH_SMOKE, ctest bench_step_smoke): batch 2, the traced step and one
// timed step per benchmark. vit_fmnist's steps and vit_keras_cifar100's inference really run on
// the emulator; the others run as the emulator's dry run (rt::set_dry_run: every launch, matmul
// and copy checked and counted, nothing executed), labelled "dry run": their setup, the step
// sequence and the counters execute, their timings and values are meaningless (so are all smoke
// timings).
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_common.cuh"
#include "kernels/cuda_backend.h"
#include "vitcuda/config.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/step_trace.h"
#include "vitcuda/train_step.h"

using namespace vitcuda;
using namespace vitcuda::bench;

namespace {

constexpr float kSmoothing = 0.1f;        // label smoothing, as torch_step.py's CrossEntropyLoss
constexpr float kLr = 1e-3f;              // AdamWConfig's default rate; a constant: the time does not depend on it
constexpr int kWarmups = kSmoke ? 0 : 2;  // untimed steps after the traced one (run_timed adds one more)

struct StepModel {
  const char* name;
  int batch;
  // Smoke build only: which steps really run on the emulator; the others are a dry run (counted,
  // not executed). The Keras preset's training step (AdamW over 22 M parameters under ASan) would
  // take ~15 s a step.
  bool smoke_real_train, smoke_real_infer;
};
constexpr StepModel kModels[] = {
    {"vit_fmnist", 128, true, true},
    {"vit_keras_cifar100", 256, false, true},
    {"vit_small_patch16_224", 128, false, false},
    {"vit_base_patch16_224", 128, false, false},
};

// The emulator's dry run for the scope (smoke builds of the large models only).
class DryRun {
 public:
  explicit DryRun(bool on) : on_(on) {
#if defined(VITCUDA_BENCH_SMOKE)
    if (on_) rt::set_dry_run(true);
#endif
  }
  ~DryRun() {
#if defined(VITCUDA_BENCH_SMOKE)
    if (on_) rt::set_dry_run(false);
#endif
  }
  DryRun(const DryRun&) = delete;
  DryRun& operator=(const DryRun&) = delete;

 private:
  [[maybe_unused]] bool on_;
};

void bench_step(benchmark::State& st, const StepModel& m, bool train) {
  const int B = bench_batch(m.batch);
  const bool dry = kSmoke && !(train ? m.smoke_real_train : m.smoke_real_infer);
  const double peak = measured_peak_tflops();  // before any dry run: it must really execute
  const DryRun dry_scope(dry);
  const ViTConfig cfg = preset(m.name);
  std::unique_ptr<Backend> be = make_cuda_backend(DType::BF16);
  Model model(cfg, *be, B);
  if (!dry) model.init(1);  // timm's initialisation; a dry run executes nothing anyway
  AdamW opt(model, AdamWConfig{});
  const SyntheticBatch in = synthetic_batch(cfg, B);

  // The first step, traced: the runtime's counts per step (and the first warm-up).
  const StepTrace trace = train ? trace_train_step(model, opt, B, kSmoothing, kLr) : trace_inference_step(model, B);
  // Training: the step vit_train runs (TrainStep: pinned double-buffered staging, one CUDA Graph
  // per step after the first). The synthetic batch is staged into both slots once.
  TrainStepOptions so;
  so.smoothing = kSmoothing;
  so.seed = 1;
  TrainStep stepper(model, &opt, so);
  int64_t step = 1, staged = 0;
  auto one_step = [&] {
    if (train) {
      uint8_t* images = stepper.images();
      if (staged < 2) {
        std::memcpy(images, in.images.data(), in.images.size());
        std::memcpy(stepper.labels(), in.labels.data(), in.labels.size() * sizeof(int32_t));
        ++staged;
      }
      stepper.run(B, kLr, step++);
    } else {
      model.forward(in.view, false);
      model.loss(in.labels.data(), 0.f, false);
    }
  };
  for (int i = 0; i < kWarmups; ++i) one_step();
  const double t = run_timed(st, one_step);  // seconds per step, kRepsPerIteration steps per iteration
  st.SetItemsProcessed(int64_t(st.iterations()) * B);

  const double flops_img = (train ? 6.0 : 2.0) * model.macs_per_image();
  const double tflops = t > 0 ? B * flops_img / t / 1e12 : 0.0;
  st.counters["batch"] = B;
  st.counters["img/s"] = t > 0 ? B / t : 0.0;
  st.counters["step_ms"] = t * 1e3;
  st.counters["GFLOP/img"] = flops_img / 1e9;
  st.counters["TFLOP/s"] = tflops;
  st.counters["MFU"] = peak > 0 ? tflops / peak : 0.0;
  st.counters["peak_TFLOP/s"] = peak;
  st.counters["launches"] = double(trace.total.launches);
  st.counters["gemms"] = double(trace.total.gemms);
  st.counters["syncs"] = double(trace.total.syncs);
  st.counters["h2d"] = double(trace.total.h2d);
  st.counters["d2h"] = double(trace.total.d2h);
  st.counters["traced_GFLOP/img"] = trace.flops() / B / 1e9;
  st.counters["params"] = double(model.num_params());
  std::string label = std::string(m.name) + " B" + std::to_string(m.batch) + " bf16 " + (train ? "train" : "infer");
  if (kSmoke) label += dry ? " (smoke: dry run at batch 2, nothing executed)" : " (smoke: emulated, batch 2)";
  st.SetLabel(label);
}

void bench_peak(benchmark::State& st) {
  const PeakGemm peak_gemm(kPeakSize);
  const double s = run_timed(st, [&] { peak_gemm(); });
  st.counters["TFLOP/s"] = peak_gemm.flops() / s / 1e12;
}

void register_all() {
  register_timed("peak/gemm_bf16_8192", bench_peak, benchmark::kMillisecond);
  for (const char* mode : {"train", "infer"})
    for (const StepModel& m : kModels) {
      const bool train = std::string(mode) == "train";
      register_timed(
          std::string(mode) + "/" + m.name + "/B" + std::to_string(m.batch),
          [m, train](benchmark::State& st) { bench_step(st, m, train); }, benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) { return bench_main(argc, argv, "bench_step", register_all); }
