// vitcuda — tracing one step of the real host graph: every public Backend op it calls, with its
// cost (FLOPs, ideal DRAM bytes) and what it made the device runtime do (launches, cuBLASLt
// matmuls, copies, blocking syncs), plus the runtime's totals over the whole step. What
// `vit_train --summary` prints and what the step model (bench/step_model) turns into time.
#pragma once
#include <cstdint>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"

namespace vitcuda {

struct StepTrace {
  std::vector<OpTrace> ops;  // in call order
  RuntimeCounters total;     // the whole step, copies and memsets outside the ops included
  int64_t batch = 0;
  double flops() const;  // sum over the ops
  double bytes() const;
};

// A fixed synthetic batch of the model's input: uint8 images [batch, C, H, W] (a pattern, not
// noise) and labels 0, 1, ... mod num_classes. `view` points into `images` (moving the object
// keeps it valid; copying does not).
struct SyntheticBatch {
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;
  Tensor view;
  SyntheticBatch() = default;
  SyntheticBatch(SyntheticBatch&&) = default;
  SyntheticBatch& operator=(SyntheticBatch&&) = default;
  SyntheticBatch(const SyntheticBatch&) = delete;
  SyntheticBatch& operator=(const SyntheticBatch&) = delete;
};
SyntheticBatch synthetic_batch(const ViTConfig& config, int batch);

// One training step as vit_train runs it (forward with dropout, loss with label smoothing,
// zero_grad, backward, AdamW at `lr`) on `batch` synthetic images and labels (a fixed pattern:
// the trace does not depend on the values). Changes the model's weights and the optimizer state.
// teacher: a distilled training step (TrainStepOptions::teacher, hard targets, alpha 0.5): the
// teacher's inference forward on the step's images is part of the trace.
StepTrace trace_train_step(Model& model, AdamW& opt, int batch, float smoothing = 0.1f, float lr = 1e-3f,
                           Model* teacher = nullptr);
// One inference step: forward without dropout and the loss (TrainStep::run_eval, the evaluation
// step of vit_train and vit_infer). Both trace the second of two steps (see step_trace.cpp).
StepTrace trace_inference_step(Model& model, int batch);

}  // namespace vitcuda
