// vitcuda — TrainStep (vitcuda/train_step.h).
#include "vitcuda/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>

namespace vitcuda {

void check_teacher(const Model& student, const Model& teacher, const TrainStepOptions& options) {
  const ViTConfig &s = student.config(), &t = teacher.config();
  auto differ = [&](const char* what, const std::string& tv, const std::string& sv,
                    const char* need = "the teacher runs on the student's batches: they must be equal") {
    throw Error("TrainStep: the teacher (" + t.name + ") has " + what + " " + tv + ", the student (" + s.name + ") " +
                sv + " (" + need + ")");
  };
  if (&teacher == &student) throw Error("TrainStep: the teacher is the student itself");
  if (&teacher.backend() != &student.backend())
    throw Error("TrainStep: the teacher (" + t.name + ") runs on another Backend object than the student (" + s.name +
                "): distillation needs the same one");
  if (teacher.max_batch() < student.max_batch())
    differ("max_batch", std::to_string(teacher.max_batch()), std::to_string(student.max_batch()),
           "the teacher runs on the student's batches: it needs at least the student's");
  if (t.num_classes != s.num_classes)
    differ("num_classes", std::to_string(t.num_classes), std::to_string(s.num_classes));
  if (t.in_chans != s.in_chans) differ("in_chans", std::to_string(t.in_chans), std::to_string(s.in_chans));
  if (t.img_size != s.img_size) differ("img_size", std::to_string(t.img_size), std::to_string(s.img_size));
  if (teacher.dtype() != student.dtype())
    differ("compute dtype", dtype_name(teacher.dtype()), dtype_name(student.dtype()));
  if (!(options.distill_alpha >= 0.f && options.distill_alpha <= 1.f))
    throw Error("TrainStep: distill_alpha must be in [0, 1], got " + std::to_string(options.distill_alpha));
  if (!(std::isfinite(options.distill_tau) && options.distill_tau > 0.f))
    throw Error("TrainStep: distill_tau must be finite and positive, got " + std::to_string(options.distill_tau));
  if (options.distill != Distill::Hard && options.distill != Distill::Soft)
    throw Error("TrainStep: distill must be Hard or Soft, got " + std::to_string(int(options.distill)));
}

TrainStep::TrainStep(Model& model, AdamW* opt, const TrainStepOptions& options)
    : model_(model), opt_(opt), o_(options) {
  Backend& be = model_.backend();
  if (o_.accum_steps < 1 || o_.accum_steps > 65536)
    throw Error("TrainStep: accum_steps must be in [1, 65536], got " + std::to_string(o_.accum_steps));
  if (o_.bucket_bytes < 1) throw Error("TrainStep: bucket_bytes must be positive");
  // A communicator whose collectives are host calls (MPI) cannot be recorded into a graph.
  use_graph_ = o_.graph && be.graphs_supported() && (!parallel() || o_.comm->graph_capturable());
  if (parallel() && opt_ && opt_->comm() != o_.comm)
    throw Error("TrainStep: the optimizer and the step must use the same communicator");
  if (o_.teacher) check_teacher(model_, *o_.teacher, o_);
  // Buckets from the end of the gradient arena (where the backward pass starts) to its start.
  // (Training only: an evaluation TrainStep's model may be built for inference, without gradients.)
  if (opt_) {
    const Tensor grads = model_.grad_arena();
    const int64_t per = std::max<int64_t>(64, o_.bucket_bytes / int64_t(dtype_size(grads.dtype())) / 64 * 64);
    for (int64_t end = grads.numel(); end > 0; end -= per) buckets_.push_back({std::max<int64_t>(0, end - per), end});
  }
  const ViTConfig& c = model_.config();
  image_bytes_ = size_t(c.in_chans) * c.img_size * c.img_size;
  const size_t B = size_t(model_.max_batch());
  labels_at_ = (sizeof(Inputs) + 63) / 64 * 64;
  images_at_ = (labels_at_ + B * 4 + 255) / 256 * 256;
  for (Slot& s : slots_) {
    s.mem = be.alloc_host(images_at_ + B * image_bytes_);
    s.dmem = be.alloc(images_at_ + B * image_bytes_);
    s.inputs = static_cast<Inputs*>(s.mem);
    s.labels = reinterpret_cast<int32_t*>(static_cast<char*>(s.mem) + labels_at_);
    s.images = static_cast<uint8_t*>(s.mem) + images_at_;
    std::memset(s.mem, 0, images_at_);
  }
}

TrainStep::~TrainStep() {
  Backend& be = model_.backend();
  try {
    be.synchronize();  // no replay may still read the staging memory
  } catch (...) {
  }
  for (auto& [key, g] : graphs_) be.destroy_graph(g);
  for (Slot& s : slots_) {
    be.release_host(s.mem);
    be.release(s.dmem);
  }
}

uint8_t* TrainStep::images() {
  Slot& s = slots_[next_];
  if (!waited_ && s.marker >= 0) model_.backend().wait_mark(s.marker);
  waited_ = true;
  return s.images;
}

int32_t* TrainStep::labels() {
  images();  // the same wait
  return slots_[next_].labels;
}

namespace {
// A device-to-device copy of `bytes` through the Backend (u8 views).
void copy_bytes(Backend& be, void* dst, const void* src, size_t bytes) {
  const Device dev = be.device();
  be.copy(Tensor::view(const_cast<void*>(src), {int64_t(bytes)}, DType::U8, dev),
          Tensor::view(dst, {int64_t(bytes)}, DType::U8, dev));
}
}  // namespace

void TrainStep::grads_ready(int64_t offset) {
  const Tensor grads = model_.grad_arena();
  const size_t elem = dtype_size(grads.dtype());
  for (; next_bucket_ < buckets_.size() && buckets_[next_bucket_].begin >= offset; ++next_bucket_) {
    Bucket& b = buckets_[next_bucket_];
    const Tensor view = Tensor::view(static_cast<char*>(grads.data()) + size_t(b.begin) * elem, {b.end - b.begin},
                                     grads.dtype(), grads.device());
    b.handle = o_.comm->all_reduce_start(view, ReduceOp::Sum);
  }
}

void TrainStep::enqueue(Kind kind, const Slot& slot, int n, int micro) {
  Backend& be = model_.backend();
  const char* d = static_cast<const char*>(slot.dmem);
  // The slot's upload (run() issued it on the copy stream), then the step's inputs from the
  // slot's device copy: lr and the dropout offset (the head of StepState), labels, images.
  be.wait_upload(int(&slot - slots_));
  if (kind == kTrain) copy_bytes(be, model_.step_state(), d, sizeof(Inputs));
  if (kind != kEval) copy_bytes(be, model_.input_labels().data(), d + labels_at_, size_t(n) * sizeof(int32_t));
  copy_bytes(be, model_.input_images().data(), d + images_at_, size_t(n) * image_bytes_);
  if (kind != kTrain) {
    model_.forward_staged(/*train=*/false, 0);
    if (kind == kEvalLabels) model_.loss_staged(0.f, /*train=*/false);
    return;
  }
  // Distillation: the teacher, in inference mode, on the same (augmented) images first; its
  // logits are the student's target below. All device ops, so the step still captures.
  DistillTarget target;
  if (o_.teacher) {
    copy_bytes(be, o_.teacher->input_images().data(), d + images_at_, size_t(n) * image_bytes_);
    o_.teacher->forward_staged(/*train=*/false, 0);
    target.kind = o_.distill;
    target.alpha = o_.distill_alpha;
    target.tau = o_.distill_tau;
    target.teacher_logits = o_.teacher->activation("logits");
  }
  // The masks of shard micro · ranks + rank (shard 0: the seed itself, as one process draws).
  const int ranks = parallel() ? o_.comm->world_size() : 1;
  const uint64_t shard = uint64_t(micro) * uint64_t(ranks) + uint64_t(parallel() ? o_.comm->rank() : 0);
  model_.forward_staged(/*train=*/true, o_.seed + shard * 0x9E3779B97F4A7C15ull);
  // The gradient of Σ losses / (the samples of the whole step, over every micro-batch and rank).
  model_.loss_staged(o_.smoothing, /*train=*/true, int64_t(n) * o_.accum_steps * ranks, /*accumulate=*/micro > 0,
                     o_.teacher ? &target : nullptr);
  if (micro == 0) model_.zero_grad();
  if (micro < o_.accum_steps - 1) {
    model_.backward();
    return;
  }
  const bool buckets = parallel() && o_.overlap && !opt_->zero1();
  if (buckets) {
    next_bucket_ = 0;
    model_.set_grads_ready_hook([this](int64_t offset) { grads_ready(offset); });
  }
  try {
    model_.backward();
  } catch (...) {
    model_.set_grads_ready_hook(nullptr);
    throw;
  }
  if (buckets) {
    model_.set_grads_ready_hook(nullptr);
    grads_ready(0);  // every bucket has started (backward's last hook said so; this is a no-op then)
    for (Bucket& b : buckets_) o_.comm->wait(b.handle);
  }
  opt_->enqueue_step(/*grads_reduced=*/buckets);
}

void TrainStep::check_labels(const Slot& slot, int n) const {
  const int classes = model_.config().num_classes;
  for (int b = 0; b < n; ++b)
    if (slot.labels[b] < 0 || slot.labels[b] >= classes)
      throw Error("TrainStep: label " + std::to_string(slot.labels[b]) + " of sample " + std::to_string(b) +
                  " is outside [0, " + std::to_string(classes) + ")");
}

void TrainStep::dispatch(Kind kind, int n, int micro) {
  Backend& be = model_.backend();
  Slot& slot = slots_[next_];
  // The used part of the slot, in one copy on the copy stream: it overlaps the step before.
  be.upload(slot.dmem, slot.mem, images_at_ + size_t(n) * image_bytes_, next_);
  // The first step of each kind and batch size runs eagerly: it sizes the backend's workspaces,
  // which must not grow while a graph is captured. Later steps replay their graph.
  if (!use_graph_ || eager_runs_[{kind, n, micro}]++ == 0) {
    enqueue(kind, slot, n, micro);
  } else {
    void*& g = graphs_[{kind, next_, n, micro}];
    if (!g) {
      be.begin_capture();
      try {
        enqueue(kind, slot, n, micro);
      } catch (...) {
        try {
          be.destroy_graph(be.end_capture());
        } catch (...) {
        }
        throw;
      }
      g = be.end_capture();
      ++captured_;
    }
    be.replay(g);
  }
  slot.marker = be.mark();
  next_ ^= 1;
  waited_ = false;
}

void TrainStep::run(int n, float lr, int64_t step, int micro) {
  if (!opt_) throw Error("TrainStep::run: this TrainStep has no optimizer (evaluation only)");
  if (micro < 0 || micro >= o_.accum_steps)
    throw Error("TrainStep::run: micro-batch " + std::to_string(micro) + " is outside [0, " +
                std::to_string(o_.accum_steps) + ")");
  if (!(std::isfinite(lr) && lr >= 0.f))
    throw Error("TrainStep: learning rate must be finite and >= 0, got " + std::to_string(lr));
  images();  // the slot is free
  Slot& slot = slots_[next_];
  model_.set_batch(n);  // checks n
  if (o_.teacher) o_.teacher->set_batch(n);
  check_labels(slot, n);
  slot.inputs->lr = lr;
  slot.inputs->reserved = 0;
  slot.inputs->dropout_offset = uint64_t(step) * Model::kDropoutSites;
  dispatch(kTrain, n, micro);
}

void TrainStep::run_eval(int n, bool with_labels) {
  images();
  model_.set_batch(n);
  if (with_labels) check_labels(slots_[next_], n);
  dispatch(with_labels ? kEvalLabels : kEval, n, 0);
}

StepMetrics TrainStep::take_metrics() {
  Backend& be = model_.backend();
  StepState s;
  be.copy_to_host(&s, model_.step_state(), sizeof s);  // waits for the device
  StepMetrics m{s.loss_sum, s.samples, s.top1, s.top5, s.skipped_steps};
  if (parallel() && !opt_) {  // evaluation: each rank has its shard's (a training step reduced its own)
    o_.comm->all_reduce_host(&m.loss_sum, 1, ReduceOp::Sum);
    int64_t counts[4] = {m.samples, m.top1, m.top5, m.skipped_steps};
    o_.comm->all_reduce_host(counts, 4, ReduceOp::Sum);
    m.samples = counts[0];
    m.top1 = counts[1];
    m.top5 = counts[2];
    m.skipped_steps = counts[3];
  }
  s.loss_sum = 0;
  s.samples = s.top1 = s.top5 = s.skipped_steps = 0;
  // Only the accumulators, which come last; the device is idle (copy_to_host waited for it).
  be.copy_to_device(&model_.step_state()->loss_sum, &s.loss_sum, sizeof(StepState) - offsetof(StepState, loss_sum));
  return m;
}

}  // namespace vitcuda
