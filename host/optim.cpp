// vitcuda — AdamW and the learning-rate schedule.
#include "vitcuda/optim.h"

#include <cmath>

namespace vitcuda {

AdamW::AdamW(Model& model, const AdamWConfig& config) : model_(model), cfg_(config) {
  // Finite and in range (a NaN fails every comparison, so each test is written to fail on it).
  auto check = [](const char* field, float v, bool ok, const char* range) {
    if (!(std::isfinite(v) && ok))
      throw Error(std::string("AdamW: ") + field + " must be " + range + ", got " + std::to_string(v));
  };
  check("lr", cfg_.lr, cfg_.lr >= 0.f, "finite and >= 0");
  check("weight_decay", cfg_.weight_decay, cfg_.weight_decay >= 0.f, "finite and >= 0");
  check("beta1", cfg_.beta1, cfg_.beta1 >= 0.f && cfg_.beta1 < 1.f, "in [0, 1)");
  check("beta2", cfg_.beta2, cfg_.beta2 >= 0.f && cfg_.beta2 < 1.f, "in [0, 1)");
  check("eps", cfg_.eps, cfg_.eps > 0.f, "finite and > 0");
  check("clip_grad", cfg_.clip_grad, cfg_.clip_grad >= 0.f, "finite and >= 0 (0: off)");
  const int64_t n = model.arena_size();  // a multiple of 64: v starts 256-byte aligned
  Backend& be = model.backend();
  mem_ = be.alloc(size_t(n) * 2 * sizeof(float));
  m_ = Tensor::view(mem_, {n}, DType::F32, be.device());
  v_ = Tensor::view(static_cast<float*>(mem_) + n, {n}, DType::F32, be.device());
  // A new optimizer has taken no step (the count lives in the model's StepState, on the device).
  const int64_t no_steps = 0;
  be.copy_to_device(&model.step_state()->adam_step, &no_steps, sizeof no_steps);
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

void AdamW::step(float lr) {
  if (!(std::isfinite(lr) && lr >= 0.f))
    throw Error("AdamW: learning rate must be finite and >= 0, got " + std::to_string(lr));
  lr_host_ = lr;
  model_.backend().copy_to_device(&model_.step_state()->lr, &lr_host_, sizeof lr_host_);
  enqueue_step();
}

void AdamW::enqueue_step() {
  Backend& be = model_.backend();
  StepState* state = model_.step_state();
  // Global-norm clipping as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
  be.grad_norm_clip(model_.grad_arena(), cfg_.clip_grad, state);
  AdamWHyper h;
  static_cast<AdamWCoefficients&>(h) = cfg_;  // betas, eps, weight decay; lr and step from the state
  h.state = state;
  be.adamw_update(model_.master_arena(), model_.grad_arena(), m_, v_, model_.param_arena(), h, segments_.data(),
                  int(segments_.size()));
}

namespace {
StepState read_state(const Model& model) {
  StepState s;
  model.backend().copy_to_host(&s, model.step_state(), sizeof s);
  return s;
}
}  // namespace

int64_t AdamW::steps_taken() const { return read_state(model_).adam_step; }
double AdamW::last_grad_norm() const { return std::sqrt(read_state(model_).grad_sumsq); }

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
  StepState s = read_state(model_);
  s.adam_step = steps;
  model_.backend().copy_to_device(model_.step_state(), &s, sizeof s);
}

float LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return base_lr * float(step + 1) / float(warmup_steps);
  if (!cosine) return base_lr;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t = std::min(1.0, double(step - warmup_steps) / double(span));
  return float(min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t)));
}

}  // namespace vitcuda
