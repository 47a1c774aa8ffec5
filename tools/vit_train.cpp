// vit_train — train a ViT with timm-like flags. Example:
//   vit_train --model vit_fmnist --data-dir /usr/share/datasets/fashion-mnist --epochs 10 --output runs/fmnist
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_paths.h"
#include "vitcuda/augment.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/comm.h"
#include "vitcuda/trainer.h"
#include "vitcuda/report.h"
#include "vitcuda/step_trace.h"
#include "cli_checks.h"

using namespace vitcuda;
namespace cli = vitcuda::cli;
using L = vitcuda::ViTLimits;
using vitcuda::cli::kNonEmptyPath;

namespace {

void make_dirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
        throw Error("cannot create output directory '" + path + "': " + std::strerror(errno));
    }
    if (i < path.size()) cur += path[i];
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error("output path '" + path + "' is not a directory");
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The names of the folders from the root down to `path` (absolute; symbolic links, "." and ".."
// resolved where they exist).
std::vector<std::string> resolved(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  if (ec) p = std::filesystem::absolute(path, ec).lexically_normal();
  std::vector<std::string> names;
  for (const auto& part : p)
    if (!part.empty() && part != ".") names.push_back(part.string());
  return names;
}

// --output must not be the data folder or inside it: the run's files would mix with the
// dataset's (a folder dataset would even read its PNGs as images of a class), and removing
// the run folder would remove the data.
void check_output_outside_data(const std::string& output, const std::string& data_dir) {
  if (data_dir.empty()) return;
  const std::vector<std::string> out = resolved(output), data = resolved(data_dir);
  if (out.size() < data.size() || !std::equal(data.begin(), data.end(), out.begin())) return;
  throw Error("--output '" + output + "' is " +
              (out.size() == data.size() ? "the data folder" : "inside the data folder '" + data_dir + "'") +
              ": the run's files would mix with the dataset; give a folder outside it");
}

// An exclusive flock(2) on DIR/.vit_train.lock, held until the process ends: a second vit_train
// on the same folder is refused, naming the holder, instead of both writing into it. The kernel
// drops the lock however the process ends (a killed run never blocks the next one); the file
// stays, holding the pid and host of the last run that locked the folder. The descriptor is
// close-on-exec, so the plotting subprocess does not hold the lock.
void lock_output(const std::string& dir) {
  const std::string path = dir + "/.vit_train.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open lock file '" + path + "': " + std::strerror(errno));
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[512] = {};
    const ssize_t n = err == EWOULDBLOCK ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    close(fd);
    if (err != EWOULDBLOCK) throw Error("cannot lock '" + path + "': " + std::strerror(err));
    long long pid = 0;
    char holder_host[256] = {};
    const int got = n > 0 ? std::sscanf(buf, "%lld %255s", &pid, holder_host) : 0;
    std::string who = got >= 1 && pid > 0 ? "vit_train pid " + std::to_string(pid) : std::string("another vit_train");
    if (got == 2 && std::strcmp(holder_host, host) != 0) who += " on host " + std::string(holder_host);
    throw Error("output folder '" + dir + "' is in use by " + who + " (lock '" + path + "')");
  }
  const std::string me = std::to_string(getpid()) + " " + (host[0] ? host : "unknown") + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size()))
    throw Error("cannot write lock file '" + path + "': " + std::strerror(errno));
  // fd stays open: the lock lasts as long as the process.
}

// A script of tools/ next to this binary, else in the source tree; "" when neither exists.
std::string find_script(const std::string& name) {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    const std::string self(exe, size_t(n));
    const std::string path = self.substr(0, self.rfind('/')) + "/" + name;
    if (access(path.c_str(), R_OK) == 0) return path;
  }
#ifdef VITCUDA_TOOLS_DIR
  const std::string path = std::string(VITCUDA_TOOLS_DIR) + "/" + name;
  if (access(path.c_str(), R_OK) == 0) return path;
#endif
  return "";
}

// The matplotlib pictures of a finished run, drawn by the scripts of tools/: history.csv ->
// curves.png (plot_history.py) and confusion_matrix.csv -> confusion_matrix.png
// (plot_confusion.py, replacing the built-in colour grid written before it; `weights` says
// which weights made the matrix). The interpreter: $VITCUDA_PLOT_PYTHON when set ("none": no
// python, the built-in pictures stay), else python3 on the PATH, else /usr/bin/python3 (where
// Debian's python3-matplotlib goes), the first that has matplotlib. Returns the files drawn;
// what could not be drawn gets one line saying how to draw it.
std::vector<std::string> draw_plots(const std::string& output, const std::string& weights) {
  struct Plot {
    const char* script;
    std::string args, file;
  };
  const std::vector<Plot> plots = {{"plot_history.py", "", "curves.png"},
                                   {"plot_confusion.py", " --weights " + shell_quote(weights), "confusion_matrix.png"}};
  std::vector<std::string> candidates = {"python3", "/usr/bin/python3"};
  std::string no_python = "python3 with matplotlib not found";
  if (const char* env = std::getenv("VITCUDA_PLOT_PYTHON"); env && *env) {
    const std::string p = env;
    candidates = {p == "none" ? std::string() : p};
    no_python = "VITCUDA_PLOT_PYTHON=" + p + (p == "none" ? "" : " has no matplotlib");
  }
  std::string python;
  for (const std::string& p : candidates)
    if (!p.empty() && std::system((shell_quote(p) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) {
      python = p;
      break;
    }
  std::vector<std::string> drawn;
  for (const Plot& p : plots) {
    const std::string script = find_script(p.script);
    if (script.empty()) {
      std::printf("plots skipped: %s not found (it is in the source tree's tools/)\n", p.script);
      continue;
    }
    const std::string command = shell_quote(script) + " " + shell_quote(output) + p.args;
    if (python.empty()) {
      std::printf("plots skipped: %s (apt-get install python3-matplotlib, then python3 %s)\n", no_python.c_str(),
                  command.c_str());
      continue;
    }
    if (std::system((shell_quote(python) + " " + command + " >/dev/null").c_str()) != 0) {
      std::printf("plots skipped: %s failed (run it by hand: python3 %s)\n", p.script, command.c_str());
      continue;
    }
    drawn.push_back(p.file);
  }
  return drawn;
}

void print_test(const std::string& label, const EvalResult& t) {
  std::printf("test (%s): loss %.4f top-1 %.2f%% top-5 %.2f%% (%lld images, %.1fs)\n", label.c_str(), t.loss,
              100 * t.top1, 100 * t.top5, (long long)t.count, t.seconds);
}

nlohmann::ordered_json test_json(int epoch, const EvalResult& t) {
  nlohmann::ordered_json j;
  j["epoch"] = epoch;
  j["loss"] = t.loss;
  j["top1"] = t.top1;
  j["top5"] = t.top5;
  j["images"] = t.count;
  return j;
}

// The end of a run: the test set through the last weights and through the best ones (best
// validation top-1, training top-1 without a validation set; evaluated once when that is the
// last epoch), a labelled line for each, and in `output` (when given) results.json with both
// and the report files of the best weights. The model is left holding the best weights (the
// last ones when the best are not available).
void test_and_report(Trainer& trainer, Model& model, const Dataset& test, const std::string& output) {
  const int last_epoch = trainer.epochs_done(), best_epoch = trainer.best_epoch();
  std::vector<int32_t> predictions, best_predictions;
  const EvalResult last = trainer.evaluate(test, "test (last)", &predictions);
  EvalResult best = last;
  std::string why;
  bool have_best = best_epoch == last_epoch;
  if (!have_best && trainer.load_best_weights(&why)) {
    have_best = true;
    best = trainer.evaluate(test, "test (best)", &best_predictions);
    predictions.swap(best_predictions);
  }
  const std::string best_label = "best, epoch " + std::to_string(best_epoch);
  const std::string last_label = "last, epoch " + std::to_string(last_epoch);
  if (best_epoch == last_epoch) {
    print_test("best = last, epoch " + std::to_string(last_epoch), last);
  } else {
    if (have_best) print_test(best_label, best);
    print_test(last_label, last);
    if (!have_best)
      std::printf("test (best, epoch %d): not evaluated, its weights are not available: %s\n", best_epoch, why.c_str());
  }
  if (output.empty()) return;
  nlohmann::ordered_json j;
  // The top-level test_* keys are the best weights' (what the tutorials report), the last
  // weights' when the best are not available; test_weights says which.
  j["test_weights"] = have_best ? "best" : "last";
  j["test_loss"] = best.loss;
  j["test_top1"] = best.top1;
  j["test_top5"] = best.top5;
  if (have_best) j["test_best"] = test_json(best_epoch, best);
  j["test_last"] = test_json(last_epoch, last);
  j["best_epoch"] = best_epoch;
  j["best_val_top1"] = trainer.best_top1();
  j["epochs"] = last_epoch;
  write_file_atomic(output + "/results.json", j.dump(2) + "\n");
  const ViTConfig& cfg = model.config();
  const std::string weights =
      have_best ? (best_epoch == last_epoch ? "best = last, epoch " + std::to_string(best_epoch) : best_label)
                : last_label;
  std::string files;
  for (const std::string& f : write_test_report(output, model, resize_dataset(test, cfg.img_size, cfg.img_size),
                                                predictions, test.class_names))
    files += " " + f;
  for (const std::string& f : draw_plots(output, weights))
    if (files.find(" " + f) == std::string::npos) files += " " + f;
  std::printf("wrote to %s:%s (report of the %s weights)\n", output.c_str(), files.c_str(), weights.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vit_train: train a Vision Transformer (vitcuda)"};
  std::string model_name = default_preset(), dataset = "fashion_mnist", data_dir, sched = "cosine", output, resume,
              precision = "bf16", device = "auto";
  TrainOptions o;
  o.epochs = 10;
  o.batch_size = 128;
  o.lr = 2e-3f;
  o.warmup_epochs = 1;
  o.smoothing = 0.1f;
  float weight_decay = 0.05f, clip_grad = 0.f, val_split = 0.1f;
  float drop = -1, drop_path = -1;
  int patch_size = 0, num_heads = 0, embed_dim = 0, depth = 0, num_classes = 0, img_size = 0, pre_logits = 0;
  std::string global_pool, initial_checkpoint, gelu;
  bool summary = false, no_progress = false;
  // Distilled training (DeiT): the teacher's weights, its architecture for a file without
  // 'config' metadata, the loss's settings, and the student's distillation token.
  std::string distill_from, teacher_model, distill_kind = "hard";
  bool distilled = false;
  // Data parallelism (mpirun -np N vit_train ...).
  std::string comm_kind = "auto";
  int zero = 0;
  float bucket_mb = 25.f;
  bool no_overlap = false;
  // Data formats, augmentation and normalisation.
  DatasetSpec spec;
  std::string cifar100_labels = "fine", normalize;
  AugmentConfig aug;
  float zoom = 0.f;
  std::vector<float> rrc_scale, pixel_mean, pixel_std;
  app.add_option(
         "--model", model_name,
         "model preset (" +
             [] {
               std::string s;
               for (auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
               return s;
             }() +
             ")")
      ->capture_default_str();
  app.add_option("--dataset", dataset,
                 "fashion_mnist or mnist (IDX), cifar10 or cifar100 (binary version), csv (label,pixels...), "
                 "folder (data-dir/{train,test or val}/<class>/<image>)")
      ->check(CLI::IsMember({"fashion_mnist", "mnist", "cifar10", "cifar100", "csv", "folder"}))
      ->capture_default_str();
  app.add_option("--data-dir", data_dir,
                 "data folder (default for fashion_mnist: /usr/share/datasets/fashion-mnist); csv: holds "
                 "train.csv/test.csv (or mnist_train.csv/mnist_test.csv)")
      ->check(kNonEmptyPath);
  app.add_option("--train-csv", spec.train_csv, "csv: training file")->check(kNonEmptyPath);
  app.add_option("--test-csv", spec.test_csv, "csv: test file")->check(kNonEmptyPath);
  app.add_option("--cifar100-labels", cifar100_labels, "cifar100: fine (100 classes) or coarse (20)")
      ->check(CLI::IsMember({"fine", "coarse"}))
      ->capture_default_str();
  app.add_option("--hflip", aug.hflip, "probability of a random horizontal flip (vit_keras_cifar100: 0.5, else 0)")
      ->check(cli::real(0, 1));
  app.add_option("--rotation", aug.rotation,
                 "random rotation, fraction of a full turn: angle in [-F*2pi, F*2pi], reflect fill (Keras "
                 "RandomRotation; vit_keras_cifar100: 0.02, else 0)")
      ->check(cli::real(0, 1));
  app.add_option("--zoom", zoom,
                 "random zoom: height and width factors each in [1-F, 1+F], > 1 zooms out (Keras RandomZoom; "
                 "vit_keras_cifar100: 0.2, else 0)")
      ->check(cli::real(0, 1, false, true));
  app.add_flag("--rrc", aug.rrc, "random-resized-crop (timm/torchvision) to the model's size instead of a resize");
  app.add_option("--scale", rrc_scale, "random-resized-crop area range LO HI, 0 < LO <= HI <= 1 (default 0.08 1)")
      ->expected(2)
      ->check(cli::real(0, 1, true));
  app.add_option("--normalize", normalize,
                 "pixel mean/std: auto (computed on the training split, as Keras' adapted Normalization), preset "
                 "(the model preset's), none (0/1); default auto for vit_keras_cifar100, else preset")
      ->check(CLI::IsMember({"auto", "preset", "none"}));
  app.add_option("--mean", pixel_mean, "per-channel pixel mean in [0, 1] (overrides --normalize)")
      ->check(cli::real(0, 1));
  app.add_option("--std", pixel_std, "per-channel pixel std in [0.001, 1000] (overrides --normalize)")
      ->check(cli::real(1e-3, 1e3));
  app.add_option("--loader-threads", o.loader_threads, "threads preparing batches ahead of the step (0: none)")
      ->check(cli::integer(0, 64))
      ->capture_default_str();
  app.add_option("-b,--batch-size", o.batch_size, "batch size")->check(cli::integer(1, 65536))->capture_default_str();
  app.add_option("--epochs", o.epochs, "epochs")->check(cli::integer(1, 100000))->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->check(cli::real(0, 1e3, true))->capture_default_str();
  app.add_option("--min-lr", o.min_lr,
                 "final learning rate of the cosine schedule, at most --lr (default 1e-5, or --lr when lower)")
      ->check(cli::real(0, 1e3))
      ->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "AdamW decoupled weight decay")
      ->check(cli::real(0, 100))
      ->capture_default_str();
  app.add_option("--warmup-epochs", o.warmup_epochs, "linear warmup epochs, at most --epochs")
      ->check(cli::real(0, 100000))
      ->capture_default_str();
  app.add_option("--sched", sched, "cosine or constant")
      ->check(CLI::IsMember({"cosine", "constant"}))
      ->capture_default_str();
  app.add_option("--smoothing", o.smoothing, "label smoothing")
      ->check(cli::real(0, 1, false, true))
      ->capture_default_str();
  app.add_option("--drop", drop, "dropout rate (default: the preset's)")->check(cli::real(0, 1, false, true));
  app.add_option("--drop-path", drop_path, "stochastic depth rate (default: the preset's)")
      ->check(cli::real(0, 1, false, true));
  app.add_option("--clip-grad", clip_grad, "clip the global gradient norm (0: off)")
      ->check(cli::real(0, 1e6))
      ->capture_default_str();
  app.add_option("--val-split", val_split, "fraction of the training set held out for validation")
      ->check(cli::real(0, 0.9))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed for init, split, shuffling and dropout")
      ->check(cli::integer(0, ~0ull))
      ->capture_default_str();
  app.add_option("--output", output, "folder for config.json, history.csv, last/best checkpoints")
      ->check(kNonEmptyPath);
  app.add_option("--resume", resume, "continue from a last.safetensors checkpoint")->check(kNonEmptyPath);
  app.add_option("--precision", precision, "cuda: bf16 (bf16 activations, fp32 master weights) or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--patch-size", patch_size, "override the preset's patch size")->check(cli::integer(1, L::kImgSize));
  app.add_option("--img-size", img_size, "override the preset's image size (pos_embed of loaded weights is resized)")
      ->check(cli::integer(1, L::kImgSize));
  app.add_option("--num-classes", num_classes, "override the preset's number of classes")
      ->check(cli::integer(1, L::kNumClasses));
  app.add_option("--global-pool", global_pool, "token (cls) or avg (mean of patch tokens, then fc_norm)")
      ->check(CLI::IsMember({"token", "avg"}));
  app.add_option("--gelu", gelu,
                 "MLP activation: erf (exact, nn.GELU()) or tanh (nn.GELU(approximate='tanh'); fused into "
                 "the cuBLASLt epilogue on the GPU)")
      ->check(CLI::IsMember({"erf", "tanh"}));
  app.add_option("--pre-logits", pre_logits, "pre-logits size (Linear + tanh before the classifier; 0: none)")
      ->check(cli::integer(0, L::kHeadWidth));
  app.add_option("--initial-checkpoint", initial_checkpoint,
                 "start from these weights (vitcuda or timm safetensors; pos_embed resized to --img-size)")
      ->check(kNonEmptyPath);
  app.add_flag("--distilled", distilled,
               "give the model DeiT's distillation token (dist_token and a second head, head_dist; the "
               "logits are the mean of both heads'), as timm's distilled=True");
  app.add_option("--distill-from", distill_from,
                 "distilled training (DeiT) from this teacher: a vitcuda checkpoint, a vit_train output folder "
                 "(its best.safetensors) or a timm state_dict (with --teacher-model); it runs in inference mode "
                 "on each training batch")
      ->check(kNonEmptyPath);
  app.add_option("--teacher-model", teacher_model,
                 "the teacher's preset, for a --distill-from file without 'config' metadata (a timm state_dict)")
      ->check(CLI::IsMember(preset_names()));
  app.add_option("--distill", distill_kind,
                 "the distillation term on the distillation head (the model's head without --distilled): hard "
                 "(cross-entropy with the teacher's argmax) or soft (tau^2 KL of the softened distributions)")
      ->check(CLI::IsMember({"hard", "soft"}))
      ->capture_default_str();
  app.add_option("--distill-alpha", o.distill_alpha,
                 "weight of the distillation term: loss = (1-A) CE(cls head, label) + A term(dist head, teacher)")
      ->check(cli::real(0, 1))
      ->capture_default_str();
  app.add_option("--distill-tau", o.distill_tau, "soft distillation's temperature")
      ->check(cli::real(0, 1000, true))
      ->capture_default_str();
  app.add_option("--num-heads", num_heads, "override the preset's number of heads")
      ->check(cli::integer(1, L::kNumHeads));
  app.add_option("--embed-dim", embed_dim, "override the preset's embedding dim")->check(cli::integer(1, L::kEmbedDim));
  app.add_option("--depth", depth, "override the preset's depth")->check(cli::integer(1, L::kDepth));
  app.add_flag("--summary", summary, "print the parameter table and FLOPs per image, then exit");
  app.add_flag("--no-progress", no_progress, "no progress bar");
  bool no_graph = false;
  app.add_flag("--no-graph", no_graph,
               "cuda: run each training step op by op instead of replaying it from a CUDA Graph");
  app.add_option("--log-interval", o.log_interval,
                 "read the device's loss and accuracy for the progress bar every this many steps")
      ->check(cli::integer(1, 1000000))
      ->capture_default_str();
  app.add_option("--grad-accum-steps", o.accum_steps,
                 "micro-batches of -b images per optimizer step (effective batch -b x this), as timm's")
      ->check(cli::integer(1, 65536))
      ->capture_default_str();
  app.add_option("--comm", comm_kind,
                 "data parallelism across the ranks of mpirun/srun: auto (mpi under a launcher; nccl with "
                 "--device cuda where built in), single, mpi or nccl")
      ->check(CLI::IsMember({"auto", "single", "mpi", "nccl"}))
      ->capture_default_str();
  app.add_option("--zero", zero, "1: ZeRO-1, AdamW's moments sharded over the ranks (0: replicated)")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
  app.add_option("--bucket-mb", bucket_mb, "gradient all-reduce bucket size in MiB (overlapped with backward)")
      ->check(cli::real(0, 4096, true))
      ->capture_default_str();
  app.add_flag("--no-overlap", no_overlap, "all-reduce the gradients after the backward pass, in one call");
  app.add_option("--stop-after-epochs", o.stop_after_epochs,
                 "stop (checkpoints written, exit 0) after this many epochs of this invocation, as a "
                 "preempted job would; for testing --resume")
      ->check(cli::integer(0, 100000));
  // Relations between flags, given or default: refused, not clamped.
  app.callback([&] {
    if (!app.count("--min-lr")) o.min_lr = std::min(o.min_lr, o.lr);
    cli::require_at_most("--min-lr", o.min_lr, "--lr", o.lr);
    cli::require_at_most("--warmup-epochs", o.warmup_epochs, "--epochs", o.epochs);
    if (rrc_scale.size() == 2) cli::require_at_most("--scale LO", rrc_scale[0], "HI", rrc_scale[1]);
    if (!app.count("--distill-from"))
      for (const char* f : {"--distill", "--distill-alpha", "--distill-tau", "--teacher-model"})
        if (app.count(f)) throw CLI::ValidationError(f, "needs --distill-from TEACHER (the teacher's weights)");
  });
  // One line per error and exit status 1 (0 after --help), like every other error of vit_train.
  if (const int rc = cli::parse_flags(app, "vit_train", argc, argv); rc >= 0) return rc;

  // The ranks of a data-parallel job (one, without a launcher). A rank that fails alone prints
  // its error and ends the whole job (Communicator::abort), so no other rank waits for it.
  std::unique_ptr<Communicator> comm;
  try {
    if (comm_kind == "auto") {
      const bool gpu = device != "cpu" && cuda_device_available();
      const auto kinds = communicator_kinds();
      const bool nccl = std::find(kinds.begin(), kinds.end(), "nccl") != kinds.end();
      comm_kind = launcher_world_size() > 1 ? (gpu && nccl ? "nccl" : "mpi") : "single";
    }
    comm = make_communicator(comm_kind);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit_train: error: --comm %s: %s\n", comm_kind.c_str(), e.what());
    return 1;
  }
  const int ranks = comm->world_size(), rank = comm->rank();
  const bool root = comm->is_root();
  if (!root && !std::freopen("/dev/null", "w", stdout)) std::perror("vit_train: stdout");  // rank 0 reports

  try {
    // The same command line on every rank (the Trainer then checks the run record and the data).
    {
      std::string args;
      for (int i = 1; i < argc; ++i) args += std::string(argv[i]) + '\n';
      check_same_on_every_rank(*comm, args, [](const std::string& a, const std::string& b, int r) {
        // The first argument that differs, with the flag before it: "--lr 0.001" vs "--lr 0.002".
        auto split = [](const std::string& s) {
          std::vector<std::string> v;
          for (size_t at = 0, nl; (nl = s.find('\n', at)) != std::string::npos; at = nl + 1)
            v.push_back(s.substr(at, nl - at));
          return v;
        };
        const std::vector<std::string> x = split(a), y = split(b);
        size_t i = 0;
        while (i < x.size() && i < y.size() && x[i] == y[i]) ++i;
        auto show = [&](const std::vector<std::string>& v) {
          std::string flag = i > 0 && i - 1 < v.size() && v[i - 1].rfind('-', 0) == 0 ? v[i - 1] + " " : "";
          return "'" + flag + (i < v.size() ? v[i] : "<end of the command line>") + "'";
        };
        return "the ranks were started with different command lines: rank 0 has " + show(x) + ", rank " +
               std::to_string(r) + " has " + show(y) + " (every rank must run the same vit_train flags)";
      });
    }
    if (o.batch_size % ranks != 0)
      throw Error("-b " + std::to_string(o.batch_size) + " is the global batch and must divide over the " +
                  std::to_string(ranks) + " ranks (each rank takes -b / " + std::to_string(ranks) + " images)");
    ViTConfig cfg = preset(model_name);
    if (app.count("--patch-size")) cfg.patch_size = patch_size;
    if (app.count("--num-heads")) cfg.num_heads = num_heads;
    if (app.count("--embed-dim")) cfg.embed_dim = embed_dim;
    if (app.count("--depth")) cfg.depth = depth;
    if (app.count("--img-size")) cfg.img_size = img_size;
    if (app.count("--num-classes")) cfg.num_classes = num_classes;
    if (app.count("--pre-logits")) cfg.pre_logits = pre_logits;
    if (!gelu.empty()) cfg.gelu = gelu == "tanh" ? Gelu::Tanh : Gelu::Erf;
    if (global_pool == "token") {
      cfg.pool = Pool::Token;
      cfg.class_token = true;
    } else if (global_pool == "avg") {
      cfg.pool = Pool::Avg;
    }
    if (drop >= 0) cfg.drop_rate = drop;
    if (drop_path >= 0) cfg.drop_path_rate = drop_path;
    if (distilled) cfg.distilled = true;
    cfg.validate();
    // The teacher's architecture from its file's header alone, checked against the student's
    // before anything is loaded or allocated.
    std::string teacher_path;
    ViTConfig teacher_cfg;
    if (!distill_from.empty()) {
      teacher_path = cli::resolve_weights(distill_from, "--distill-from");
      try {
        teacher_cfg = weights_config(teacher_path, teacher_model, "", "--teacher-model");
      } catch (const Error& e) {
        throw Error(std::string("--distill-from: ") + e.what());
      }
      auto differ = [&](bool same, const std::string& teacher_has, const std::string& student_has) {
        if (!same)
          throw Error("--distill-from '" + teacher_path + "': the teacher " + teacher_has + ", the student " +
                      student_has + " (the teacher runs on the student's images and labels)");
      };
      const ViTConfig& t = teacher_cfg;
      const std::string ts = std::to_string(t.img_size), ss = std::to_string(cfg.img_size);
      differ(t.num_classes == cfg.num_classes, "has " + std::to_string(t.num_classes) + " classes",
             std::to_string(cfg.num_classes));
      differ(t.in_chans == cfg.in_chans, "takes " + std::to_string(t.in_chans) + "-channel images",
             std::to_string(cfg.in_chans) + "-channel");
      differ(t.img_size == cfg.img_size, "takes " + ts + "x" + ts + " images (--img-size)", ss + "x" + ss);
      o.distill = distill_kind == "soft" ? Distill::Soft : Distill::Hard;
    }
    o.cosine = sched == "cosine";
    o.progress = !no_progress;
    o.graph = !no_graph;
    AdamWConfig ac;
    ac.lr = o.lr;
    ac.weight_decay = weight_decay;
    ac.clip_grad = clip_grad;

    std::string note;
    // One GPU per local rank.
    if (device != "cpu" && cuda_device_available()) use_cuda_device(comm->local_rank());
    std::unique_ptr<Backend> backend = pick_backend(device, precision == "fp32" ? DType::F32 : DType::BF16, &note);
    if (!note.empty() && root) std::fprintf(stderr, "%s: %s\n", "vit_train", note.c_str());
    comm->bind(*backend);
    o.comm = comm.get();
    o.overlap = !no_overlap;
    o.bucket_bytes = std::max<int64_t>(1, int64_t(double(bucket_mb) * 1048576.0));
    const int local_batch = o.batch_size / ranks;
    if (summary) {
      Model model(cfg, *backend, o.batch_size);
      std::cout << model.summary();
      if (backend->device() == Device::CPU) {
        std::cout << "runtime per step: none counted (the cpu backend has no device runtime)\n";
      } else {
        // One traced step of each kind on synthetic data: what the runtime does per step.
        model.init(o.seed);
        AdamW opt(model, ac);
        const StepTrace train = trace_train_step(model, opt, o.batch_size, o.smoothing, o.lr);
        const StepTrace infer = trace_inference_step(model, o.batch_size);
        std::cout << "runtime per training step at batch " << o.batch_size << ": " << to_string(train.total) << "\n"
                  << "runtime per inference step at batch " << o.batch_size << ": " << to_string(infer.total) << "\n";
      }
      return 0;
    }
    // Fail fast on every input before the first step: data, output folder, checkpoint.
    spec.kind = dataset;
    spec.dir = data_dir;
    spec.cifar100_fine = cifar100_labels == "fine";
    spec.image_size = cfg.img_size;
    spec.channels = cfg.in_chans;
    Dataset train = load_dataset(spec, "train");
    Dataset test = load_dataset(spec, "test", &train);
    cli::check_dataset_channels(train, cfg);
    const std::string data = data_fingerprint({&train, &test});  // for the run record
    Dataset val = split_validation(train, val_split, o.seed);
    if (train.size() < o.batch_size)  // cheap, and before the Model allocates for the batch
      throw Error("training set '" + train.name + "' has " + std::to_string(train.size()) +
                  " images after the validation split, fewer than one batch of " + std::to_string(o.batch_size) +
                  " (-b)");
    // Augmentation: the Keras CIFAR-100 tutorial's set by default for its preset.
    const bool keras = model_name == "vit_keras_cifar100";
    if (keras && !app.count("--hflip")) aug.hflip = 0.5f;
    if (keras && !app.count("--rotation")) aug.rotation = 0.02f;
    if (keras && !app.count("--zoom")) zoom = 0.2f;
    aug.zoom_height = aug.zoom_width = zoom;
    if (rrc_scale.size() == 2) {
      aug.rrc_scale[0] = rrc_scale[0];
      aug.rrc_scale[1] = rrc_scale[1];
    }
    aug.validate();
    o.augment = aug;
    if (!train.class_names.empty())
      o.metadata["class_names"] = nlohmann::json(train.class_names).dump();  // for vit_infer
    // Normalisation: given, adapted on the training split, the preset's, or none.
    if (normalize.empty()) normalize = keras ? "auto" : "preset";
    if (!pixel_mean.empty() || !pixel_std.empty()) {
      if (int(pixel_mean.size()) != cfg.in_chans || int(pixel_std.size()) != cfg.in_chans)
        throw Error("--mean and --std need " + std::to_string(cfg.in_chans) + " values each (one per channel), got " +
                    std::to_string(pixel_mean.size()) + " and " + std::to_string(pixel_std.size()));
      normalize = "given";
      for (int ch = 0; ch < cfg.in_chans; ++ch) {
        cfg.pixel_mean[ch] = pixel_mean[ch];
        cfg.pixel_std[ch] = pixel_std[ch];
      }
    } else if (normalize == "auto") {
      normalize = "adapted";
      const ChannelStats st = channel_stats(train);
      for (int ch = 0; ch < cfg.in_chans; ++ch) {
        cfg.pixel_mean[ch] = st.mean[ch];
        cfg.pixel_std[ch] = st.std[ch];
      }
    } else if (normalize == "none") {
      for (int ch = 0; ch < cfg.in_chans; ++ch) {
        cfg.pixel_mean[ch] = 0.f;
        cfg.pixel_std[ch] = 1.f;
      }
    }
    cfg.validate();
    // Each rank's model is built for its share of the global batch; ZeRO-1 pads the arenas to
    // one equal shard per rank.
    Model model(cfg, *backend, local_batch, backend->compute_dtype(), zero ? int64_t(64) * ranks : 64);
    {
      std::string mean, sd;
      for (int ch = 0; ch < cfg.in_chans; ++ch) {
        char b[32];
        std::snprintf(b, sizeof b, "%s%.4f", ch ? ", " : "", cfg.pixel_mean[ch]);
        mean += b;
        std::snprintf(b, sizeof b, "%s%.4f", ch ? ", " : "", cfg.pixel_std[ch]);
        sd += b;
      }
      std::printf("data: %s, %d classes, %dx%dx%d images", train.name.c_str(), train.num_classes, train.width,
                  train.height, train.channels);
      if (train.height != cfg.img_size || train.width != cfg.img_size)
        std::printf(", resize %dx%d -> %dx%d", train.width, train.height, cfg.img_size, cfg.img_size);
      std::printf("; augment: %s; normalize %s mean [%s] std [%s]\n", aug.describe().c_str(), normalize.c_str(),
                  mean.c_str(), sd.c_str());
    }
    if (ranks > 1 || o.accum_steps > 1)
      std::printf("data parallel: %d rank%s (%s), global batch %d = %d x %d per rank%s%s\n", ranks,
                  ranks > 1 ? "s" : "", comm->name().c_str(), o.batch_size, ranks, local_batch,
                  o.accum_steps > 1 ? (", " + std::to_string(o.accum_steps) + " micro-batches per step: " +
                                       std::to_string(o.batch_size * o.accum_steps) + " images per step")
                                          .c_str()
                                    : "",
                  zero ? ", ZeRO-1" : "");
    if (!output.empty()) {
      check_output_outside_data(output, dataset_dir(spec));  // the default folder too
      if (root) {                                            // rank 0 alone writes into the folder
        make_dirs(output);
        lock_output(output);  // before anything is written into it
      }
      o.output_dir = output;
    }
    model.init(o.seed);
    if (!initial_checkpoint.empty()) {
      load_weights(initial_checkpoint, model);
      std::printf("initial weights from '%s'\n", initial_checkpoint.c_str());
    }
    AdamW opt(model, ac, comm.get(), zero == 1);
    // The teacher: on the same backend, for this rank's share of each batch, in inference mode.
    std::unique_ptr<Model> teacher;
    if (!teacher_path.empty()) {
      teacher = std::make_unique<Model>(teacher_cfg, *backend, local_batch, backend->compute_dtype(), 64,
                                        Model::Use::Inference);  // no gradients, one block's activations
      try {
        load_weights(teacher_path, *teacher);
      } catch (const Error& e) {
        throw Error(std::string("--distill-from: ") + e.what());
      }
      o.teacher = teacher.get();
      std::printf("distillation: %s from %s (teacher %s, %lld params), alpha %s, tau %s\n", distill_name(o.distill),
                  teacher_path.c_str(), teacher_cfg.name.c_str(), (long long)teacher->num_params(),
                  RunRecord::num(o.distill_alpha).c_str(), RunRecord::num(o.distill_tau).c_str());
    }
    // The run record: the Trainer's own plus what only vit_train sees (a resume compares them).
    o.run_flags.set("--dataset", dataset);
    if (dataset == "cifar100") o.run_flags.set("--cifar100-labels", cifar100_labels);
    o.run_flags.set("--val-split", RunRecord::num(val_split));
    o.run_flags.set("data", data);
    Trainer trainer(model, opt, train, val, o);
    if (!resume.empty()) {
      const std::string note = trainer.resume(resume);
      std::printf("resumed from '%s' after epoch %d\n", resume.c_str(), trainer.epochs_done());
      if (!note.empty()) std::printf("%s\n", note.c_str());
    }
    // After the resume check: a refused resume leaves the folder's config.json as it was.
    if (!output.empty() && root) write_file_atomic(output + "/config.json", cfg.to_json() + "\n");
    std::printf("vit_train: %s on %s (%s), %lld train / %lld val / %lld test images, %.2f M params, %.1f MFLOPs/img\n",
                cfg.name.c_str(), dataset.c_str(), backend->name().c_str(), (long long)train.size(),
                (long long)val.size(), (long long)test.size(), model.num_params() / 1e6,
                2 * model.macs_per_image() / 1e6);
    std::fflush(stdout);
    trainer.fit(std::cout);
    if (trainer.epochs_done() < o.epochs) {
      std::printf("stopped after epoch %d of %d (--stop-after-epochs); continue with --resume %s/last.safetensors\n",
                  trainer.epochs_done(), o.epochs, output.empty() ? "<output>" : output.c_str());
      return 0;
    }
    test_and_report(trainer, model, test, root ? output : std::string());
    return 0;
  } catch (const CollectiveError& e) {  // the same error on every rank: rank 0 says it, all exit
    if (root) std::fprintf(stderr, "vit_train: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    if (ranks == 1) {
      std::fprintf(stderr, "vit_train: error: %s\n", e.what());
      return 1;
    }
    std::fprintf(stderr, "vit_train: error (rank %d of %d): %s\n", rank, ranks, e.what());
    std::fflush(stderr);
    comm->abort(1);
  }
}
