// vitcuda — what the native GPU benchmarks (bench/bench_*.cu) share: deterministic device fills,
// event timing, the benchmark's manual timing, the device-to-device copy and bf16 GEMM peak references
// and main().
// Inline and template definitions only: every benchmark binary is one translation unit that
// includes this header.
//
// Smoke builds (VITCUDA_BENCH_SMOKE, the <name>_emu binaries of bench/CMakeLists.txt): the same
// source built against the CUDA emulator and run by ctest, so that every benchmark's setup,
// arguments and counters execute in CI even where no GPU ever runs them. Batches shrink to
// kSmokeBatch, the copy reference to 1 MiB, repetitions to one; the timings mean nothing.
#pragma once
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/gemm.h"

namespace vitcuda::bench {

#if defined(VITCUDA_BENCH_SMOKE)
constexpr bool kSmoke = true;
#else
constexpr bool kSmoke = false;
#endif
constexpr int kSmokeBatch = 2;

constexpr int kTokens = 197;                        // ViT at 224/16: 196 patches + cls
constexpr int kRepsPerIteration = kSmoke ? 1 : 10;  // ops between two events: launch gaps stay negligible

// The batch a benchmark named for `batch` runs with (kSmokeBatch in smoke builds).
constexpr int bench_batch(int batch) { return kSmoke ? kSmokeBatch : batch; }

// Deterministic pseudo-random fill on the device (a hash of the index): lo + (hi - lo)·u.
template <typename T>
__global__ void bench_fill_kernel(T* p, int64_t n, float lo, float hi, uint32_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    p[i] = from_float<T>(lo + (hi - lo) * (h >> 8) * (1.f / 16777216.f));
  }
}

template <typename T>
rt::DeviceBuffer<T> filled(size_t n, float lo, float hi, uint32_t seed) {
  rt::DeviceBuffer<T> b(n);
  if (n)
    launch(bench_fill_kernel<T>, dim3(kSmoke ? 8 : 1024), dim3(256), 0, nullptr, b.get(), static_cast<int64_t>(n), lo,
           hi, seed);
  return b;
}

// Milliseconds of `reps` calls of fn, between two events on the default stream.
inline double time_ms(const std::function<void()>& fn, int reps) {
  rt::Event start = rt::event_create(), stop = rt::event_create();
  rt::event_record(start);
  for (int i = 0; i < reps; ++i) fn();
  rt::event_record(stop);
  rt::event_synchronize(stop);
  const double ms = rt::event_elapsed_ms(start, stop);
  rt::event_destroy(start);
  rt::event_destroy(stop);
  return ms;
}

// Mean seconds per call of fn over `reps` calls after `warmups` untimed ones (for the baselines
// and references measured beside a benchmark).
inline double seconds_per_call(const std::function<void()>& fn, int warmups, int reps) {
  if (kSmoke) warmups = 0, reps = 1;
  for (int i = 0; i < warmups; ++i) fn();
  return time_ms(fn, reps) / reps / 1e3;
}

// Runs fn under the benchmark's manual timing; returns the mean seconds per call.
inline double run_timed(benchmark::State& st, const std::function<void()>& fn) {
  fn();  // warm-up (a GEMM's heuristic query and its cache entry)
  rt::device_synchronize();
  double total_s = 0;
  int64_t calls = 0;
  for (auto _ : st) {
    const double s = time_ms(fn, kRepsPerIteration) / 1e3;
    st.SetIterationTime(s / kRepsPerIteration);
    total_s += s;
    calls += kRepsPerIteration;
  }
  return calls ? total_s / calls : 0.0;
}

// Registers fn under manual timing, reported in `unit`.
template <typename Fn>
benchmark::internal::Benchmark* register_timed(const std::string& name, Fn&& fn,
                                               benchmark::TimeUnit unit = benchmark::kMicrosecond) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))->UseManualTime()->Unit(unit);
}

// ---- agreement of a baseline with the kernel it is compared with -------------------------------

// max_i |a_i − b_i| over n device values, compared on the host (a check beside the timing, not
// part of it). NaN counts as +inf.
template <typename T>
double max_abs_diff_dense(const T* a, const T* b, size_t n) {
  std::vector<T> ha(n), hb(n);
  rt::copy_to_host(ha.data(), a, n * sizeof(T));
  rt::copy_to_host(hb.data(), b, n * sizeof(T));
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(to_float(ha[i])) - double(to_float(hb[i])));
    if (!(d <= m)) m = d != d ? INFINITY : d;
  }
  return m;
}

// Reports `diff` (a baseline's max |difference| from the fused kernel) as the counter `name`.
// Beyond `tol` the benchmark's label says so; the smoke build throws, failing its ctest: a
// baseline that computes something else would make every ratio against it meaningless.
inline void report_agreement(benchmark::State& st, const std::string& name, double diff, double tol) {
  st.counters[name] = diff;
  if (diff <= tol) return;
  const std::string what = name + " = " + std::to_string(diff) + " > " + std::to_string(tol);
  st.SetLabel("MISMATCH " + what);
  if (kSmoke) throw Error("smoke check failed: " + what);
}

// ---- the device-to-device copy reference -------------------------------------------------------

constexpr size_t kCopyBytes = size_t(1) << (kSmoke ? 20 : 30);  // copy/d2d_1GiB

// A device-to-device copy (cudaMemcpyAsync) of `bytes`; it moves 2·bytes (read + write).
struct D2DCopy {
  size_t bytes;
  rt::DeviceBuffer<unsigned char> src, dst;
  explicit D2DCopy(size_t n) : bytes(n), src(n), dst(n) { rt::memset_device(src.get(), 1, n); }
  void operator()() const { rt::copy_device_to_device(dst.get(), src.get(), bytes); }
};

// The benchmark copy/d2d_1GiB: seconds per 1 GiB copy under the benchmark's manual timing.
inline double run_timed_copy(benchmark::State& st) {
  const D2DCopy copy(kCopyBytes);
  return run_timed(st, [&] { copy(); });
}

// The bandwidth a streaming kernel can hope for on this device, in GB/s: a 1 GiB copy, read +
// write counted, measured once per process.
inline double measured_copy_gbps() {
  static const double gbps = [] {
    const D2DCopy copy(kCopyBytes);
    return 2.0 * kCopyBytes / seconds_per_call([&] { copy(); }, 2, 10) / 1e9;
  }();
  return gbps;
}

// ---- the bf16 GEMM peak -----------------------------------------------------------------------

constexpr int kPeakSize = kSmoke ? 64 : 8192;  // peak/gemm_bf16_8192: n = m = k

// Square bf16 GEMM, plain cuBLASLt (no epilogue), bf16 out: what this device reaches on dense
// tensor-core work.
struct PeakGemm {
  int n;
  rt::DeviceBuffer<__nv_bfloat16> a, b, d;
  rt::DeviceBuffer<unsigned char> ws;
  GemmArgs g;
  explicit PeakGemm(int size)
      : n(size),
        a(filled<__nv_bfloat16>(size_t(n) * n, -1.f, 1.f, 10)),
        b(filled<__nv_bfloat16>(size_t(n) * n, -1.f, 1.f, 11)),
        d(size_t(n) * n),
        ws(gemm_workspace_bytes(GemmArgs{})),
        g(dense_gemm(false, true, n, n, n, GemmType::BF16, GemmType::BF16, a.get(), b.get(), d.get(), ws.get(),
                     ws.size())) {}
  double flops() const { return 2.0 * n * n * double(n); }
  void operator()() const { gemm(g, nullptr); }
};

// The dense bf16 tensor-core rate this device reaches (TFLOP/s), measured once per process.
inline double measured_peak_tflops() {
  static const double peak = [] {
    const PeakGemm peak_gemm(kPeakSize);
    return peak_gemm.flops() / seconds_per_call([&] { peak_gemm(); }, 3, 20) / 1e12;
  }();
  return peak;
}

// ---- main ------------------------------------------------------------------------------------

// The body of every benchmark's main(): exits 0 with a note when no GPU is present, otherwise
// registers the benchmarks (register_all) and runs those the command line selects.
inline int bench_main(int argc, char** argv, const char* name, const std::function<void()>& register_all) {
  if (rt::device_count() == 0) {
    std::fprintf(stderr, "%s: no CUDA GPU is present\n", name);
    return 0;
  }
  if (kSmoke)
    benchmark::AddCustomContext("smoke",
                                "emulated build, batch " + std::to_string(kSmokeBatch) + ": timings are meaningless");
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace vitcuda::bench
