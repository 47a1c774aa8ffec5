// vitcuda — all-reduce bandwidth of the data-parallel communicator (include/vitcuda/comm.h), the
// gradient all-reduce of every training step, from 4 KiB to one ViT-B/16 gradient arena. Run
// under the launcher, one process per rank:
//   mpirun -np 2 bench/bench_allreduce --benchmark_counters_tabular=true
// bench_allreduce:       "mpi" communicator, Sum of F32 in place in host memory (the "cpu" backend).
// bench_allreduce_nccl:  the same source with VITCUDA_BENCH_NCCL: "nccl" communicator on the "cuda"
//                        backend's device memory, one GPU per local rank.
// Counters (nccl-tests' definitions, README "Performance"): algbw = bytes / time; busbw = algbw ·
// 2(n-1)/n, the bytes each rank's link carries in a ring all-reduce, comparable with the
// hardware's bandwidth whatever n is. The baseline, timed in the same run at the same size: one
// process's local copy of those bytes (memcpy on the host; a device-to-device copy with NCCL),
// every rank copying at once as the ranks reduce at once; vs_copy = algbw / copy bandwidth.
//
// Every rank runs every benchmark in lockstep: each iteration's time is the slowest rank's (a Max
// reduction), so Google Benchmark picks the same iteration counts on every rank and no rank
// waits alone in a collective. Only rank 0 reports.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/comm.h"
#include "vitcuda/config.h"

using namespace vitcuda;

namespace {

#if defined(VITCUDA_BENCH_NCCL)
constexpr const char* kCommKind = "nccl";
constexpr const char* kBackend = "cuda";
#else
constexpr const char* kCommKind = "mpi";
constexpr const char* kBackend = "cpu";
#endif

Communicator* g_comm = nullptr;
Backend* g_backend = nullptr;
std::map<int64_t, double> g_copy_bw;  // bytes -> the copy baseline's bytes/s at that size

// The slowest rank's seconds: every rank gets the same value.
double slowest(double seconds) {
  g_comm->all_reduce_host(&seconds, 1, ReduceOp::Max);
  return seconds;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// A buffer of the backend's memory, released at scope exit.
struct Buffer {
  explicit Buffer(int64_t elements) : n(elements), ptr(g_backend->alloc(size_t(elements) * sizeof(float))) {
    std::vector<float> init(size_t(n), 1.f);  // ones: the sums stay finite over many iterations
    g_backend->copy_to_device(ptr, init.data(), size_t(n) * sizeof(float));
  }
  ~Buffer() { g_backend->release(ptr); }
  Tensor tensor() const { return Tensor::view(ptr, {n}, DType::F32, g_backend->device()); }
  int64_t n;
  void* ptr;
};

// Baseline: one copy of the same bytes on each rank.
void BM_copy(benchmark::State& st) {
  const int64_t bytes = st.range(0), n = bytes / int64_t(sizeof(float));
  Buffer src(n), dst(n);
  double total = 0;
  for (auto _ : st) {
    const double t0 = now();
    g_backend->copy(src.tensor(), dst.tensor());
    g_backend->synchronize();
    const double dt = slowest(now() - t0);
    st.SetIterationTime(dt);
    total += dt;
  }
  const double bw = double(bytes) * double(st.iterations()) / total;
  g_copy_bw[bytes] = bw;
  st.counters["bytes"] = double(bytes);
  st.counters["copy_GBps"] = bw / 1e9;
}

void BM_allreduce(benchmark::State& st) {
  const int64_t bytes = st.range(0), n = bytes / int64_t(sizeof(float));
  Buffer buf(n);
  const Tensor t = buf.tensor();
  g_comm->all_reduce(t, ReduceOp::Sum);  // warm-up: connections, staging buffers
  g_backend->synchronize();
  double total = 0;
  for (auto _ : st) {
    const double t0 = now();
    g_comm->all_reduce(t, ReduceOp::Sum);
    g_backend->synchronize();  // "nccl" enqueues; "mpi" has finished already
    const double dt = slowest(now() - t0);
    st.SetIterationTime(dt);
    total += dt;
  }
  const int ranks = g_comm->world_size();
  const double algbw = double(bytes) * double(st.iterations()) / total;
  const double busbw = algbw * 2.0 * double(ranks - 1) / double(ranks);
  st.counters["bytes"] = double(bytes);
  st.counters["ranks"] = ranks;
  st.counters["algbw_GBps"] = algbw / 1e9;
  st.counters["busbw_GBps"] = busbw / 1e9;
  const auto copy = g_copy_bw.find(bytes);
  if (copy != g_copy_bw.end()) st.counters["vs_copy"] = algbw / copy->second;
}

// 4 KiB, 16 KiB, ... 256 MiB, then one ViT-B/16 gradient arena: the fp32 gradient of each of its
// parameters (ViTConfig::param_count, 86,567,656 for timm's vit_base_patch16_224 with 1000
// classes; the model's arena adds a few alignment gaps).
std::vector<int64_t> sizes() {
  std::vector<int64_t> s;
  for (int64_t b = 4096; b <= (int64_t(256) << 20); b *= 4) s.push_back(b);
  s.push_back(preset("vit_base_patch16_224").param_count() * int64_t(sizeof(float)));
  return s;
}

// Rank 0 prints; the others' reports go nowhere (and never to rank 0's --benchmark_out file).
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

static int run(int argc, char** argv, std::unique_ptr<Communicator>& comm) {
  comm = make_communicator(kCommKind);
#if defined(VITCUDA_BENCH_NCCL)
  use_cuda_device(comm->local_rank());  // one GPU per local rank, before the backend exists
#endif
  std::unique_ptr<Backend> backend = make_backend(kBackend, DType::F32);
  comm->bind(*backend);
  g_comm = comm.get();
  g_backend = backend.get();

  std::vector<char*> args(argv, argv + argc);
  if (comm->rank() != 0) {
    std::vector<char*> kept;
    for (char* a : args)
      if (std::strncmp(a, "--benchmark_out", 15) != 0) kept.push_back(a);
    args = kept;
  }
  int n = int(args.size());
  benchmark::Initialize(&n, args.data());
  // Registered size by size, the copy first: its bandwidth is there when the all-reduce reports.
  for (int64_t bytes : sizes()) {
    benchmark::RegisterBenchmark("copy", BM_copy)->Arg(bytes)->UseManualTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string(kCommKind) + "_allreduce").c_str(), BM_allreduce)
        ->Arg(bytes)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  if (comm->rank() == 0) {
    std::printf("%s all-reduce, Sum of f32 in place, %d ranks, %s backend memory\n", kCommKind, comm->world_size(),
                kBackend);
    benchmark::RunSpecifiedBenchmarks();
  } else {
    NullReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  comm->barrier();
  return 0;
}

// An error on one rank (no GPU, no memory) ends every rank: the others would wait in a collective.
int main(int argc, char** argv) {
  std::unique_ptr<Communicator> comm;
  try {
    return run(argc, argv, comm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    if (comm && comm->world_size() > 1) comm->abort(1);
    return 1;
  }
}
