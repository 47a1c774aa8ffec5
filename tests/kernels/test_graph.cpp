// CUDA Graphs through kernels/runtime.h: a stream's launches, copies, memsets and a cuBLASLt GEMM
// captured once and replayed N times give the bits of N eager runs; a captured host-to-device
// copy reads its (pinned) source when the graph runs; the runtime counters of the replays equal
// the eager ones (plus graph_launches); what CUDA refuses during a capture is refused, by name.
// Both builds: natively (on a GPU) these check the real cudaGraph path.
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "kernel_test.h"
#include "kernels/gemm.h"

namespace vitcuda::test {
namespace {

// acc[i] = acc[i] * 0.5 + x[i] * scale (a state that evolves run after run)
__global__ void graph_axpy_kernel(float* acc, const float* x, float scale, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) acc[i] = acc[i] * 0.5f + x[i] * scale;
}
__global__ void graph_add_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

constexpr int kM = 8, kN = 16, kK = 8;  // acc is [kM, kK], b [kK, kN], d [kM, kN]
constexpr int kAcc = kM * kK;

// The device state one "step" works on, and the step itself: what is captured.
struct Work {
  rt::Stream stream = rt::stream_create();
  float* host = static_cast<float*>(rt::host_alloc_pinned(kAcc * sizeof(float)));  // the step's input
  rt::DeviceBuffer<float> x{kAcc}, tmp{kAcc}, acc{kAcc}, b{kK * kN}, d{kM * kN};
  GemmArgs gemm_args;
  rt::DeviceBuffer<unsigned char> workspace;

  Work() {
    acc.upload(random_floats(kAcc, -1.f, 1.f, 1));
    b.upload(random_floats(kK * kN, -1.f, 1.f, 2));
    d.zero();
    gemm_args =
        dense_gemm(false, false, kM, kN, kK, GemmType::F32, GemmType::F32, acc.get(), b.get(), d.get(), nullptr, 0);
    gemm_args.beta = 1.f;  // d accumulates: every step's product shows in the result
    workspace = rt::DeviceBuffer<unsigned char>(gemm_workspace_bytes(gemm_args));
    gemm_args.workspace = workspace.get();
    gemm_args.workspace_bytes = workspace.size();
    rt::device_synchronize();  // the set-up above ran on the default stream; `stream` does not wait for it
  }
  ~Work() {
    rt::host_free_pinned(host);
    rt::stream_destroy(stream);
  }
  // One step on `stream`: 2 launches, 1 copy to device, 1 device copy, 1 memset, 1 GEMM.
  void step() {
    rt::copy_to_device(x.get(), host, kAcc * sizeof(float), stream);
    rt::memset_device(tmp.get(), 0, kAcc * sizeof(float), stream);
    launch(graph_add_kernel, dim3(1), dim3(kAcc), 0, stream, tmp.get(), static_cast<const float*>(x.get()), kAcc);
    launch(graph_axpy_kernel, dim3(2), dim3(kAcc / 2), 0, stream, acc.get(), static_cast<const float*>(tmp.get()),
           0.25f, kAcc);
    gemm(gemm_args, stream);
    rt::copy_device_to_device(tmp.get(), d.get(), kAcc * sizeof(float), stream);  // d's first rows
  }
  // The host input of run r (written before the run, read by the run's copy).
  void set_input(int r) {
    const std::vector<float> v = random_floats(kAcc, -2.f, 2.f, 100 + r);
    std::memcpy(host, v.data(), kAcc * sizeof(float));
  }
  std::vector<float> state() {
    rt::stream_synchronize(stream);
    std::vector<float> out = acc.download(), dd = d.download(), t = tmp.download();
    out.insert(out.end(), dd.begin(), dd.end());
    out.insert(out.end(), t.begin(), t.end());
    return out;
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_counters_equal(const RuntimeCounters& got, const RuntimeCounters& want) {
  EXPECT_EQ(got.launches, want.launches);
  EXPECT_EQ(got.gemms, want.gemms);
  EXPECT_EQ(got.h2d, want.h2d);
  EXPECT_EQ(got.d2h, want.d2h);
  EXPECT_EQ(got.d2d, want.d2d);
  EXPECT_EQ(got.memsets, want.memsets);
  EXPECT_EQ(got.h2d_bytes, want.h2d_bytes);
  EXPECT_EQ(got.d2h_bytes, want.d2h_bytes);
  EXPECT_EQ(got.syncs, want.syncs);
  EXPECT_EQ(got.graph_launches, want.graph_launches);
}

constexpr int kRuns = 4;

TEST_F(KernelTest, GraphReplaysEqualEagerRunsBitwiseAndCountTheSame) {
  // Eager: kRuns steps, counted and recorded.
  std::vector<float> eager;
  RuntimeCounters eager_counts;
  std::vector<LaunchRecord> eager_records;
  {
    Work w;
    rt::stream_synchronize(w.stream);
    rt::reset_counters();
    rt::launch_log().recording = true;
    (void)rt::take_launch_records();
    for (int r = 0; r < kRuns; ++r) {
      w.set_input(r);
      w.step();
      rt::stream_synchronize(w.stream);  // the next set_input overwrites the source
    }
    eager_counts = rt::counters();
    eager_records = rt::take_launch_records();
    rt::launch_log().recording = false;
    eager = w.state();
  }
  // Captured once, replayed kRuns times with a new input before each.
  Work w;
  rt::stream_synchronize(w.stream);
  rt::reset_counters();
  rt::launch_log().recording = true;
  (void)rt::take_launch_records();
  const RuntimeCounters before = rt::counters();
  rt::stream_begin_capture(w.stream);
  EXPECT_TRUE(rt::stream_is_capturing(w.stream));
  w.step();
  rt::Graph g = rt::stream_end_capture(w.stream);
  EXPECT_FALSE(rt::stream_is_capturing(w.stream));
  expect_counters_equal(rt::counters(), before);  // the capture itself counts nothing
  EXPECT_TRUE(rt::take_launch_records().empty()) << "the capture logged records";
  for (int r = 0; r < kRuns; ++r) {
    w.set_input(r);
    rt::graph_launch(g, w.stream);
    rt::stream_synchronize(w.stream);
  }
  RuntimeCounters want = eager_counts;
  want.graph_launches = kRuns;
  expect_counters_equal(rt::counters(), want);
  const std::vector<LaunchRecord> replay_records = rt::take_launch_records();
  rt::launch_log().recording = false;
  ASSERT_EQ(replay_records.size(), eager_records.size());
  for (size_t i = 0; i < eager_records.size(); ++i) {
    EXPECT_EQ(replay_records[i].kernel, eager_records[i].kernel) << i;
    EXPECT_EQ(replay_records[i].grid[0], eager_records[i].grid[0]) << i;
    EXPECT_EQ(replay_records[i].m, eager_records[i].m) << i;
  }
  const std::vector<float> replayed = w.state();
  rt::graph_destroy(g);
  EXPECT_TRUE(same_bits(replayed, eager)) << "replays differ from eager runs";
  // and the runs did something: the state is not the initial one
  Work fresh;
  EXPECT_FALSE(same_bits(fresh.state(), eager));
}

TEST_F(KernelTest, CapturedCopyReadsItsHostSourceWhenTheGraphRuns) {
  rt::Stream s = rt::stream_create();
  constexpr int n = 64;
  auto* host = static_cast<float*>(rt::host_alloc_pinned(n * sizeof(float)));
  rt::DeviceBuffer<float> dev(n);
  for (int i = 0; i < n; ++i) host[i] = 1.f;
  rt::stream_begin_capture(s);
  rt::copy_to_device(dev.get(), host, n * sizeof(float), s);
  rt::Graph g = rt::stream_end_capture(s);
  for (int round = 2; round <= 3; ++round) {
    for (int i = 0; i < n; ++i) host[i] = float(round * 100 + i);  // written after the capture
    rt::graph_launch(g, s);
    rt::stream_synchronize(s);
    const std::vector<float> got = dev.download();
    for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], float(round * 100 + i)) << "round " << round << ", element " << i;
  }
  rt::graph_destroy(g);
  rt::graph_destroy(nullptr);  // fine
  rt::host_free_pinned(host);
  rt::stream_destroy(s);
}

TEST_F(KernelTest, CaptureRefusesWhatCudaRefusesByName) {
  rt::Stream s = rt::stream_create(), other = rt::stream_create();
  rt::Event ev = rt::event_create();
  rt::DeviceBuffer<float> buf(32);
  float host[32] = {};
  void* to_free = rt::device_malloc(256);
  struct Case {
    const char* name;
    std::function<void()> call;
  };
  const Case cases[] = {
      {"copy_to_host", [&] { rt::copy_to_host(host, buf.get(), sizeof host, s); }},
      {"stream_synchronize", [&] { rt::stream_synchronize(s); }},
      {"device_synchronize", [&] { rt::device_synchronize(); }},
      {"event_synchronize", [&] { rt::event_synchronize(ev); }},
      {"device_malloc", [&] { (void)rt::device_malloc(64); }},
      {"device_free", [&] { rt::device_free(to_free); }},
      {"host_alloc_pinned", [&] { (void)rt::host_alloc_pinned(64); }},
      {"graph_axpy_kernel",
       [&] {  // a launch on another stream
         launch(graph_axpy_kernel, dim3(1), dim3(32), 0, other, buf.get(), static_cast<const float*>(buf.get()), 1.f,
                32);
       }},
      {"memset_device", [&] { rt::memset_device(buf.get(), 0, 64, other); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    rt::stream_begin_capture(s);
    launch(graph_add_kernel, dim3(1), dim3(32), 0, s, buf.get(), static_cast<const float*>(buf.get()), 32);
    expect_error(c.call, {c.name, "captur"});
    expect_error([&] { rt::graph_destroy(rt::stream_end_capture(s)); }, {"stream_end_capture", "invalidated", c.name});
    EXPECT_FALSE(rt::stream_is_capturing(s));
  }
  rt::device_free(to_free);  // not freed during capture: still ours
  // A DeviceBuffer destroyed while a capture is open does not throw from its destructor; it
  // invalidates the capture (and leaks its memory).
  auto doomed = std::make_unique<rt::DeviceBuffer<float>>(8);
  float* const leaked = doomed->get();
  rt::stream_begin_capture(s);
  doomed.reset();
  expect_error([&] { rt::graph_destroy(rt::stream_end_capture(s)); }, {"stream_end_capture", "device_free"});
  rt::device_free(leaked);  // the free the destructor could not do (LeakSanitizer would report it)
  expect_error([&] { rt::stream_begin_capture(nullptr); }, {"stream_begin_capture", "default stream"});
  expect_error([&] { (void)rt::stream_end_capture(s); }, {"stream_end_capture", "not capturing"});
  rt::stream_begin_capture(s);
  expect_error([&] { rt::stream_begin_capture(other); }, {"stream_begin_capture", "already"});
  rt::graph_destroy(rt::stream_end_capture(s));
  rt::event_destroy(ev);
  rt::stream_destroy(other);
  rt::stream_destroy(s);
}

#if defined(VITCUDA_EMU)
TEST_F(KernelTest, GraphReplayInDryRunExecutesNothingButCounts) {
  Work w;
  w.set_input(0);
  const std::vector<float> initial = w.state();
  rt::stream_begin_capture(w.stream);
  w.step();
  rt::Graph g = rt::stream_end_capture(w.stream);
  rt::reset_counters();
  rt::set_dry_run(true);
  rt::graph_launch(g, w.stream);
  rt::set_dry_run(false);
  EXPECT_EQ(rt::counters().launches, 2);
  EXPECT_EQ(rt::counters().gemms, 1);
  EXPECT_EQ(rt::counters().graph_launches, 1);
  EXPECT_TRUE(same_bits(w.state(), initial)) << "a dry-run replay changed memory";
  rt::graph_launch(g, w.stream);  // and for real
  EXPECT_FALSE(same_bits(w.state(), initial));
  rt::graph_destroy(g);
}
#endif

}  // namespace
}  // namespace vitcuda::test
