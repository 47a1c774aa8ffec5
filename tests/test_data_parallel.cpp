// Data parallelism from the outside: the loader's shards are exactly the single-process batch,
// and `mpirun -np 2 vit_train` (skipped, saying why, where the build found no MPI launcher)
// trains like one process, resumes exactly, writes from rank 0 only, refuses ranks that were
// started differently and ends the job when one rank fails. The library-level equalities (ranks
// vs one process, overlap, ZeRO-1, on the cpu and emulated CUDA backends) are in
// tests/mpi/test_data_parallel.cpp, run by ctest under mpirun.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/cli_harness.h"
#include "tests/tiny_model.h"
#include "vitcuda/augment.h"
#include "vitcuda/checkpoint.h"

namespace vitcuda::cli_test {
namespace {

// ---- the loader's shards ----------------------------------------------------------------------
// Every shard of every batch, in rank order, is the unsharded batch, pixels and labels, with
// augmentation and workers; a short last batch is cut too (some shards empty).
TEST(LoaderShards, ShardsInRankOrderAreTheWholeBatch) {
  const Dataset data = test::tiny_dataset(50, 7);
  AugmentConfig aug;
  aug.hflip = 0.5f;
  aug.rotation = 0.1f;
  for (const bool drop_last : {true, false})
    for (const int threads : {0, 2})
      for (const int ranks : {1, 2, 3, 7}) {
        const int B = 12;
        AugmentLoader whole(data, B, /*shuffle=*/true, drop_last, 5, aug, threads);
        std::vector<AugmentLoader*> shards;
        std::vector<std::unique_ptr<AugmentLoader>> own;
        for (int r = 0; r < ranks; ++r) {
          own.push_back(std::make_unique<AugmentLoader>(data, B, true, drop_last, 5, aug, threads));
          own.back()->set_shard(r, ranks);
          own.back()->start_epoch(1);
        }
        whole.start_epoch(1);
        const size_t ib = size_t(whole.image_bytes());
        for (int64_t k = 0; k < whole.num_batches(); ++k) {
          std::vector<uint8_t> img(B * ib), part(B * ib);
          std::vector<int32_t> lab(B), plab(B);
          const int n = whole.next(img.data(), lab.data());
          int at = 0;
          for (int r = 0; r < ranks; ++r) {
            ASSERT_EQ(own[r]->num_batches(), whole.num_batches());
            const int m = own[r]->next(part.data(), plab.data());
            EXPECT_EQ(own[r]->shard_range(k), std::make_pair(n * r / ranks, n * (r + 1) / ranks));
            ASSERT_LE(at + m, n);
            EXPECT_EQ(0, std::memcmp(part.data(), img.data() + at * ib, m * ib))
                << "batch " << k << " rank " << r << " of " << ranks;
            EXPECT_TRUE(std::equal(plab.begin(), plab.begin() + m, lab.begin() + at));
            at += m;
          }
          EXPECT_EQ(at, n) << "the shards cover the batch";
        }
      }
}

TEST(LoaderShards, BadShardIsRefused) {
  const Dataset data = test::tiny_dataset(10, 7);
  AugmentLoader l(data, 4, false, false, 0, AugmentConfig{}, 0);
  for (auto [i, n] : {std::pair{2, 2}, {-1, 2}, {0, 0}}) {
    try {
      l.set_shard(i, n);
      ADD_FAILURE() << i << " of " << n;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("shard"), std::string::npos);
    }
  }
}

// ---- mpirun vit_train ----------------------------------------------------------------------------
#ifdef VITCUDA_MPIEXEC
const char* const kMpiexec = VITCUDA_MPIEXEC;
#else
const char* const kMpiexec = nullptr;
#endif

class MpiRun : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped()) return;
    if (!kMpiexec) GTEST_SKIP() << "built without MPI (no mpiexec found): data-parallel runs are not tested";
    // Open MPI in containers (CMakeLists.txt, VITCUDA_MPI_TEST_ENV says why); inherited by mpirun.
    ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
    ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    ::setenv("OMPI_MCA_btl", "^openib", 1);
  }
  // `mpirun -np ranks` of a command line (argv[0] first), as root in containers.
  RunResult mpirun(int ranks, const Args& cmd) {
    Args a = {"--allow-run-as-root", "--oversubscribe", "-np", std::to_string(ranks)};
    a.insert(a.end(), cmd.begin(), cmd.end());
    return run_tool(kMpiexec, a, dir_);
  }
  RunResult train(int ranks, const Args& flags) {
    Args cmd = {kVitTrain};
    cmd.insert(cmd.end(), flags.begin(), flags.end());
    return mpirun(ranks, cmd);
  }
  // A shell per rank: $OMPI_COMM_WORLD_RANK picks what differs.
  RunResult train_sh(int ranks, const std::string& script) { return mpirun(ranks, {"/bin/sh", "-c", script}); }
  fs::path out(const std::string& name) { return dir_ / name; }
};

// Weights within the bound of fp32 summation order (tests/mpi/test_data_parallel.cpp derives it).
void expect_close_checkpoints(const fs::path& a, const fs::path& b, float tol) {
  const SafeTensorsFile fa = load_safetensors(a.string()), fb = load_safetensors(b.string());
  ASSERT_EQ(fa.tensors.size(), fb.tensors.size());
  for (const auto& [name, ta] : fa.tensors) {
    if (name.rfind("optimizer.", 0) == 0) continue;
    const SafeTensor& tb = fb.tensors.at(name);
    ASSERT_EQ(ta.bytes.size(), tb.bytes.size()) << name;
    const std::vector<float> va = to_f32(ta.bytes.data(), ta.dtype, ta.numel()),
                             vb = to_f32(tb.bytes.data(), tb.dtype, tb.numel());
    for (size_t i = 0; i < va.size(); ++i) ASSERT_NEAR(va[i], vb[i], tol) << name << "[" << i << "]";
  }
}

TEST_F(MpiRun, TwoRanksTrainLikeOneProcessAccumulatingTwoMicroBatches) {
  // -b 32 over 2 ranks = 2 micro-batches of 16 on one process, dropout masks included.
  const RunResult one = run(with(tiny_flags(), {{"-b", "16"}, {"--grad-accum-steps", "2"}, {"--output", out("one")}}));
  ASSERT_EQ(one.exit_code, 0) << one.describe();
  const RunResult two = train(2, with(tiny_flags(), {{"--output", out("two")}}));
  ASSERT_EQ(two.exit_code, 0) << two.describe();
  EXPECT_NE(two.out.find("data parallel: 2 ranks (mpi), global batch 32 = 2 x 16 per rank"), std::string::npos)
      << two.out;
  expect_close_checkpoints(out("one") / "last.safetensors", out("two") / "last.safetensors", 1e-4f);
  // Only rank 0 reports: one line per epoch.
  size_t lines = 0;
  for (const std::string& l : nonempty_lines(two.out)) lines += l.rfind("epoch ", 0) == 0;
  EXPECT_EQ(lines, 2u) << two.out;
  // The same files as one process writes.
  std::vector<std::string> a, b;
  for (const auto& e : fs::directory_iterator(out("one"))) a.push_back(e.path().filename());
  for (const auto& e : fs::directory_iterator(out("two"))) b.push_back(e.path().filename());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
}

// Distilled training (issue #15): each rank runs its own teacher on its shard of every batch, so
// two ranks equal one process accumulating two micro-batches, the teacher included.
TEST_F(MpiRun, DistilledTwoRanksTrainLikeOneProcessAccumulatingTwoMicroBatches) {
  const Flags distill = {{"--distill-from", good_checkpoint().parent_path().string()},
                         {"--distilled", ""},
                         {"--distill", "soft"},
                         {"--distill-tau", "2"},
                         {"--epochs", "1"}};
  Flags f1 = distill, f2 = distill;
  f1.insert(f1.end(), {{"-b", "16"}, {"--grad-accum-steps", "2"}, {"--output", out("one").string()}});
  f2.push_back({"--output", out("two").string()});
  const RunResult one = run(with(tiny_flags(), f1));
  ASSERT_EQ(one.exit_code, 0) << one.describe();
  const RunResult two = train(2, with(tiny_flags(), f2));
  ASSERT_EQ(two.exit_code, 0) << two.describe();
  EXPECT_NE(two.out.find("distillation: soft from "), std::string::npos) << two.out;
  expect_close_checkpoints(out("one") / "last.safetensors", out("two") / "last.safetensors", 1e-4f);
}

TEST_F(MpiRun, StoppedAndResumedEqualsUninterruptedAndRunsRepeatBitwise) {
  const Flags f = tiny_flags();
  ASSERT_EQ(train(2, with(f, {{"--output", out("full")}})).exit_code, 0);
  ASSERT_EQ(train(2, with(f, {{"--output", out("again")}})).exit_code, 0);
  expect_same_checkpoint(out("full") / "last.safetensors", out("again") / "last.safetensors");
  const RunResult first = train(2, with(f, {{"--output", out("part")}, {"--stop-after-epochs", "1"}}));
  ASSERT_EQ(first.exit_code, 0) << first.describe();
  const RunResult rest =
      train(2, with(f, {{"--output", out("part")}, {"--resume", (out("part") / "last.safetensors").string()}}));
  ASSERT_EQ(rest.exit_code, 0) << rest.describe();
  expect_same_checkpoint(out("full") / "last.safetensors", out("part") / "last.safetensors");
  expect_same_history(out("full") / "history.csv", out("part") / "history.csv");
  // A resume on another number of ranks is refused naming it (the dropout masks depend on it).
  const RunResult other =
      run(with(f, {{"--output", out("part")}, {"--resume", (out("part") / "last.safetensors").string()}}));
  EXPECT_TRUE(CleanError(other, {"mpirun -np 2", "mpirun -np <none>"}, "vit_train"));
}

TEST_F(MpiRun, ZeroOneAndNoOverlapEqualPlainBitwise) {
  const Flags f = tiny_flags();
  ASSERT_EQ(train(2, with(f, {{"--output", out("plain")}})).exit_code, 0);
  const RunResult z = train(2, with(f, {{"--output", out("zero")}, {"--zero", "1"}}));
  ASSERT_EQ(z.exit_code, 0) << z.describe();
  const RunResult n = train(2, with(f, {{"--output", out("after")}, {"--no-overlap", ""}}));
  ASSERT_EQ(n.exit_code, 0) << n.describe();
  const RunResult s = train(2, with(f, {{"--output", out("small")}, {"--bucket-mb", "0.001"}}));
  ASSERT_EQ(s.exit_code, 0) << s.describe();
  // ZeRO-1's arena is padded to 64 · ranks; the checkpoint holds the model's tensors only.
  for (const char* d : {"zero", "after", "small"}) {
    expect_same_checkpoint(out("plain") / "last.safetensors", out(d) / "last.safetensors");
    expect_same_history(out("plain") / "history.csv", out(d) / "history.csv");
  }
}

TEST_F(MpiRun, RanksStartedWithDifferentFlagsAreRefusedNamingTheFlag) {
  Args cmd = with(tiny_flags());
  std::string script = std::string("exec '") + kVitTrain + "'";
  for (const std::string& a : cmd) script += " '" + a + "'";
  script += " --lr 0.00$((OMPI_COMM_WORLD_RANK + 1))";
  const RunResult r = train_sh(2, script);
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("rank 1 has"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("rank 0 has '--lr 0.001', rank 1 has '--lr 0.002'"), std::string::npos) << r.describe();
}

TEST_F(MpiRun, GlobalBatchThatDoesNotDivideIsRefused) {
  const RunResult r = train(2, with(tiny_flags(), {{"-b", "33"}}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("-b 33 is the global batch and must divide over the 2 ranks"), std::string::npos)
      << r.describe();
}

TEST_F(MpiRun, ARankThatFailsEndsTheJobWithItsError) {
  // The same flags on both ranks, but rank 1's data folder (its own working directory) holds a
  // truncated file: rank 1 fails alone while rank 0 goes on; the job must end, not hang.
  for (int r = 0; r < 2; ++r) {
    const fs::path d = dir_ / ("rank" + std::to_string(r)) / "data";
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(data_dir())) fs::copy_file(e.path(), d / e.path().filename());
    if (r == 1) fs::resize_file(d / "train-images-idx3-ubyte", 100);
  }
  std::string script = "cd '" + dir_.string() + "/rank'$OMPI_COMM_WORLD_RANK && exec '" + std::string(kVitTrain) + "'";
  for (const std::string& a : with(tiny_flags(), {{"--data-dir", "data"}})) script += " '" + a + "'";
  const RunResult r = train_sh(2, script);
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.err.find("vit_train: error (rank 1 of 2):"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("train-images-idx3-ubyte"), std::string::npos) << r.describe();
}

}  // namespace
}  // namespace vitcuda::cli_test
