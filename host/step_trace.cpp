// vitcuda — tracing one step (include/vitcuda/step_trace.h).
#include "vitcuda/step_trace.h"

#include "vitcuda/train_step.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace vitcuda {
namespace {

class Collector final : public OpTracer {
 public:
  explicit Collector(std::vector<OpTrace>& ops) : ops_(ops) {}
  void on_op(const OpTrace& trace) override { ops_.push_back(trace); }

 private:
  std::vector<OpTrace>& ops_;
};

// Attaches a collector for the scope's lifetime and takes the runtime's totals around it.
class Tracing {
 public:
  Tracing(Backend& backend, StepTrace& out) : be_(backend), out_(out), collector_(out.ops) {
    be_.set_tracer(&collector_);
    before_ = be_.runtime_counters();
  }
  ~Tracing() {
    out_.total = be_.runtime_counters() - before_;
    be_.set_tracer(nullptr);
  }

 private:
  Backend& be_;
  StepTrace& out_;
  Collector collector_;
  RuntimeCounters before_;
};

}  // namespace

SyntheticBatch synthetic_batch(const ViTConfig& c, int batch) {
  if (batch < 1) throw Error("trace: batch must be positive, got " + std::to_string(batch));
  SyntheticBatch s;
  s.images.resize(size_t(batch) * c.in_chans * c.img_size * c.img_size);
  for (size_t i = 0; i < s.images.size(); ++i) s.images[i] = uint8_t(i * 37 % 251);
  s.labels.resize(size_t(batch));
  for (int b = 0; b < batch; ++b) s.labels[b] = b % c.num_classes;
  s.view = Tensor::view(s.images.data(), {batch, c.in_chans, c.img_size, c.img_size}, DType::U8);
  return s;
}

double StepTrace::flops() const {
  double f = 0;
  for (const OpTrace& t : ops) f += t.cost.flops;
  return f;
}

double StepTrace::bytes() const {
  double b = 0;
  for (const OpTrace& t : ops) b += t.cost.bytes;
  return b;
}

namespace {
// The steps vit_train and vit_infer run (TrainStep), op by op, from staging filled beforehand; a
// first, untraced step of the same size sizes the backend's workspaces (a one-time growth whose
// synchronisation is not part of a step).
StepTrace trace_step(Model& model, AdamW* opt, int batch, float smoothing, float lr, Model* teacher) {
  const SyntheticBatch in = synthetic_batch(model.config(), batch);
  StepTrace trace;
  trace.batch = batch;
  TrainStepOptions so;
  so.smoothing = smoothing;
  so.seed = 1;
  so.graph = false;
  so.teacher = teacher;
  TrainStep step(model, opt, so);
  for (int s = 0; s < 2; ++s) {
    std::memcpy(step.images(), in.images.data(), in.images.size());
    std::memcpy(step.labels(), in.labels.data(), in.labels.size() * sizeof(int32_t));
    std::optional<Tracing> on;
    if (s == 1) on.emplace(model.backend(), trace);
    if (opt)
      step.run(batch, lr, /*step=*/s);
    else
      step.run_eval(batch, /*with_labels=*/true);
  }
  return trace;
}
}  // namespace

StepTrace trace_train_step(Model& model, AdamW& opt, int batch, float smoothing, float lr, Model* teacher) {
  return trace_step(model, &opt, batch, smoothing, lr, teacher);
}

StepTrace trace_inference_step(Model& model, int batch) { return trace_step(model, nullptr, batch, 0.f, 0.f, nullptr); }

}  // namespace vitcuda
