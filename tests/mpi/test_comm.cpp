// vitcuda MPI tests — the "mpi" communicator (include/vitcuda/comm.h) on every rank of the job:
// each collective on the "cpu" backend (host tensors, reduced in place) and on the emulated CUDA
// backend "cuda-emu" (device tensors, staged through host memory), against results computed here
// from every rank's inputs. Inputs are small integers (also in the float dtypes), so every sum is
// exact whatever order MPI adds in and the results compare bitwise; Mean is that sum divided by
// the world size, as the communicator computes it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda_backend.h"
#include "tests/mpi/mpi_test.h"
#include "vitcuda/backend.h"
#include "vitcuda/comm.h"

namespace vitcuda::test {
namespace {

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  if constexpr (std::is_same_v<T, double>) return DType::F64;
  if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  return DType::I64;
}

// Parameterised by the backend whose memory the collectives work on.
class MpiCommTest : public ::testing::TestWithParam<std::string> {
 public:  // check_all_reduce (a free template) uses the helpers
  void SetUp() override {
    backend_ = GetParam() == "cpu" ? make_backend("cpu") : make_cuda_backend(DType::F32);
    comm().bind(*backend_);
  }
  void TearDown() override {
    for (void* p : allocs_) backend_->release(p);
  }
  Communicator& comm() { return test_comm(); }
  int rank() { return comm().rank(); }
  int world() { return comm().world_size(); }

  // A tensor of the backend's memory holding `values`.
  template <typename T>
  Tensor upload(const std::vector<T>& values) {
    void* p = backend_->alloc(std::max<size_t>(values.size() * sizeof(T), 1));
    allocs_.push_back(p);
    backend_->copy_to_device(p, values.data(), values.size() * sizeof(T));
    return Tensor::view(p, {int64_t(values.size())}, dtype_of<T>(), backend_->device());
  }
  Tensor alloc(int64_t n, DType dtype) {
    void* p = backend_->alloc(size_t(n) * dtype_size(dtype));
    allocs_.push_back(p);
    return Tensor::view(p, {n}, dtype, backend_->device());
  }
  template <typename T>
  std::vector<T> download(const Tensor& t) {
    std::vector<T> v(static_cast<size_t>(t.numel()));
    backend_->copy_to_host(v.data(), t.data(), t.nbytes());
    return v;
  }

  std::unique_ptr<Backend> backend_;
  std::vector<void*> allocs_;
};

// Rank r's element i: small integers of both signs that differ between ranks, so Max and Min
// pick different ranks at different positions and Sum is exact in every dtype.
template <typename T>
T input(int r, int64_t i) {
  return T(((i * 7 + r * 13) % 23) - 11 + 3 * r);
}

template <typename T>
std::vector<T> inputs(int r, int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) v[size_t(i)] = input<T>(r, i);
  return v;
}

// What op over every rank's input(r, i) gives, computed the way the communicator does (Mean: the
// sum divided by the world size).
template <typename T>
T expected(ReduceOp op, int world, int64_t i) {
  T acc = input<T>(0, i);
  for (int r = 1; r < world; r++) {
    const T x = input<T>(r, i);
    if (op == ReduceOp::Max)
      acc = std::max(acc, x);
    else if (op == ReduceOp::Min)
      acc = std::min(acc, x);
    else
      acc = T(acc + x);
  }
  if (op == ReduceOp::Mean) acc = T(acc / T(world));
  return acc;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

const char* op_str(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "Sum";
    case ReduceOp::Mean: return "Mean";
    case ReduceOp::Max: return "Max";
    case ReduceOp::Min: return "Min";
  }
  return "?";
}

// 1031 elements: no multiple of a vector width or chunk size, so no tail is skipped unseen.
constexpr int64_t kN = 1031;

template <typename T>
void check_all_reduce(MpiCommTest& f, ReduceOp op) {
  Tensor t = f.upload(inputs<T>(f.comm().rank(), kN));
  f.comm().all_reduce(t, op);
  const std::vector<T> got = f.download<T>(t);
  int wrong = 0;
  for (int64_t i = 0; i < kN; i++) {
    const T want = expected<T>(op, f.comm().world_size(), i);
    if (!same_bits(got[size_t(i)], want) && wrong++ < 5)
      ADD_FAILURE() << op_str(op) << " " << dtype_name(dtype_of<T>()) << " [" << i << "]: got " << got[size_t(i)]
                    << ", want " << want;
  }
  EXPECT_EQ(wrong, 0) << op_str(op) << " " << dtype_name(dtype_of<T>());
}

TEST_P(MpiCommTest, RanksMatchTheLauncher) {
  EXPECT_EQ(comm().name(), "mpi");
  EXPECT_EQ(world(), launcher_world_size());
  EXPECT_EQ(rank(), launcher_rank());
  EXPECT_GE(world(), 2) << "run under mpirun -np 2 (ctest mpi_tests)";
  // ctest runs every rank on this machine.
  EXPECT_EQ(comm().local_size(), world());
  EXPECT_EQ(comm().local_rank(), rank());
  EXPECT_FALSE(comm().graph_capturable());
  EXPECT_EQ(comm().backend(), backend_.get());
}

TEST_P(MpiCommTest, AllReduceFloat) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min}) {
    check_all_reduce<float>(*this, op);
    check_all_reduce<double>(*this, op);
  }
}

TEST_P(MpiCommTest, AllReduceInt) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
    check_all_reduce<int32_t>(*this, op);
    check_all_reduce<int64_t>(*this, op);
  }
}

// Mean of a sum that the world size does not divide: the exact quotient, rounded once.
TEST_P(MpiCommTest, AllReduceMeanOfFractions) {
  Tensor t = upload(std::vector<float>{float(rank() + 1), 0.1f * float(rank())});
  comm().all_reduce(t, ReduceOp::Mean);
  const std::vector<float> got = download<float>(t);
  float sum0 = 0, sum1 = 0;
  for (int r = 0; r < world(); r++) sum0 += float(r + 1), sum1 += 0.1f * float(r);
  EXPECT_EQ(got[0], sum0 / float(world()));
  EXPECT_NEAR(got[1], sum1 / float(world()), 1e-6);  // sum of fractions: MPI's order of additions
}

// Every rank's chunk c is (its input + c), so chunk rank() of the result is known.
TEST_P(MpiCommTest, ReduceScatter) {
  const int64_t chunk = 37, n = chunk * world();
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min}) {
    std::vector<float> mine = inputs<float>(rank(), n);
    Tensor t = upload(mine);
    comm().reduce_scatter(t, op);
    const std::vector<float> got = download<float>(t);
    int wrong = 0;
    for (int64_t j = 0; j < chunk; j++) {
      const int64_t i = rank() * chunk + j;
      if (!same_bits(got[size_t(i)], expected<float>(op, world(), i))) wrong++;
    }
    EXPECT_EQ(wrong, 0) << op_str(op) << ": chunk " << rank() << " of the result";
  }
  // Integers too (I64, the sample counters' dtype).
  Tensor t = upload(inputs<int64_t>(rank(), n));
  comm().reduce_scatter(t, ReduceOp::Sum);
  const std::vector<int64_t> got = download<int64_t>(t);
  for (int64_t j = 0; j < chunk; j++)
    EXPECT_EQ(got[size_t(rank() * chunk + j)], expected<int64_t>(ReduceOp::Sum, world(), rank() * chunk + j));
}

// Rank r contributes chunk r (the others hold -1, which must not survive) and receives all.
TEST_P(MpiCommTest, AllGather) {
  const int64_t chunk = 29, n = chunk * world();
  std::vector<int32_t> v(size_t(n), -1);
  for (int64_t j = 0; j < chunk; j++) v[size_t(rank() * chunk + j)] = int32_t(rank() * 1000 + j);
  Tensor t = upload(v);
  comm().all_gather(t);
  const std::vector<int32_t> got = download<int32_t>(t);
  for (int c = 0; c < world(); c++)
    for (int64_t j = 0; j < chunk; j++)
      EXPECT_EQ(got[size_t(c * chunk + j)], int32_t(c * 1000 + j)) << "chunk " << c << " element " << j;

  std::vector<double> d(size_t(n), -1.0);
  for (int64_t j = 0; j < chunk; j++) d[size_t(rank() * chunk + j)] = rank() + 0.25 * double(j);
  Tensor td = upload(d);
  comm().all_gather(td);
  const std::vector<double> gotd = download<double>(td);
  for (int c = 0; c < world(); c++)
    for (int64_t j = 0; j < chunk; j++) EXPECT_EQ(gotd[size_t(c * chunk + j)], c + 0.25 * double(j));
}

TEST_P(MpiCommTest, BroadcastFromRank1) {
  const int root = 1;
  std::vector<double> v(kN);
  for (int64_t i = 0; i < kN; i++) v[size_t(i)] = rank() == root ? 0.5 * double(i) - 7 : -99.0;
  Tensor t = upload(v);
  comm().broadcast(t, root);
  const std::vector<double> got = download<double>(t);
  int wrong = 0;
  for (int64_t i = 0; i < kN; i++) wrong += got[size_t(i)] != 0.5 * double(i) - 7;
  EXPECT_EQ(wrong, 0);

  Tensor ti = upload(std::vector<int64_t>{rank() == root ? int64_t(1) << 40 : 0, rank() == root ? -5 : 0});
  comm().broadcast(ti, root);
  EXPECT_EQ(download<int64_t>(ti), (std::vector<int64_t>{int64_t(1) << 40, -5}));
}

// Each rank writes a file into a folder all ranks share, then meets the others at the barrier:
// after it, every rank's file exists. Without a barrier, rank 0 would look before rank 1 wrote.
TEST_P(MpiCommTest, Barrier) {
  std::string dir;
  if (rank() == 0) {
    char tmpl[] = "/tmp/vitcuda_mpi_barrier_XXXXXX";
    dir = mkdtemp(tmpl) ? tmpl : "";
  }
  dir = comm().broadcast_string(dir, 0);
  ASSERT_FALSE(dir.empty());  // the same on every rank: no rank is left behind
  comm().barrier();           // every rank has the folder name before any writes
  const auto file_of = [&](int r) { return dir + "/rank" + std::to_string(r); };
  if (rank() == 1) usleep(200 * 1000);  // rank 1 writes late: a missing barrier shows, a present one waits
  if (FILE* f = std::fopen(file_of(rank()).c_str(), "w")) std::fclose(f);
  comm().barrier();
  for (int r = 0; r < world(); r++) EXPECT_EQ(access(file_of(r).c_str(), F_OK), 0) << "rank " << r << "'s file";
  comm().barrier();  // everyone has looked before rank 0 removes
  if (rank() == 0) {
    for (int r = 0; r < world(); r++) std::remove(file_of(r).c_str());
    rmdir(dir.c_str());
  }
}

// Several buckets started back to back and waited for out of order give what the blocking
// all_reduce gives, bit for bit; a handle is waited for once.
TEST_P(MpiCommTest, AllReduceStartWaitOutOfOrder) {
  const std::vector<int64_t> sizes = {1, 1000, 4097, 70000, 3};
  const std::vector<ReduceOp> ops = {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max};
  std::vector<Tensor> started, blocking;
  for (size_t b = 0; b < sizes.size(); b++) {
    std::vector<float> v(size_t(sizes[b]));
    // Halves: exact sums in any order, so the two paths agree bitwise on any number of ranks
    // (MPI's non-blocking and blocking algorithms may add in different orders).
    for (int64_t i = 0; i < sizes[b]; i++) v[size_t(i)] = 0.5f * float((i * 31 + rank() * 17 + int64_t(b)) % 97);
    started.push_back(upload(v));
    blocking.push_back(upload(v));
  }
  std::vector<int> handles;
  for (size_t b = 0; b < sizes.size(); b++) handles.push_back(comm().all_reduce_start(started[b], ops[b]));
  for (size_t b : {size_t(2), size_t(0), size_t(4), size_t(3), size_t(1)}) comm().wait(handles[b]);
  for (size_t b = 0; b < sizes.size(); b++) comm().all_reduce(blocking[b], ops[b]);
  for (size_t b = 0; b < sizes.size(); b++) {
    const std::vector<float> a = download<float>(started[b]), c = download<float>(blocking[b]);
    EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)), 0) << "bucket " << b;
  }
  // Values, not just agreement: bucket 0 is one element.
  float want = 0;
  for (int r = 0; r < world(); r++) want += 0.5f * float((r * 17) % 97);
  EXPECT_EQ(download<float>(started[0])[0], want);

  expect_error([&] { comm().wait(handles[0]); }, {"wait", "in flight"});
  expect_error([&] { comm().wait(12345); }, {"wait(12345)"});
  // Handles are reused once waited for: a second round works the same.
  const int h = comm().all_reduce_start(started[0], ReduceOp::Sum);
  comm().wait(h);
  EXPECT_EQ(download<float>(started[0])[0], want * float(world()));
}

TEST_P(MpiCommTest, HostHelpers) {
  double d[4] = {rank() + 0.5, -double(rank()), 1e300 * (rank() + 1) / world(), 3.0};
  comm().all_reduce_host(d, 2, ReduceOp::Sum);
  double sum = 0, neg = 0;
  for (int r = 0; r < world(); r++) sum += r + 0.5, neg -= r;
  EXPECT_EQ(d[0], sum);
  EXPECT_EQ(d[1], neg);
  EXPECT_EQ(d[3], 3.0) << "beyond n: untouched";
  comm().all_reduce_host(d + 2, 1, ReduceOp::Max);
  EXPECT_EQ(d[2], 1e300 * world() / world());
  double m = double(rank());
  comm().all_reduce_host(&m, 1, ReduceOp::Mean);
  EXPECT_EQ(m, double(world() - 1) / 2);
  double lo = 10.0 - rank();
  comm().all_reduce_host(&lo, 1, ReduceOp::Min);
  EXPECT_EQ(lo, 10.0 - (world() - 1));

  int64_t i[3] = {int64_t(rank()) << 40, rank() == 1 ? 7 : -3, rank()};
  comm().all_reduce_host(i, 1, ReduceOp::Sum);
  comm().all_reduce_host(i + 1, 1, ReduceOp::Max);
  comm().all_reduce_host(i + 2, 1, ReduceOp::Min);
  int64_t want = 0;
  for (int r = 0; r < world(); r++) want += int64_t(r) << 40;
  EXPECT_EQ(i[0], want);
  EXPECT_EQ(i[1], 7);
  EXPECT_EQ(i[2], 0);
  comm().all_reduce_host(i, 0, ReduceOp::Sum);  // nothing to do, on every rank
  expect_error([&] { comm().all_reduce_host(i, 1, ReduceOp::Mean); }, {"mpi all_reduce_host", "Mean", "int64"});
  expect_error([&] { comm().all_reduce_host(d, -1, ReduceOp::Sum); }, {"negative count"});
}

TEST_P(MpiCommTest, BroadcastString) {
  // 1 MiB + 7 bytes, every byte value, from rank 1: the length travels first.
  std::string s;
  if (rank() == 1)
    for (size_t i = 0; i < (size_t(1) << 20) + 7; i++) s.push_back(char((i * 131) & 0xff));
  const std::string got = comm().broadcast_string(s, 1);
  ASSERT_EQ(got.size(), (size_t(1) << 20) + 7);
  int wrong = 0;
  for (size_t i = 0; i < got.size(); i++) wrong += got[i] != char((i * 131) & 0xff);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(comm().broadcast_string(rank() == 0 ? "" : "not root's", 0), "");
  expect_error([&] { comm().broadcast_string("x", world()); }, {"broadcast_string", "root", "not a rank"});
}

std::string describe_difference(const std::string& root, const std::string& mine, int rank) {
  return "run record of rank " + std::to_string(rank) + " is '" + mine + "', rank 0's is '" + root + "'";
}

TEST_P(MpiCommTest, CheckSameOnEveryRank) {
  EXPECT_NO_THROW(check_same_on_every_rank(comm(), "lr=0.001 batch=64", describe_difference));

  // Rank 1 (and, with more ranks, every later one) differs: rank 1 is named, on every rank.
  const std::string text = rank() == 0 ? "lr=0.001" : "lr=0.002 rank" + std::to_string(rank());
  std::string message;
  bool collective = false;
  try {
    check_same_on_every_rank(comm(), text, describe_difference);
  } catch (const CollectiveError& e) {
    collective = true;
    message = e.what();
  } catch (const std::exception& e) {
    message = std::string("wrong exception type: ") + e.what();
  }
  EXPECT_TRUE(collective) << message;
  EXPECT_EQ(message, "run record of rank 1 is 'lr=0.002 rank1', rank 0's is 'lr=0.001'");
  // The same text on every rank (compared with rank 0's).
  EXPECT_EQ(comm().broadcast_string(message, 0), message);

  // Without describe: a default naming the rank.
  try {
    check_same_on_every_rank(comm(), text, nullptr);
    ADD_FAILURE() << "no CollectiveError";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
}

TEST_P(MpiCommTest, Errors) {
  Tensor i32 = upload(std::vector<int32_t>(8, 1));
  expect_error([&] { comm().all_reduce(i32, ReduceOp::Mean); }, {"mpi all_reduce", "Mean", "i32", "[8] i32"});
  expect_error([&] { comm().all_reduce_start(i32, ReduceOp::Mean); }, {"all_reduce_start", "Mean", "i32"});
  Tensor bf16 = alloc(8, DType::BF16);
  expect_error([&] { comm().all_reduce(bf16, ReduceOp::Sum); },
               {"mpi all_reduce", "[8] bf16", "dtype bf16 is not supported", "f32, f64, i32, i64"});
  Tensor odd = alloc(world() * 3 + 1, DType::F32);
  const std::string n = std::to_string(world() * 3 + 1);
  expect_error([&] { comm().reduce_scatter(odd, ReduceOp::Sum); },
               {"mpi reduce_scatter", n.c_str(), "divisible by the world size"});
  expect_error([&] { comm().all_gather(odd); }, {"mpi all_gather", "divisible"});
  Tensor f = alloc(4, DType::F32);
  expect_error([&] { comm().broadcast(f, world()); }, {"mpi broadcast", "root", "not a rank"});
  expect_error([&] { comm().broadcast(f, -1); }, {"root -1"});
  expect_error([&] { comm().all_reduce(Tensor{}, ReduceOp::Sum); }, {"undefined"});
  // After the refused calls the communicator still works (nothing was half-started).
  check_all_reduce<float>(*this, ReduceOp::Sum);
}

INSTANTIATE_TEST_SUITE_P(Backends, MpiCommTest, ::testing::Values("cpu", "cuda-emu"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "cpu" ? std::string("cpu") : std::string("cuda_emu");
                         });

// A second MPI communicator beside the job's: its own ranks and collectives, and destroying it
// leaves MPI running for the first (the lifetime is counted).
TEST(MpiComm, SecondCommunicatorAndLifetime) {
  {
    auto second = make_communicator("mpi");
    EXPECT_EQ(second->rank(), test_comm().rank());
    int64_t x = second->rank() + 1;
    second->all_reduce_host(&x, 1, ReduceOp::Sum);
    EXPECT_EQ(x, int64_t(test_comm().world_size()) * (test_comm().world_size() + 1) / 2);
  }
  int64_t y = 1;
  test_comm().all_reduce_host(&y, 1, ReduceOp::Sum);
  EXPECT_EQ(y, test_comm().world_size());
}

// Under mpirun, "auto" is "mpi".
TEST(MpiComm, AutoIsMpiUnderTheLauncher) {
  auto c = make_communicator("auto");
  EXPECT_EQ(c->name(), "mpi");
  EXPECT_EQ(c->world_size(), test_comm().world_size());
}

// A device tensor needs a bound backend: a fresh communicator has none.
TEST(MpiComm, DeviceTensorWithoutBackend) {
  auto c = make_communicator("mpi");
  auto emu = make_cuda_backend(DType::F32);
  void* p = emu->alloc(16);
  Tensor t = Tensor::view(p, {4}, DType::F32, Device::CUDA);
  expect_error([&] { c->all_reduce(t, ReduceOp::Sum); }, {"mpi all_reduce", "[4] f32", "no backend is bound"});
  emu->release(p);
}

TEST(MpiComm, Kinds) {
  const std::vector<std::string> kinds = communicator_kinds();
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "mpi"), kinds.end());
  EXPECT_EQ(kinds.front(), "single");
}

}  // namespace
}  // namespace vitcuda::test
