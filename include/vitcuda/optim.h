// vitcuda — AdamW over the model's parameter arena, and the learning-rate schedule.
#pragma once
#include <cstdint>
#include <vector>

#include "vitcuda/model.h"

namespace vitcuda {

// AdamW's coefficients (vitcuda/backend.h; lr is the base rate, checked here: step() takes each
// step's rate from the schedule) and global-norm gradient clipping. AdamW::step turns them into
// the backend op's AdamWHyper.
struct AdamWConfig : AdamWCoefficients {
  float clip_grad = 0.f;  // > 0: scale gradients so their global L2 norm is at most this
};

// AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch's torch.optim.AdamW),
// fp32 state, no decay on biases, norms, cls token and position embedding (ParamSpec::decay).
class AdamW {
 public:
  AdamW(Model& model, const AdamWConfig& config);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update from the model's gradients at learning rate `lr` (written into the model's
  // StepState first). Never waits for the device.
  void step(float lr);
  // The same with the lr already in the model's StepState (TrainStep uploads it with the batch):
  // the global gradient norm and clipping factor, then AdamW, all on the device. A step whose
  // loss or gradients are not finite is skipped and counted (StepState::skipped_steps).
  void enqueue_step();
  // Read from the device (they wait for it): updates applied so far (skipped steps excluded),
  // and the global gradient norm of the last step before clipping.
  int64_t steps_taken() const;
  double last_grad_norm() const;
  const AdamWConfig& config() const { return cfg_; }

  // Optimizer state on the host (checkpoints): first and second moments, fp32.
  std::vector<float> exp_avg() const;
  std::vector<float> exp_avg_sq() const;
  void set_state(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq, int64_t steps);

 private:
  Model& model_;
  AdamWConfig cfg_;
  void* mem_ = nullptr;
  Tensor m_, v_;
  std::vector<AdamWSegment> segments_;
  float lr_host_ = 0.f;  // the source of step()'s lr upload
};

// Linear warmup from 0 to base_lr over warmup_steps, then cosine decay to min_lr at
// total_steps (or constant base_lr).
struct LrSchedule {
  float base_lr = 1e-3f;
  float min_lr = 1e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  bool cosine = true;
  float at(int64_t step) const;  // step is 0-based
};

}  // namespace vitcuda
