// vitcuda — the bandwidth-bound kernels on the GPU: dropout, drop-path, the element-wise add of
// the token/residual stream, fp32 -> bf16 conversion, the fused softmax cross-entropy, fused
// AdamW over a ViT-B parameter arena (these two beside their unfused baselines, the same math as
// the separate passes of an eager framework, timed in the same process) and the gradient sum of
// squares. Every one reports the bytes it must move and the fraction of the device's measured device-to-device
// copy bandwidth (cudaMemcpyAsync, measured in this binary) that it reaches.
//
//   ./build/bench/bench_elementwise --benchmark_counters_tabular=true
//
// Names: <op>/<dtype>/<shape>, plus copy/d2d_1GiB (the reference). Counters: GB/s (bytes the op
// must read + write, once each), of_copy = GB/s / measured D2D GB/s (1 = copy speed), and for
// softmax_xent and AdamW the unfused time and vs_unfused = unfused time / fused time.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_common.cuh"
#include "kernels/adamw.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"  // act_forward / act_backward: the linear epilogues
#include "kernels/softmax_xent.h"

using namespace vitcuda;
using namespace vitcuda::bench;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kWidth = 768;  // ViT-B

void report(benchmark::State& st, double bytes, double s) {
  st.counters["GB/s"] = bytes / s / 1e9;
  st.counters["of_copy"] = bytes / s / 1e9 / measured_copy_gbps();
}

void bench_copy(benchmark::State& st) {
  const double s = run_timed_copy(st);
  report(st, 2.0 * kCopyBytes, s);
}

// ---- dropout, drop-path, add, convert over a [B, 197, 768] activation ------------------------

template <typename T>
void bench_dropout(benchmark::State& st, int64_t B, bool in_place) {
  const int64_t n = B * kTokens * kWidth;
  auto x = filled<T>(n, -1.f, 1.f, 1);
  rt::DeviceBuffer<T> y(in_place ? 0 : n);
  T* out = in_place ? x.get() : y.get();
  const double s = run_timed(st, [&] { dropout<T>(x.get(), out, n, {0.1f, 7, 3}, nullptr); });
  report(st, 2.0 * n * sizeof(T), s);
}

template <typename T>
void bench_drop_path(benchmark::State& st, int64_t B) {
  const int64_t per = int64_t(kTokens) * kWidth, n = B * per;
  auto x = filled<T>(n, -1.f, 1.f, 2);
  rt::DeviceBuffer<T> y(n);
  const double s = run_timed(st, [&] { drop_path<T>(x.get(), y.get(), B, per, {0.1f, 7, 4}, nullptr); });
  report(st, 2.0 * n * sizeof(T), s);
}

template <typename T>
void bench_add(benchmark::State& st, int64_t B) {  // the residual / token stream: out = a + b
  const int64_t n = B * kTokens * kWidth;
  auto a = filled<T>(n, -1.f, 1.f, 3), b = filled<T>(n, -1.f, 1.f, 4);
  rt::DeviceBuffer<T> out(n);
  const double s = run_timed(st, [&] { add<T>(a.get(), b.get(), out.get(), n, nullptr); });
  report(st, 3.0 * n * sizeof(T), s);
}

void bench_convert(benchmark::State& st, int64_t n) {  // fp32 master -> bf16 compute copy
  auto src = filled<float>(n, -1.f, 1.f, 5);
  rt::DeviceBuffer<bf16> dst(n);
  const double s = run_timed(st, [&] { convert_dtype<float, bf16>(src.get(), dst.get(), n, nullptr); });
  report(st, double(n) * (sizeof(float) + sizeof(bf16)), s);
}

// ---- softmax cross-entropy over [B, C] logits ------------------------------------------------

// The unfused baseline, the passes an eager framework runs (one warp per row each): log_softmax
// (logits -> logp in T), the label-smoothed loss and its gradient (logp -> loss, dlogits) and a
// top-k rank of the label (logits -> hits).
template <typename T>
__global__ void unfused_log_softmax_kernel(const T* x, T* logp, int64_t B, int64_t C) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const T* r = x + row * C;
  float m = -INFINITY;
  for (int64_t j = lane; j < C; j += 32) m = fmaxf(m, to_float(r[j]));
  m = warp_reduce_max(m);
  float l = 0.f;
  for (int64_t j = lane; j < C; j += 32) l += expf(to_float(r[j]) - m);
  const float lse = m + logf(warp_reduce_sum(l));
  for (int64_t j = lane; j < C; j += 32) logp[row * C + j] = from_float<T>(to_float(r[j]) - lse);
}
template <typename T>
__global__ void unfused_xent_kernel(const T* logp, const int32_t* labels, float eps, float dscale, float* loss,
                                    T* dlogits, int64_t B, int64_t C) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const T* r = logp + row * C;
  const int32_t y = labels[row];
  float sum = 0.f;
  for (int64_t j = lane; j < C; j += 32) {
    const float lp = to_float(r[j]);
    sum += lp;
    const float target = (j == y ? 1.f - eps : 0.f) + eps / float(C);
    dlogits[row * C + j] = from_float<T>((expf(lp) - target) * dscale);
  }
  sum = warp_reduce_sum(sum);
  if (lane == 0) loss[row] = -(1.f - eps) * to_float(r[y]) - eps * sum / float(C);
}
template <typename T>
__global__ void unfused_topk_kernel(const T* x, const int32_t* labels, int32_t* hits, int64_t B, int64_t C) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const T* r = x + row * C;
  const float zy = to_float(r[labels[row]]);
  float rank = 0.f;
  for (int64_t j = lane; j < C; j += 32) rank += to_float(r[j]) > zy ? 1.f : 0.f;
  rank = warp_reduce_sum(rank);
  if (lane == 0) hits[row] = (rank == 0.f ? 1 : 0) | (rank < 5.f ? 2 : 0);
}

template <typename T>
void bench_softmax_xent(benchmark::State& st, int64_t B, int64_t C) {
  auto logits = filled<T>(B * C, -8.f, 8.f, 6);
  std::vector<int32_t> host_labels(B);
  for (int64_t b = 0; b < B; ++b) host_labels[b] = static_cast<int32_t>((b * 7919) % C);
  rt::DeviceBuffer<int32_t> labels(host_labels), hits(B);
  rt::DeviceBuffer<float> losses(B);
  rt::DeviceBuffer<T> dlogits(B * C), logp(B * C);
  constexpr int kWarps = 8;
  const dim3 grid(static_cast<unsigned>((B + kWarps - 1) / kWarps)), block(32 * kWarps);
  const float eps = 0.1f, dscale = 1.f / B;
  auto unfused = [&] {
    launch(unfused_log_softmax_kernel<T>, grid, block, 0, nullptr, static_cast<const T*>(logits.get()), logp.get(), B,
           C);
    launch(unfused_xent_kernel<T>, grid, block, 0, nullptr, static_cast<const T*>(logp.get()),
           static_cast<const int32_t*>(labels.get()), eps, dscale, losses.get(), dlogits.get(), B, C);
    launch(unfused_topk_kernel<T>, grid, block, 0, nullptr, static_cast<const T*>(logits.get()),
           static_cast<const int32_t*>(labels.get()), hits.get(), B, C);
  };
  const double unfused_s = seconds_per_call(unfused, 2, 20);
  const double s = run_timed(st, [&] {
    softmax_xent<T>(logits.get(), labels.get(), eps, dscale, losses.get(), dlogits.get(), hits.get(), B, C, nullptr);
  });
  report(st, double(B) * C * 2 * sizeof(T) + double(B) * 12, s);
  st.counters["unfused_us"] = unfused_s * 1e6;
  st.counters["vs_unfused"] = unfused_s / s;
}

// ---- AdamW over a ViT-B/16 parameter arena ---------------------------------------------------

// timm's ViT parameter arena in order (vit_base_patch16_224 for D = 768, depth 12, 1000 classes),
// as alternating decay / no-decay runs (weights decay; biases, norms, cls and pos do not):
// 86.6M parameters in ~100 segments for ViT-B. Smoke builds use a 2-block ViT of width 64.
std::vector<AdamWSegment> vit_b_segments() {
  const int64_t D = kSmoke ? 64 : kWidth, depth = kSmoke ? 2 : 12, M = 4 * D;
  std::vector<std::pair<int64_t, bool>> runs = {{D + 197 * D, false},     // cls, pos_embed
                                                {D * 3 * 16 * 16, true},  // patch_embed.proj.weight
                                                {D, false}};
  for (int l = 0; l < depth; ++l) {
    runs.push_back({2 * D, false});      // norm1
    runs.push_back({3 * D * D, true});   // attn.qkv.weight
    runs.push_back({3 * D, false});      // attn.qkv.bias
    runs.push_back({D * D, true});       // attn.proj.weight
    runs.push_back({D + 2 * D, false});  // attn.proj.bias, norm2
    runs.push_back({M * D, true});       // mlp.fc1.weight
    runs.push_back({M, false});          // mlp.fc1.bias
    runs.push_back({D * M, true});       // mlp.fc2.weight
    runs.push_back({D, false});          // mlp.fc2.bias
  }
  runs.push_back({2 * D, false});    // norm
  runs.push_back({1000 * D, true});  // head.weight
  runs.push_back({1000, false});     // head.bias
  std::vector<AdamWSegment> segs;
  int64_t off = 0;
  for (const auto& [count, decay] : runs) {
    segs.push_back({off, count, decay});
    off += count;
  }
  return segs;
}

// The unfused baseline: the same update as the separate element-wise passes an eager framework
// runs (m, v, decay, denominator, step, bf16 copy), each reading and writing global memory.
__global__ void unfused_m_kernel(float* m, const float* g, int64_t n, float b1, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m[i] = b1 * m[i] + (1.f - b1) * (g[i] * scale);
}
__global__ void unfused_v_kernel(float* v, const float* g, int64_t n, float b2, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gs = g[i] * scale;
    v[i] = b2 * v[i] + (1.f - b2) * gs * gs;
  }
}
__global__ void unfused_scale_kernel(float* p, int64_t n, float f) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] *= f;
}
__global__ void unfused_denom_kernel(float* d, const float* v, int64_t n, float inv_bc2, float eps) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    d[i] = sqrtf(v[i] * inv_bc2) + eps;
}
__global__ void unfused_step_kernel(float* p, const float* m, const float* d, int64_t n, float step) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] -= step * m[i] / d[i];
}

struct AdamWBuffers {
  int64_t n;
  std::vector<AdamWSegment> segs;
  rt::DeviceBuffer<float> master, grads, m, v;
  rt::DeviceBuffer<bf16> params;
};
AdamWBuffers make_adamw_buffers() {
  AdamWBuffers b;
  b.segs = vit_b_segments();
  b.n = b.segs.back().offset + b.segs.back().count;
  b.master = filled<float>(b.n, -0.05f, 0.05f, 7);
  b.grads = filled<float>(b.n, -1e-3f, 1e-3f, 8);
  b.m = filled<float>(b.n, -1e-4f, 1e-4f, 9);
  b.v = filled<float>(b.n, 0.f, 1e-6f, 10);
  b.params = rt::DeviceBuffer<bf16>(b.n);
  return b;
}
AdamWHyper bench_hyper() {
  AdamWHyper h;
  h.lr = 1e-4f;
  h.step = 100;
  h.grad_scale = 0.9f;
  return h;
}

// Per parameter: master, grad, m, v read (16 B); master, m, v written (12 B); bf16 copy (2 B).
constexpr double kAdamWBytesPerParam = 30.0;

void bench_adamw(benchmark::State& st) {
  AdamWBuffers b = make_adamw_buffers();
  const AdamWHyper h = bench_hyper();
  const int ns = static_cast<int>(b.segs.size());
  auto fused = [&] {
    adamw_update<bf16>(b.master.get(), b.grads.get(), b.m.get(), b.v.get(), b.params.get(), b.n, h, b.segs.data(), ns,
                       nullptr);
  };
  // The unfused passes, in PyTorch's order, one launch per pass over the whole arena (decay per
  // segment would need more launches still; a whole-arena decay pass is the cheapest baseline).
  rt::DeviceBuffer<float> denom(b.n);
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(h.beta1), double(h.step))));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(h.beta2), double(h.step))));
  const dim3 grid(kSmoke ? 8 : 8192), block(256);
  auto unfused = [&] {
    launch(unfused_m_kernel, grid, block, 0, nullptr, b.m.get(), static_cast<const float*>(b.grads.get()), b.n, h.beta1,
           h.grad_scale);
    launch(unfused_v_kernel, grid, block, 0, nullptr, b.v.get(), static_cast<const float*>(b.grads.get()), b.n, h.beta2,
           h.grad_scale);
    launch(unfused_scale_kernel, grid, block, 0, nullptr, b.master.get(), b.n, 1.f - h.lr * h.weight_decay);
    launch(unfused_denom_kernel, grid, block, 0, nullptr, denom.get(), static_cast<const float*>(b.v.get()), b.n,
           inv_bc2, h.eps);
    launch(unfused_step_kernel, grid, block, 0, nullptr, b.master.get(), static_cast<const float*>(b.m.get()),
           static_cast<const float*>(denom.get()), b.n, h.lr * inv_bc1);
    convert_dtype<float, bf16>(b.master.get(), b.params.get(), b.n, nullptr);
  };
  const double unfused_s = seconds_per_call(unfused, 1, 10);
  const double s = run_timed(st, fused);
  report(st, kAdamWBytesPerParam * b.n, s);
  st.counters["params"] = double(b.n);
  st.counters["segments"] = double(ns);
  st.counters["unfused_ms"] = unfused_s * 1e3;
  st.counters["vs_unfused"] = unfused_s / s;
}

// ---- the exact-erf GELU epilogues of fc1 [B·197, 3072] with dropout 0.1 -----------------------
// Fused (one pass: act_forward / act_backward with the dropout spec, what linear_forward and
// linear_backward run) beside unfused (the activation pass, then the separate dropout op over the
// output, as before the fusion). Bytes: the fused pass's (forward: read pre, write y; backward:
// read dy and pre, write dy; the bias-gradient partials are small).
void bench_gelu_dropout(benchmark::State& st, int64_t B, bool backward) {
  const int M = int(B * kTokens), N = 3072;
  const int64_t n = int64_t(M) * N;
  auto pre = filled<bf16>(n, -3.f, 3.f, 12), y = filled<bf16>(n, -1.f, 1.f, 13);
  rt::DeviceBuffer<float> db(N);
  rt::DeviceBuffer<unsigned char> ws(act_backward_workspace_bytes(M, N));
  const DropoutSpec spec{0.1f, 7, 5};
  auto run = [&](bool fused) {
    if (!backward) {
      act_forward<bf16>(pre.get(), y.get(), Act::GeluErf, M, N, N, nullptr, fused ? spec : DropoutSpec{});
      if (!fused) dropout<bf16>(y.get(), y.get(), n, spec, nullptr);
    } else {
      if (!fused) dropout<bf16>(y.get(), y.get(), n, spec, nullptr);
      act_backward<bf16, float>(y.get(), pre.get(), Act::GeluErf, M, N, N, db.get(), ws.get(), ws.size(), nullptr,
                                fused ? spec : DropoutSpec{});
    }
  };
  const double unfused_s = seconds_per_call([&] { run(false); }, 2, 20);
  const double s = run_timed(st, [&] { run(true); });
  report(st, (backward ? 3.0 : 2.0) * n * sizeof(bf16), s);
  st.counters["unfused_ms"] = unfused_s * 1e3;
  st.counters["vs_unfused"] = unfused_s / s;
}

void bench_sum_squares(benchmark::State& st) {
  const int64_t n = vit_b_segments().back().offset + vit_b_segments().back().count;
  auto g = filled<float>(n, -1e-3f, 1e-3f, 11);
  rt::DeviceBuffer<double> scratch(sum_squares_scratch_doubles());
  // The async form: the host copy and synchronisation of sum_squares() would time the launch
  // latency round trip, not the kernel.
  const double s = run_timed(st, [&] { sum_squares_async<float>(g.get(), n, scratch.get(), nullptr); });
  report(st, double(n) * sizeof(float), s);
}

void register_all() {
  register_timed("copy/d2d_1GiB", bench_copy, benchmark::kMillisecond);
  for (int64_t batch : {int64_t(64), int64_t(256)}) {
    const std::string shape = "B" + std::to_string(batch) + "x197x768";
    const int64_t B = bench_batch(int(batch));
    register_timed("dropout/bf16/" + shape, [B](benchmark::State& st) { bench_dropout<bf16>(st, B, false); });
    register_timed("dropout/bf16/" + shape + "/in_place",
                   [B](benchmark::State& st) { bench_dropout<bf16>(st, B, true); });
    register_timed("dropout/f32/" + shape, [B](benchmark::State& st) { bench_dropout<float>(st, B, false); });
    register_timed("drop_path/bf16/" + shape, [B](benchmark::State& st) { bench_drop_path<bf16>(st, B); });
    register_timed("add/bf16/" + shape, [B](benchmark::State& st) { bench_add<bf16>(st, B); });
    register_timed("add/f32/" + shape, [B](benchmark::State& st) { bench_add<float>(st, B); });
  }
  register_timed("convert/f32_to_bf16/vit_b_arena", [](benchmark::State& st) {
    bench_convert(st, vit_b_segments().back().offset + vit_b_segments().back().count);
  });
  for (int64_t batch : {int64_t(128), int64_t(256), int64_t(1024)}) {
    const int64_t B = bench_batch(int(batch));
    register_timed("softmax_xent/bf16/B" + std::to_string(batch) + "xC1000",
                   [B](benchmark::State& st) { bench_softmax_xent<bf16>(st, B, 1000); });
  }
  register_timed("softmax_xent/f32/B256xC1000",
                 [](benchmark::State& st) { bench_softmax_xent<float>(st, bench_batch(256), 1000); });
  register_timed("adamw/f32_master_bf16_params/vit_b", bench_adamw, benchmark::kMillisecond);
  for (bool backward : {false, true})
    register_timed(std::string("gelu_erf_dropout/") + (backward ? "backward" : "forward") + "/bf16/fc1_B64x197x3072",
                   [backward](benchmark::State& st) { bench_gelu_dropout(st, bench_batch(64), backward); });
  register_timed("sum_squares/f32/vit_b_grads", bench_sum_squares);
}

}  // namespace

int main(int argc, char** argv) { return bench_main(argc, argv, "bench_elementwise", register_all); }
