// Data-parallel training steps under mpirun -np 2 (vitcuda_mpi_tests), on the "cpu" backend and
// on the emulated CUDA backend through MPI's host staging: N ranks equal one process with the
// same global batch up to fp32 summation order; N ranks equal one process accumulating N
// micro-batches (the same dropout masks too); bucketed reduction overlapped with the backward
// pass, and ZeRO-1, equal the plain step bit for bit; two runs are bitwise equal; only rank 0
// writes the Trainer's files. Every rank computes the one-process reference itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda_backend.h"
#include "mpi_test.h"
#include "tests/tiny_model.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/train_step.h"
#include "vitcuda/trainer.h"

namespace vitcuda::test {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 20;

struct DpSetup {
  int batch = 8;          // global (micro-)batch
  int accum = 1;          // micro-batches per step
  bool overlap = true;    //
  bool zero1 = false;     //
  float clip = 0.f;       //
  bool dropout = false;   // dropout, attention dropout and drop-path on
  int64_t bucket = 1024;  // bytes: many buckets on the tiny arena
  bool graph = true;      //
};

struct DpRun {
  std::vector<double> losses;  // mean loss of each step's global batch
  std::vector<float> master;   // after the last step
  std::vector<float> m, v;     // AdamW's moments (gathered with ZeRO-1)
  int64_t adam_steps = 0;
};

std::unique_ptr<Backend> backend(const std::string& name) {
  return name == "cpu" ? make_backend("cpu") : make_cuda_backend(DType::F32);
}

// The tiny 8x8 model with head dim 32 (the emulated kernels' smallest), two blocks: the buckets
// of one are reduced while the other's backward runs.
ViTConfig config(bool dropout) {
  ViTConfig c = tiny_config();
  c.embed_dim = 64;
  c.mlp_hidden = 96;
  c.depth = 2;
  c.drop_rate = c.attn_drop_rate = dropout ? 0.1f : 0.f;
  c.drop_path_rate = dropout ? 0.2f : 0.f;
  return c;
}

// kSteps optimizer steps on the same data: step s, micro-batch k reads the global batch
// starting at sample (s·accum + k)·batch, of which `comm`'s rank takes its contiguous shard
// (nullptr: one process, the whole batch).
DpRun train(const std::string& be_name, Communicator* comm, const DpSetup& su) {
  const int N = comm ? comm->world_size() : 1, rank = comm ? comm->rank() : 0;
  const Dataset data = tiny_dataset(kSteps * su.accum * su.batch, 11);
  std::unique_ptr<Backend> be = backend(be_name);
  if (comm) comm->bind(*be);
  const int local = su.batch / N;
  Model model(config(su.dropout), *be, local, be->compute_dtype(), su.zero1 ? int64_t(64) * N : 64);
  model.init(5);
  AdamWConfig oc;
  oc.lr = 3e-3f;
  oc.eps = 1e-3f;  // expect_close says why
  oc.clip_grad = su.clip;
  AdamW opt(model, oc, comm, su.zero1);
  LrSchedule sched;
  sched.base_lr = oc.lr;
  sched.warmup_steps = 3;
  sched.total_steps = kSteps;
  TrainStepOptions so;
  so.smoothing = 0.1f;
  so.seed = 9;
  so.accum_steps = su.accum;
  so.comm = comm;
  so.overlap = su.overlap;
  so.bucket_bytes = su.bucket;
  so.graph = su.graph;
  TrainStep step(model, &opt, so);
  DpRun r;
  for (int s = 0; s < kSteps; ++s) {
    for (int k = 0; k < su.accum; ++k) {
      const int64_t first = int64_t(s * su.accum + k) * su.batch + int64_t(rank) * local;
      std::memcpy(step.images(), data.image(first), size_t(local) * 64);
      std::memcpy(step.labels(), data.labels.data() + first, size_t(local) * sizeof(int32_t));
      step.run(local, sched.at(s), s, k);
    }
    const StepMetrics m = step.take_metrics();
    EXPECT_EQ(m.samples, int64_t(su.batch) * su.accum) << "step " << s << ": the metrics are the global batch's";
    r.losses.push_back(m.loss_sum / double(m.samples));
  }
  r.master = model.get_master();
  opt.gather_state();
  r.m = opt.exp_avg();
  r.v = opt.exp_avg_sq();
  r.adam_steps = opt.steps_taken();
  return r;
}

void expect_bitwise(const DpRun& a, const DpRun& b, const char* what) {
  ASSERT_EQ(a.master.size(), b.master.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.master.data(), b.master.data(), a.master.size() * sizeof(float))) << what << ": weights";
  ASSERT_EQ(a.m.size(), b.m.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.m.data(), b.m.data(), a.m.size() * sizeof(float))) << what << ": exp_avg";
  EXPECT_EQ(0, std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float))) << what << ": exp_avg_sq";
  EXPECT_EQ(a.losses, b.losses) << what;
  EXPECT_EQ(a.adam_steps, b.adam_steps) << what;
}

// Equal up to fp32 summation order. The ranks' gradients are the same sums as one process's,
// reassociated (each rank sums its shard over the batch inside the GEMMs, then the ranks' sums
// are added): a gradient element of magnitude up to ~1 here, a sum of 8 samples' terms, differs
// by at most about 8 · 2^-24 ≈ 5e-7 absolute. AdamW's update lr · m̂ / (√v̂ + eps) is Lipschitz
// in the gradient with constant about lr / eps, but with the default eps 1e-8 a gradient near
// zero has its sign decided by that rounding and moves the weight by ±lr either way (measured:
// 4e-4 after 20 steps), so the runs use eps = 1e-3: a step then moves a weight by at most
// lr · 5e-7 / 1e-3 = 1.5e-6 more, 3e-5 over 20 steps, plus what the changed weights feed back,
// hence the bound 1e-4 absolute (a shard left unreduced — half the batch — moves the weights by
// ~1e-3 in the first step, far outside it). The step losses: the same forward pass on weights
// within that bound, summed in another order: 1e-5 relative.
void expect_close(const DpRun& a, const DpRun& b, const char* what) {
  ASSERT_EQ(a.master.size(), b.master.size()) << what;
  float worst = 0.f;
  size_t at = 0;
  for (size_t i = 0; i < a.master.size(); ++i)
    if (std::fabs(a.master[i] - b.master[i]) > worst) worst = std::fabs(a.master[i] - b.master[i]), at = i;
  EXPECT_LE(worst, 1e-4f) << what << ": weight " << at << " differs by " << worst;
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t s = 0; s < a.losses.size(); ++s)
    EXPECT_NEAR(a.losses[s], b.losses[s], 1e-5 * std::fabs(a.losses[s])) << what << ": step " << s;
  EXPECT_EQ(a.adam_steps, b.adam_steps) << what;
}

class DataParallel : public ::testing::TestWithParam<std::string> {
 protected:
  Communicator& comm() { return test_comm(); }
};

TEST_P(DataParallel, RanksEqualOneProcessWithTheSameGlobalBatch) {
  ASSERT_EQ(comm().world_size(), 2) << "run under mpirun -np 2";
  DpSetup su;
  const DpRun one = train(GetParam(), nullptr, su);
  const DpRun two = train(GetParam(), &comm(), su);
  expect_close(one, two, "2 ranks vs 1 process");
  // Not bitwise (the sums are reassociated): the comparison above is not comparing a run to itself.
  EXPECT_NE(0, std::memcmp(one.master.data(), two.master.data(), one.master.size() * sizeof(float)));
}

TEST_P(DataParallel, RanksEqualOneProcessAccumulatingWithDropout) {
  // 2 ranks × 4 samples vs 1 process × 2 micro-batches of 4: the same samples in each shard and
  // the same dropout masks (shard index micro · ranks + rank).
  DpSetup ranks, accum;
  ranks.dropout = accum.dropout = true;
  accum.batch = 4;
  accum.accum = 2;
  const DpRun one = train(GetParam(), nullptr, accum);
  const DpRun two = train(GetParam(), &comm(), ranks);
  expect_close(one, two, "2 ranks vs 1 process with --grad-accum-steps 2");
}

TEST_P(DataParallel, AccumulationOnRanksEqualsOneProcess) {
  DpSetup su;
  su.accum = 2;
  su.batch = 4;
  expect_close(train(GetParam(), nullptr, su), train(GetParam(), &comm(), su), "2 ranks x 2 micro-batches");
}

TEST_P(DataParallel, OverlappedBucketsEqualOneReductionAfterBackward) {
  DpSetup overlapped, after;
  overlapped.dropout = after.dropout = true;
  after.overlap = false;
  expect_bitwise(train(GetParam(), &comm(), overlapped), train(GetParam(), &comm(), after), "overlap vs after");
  DpSetup one_bucket = overlapped;
  one_bucket.bucket = int64_t(1) << 30;
  expect_bitwise(train(GetParam(), &comm(), overlapped), train(GetParam(), &comm(), one_bucket), "bucket sizes");
}

TEST_P(DataParallel, ZeroOneEqualsPlainDataParallel) {
  DpSetup plain, zero;
  plain.dropout = zero.dropout = true;
  zero.zero1 = true;
  const DpRun a = train(GetParam(), &comm(), plain), b = train(GetParam(), &comm(), zero);
  // The padded arena (64 · ranks) is longer: compare the model's elements.
  DpRun b_cut = b;
  b_cut.master.resize(a.master.size());
  b_cut.m.resize(a.m.size());
  b_cut.v.resize(a.v.size());
  for (size_t i = a.master.size(); i < b.master.size(); ++i) EXPECT_EQ(b.master[i], 0.f) << "padding " << i;
  expect_bitwise(a, b_cut, "ZeRO-1 vs plain, no clipping");
  // With clipping the global norm is Σ over shards then ranks: another summation order of Σ g².
  plain.clip = zero.clip = 0.05f;
  DpRun c = train(GetParam(), &comm(), plain), d = train(GetParam(), &comm(), zero);
  d.master.resize(c.master.size());
  expect_close(c, d, "ZeRO-1 vs plain, clipped");
}

TEST_P(DataParallel, TwoRunsAreBitwiseEqual) {
  DpSetup su;
  su.dropout = true;
  expect_bitwise(train(GetParam(), &comm(), su), train(GetParam(), &comm(), su), "two runs");
}

INSTANTIATE_TEST_SUITE_P(Backends, DataParallel, ::testing::Values("cpu", "cuda-emu"),
                         [](const auto& info) { return info.param == "cpu" ? "cpu" : "cuda_emu"; });

// The Trainer: rank 0 alone writes (each rank is given its own folder here, so a write by rank 1
// would show), the history is the same on every rank, the evaluation covers the whole set.
TEST(DataParallelTrainer, OnlyRankZeroWritesAndEveryRankAgrees) {
  Communicator& comm = test_comm();
  const Dataset train = tiny_dataset(64, 3), val = tiny_dataset(21, 4);  // 21: uneven shards
  std::unique_ptr<Backend> be = make_backend("cpu");
  comm.bind(*be);
  Model model(config(false), *be, 8);
  model.init(1);
  AdamW opt(model, AdamWConfig{}, &comm);
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 16;
  o.progress = false;
  o.comm = &comm;
  const fs::path dir = fs::temp_directory_path() / ("vitcuda_dp_rank" + std::to_string(comm.rank()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  o.output_dir = dir.string();
  Trainer trainer(model, opt, train, val, o);
  std::ostringstream log;
  trainer.fit(log);
  std::vector<int32_t> pred;
  const EvalResult r = trainer.evaluate(val, "val", &pred);
  EXPECT_EQ(r.count, 21);
  EXPECT_EQ(pred.size(), 21u);
  if (comm.rank() == 0) {
    EXPECT_TRUE(fs::exists(dir / "last.safetensors"));
    EXPECT_TRUE(fs::exists(dir / "history.csv"));
    EXPECT_NE(log.str().find("epoch   2/2"), std::string::npos) << log.str();
  } else {
    EXPECT_TRUE(fs::is_empty(dir)) << "rank " << comm.rank() << " wrote into " << dir;
    EXPECT_EQ(log.str(), "") << "only rank 0 logs";
  }
  // Every rank holds the same history and predictions (rank 0's broadcast and compared).
  std::string mine;
  for (const EpochRecord& e : trainer.history())
    mine += std::to_string(e.train_loss) + "," + std::to_string(e.val_top1) + ";";
  for (int32_t p : pred) mine += std::to_string(p);
  EXPECT_EQ(comm.broadcast_string(mine, 0), mine);
  fs::remove_all(dir);
}

// ZeRO-1 needs one equal shard per rank: an arena not padded for the ranks is refused, never
// updated unevenly; padded (arena_multiple = 64 · ranks) it is accepted, whatever the model size.
TEST(DataParallelZero, UnpaddedArenaIsRefusedPaddedAccepted) {
  Communicator& comm = test_comm();
  std::unique_ptr<Backend> be = make_backend("cpu");
  comm.bind(*be);
  ViTConfig c = config(false);
  for (c.num_classes = 4;; ++c.num_classes)  // a model whose 64-padded arena is not a multiple of 128
    if (Model(c, *be, 2).arena_size() % 128 != 0) break;
  Model plain(c, *be, 2);
  expect_error([&] { AdamW opt(plain, AdamWConfig{}, &comm, true); }, {"ZeRO-1 over 2 ranks", "arena_multiple"});
  Model padded(c, *be, 2, be->compute_dtype(), 128);
  EXPECT_EQ(padded.arena_size() % 128, 0);
  EXPECT_NO_THROW(AdamW(padded, AdamWConfig{}, &comm, true));
}

// The message of the Error a Trainer of batch `batch` on `train` throws on every rank ("" if none).
std::string trainer_error(const Dataset& train, int batch) {
  Communicator& comm = test_comm();
  const Dataset val = tiny_dataset(16, 4);
  std::unique_ptr<Backend> be = make_backend("cpu");
  comm.bind(*be);
  Model model(config(false), *be, 8);
  AdamW opt(model, AdamWConfig{}, &comm);
  TrainOptions o;
  o.batch_size = batch;
  o.comm = &comm;
  try {
    Trainer trainer(model, opt, train, val, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DataParallelTrainer, DifferentDataOnARankIsRefusedNamingIt) {
  const std::string e = trainer_error(tiny_dataset(64, test_comm().rank() == 1 ? 99 : 3), 16);
  EXPECT_NE(e.find("the ranks disagree: rank 0 has data "), std::string::npos) << e;
  EXPECT_NE(e.find("rank 1 has data "), std::string::npos) << e;
}

TEST(DataParallelTrainer, GlobalBatchMustDivideOverTheRanks) {
  const std::string e = trainer_error(tiny_dataset(64, 3), 15);
  EXPECT_NE(e.find("batch size 15 must be a multiple of the 2 ranks"), std::string::npos) << e;
}

}  // namespace
}  // namespace vitcuda::test
