// vitcuda — AdamW over the model's parameter arena, and the learning-rate schedule.
#pragma once
#include <cstdint>
#include <vector>

#include "vitcuda/comm.h"
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
  // Data parallelism: with a communicator of N > 1 ranks, enqueue_step() works on the SUM of the
  // ranks' gradients (the loss is scaled by 1 / global batch, so that sum is the global mean
  // gradient): it all-reduces the gradient arena itself unless the caller already did
  // (enqueue_step(true): TrainStep's buckets overlapped with the backward pass), and reduces the
  // step's metrics so every rank skips or applies the same steps. zero1 (ZeRO stage 1): the
  // moments are sharded, rank r holding elements [r·S, (r+1)·S) of the arena (S = arena / N; the
  // Model's arena_multiple must make it divide: 64·N); each step reduce-scatters the gradients,
  // updates its shard and all-gathers the fp32 master weights. Same results as without zero1.
  AdamW(Model& model, const AdamWConfig& config, Communicator* comm = nullptr, bool zero1 = false);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update from the model's gradients at learning rate `lr` (written into the model's
  // StepState first). Never waits for the device.
  void step(float lr);
  // The same with the lr already in the model's StepState (TrainStep uploads it with the batch):
  // the global gradient norm and clipping factor, then AdamW, all on the device. A step whose
  // loss or gradients are not finite is skipped and counted (StepState::skipped_steps).
  // grads_reduced: the gradient arena already holds the sum over the ranks (not with zero1).
  void enqueue_step(bool grads_reduced = false);
  // Read from the device (they wait for it): updates applied so far (skipped steps excluded),
  // and the global gradient norm of the last step before clipping.
  int64_t steps_taken() const;
  double last_grad_norm() const;
  const AdamWConfig& config() const { return cfg_; }

  // Optimizer state on the host (checkpoints): first and second moments, fp32, of the whole arena.
  // With zero1 every rank holds a shard: gather_state() (a collective: every rank calls it, e.g.
  // before rank 0 writes a checkpoint; it uses the gradient arena as its buffer, so call it
  // between steps) fills the host copies that exp_avg() / exp_avg_sq() then return. set_state
  // takes the whole arena's moments on every rank and keeps its shard.
  void gather_state();
  std::vector<float> exp_avg() const;
  std::vector<float> exp_avg_sq() const;
  void set_state(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq, int64_t steps);
  bool zero1() const { return zero1_; }
  Communicator* comm() const { return comm_; }

 private:
  bool parallel() const { return comm_ && comm_->world_size() > 1; }
  Tensor arena_shard(const Tensor& arena) const;  // this rank's [lo, lo + numel) of an arena
  std::vector<float> moments_host(const Tensor& t, const std::vector<float>& gathered) const;

  Model& model_;
  AdamWConfig cfg_;
  Communicator* comm_ = nullptr;
  bool zero1_ = false;
  int64_t lo_ = 0;  // this rank's first element (zero1; 0 otherwise)
  void* mem_ = nullptr;
  Tensor m_, v_;                                // the whole arena, or this rank's shard (zero1)
  std::vector<AdamWSegment> segments_;          // relative to lo_
  std::vector<float> gathered_m_, gathered_v_;  // gather_state()'s copies (zero1)
  float lr_host_ = 0.f;                         // the source of step()'s lr upload
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
