// End-to-end tests of the vit_train command line (the real binary, VIT_TRAIN_EXE) on tiny
// synthetic IDX datasets: every bad input fails fast with a non-zero exit, no crash, and exactly
// one "vit_train: error: ..." line on stderr naming the problem; a normal run writes its
// outputs; a run stopped (or SIGKILLed) and resumed equals an uninterrupted one; and a kill
// during a checkpoint write always leaves the old or the new checkpoint, complete, at the path.
#include "tests/cli_harness.h"
#include "vitcuda/model.h"
#include "vitcuda/trainer.h"

namespace fs = std::filesystem;
using namespace vitcuda;
using namespace vitcuda::cli_test;

namespace {

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
  // Embedding dim 32 instead of 16, depth 2 instead of 1: refused by the run record before any
  // tensor is read, naming the flag (test_resume.cpp checks every flag).
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--embed-dim", "32"}, {"--resume", good.string()}})),
                         {good.string(), "--embed-dim 16", "--embed-dim 32"}));
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--depth", "2"}, {"--resume", good.string()}})),
                         {good.string(), "--depth 1", "--depth 2"}));
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
  EXPECT_NE(r.out.find("\ntest (best"), std::string::npos) << r.out;  // the best weights' test line

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
  EXPECT_NE(r.out.find("\ntest (best"), std::string::npos) << r.out;  // the best weights' test line
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

// ---- distilled training (DeiT, issue #15): the teacher's flags ----------------------------------------

// good_checkpoint() with its 'config' metadata edited (the teacher checks read the header alone).
fs::path teacher_with_config(const fs::path& good, const fs::path& dir, const std::string& name, const std::string& key,
                             const nlohmann::json& value) {
  SafeTensorsFile f = load_safetensors(good.string());
  nlohmann::json cfg = nlohmann::json::parse(f.metadata.at("config"));
  cfg[key] = value;
  if (key == "in_chans") {
    cfg["pixel_mean"] = std::vector<float>(size_t(value.get<int>()), 0.5f);
    cfg["pixel_std"] = std::vector<float>(size_t(value.get<int>()), 0.5f);
  }
  f.metadata["config"] = cfg.dump();
  const fs::path p = dir / name;
  save_safetensors(p.string(), f);
  return p;
}

TEST_F(CliErrors, DistillTeacherOfAnotherShape) {
  const fs::path good = good_checkpoint();
  ASSERT_TRUE(fs::exists(good));
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", good.string()}, {"--num-classes", "12"}})),
                         {"--distill-from '" + good.string() + "': the teacher has 10 classes, the student 12"}));
  const fs::path rgb = teacher_with_config(good, dir_, "rgb.safetensors", "in_chans", 3);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", rgb.string()}})),
                         {"--distill-from '" + rgb.string() + "': the teacher takes 3-channel images, the student 1"}));
  const fs::path small = teacher_with_config(good, dir_, "small.safetensors", "img_size", 14);
  EXPECT_TRUE(
      CleanError(run(with(tiny_flags(), {{"--distill-from", small.string()}, {"--output", (dir_ / "out").string()}})),
                 {"--distill-from '" + small.string() + "': the teacher takes 14x14 images", "28x28"}));
  EXPECT_FALSE(fs::exists(dir_ / "out")) << "refused before the output folder is made";
}

TEST_F(CliErrors, DistillSettingsOutOfRange) {
  const std::string good = good_checkpoint().string();
  for (const char* alpha : {"1.5", "-0.1", "nan", "inf", "x"})
    EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", good}, {"--distill-alpha", alpha}})),
                           {"--distill-alpha"}))
        << alpha;
  for (const char* tau : {"0", "-1", "nan", "inf", "1e39"})
    EXPECT_TRUE(
        CleanError(run(with(tiny_flags(), {{"--distill-from", good}, {"--distill-tau", tau}})), {"--distill-tau"}))
        << tau;
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", good}, {"--distill", "medium"}})), {"--distill"}));
}

TEST_F(CliErrors, DistillSettingsWithoutATeacher) {
  for (const Flags& f : std::vector<Flags>{{{"--distill", "soft"}},
                                           {{"--distill-alpha", "0.3"}},
                                           {{"--distill-tau", "2"}},
                                           {{"--teacher-model", "vit_fmnist"}}})
    EXPECT_TRUE(CleanError(run(with(tiny_flags(), f)), {f[0].first, "needs --distill-from"})) << f[0].first;
}

TEST_F(CliErrors, DistillTeacherFileMissingCorruptOrWithoutArchitecture) {
  const fs::path missing = dir_ / "no_teacher.safetensors";
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", missing.string()}})),
                         {"--distill-from '" + missing.string() + "' does not exist"}));
  const fs::path empty_dir = dir_ / "empty_run";
  fs::create_directories(empty_dir);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", empty_dir.string()}})),
                         {empty_dir.string(), "neither best.safetensors nor last.safetensors"}));
  const fs::path garbage = dir_ / "garbage.safetensors";
  std::mt19937 rng(12);
  std::vector<uint8_t> b;
  for (int i = 0; i < 4096; i++) b.push_back(uint8_t(rng()));
  write_bytes(garbage, b);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", garbage.string()}})),
                         {"--distill-from", garbage.string()}));
  const fs::path truncated = dir_ / "truncated.safetensors";
  fs::copy_file(good_checkpoint(), truncated);
  fs::resize_file(truncated, fs::file_size(truncated) - 100);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", truncated.string()}})),
                         {"--distill-from", truncated.string()}));
  // A timm state_dict (no 'config' metadata): the architecture must be named, and must fit.
  SafeTensorsFile f = load_safetensors(good_checkpoint().string());
  f.metadata.clear();
  const fs::path timm = dir_ / "timm.safetensors";
  save_safetensors(timm.string(), f);
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--distill-from", timm.string()}})),
                         {"--distill-from", timm.string(), "--teacher-model PRESET"}));
  EXPECT_TRUE(
      CleanError(run(with(tiny_flags(), {{"--distill-from", timm.string()}, {"--teacher-model", "vit_fmnist"}})),
                 {"--distill-from", timm.string()}));  // vit_fmnist is 6 blocks of width 64: a tensor of another shape
}

// A timm state_dict as the teacher (no 'config' metadata): --teacher-model names its architecture,
// here the vit_fmnist preset (6 blocks of width 64) teaching the tiny student.
TEST_F(CliRun, DistillFromATimmStateDictWithTeacherModel) {
  auto be = make_backend("cpu");
  Model teacher(preset("vit_fmnist"), *be, 1);
  teacher.init(3);
  const fs::path with_config = dir_ / "vitcuda.safetensors", timm = dir_ / "timm.safetensors";
  save_weights(with_config.string(), teacher);
  SafeTensorsFile f = load_safetensors(with_config.string());
  f.metadata.clear();
  save_safetensors(timm.string(), f);
  const RunResult r = run(
      with(tiny_flags(), {{"--distill-from", timm.string()}, {"--teacher-model", "vit_fmnist"}, {"--epochs", "1"}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("distillation: hard from " + timm.string() + " (teacher vit_fmnist, " +
                       std::to_string(teacher.num_params()) + " params), alpha 0.5, tau 1\n"),
            std::string::npos)
      << r.out;
}

// A vit_train output folder as the teacher (its best.safetensors), a student with the
// distillation token: the run trains, logs the teacher, and records it.
TEST_F(CliRun, DistillFromAnOutputFolder) {
  const fs::path teacher_dir = good_checkpoint().parent_path(), out = dir_ / "student";
  const RunResult r = run(with(tiny_flags(), {{"--distill-from", teacher_dir.string()},
                                              {"--distilled", ""},
                                              {"--distill", "soft"},
                                              {"--distill-tau", "2"},
                                              {"--epochs", "1"},
                                              {"--output", out.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const std::string teacher = (teacher_dir / "best.safetensors").string();
  EXPECT_NE(r.out.find("distillation: soft from " + teacher + " (teacher vit_fmnist, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" params), alpha 0.5, tau 2\n"), std::string::npos) << r.out;
  const auto md = load_safetensors((out / "last.safetensors").string()).metadata;
  const RunRecord rec = RunRecord::from_json(md.at("run"));
  EXPECT_EQ(rec.get("--distill-from").rfind("vit_fmnist ", 0), 0u) << rec.get("--distill-from");
  EXPECT_EQ(rec.get("--distill"), "soft");
  EXPECT_EQ(rec.get("--distill-tau"), "2");
  EXPECT_EQ(rec.get("--distilled"), "true");
  EXPECT_EQ(nlohmann::json::parse(md.at("config")).value("distilled", false), true) << md.at("config");
  EXPECT_TRUE(fs::exists(out / "results.json"));
}

}  // namespace
