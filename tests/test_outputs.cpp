// End-to-end tests of what vit_train does with its output folder and what a user finds there at
// the end (issue #13, classes 4 and 6), running the real binaries on tiny synthetic IDX data:
//   * the output folder is locked for the whole run: a second run on it is refused naming the
//     first one's pid, the first finishes with its own files; a SIGKILLed run leaves no lock;
//   * every path flag of vit_train and vit_infer given as the empty string is refused naming the
//     flag; --output naming a file, or the data folder, is refused before anything is written;
//   * the test set is evaluated with the best and with the last weights, both in results.json,
//     each equal to what vit_infer reports on best.safetensors / last.safetensors; the report
//     files come from the best weights;
//   * confusion_matrix.png is drawn by tools/plot_confusion.py when python3 has matplotlib, and
//     is the built-in colour grid when it has not (VITCUDA_PLOT_PYTHON=none).

#include "tests/cli_harness.h"
#include "vitcuda/data.h"
#include "vitcuda/image.h"
#include "vitcuda/metrics.h"
#include "vitcuda/pictures.h"

#include <regex>

namespace fs = std::filesystem;
using namespace vitcuda;
using namespace vitcuda::cli_test;

namespace {

// What `test_and_report` prints for the best or the last weights, and what vit_infer prints.
const char* const kTestLine =
    R"(test \((best|last|best = last), epoch (\d+)\): loss \d+\.\d{4} top-1 (\d+\.\d\d)% top-5 (\d+\.\d\d)%)";

std::string percent(double fraction) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", 100 * fraction);
  return b;
}

// The same check vit_train makes: python3 on the PATH, else /usr/bin/python3, with matplotlib.
bool have_matplotlib() {
  for (const char* p : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(p) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) return true;
  return false;
}

// Sets an environment variable for the tools spawned while it lives (spawn_tool copies environ).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

// confusion_matrix.csv back into a ConfusionMatrix (names dropped).
ConfusionMatrix read_confusion(const fs::path& p) {
  const auto rows = read_csv(p);  // class names of the synthetic data have no commas
  const int k = int(rows.size()) - 1;
  ConfusionMatrix cm(std::max(k, 0));
  for (int t = 0; t < k; ++t)
    for (int q = 0; q < k; ++q)
      for (int64_t n = std::stoll(rows[size_t(t) + 1][size_t(q) + 1]); n > 0; --n) cm.add(t, q);
  return cm;
}

// Waits until `lock` names `pid` (the run holds the folder) or the process has ended.
bool wait_for_lock(const fs::path& lock, pid_t pid) {
  const std::string want = std::to_string(pid) + " ";
  for (int i = 0; i < 6000; ++i) {  // 60 s
    if (read_text(lock).rfind(want, 0) == 0) return true;
    if (kill(pid, 0) != 0) return false;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

using OutputLock = CliTest;
using OutputFolder = CliTest;

// ---- one run per output folder -----------------------------------------------------------------

TEST_F(OutputLock, SecondRunOnTheSameFolderIsRefusedNamingTheFirst) {
  const fs::path out = dir_ / "out", lock = out / ".vit_train.lock";
  const fs::path out1 = dir_ / "first.stdout", err1 = dir_ / "first.stderr";
  const pid_t first = spawn_vit_train(with(tiny_flags(), {{"--epochs", "3"}, {"--output", out.string()}}), out1, err1);
  ASSERT_GT(first, 0);
  ASSERT_TRUE(wait_for_lock(lock, first)) << wait_vit_train(first, out1, err1).describe();
  // Stopped while it holds the lock: the second run certainly meets a running first one.
  ASSERT_EQ(kill(first, SIGSTOP), 0);
  int status = 0;
  ASSERT_EQ(waitpid(first, &status, WUNTRACED), first);
  ASSERT_TRUE(WIFSTOPPED(status));
  // A different model: had it written anything, config.json would show it.
  const RunResult second = run(with(tiny_flags(), {{"--embed-dim", "32"}, {"--output", out.string()}}));
  ASSERT_EQ(kill(first, SIGCONT), 0);
  EXPECT_TRUE(CleanError(second, {"output folder '" + out.string() + "' is in use by vit_train pid " +
                                  std::to_string(first) + " (lock '" + lock.string() + "')"}));
  EXPECT_EQ(second.out.find("epoch"), std::string::npos) << second.out;

  const RunResult r = wait_vit_train(first, out1, err1);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(ViTConfig::from_json(read_text(out / "config.json")).embed_dim, 16);
  EXPECT_EQ(read_csv(out / "history.csv").size(), 4u);  // header + the first run's 3 epochs
  EXPECT_EQ(load_safetensors((out / "last.safetensors").string()).metadata.at("epoch"), "3");
  EXPECT_EQ(nlohmann::json::parse(read_text(out / "results.json")).at("epochs").get<int>(), 3);
  // The lock file stays (an flock on it is the lock); a new run after the first proceeds.
  EXPECT_TRUE(fs::exists(lock));
  const RunResult third = run(with(tiny_flags(), {{"--epochs", "1"}, {"--output", out.string()}}));
  EXPECT_EQ(third.exit_code, 0) << third.describe();
}

TEST_F(OutputLock, KilledRunLeavesNoLockBehind) {
  const fs::path out = dir_ / "out", lock = out / ".vit_train.lock";
  const fs::path out1 = dir_ / "killed.stdout", err1 = dir_ / "killed.stderr";
  const pid_t first =
      spawn_vit_train(with(tiny_flags(), {{"--epochs", "1000"}, {"--output", out.string()}}), out1, err1);
  ASSERT_GT(first, 0);
  ASSERT_TRUE(wait_for_lock(lock, first)) << wait_vit_train(first, out1, err1).describe();
  ASSERT_EQ(kill(first, SIGKILL), 0);
  const RunResult killed = wait_vit_train(first, out1, err1);
  ASSERT_TRUE(killed.signaled) << killed.describe();
  // The file is still there, naming the dead process; the lock went with it.
  EXPECT_EQ(read_text(lock).rfind(std::to_string(first) + " ", 0), 0u) << read_text(lock);
  const RunResult next = run(with(tiny_flags(), {{"--epochs", "1"}, {"--output", out.string()}}));
  ASSERT_EQ(next.exit_code, 0) << next.describe();
  EXPECT_EQ(load_safetensors((out / "last.safetensors").string()).metadata.at("epoch"), "1");
}

// ---- path flags and output folders that mean nothing -----------------------------------------------

struct EmptyPathCase {
  const char* tool;   // "vit_train" or "vit_infer"
  const char* flag;   // "" for vit_infer's positional image inputs
  const char* named;  // how the error line names it
};

class EmptyPathFlag : public CliTest, public ::testing::WithParamInterface<EmptyPathCase> {};

TEST_P(EmptyPathFlag, IsRefusedNamingTheFlag) {
  const EmptyPathCase& c = GetParam();
  const fs::path out = dir_ / "out";
  const bool train = std::string(c.tool) == "vit_train";
  Flags base = tiny_flags();
  base.push_back({"--output", out.string()});
  if (!train)
    base = {{"-c", good_checkpoint().string()},
            {"--dataset", "mnist"},
            {"--data-dir", data_dir().string()},
            {"--no-progress", ""}};
  Args args = with(base, {{c.flag, "<drop>"}});
  if (*c.flag) args.push_back(c.flag);
  args.push_back("");
  const RunResult r = train ? run(args) : run_vit_infer(args, dir_);
  EXPECT_TRUE(CleanError(r, {std::string(c.named) + ": is an empty path"}, c.tool));
  EXPECT_EQ(r.out, "");  // refused before anything starts
  if (train && std::string(c.flag) != "--output") {
    EXPECT_FALSE(fs::exists(out)) << c.flag;
  }
}

INSTANTIATE_TEST_SUITE_P(Tools, EmptyPathFlag,
                         ::testing::Values(EmptyPathCase{"vit_train", "--output", "--output"},
                                           EmptyPathCase{"vit_train", "--resume", "--resume"},
                                           EmptyPathCase{"vit_train", "--initial-checkpoint", "--initial-checkpoint"},
                                           EmptyPathCase{"vit_train", "--data-dir", "--data-dir"},
                                           EmptyPathCase{"vit_train", "--train-csv", "--train-csv"},
                                           EmptyPathCase{"vit_train", "--test-csv", "--test-csv"},
                                           EmptyPathCase{"vit_infer", "-c", "--checkpoint"},
                                           EmptyPathCase{"vit_infer", "--data-dir", "--data-dir"},
                                           EmptyPathCase{"vit_infer", "--train-csv", "--train-csv"},
                                           EmptyPathCase{"vit_infer", "--test-csv", "--test-csv"},
                                           EmptyPathCase{"vit_infer", "--attention-map", "--attention-map"},
                                           EmptyPathCase{"vit_infer", "--save-logits", "--save-logits"},
                                           EmptyPathCase{"vit_infer", "--export-weights", "--export-weights"},
                                           EmptyPathCase{"vit_infer", "", "inputs"}),
                         [](const ::testing::TestParamInfo<EmptyPathCase>& info) {
                           std::string name =
                               std::string(info.param.tool) + "_" + (*info.param.flag ? info.param.flag : "inputs");
                           for (char& ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

TEST_F(OutputFolder, AFileIsRefused) {
  const fs::path file = dir_ / "notes.txt";
  std::ofstream(file) << "not a folder\n";
  const RunResult r = run(with(tiny_flags(), {{"--output", file.string()}}));
  EXPECT_TRUE(CleanError(r, {"'" + file.string() + "' is not a directory"}));
  EXPECT_EQ(read_text(file), "not a folder\n");
  // A file on the way to the folder too.
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--output", (file / "run").string()}})), {file.string()}));
}

TEST_F(OutputFolder, TheDataFolderIsRefused) {
  const fs::path data = data_copy();
  const auto before = std::distance(fs::directory_iterator(data), fs::directory_iterator());
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", data.string()}, {"--output", data.string()}})),
                         {"--output '" + data.string() + "' is the data folder"}));
  // The same folder spelt differently, and a folder inside it.
  const std::string spelt = (dir_ / "." / "data" / "").string();
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", data.string()}, {"--output", spelt}})),
                         {"is the data folder"}));
  const fs::path inside = data / "runs" / "a";
  EXPECT_TRUE(CleanError(run(with(tiny_flags(), {{"--data-dir", data.string()}, {"--output", inside.string()}})),
                         {"inside the data folder '" + data.string() + "'"}));
  EXPECT_EQ(std::distance(fs::directory_iterator(data), fs::directory_iterator()), before);  // nothing created
  // A sibling whose name starts with the data folder's is fine.
  const RunResult ok =
      run(with(tiny_flags(), {{"--epochs", "1"}, {"--data-dir", data.string()}, {"--output", data.string() + "_run"}}));
  EXPECT_EQ(ok.exit_code, 0) << ok.describe();
}

// Without --data-dir, fashion_mnist reads Debian's folder: --output inside it is refused too.
TEST_F(OutputFolder, TheDefaultDataFolderIsRefused) {
  DatasetSpec spec;
  spec.kind = "fashion_mnist";
  const std::string dir = dataset_dir(spec);
  EXPECT_EQ(dir, "/usr/share/datasets/fashion-mnist");
  spec.dir = "elsewhere";
  EXPECT_EQ(dataset_dir(spec), "elsewhere");
  if (!fs::exists(dir + "/train-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << dir << " is not installed (Debian's dataset-fashion-mnist)";
  const RunResult r = run(with(tiny_flags(), {{"--data-dir", "<drop>"}, {"--output", dir + "/runs/a"}}));
  EXPECT_TRUE(CleanError(r, {"inside the data folder '" + dir + "'"}));
  EXPECT_FALSE(fs::exists(dir + "/runs"));
}

// ---- the test metrics and the report -------------------------------------------------------------

// A run whose best validation epoch is not its last (a constant, large learning rate on the tiny
// data makes the validation accuracy go up and down; the CPU backend is deterministic, so this
// holds for these flags and seed), made once.
Flags best_run_flags(const fs::path& out) {
  Flags f = tiny_flags();
  for (const auto& [flag, value] : Flags{{"--epochs", "4"},
                                         {"--lr", "0.02"},
                                         {"--sched", "constant"},
                                         {"--warmup-epochs", "0"},
                                         {"--output", out.string()}}) {
    auto it = std::find_if(f.begin(), f.end(), [&](const auto& kv) { return kv.first == flag; });
    if (it != f.end())
      it->second = value;
    else
      f.push_back({flag, value});
  }
  return f;
}

struct BestRun {
  fs::path out;
  RunResult result;
};
const BestRun& best_run() {
  static const BestRun run = [] {
    BestRun b;
    b.out = scratch_root() / "best_run";
    fs::create_directories(b.out);
    b.result = run_vit_train(with(best_run_flags(b.out)), b.out);
    return b;
  }();
  return run;
}

class TestMetrics : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped()) return;
    if (!kVitInfer) GTEST_SKIP() << "built without the vit_infer target";
    ASSERT_EQ(best_run().result.exit_code, 0) << best_run().result.describe();
  }
  // vit_infer --dataset on a checkpoint: its top-1 and top-5 (percent, as printed).
  std::pair<std::string, std::string> infer_dataset(const fs::path& checkpoint) {
    const RunResult r = run_vit_infer({"-c", checkpoint.string(), "--dataset", "mnist", "--data-dir",
                                       data_dir().string(), "-b", "32", "--device", "cpu", "--no-progress"},
                                      dir_);
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex(R"(mnist test: top-1 (\d+\.\d\d)% top-5 (\d+\.\d\d)%)"))) {
      ADD_FAILURE() << r.describe();
      return {};
    }
    return {m[1].str(), m[2].str()};
  }
};

TEST_F(TestMetrics, BestAndLastWeightsBothTestedAndEqualVitInfer) {
  const BestRun& b = best_run();
  const auto res = nlohmann::json::parse(read_text(b.out / "results.json"));
  const int best_epoch = res.at("best_epoch").get<int>();
  ASSERT_LT(best_epoch, 4) << "the run's best epoch is its last: pick other flags for best_run()\n" << b.result.out;
  ASSERT_GE(best_epoch, 1);
  const auto& best = res.at("test_best");
  const auto& last = res.at("test_last");
  EXPECT_EQ(best.at("epoch").get<int>(), best_epoch);
  EXPECT_EQ(last.at("epoch").get<int>(), 4);
  EXPECT_EQ(best.at("images").get<int>(), 64);
  EXPECT_EQ(last.at("images").get<int>(), 64);
  EXPECT_EQ(res.at("epochs").get<int>(), 4);
  // Different weights, different losses: the comparisons below can tell best from last.
  EXPECT_NE(best.at("loss").get<double>(), last.at("loss").get<double>());
  // The top-level keys are the best weights' (as the seed tutorials report).
  EXPECT_EQ(res.at("test_weights").get<std::string>(), "best");
  EXPECT_EQ(res.at("test_loss").get<double>(), best.at("loss").get<double>());
  EXPECT_EQ(res.at("test_top1").get<double>(), best.at("top1").get<double>());
  EXPECT_EQ(res.at("test_top5").get<double>(), best.at("top5").get<double>());
  // best.safetensors is the epoch results.json calls best.
  EXPECT_EQ(load_safetensors((b.out / "best.safetensors").string()).metadata.at("epoch"), std::to_string(best_epoch));

  // One labelled line each, best first.
  std::vector<std::smatch> lines;
  const std::regex line(kTestLine);
  for (auto it = std::sregex_iterator(b.result.out.begin(), b.result.out.end(), line); it != std::sregex_iterator();
       ++it)
    lines.push_back(*it);
  ASSERT_EQ(lines.size(), 2u) << b.result.out;
  EXPECT_EQ(lines[0][1].str(), "best");
  EXPECT_EQ(lines[0][2].str(), std::to_string(best_epoch));
  EXPECT_EQ(lines[0][3].str(), percent(best.at("top1").get<double>()));
  EXPECT_EQ(lines[1][1].str(), "last");
  EXPECT_EQ(lines[1][2].str(), "4");
  EXPECT_EQ(lines[1][3].str(), percent(last.at("top1").get<double>()));

  // vit_infer on the checkpoints, same backend, data and batch size: the same hits, so the same
  // percentages to the printed digit (the counts are integers; nothing is left to round apart).
  const auto [best_top1, best_top5] = infer_dataset(b.out / "best.safetensors");
  EXPECT_EQ(best_top1, percent(best.at("top1").get<double>()));
  EXPECT_EQ(best_top5, percent(best.at("top5").get<double>()));
  const auto [last_top1, last_top5] = infer_dataset(b.out / "last.safetensors");
  EXPECT_EQ(last_top1, percent(last.at("top1").get<double>()));
  EXPECT_EQ(last_top5, percent(last.at("top5").get<double>()));

  // The report is the best weights': the confusion matrix's diagonal is their top-1.
  const ConfusionMatrix cm = read_confusion(b.out / "confusion_matrix.csv");
  EXPECT_EQ(cm.total(), 64);
  EXPECT_DOUBLE_EQ(cm.accuracy(), best.at("top1").get<double>());
  EXPECT_NE(b.result.out.find("(report of the best, epoch " + std::to_string(best_epoch) + " weights)"),
            std::string::npos)
      << b.result.out;
}

TEST_F(TestMetrics, BestEqualToLastIsTestedOnce) {
  // One epoch: best and last are the same weights.
  const RunResult r = run(with(tiny_flags(), {{"--epochs", "1"}, {"--output", (dir_ / "out").string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const std::regex line(kTestLine);
  const auto n = std::distance(std::sregex_iterator(r.out.begin(), r.out.end(), line), std::sregex_iterator());
  EXPECT_EQ(n, 1) << r.out;
  EXPECT_NE(r.out.find("test (best = last, epoch 1): loss "), std::string::npos) << r.out;
  const auto res = nlohmann::json::parse(read_text(dir_ / "out" / "results.json"));
  EXPECT_EQ(res.at("test_best"), res.at("test_last"));
  EXPECT_EQ(res.at("best_epoch").get<int>(), 1);
}

TEST_F(TestMetrics, ResumedRunTestsTheBestEpochFromBeforeTheResume) {
  // Stopped after the best epoch and resumed: the best weights come back from best.safetensors,
  // and results.json equals the uninterrupted run's.
  const BestRun& b = best_run();
  const int best_epoch = nlohmann::json::parse(read_text(b.out / "results.json")).at("best_epoch").get<int>();
  ASSERT_LT(best_epoch, 4);
  const fs::path out = dir_ / "out";
  const Flags flags = best_run_flags(out);
  RunResult r = run(with(flags, {{"--stop-after-epochs", std::to_string(best_epoch)}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = run(with(flags, {{"--resume", (out / "last.safetensors").string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  expect_same_results(b.out / "results.json", out / "results.json");
}

TEST_F(TestMetrics, WithoutOutputFolderBothAreTestedToo) {
  // The best weights live in memory: no --output needed; the same lines as the run with one.
  Flags flags = best_run_flags(dir_ / "unused");
  flags.erase(std::find_if(flags.begin(), flags.end(), [](const auto& kv) { return kv.first == "--output"; }));
  const RunResult r = run(with(flags));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(fs::exists(dir_ / "unused"));
  auto test_lines = [](const std::string& out) {
    std::vector<std::string> lines;
    const std::regex line(kTestLine);
    for (auto it = std::sregex_iterator(out.begin(), out.end(), line); it != std::sregex_iterator(); ++it)
      lines.push_back(it->str());
    return lines;
  };
  const auto lines = test_lines(r.out);
  EXPECT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines, test_lines(best_run().result.out)) << r.out;
}

TEST_F(TestMetrics, BestWeightsNotAvailableAreSaidSo) {
  // Stopped after the best epoch, resumed into another folder: the best epoch's weights are
  // neither in memory nor in that folder. The last weights are tested, and the line says why
  // the best are not.
  const BestRun& b = best_run();
  const int best_epoch = nlohmann::json::parse(read_text(b.out / "results.json")).at("best_epoch").get<int>();
  ASSERT_LT(best_epoch, 4);
  const fs::path first = dir_ / "first", second = dir_ / "second";
  RunResult r = run(with(best_run_flags(first), {{"--stop-after-epochs", std::to_string(best_epoch)}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = run(with(best_run_flags(second), {{"--resume", (first / "last.safetensors").string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("test (best, epoch " + std::to_string(best_epoch) +
                       "): not evaluated, its weights are not available: "),
            std::string::npos)
      << r.out;
  const auto res = nlohmann::json::parse(read_text(second / "results.json"));
  const auto ref = nlohmann::json::parse(read_text(b.out / "results.json"));
  EXPECT_EQ(res.at("test_weights").get<std::string>(), "last");
  EXPECT_FALSE(res.contains("test_best"));
  EXPECT_EQ(res.at("test_last"), ref.at("test_last"));
  EXPECT_EQ(res.at("test_top1"), ref.at("test_last").at("top1"));
  EXPECT_NE(r.out.find("(report of the last, epoch 4 weights)"), std::string::npos) << r.out;
}

// ---- confusion_matrix.png ------------------------------------------------------------------------

TEST_F(TestMetrics, ConfusionMatrixPngIsDrawnByMatplotlib) {
  if (!png_supported()) GTEST_SKIP() << "built without stb (libstb-dev): no PNG files";
  if (!have_matplotlib()) GTEST_SKIP() << "no python3 with matplotlib: the built-in picture is the only one";
  const BestRun& b = best_run();
  const Image png = load_image((b.out / "confusion_matrix.png").string());
  const Image grid = confusion_matrix_image(read_confusion(b.out / "confusion_matrix.csv"));
  // The built-in grid is 10 cells of 32 pixels and a 4-pixel border; the figure (axes, names,
  // colour bar, title) is several times larger.
  EXPECT_GT(png.width, 2 * grid.width);
  EXPECT_GT(png.height, 2 * grid.height);
  EXPECT_NE(b.result.out.find("confusion_matrix.png"), std::string::npos);
  EXPECT_EQ(b.result.out.find("plots skipped"), std::string::npos) << b.result.out;
  for (const auto& e : fs::directory_iterator(b.out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(OutputFolder, WithoutPythonTheBuiltInPicturesStay) {
  if (!png_supported()) GTEST_SKIP() << "built without stb (libstb-dev): no PNG files";
  const ScopedEnv no_python("VITCUDA_PLOT_PYTHON", "none");
  const fs::path out = dir_ / "out";
  const RunResult r = run(with(tiny_flags(), {{"--epochs", "1"}, {"--output", out.string()}}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("plots skipped"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "curves.png"));
  // confusion_matrix.png is exactly the built-in colour grid of the CSV's counts.
  const Image png = load_image((out / "confusion_matrix.png").string());
  const Image grid = confusion_matrix_image(read_confusion(out / "confusion_matrix.csv"));
  ASSERT_EQ(png.width, grid.width);
  ASSERT_EQ(png.height, grid.height);
  ASSERT_EQ(png.channels, grid.channels);
  EXPECT_TRUE(png.pixels == grid.pixels);
}

// ---- tools/plot_confusion.py on its own ----------------------------------------------------------

TEST_F(OutputFolder, PlotConfusionScript) {
  std::string python;
  for (const char* p : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(p) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0) {
      python = p;
      break;
    }
  if (python.empty()) GTEST_SKIP() << "no python3 with matplotlib";
  const std::string script = std::string(VITCUDA_SOURCE_DIR) + "/tools/plot_confusion.py";
  // 100 classes with quoted names: colours only, every 3rd name.
  std::string csv = "true\\pred";
  for (int k = 0; k < 100; ++k) csv += ",\"class " + std::to_string(k) + ", x\"";
  csv += "\n";
  for (int t = 0; t < 100; ++t) {
    csv += "\"class " + std::to_string(t) + ", x\"";
    for (int p = 0; p < 100; ++p) csv += "," + std::to_string(t == p ? 7 : (t + p) % 3);
    csv += "\n";
  }
  std::ofstream(dir_ / "confusion_matrix.csv") << csv;
  const fs::path log = dir_ / "log.txt";
  ASSERT_EQ(std::system(
                (python + " " + script + " " + dir_.string() + " --weights 'last, epoch 2' > " + log.string() + " 2>&1")
                    .c_str()),
            0)
      << read_text(log);
  if (png_supported()) {
    EXPECT_GT(load_image((dir_ / "confusion_matrix.png").string()).width, 1000);
  }
  // Not a confusion matrix: one error line, exit 1, nothing written.
  std::ofstream(dir_ / "bad.csv") << "epoch,loss\n1,2\n";
  const int rc = std::system((python + " " + script + " " + (dir_ / "bad.csv").string() + " -o " +
                              (dir_ / "bad.png").string() + " > " + log.string() + " 2>&1")
                                 .c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1) << rc;
  EXPECT_EQ(nonempty_lines(read_text(log)).size(), 1u) << read_text(log);
  EXPECT_NE(read_text(log).find("plot_confusion: error:"), std::string::npos) << read_text(log);
  EXPECT_FALSE(fs::exists(dir_ / "bad.png"));
}

}  // namespace
