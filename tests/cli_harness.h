// vitcuda tests — running the command-line tools (vit_train, vit_infer) as a user would: tiny
// synthetic IDX datasets, a scratch folder per test, spawning the real binaries with their output
// captured, and the checks every bad-input test makes (one "<tool>: error:" line, exit 1..127).
// Shared by test_cli.cpp and the other end-to-end suites.
#pragma once
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

namespace vitcuda::cli_test {

namespace fs = std::filesystem;

#ifdef VIT_TRAIN_EXE
inline const char* const kVitTrain = VIT_TRAIN_EXE;
#else
inline const char* const kVitTrain = nullptr;
#endif
#ifdef VIT_INFER_EXE
inline const char* const kVitInfer = VIT_INFER_EXE;
#else
inline const char* const kVitInfer = nullptr;
#endif

// ---- files ----------------------------------------------------------------------------------

inline std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  const std::string s = read_text(p);
  return std::vector<uint8_t>(s.begin(), s.end());
}

inline void write_gz(const fs::path& p, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// An IDX u8 file: big-endian magic 0x000008<ndims>, the dims, the payload.
inline std::vector<uint8_t> idx_file(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
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
inline std::pair<std::vector<uint8_t>, std::vector<uint8_t>> synthetic(int n, int side, uint32_t seed) {
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
inline void write_dataset(const fs::path& dir, int n_train = 256, int n_test = 64, int side = 28) {
  fs::create_directories(dir);
  for (auto [prefix, n, seed] : {std::tuple<const char*, int, uint32_t>{"train", n_train, 1}, {"t10k", n_test, 2}}) {
    const auto [images, labels] = synthetic(n, side, seed);
    write_bytes(dir / (std::string(prefix) + "-images-idx3-ubyte"),
                idx_file({uint32_t(n), uint32_t(side), uint32_t(side)}, images));
    write_bytes(dir / (std::string(prefix) + "-labels-idx1-ubyte"), idx_file({uint32_t(n)}, labels));
  }
}

// One scratch folder for the whole binary, removed at exit.
inline const fs::path& scratch_root() {
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
inline const fs::path& data_dir() {
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

// Starts `exe` (vit_train, vit_infer) with stdout and stderr going to files and stdin from
// /dev/null; one OpenMP thread (the machine is shared, and busy-waiting threads on a loaded
// machine make tiny runs slow).
inline pid_t spawn_tool(const char* exe, const Args& args, const fs::path& out, const fs::path& err) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0) env.push_back(*e);
  env.push_back("OMP_NUM_THREADS=1");
  std::vector<char*> envp, argv = {const_cast<char*>(exe)};
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
  const int rc = posix_spawn(&pid, exe, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << exe << ": " << std::strerror(rc);
    return -1;
  }
  return pid;
}

inline pid_t spawn_vit_train(const Args& args, const fs::path& out, const fs::path& err) {
  return spawn_tool(kVitTrain, args, out, err);
}

inline RunResult wait_tool(pid_t pid, const fs::path& out, const fs::path& err) {
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

inline RunResult wait_vit_train(pid_t pid, const fs::path& out, const fs::path& err) {
  return wait_tool(pid, out, err);
}

// Runs `exe` to completion, its output in numbered files under log_dir.
inline RunResult run_tool(const char* exe, const Args& args, const fs::path& log_dir) {
  static int counter = 0;
  const std::string tag = "run" + std::to_string(++counter);
  const fs::path out = log_dir / (tag + ".stdout"), err = log_dir / (tag + ".stderr");
  return wait_tool(spawn_tool(exe, args, out, err), out, err);
}
inline RunResult run_vit_train(const Args& args, const fs::path& log_dir) { return run_tool(kVitTrain, args, log_dir); }
inline RunResult run_vit_infer(const Args& args, const fs::path& log_dir) { return run_tool(kVitInfer, args, log_dir); }

// Command-line flags as (flag, value) pairs; an empty value is a bare flag.
using Flags = std::vector<std::pair<std::string, std::string>>;

inline Flags tiny_flags() {
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
inline Args with(Flags base, const Flags& overrides = {}) {
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

inline std::vector<std::string> nonempty_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  return lines;
}

// A clean failure: exited (no signal) with a non-zero code below the shell's 128+signal range,
// and exactly one stderr line, "<tool>: error: ...", containing each of `needles`.
inline ::testing::AssertionResult CleanError(const RunResult& r, const std::vector<std::string>& needles,
                                             const std::string& tool = "vit_train") {
  if (r.signaled) return ::testing::AssertionFailure() << "crashed: " << r.describe();
  if (r.exit_code <= 0 || r.exit_code >= 128)
    return ::testing::AssertionFailure() << "expected a failing exit code in 1..127: " << r.describe();
  const auto lines = nonempty_lines(r.err);
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << "expected exactly one stderr line, got " << lines.size() << ": "
                                         << r.describe();
  const std::string prefix = tool + ": error: ";
  if (lines[0].rfind(prefix, 0) != 0)
    return ::testing::AssertionFailure() << "stderr line does not start with '" << prefix << "': " << r.describe();
  for (const auto& n : needles)
    if (lines[0].find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "stderr line does not mention '" << n << "': " << r.describe();
  return ::testing::AssertionSuccess();
}

// history.csv as rows of text cells.
inline std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
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
inline void expect_same_history(const fs::path& a, const fs::path& b) {
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
inline void expect_same_checkpoint(const fs::path& a, const fs::path& b) {
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

inline void expect_same_results(const fs::path& a, const fs::path& b) {
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

}  // namespace vitcuda::cli_test
