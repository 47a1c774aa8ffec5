// End-to-end tests of the vit_train command line (the real binary, VIT_TRAIN_EXE) on tiny
// synthetic IDX datasets: every bad input fails fast with a non-zero exit, no crash, and exactly
// one "vit_train: error: ..." line on stderr naming the problem; a normal run writes its
// outputs; a run stopped (or SIGKILLed) and resumed equals an uninterrupted one; and a kill
// during a checkpoint write always leaves the old or the new checkpoint, complete, at the path.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/config.h"

extern char** environ;

namespace fs = std::filesystem;
using namespace vitcuda;

namespace {

#ifdef VIT_TRAIN_EXE
const char* const kVitTrain = VIT_TRAIN_EXE;
#else
const char* const kVitTrain = nullptr;
#endif

// ---- files ----------------------------------------------------------------------------------

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  const std::string s = read_text(p);
  return std::vector<uint8_t>(s.begin(), s.end());
}

void write_gz(const fs::path& p, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// An IDX u8 file: big-endian magic 0x000008<ndims>, the dims, the payload.
std::vector<uint8_t> idx_file(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
                              uint32_t magic = 0) {
  std::vector<uint8_t> b;
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
  };
  be32(magic ? magic : 0x00000800u | uint32_t(dims.size()));
  for (uint32_t d : dims) be32(d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// n images of side x side whose brightness depends on the label (so a few steps learn a
// little), plus the labels.
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> synthetic(int n, int side, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> images, labels;
  for (int i = 0; i < n; i++) {
    const int label = int(rng() % 10);
    labels.push_back(uint8_t(label));
    for (int k = 0; k < side * side; k++) images.push_back(uint8_t(label * 20 + rng() % 60));
  }
  return {images, labels};
}

// {train,t10k}-{images-idx3,labels-idx1}-ubyte: 256 training and 64 test 28x28 images.
void write_dataset(const fs::path& dir, int n_train = 256, int n_test = 64, int side = 28) {
  fs::create_directories(dir);
  for (auto [prefix, n, seed] : {std::tuple<const char*, int, uint32_t>{"train", n_train, 1}, {"t10k", n_test, 2}}) {
    const auto [images, labels] = synthetic(n, side, seed);
    write_bytes(dir / (std::string(prefix) + "-images-idx3-ubyte"),
                idx_file({uint32_t(n), uint32_t(side), uint32_t(side)}, images));
    write_bytes(dir / (std::string(prefix) + "-labels-idx1-ubyte"), idx_file({uint32_t(n)}, labels));
  }
}

// One scratch folder for the whole binary, removed at exit.
const fs::path& scratch_root() {
  static const fs::path root = [] {
    std::string tmpl = (fs::temp_directory_path() / "vitcuda_cli_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    return fs::path(tmpl);
  }();
  static const struct Remove {
    ~Remove() {
      std::error_code ec;
      fs::remove_all(root, ec);
    }
  } remove_at_exit;
  return root;
}

// The good dataset, written once.
const fs::path& data_dir() {
  static const fs::path dir = [] {
    fs::path d = scratch_root() / "data";
    write_dataset(d);
    return d;
  }();
  return dir;
}

// ---- running vit_train ------------------------------------------------------------------------

struct RunResult {
  bool signaled = false;
  int signal = 0;
  int exit_code = -1;
  std::string out, err;
  std::string describe() const {
    std::ostringstream s;
    if (signaled)
      s << "killed by signal " << signal << " (" << strsignal(signal) << ")";
    else
      s << "exit code " << exit_code;
    s << "\n--- stdout ---\n" << out << "--- stderr ---\n" << err << "---";
    return s.str();
  }
};

using Args = std::vector<std::string>;

// Starts vit_train with stdout and stderr going to files; one OpenMP thread (the machine is
// shared, and busy-waiting threads on a loaded machine make tiny runs slow).
pid_t spawn_vit_train(const Args& args, const fs::path& out, const fs::path& err) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0) env.push_back(*e);
  env.push_back("OMP_NUM_THREADS=1");
  std::vector<char*> envp, argv = {const_cast<char*>(kVitTrain)};
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, kVitTrain, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << kVitTrain << ": " << std::strerror(rc);
    return -1;
  }
  return pid;
}

RunResult wait_vit_train(pid_t pid, const fs::path& out, const fs::path& err) {
  RunResult r;
  int status = 0;
  if (pid > 0) {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.signaled = WIFSIGNALED(status);
    r.signal = r.signaled ? WTERMSIG(status) : 0;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

RunResult run_vit_train(const Args& args, const fs::path& log_dir) {
  static int counter = 0;
  const std::string tag = "run" + std::to_string(++counter);
  const fs::path out = log_dir / (tag + ".stdout"), err = log_dir / (tag + ".stderr");
  return wait_vit_train(spawn_vit_train(args, out, err), out, err);
}

// Command-line flags as (flag, value) pairs; an empty value is a bare flag.
using Flags = std::vector<std::pair<std::string, std::string>>;

Flags tiny_flags() {
  return {{"--data-dir", data_dir().string()},
          {"--depth", "1"},
          {"--embed-dim", "16"},
          {"--num-heads", "2"},
          {"--epochs", "2"},
          {"-b", "32"},
          {"--val-split", "0.25"},
          {"--device", "cpu"},
          {"--no-progress", ""}};
}

// `base` with each flag of `overrides` replacing the same flag, or appended; a flag set to
// "<drop>" is removed.
Args with(Flags base, const Flags& overrides = {}) {
  for (const auto& [flag, value] : overrides) {
    bool found = false;
    for (auto& kv : base)
      if (kv.first == flag) {
        kv.second = value;
        found = true;
      }
    if (!found) base.push_back({flag, value});
  }
  Args a;
  for (const auto& [flag, value] : base) {
    if (value == "<drop>") continue;
    a.push_back(flag);
    if (!value.empty()) a.push_back(value);
  }
  return a;
}

std::vector<std::string> nonempty_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  return lines;
}

// A clean failure: exited (no signal) with a non-zero code below the shell's 128+signal range,
// and exactly one stderr line, "vit_train: error: ...", containing each of `needles`.
::testing::AssertionResult CleanError(const RunResult& r, const std::vector<std::string>& needles) {
  if (r.signaled) return ::testing::AssertionFailure() << "crashed: " << r.describe();
  if (r.exit_code <= 0 || r.exit_code >= 128)
    return ::testing::AssertionFailure() << "expected a failing exit code in 1..127: " << r.describe();
  const auto lines = nonempty_lines(r.err);
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << "expected exactly one stderr line, got " << lines.size() << ": "
                                         << r.describe();
  if (lines[0].rfind("vit_train: error: ", 0) != 0)
    return ::testing::AssertionFailure() << "stderr line does not start with 'vit_train: error: ': " << r.describe();
  for (const auto& n : needles)
    if (lines[0].find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "stderr line does not mention '" << n << "': " << r.describe();
  return ::testing::AssertionSuccess();
}

// history.csv as rows of text cells.
std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& line : nonempty_lines(read_text(p))) {
    std::vector<std::string> cells;
    std::istringstream in(line);
    for (std::string c; std::getline(in, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

// Every column but the timings (seconds, images_per_second) must match as text.
void expect_same_history(const fs::path& a, const fs::path& b) {
  const auto ha = read_csv(a), hb = read_csv(b);
  ASSERT_EQ(ha.size(), hb.size()) << read_text(a) << "\nvs\n" << read_text(b);
  ASSERT_FALSE(ha.empty());
  const auto& header = ha[0];
  for (size_t i = 0; i < ha.size(); i++) {
    ASSERT_EQ(ha[i].size(), header.size()) << "row " << i << " of " << a;
    ASSERT_EQ(hb[i].size(), header.size()) << "row " << i << " of " << b;
    for (size_t c = 0; c < header.size(); c++) {
      if (i > 0 && (header[c] == "seconds" || header[c] == "images_per_second")) continue;
      EXPECT_EQ(ha[i][c], hb[i][c]) << "history row " << i << " column " << header[c];
    }
  }
}

// Same tensors, bit for bit, and the same trainer state.
void expect_same_checkpoint(const fs::path& a, const fs::path& b) {
  const SafeTensorsFile fa = load_safetensors(a.string()), fb = load_safetensors(b.string());
  ASSERT_EQ(fa.tensors.size(), fb.tensors.size());
  for (const auto& [name, ta] : fa.tensors) {
    auto it = fb.tensors.find(name);
    ASSERT_NE(it, fb.tensors.end()) << name << " missing from " << b;
    EXPECT_EQ(ta.dtype, it->second.dtype) << name;
    EXPECT_EQ(ta.shape, it->second.shape) << name;
    EXPECT_TRUE(ta.bytes == it->second.bytes) << "tensor " << name << " differs between " << a << " and " << b;
  }
  for (const char* key : {"epoch", "step", "best_top1", "best_epoch", "seed", "config", "optimizer.steps"}) {
    ASSERT_TRUE(fa.metadata.count(key)) << key;
    EXPECT_EQ(fa.metadata.at(key), fb.metadata.count(key) ? fb.metadata.at(key) : "<none>") << key;
  }
}

void expect_same_results(const fs::path& a, const fs::path& b) {
  const auto ja = nlohmann::json::parse(read_text(a)), jb = nlohmann::json::parse(read_text(b));
  EXPECT_EQ(ja, jb) << ja.dump() << " vs " << jb.dump();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kVitTrain) GTEST_SKIP() << "built without the vit_train target";
    ASSERT_TRUE(fs::exists(kVitTrain)) << kVitTrain;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = scratch_root() / (std::string(info->test_suite_name()) + "." + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  RunResult run(const Args& args) { return run_vit_train(args, dir_); }
  // A copy of the good dataset to break.
  fs::path data_copy() {
    const fs::path d = dir_ / "data";
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(data_dir())) fs::copy_file(e.path(), d / e.path().filename());
    return d;
  }
  // A one-epoch training checkpoint of the tiny config (embed dim 16, depth 1), made once.
  static fs::path good_checkpoint() {
    static const fs::path ckpt = [] {
      const fs::path out = scratch_root() / "good_checkpoint";
      fs::create_directories(out);
      const RunResult r = run_vit_train(with(tiny_flags(), {{"--epochs", "1"}, {"--output", out.string()}}), out);
      EXPECT_EQ(r.exit_code, 0) << r.describe();
      return out / "last.safetensors";
    }();
    return ckpt;
  }
  fs::path dir_;
};

using CliErrors = CliTest;
using CliRun = CliTest;

// ---- missing and malformed data ------------------------------------------------------------------

TEST_F(CliErrors, MissingDataDir) {
  const fs::path missing = dir_ / "no_such_dir";
  const RunResult r = run(with(tiny_flags(), {{"--data-dir", missing.string()}}));
  EXPECT_TRUE(CleanError(r, {missing.string(), "train-images-idx3-ubyte"}));
}

TEST_F(CliErrors, MissingIdxFile) {
  const fs::path d = data_copy();
  fs::remove(d / "t10k-labels-idx1-ubyte");
  const RunResult r = run(with(tiny_flags(), {{"--data-dir", d.string()}, {"--output", (dir_ / "out").string()}}));
  EXPECT_TRUE(CleanError(r, {"missing", "t10k-labels-idx1-ubyte"}));
  // Fails before training: no epoch ran.
  EXPECT_EQ(r.out.find("epoch"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "last.safetensors"));
}

TEST_F(CliErrors, TruncatedIdxFile) {
  const fs::path d = data_copy();
  const fs::path f = d / "train-images-idx3-ubyte";
  fs::resize_file(f, fs::file_size(f) - 1000);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {f.string(), "truncated"}));
  // Shorter than the header too.
  fs::resize_file(f, 10);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {f.string(), "truncated"}));
}

TEST_F(CliErrors, TruncatedGzipIdxFile) {
  const fs::path d = data_copy();
  const fs::path raw = d / "train-images-idx3-ubyte", gz = d / "train-images-idx3-ubyte.gz";
  write_gz(gz, read_bytes(raw));
  fs::remove(raw);
  // The gzip copy alone is fine...
  EXPECT_EQ(run(with(tiny_flags(), {{"--epochs", "1"}, {"--data-dir", d.string()}})).exit_code, 0);
  // ...cut in half it is not.
  fs::resize_file(gz, fs::file_size(gz) / 2);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {gz.string(), "truncated"}));
}

TEST_F(CliErrors, BadMagicNumber) {
  const fs::path d = data_copy();
  const fs::path f = d / "train-labels-idx1-ubyte";
  std::vector<uint8_t> b = read_bytes(f);
  b[3] = 0x03;  // 0x00000803: an image file's magic in the labels file
  write_bytes(f, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {f.string(), "magic"}));
}

TEST_F(CliErrors, GzipGarbage) {
  const fs::path d = data_copy();
  fs::remove(d / "train-images-idx3-ubyte");
  const fs::path gz = d / "train-images-idx3-ubyte.gz";
  std::vector<uint8_t> b = {0x1f, 0x8b};  // gzip magic, then noise
  std::mt19937 rng(7);
  for (int i = 0; i < 4096; i++) b.push_back(uint8_t(rng()));
  write_bytes(gz, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {gz.string(), "gzip"}));
}

TEST_F(CliErrors, ImageAndLabelCountsDisagree) {
  const fs::path d = data_copy();
  const auto [images, labels] = synthetic(63, 28, 3);
  write_bytes(d / "t10k-labels-idx1-ubyte", idx_file({63}, labels));  // 64 images, 63 labels
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})),
                         {"disagree", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}));
}

TEST_F(CliErrors, LabelOutOfRange) {
  const fs::path d = data_copy();
  const fs::path f = d / "train-labels-idx1-ubyte";
  std::vector<uint8_t> b = read_bytes(f);
  b[8 + 17] = 10;  // 10 classes: labels 0..9
  write_bytes(f, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", d.string()}})), {f.string(), "label 10"}));
}

TEST_F(CliErrors, FewerImagesThanOneBatch) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"-b", "256"}})), {"192 images", "256"}));
}

// ---- bad flags --------------------------------------------------------------------------------------

TEST_F(CliErrors, UnknownModel) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--model", "vit_nonexistent"}})),
                         {"unknown model 'vit_nonexistent'", "vit_fmnist"}));
}

TEST_F(CliErrors, UnknownGelu) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--gelu", "relu"}})), {"--gelu", "relu"}));
}

TEST_F(CliRun, GeluFlagSelectsTheActivation) {
  const std::string no_data = (dir_ / "no_data").string();
  const RunResult erf = run(with(tiny_flags(), {{"--summary", ""}, {"--data-dir", no_data}}));
  const RunResult tanh = run(with(tiny_flags(), {{"--summary", ""}, {"--data-dir", no_data}, {"--gelu", "tanh"}}));
  ASSERT_EQ(erf.exit_code, 0) << erf.describe();
  ASSERT_EQ(tanh.exit_code, 0) << tanh.describe();
  EXPECT_NE(erf.out.find("(gelu erf)"), std::string::npos) << erf.out;
  EXPECT_NE(tanh.out.find("(gelu tanh)"), std::string::npos) << tanh.out;
}

TEST_F(CliErrors, UnknownFlag) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--bogus-flag", "1"}})), {"--bogus-flag"}));
}

TEST_F(CliErrors, BatchSizeZero) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"-b", "<drop>"}, {"--batch-size", "0"}})), {"--batch-size", "0"}));
}

TEST_F(CliErrors, NegativeLearningRate) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--lr", "-0.001"}})), {"--lr", "-0.001", "positive"}));
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--lr", "fast"}})), {"--lr", "fast"}));
}

TEST_F(CliErrors, PatchSizeDoesNotDivideTheImage) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--patch-size", "5"}})), {"patch_size", "5", "28"}));
}

TEST_F(CliErrors, HeadsDoNotDivideTheEmbeddingDim) {
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--num-heads", "5"}})), {"num_heads", "5", "16"}));
}

TEST_F(CliErrors, UnwritableOutput) {
  const fs::path file = dir_ / "file.txt";
  write_bytes(file, {'x'});
  const fs::path out = file / "out";  // its parent is a regular file: root cannot create it either
  const RunResult r = run(with(tiny_flags(), {{"--output", out.string()}}));
  EXPECT_TRUE(CleanError(r, {out.string()}));
  EXPECT_EQ(r.out.find("epoch"), std::string::npos) << "failed only after training:\n" << r.out;
}

TEST_F(CliErrors, DeviceCudaWithoutAGpu) {
  if (cuda_device_available()) GTEST_SKIP() << "this machine has a usable CUDA GPU";
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--device", "cuda"}})), {"--device cuda", "GPU"}));
}

// ---- bad checkpoints for --resume ------------------------------------------------------------------

TEST_F(CliErrors, ResumeMissingCheckpoint) {
  const fs::path p = dir_ / "nothing.safetensors";
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string()}));
}

TEST_F(CliErrors, ResumeTruncatedCheckpoint) {
  const fs::path good = good_checkpoint();
  ASSERT_TRUE(fs::exists(good));
  const fs::path p = dir_ / "truncated.safetensors";
  for (uintmax_t size :
       {fs::file_size(good) - 1, fs::file_size(good) / 2, uintmax_t(100), uintmax_t(5), uintmax_t(0)}) {
    fs::copy_file(good, p, fs::copy_options::overwrite_existing);
    fs::resize_file(p, size);
    EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string()})) << size << " bytes";
  }
}

TEST_F(CliErrors, ResumeGarbageCheckpoint) {
  const fs::path p = dir_ / "garbage.safetensors";
  std::mt19937 rng(11);
  std::vector<uint8_t> b;
  for (int i = 0; i < 8192; i++) b.push_back(uint8_t(rng()));
  write_bytes(p, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string()}));
  // A plausible header length followed by noise: invalid JSON.
  b[0] = 64;
  for (int i = 1; i < 8; i++) b[i] = 0;
  write_bytes(p, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string(), "JSON"}));
}

TEST_F(CliErrors, ResumeCheckpointWithALyingHeaderLength) {
  const fs::path good = good_checkpoint();
  ASSERT_TRUE(fs::exists(good));
  const std::vector<uint8_t> bytes = read_bytes(good);
  uint64_t real = 0;
  for (int i = 0; i < 8; i++) real |= uint64_t(bytes[i]) << (8 * i);
  const fs::path p = dir_ / "lying.safetensors";
  for (uint64_t len : {uint64_t(1) << 62, uint64_t(bytes.size()), real + 8, real - 8, uint64_t(0)}) {
    std::vector<uint8_t> b = bytes;
    for (int i = 0; i < 8; i++) b[i] = uint8_t(len >> (8 * i));
    write_bytes(p, b);
    EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string()})) << "length " << len;
  }
}

TEST_F(CliErrors, ResumeCheckpointOfADifferentModel) {
  const fs::path good = good_checkpoint();
  ASSERT_TRUE(fs::exists(good));
  // Embedding dim 32 instead of 16: same tensor names, other shapes.
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--embed-dim", "32"}, {"--resume", good.string()}})),
                         {good.string(), "shape", "[16"}));
  // Depth 2 instead of 1: tensors of the second block are missing.
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--depth", "2"}, {"--resume", good.string()}})),
                         {good.string(), "blocks.1."}));
}

TEST_F(CliErrors, ResumeCheckpointWithoutTrainerState) {
  const fs::path good = good_checkpoint();
  ASSERT_TRUE(fs::exists(good));
  SafeTensorsFile f = load_safetensors(good.string());
  f.metadata.erase("epoch");
  const fs::path p = dir_ / "no_epoch.safetensors";
  save_safetensors(p.string(), f);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--resume", p.string()}})), {p.string(), "epoch"}));
}

// ---- runs that work -----------------------------------------------------------------------------------

TEST_F(CliRun, NormalRunWritesAllOutputs) {
  const fs::path out = dir_ / "out";
  const RunResult r = run(with(tiny_flags(), {{"--output", out.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.err, "") << "nothing on stderr with --no-progress";
  EXPECT_NE(r.out.find("epoch   1/2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("epoch   2/2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ntest: loss "), std::string::npos) << r.out;

  for (const char* f : {"config.json", "history.csv", "last.safetensors", "best.safetensors", "results.json"})
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  const ViTConfig cfg = ViTConfig::from_json(read_text(out / "config.json"));
  EXPECT_EQ(cfg.embed_dim, 16);
  EXPECT_EQ(cfg.depth, 1);
  EXPECT_EQ(cfg.num_heads, 2);

  const auto csv = read_csv(out / "history.csv");
  ASSERT_EQ(csv.size(), 3u) << read_text(out / "history.csv");
  const std::vector<std::string> columns = {"epoch",    "train_loss", "train_top1", "val_loss",         "val_top1",
                                            "val_top5", "lr",         "seconds",    "images_per_second"};
  ASSERT_GE(csv[0].size(), columns.size());
  EXPECT_EQ(std::vector<std::string>(csv[0].begin(), csv[0].begin() + columns.size()), columns);
  EXPECT_EQ(csv[1][0], "1");
  EXPECT_EQ(csv[2][0], "2");

  const auto results = nlohmann::json::parse(read_text(out / "results.json"));
  EXPECT_EQ(results.at("epochs").get<int>(), 2);
  for (const char* k : {"test_loss", "test_top1", "test_top5", "best_val_top1"}) EXPECT_TRUE(results.contains(k)) << k;
  const double top1 = results.at("test_top1").get<double>();
  EXPECT_TRUE(top1 >= 0 && top1 <= 1) << top1;

  const SafeTensorsFile last = load_safetensors((out / "last.safetensors").string());
  EXPECT_EQ(last.metadata.at("epoch"), "2");
  EXPECT_EQ(last.metadata.at("format"), "vitcuda");
  EXPECT_TRUE(last.tensors.count("head.weight"));
  EXPECT_TRUE(last.tensors.count("optimizer.exp_avg.head.weight"));
  EXPECT_NO_THROW(load_safetensors((out / "best.safetensors").string()));
}

TEST_F(CliRun, SummaryPrintsTheParameterTable) {
  // --summary needs no data.
  const RunResult r = run(with(tiny_flags(), {{"--summary", ""}, {"--data-dir", (dir_ / "no_data").string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.find("epoch"), std::string::npos) << "--summary must not train";
  int64_t sum = 0, total = -1;
  int rows = 0;
  for (const auto& line : nonempty_lines(r.out)) {
    std::istringstream in(line);
    std::string name, shape_start;
    in >> name;
    if (line.rfind("total parameters: ", 0) == 0) total = std::stoll(line.substr(18));
    if (name.find('.') == std::string::npos && name != "cls_token" && name != "pos_embed") continue;
    // A parameter row: name, [shape...], count, decay.
    std::vector<std::string> cells;
    for (std::string c; in >> c;) cells.push_back(c);
    ASSERT_GE(cells.size(), 2u) << line;
    sum += std::stoll(cells[cells.size() - 2]);
    ++rows;
  }
  EXPECT_NE(r.out.find("patch_embed.proj.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blocks.0.attn.qkv.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("head.weight"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("blocks.1."), std::string::npos) << "depth 1 has one block";
  EXPECT_GT(rows, 10);
  EXPECT_EQ(sum, total) << r.out;
}

// ---- resumption ---------------------------------------------------------------------------------------

// The flags of the resumption tests: 4 epochs, dropout and stochastic depth on, so the RNG
// streams of a resumed run must line up with an uninterrupted one too.
Flags resume_flags(const fs::path& out) {
  Flags f = tiny_flags();
  for (auto& kv : f)
    if (kv.first == "--epochs") kv.second = "4";
  f.push_back({"--drop", "0.1"});
  f.push_back({"--drop-path", "0.1"});
  f.push_back({"--output", out.string()});
  return f;
}

// The uninterrupted run, made once and shared by the resumption tests.
struct Reference {
  fs::path dir;
  RunResult result;
  double seconds = 0;  // wall time of the run
};
const Reference& reference_run() {
  static const Reference ref = [] {
    Reference r;
    r.dir = scratch_root() / "reference";
    fs::create_directories(r.dir);
    const auto t0 = std::chrono::steady_clock::now();
    r.result = run_vit_train(with(resume_flags(r.dir)), r.dir);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }();
  return ref;
}

void expect_same_run(const fs::path& ref, const fs::path& out) {
  expect_same_history(ref / "history.csv", out / "history.csv");
  expect_same_checkpoint(ref / "last.safetensors", out / "last.safetensors");
  expect_same_checkpoint(ref / "best.safetensors", out / "best.safetensors");
  expect_same_results(ref / "results.json", out / "results.json");
}

TEST_F(CliRun, ResumeEqualsUninterrupted) {
  const Reference& ref = reference_run();
  ASSERT_EQ(ref.result.exit_code, 0) << ref.result.describe();
  ASSERT_EQ(read_csv(ref.dir / "history.csv").size(), 5u);

  // Epoch 1, "preempted"; epochs 2-3, preempted again; then the rest.
  const fs::path out = dir_ / "resumed", last = out / "last.safetensors";
  RunResult r = run(with(resume_flags(out), {{"--stop-after-epochs", "1"}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("stopped after epoch 1 of 4"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("test:"), std::string::npos) << "a stopped run does not evaluate on the test set";
  EXPECT_FALSE(fs::exists(out / "results.json"));
  EXPECT_EQ(read_csv(out / "history.csv").size(), 2u);
  EXPECT_EQ(load_safetensors(last.string()).metadata.at("epoch"), "1");

  r = run(with(resume_flags(out), {{"--stop-after-epochs", "2"}, {"--resume", last.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("resumed from '" + last.string() + "' after epoch 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped after epoch 3 of 4"), std::string::npos) << r.out;
  EXPECT_EQ(read_csv(out / "history.csv").size(), 4u);

  r = run(with(resume_flags(out), {{"--resume", last.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("after epoch 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("epoch   4/4"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("epoch   3/4"), std::string::npos) << "epoch 3 was done already:\n" << r.out;
  EXPECT_NE(r.out.find("\ntest: loss "), std::string::npos) << r.out;
  expect_same_run(ref.dir, out);

  // Resuming a finished run trains nothing and gives the same results again.
  r = run(with(resume_flags(out), {{"--resume", last.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out.find("epoch   4/4"), std::string::npos) << r.out;
  expect_same_run(ref.dir, out);
}

// A kill between the last.safetensors and history.csv writes of the final epoch leaves
// history.csv one row short; resuming the finished run must repair it.
TEST_F(CliRun, ResumeRewritesAStaleHistory) {
  const Reference& ref = reference_run();
  ASSERT_EQ(ref.result.exit_code, 0) << ref.result.describe();
  const fs::path out = dir_ / "stale";
  fs::create_directories(out);
  for (const char* f : {"config.json", "last.safetensors", "best.safetensors"}) fs::copy_file(ref.dir / f, out / f);
  std::string history = read_text(ref.dir / "history.csv");
  history.erase(history.rfind('\n', history.size() - 2) + 1);  // drop the epoch-4 row
  std::ofstream(out / "history.csv") << history;
  ASSERT_EQ(read_csv(out / "history.csv").size(), 4u);

  const RunResult r = run(with(resume_flags(out), {{"--resume", (out / "last.safetensors").string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out.find("epoch   4/4"), std::string::npos) << "nothing left to train:\n" << r.out;
  expect_same_run(ref.dir, out);
}

// A checkpoint write that fails mid-training (here best.safetensors, blocked by a directory of
// that name) is one clean error, and last.safetensors never records a best epoch whose
// best.safetensors was not written: best is saved before last, so a failure or a kill between
// the two cannot leave best behind.
TEST_F(CliRun, FailedBestWriteDoesNotAdvanceLast) {
  const fs::path out = dir_ / "out";
  fs::create_directories(out / "best.safetensors" / "blocker");
  const RunResult r = run(with(tiny_flags(), {{"--output", out.string()}}));
  EXPECT_TRUE(CleanError(r, {(out / "best.safetensors").string()}));
  if (fs::exists(out / "last.safetensors")) {
    const auto md = load_safetensors((out / "last.safetensors").string()).metadata;
    EXPECT_EQ(md.at("best_epoch"), "0") << "last.safetensors says epoch " << md.at("best_epoch")
                                        << " is best, but best.safetensors was never written";
  }
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "temporary left behind: " << e.path();
}

// A job SIGKILLed at random moments (mid-epoch, mid-checkpoint, mid-evaluation) and restarted
// with --resume from whatever last.safetensors it left each time ends exactly like one
// uninterrupted run.
TEST_F(CliRun, RandomlyKilledRunResumesToTheSameResult) {
  const Reference& ref = reference_run();
  ASSERT_EQ(ref.result.exit_code, 0) << ref.result.describe();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("kill timing seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  // Kill times spread over one run's duration, so most kills land while it works.
  const int64_t span_us = std::max<int64_t>(int64_t(ref.seconds * 1e6), 1000);
  const fs::path out = dir_ / "killed", last = out / "last.safetensors";
  const int kKillAttempts = 8;
  int kills = 0, resumed_runs = 0;
  bool finished = false;
  for (int attempt = 0; attempt < 40 && !finished; attempt++) {
    Flags f = resume_flags(out);
    int epochs_done = 0;
    if (fs::exists(last)) {
      // Whatever the kill interrupted, the checkpoint at the path is complete.
      SafeTensorsFile ckpt;
      ASSERT_NO_THROW(ckpt = load_safetensors(last.string())) << "after kill " << kills;
      epochs_done = std::stoi(ckpt.metadata.at("epoch"));
      f.push_back({"--resume", last.string()});
      ++resumed_runs;
    }
    const fs::path o = dir_ / ("attempt" + std::to_string(attempt) + ".stdout"),
                   e = dir_ / ("attempt" + std::to_string(attempt) + ".stderr");
    const pid_t pid = spawn_vit_train(with(f), o, e);
    ASSERT_GT(pid, 0);
    const bool try_kill = attempt < kKillAttempts;
    if (try_kill) {
      // Over the part of a run that is left (4 epochs, plus about one for start and test).
      const int64_t left_us = span_us * (4 - epochs_done + 1) / 5;
      std::this_thread::sleep_for(std::chrono::microseconds(int64_t(rng() % uint64_t(left_us))));
      ::kill(pid, SIGKILL);
    }
    const RunResult r = wait_vit_train(pid, o, e);
    if (r.signaled) {
      ASSERT_EQ(r.signal, SIGKILL) << r.describe();
      ++kills;
      continue;
    }
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    finished = !try_kill;  // a run that beat its kill is resumed (as a finished run) again
  }
  ASSERT_TRUE(finished);
  EXPECT_GT(kills, 0) << "no run was killed before it finished";
  std::printf("[ killed %d times, resumed %d times ]\n", kills, resumed_runs);
  expect_same_run(ref.dir, out);
}

// ---- a kill during a checkpoint write ------------------------------------------------------------------

SafeTensorsFile big_checkpoint(float value, const std::string& version) {
  SafeTensorsFile f;
  for (const char* name : {"blocks.0.weight", "blocks.1.weight"}) {
    SafeTensor t;
    t.dtype = DType::F32;
    t.shape = {512, 1024};
    std::vector<float> v(512 * 1024);
    for (size_t i = 0; i < v.size(); i++) v[i] = value + float(i % 1000);
    t.bytes.resize(v.size() * sizeof(float));
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    f.tensors[name] = std::move(t);
  }
  f.metadata["version"] = version;
  return f;
}

// A child process rewrites a 4 MiB checkpoint over and over, alternating two contents, and is
// SIGKILLed at random moments: each time the path holds one of the two contents, complete.
TEST(CliCheckpoint, KillDuringSaveLeavesTheOldOrTheNewFile) {
  const fs::path dir = scratch_root() / "kill_during_save";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path path = dir / "last.safetensors";
  const SafeTensorsFile a = big_checkpoint(1.f, "a"), b = big_checkpoint(-1.f, "b");
  const auto t0 = std::chrono::steady_clock::now();
  save_safetensors(path.string(), a);
  const auto save_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();

  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("kill timing seed " + std::to_string(seed) + ", one save takes " + std::to_string(save_us) + " us");
  std::mt19937 rng(seed);
  int mid_write = 0;
  const int kRounds = 20;
  for (int round = 0; round < kRounds; round++) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0) << std::strerror(errno);
    if (pid == 0) {  // the writer, until killed; never back into gtest
      try {
        for (int i = round;; i++) save_safetensors(path.string(), i % 2 ? a : b);
      } catch (...) {
      }
      ::_exit(1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (3 * save_us + 1000)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer died on its own: " << status;

    SafeTensorsFile got;
    ASSERT_NO_THROW(got = load_safetensors(path.string())) << "round " << round;
    ASSERT_TRUE(got.metadata.count("version"));
    const SafeTensorsFile& want = got.metadata["version"] == "a" ? a : b;
    ASSERT_EQ(got.metadata, want.metadata);
    ASSERT_EQ(got.tensors.size(), want.tensors.size());
    for (const auto& [name, t] : want.tensors) {
      ASSERT_TRUE(got.tensors.count(name)) << name;
      ASSERT_TRUE(got.tensors.at(name).bytes == t.bytes) << "round " << round << ": tensor " << name << " is mixed";
    }
    // The killed writer's temporary file, if the kill hit mid-write; never at the path itself.
    const fs::path tmp = path.string() + ".tmp." + std::to_string(pid);
    if (fs::exists(tmp)) {
      ++mid_write;
      fs::remove(tmp);
    }
    for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path(), path) << "unexpected file";
  }
  // Most kills land while the file is being written; the test is only meaningful if some did.
  EXPECT_GT(mid_write, 0) << "no kill landed mid-write in " << kRounds << " rounds";
  std::printf("[ %d of %d kills landed mid-write; one save takes %lld us ]\n", mid_write, kRounds, (long long)save_us);
}

}  // namespace
