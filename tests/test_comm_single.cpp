// vitcuda tests — the "single" communicator and the communicator factory (include/vitcuda/comm.h),
// in one process without MPI: every collective leaves its tensor as it was (one rank's reduction
// is its values) after the same checks the other communicators make; make_communicator names
// what it cannot make and why; the launcher's environment is read as comm.h says.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "vitcuda/backend.h"
#include "vitcuda/comm.h"

namespace vitcuda::test {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class SingleCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    comm_ = make_communicator("single");
    backend_ = make_backend("cpu");
    comm_->bind(*backend_);
  }
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(SingleCommTest, OneRank) {
  EXPECT_EQ(comm_->name(), "single");
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->world_size(), 1);
  EXPECT_EQ(comm_->local_rank(), 0);
  EXPECT_EQ(comm_->local_size(), 1);
  EXPECT_TRUE(comm_->is_root());
  EXPECT_TRUE(comm_->graph_capturable());
  EXPECT_EQ(comm_->backend(), backend_.get());
}

// Every collective and op leaves the values bit for bit (including a NaN and -0).
TEST_F(SingleCommTest, CollectivesAreTheIdentity) {
  const std::vector<float> v = {1.5f, -0.f, std::nanf(""), 3e38f, -7.25f, 0.1f};
  std::vector<float> x = v;
  Tensor t = Tensor::view(x.data(), {int64_t(x.size())}, DType::F32);
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min}) {
    comm_->all_reduce(t, op);
    comm_->reduce_scatter(t, op);
    comm_->wait(comm_->all_reduce_start(t, op));
  }
  comm_->all_gather(t);
  comm_->broadcast(t, 0);
  comm_->barrier();
  EXPECT_EQ(std::memcmp(x.data(), v.data(), v.size() * sizeof(float)), 0);

  std::vector<int64_t> i = {int64_t(1) << 50, -3};
  comm_->all_reduce(Tensor::view(i.data(), {2}, DType::I64), ReduceOp::Sum);
  EXPECT_EQ(i, (std::vector<int64_t>{int64_t(1) << 50, -3}));
  // BF16 is accepted (as "nccl" accepts it), so code for any communicator runs on one process.
  uint16_t b[2] = {0x3f80, 0xc000};
  comm_->all_reduce(Tensor::view(b, {2}, DType::BF16), ReduceOp::Mean);
  EXPECT_EQ(b[0], 0x3f80);
  EXPECT_EQ(b[1], 0xc000);
}

TEST_F(SingleCommTest, HostHelpers) {
  double d[3] = {1.5, -2.0, 1e308};
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min}) comm_->all_reduce_host(d, 3, op);
  EXPECT_EQ(d[0], 1.5);
  EXPECT_EQ(d[1], -2.0);
  EXPECT_EQ(d[2], 1e308);
  int64_t n[2] = {5, -6};
  comm_->all_reduce_host(n, 2, ReduceOp::Sum);
  comm_->all_reduce_host(n, 2, ReduceOp::Min);
  EXPECT_EQ(n[0], 5);
  EXPECT_EQ(n[1], -6);
  EXPECT_EQ(comm_->broadcast_string("run record", 0), "run record");
}

// The misuse "mpi" and "nccl" refuse is refused on one process too, with the same words.
TEST_F(SingleCommTest, Errors) {
  int32_t i[4] = {};
  const Tensor ti = Tensor::view(i, {4}, DType::I32);
  std::string e = error_of([&] { comm_->all_reduce(ti, ReduceOp::Mean); });
  EXPECT_TRUE(contains(e, "single all_reduce") && contains(e, "[4] i32") && contains(e, "Mean")) << e;
  uint8_t u[4] = {};
  e = error_of([&] { comm_->all_reduce(Tensor::view(u, {4}, DType::U8), ReduceOp::Sum); });
  EXPECT_TRUE(contains(e, "dtype u8 is not supported") && contains(e, "f32, f64, bf16, i32, i64")) << e;
  e = error_of([&] { comm_->broadcast(ti, 1); });
  EXPECT_TRUE(contains(e, "single broadcast") && contains(e, "root 1 is not a rank")) << e;
  e = error_of([&] { comm_->broadcast_string("x", 1); });
  EXPECT_TRUE(contains(e, "root 1")) << e;
  e = error_of([&] { comm_->all_reduce(Tensor{}, ReduceOp::Sum); });
  EXPECT_TRUE(contains(e, "undefined")) << e;
  int64_t n = 1;
  e = error_of([&] { comm_->all_reduce_host(&n, 1, ReduceOp::Mean); });
  EXPECT_TRUE(contains(e, "Mean") && contains(e, "int64")) << e;
  e = error_of([&] { comm_->all_reduce_host(&n, -2, ReduceOp::Sum); });
  EXPECT_TRUE(contains(e, "negative count -2")) << e;
  // A device tensor with no backend bound (a fresh communicator): said so, not dereferenced.
  auto fresh = make_communicator("single");
  float f[2] = {};
  e = error_of([&] { fresh->all_reduce(Tensor::view(f, {2}, DType::F32, Device::CUDA), ReduceOp::Sum); });
  EXPECT_TRUE(contains(e, "no backend is bound")) << e;
}

TEST_F(SingleCommTest, CheckSameIsANoOp) {
  const auto never = [](const std::string&, const std::string&, int) -> std::string {
    ADD_FAILURE() << "describe called on one rank";
    return "";
  };
  EXPECT_NO_THROW(check_same_on_every_rank(*comm_, "anything", never));
}

// abort(code) ends the process with that status, after what it printed.
TEST_F(SingleCommTest, AbortExits) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::fprintf(stderr, "last words before abort\n");
        comm_->abort(3);
      },
      ::testing::ExitedWithCode(3), "last words before abort");
}

// ---- make_communicator ----------------------------------------------------------------------------

TEST(MakeCommunicator, Kinds) {
  const std::vector<std::string> kinds = communicator_kinds();
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.front(), "single");
  for (const std::string& k : kinds) EXPECT_TRUE(k == "single" || k == "mpi" || k == "nccl") << k;
}

TEST(MakeCommunicator, UnknownKind) {
  const std::string e = error_of([] { make_communicator("gloo"); });
  EXPECT_TRUE(contains(e, "'gloo'") && contains(e, "single, mpi, nccl, auto")) << e;
}

// Where a kind is not built in, the error names it and why (this test's build decides which).
TEST(MakeCommunicator, MissingKindsSayWhy) {
  const std::vector<std::string> kinds = communicator_kinds();
  const auto has = [&](const char* k) { return std::find(kinds.begin(), kinds.end(), k) != kinds.end(); };
  if (!has("nccl")) {
    const std::string e = error_of([] { make_communicator("nccl"); });
    EXPECT_TRUE(contains(e, "communicator 'nccl'") && contains(e, "no NCCL communicator")) << e;
    EXPECT_TRUE(contains(e, "at configure time")) << e;  // why: what was not found when it was built
  }
  if (!has("mpi")) {
    const std::string e = error_of([] { make_communicator("mpi"); });
    EXPECT_TRUE(contains(e, "communicator 'mpi'") && contains(e, "no MPI")) << e;
  }
  if (has("nccl") && has("mpi")) GTEST_SKIP() << "this build has every communicator";
}

// Sets or unsets environment variables for a scope, restoring them after.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second)
        setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

constexpr const char* kLauncherVars[] = {
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
    "SLURM_PROCID",         "SLURM_NTASKS"};

TEST(Launcher, Environment) {
  ScopedEnv env;
  for (const char* v : kLauncherVars) env.set(v, nullptr);
  EXPECT_EQ(launcher_rank(), 0);
  EXPECT_EQ(launcher_world_size(), 1);
  // No launcher: "auto" is "single".
  EXPECT_EQ(make_communicator("auto")->name(), "single");

  env.set("SLURM_PROCID", "3");
  env.set("SLURM_NTASKS", "8");
  EXPECT_EQ(launcher_rank(), 3);
  EXPECT_EQ(launcher_world_size(), 8);
  env.set("PMIX_RANK", "5");
  EXPECT_EQ(launcher_rank(), 5);  // PMIx before Slurm
  env.set("PMI_RANK", "6");
  env.set("PMI_SIZE", "7");
  EXPECT_EQ(launcher_rank(), 6);
  EXPECT_EQ(launcher_world_size(), 7);
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_SIZE", "2");
  EXPECT_EQ(launcher_rank(), 1);  // Open MPI's own first
  EXPECT_EQ(launcher_world_size(), 2);
  // Garbage is not a rank: the next variable is read.
  env.set("OMPI_COMM_WORLD_RANK", "1x");
  env.set("OMPI_COMM_WORLD_SIZE", "-2");
  EXPECT_EQ(launcher_rank(), 6);
  EXPECT_EQ(launcher_world_size(), 7);
}

// A data-parallel rank picks its GPU by local rank: an ordinal that does not exist is named, with
// the GPU count (no machine here has 99 GPUs; none has GPU -1).
TEST(UseCudaDevice, MissingOrdinalIsNamed) {
  for (int ordinal : {99, -1}) {
    const std::string e = error_of([&] { use_cuda_device(ordinal); });
    EXPECT_TRUE(contains(e, "use_cuda_device(" + std::to_string(ordinal) + ")") && contains(e, "no such GPU") &&
                contains(e, "CUDA GPU"))
        << e;
  }
  // In a build without CUDA every rank runs on the CPU: 0 is accepted (a no-op).
  const bool cuda_build = !contains(error_of([] { make_backend("cuda"); }), "has no CUDA backend");
  if (!cuda_build) {
    EXPECT_EQ(error_of([] { use_cuda_device(0); }), "(no error)");
  }
}

}  // namespace
}  // namespace vitcuda::test
