// vitcuda — Trainer: epochs of shuffled batches through Model + AdamW with a warmup/cosine
// schedule, validation, progress bar, history.csv and atomic last/best checkpoints.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "vitcuda/augment.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/data.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/train_step.h"

namespace vitcuda {

// The settings that shape a training run's math, as (name, value) pairs in a fixed order. The
// name is the vit_train flag that sets the value ("--num-heads", "2"), or, where no flag does,
// "model.<config field>" (a preset's own fields), "adamw.<coefficient>" or "data" (a fingerprint
// of the training and validation sets: sizes, image shape, classes and a hash of the pixels and
// labels, so the data folder may move but not change). Every checkpoint stores the Trainer's
// record as its "run" metadata (JSON); Trainer::resume refuses a checkpoint whose record differs
// from this run's, naming every differing flag with both values.
struct RunRecord {
  std::vector<std::pair<std::string, std::string>> entries;

  void set(const std::string& name, const std::string& value);  // replaces the entry or appends
  std::string get(const std::string& name) const;               // "" when absent
  std::string to_json() const;                                  // a JSON object in entry order
  static RunRecord from_json(const std::string& text);          // throws Error
  // Names whose values differ or that only one record has: this record's order, then other's.
  std::vector<std::string> differences(const RunRecord& other) const;
  // A float exactly as given: the shortest decimal that reads back as the same float.
  static std::string num(double v);
};

// A fingerprint of datasets' contents, independent of where they are stored: their sizes,
// the first one's image shape and classes, and a hash of every pixel and label, e.g.
// "192+64 images 1x28x28 10 classes #0123456789abcdef". The Trainer records its training and
// validation sets under "data"; a caller may set "data" in TrainOptions::run_flags instead
// (vit_train: the whole training set before the validation split, and the test set).
std::string data_fingerprint(const std::vector<const Dataset*>& sets);

// A fingerprint of a model's weights, independent of where they were loaded from: its config
// name, parameter count and a hash of its config (JSON) and every parameter's fp32 master
// values, e.g. "vit_fmnist 28.1k params #0123456789abcdef". The Trainer records the teacher's
// under "--distill-from".
std::string weights_fingerprint(const Model& model);

struct TrainOptions {
  int epochs = 10;
  int batch_size = 128;
  float lr = 1e-3f;
  float min_lr = 1e-5f;
  float warmup_epochs = 1.f;
  bool cosine = true;
  float smoothing = 0.1f;
  uint64_t seed = 42;
  std::string output_dir;  // empty: write nothing
  bool progress = true;    // progress bar on stderr
  // > 0: fit() returns after this many epochs of this call, as a preempted job would (the
  // checkpoints are written; the schedule still spans `epochs`). For testing resumption.
  int stop_after_epochs = 0;
  // Training-time augmentation (random draws keyed by (seed, epoch, example)); its output size
  // is set to the model's img_size. Evaluation only resizes to img_size.
  AugmentConfig augment;
  int loader_threads = 2;  // workers preparing batches ahead of the step (0: in the step)
  // Steps run as TrainStep (vitcuda/train_step.h): replayed from CUDA Graphs where the backend
  // supports them unless graph is false (--no-graph), the host reading the device's metrics
  // every log_interval steps (and at the end of each epoch) for the progress bar.
  bool graph = true;
  int log_interval = 20;
  // Extra string metadata stored in every checkpoint (e.g. "class_names": a JSON array).
  std::map<std::string, std::string> metadata;
  // Data parallelism (vitcuda/comm.h; nullptr: this process alone). batch_size is the global
  // batch: each of the N ranks runs batch_size / N samples of it (batch_size must divide), the
  // Model being built for that per-rank batch; the AdamW must use the same communicator. Every
  // rank calls the same Trainer methods; rank 0 alone writes output_dir and the log lines, the
  // others take part in the collectives (evaluation is sharded and reduced).
  Communicator* comm = nullptr;
  int accum_steps = 1;  // micro-batches of batch_size per optimizer step (--grad-accum-steps)
  bool overlap = true;  // TrainStepOptions::overlap and bucket_bytes
  int64_t bucket_bytes = int64_t(25) << 20;
  // Distilled training (DeiT; TrainStepOptions::teacher): the teacher Model (on the model's
  // Backend, max_batch >= the model's, the same img_size, in_chans, num_classes and compute
  // dtype) runs in inference mode on every training step's images, and the loss is
  // (1 − α)·CE(cls head, label) + α·term(distillation head, teacher) (vitcuda/model.h
  // DistillTarget). nullptr: plain training. The run record then holds "--distill-from" (the
  // teacher's config name, parameter count and a hash of its config and weights, not its path),
  // "--distill", "--distill-alpha" and "--distill-tau"; none of them without a teacher.
  Model* teacher = nullptr;
  Distill distill = Distill::Hard;
  float distill_alpha = 0.5f;  // in [0, 1]
  float distill_tau = 1.f;     // > 0
  // Settings of the caller that shape the run beyond what the Trainer sees (vit_train:
  // --dataset, --val-split, --cifar100-labels, data); added to the Trainer's run record,
  // replacing its own entries of the same name.
  RunRecord run_flags;
};

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;  // mean loss, accuracies in [0, 1]
  int64_t count = 0;
  double seconds = 0;
};

struct EpochRecord {
  int epoch = 0;  // 1-based
  double train_loss = 0, train_top1 = 0;
  double val_loss = 0, val_top1 = 0, val_top5 = 0;
  double lr = 0, seconds = 0, images_per_second = 0;
  double train_top5 = 0;  // last column of history.csv (appended, so older readers keep working)
};

class Trainer {
 public:
  Trainer(Model& model, AdamW& opt, const Dataset& train, const Dataset& val, const TrainOptions& options);
  // Continue the run saved at `path` (a "last" checkpoint): weights, optimizer, epoch, best,
  // history. The checkpoint's run record must equal run_record() except for --epochs, which may
  // change (the learning-rate schedule then spans the new total): otherwise, or when the
  // checkpoint has no run record or holds a tensor that is neither a parameter nor its AdamW
  // state, throws Error naming the differences; nothing is loaded then. So the result equals an
  // uninterrupted run with these options. Returns a note for the log when --epochs changed, else
  // "".
  std::string resume(const std::string& path);
  // Train the remaining epochs (or options.stop_after_epochs of them); one summary line per
  // epoch on `log`.
  void fit(std::ostream& log);
  // predictions: when given, receives the argmax class of every image, in dataset order.
  EvalResult evaluate(const Dataset& data, const std::string& label, std::vector<int32_t>* predictions = nullptr);

  int epochs_done() const { return epoch_; }
  double best_top1() const { return best_top1_; }
  int best_epoch() const { return best_epoch_; }  // 0 before the first epoch
  // Puts the weights of best_epoch() into the model, where they stay (the optimizer state is
  // left as it is: this is for evaluating after fit(), not for more training). They come from
  // the host copy fit() keeps of the fp32 master weights of the best epoch, or, for a best
  // epoch before a resume, from output_dir/best.safetensors when that file holds that epoch.
  // Returns false, the model unchanged and the reason in *why, when they are not available.
  bool load_best_weights(std::string* why = nullptr);
  // Everything that shapes this run (model config, options, optimizer, backend, data), as stored
  // in every checkpoint.
  const RunRecord& run_record() const { return run_; }
  const std::vector<EpochRecord>& history() const { return history_; }

 private:
  void write_outputs(bool is_best, bool checkpoints = true);
  bool parallel() const { return o_.comm && o_.comm->world_size() > 1; }
  bool root() const { return !o_.comm || o_.comm->is_root(); }
  int ranks() const { return o_.comm ? o_.comm->world_size() : 1; }
  TrainStepOptions step_options() const;
  TrainStepOptions step_options_distill() const;  // step_options() with the teacher and its settings
  std::map<std::string, std::string> state_metadata() const;

  Model& model_;
  AdamW& opt_;
  const Dataset& train_;
  const Dataset& val_;
  TrainOptions o_;
  int epoch_ = 0;
  int64_t step_ = 0;
  double best_top1_ = -1;
  int best_epoch_ = 0;
  std::vector<float> best_master_;  // master weights of best_epoch_ when fit() reached it
  std::vector<EpochRecord> history_;
  RunRecord run_;
};

}  // namespace vitcuda
