// End-to-end tests of vit_infer (and of vit_train's report files): a 1-epoch tiny vit_train
// run on a generated IDX dataset makes the checkpoint; vit_infer then classifies PNG files
// and folders, evaluates a split, writes an attention map, and fails cleanly on bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "vitcuda/data.h"
#include "vitcuda/image.h"

namespace fs = std::filesystem;
using namespace vitcuda;

#if defined(VIT_TRAIN_EXE) && defined(VIT_INFER_EXE)

namespace {

struct ProcResult {
  int rc = -1;
  std::string out, err;
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

ProcResult run(const std::string& exe, const std::string& args, const fs::path& dir) {
  const fs::path o = dir / "stdout.txt", e = dir / "stderr.txt";
  const std::string cmd = quote(exe) + " " + args + " > " + quote(o.string()) + " 2> " + quote(e.string());
  const int status = std::system(cmd.c_str());
  ProcResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(o);
  r.err = read_text(e);
  return r;
}

// python3 on the PATH, else Debian's /usr/bin/python3, when it has matplotlib; "" otherwise.
std::string matplotlib_python() {
  for (const char* p : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(p) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) return p;
  return "";
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void be32(std::ofstream& f, uint32_t v) {
  const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  f.write(b, 4);
}

// n 28x28 images whose class (0..9) is the row of a bright horizontal bar, plus noise.
void write_idx(const fs::path& dir, const std::string& prefix, int n, uint32_t seed) {
  std::ofstream im(dir / (prefix + "-images-idx3-ubyte"), std::ios::binary),
      lb(dir / (prefix + "-labels-idx1-ubyte"), std::ios::binary);
  be32(im, 0x803);
  be32(im, n);
  be32(im, 28);
  be32(im, 28);
  be32(lb, 0x801);
  be32(lb, n);
  uint32_t s = seed;
  for (int i = 0; i < n; ++i) {
    const int label = i % 10;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        s = s * 1664525u + 1013904223u;
        const int bar = (y / 2 == label + 2) ? 200 : 0;
        im.put(char(std::min(255, bar + int(s >> 27))));
      }
    lb.put(char(label));
  }
}

class InferTest : public ::testing::Test {
 protected:
  static fs::path dir_;
  static ProcResult train_;

  // One tiny training run for the whole suite.
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("vitcuda_infer_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    write_idx(dir_ / "data", "train", 400, 1);
    write_idx(dir_ / "data", "t10k", 100, 2);
    train_ = run(VIT_TRAIN_EXE,
                 "--dataset mnist --data-dir " + quote((dir_ / "data").string()) +
                     " --depth 1 --embed-dim 16 --num-heads 2 -b 32 --epochs 1 --lr 3e-3 --warmup-epochs 0"
                     " --device cpu --no-progress --output " +
                     quote((dir_ / "run").string()),
                 dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override { ASSERT_EQ(train_.rc, 0) << train_.out << train_.err; }

  ProcResult infer(const std::string& args) { return run(VIT_INFER_EXE, args, dir_); }
  std::string ckpt() const { return quote((dir_ / "run").string()); }

  // A PNG of test image i (grey, 28x28) and an RGB 40x30 version of it (resized by vit_infer).
  std::string png_of_image(int i, bool rgb) {
    Dataset d = load_mnist_dir((dir_ / "data").string(), "test");
    Image img = image_from_chw(d.image(i), 1, 28, 28);
    if (rgb) img = resize_bilinear(convert_channels(img, 3), 40, 30);
    const fs::path p = dir_ / ("img" + std::to_string(i) + (rgb ? "_rgb" : "") + ".png");
    write_png(p.string(), img);
    return p.string();
  }
};
fs::path InferTest::dir_;
ProcResult InferTest::train_;

}  // namespace

TEST_F(InferTest, TrainWritesReportFiles) {
  const fs::path run_dir = dir_ / "run";
  for (const char* f : {"confusion_matrix.csv", "per_class_accuracy.csv", "history.csv", "results.json"})
    EXPECT_TRUE(fs::exists(run_dir / f)) << f;
  const std::string cm = read_text(run_dir / "confusion_matrix.csv");
  EXPECT_EQ(count_lines(cm), 11);  // header + 10 classes
  // The counts add up to the 100 test images, 10 per class.
  const std::string pc = read_text(run_dir / "per_class_accuracy.csv");
  EXPECT_EQ(pc.rfind("class,name,support,correct,accuracy\n", 0), 0u) << pc;
  EXPECT_NE(pc.find("\n0,0,10,"), std::string::npos) << pc;
  EXPECT_EQ(
      read_text(run_dir / "history.csv")
          .rfind("epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,seconds,images_per_second,train_top5\n", 0),
      0u);
  if (png_supported()) {
    for (const char* f : {"confusion_matrix.png", "patches.png", "attention.png"}) {
      ASSERT_TRUE(fs::exists(run_dir / f)) << f;
      EXPECT_GT(load_image((run_dir / f).string()).width, 0) << f;
    }
  }
  if (!matplotlib_python().empty())
    EXPECT_TRUE(fs::exists(run_dir / "curves.png")) << train_.out;
  else
    EXPECT_NE(train_.out.find("plots skipped"), std::string::npos) << train_.out;
}

TEST_F(InferTest, TopKForFilesAndFolders) {
  if (!png_supported()) GTEST_SKIP() << "built without stb (libstb-dev)";
  const std::string a = png_of_image(0, false), b = png_of_image(1, true);
  ProcResult r = infer("-c " + ckpt() + " " + quote(a) + " " + quote(b) + " --topk 3 --no-progress");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 2) << r.out;
  const std::regex line(
      R"(^.*img\d(_rgb)?\.png:( (class \d|\w+ \(\d\)) \d+\.\d\d%,){2} (class \d|\w+ \(\d\)) \d+\.\d\d%$)");
  size_t start = 0;
  for (int i = 0; i < 2; ++i) {
    const size_t end = r.out.find('\n', start);
    EXPECT_TRUE(std::regex_match(r.out.substr(start, end - start), line)) << r.out;
    start = end + 1;
  }
  // A folder: its image files, sorted.
  const fs::path folder = dir_ / "folder";
  fs::create_directories(folder);
  fs::copy_file(a, folder / "b.png", fs::copy_options::overwrite_existing);
  fs::copy_file(b, folder / "a.png", fs::copy_options::overwrite_existing);
  std::ofstream(folder / "notes.txt") << "not an image";
  const fs::path att = dir_ / "att.png";
  r = infer("-c " + quote((dir_ / "run" / "last.safetensors").string()) + " " + quote(folder.string()) +
            " --topk 1 --attention-map " + quote(att.string()));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 3) << r.out;  // 2 images + the attention line
  EXPECT_LT(r.out.find("a.png:"), r.out.find("b.png:")) << r.out;
  const Image m = load_image(att.string());
  EXPECT_EQ(m.height, 2 * 4 + 28 * 9);  // 28 px upscaled 9x, 4 px margins
  EXPECT_EQ(m.width, 4 * 4 + 3 * 28 * 9);
}

TEST_F(InferTest, DatasetAccuracyMatchesTraining) {
  const ProcResult r =
      infer("-c " + ckpt() + " --dataset mnist --data-dir " + quote((dir_ / "data").string()) + " --split test -b 16");
  ASSERT_EQ(r.rc, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      r.out, m, std::regex(R"(mnist test: top-1 (\d+\.\d\d)% top-5 (\d+\.\d\d)% \(100 images, \d+ img/s on cpu\))")))
      << r.out;
  // The run has one epoch, so best == last == the model vit_train tested.
  const auto res = nlohmann::json::parse(read_text(dir_ / "run" / "results.json"));
  char want[16];
  std::snprintf(want, sizeof want, "%.2f", 100 * res["test_top1"].get<double>());
  EXPECT_EQ(m[1].str(), want);
  EXPECT_NE(r.err.find("infer ["), std::string::npos) << r.err;  // progress bar
}

TEST_F(InferTest, BadInputGetsOneErrorLine) {
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const ProcResult r = infer(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("vit_infer: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "args: " << args << "\nstderr: " << r.err;
  };
  const std::string img = png_supported() ? png_of_image(2, false) : std::string("x.png");
  // checkpoints: missing, garbage, truncated, without config
  expect_error("-c " + quote((dir_ / "nope.safetensors").string()) + " " + quote(img), "does not exist");
  std::ofstream(dir_ / "garbage.safetensors") << "definitely not safetensors";
  expect_error("-c " + quote((dir_ / "garbage.safetensors").string()) + " " + quote(img), "not a safetensors file");
  {
    const std::string full = read_text(dir_ / "run" / "last.safetensors");
    std::ofstream(dir_ / "trunc.safetensors", std::ios::binary) << full.substr(0, full.size() / 2);
  }
  expect_error("-c " + quote((dir_ / "trunc.safetensors").string()) + " " + quote(img), "trunc.safetensors");
  fs::create_directories(dir_ / "empty_run");
  expect_error("-c " + quote((dir_ / "empty_run").string()) + " " + quote(img), "neither best.safetensors");
  // images: missing, undecodable; an empty folder
  expect_error("-c " + ckpt() + " " + quote((dir_ / "missing.png").string()), "cannot read image");
  std::ofstream(dir_ / "fake.png") << "no pixels here";
  expect_error("-c " + ckpt() + " " + quote((dir_ / "fake.png").string()),
               png_supported() ? "cannot decode image" : "built without stb");
  fs::create_directories(dir_ / "no_images");
  expect_error("-c " + ckpt() + " " + quote((dir_ / "no_images").string()), "holds no image files");
  // flags
  expect_error("-c " + ckpt() + " " + quote(img) + " --topk 0", "--topk");
  expect_error("-c " + ckpt() + " " + quote(img) + " --bogus", "bogus");
  expect_error(quote(img), "--checkpoint");
  expect_error("-c " + ckpt(), "nothing to classify");
  expect_error("-c " + ckpt() + " --dataset mnist --data-dir " + quote((dir_ / "nodata").string()), "nodata");
}

#endif  // VIT_TRAIN_EXE && VIT_INFER_EXE
