// vitcuda — the bandwidth-bound layer kernels of a ViT at its shapes: LayerNorm (alone and fused
// with the residual add), token assembly (cls prepend + position embedding), patch extraction
// (im2col with the input normalisation fused) and pooling (attention reads the packed qkv
// projection in place: there is no head split / merge kernel any more). Each
// reports the bytes it must move and the fraction of the device's measured device-to-device copy
// bandwidth it reaches (of_copy, measured in this binary); the fused ops also time their unfused
// form in the same benchmark (vs_unfused = unfused time / fused time) and check that both give
// the same values (unfused_max_abs_diff, 0 expected: same roundings).
//
//   ./build/bench/bench_layers --benchmark_counters_tabular=true [--benchmark_filter=vit_b/]
//
// Names: <model>/B<batch>/<op>, model vit_ti | vit_s | vit_b (D = 192, 384, 768; H = 3, 6, 12;
// 224×224 RGB images, patch 16, 197 tokens), batch 128 and 256, op one of
//   layernorm_fwd            y = LN(x)                             (block's norm1 / norm2)
//   layernorm_fwd_residual   s = x + r, y = LN(s)  vs  add + layernorm_fwd
//   layernorm_bwd            dx += LN'(dy), dgamma, dbeta (fp32 partials, fixed-order reduction)
//   tokens_fwd               out = [cls; patches] + pos  vs  a concat kernel + a broadcast add
//   tokens_bwd               dpatches = dout rows, dcls/dpos += Σ_b (fp32)
//   patch_extract            uint8 NCHW images -> normalised bf16 columns [B·196, 768]
//   pool_avg_fwd / pool_avg_bwd   mean over the 196 patch tokens and its gradient
// Bytes count each tensor the op must read or write once (dx of layernorm_bwd accumulates: read
// and written); parameters (gamma, beta, pos, cls) are counted once per call. bf16 storage, fp32
// statistics and parameter gradients, as in training.
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_common.cuh"
#include "kernels/elementwise.h"
#include "kernels/layernorm.h"
#include "kernels/patch_embed.h"
#include "kernels/pool.h"
#include "kernels/tokens.h"

using namespace vitcuda;
using namespace vitcuda::bench;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kImage = 224, kPatch = 16, kChannels = 3;
constexpr int kPatches = (kImage / kPatch) * (kImage / kPatch);  // 196
constexpr float kEps = 1e-6f;

struct Shape {
  int B;  // the batch the benchmark runs with (bench_batch of its name's)
  int D;
  int64_t rows() const { return int64_t(B) * kTokens; }
  int64_t elems() const { return rows() * D; }
};

void report(benchmark::State& st, double bytes, double s) {
  st.counters["GB/s"] = bytes / s / 1e9;
  st.counters["of_copy"] = bytes / s / 1e9 / measured_copy_gbps();
}

void report_unfused(benchmark::State& st, double s, double unfused_s) {
  st.counters["unfused_us"] = unfused_s * 1e6;
  st.counters["vs_unfused"] = unfused_s / s;
}

// ---- LayerNorm ---------------------------------------------------------------------------------

struct LayerNormBuffers {
  rt::DeviceBuffer<bf16> x, r, sum, y, gamma, beta;
  rt::DeviceBuffer<float> mean, rstd;
  explicit LayerNormBuffers(const Shape& s, bool residual)
      : x(filled<bf16>(s.elems(), -2.f, 2.f, 1)),
        r(filled<bf16>(residual ? s.elems() : 0, -1.f, 1.f, 2)),
        sum(residual ? s.elems() : 0),
        y(s.elems()),
        gamma(filled<bf16>(s.D, 0.5f, 1.5f, 3)),
        beta(filled<bf16>(s.D, -0.5f, 0.5f, 4)),
        mean(s.rows()),
        rstd(s.rows()) {}
};

// Per row: x (and r) read, y (and s) written, mean and rstd (fp32) written.
double layernorm_forward_bytes(const Shape& s, bool residual) {
  const int streams = residual ? 4 : 2;
  return double(streams) * s.elems() * sizeof(bf16) + 8.0 * s.rows() + 2.0 * s.D * sizeof(bf16);
}

void bench_layernorm_forward(benchmark::State& st, Shape s) {
  LayerNormBuffers b(s, false);
  const double t = run_timed(st, [&] {
    layernorm_forward<bf16>(b.x.get(), nullptr, nullptr, b.gamma.get(), b.beta.get(), kEps, b.y.get(), b.mean.get(),
                            b.rstd.get(), int(s.rows()), s.D, nullptr);
  });
  report(st, layernorm_forward_bytes(s, false), t);
}

void bench_layernorm_forward_residual(benchmark::State& st, Shape s) {
  LayerNormBuffers b(s, true);
  rt::DeviceBuffer<bf16> y_unfused(s.elems());
  auto unfused = [&] {
    add<bf16>(b.x.get(), b.r.get(), b.sum.get(), s.elems(), nullptr);
    layernorm_forward<bf16>(b.sum.get(), nullptr, nullptr, b.gamma.get(), b.beta.get(), kEps, y_unfused.get(),
                            b.mean.get(), b.rstd.get(), int(s.rows()), s.D, nullptr);
  };
  const double unfused_s = seconds_per_call(unfused, 2, 20);
  const double t = run_timed(st, [&] {
    layernorm_forward<bf16>(b.x.get(), b.r.get(), b.sum.get(), b.gamma.get(), b.beta.get(), kEps, b.y.get(),
                            b.mean.get(), b.rstd.get(), int(s.rows()), s.D, nullptr);
  });
  report(st, layernorm_forward_bytes(s, true), t);
  report_unfused(st, t, unfused_s);
  // The fused kernel normalises the bf16-rounded sum, as the unfused pair does: the same y.
  report_agreement(st, "unfused_max_abs_diff", max_abs_diff_dense(b.y.get(), y_unfused.get(), s.elems()), 0.0);
}

void bench_layernorm_backward(benchmark::State& st, Shape s) {
  LayerNormBuffers b(s, false);
  layernorm_forward<bf16>(b.x.get(), nullptr, nullptr, b.gamma.get(), b.beta.get(), kEps, b.y.get(), b.mean.get(),
                          b.rstd.get(), int(s.rows()), s.D, nullptr);
  auto dy = filled<bf16>(s.elems(), -1.f, 1.f, 5);
  // dx accumulates; with |dx| growing by ~1 per call over a few thousand calls bf16 stays finite.
  auto dx = filled<bf16>(s.elems(), -1.f, 1.f, 6);
  rt::DeviceBuffer<float> dgamma(s.D), dbeta(s.D), scratch(layernorm_backward_scratch_floats(int(s.rows()), s.D));
  dgamma.zero();
  dbeta.zero();
  const double t = run_timed(st, [&] {
    layernorm_backward<bf16, float>(dy.get(), b.x.get(), b.gamma.get(), b.mean.get(), b.rstd.get(), dx.get(),
                                    dgamma.get(), dbeta.get(), scratch.get(), int(s.rows()), s.D, nullptr);
  });
  // dy, x read; dx read and written; mean, rstd read; gamma read, dgamma/dbeta read and written.
  report(st, 4.0 * s.elems() * sizeof(bf16) + 8.0 * s.rows() + s.D * (sizeof(bf16) + 16.0), t);
}

// ---- tokens ------------------------------------------------------------------------------------

// The unfused form: out[b, 0] = cls, out[b, 1 + p] = patches[b, p] (a concat), then out += pos
// broadcast over the batch, each a pass over global memory.
__global__ void concat_cls_kernel(const bf16* patches, const bf16* cls, bf16* out, int B, int Np, int D) {
  const int64_t n = int64_t(B) * (Np + 1) * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, t = (i / D) % (Np + 1), b = i / (int64_t(D) * (Np + 1));
    out[i] = t == 0 ? cls[d] : patches[(b * Np + t - 1) * D + d];
  }
}
__global__ void add_broadcast_kernel(bf16* out, const bf16* pos, int64_t n, int64_t period) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(__bfloat162float(out[i]) + __bfloat162float(pos[i % period]));
}

void bench_tokens_forward(benchmark::State& st, Shape s) {
  const int Np = kTokens - 1;
  auto patches = filled<bf16>(int64_t(s.B) * Np * s.D, -1.f, 1.f, 7), cls = filled<bf16>(s.D, -1.f, 1.f, 8),
       pos = filled<bf16>(int64_t(kTokens) * s.D, -0.1f, 0.1f, 9);
  rt::DeviceBuffer<bf16> out(s.elems()), out_unfused(s.elems());
  const dim3 grid(kSmoke ? 8 : 4 * 132), block(256);
  auto unfused = [&] {
    launch(concat_cls_kernel, grid, block, 0, nullptr, static_cast<const bf16*>(patches.get()),
           static_cast<const bf16*>(cls.get()), out_unfused.get(), s.B, Np, s.D);
    launch(add_broadcast_kernel, grid, block, 0, nullptr, out_unfused.get(), static_cast<const bf16*>(pos.get()),
           s.elems(), int64_t(kTokens) * s.D);
  };
  const double unfused_s = seconds_per_call(unfused, 2, 20);
  const double t = run_timed(st, [&] {
    tokens_forward<bf16>(patches.get(), cls.get(), nullptr, pos.get(), out.get(), s.B, Np, s.D, nullptr);
  });
  report(st, (double(s.B) * Np * s.D + double(s.elems()) + double(kTokens + 1) * s.D) * sizeof(bf16), t);
  report_unfused(st, t, unfused_s);
  // One fp32 add of two bf16 values, rounded once, on both sides: the same out.
  report_agreement(st, "unfused_max_abs_diff", max_abs_diff_dense(out.get(), out_unfused.get(), s.elems()), 0.0);
}

void bench_tokens_backward(benchmark::State& st, Shape s) {
  const int Np = kTokens - 1;
  auto dout = filled<bf16>(s.elems(), -1.f, 1.f, 10);
  rt::DeviceBuffer<bf16> dpatches(int64_t(s.B) * Np * s.D);
  rt::DeviceBuffer<float> dcls(s.D), dpos(int64_t(kTokens) * s.D);
  dcls.zero();
  dpos.zero();
  const double t = run_timed(st, [&] {
    tokens_backward<bf16, float>(dout.get(), dpatches.get(), dcls.get(), nullptr, dpos.get(), 1, s.B, Np, s.D, nullptr);
  });
  // dout read, dpatches written, dcls and dpos (fp32) read and written.
  report(st, (double(s.elems()) + double(s.B) * Np * s.D) * sizeof(bf16) + 8.0 * kTokens * s.D, t);
}

// ---- patch extraction --------------------------------------------------------------------------

void bench_patch_extract(benchmark::State& st, int B) {
  const int64_t pixels = int64_t(B) * kChannels * kImage * kImage;
  std::vector<unsigned char> host(pixels);
  for (int64_t i = 0; i < pixels; ++i) host[i] = static_cast<unsigned char>((i * 2654435761u) >> 24);
  rt::DeviceBuffer<unsigned char> images(host);
  rt::DeviceBuffer<bf16> cols(int64_t(B) * kPatches * kChannels * kPatch * kPatch);
  const float mean[kChannels] = {0.485f, 0.456f, 0.406f}, stdev[kChannels] = {0.229f, 0.224f, 0.225f};
  const double t = run_timed(st, [&] {
    patch_extract<bf16>(images.get(), true, ImageLayout::NCHW, B, kChannels, kImage, kImage, kPatch, mean, stdev,
                        cols.get(), nullptr);
  });
  report(st, double(pixels) + double(cols.size()) * sizeof(bf16), t);
}

// ---- pooling ------------------------------------------------------------------------------------

void bench_pool(benchmark::State& st, Shape s, bool backward) {
  auto x = filled<bf16>(s.elems(), -1.f, 1.f, 16), dout = filled<bf16>(int64_t(s.B) * s.D, -1.f, 1.f, 17);
  rt::DeviceBuffer<bf16> out(int64_t(s.B) * s.D), dx(s.elems());
  const double t = run_timed(st, [&] {
    if (backward)
      pool_backward<bf16>(dout.get(), Pool::Avg, 1, dx.get(), s.B, kTokens, s.D, nullptr);
    else
      pool_forward<bf16>(x.get(), Pool::Avg, 1, out.get(), s.B, kTokens, s.D, nullptr);
  });
  // forward reads the 196 patch rows, backward writes all 197 (zeros in the cls row).
  const double big = backward ? double(s.elems()) : double(s.B) * (kTokens - 1) * s.D;
  report(st, (big + double(s.B) * s.D) * sizeof(bf16), t);
}

void bench_copy(benchmark::State& st) {
  const double s = run_timed_copy(st);
  report(st, 2.0 * kCopyBytes, s);
}

void register_all() {
  struct Model {
    const char* name;
    int D;
  };
  register_timed("copy/d2d_1GiB", bench_copy, benchmark::kMillisecond);
  for (const Model m : {Model{"vit_ti", 192}, Model{"vit_s", 384}, Model{"vit_b", 768}})
    for (int batch : {128, 256}) {
      const Shape s{bench_batch(batch), m.D};
      const std::string p = std::string(m.name) + "/B" + std::to_string(batch) + "/";
      register_timed(p + "layernorm_fwd", [s](benchmark::State& st) { bench_layernorm_forward(st, s); });
      register_timed(p + "layernorm_fwd_residual",
                     [s](benchmark::State& st) { bench_layernorm_forward_residual(st, s); });
      register_timed(p + "layernorm_bwd", [s](benchmark::State& st) { bench_layernorm_backward(st, s); });
      register_timed(p + "tokens_fwd", [s](benchmark::State& st) { bench_tokens_forward(st, s); });
      register_timed(p + "tokens_bwd", [s](benchmark::State& st) { bench_tokens_backward(st, s); });
      register_timed(p + "pool_avg_fwd", [s](benchmark::State& st) { bench_pool(st, s, false); });
      register_timed(p + "pool_avg_bwd", [s](benchmark::State& st) { bench_pool(st, s, true); });
    }
  // The patch extraction depends on the image, not the model width.
  for (int batch : {128, 256}) {
    const int B = bench_batch(batch);
    register_timed("images/B" + std::to_string(batch) + "/patch_extract_u8_nchw",
                   [B](benchmark::State& st) { bench_patch_extract(st, B); });
  }
}

}  // namespace

int main(int argc, char** argv) { return bench_main(argc, argv, "bench_layers", register_all); }
