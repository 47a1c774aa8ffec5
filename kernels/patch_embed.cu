// vitcuda — patch extraction (im2col, kernel = stride = P) with the normalisation fused.
// One thread per element of cols, consecutive threads on consecutive kx: writes are fully
// coalesced, and NCHW reads are runs of P pixels (16 B of uint8 or 64 B of float for P = 16);
// NHWC reads stride by C. Memory-bound: a batch of 256 224² RGB uint8 images (38.5 MB in, 77 MB of
// bf16 out) should take ~40–50 µs on an H100.
#include "kernels/patch_embed.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
struct PatchNorm {
  float mean[kPatchMaxChannels];
  float inv_std[kPatchMaxChannels];
};
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// grid (B·Np, ceil(C·P² / blockDim.x)): block (row, y) writes columns y·blockDim.x + threadIdx.x of
// cols row `row` = b·Np + p. All index math is 32-bit (the launcher checks B·Np and C·P² fit an
// int; the image offsets are 64-bit products, no division), and the channel's mean and 1/std are
// picked from the by-value parameter with compile-time indices: a run-time index into it made
// nvcc copy the 64-byte struct to local memory (64 bytes stack, 10-14 LDL/STL per kernel), and
// the 64-bit element index cost 2-7 64-bit divisions.
template <typename T, typename Pixel, bool kNHWC>
__global__ void patch_extract_kernel(const Pixel* __restrict__ images, PatchNorm norm, int C, int H, int W, int P,
                                     T* __restrict__ cols) {
  const int pp = P * P, pd = C * pp;
  const int col = blockIdx.y * blockDim.x + threadIdx.x;
  if (col >= pd) return;
  const int row = blockIdx.x;  // b·Np + p
  const int gw = W / P, np = (H / P) * gw;
  const int b = row / np, p = row - b * np;
  const int c = col / pp, kyx = col - c * pp;
  const int ky = kyx / P, kx = kyx - ky * P;
  const int py = p / gw;
  const int y = py * P + ky, x = (p - py * gw) * P + kx;
  const int64_t idx =
      kNHWC ? ((static_cast<int64_t>(b) * H + y) * W + x) * C + c : ((static_cast<int64_t>(b) * C + c) * H + y) * W + x;
  float mean = 0.f, inv_std = 0.f;
  VITCUDA_UNROLL
  for (int k = 0; k < kPatchMaxChannels; ++k)
    if (k == c) {
      mean = norm.mean[k];
      inv_std = norm.inv_std[k];
    }
  const float scale = std::is_same<Pixel, uint8_t>::value ? 1.f / 255.f : 1.f;
  const float v = static_cast<float>(images[idx]) * scale;
  cols[static_cast<int64_t>(row) * pd + col] = from_float<T>((v - mean) * inv_std);
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

template <typename T>
void patch_extract(const void* images, bool images_u8, ImageLayout layout, int B, int C, int H, int W, int P,
                   const float* mean, const float* stdev, T* cols, rt::Stream stream) {
  constexpr const char* op = "patch_extract";
  auto fail = [&](const std::string& what) { throw Error(std::string(op) + ": " + what); };
  if (B < 0) fail("B must be >= 0 (got " + std::to_string(B) + ")");
  if (C <= 0 || C > kPatchMaxChannels)
    fail("C must be in 1.." + std::to_string(kPatchMaxChannels) + " (got " + std::to_string(C) + ")");
  if (P <= 0) fail("P must be > 0 (got " + std::to_string(P) + ")");
  if (H < P || W < P)
    fail("the image (H=" + std::to_string(H) + ", W=" + std::to_string(W) +
         ") is smaller than one patch (P=" + std::to_string(P) + ")");
  if (!images) fail("images is null");
  if (!cols) fail("cols is null");
  if (!mean) fail("mean is null");
  if (!stdev) fail("stdev is null");
  if (!images_u8 && reinterpret_cast<uintptr_t>(images) % alignof(float) != 0)
    fail("float images are not 4-byte aligned");
  PatchNorm norm{};
  for (int c = 0; c < C; ++c) {
    if (!(stdev[c] > 0.f) || !std::isfinite(stdev[c]))
      fail("stdev[" + std::to_string(c) + "] must be positive and finite (got " + std::to_string(stdev[c]) + ")");
    norm.mean[c] = mean[c];
    norm.inv_std[c] = static_cast<float>(1.0 / stdev[c]);
  }
  // The kernel's 32-bit index math: rows B·Np on grid.x, C·P² per row (grid.y <= 65535 blocks).
  const int64_t rows = static_cast<int64_t>(B) * (H / P) * (W / P);
  const int64_t pd = static_cast<int64_t>(C) * P * P;
  if (rows > std::numeric_limits<int>::max())
    fail("B·(H/P)·(W/P) = " + std::to_string(rows) + " patches exceed 2^31 - 1");
  if (pd > 65535LL * 256) fail("C·P² = " + std::to_string(pd) + " exceeds 65535·256");
  if (rows == 0) return;
  // 256 threads, or the row's columns rounded up to a warp when fewer (small patches).
  const int threads = static_cast<int>(std::min<int64_t>(256, (pd + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((pd + threads - 1) / threads));
  const dim3 block(threads);
  const bool nhwc = layout == ImageLayout::NHWC;
  if (images_u8) {
    const auto* px = static_cast<const uint8_t*>(images);
    if (nhwc)
      launch(patch_extract_kernel<T, uint8_t, true>, grid, block, 0, stream, px, norm, C, H, W, P, cols);
    else
      launch(patch_extract_kernel<T, uint8_t, false>, grid, block, 0, stream, px, norm, C, H, W, P, cols);
  } else {
    const auto* px = static_cast<const float*>(images);
    if (nhwc)
      launch(patch_extract_kernel<T, float, true>, grid, block, 0, stream, px, norm, C, H, W, P, cols);
    else
      launch(patch_extract_kernel<T, float, false>, grid, block, 0, stream, px, norm, C, H, W, P, cols);
  }
}

template void patch_extract<float>(const void*, bool, ImageLayout, int, int, int, int, int, const float*, const float*,
                                   float*, rt::Stream);
template void patch_extract<__nv_bfloat16>(const void*, bool, ImageLayout, int, int, int, int, int, const float*,
                                           const float*, __nv_bfloat16*, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
