// vitcuda — microbenchmarks of the CPU reference ops (the "cpu" backend), with FLOP/s and
// bytes/s counters. The baseline in the same binary is OpenBLAS sgemm without epilogue
// (BM_sgemm_plain), against which the fused linear ops are compared.
//   ./build/bench/bench_cpu_ops --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "host/cpu/ref_ops.h"
#include "vitcuda/backend.h"

using namespace vitcuda;

namespace {

std::vector<float> randn(size_t n, uint32_t seed = 1) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

void counters(benchmark::State& st, double flops, double bytes) {
  st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  st.SetBytesProcessed(int64_t(bytes) * st.iterations());
}

// Shapes: rows = batch * tokens. vit_fmnist: B 128, T 17, D 64, MLP 128; ViT-Ti/16 at B 8:
// T 197, D 192, MLP 768.
struct Shape {
  int64_t B, T, D, Hm, H;
};
const Shape kShapes[] = {{128, 17, 64, 128, 4}, {8, 197, 192, 768, 3}};

void BM_sgemm_plain(benchmark::State& st) {  // baseline: x[R,K] · w[N,K]^T, no bias
  const Shape s = kShapes[st.range(0)];
  const int64_t R = s.B * s.T, K = s.D, N = s.Hm;
  auto x = randn(R * K), w = randn(N * K), y = std::vector<float>(R * N);
  for (auto _ : st) ref::gemm<float>(false, true, R, N, K, 1.f, x.data(), K, w.data(), K, 0.f, y.data(), N);
  counters(st, 2.0 * R * N * K, 4.0 * (R * K + N * K + R * N));
}

void BM_linear_gelu_forward(benchmark::State& st) {  // fc1: bias + GELU epilogue, keeps pre
  const Shape s = kShapes[st.range(0)];
  const int64_t R = s.B * s.T, K = s.D, N = s.Hm;
  auto x = randn(R * K), w = randn(N * K), b = randn(N), pre = std::vector<float>(R * N), y = pre;
  for (auto _ : st)
    ref::linear_forward<float>(x.data(), w.data(), b.data(), Act::GeluErf, pre.data(), y.data(), R, K, N);
  counters(st, 2.0 * R * N * K, 4.0 * (R * K + N * K + 2 * R * N));
}

void BM_linear_gelu_backward(benchmark::State& st) {
  const Shape s = kShapes[st.range(0)];
  const int64_t R = s.B * s.T, K = s.D, N = s.Hm;
  auto x = randn(R * K), w = randn(N * K), pre = randn(R * N), dy0 = randn(R * N), dy = dy0;
  std::vector<float> dx(R * K), dw(N * K), db(N);
  for (auto _ : st) {
    dy = dy0;
    ref::linear_backward<float>(dy.data(), x.data(), w.data(), Act::GeluErf, pre.data(), dx.data(), dw.data(),
                                db.data(), R, K, N);
  }
  counters(st, 4.0 * R * N * K, 4.0 * (R * K * 2 + N * K * 2 + 2 * R * N));
}

void BM_layernorm_forward(benchmark::State& st) {
  const Shape s = kShapes[st.range(0)];
  const int64_t R = s.B * s.T, C = s.D;
  auto x = randn(R * C), r = randn(R * C), g = randn(C), b = randn(C);
  std::vector<float> sum(R * C), y(R * C), mean(R), rstd(R);
  for (auto _ : st)
    ref::layernorm_forward<float>(x.data(), r.data(), sum.data(), g.data(), b.data(), 1e-6f, y.data(), mean.data(),
                                  rstd.data(), R, C);
  counters(st, 8.0 * R * C, 4.0 * (4 * R * C));  // reads x, residual; writes sum, y
}

void BM_layernorm_backward(benchmark::State& st) {
  const Shape s = kShapes[st.range(0)];
  const int64_t R = s.B * s.T, C = s.D;
  auto x = randn(R * C), dy = randn(R * C), g = randn(C), mean = randn(R), rstd = randn(R);
  std::vector<float> dx(R * C), dg(C), db(C);
  for (auto _ : st)
    ref::layernorm_backward<float>(dy.data(), x.data(), g.data(), mean.data(), rstd.data(), dx.data(), dg.data(),
                                   db.data(), R, C);
  counters(st, 12.0 * R * C, 4.0 * (4 * R * C));  // reads dy, x, dx; writes dx
}

void BM_attention_forward(benchmark::State& st) {
  const Shape s = kShapes[st.range(0)];
  const int64_t d = s.D / s.H, n = s.B * s.H * s.T * d;
  auto qkv = randn(3 * n);  // packed [B, T, 3, H, d]
  std::vector<float> out(n), lse(s.B * s.H * s.T);
  for (auto _ : st)
    ref::attention_forward<float>(qkv.data(), 0.125f, DropoutSpec{}, out.data(), lse.data(), s.B, s.H, s.T, d);
  counters(st, 4.0 * s.B * s.H * s.T * s.T * d, 4.0 * 4 * n);
}

void BM_attention_backward(benchmark::State& st) {
  const Shape s = kShapes[st.range(0)];
  const int64_t d = s.D / s.H, n = s.B * s.H * s.T * d;
  auto qkv = randn(3 * n), dout = randn(n, 4);  // qkv packed [B, T, 3, H, d]
  std::vector<float> out(n), lse(s.B * s.H * s.T), dqkv(3 * n);
  ref::attention_forward<float>(qkv.data(), 0.125f, DropoutSpec{}, out.data(), lse.data(), s.B, s.H, s.T, d);
  for (auto _ : st)
    ref::attention_backward<float>(dout.data(), qkv.data(), out.data(), lse.data(), 0.125f, DropoutSpec{}, dqkv.data(),
                                   s.B, s.H, s.T, d);
  counters(st, 10.0 * s.B * s.H * s.T * s.T * d, 4.0 * 8 * n);  // recompute S, dP, dV, dQ, dK
}

void BM_softmax_xent(benchmark::State& st) {
  const int64_t B = 1024, C = st.range(0);
  auto logits = randn(B * C);
  std::vector<int32_t> labels(B), hits(B);
  for (int64_t b = 0; b < B; ++b) labels[b] = int32_t(b % C);
  std::vector<float> losses(B), dlogits(B * C);
  for (auto _ : st)
    ref::softmax_xent<float>(logits.data(), labels.data(), 0.1f, 1.f / B, losses.data(), dlogits.data(), hits.data(), B,
                             C);
  counters(st, 5.0 * B * C, 4.0 * 2 * B * C);
}

void BM_adamw(benchmark::State& st) {
  const int64_t n = st.range(0);
  auto p = randn(n), g = randn(n, 2);
  std::vector<float> m(n), v(n);
  AdamWSegment seg{0, n, true};
  AdamWHyper h;
  for (auto _ : st) ref::adamw_update(p.data(), g.data(), m.data(), v.data(), h, &seg, 1);
  counters(st, 15.0 * n, 4.0 * 7 * n);  // reads p, g, m, v; writes p, m, v
}

}  // namespace

BENCHMARK(BM_sgemm_plain)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear_gelu_forward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear_gelu_backward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_layernorm_forward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_layernorm_backward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_forward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_backward)->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax_xent)->Arg(10)->Arg(1000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_adamw)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
