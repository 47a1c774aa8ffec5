// vitcuda — the training loop, checkpoints, history and the progress bar.
#include "vitcuda/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <sys/stat.h>

#include "vitcuda/checkpoint.h"
#include "vitcuda/comm.h"
#include "vitcuda/inspect.h"

namespace vitcuda {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string hms(double s) {
  char buf[32];
  const int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

// A one-line progress bar on stderr, redrawn at most 10 times a second on a terminal;
// elsewhere (CI logs, pipes) a line at every quarter of the epoch.
class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label, int64_t total)
      : enabled_(enabled), tty_(isatty(2)), label_(std::move(label)), total_(total), t0_(Clock::now()) {}
  void update(int64_t done, double loss, double acc, int64_t images) {
    if (!enabled_ || total_ <= 0) return;
    const double el = seconds_since(t0_);
    if (tty_) {
      if (done < total_ && el - last_ < 0.1) return;
    } else {
      const int64_t quarter = (4 * done) / total_;
      if (quarter == last_quarter_ || done == 0) return;
      last_quarter_ = quarter;
    }
    last_ = el;
    const int width = 24, fill = int(width * done / total_);
    const double ips = images / std::max(el, 1e-9);
    const double eta = done > 0 ? el * (total_ - done) / done : 0;
    std::fprintf(stderr, "%s%s [%s%s] %lld/%lld loss %.4f acc %5.2f%% %.0f img/s ETA %s%s", tty_ ? "\r" : "",
                 label_.c_str(), std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(),
                 (long long)done, (long long)total_, loss, 100 * acc, ips, hms(eta).c_str(), tty_ ? "\x1b[K" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_ && tty_) std::fprintf(stderr, "\r\x1b[K");
  }

 private:
  bool enabled_, tty_;
  std::string label_;
  int64_t total_;
  Clock::time_point t0_;
  double last_ = -1;
  int64_t last_quarter_ = 0;
};

// History values are stored exactly: JSON numbers print the shortest decimal that reads back as
// the same double; the non-finite values JSON lacks are stored as strings.
nlohmann::json exact(double v) {
  if (std::isfinite(v)) return v;
  return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
}

double exact_from(const nlohmann::json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan") return std::nan("");
    if (s == "inf") return HUGE_VAL;
    if (s == "-inf") return -HUGE_VAL;
    throw Error("'" + s + "' is not a number");
  }
  return v.get<double>();
}

std::string history_json(const std::vector<EpochRecord>& h) {
  nlohmann::json j = nlohmann::json::array();
  for (const EpochRecord& r : h)
    j.push_back({r.epoch, exact(r.train_loss), exact(r.train_top1), exact(r.val_loss), exact(r.val_top1),
                 exact(r.val_top5), exact(r.lr), exact(r.seconds), exact(r.images_per_second), exact(r.train_top5)});
  return j.dump();
}

std::vector<EpochRecord> history_from_json(const std::string& text, const std::string& path) {
  std::vector<EpochRecord> h;
  try {
    for (const auto& e : nlohmann::json::parse(text)) {
      EpochRecord r;
      r.epoch = e.at(0).get<int>();
      r.train_loss = exact_from(e.at(1));
      r.train_top1 = exact_from(e.at(2));
      r.val_loss = exact_from(e.at(3));
      r.val_top1 = exact_from(e.at(4));
      r.val_top5 = exact_from(e.at(5));
      r.lr = exact_from(e.at(6));
      r.seconds = exact_from(e.at(7));
      r.images_per_second = exact_from(e.at(8));
      if (e.size() > 9) r.train_top5 = exact_from(e.at(9));  // absent in older checkpoints
      h.push_back(r);
    }
  } catch (const std::exception& e) {
    throw Error("checkpoint '" + path + "': metadata 'history' is invalid: " + e.what());
  }
  return h;
}

// A double that reads back exactly (best_top1: an accuracy stored with 6 decimals turned ties
// with a value such as 1/3 into new bests after a resume).
std::string exact_string(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// 64-bit FNV-1a, 8 bytes at a time: a cheap fingerprint of the data.
uint64_t fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  constexpr uint64_t kPrime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kPrime;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * kPrime;
  return h;
}

// The model config's fields under the flags that set them.
void add_config(RunRecord& r, const ViTConfig& c) {
  static const std::map<std::string, std::string> flag{{"name", "--model"},
                                                       {"img_size", "--img-size"},
                                                       {"patch_size", "--patch-size"},
                                                       {"pixel_mean", "--mean"},
                                                       {"pixel_std", "--std"},
                                                       {"embed_dim", "--embed-dim"},
                                                       {"depth", "--depth"},
                                                       {"num_heads", "--num-heads"},
                                                       {"global_pool", "--global-pool"},
                                                       {"gelu", "--gelu"},
                                                       {"drop_rate", "--drop"},
                                                       {"drop_path_rate", "--drop-path"},
                                                       {"pre_logits", "--pre-logits"},
                                                       {"num_classes", "--num-classes"},
                                                       {"distilled", "--distilled"}};
  std::function<std::string(const nlohmann::ordered_json&)> text = [&](const nlohmann::ordered_json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_float()) return RunRecord::num(v.get<double>());
    if (v.is_array()) {
      std::string s;
      for (const auto& e : v) s += (s.empty() ? "" : ",") + text(e);
      return s.empty() ? std::string("none") : s;
    }
    return v.dump();
  };
  const auto config = nlohmann::ordered_json::parse(c.to_json());
  for (const auto& [key, value] : config.items()) {
    auto it = flag.find(key);
    r.set(it != flag.end() ? it->second : "model." + key, text(value));
  }
}

const char* const kEpochs = "--epochs";

// The entries in which two records differ, " --flag value" each ("<none>" where a record lacks
// it), as a's values and b's values; `except` is left out ("": none).
std::pair<std::string, std::string> differing_flags(const RunRecord& a, const RunRecord& b, const std::string& except) {
  std::string was, now;
  for (const std::string& k : a.differences(b)) {
    if (k == except) continue;
    const std::string va = a.get(k), vb = b.get(k);
    was += " " + k + " " + (va.empty() ? "<none>" : va);
    now += " " + k + " " + (vb.empty() ? "<none>" : vb);
  }
  return {was, now};
}

}  // namespace

// ---- run record -----------------------------------------------------------------------------
void RunRecord::set(const std::string& name, const std::string& value) {
  for (auto& e : entries)
    if (e.first == name) {
      e.second = value;
      return;
    }
  entries.emplace_back(name, value);
}

std::string RunRecord::get(const std::string& name) const {
  for (const auto& e : entries)
    if (e.first == name) return e.second;
  return "";
}

std::string RunRecord::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [k, v] : entries) j[k] = v;
  return j.dump();
}

RunRecord RunRecord::from_json(const std::string& text) {
  RunRecord r;
  try {
    const auto j = nlohmann::ordered_json::parse(text);
    if (!j.is_object()) throw Error("not a JSON object");
    for (const auto& [k, v] : j.items()) r.entries.emplace_back(k, v.get<std::string>());
  } catch (const std::exception& e) {
    throw Error(std::string("run record is invalid: ") + e.what());
  }
  return r;
}

std::vector<std::string> RunRecord::differences(const RunRecord& other) const {
  std::vector<std::string> d;
  auto has = [](const RunRecord& r, const std::string& k) {
    for (const auto& e : r.entries)
      if (e.first == k) return true;
    return false;
  };
  for (const auto& [k, v] : entries)
    if (!has(other, k) || other.get(k) != v) d.push_back(k);
  for (const auto& [k, v] : other.entries)
    if (!has(*this, k)) d.push_back(k);
  return d;
}

std::string RunRecord::num(double v) {
  char buf[40];
  for (int p = 1; p <= 9; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtof(buf, nullptr) == float(v)) return buf;
  }
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string data_fingerprint(const std::vector<const Dataset*>& sets) {
  uint64_t h = 0xcbf29ce484222325ull;
  std::string sizes;
  for (const Dataset* d : sets) {
    h = fnv(h, d->images.data(), d->images.size());
    h = fnv(h, d->labels.data(), d->labels.size() * sizeof(int32_t));
    sizes += (sizes.empty() ? "" : "+") + std::to_string(d->size());
  }
  const Dataset& d = *sets.at(0);
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s images %dx%dx%d %d classes #%016llx", sizes.c_str(), d.channels, d.height, d.width,
                d.num_classes, (unsigned long long)h);
  return buf;
}

std::string weights_fingerprint(const Model& model) {
  const std::string config = model.config().to_json();
  uint64_t h = fnv(0xcbf29ce484222325ull, config.data(), config.size());
  const std::vector<float> master = model.get_master();
  // Tensor by tensor (the arena's alignment gaps hold nothing of the weights).
  for (const ParamSpec& p : model.params()) {
    h = fnv(h, p.name.data(), p.name.size());
    h = fnv(h, master.data() + p.offset, size_t(p.numel) * sizeof(float));
  }
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s %lld params #%016llx", model.config().name.c_str(), (long long)model.num_params(),
                (unsigned long long)h);
  return buf;
}

// ---- trainer ------------------------------------------------------------------------------
Trainer::Trainer(Model& model, AdamW& opt, const Dataset& train, const Dataset& val, const TrainOptions& options)
    : model_(model), opt_(opt), train_(train), val_(val), o_(options) {
  const ViTConfig& c = model.config();
  for (const Dataset* d : {&train, &val}) {
    if (d->size() == 0) continue;
    // Any image size is resized to img_size by the loaders; the channels must match.
    if (d->channels != c.in_chans)
      throw Error("dataset '" + d->name + "' has " + std::to_string(d->channels) + "-channel images but model " +
                  c.name + " expects " + std::to_string(c.in_chans) + "-channel images");
    if (d->num_classes > c.num_classes)
      throw Error("dataset '" + d->name + "' has " + std::to_string(d->num_classes) + " classes but model " + c.name +
                  " has " + std::to_string(c.num_classes) + " outputs");
  }
  if (train.size() == 0) throw Error("training set '" + train.name + "' is empty");
  // The global batch: each rank runs batch_size / ranks of it on a model built for that many.
  const int nranks = ranks();
  if (o_.batch_size <= 0 || o_.batch_size % nranks != 0 || o_.batch_size / nranks > model.max_batch())
    throw Error("batch size " + std::to_string(o_.batch_size) + " must be a multiple of the " + std::to_string(nranks) +
                " ranks, each rank's share in [1, " + std::to_string(model.max_batch()) + "] (the model's batch)");
  if (o_.accum_steps < 1 || o_.accum_steps > 65536)
    throw Error("TrainOptions: accum_steps must be in [1, 65536], got " + std::to_string(o_.accum_steps));
  if (parallel() && opt.comm() != o_.comm)
    throw Error("Trainer: the optimizer and the trainer must use the same communicator");
  // The library checks what the tools check (tools/cli_checks.h gives the flags' own ranges and
  // names): a NaN or an infinity must not reach the schedule's float-to-integer conversions.
  auto need = [](bool ok, const std::string& what, double v) {
    if (!ok) throw Error("TrainOptions: " + what + ", got " + std::to_string(v));
  };
  need(o_.epochs >= 1, "epochs must be at least 1", o_.epochs);
  need(std::isfinite(o_.lr) && o_.lr > 0.f, "lr must be finite and positive", o_.lr);
  need(std::isfinite(o_.min_lr) && o_.min_lr >= 0.f && o_.min_lr <= o_.lr, "min_lr must be in [0, lr]", o_.min_lr);
  need(std::isfinite(o_.warmup_epochs) && o_.warmup_epochs >= 0.f && o_.warmup_epochs <= float(o_.epochs),
       "warmup_epochs must be in [0, epochs]", o_.warmup_epochs);
  need(std::isfinite(o_.smoothing) && o_.smoothing >= 0.f && o_.smoothing < 1.f, "smoothing must be in [0, 1)",
       o_.smoothing);
  need(o_.log_interval >= 1, "log_interval must be at least 1", o_.log_interval);
  need(o_.loader_threads >= 0 && o_.loader_threads <= 64, "loader_threads must be in [0, 64]", o_.loader_threads);
  need(o_.stop_after_epochs >= 0, "stop_after_epochs must be >= 0", o_.stop_after_epochs);
  o_.augment.validate();
  need(o_.distill_alpha >= 0.f && o_.distill_alpha <= 1.f, "distill_alpha must be in [0, 1]", o_.distill_alpha);
  need(std::isfinite(o_.distill_tau) && o_.distill_tau > 0.f, "distill_tau must be finite and positive",
       o_.distill_tau);
  // The teacher's shape, before any step (TrainStep checks the same; per rank, the teacher runs
  // on this rank's share of each batch).
  if (o_.teacher) check_teacher(model, *o_.teacher, step_options_distill());

  // What shapes the math, under the flags of vit_train. Not recorded, as they change nothing:
  // output_dir, progress, stop_after_epochs, loader_threads, graph, log_interval (bitwise-equal
  // by test). --epochs is recorded last and may change on resume.
  add_config(run_, c);
  const AugmentConfig& a = o_.augment;
  const AdamWConfig& oc = opt_.config();
  using N = RunRecord;
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"--seed", std::to_string(o_.seed)},
           {"--batch-size", std::to_string(o_.batch_size)},
           {"--lr", N::num(o_.lr)},
           {"--min-lr", N::num(o_.min_lr)},
           {"--warmup-epochs", N::num(o_.warmup_epochs)},
           {"--sched", o_.cosine ? "cosine" : "constant"},
           {"--smoothing", N::num(o_.smoothing)},
           {"--weight-decay", N::num(oc.weight_decay)},
           {"--clip-grad", N::num(oc.clip_grad)},
           {"adamw.betas", N::num(oc.beta1) + "," + N::num(oc.beta2)},
           {"adamw.eps", N::num(oc.eps)},
           {"--hflip", N::num(a.hflip)},
           {"--rotation", N::num(a.rotation)},
           {"--zoom",
            a.zoom_width == a.zoom_height ? N::num(a.zoom_height) : N::num(a.zoom_height) + "," + N::num(a.zoom_width)},
           {"--rrc", a.rrc ? "on" : "off"},
           {"--scale", N::num(a.rrc_scale[0]) + "," + N::num(a.rrc_scale[1])},
           {"rrc.ratio", N::num(a.rrc_ratio[0]) + "," + N::num(a.rrc_ratio[1])},
           // cpu -> cuda (or back) is not bitwise-exact; the GPU model may change.
           {"--device", model.backend().device() == Device::CPU ? "cpu" : "cuda"},
           {"--precision", model.dtype() == DType::BF16  ? "bf16"
                           : model.dtype() == DType::F32 ? "fp32"
                           : model.dtype() == DType::F64 ? "fp64"
                                                         : dtype_name(model.dtype())}})
    run_.set(k, v);
  // Recorded only when not the default, so that the records of earlier runs still compare equal.
  // The number of ranks changes the dropout masks (TrainStepOptions::comm), so a resume keeps it.
  if (o_.accum_steps > 1) run_.set("--grad-accum-steps", std::to_string(o_.accum_steps));
  if (nranks > 1) run_.set("mpirun -np", std::to_string(nranks));
  if (o_.teacher) {
    run_.set("--distill-from", weights_fingerprint(*o_.teacher));
    run_.set("--distill", distill_name(o_.distill));
    run_.set("--distill-alpha", N::num(o_.distill_alpha));
    run_.set("--distill-tau", N::num(o_.distill_tau));
  }
  run_.set("data", data_fingerprint({&train, &val}));
  for (const auto& [k, v] : o_.run_flags.entries) run_.set(k, v);
  run_.set(kEpochs, std::to_string(o_.epochs));
  // Every rank must run the same thing on the same data: a flag or a dataset that differs is
  // named here, before any step (a mismatch would otherwise hang or silently diverge).
  if (parallel())
    check_same_on_every_rank(*o_.comm, run_.to_json(), [](const std::string& root, const std::string& mine, int rank) {
      const RunRecord a = RunRecord::from_json(root), b = RunRecord::from_json(mine);
      const auto [was, now] = differing_flags(a, b, "");
      return "the ranks disagree: rank 0 has" + was + ", rank " + std::to_string(rank) + " has" + now +
             " (every rank must run the same flags on the same data)";
    });
}

TrainStepOptions Trainer::step_options() const {
  TrainStepOptions so;
  so.graph = o_.graph;
  so.comm = o_.comm;
  so.overlap = o_.overlap;
  so.bucket_bytes = o_.bucket_bytes;
  return so;
}

TrainStepOptions Trainer::step_options_distill() const {
  TrainStepOptions so = step_options();
  so.teacher = o_.teacher;
  so.distill = o_.distill;
  so.distill_alpha = o_.distill_alpha;
  so.distill_tau = o_.distill_tau;
  return so;
}

std::map<std::string, std::string> Trainer::state_metadata() const {
  std::map<std::string, std::string> md{{"epoch", std::to_string(epoch_)},
                                        {"step", std::to_string(step_)},
                                        {"best_top1", exact_string(best_top1_)},
                                        {"best_epoch", std::to_string(best_epoch_)},
                                        {"seed", std::to_string(o_.seed)},
                                        {"history", history_json(history_)},
                                        {"run", run_.to_json()}};
  md.insert(o_.metadata.begin(), o_.metadata.end());  // the trainer's own keys win
  return md;
}

std::string Trainer::resume(const std::string& path) {
  // The run record first, from the header alone: a changed flag is then named as such rather
  // than surfacing as a tensor of another shape, and nothing is loaded.
  auto check = [&](const std::map<std::string, std::string>& md) {
    auto it = md.find("run");
    if (it == md.end())
      throw Error("checkpoint '" + path +
                  "' has no 'run' metadata (the flags that shaped its run): written by an older vit_train or not a "
                  "training checkpoint, so it cannot be resumed exactly (start a new run, e.g. with "
                  "--initial-checkpoint '" +
                  path + "')");
    RunRecord saved;
    try {
      saved = RunRecord::from_json(it->second);
    } catch (const Error& e) {
      throw Error("checkpoint '" + path + "': metadata 'run': " + e.what());
    }
    const auto [was, now] = differing_flags(saved, run_, kEpochs);
    if (!was.empty())
      throw Error("checkpoint '" + path + "' was trained with" + was + ", this run has" + now +
                  " (a resume must repeat the flags that shape the run)");
    const std::string planned = saved.get(kEpochs);
    if (!planned.empty() && planned != run_.get(kEpochs))
      return "note: the checkpoint's run was planned for " + planned + " epochs, this one for " + run_.get(kEpochs) +
             ": the learning-rate schedule now spans " + run_.get(kEpochs) + " epochs";
    return std::string();
  };
  // The header alone first (a checkpoint may be gigabytes), by the library's one header reader:
  // regular files only (a FIFO is refused, not waited on), the header length, tensor and value
  // caps; it throws the errors load_checkpoint would give.
  const std::string note = check(read_safetensors_header(path).metadata);
  const auto md = load_checkpoint(path, model_, &opt_);
  // Whole numbers in range (std::stoi read "3abc" as 3), best_top1 an accuracy or -1 (no epoch
  // scored yet), best_epoch one of the epochs done.
  epoch_ = int(checkpoint_metadata_int(md, "epoch", path, 0, 100000));
  step_ = checkpoint_metadata_int(md, "step", path, 0, int64_t(1) << 62);
  best_top1_ = checkpoint_metadata_number(md, "best_top1", path, -1.0, 1.0);
  best_epoch_ = int(checkpoint_metadata_int(md, "best_epoch", path, 0, epoch_));
  if (best_top1_ < 0 && best_top1_ != -1.0)
    throw Error("checkpoint '" + path + "': metadata 'best_top1' is " + checkpoint_metadata(md, "best_top1", path) +
                ", neither an accuracy in [0, 1] nor -1");
  history_ = history_from_json(checkpoint_metadata(md, "history", path), path);
  if (int(history_.size()) != epoch_)
    throw Error("checkpoint '" + path + "': trainer state is inconsistent (epoch " + std::to_string(epoch_) + ", " +
                std::to_string(history_.size()) + " history rows)");
  return note;
}

EvalResult Trainer::evaluate(const Dataset& data, const std::string& label, std::vector<int32_t>* predictions) {
  EvalResult r;
  const auto t0 = Clock::now();
  const ViTConfig& c = model_.config();
  // Sharded over the ranks: each global batch of bs · ranks images is cut into one contiguous
  // shard per rank (a shard of the last batch may be empty), the metrics reduced by take_metrics.
  const int bs = model_.max_batch();
  AugmentConfig resize;  // evaluation: resize to the model's size only
  resize.out_height = resize.out_width = c.img_size;
  AugmentLoader loader(data, bs * ranks(), /*shuffle=*/false, /*drop_last=*/false, 0, resize, o_.loader_threads);
  if (parallel()) loader.set_shard(o_.comm->rank(), ranks());
  loader.start_epoch(0);
  TrainStep stepper(model_, nullptr, step_options());
  stepper.take_metrics();  // from zero (a fit() in progress has read its own)
  ProgressBar bar(o_.progress && root(), label, loader.num_batches());
  StepMetrics m;
  // Predictions by dataset index (evaluation does not shuffle); the ranks' shards are summed.
  std::vector<int64_t> pred;
  if (predictions) pred.assign(size_t(data.size()), 0);
  const int64_t batches = loader.num_batches();
  for (int64_t done = 0; done < batches;) {
    const int n = loader.next(stepper.images(), stepper.labels());
    if (n > 0) stepper.run_eval(n, /*with_labels=*/true);
    if (predictions && n > 0) {
      const std::vector<int32_t> p = last_predictions(model_);
      const int64_t first = done * int64_t(bs) * ranks() + loader.shard_range(done).first;
      for (size_t i = 0; i < p.size(); ++i) pred[size_t(first) + i] = p[i];
    }
    if (++done % o_.log_interval == 0 || done == batches) m += stepper.take_metrics();
    const double seen = double(std::max<int64_t>(m.samples, 1));
    bar.update(done, m.loss_sum / seen, double(m.top1) / seen, m.samples);
  }
  bar.finish();
  if (predictions) {
    if (parallel()) o_.comm->all_reduce_host(pred.data(), int64_t(pred.size()), ReduceOp::Sum);
    predictions->assign(pred.begin(), pred.end());
  }
  r.count = m.samples;
  if (r.count > 0) {
    r.loss = m.loss_sum / double(r.count);
    r.top1 = double(m.top1) / double(r.count);
    r.top5 = double(m.top5) / double(r.count);
  }
  r.seconds = seconds_since(t0);
  return r;
}

void Trainer::fit(std::ostream& log) {
  const ViTConfig& c = model_.config();
  AugmentConfig aug = o_.augment;
  aug.out_height = aug.out_width = c.img_size;
  // Global batches of batch_size; this rank loads its shard of each. K = accum_steps of them make
  // one optimizer step (the epoch's last num_batches % K are left out, as drop_last leaves a
  // short batch).
  AugmentLoader loader(train_, o_.batch_size, /*shuffle=*/true, /*drop_last=*/true, o_.seed, aug, o_.loader_threads);
  if (parallel()) loader.set_shard(o_.comm->rank(), ranks());
  const int K = o_.accum_steps;
  const int64_t per_epoch = loader.num_batches() / K;
  if (per_epoch == 0)
    throw Error("training set '" + train_.name + "' has " + std::to_string(train_.size()) +
                " images, fewer than one step of " + std::to_string(K) + " x " + std::to_string(o_.batch_size));
  LrSchedule sched;
  sched.base_lr = o_.lr;
  sched.min_lr = std::min(o_.min_lr, o_.lr);
  sched.warmup_steps = int64_t(o_.warmup_epochs * per_epoch + 0.5);
  sched.total_steps = int64_t(o_.epochs) * per_epoch;
  sched.cosine = o_.cosine;
  if (o_.log_interval < 1) throw Error("log interval must be >= 1, got " + std::to_string(o_.log_interval));
  TrainStepOptions so = step_options_distill();  // evaluation (step_options) runs without the teacher
  so.smoothing = o_.smoothing;
  so.seed = o_.seed;
  so.accum_steps = K;
  TrainStep stepper(model_, &opt_, so);
  // Identical weights on every rank: rank 0's (after init, --initial-checkpoint or resume).
  if (parallel()) {
    o_.comm->broadcast(model_.master_arena(), 0);
    model_.sync_params_from_master();
  }
  // A resumed run first rewrites history.csv from the checkpoint: a kill between the
  // last.safetensors and history.csv writes leaves it an epoch behind, and resuming a finished
  // run trains no epoch that would rewrite it.
  if (epoch_ > 0) write_outputs(false, /*checkpoints=*/false);

  for (int this_call = 0; epoch_ < o_.epochs; ++this_call) {
    if (o_.stop_after_epochs > 0 && this_call >= o_.stop_after_epochs) break;
    const auto t0 = Clock::now();
    loader.start_epoch(epoch_);
    char label[64];
    std::snprintf(label, sizeof label, "epoch %d/%d", epoch_ + 1, o_.epochs);
    ProgressBar bar(o_.progress && root(), label, per_epoch);
    double lr = 0;
    StepMetrics epoch;  // what the device has reported so far this epoch (the global batches')
    int64_t batches = 0;
    for (; batches < per_epoch; ++step_) {
      lr = sched.at(step_);
      for (int micro = 0; micro < K; ++micro) {
        const int n = loader.next(stepper.images(), stepper.labels());
        stepper.run(n, lr, step_, micro);
      }
      ++batches;
      if (batches % o_.log_interval == 0 || batches == per_epoch) epoch += stepper.take_metrics();
      const int64_t seen = std::max<int64_t>(epoch.samples, 1);
      bar.update(batches, epoch.loss_sum / seen, double(epoch.top1) / seen, batches * int64_t(o_.batch_size) * K);
    }
    epoch += stepper.take_metrics();
    bar.finish();
    if (epoch.samples == 0)
      throw Error("training diverged: every step of epoch " + std::to_string(epoch_ + 1) +
                  " had a non-finite loss or gradient and was skipped (try a lower --lr or --clip-grad)");
    const int64_t seen = epoch.samples;
    const double train_seconds = seconds_since(t0);
    EpochRecord r;
    r.epoch = ++epoch_;
    r.train_loss = epoch.loss_sum / double(seen);
    r.train_top1 = double(epoch.top1) / double(seen);
    r.train_top5 = double(epoch.top5) / double(seen);
    r.lr = lr;
    r.images_per_second = seen / train_seconds;
    if (val_.size() > 0) {
      const EvalResult v = evaluate(val_, "  validate");
      r.val_loss = v.loss;
      r.val_top1 = v.top1;
      r.val_top5 = v.top5;
    }
    r.seconds = seconds_since(t0);
    history_.push_back(r);
    // Best by validation top-1; without a validation set, by training accuracy.
    const double score = val_.size() > 0 ? r.val_top1 : r.train_top1;
    const bool is_best = score > best_top1_;
    if (is_best) {
      best_top1_ = score;
      best_epoch_ = r.epoch;
      best_master_ = model_.get_master();  // for load_best_weights() after the last epoch
    }
    char line[320];
    std::snprintf(line, sizeof line,
                  "epoch %3d/%d  train loss %.4f top-1 %6.2f%%  val loss %.4f top-1 %6.2f%% top-5 %6.2f%%  lr %.2e  "
                  "%.0f img/s  %.1fs%s\n",
                  r.epoch, o_.epochs, r.train_loss, 100 * r.train_top1, r.val_loss, 100 * r.val_top1, 100 * r.val_top5,
                  r.lr, r.images_per_second, r.seconds, is_best ? "  *best" : "");
    if (root()) {
      log << line;
      if (epoch.skipped_steps > 0)
        log << "  " << epoch.skipped_steps << " of " << batches
            << " steps skipped: non-finite loss or gradients (no update, as AMP's scaler does)\n";
      log << std::flush;
    }
    write_outputs(is_best);
  }
}

bool Trainer::load_best_weights(std::string* why) {
  auto unavailable = [why](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (best_epoch_ <= 0) return unavailable("no epoch has been trained");
  if (!best_master_.empty()) {
    model_.set_master(best_master_);
    return true;
  }
  if (best_epoch_ == epoch_) return true;  // a resumed run whose best epoch is its last: the model holds it
  if (o_.output_dir.empty())
    return unavailable("epoch " + std::to_string(best_epoch_) +
                       " was trained before the resume and there is no output folder to read it from");
  const std::string path = o_.output_dir + "/best.safetensors";
  const std::vector<float> current = model_.get_master();
  try {
    const auto md = load_checkpoint(path, model_, nullptr);
    const std::string epoch = checkpoint_metadata(md, "epoch", path);
    if (epoch != std::to_string(best_epoch_))
      throw Error("'" + path + "' holds epoch " + epoch + ", not the best epoch " + std::to_string(best_epoch_));
  } catch (const std::exception& e) {
    model_.set_master(current);
    return unavailable(e.what());
  }
  best_master_ = model_.get_master();
  return true;
}

void Trainer::write_outputs(bool is_best, bool checkpoints) {
  if (o_.output_dir.empty()) return;
  // ZeRO-1: the moments are sharded; every rank sends its shard to every rank (a collective),
  // then rank 0 alone writes.
  if (checkpoints) opt_.gather_state();
  if (!root()) return;
  std::ostringstream csv;
  csv << "epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,seconds,images_per_second,train_top5\n";
  for (const EpochRecord& r : history_) {
    char line[256];
    std::snprintf(line, sizeof line, "%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6e,%.3f,%.1f,%.6f\n", r.epoch, r.train_loss,
                  r.train_top1, r.val_loss, r.val_top1, r.val_top5, r.lr, r.seconds, r.images_per_second, r.train_top5);
    csv << line;
  }
  const auto md = state_metadata();
  // Order matters for a kill at any point: best, then last, then history. A kill before last is
  // replaced means a resume re-runs this epoch (identically) and rewrites best, so best never
  // lags behind the best_epoch that last records; history never mentions an epoch last lacks.
  if (checkpoints) {
    if (is_best) save_checkpoint(o_.output_dir + "/best.safetensors", model_, &opt_, md);
    save_checkpoint(o_.output_dir + "/last.safetensors", model_, &opt_, md);
  }
  write_file_atomic(o_.output_dir + "/history.csv", csv.str());
}

}  // namespace vitcuda
