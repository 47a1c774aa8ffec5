// vitcuda — TrainStep: one training step (upload, forward, loss, backward, clipping, AdamW) that
// the host only enqueues: its inputs come from pinned, double-buffered host memory, uploaded on a
// copy stream while the step before runs, every scalar
// it needs lives in the model's StepState (vitcuda/backend.h), and on a backend with CUDA Graphs
// the whole step is captured once per batch size and replayed. The host waits for the device
// only when it reuses a staging buffer (the step two back must have read it) and when it reads
// the metrics (take_metrics), which the device accumulates in the meantime.
#pragma once
#include <cstdint>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "vitcuda/comm.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"

namespace vitcuda {

struct TrainStepOptions {
  float smoothing = 0.f;  // label smoothing
  uint64_t seed = 0;      // dropout / drop-path masks: (seed, step, site)
  bool graph = true;      // capture and replay where the backend supports it (--no-graph: false)
  // Gradient accumulation (--grad-accum-steps): micro-batches per optimizer step; run() is called
  // once per micro-batch, and the optimizer steps after the last one.
  int accum_steps = 1;
  // Data parallelism (vitcuda/comm.h; nullptr or one rank: this process alone). Each rank runs
  // its shard of every global micro-batch; the loss is scaled by 1 / (global batch · accum_steps)
  // so the sum of the ranks' gradients, which the step reduces, is the global mean gradient.
  // Dropout masks of micro-batch m on rank r come from shard m · ranks + r: shard 0 draws the
  // single-process masks, and K micro-batches on one process draw the masks of K ranks.
  Communicator* comm = nullptr;
  // Reduce the gradients in buckets of bucket_bytes as the backward pass finishes them
  // (Model::set_grads_ready_hook), non-blocking; false (--no-overlap): in one all-reduce after
  // the backward pass. Same results either way (an all-reduce is element-wise). ZeRO-1 steps
  // (AdamW::zero1) reduce-scatter after the backward pass.
  bool overlap = true;
  int64_t bucket_bytes = int64_t(25) << 20;  // PyTorch DDP's default bucket_cap_mb
  // Distilled training (DeiT): the teacher, a Model on the same backend (max_batch >= the
  // student's, the same img_size, in_chans and num_classes; its own pixel normalisation), runs in
  // inference mode on each training step's images, and the student's loss is the
  // DistillTarget's (vitcuda/model.h) with these settings. Evaluation steps ignore it.
  Model* teacher = nullptr;
  Distill distill = Distill::Hard;
  float distill_alpha = 0.5f;
  float distill_tau = 1.f;
};

// The checks TrainStep's constructor makes on options.teacher (also for callers that want them
// before building a TrainStep, as Trainer's constructor): not the student itself, the same Backend
// object, max_batch >= the student's, the same img_size, in_chans, num_classes and compute dtype,
// distill_alpha in [0, 1], distill_tau finite and > 0. Throws Error naming both values.
void check_teacher(const Model& student, const Model& teacher, const TrainStepOptions& options);

// Metrics of the applied steps since the last take_metrics, and the steps skipped for a
// non-finite loss or gradient.
struct StepMetrics {
  double loss_sum = 0;  // Σ per-sample losses
  int64_t samples = 0, top1 = 0, top5 = 0;
  int64_t skipped_steps = 0;
  StepMetrics& operator+=(const StepMetrics& o) {
    loss_sum += o.loss_sum;
    samples += o.samples;
    top1 += o.top1;
    top5 += o.top5;
    skipped_steps += o.skipped_steps;
    return *this;
  }
};

class TrainStep {
 public:
  // opt may be null for a TrainStep that only evaluates (run_eval).
  TrainStep(Model& model, AdamW* opt, const TrainStepOptions& options);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // The staging buffers of the next step, pinned host memory: images [max_batch, C, H, W] u8 and
  // labels [max_batch]. Fill the first n of each, then run(n, ...). May wait for the step that
  // last used these buffers (two steps back) to have uploaded them.
  uint8_t* images();
  int32_t* labels();
  // Enqueues one step on the first n staged samples at learning rate lr; `step` (0-based, the
  // schedule's step) selects the dropout masks. Labels are checked here. Returns at once. With
  // accum_steps K > 1, micro-batch `micro` (0..K-1) of the step: gradients accumulate and the
  // optimizer runs after micro-batch K-1 (every micro-batch of a step must have the same n).
  void run(int n, float lr, int64_t step, int micro = 0);
  // An evaluation step on the first n staged samples: forward without dropout and, with labels,
  // the loss and hits, accumulated at once (step_metrics with commit). Captured and replayed
  // like run(); the logits stay in the model until the next step (Model::activation("logits")).
  void run_eval(int n, bool with_labels);
  // Waits for the device, returns the metrics accumulated since the last call and clears them.
  // Data-parallel: the whole global batch's (a training step reduces its metrics over the ranks;
  // an evaluation TrainStep reduces them here: a collective, every rank calls it).
  StepMetrics take_metrics();
  // Whether steps are replayed from CUDA Graphs (the backend supports them and options.graph).
  bool graphs() const { return use_graph_; }
  int64_t graphs_captured() const { return captured_; }

 private:
  // What the host writes before each step, copied into the head of StepState (16 bytes).
  struct Inputs {
    float lr;
    int32_t reserved;
    uint64_t dropout_offset;
  };
  // A staging slot: pinned host memory the host fills, uploaded on the backend's copy stream
  // (overlapping the step before) to a device copy that the step reads. Layout of both: Inputs,
  // labels [max_batch], images [max_batch, C, H, W].
  struct Slot {
    void* mem = nullptr;   // pinned host memory
    void* dmem = nullptr;  // backend memory
    Inputs* inputs = nullptr;
    int32_t* labels = nullptr;
    uint8_t* images = nullptr;
    int marker = -1;  // the backend marker after the last step that used this slot
  };
  size_t labels_at_ = 0, images_at_ = 0;  // byte offsets in a slot
  enum Kind : int { kTrain, kEvalLabels, kEval };
  void check_labels(const Slot& slot, int n) const;
  // the step's ops, eager or while capturing
  void enqueue(Kind kind, const Slot& slot, int n, int micro);
  void dispatch(Kind kind, int n, int micro);  // eager, capture or replay, then the slot's marker
  bool parallel() const { return o_.comm && o_.comm->world_size() > 1; }
  // Gradient buckets: [begin, end) element ranges from the arena's end to its start, started by
  // the backward pass's hook as they become final.
  struct Bucket {
    int64_t begin = 0, end = 0;
    int handle = -1;
  };
  void grads_ready(int64_t offset);

  Model& model_;
  AdamW* opt_;
  TrainStepOptions o_;
  bool use_graph_ = false;
  size_t image_bytes_ = 0;  // per sample
  Slot slots_[2];
  int next_ = 0;                                            // the slot images()/labels()/run() use
  bool waited_ = false;                                     // the next slot's marker has been waited for
  std::map<std::tuple<int, int, int, int>, void*> graphs_;  // (kind, slot, n, micro) -> executable graph
  std::map<std::tuple<int, int, int>, int> eager_runs_;     // (kind, n, micro) -> steps so far (the first runs eagerly)
  std::vector<Bucket> buckets_;
  size_t next_bucket_ = 0;
  int64_t captured_ = 0;
};

}  // namespace vitcuda
