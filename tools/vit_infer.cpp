// vit_infer — run a trained ViT: top-k classes of image files, or accuracy and throughput on
// a dataset split. Examples:
//   vit_infer -c runs/vit_fmnist shoe.png bag.jpg --topk 3
//   vit_infer -c runs/vit_fmnist/best.safetensors images/ --attention-map attention.png
//   vit_infer -c runs/vit_fmnist --dataset fashion_mnist --split test
//   vit_infer -c runs/cifar --dataset cifar10 --data-dir data/cifar-10-batches-bin
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_paths.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/data.h"
#include "vitcuda/train_step.h"
#include "vitcuda/trainer.h"
#include "vitcuda/image.h"
#include "vitcuda/inspect.h"
#include "vitcuda/pictures.h"
#include "cli_checks.h"

using namespace vitcuda;
namespace cli = vitcuda::cli;
using vitcuda::cli::kNonEmptyPath;

namespace {

using Clock = std::chrono::steady_clock;

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A vit_train output folder means its best checkpoint (else its last one).
// The __metadata__ of a safetensors file, from its header alone (the weights are read by
// load_weights): the library's reader, with its limits and checks.
std::map<std::string, std::string> read_metadata(const std::string& path) {
  return read_safetensors_header(path).metadata;
}

bool image_extension(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : {"png", "jpg", "jpeg", "bmp", "gif", "tga", "ppm", "pgm", "pnm", "psd", "hdr"})
    if (ext == e) return true;
  return false;
}

// Files as given; folders expand to their image files (sorted by name, not recursive).
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    if (!is_dir(in)) {
      files.push_back(in);  // unreadable files are reported when they are decoded
      continue;
    }
    DIR* d = opendir(in.c_str());
    if (!d) throw Error("cannot read folder '" + in + "': " + std::strerror(errno));
    std::vector<std::string> found;
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.empty() || name[0] == '.' || !image_extension(name)) continue;
      if (is_file(in + "/" + name)) found.push_back(in + "/" + name);
    }
    closedir(d);
    if (found.empty()) throw Error("folder '" + in + "' holds no image files (png, jpg, bmp, gif, tga, ppm, pgm)");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

// Progress on stderr: redrawn in place on a terminal, a line per quarter elsewhere.
class Progress {
 public:
  Progress(bool enabled, int64_t total) : enabled_(enabled), tty_(isatty(2)), total_(total), t0_(Clock::now()) {}
  void update(int64_t done, int64_t images, double top1) {
    if (!enabled_ || total_ <= 0) return;
    const double el = std::chrono::duration<double>(Clock::now() - t0_).count();
    if (tty_) {
      if (done < total_ && el - last_ < 0.1) return;
    } else {
      const int64_t q = 4 * done / total_;
      if (q == last_q_) return;
      last_q_ = q;
    }
    last_ = el;
    const int width = 24, fill = int(width * done / total_);
    std::fprintf(stderr, "%sinfer [%s%s] %lld/%lld top-1 %5.2f%% %.0f img/s%s", tty_ ? "\r" : "",
                 std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), (long long)done,
                 (long long)total_, 100 * top1, images / std::max(el, 1e-9), tty_ ? "\x1b[K" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_ && tty_) std::fprintf(stderr, "\r\x1b[K");
  }

 private:
  bool enabled_, tty_;
  int64_t total_;
  Clock::time_point t0_;
  double last_ = -1;
  int64_t last_q_ = 0;
};

std::string label_of(const std::vector<std::string>& names, int k) {
  if (k < int(names.size()) && names[k] != std::to_string(k)) return names[k] + " (" + std::to_string(k) + ")";
  return "class " + std::to_string(k);
}

void write_attention(const std::string& out, const Model& model, const uint8_t* chw) {
  const ViTConfig& c = model.config();
  const std::vector<float> map = attention_rollout(model, 0);
  write_png(out, attention_overlay(chw, c.in_chans, c.img_size, c.img_size, map, c.grid()));
  std::printf("attention rollout of the first image written to '%s'\n", out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vit_infer: classify images with a trained Vision Transformer (vitcuda)"};
  std::string checkpoint, dataset, data_dir, split = "test", precision = "bf16", device = "auto", attention_map,
                                             model_name, cifar100_labels = "fine";
  DatasetSpec spec;
  std::vector<std::string> inputs;
  std::string save_logits, export_weights, global_pool;
  int topk = 5, batch = 64;
  bool no_progress = false;
  app.add_option("-c,--checkpoint", checkpoint,
                 "a vit_train output folder (its best.safetensors) or a .safetensors file")
      ->required()
      ->check(kNonEmptyPath);
  app.add_option("inputs", inputs, "image files (PNG, JPEG, BMP, ...) or folders of images")->check(kNonEmptyPath);
  app.add_option("--dataset", dataset,
                 "evaluate a dataset split: fashion_mnist, mnist, cifar10, cifar100, csv, folder (as vit_train)")
      ->check(CLI::IsMember({"fashion_mnist", "mnist", "cifar10", "cifar100", "csv", "folder"}));
  app.add_option("--data-dir", data_dir,
                 "folder of the dataset (default for fashion_mnist: /usr/share/datasets/fashion-mnist)")
      ->check(kNonEmptyPath);
  app.add_option("--train-csv", spec.train_csv, "csv: training file (for --split train)")->check(kNonEmptyPath);
  app.add_option("--test-csv", spec.test_csv, "csv: test file")->check(kNonEmptyPath);
  app.add_option("--cifar100-labels", cifar100_labels, "cifar100: fine (100 classes) or coarse (20)")
      ->check(CLI::IsMember({"fine", "coarse"}))
      ->capture_default_str();
  app.add_option("--split", split, "train or test")->check(CLI::IsMember({"train", "test"}))->capture_default_str();
  app.add_option("--topk", topk, "classes printed per image")->check(cli::integer(1, 1000))->capture_default_str();
  app.add_option("-b,--batch-size", batch, "batch size")->check(cli::integer(1, 65536))->capture_default_str();
  app.add_option("--precision", precision, "cuda: bf16 (bf16 activations, fp32 master weights) or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--attention-map", attention_map, "write the attention rollout of the first image to this PNG")
      ->check(kNonEmptyPath);
  app.add_option("--model", model_name, "model preset, for a checkpoint without 'config' metadata");
  app.add_option("--global-pool", global_pool, "token or avg: pooling of a --model preset (timm's global_pool)")
      ->check(CLI::IsMember({"token", "avg"}));
  app.add_option("--save-logits", save_logits,
                 "write the logits of the image inputs as raw little-endian f32 [N, classes]")
      ->check(kNonEmptyPath);
  app.add_option("--export-weights", export_weights, "write the loaded weights as a vitcuda/timm safetensors file")
      ->check(kNonEmptyPath);
  app.add_flag("--no-progress", no_progress, "no progress bar");
  bool no_graph = false;
  app.add_flag("--no-graph", no_graph, "cuda: run each evaluation step op by op instead of replaying a CUDA Graph");
  // One line per error and exit status 1 (0 after --help), as the README promises.
  if (const int rc = cli::parse_flags(app, "vit_infer", argc, argv); rc >= 0) return rc;

  try {
    if (inputs.empty() && dataset.empty())
      throw Error("nothing to classify: give image files or folders, or --dataset (see --help)");
    const std::string path = cli::resolve_weights(checkpoint, "checkpoint");
    const auto md = read_metadata(path);
    const ViTConfig cfg = weights_config(path, model_name, global_pool, "--model");
    std::vector<std::string> names;
    if (md.count("class_names")) {
      try {
        names = nlohmann::json::parse(md.at("class_names")).get<std::vector<std::string>>();
      } catch (const std::exception&) {
        names.clear();  // optional: fall back to class indices
      }
      if (int(names.size()) != cfg.num_classes) names.clear();
    }
    if (!attention_map.empty() && !png_supported())
      throw Error("--attention-map: this build has no PNG support (install libstb-dev and rebuild)");
    std::string note;
    std::unique_ptr<Backend> backend = pick_backend(device, precision == "fp32" ? DType::F32 : DType::BF16, &note);
    if (!note.empty()) std::fprintf(stderr, "%s: %s\n", "vit_infer", note.c_str());
    // The inputs before the model: a batch larger than everything there is to classify is
    // clamped to it (-b 65536 on 100 images allocates for 100).
    const std::vector<std::string> files = inputs.empty() ? std::vector<std::string>() : expand_inputs(inputs);
    Dataset data;
    if (!dataset.empty()) {
      spec.kind = dataset;
      spec.dir = data_dir;
      spec.cifar100_fine = cifar100_labels == "fine";
      spec.image_size = cfg.img_size;
      spec.channels = cfg.in_chans;
      data = load_dataset(spec, split);
      cli::check_dataset_channels(data, cfg);  // the rule of vit_train: no silent conversion
      if (data.num_classes > cfg.num_classes)
        throw Error("dataset '" + data.name + "' has " + std::to_string(data.num_classes) +
                    " classes but the model has " + std::to_string(cfg.num_classes) + " outputs");
    }
    batch = int(std::max<int64_t>(1, std::min<int64_t>(batch, std::max<int64_t>(int64_t(files.size()), data.size()))));
    // Inference: no gradients, the blocks sharing one set of activation buffers; the attention
    // map reads every block's attention, which only a Model built for training keeps.
    Model model(cfg, *backend, batch, backend->compute_dtype(), 64,
                attention_map.empty() ? Model::Use::Inference : Model::Use::Training);
    load_weights(path, model);  // vitcuda checkpoints and timm state_dicts (f32/f16/bf16)
    if (!export_weights.empty())
      save_weights(export_weights, model, {{"class_names", md.count("class_names") ? md.at("class_names") : "[]"}});
    std::vector<float> all_logits;
    const int64_t img_bytes = int64_t(cfg.in_chans) * cfg.img_size * cfg.img_size;
    std::vector<uint8_t> images(size_t(batch) * img_bytes);
    bool attention_done = attention_map.empty();

    // ---- image files: top-k per image ----
    if (!inputs.empty()) {
      const int k = std::min(topk, cfg.num_classes);
      for (size_t start = 0; start < files.size(); start += size_t(batch)) {
        const int n = int(std::min(files.size() - start, size_t(batch)));
        for (int i = 0; i < n; ++i) {
          const std::vector<uint8_t> chw = model_input(load_image(files[start + i]), cfg);
          std::copy(chw.begin(), chw.end(), images.begin() + i * img_bytes);
        }
        model.forward(Tensor::view(images.data(), {n, cfg.in_chans, cfg.img_size, cfg.img_size}, DType::U8), false);
        const std::vector<float> prob = last_probabilities(model);
        if (!save_logits.empty()) {
          const std::vector<float> lg = last_logits(model);
          all_logits.insert(all_logits.end(), lg.begin(), lg.end());
        }
        for (int i = 0; i < n; ++i) {
          const float* p = prob.data() + size_t(i) * cfg.num_classes;
          std::vector<int> order(cfg.num_classes);
          for (int c = 0; c < cfg.num_classes; ++c) order[c] = c;
          std::partial_sort(order.begin(), order.begin() + k, order.end(),
                            [p](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
          std::string line = files[start + i] + ":";
          for (int j = 0; j < k; ++j) {
            char buf[48];
            std::snprintf(buf, sizeof buf, " %.2f%%", 100.0 * p[order[j]]);
            line += (j ? "," : "") + std::string(" ") + label_of(names, order[j]) + buf;
          }
          std::printf("%s\n", line.c_str());
        }
        if (!attention_done) {
          write_attention(attention_map, model, images.data());
          attention_done = true;
        }
      }
    }

    if (!save_logits.empty()) {
      std::string bytes(reinterpret_cast<const char*>(all_logits.data()), all_logits.size() * sizeof(float));
      write_file_atomic(save_logits, bytes);
    }

    // ---- a dataset split: accuracy and throughput ----
    if (!dataset.empty()) {
      const bool same = data.channels == cfg.in_chans && data.height == cfg.img_size && data.width == cfg.img_size;
      BatchLoader loader(data, batch, /*shuffle=*/false, /*drop_last=*/false, 0);
      loader.start_epoch(0);
      std::vector<uint8_t> raw(size_t(batch) * data.image_bytes());
      // Each batch is an evaluation step enqueued from pinned staging (a CUDA Graph per batch
      // size on the GPU, unless --no-graph); the device accumulates the hits, read at the end.
      TrainStepOptions so;
      so.graph = !no_graph;
      TrainStep stepper(model, nullptr, so);
      Progress bar(!no_progress, loader.num_batches());
      int64_t count = 0, done = 0;
      StepMetrics m;
      const auto t0 = Clock::now();
      for (int n; (n = loader.next(raw.data(), stepper.labels())) > 0;) {
        uint8_t* staged = stepper.images();
        if (same) {
          std::copy(raw.begin(), raw.begin() + size_t(n) * img_bytes, staged);
        } else {  // another size: resized like an image file
          for (int i = 0; i < n; ++i) {
            const std::vector<uint8_t> chw = model_input(
                image_from_chw(raw.data() + i * data.image_bytes(), data.channels, data.height, data.width), cfg);
            std::copy(chw.begin(), chw.end(), staged + i * img_bytes);
          }
        }
        if (!attention_done) std::copy(staged, staged + img_bytes, images.begin());
        stepper.run_eval(n, /*with_labels=*/true);
        if (!attention_done) {
          write_attention(attention_map, model, images.data());
          attention_done = true;
        }
        count += n;
        if (++done % 20 == 0) m += stepper.take_metrics();  // the progress bar's accuracy, every 20 batches
        bar.update(done, count, double(m.top1) / double(std::max<int64_t>(count, 1)));
      }
      m += stepper.take_metrics();  // waits for the last step
      const int64_t top1 = m.top1, top5 = m.top5;
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      bar.finish();
      if (count == 0) throw Error("dataset '" + data.name + "' is empty");
      std::printf("%s %s: top-1 %.2f%% top-5 %.2f%% (%lld images, %.0f img/s on %s)\n", dataset.c_str(), split.c_str(),
                  100.0 * top1 / count, 100.0 * top5 / count, (long long)count, count / std::max(seconds, 1e-9),
                  backend->name().c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit_infer: error: %s\n", e.what());
    return 1;
  }
}
