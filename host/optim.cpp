// vitcuda — AdamW and the learning-rate schedule.
#include "vitcuda/optim.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace vitcuda {

AdamW::AdamW(Model& model, const AdamWConfig& config, Communicator* comm, bool zero1)
    : model_(model), cfg_(config), comm_(comm), zero1_(zero1) {
  if (model.use() != Model::Use::Training)
    throw Error("AdamW: model " + model.config().name + " was built for inference (no gradients)");
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
  const int64_t arena = model.arena_size();
  int64_t n = arena;  // elements of m and v: a multiple of 64, so v starts 256-byte aligned
  if (zero1_) {
    const int ranks = comm_ ? comm_->world_size() : 1;
    if (arena % (int64_t(64) * ranks) != 0)
      throw Error("AdamW: ZeRO-1 over " + std::to_string(ranks) + " ranks needs the parameter arena padded to a " +
                  "multiple of " + std::to_string(64 * ranks) + " elements, it has " + std::to_string(arena) +
                  " (construct the Model with arena_multiple = 64 * ranks)");
    n = arena / ranks;
    lo_ = n * (comm_ ? comm_->rank() : 0);
  }
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
  // With zero1, the segments are cut to this rank's shard [lo_, lo_ + n) and made relative to it.
  const auto& specs = model.params();
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    const int64_t end = std::min(i + 1 < specs.size() ? specs[i + 1].offset : arena, lo_ + n) - lo_;
    const int64_t begin = std::max(s.offset, lo_) - lo_;
    if (end <= begin) continue;
    if (!segments_.empty() && segments_.back().decay == s.decay)
      segments_.back().count = end - segments_.back().offset;
    else
      segments_.push_back({begin, end - begin, s.decay});
  }
}

Tensor AdamW::arena_shard(const Tensor& arena) const {
  if (!zero1_) return arena;
  char* base = static_cast<char*>(arena.data()) + size_t(lo_) * dtype_size(arena.dtype());
  return Tensor::view(base, {m_.numel()}, arena.dtype(), arena.device());
}

AdamW::~AdamW() { model_.backend().release(mem_); }

void AdamW::step(float lr) {
  if (!(std::isfinite(lr) && lr >= 0.f))
    throw Error("AdamW: learning rate must be finite and >= 0, got " + std::to_string(lr));
  lr_host_ = lr;
  model_.backend().copy_to_device(&model_.step_state()->lr, &lr_host_, sizeof lr_host_);
  enqueue_step();
}

void AdamW::enqueue_step(bool grads_reduced) {
  Backend& be = model_.backend();
  StepState* state = model_.step_state();
  const Tensor grads = model_.grad_arena();
  const Device dev = be.device();
  if (parallel()) {
    // The ranks' gradient sum: all of it, or (zero1) this rank's shard of it.
    if (zero1_)
      comm_->reduce_scatter(grads, ReduceOp::Sum);
    else if (!grads_reduced)
      comm_->all_reduce(grads, ReduceOp::Sum);
    // The step's metrics over the global batch, so every rank sees the same loss and skips
    // (grad_norm_finish: a non-finite loss) the same steps; the accumulators then hold the
    // global batch's metrics on every rank.
    comm_->all_reduce(Tensor::view(&state->step_loss, {1}, DType::F64, dev), ReduceOp::Sum);
    comm_->all_reduce(Tensor::view(&state->step_samples, {3}, DType::I64, dev), ReduceOp::Sum);
  }
  // Global-norm clipping as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
  // With zero1, Σ g² of each shard, summed over the ranks.
  be.grad_sumsq(arena_shard(grads), state);
  if (parallel() && zero1_) comm_->all_reduce(Tensor::view(&state->grad_sumsq, {1}, DType::F64, dev), ReduceOp::Sum);
  be.grad_norm_finish(cfg_.clip_grad, state);
  AdamWHyper h;
  static_cast<AdamWCoefficients&>(h) = cfg_;  // betas, eps, weight decay; lr and step from the state
  h.state = state;
  if (!zero1_) {
    be.adamw_update(model_.master_arena(), grads, m_, v_, model_.param_arena(), h, segments_.data(),
                    int(segments_.size()));
    return;
  }
  // The shard's update (params = the master shard: the compute copy is refreshed whole after the
  // gather), then every rank's updated shard to every rank.
  const Tensor master = arena_shard(model_.master_arena());
  be.adamw_update(master, arena_shard(grads), m_, v_, master, h, segments_.data(), int(segments_.size()));
  if (parallel()) comm_->all_gather(model_.master_arena());
  model_.sync_params_from_master();
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

void AdamW::gather_state() {
  if (!zero1_) return;
  Backend& be = model_.backend();
  const Tensor buf = model_.grad_arena();  // free between steps (the next step zeroes it)
  if (buf.dtype() != DType::F32) throw Error("AdamW::gather_state: ZeRO-1 needs fp32 gradients");
  const int64_t arena = model_.arena_size();
  for (auto [t, out] : {std::pair<const Tensor*, std::vector<float>*>{&m_, &gathered_m_}, {&v_, &gathered_v_}}) {
    be.copy(*t, arena_shard(buf));
    if (parallel()) comm_->all_gather(buf);
    out->resize(size_t(arena));
    be.copy_to_host(out->data(), buf.data(), out->size() * sizeof(float));
  }
}

std::vector<float> AdamW::moments_host(const Tensor& t, const std::vector<float>& gathered) const {
  if (zero1_) {
    if (int64_t(gathered.size()) != model_.arena_size())
      throw Error("AdamW: with ZeRO-1 the moments are sharded over the ranks: call gather_state() first");
    return gathered;
  }
  std::vector<float> h(t.numel());
  model_.backend().copy_to_host(h.data(), t.data(), h.size() * sizeof(float));
  return h;
}

std::vector<float> AdamW::exp_avg() const { return moments_host(m_, gathered_m_); }
std::vector<float> AdamW::exp_avg_sq() const { return moments_host(v_, gathered_v_); }

void AdamW::set_state(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq, int64_t steps) {
  const int64_t arena = model_.arena_size();
  if (int64_t(exp_avg.size()) != arena || int64_t(exp_avg_sq.size()) != arena)
    throw Error("AdamW::set_state: state has " + std::to_string(exp_avg.size()) + " values for " +
                std::to_string(arena) + " parameters");
  // This rank's shard of the whole arena's moments (all of them without zero1).
  const size_t bytes = size_t(m_.numel()) * sizeof(float);
  model_.backend().copy_to_device(m_.data(), exp_avg.data() + lo_, bytes);
  model_.backend().copy_to_device(v_.data(), exp_avg_sq.data() + lo_, bytes);
  gathered_m_.clear();
  gathered_v_.clear();
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
