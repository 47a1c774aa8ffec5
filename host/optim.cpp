// vitcuda — AdamW and the learning-rate schedule.
#include "vitcuda/optim.h"

#include <cmath>

namespace vitcuda {

AdamW::AdamW(Model& model, const AdamWConfig& config) : model_(model), cfg_(config) {
  if (!(cfg_.lr >= 0.f)) throw Error("AdamW: learning rate must be >= 0, got " + std::to_string(cfg_.lr));
  if (!(cfg_.weight_decay >= 0.f)) throw Error("AdamW: weight decay must be >= 0");
  if (!(cfg_.beta1 >= 0.f && cfg_.beta1 < 1.f && cfg_.beta2 >= 0.f && cfg_.beta2 < 1.f))
    throw Error("AdamW: betas must be in [0, 1)");
  if (!(cfg_.clip_grad >= 0.f)) throw Error("AdamW: clip_grad must be >= 0");
  const int64_t n = model.arena_size();  // a multiple of 64: v starts 256-byte aligned
  Backend& be = model.backend();
  mem_ = be.alloc(size_t(n) * 2 * sizeof(float));
  m_ = Tensor::view(mem_, {n}, DType::F32, be.device());
  v_ = Tensor::view(static_cast<float*>(mem_) + n, {n}, DType::F32, be.device());
  // One segment per run of tensors with the same decay flag (the table is in arena order).
  // Each tensor's segment runs up to the next tensor, covering the zero alignment gap
  // (zero gradients keep it zero), so neighbours merge into few segments.
  const auto& specs = model.params();
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    const int64_t end = i + 1 < specs.size() ? specs[i + 1].offset : n;
    if (!segments_.empty() && segments_.back().decay == s.decay)
      segments_.back().count = end - segments_.back().offset;
    else
      segments_.push_back({s.offset, end - s.offset, s.decay});
  }
}

AdamW::~AdamW() { model_.backend().release(mem_); }

double AdamW::step(float lr) {
  Backend& be = model_.backend();
  const double norm = std::sqrt(be.sum_squares(model_.grad_arena()));
  AdamWHyper h;
  static_cast<AdamWCoefficients&>(h) = cfg_;  // betas, eps, weight decay
  h.lr = lr;
  h.step = ++step_;
  // Global-norm clipping as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
  h.grad_scale = (cfg_.clip_grad > 0.f && norm > cfg_.clip_grad) ? float(cfg_.clip_grad / (norm + 1e-6)) : 1.f;
  be.adamw_update(model_.master_arena(), model_.grad_arena(), m_, v_, model_.param_arena(), h, segments_.data(),
                  int(segments_.size()));
  return norm;
}

std::vector<float> AdamW::exp_avg() const {
  std::vector<float> h(m_.numel());
  model_.backend().copy_to_host(h.data(), m_.data(), h.size() * sizeof(float));
  return h;
}

std::vector<float> AdamW::exp_avg_sq() const {
  std::vector<float> h(v_.numel());
  model_.backend().copy_to_host(h.data(), v_.data(), h.size() * sizeof(float));
  return h;
}

void AdamW::set_state(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq, int64_t steps) {
  if (int64_t(exp_avg.size()) != m_.numel() || int64_t(exp_avg_sq.size()) != v_.numel())
    throw Error("AdamW::set_state: state has " + std::to_string(exp_avg.size()) + " values for " +
                std::to_string(m_.numel()) + " parameters");
  model_.backend().copy_to_device(m_.data(), exp_avg.data(), exp_avg.size() * sizeof(float));
  model_.backend().copy_to_device(v_.data(), exp_avg_sq.data(), exp_avg_sq.size() * sizeof(float));
  step_ = steps;
}

float LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return base_lr * float(step + 1) / float(warmup_steps);
  if (!cosine) return base_lr;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t = std::min(1.0, double(step - warmup_steps) / double(span));
  return float(min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t)));
}

}  // namespace vitcuda
