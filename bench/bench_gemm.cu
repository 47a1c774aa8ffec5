// vitcuda — the ViT's GEMMs through the project GEMM (kernels/gemm.h, kernels/linear.h) on the GPU,
// each beside the same product without epilogue (plain cuBLASLt: no bias, no activation, no bias
// gradient) timed in the same benchmark, plus the device's measured bf16 GEMM peak and its
// device-to-device copy bandwidth, so every number has its hardware limit next to it.
//
//   ./build/bench/bench_gemm --benchmark_counters_tabular=true [--benchmark_filter=vit_b/]
//
// Names (stable, for tables): <model>/B<batch>/<gemm>, model vit_ti | vit_s | vit_b (D = 192,
// 384, 768; MLP 4D; 197 tokens), gemm one of
//   qkv_fwd  proj_fwd  fc1_fwd_gelu_erf  fc1_fwd_gelu_tanh  fc2_fwd      y = act(x·wᵀ + b)
//   qkv_bwd  proj_bwd  fc1_bwd_gelu_erf  fc1_bwd_gelu_tanh  fc2_bwd      dx, dw += , db +=
// and peak/gemm_bf16_8192, copy/d2d_1GiB.
// Counters: TFLOP/s (2·R·N·K forward, 4·R·N·K backward), plain_TFLOP/s (the plain-cuBLASLt
// baseline of the same GEMMs), vs_plain = plain time / this time (1 = the epilogues are free),
// of_peak = TFLOP/s / measured bf16 peak; for the forward GEMMs with an activation also
// unfused_TFLOP/s and vs_unfused (the GEMM with a bias epilogue, then the activation as a separate
// pass: for gelu_erf that is what the fused path runs too, so vs_unfused ≈ 1 there).
// bf16 operands, fp32 accumulation, fp32 dw/db.
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_common.cuh"
#include "kernels/gemm.h"
#include "kernels/linear.h"

using namespace vitcuda;
using namespace vitcuda::bench;
using bf16 = __nv_bfloat16;

namespace {

void report(benchmark::State& st, double flops, double s, double plain_s) {
  st.counters["TFLOP/s"] = flops / s / 1e12;
  st.counters["plain_TFLOP/s"] = flops / plain_s / 1e12;
  st.counters["vs_plain"] = plain_s / s;
  st.counters["of_peak"] = flops / s / 1e12 / measured_peak_tflops();
}

struct Layer {
  int R, K, N;
  Act act;
};

void bench_forward(benchmark::State& st, Layer l) {
  auto x = filled<bf16>(size_t(l.R) * l.K, -1.f, 1.f, 1), w = filled<bf16>(size_t(l.N) * l.K, -0.05f, 0.05f, 2),
       b = filled<bf16>(l.N, -0.1f, 0.1f, 3);
  rt::DeviceBuffer<bf16> pre(size_t(l.R) * l.N), y(size_t(l.R) * l.N);
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(l.R, l.K, l.N));
  const GemmArgs plain = dense_gemm(false, true, l.R, l.N, l.K, GemmType::BF16, GemmType::BF16, x.get(), w.get(),
                                    y.get(), ws.get(), ws.size());
  const double plain_s = seconds_per_call([&] { gemm(plain, nullptr); }, 1, 20);
  const double s = run_timed(st, [&] {
    linear_forward<bf16>(x.get(), w.get(), b.get(), l.act, l.act == Act::None ? nullptr : pre.get(), y.get(), l.R, l.K,
                         l.N, ws.get(), ws.size(), nullptr);
  });
  report(st, 2.0 * l.R * l.N * l.K, s, plain_s);
  if (l.act != Act::None) {
    // The unfused form of the same layer: the GEMM with a bias epilogue into pre, then the
    // activation as its own pass (fuse_epilogue = false; what GeluErf always runs).
    GemmArgs unfused = plain;
    unfused.epilogue = GemmEpilogue::BiasAct;
    unfused.act = l.act;
    unfused.bias = b.get();
    unfused.aux = pre.get();
    unfused.fuse_epilogue = false;
    const double unfused_s = seconds_per_call([&] { gemm(unfused, nullptr); }, 1, 20);
    st.counters["unfused_TFLOP/s"] = 2.0 * l.R * l.N * l.K / unfused_s / 1e12;
    st.counters["vs_unfused"] = unfused_s / s;
  }
}

void bench_backward(benchmark::State& st, Layer l) {
  auto x = filled<bf16>(size_t(l.R) * l.K, -1.f, 1.f, 4), w = filled<bf16>(size_t(l.N) * l.K, -0.05f, 0.05f, 5),
       dy = filled<bf16>(size_t(l.R) * l.N, -1.f, 1.f, 6);
  // pre in [5.5, 6.5]: GELU'(pre) rounds to 1 in bf16, so dy, overwritten with dy ⊙ GELU'(pre) by
  // every call, keeps its random values for the whole run (timings depend on the data through
  // power draw: zeros run faster).
  auto pre = filled<bf16>(size_t(l.R) * l.N, 5.5f, 6.5f, 7);
  rt::DeviceBuffer<bf16> dx(size_t(l.R) * l.K);
  auto dw = filled<float>(size_t(l.N) * l.K, 0.f, 0.f, 8), db = filled<float>(l.N, 0.f, 0.f, 9);
  rt::DeviceBuffer<unsigned char> ws(linear_workspace_bytes(l.R, l.K, l.N));
  // the baseline: dx = dy·w and dw += dyᵀ·x, both without epilogue
  const GemmArgs plain_dx = dense_gemm(false, false, l.R, l.K, l.N, GemmType::BF16, GemmType::BF16, dy.get(), w.get(),
                                       dx.get(), ws.get(), ws.size());
  GemmArgs plain_dw = dense_gemm(true, false, l.N, l.K, l.R, GemmType::BF16, GemmType::F32, dy.get(), x.get(), dw.get(),
                                 ws.get(), ws.size());
  plain_dw.beta = 1.f;
  auto plain = [&] {
    gemm(plain_dx, nullptr);
    gemm(plain_dw, nullptr);
  };
  const double plain_s = seconds_per_call(plain, 1, 20);
  const double s = run_timed(st, [&] {
    linear_backward<bf16, float>(dy.get(), x.get(), w.get(), l.act, l.act == Act::None ? nullptr : pre.get(), dx.get(),
                                 dw.get(), db.get(), l.R, l.K, l.N, ws.get(), ws.size(), nullptr);
  });
  report(st, 4.0 * l.R * l.N * l.K, s, plain_s);
}

void bench_peak(benchmark::State& st) {
  const PeakGemm peak_gemm(kPeakSize);
  const double s = run_timed(st, [&] { peak_gemm(); });
  st.counters["TFLOP/s"] = peak_gemm.flops() / s / 1e12;
}

void bench_copy(benchmark::State& st) {
  const double s = run_timed_copy(st);
  st.counters["GB/s"] = 2.0 * kCopyBytes / s / 1e9;  // read + write
}

struct Model {
  const char* name;
  int D;
};

void register_all() {
  const Model models[] = {{"vit_ti", 192}, {"vit_s", 384}, {"vit_b", 768}};
  const int batches[] = {128, 256};
  register_timed("peak/gemm_bf16_8192", bench_peak, benchmark::kMillisecond);
  register_timed("copy/d2d_1GiB", bench_copy, benchmark::kMillisecond);
  for (const Model& m : models)
    for (int B : batches) {
      const int R = bench_batch(B) * kTokens, D = m.D, Hd = 4 * m.D;
      const std::string p = std::string(m.name) + "/B" + std::to_string(B) + "/";
      struct Entry {
        const char* name;
        Layer layer;
      };
      const Entry entries[] = {{"qkv", {R, D, 3 * D, Act::None}},
                               {"proj", {R, D, D, Act::None}},
                               {"fc1", {R, D, Hd, Act::GeluErf}},
                               {"fc1", {R, D, Hd, Act::GeluTanh}},
                               {"fc2", {R, Hd, D, Act::None}}};
      for (const Entry& e : entries) {
        const std::string suffix = e.layer.act == Act::GeluErf    ? "_gelu_erf"
                                   : e.layer.act == Act::GeluTanh ? "_gelu_tanh"
                                                                  : "";
        const Layer l = e.layer;
        register_timed(p + e.name + "_fwd" + suffix, [l](benchmark::State& st) { bench_forward(st, l); });
        register_timed(p + e.name + "_bwd" + suffix, [l](benchmark::State& st) { bench_backward(st, l); });
      }
    }
}

}  // namespace

int main(int argc, char** argv) { return bench_main(argc, argv, "bench_gemm", register_all); }
