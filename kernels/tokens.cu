// vitcuda — tokens: cls (and distillation token) prepend + position embedding, forward and backward.
// Forward is elementwise (one thread per output element, coalesced). Backward gives each thread
// one (t, j) column of dout and walks the batch in order: the reads of a warp are 32 consecutive
// elements of one token row (coalesced), the batch sum needs no atomics and no scratch, and the
// same loop copies the patch rows to dpatches. For ViT-B (Tn·D = 151k columns) that is ~1200
// blocks of 128 threads, enough to stream dout at close to HBM bandwidth.
#include "kernels/tokens.h"

#include <algorithm>
#include <limits>
#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// grid (ceil(Tn·D / blockDim.x), min(B, 65535)): thread tj = t·D + j of a token row, for samples
// b = blockIdx.y, + gridDim.y, ...: (t, j) is computed once, in 32-bit (the launcher checks
// Tn·D < 2^31), and no 64-bit division is left (the grid-stride loop over the flat B·Tn·D index
// divided by Tn·D and D in 64 bits: 11 divisions in the fp32 kernel).
template <typename T>
__global__ void tokens_forward_kernel(const T* __restrict__ patches, const T* __restrict__ cls,
                                      const T* __restrict__ dist, const T* __restrict__ pos, T* __restrict__ out, int B,
                                      int Np, int D) {
  const int off = (cls ? 1 : 0) + (dist ? 1 : 0);
  const int row_len = (Np + off) * D;
  const int tj = blockIdx.x * blockDim.x + threadIdx.x;
  if (tj >= row_len) return;
  const int t = tj / D, j = tj - t * D;
  const float p = to_float(pos[tj]);
  if (t < off) {  // a prefix row: the same for every sample
    const float v = to_float(t == 0 ? cls[j] : dist[j]) + p;
    for (int b = blockIdx.y; b < B; b += gridDim.y) out[static_cast<int64_t>(b) * row_len + tj] = from_float<T>(v);
    return;
  }
  for (int b = blockIdx.y; b < B; b += gridDim.y) {
    const float src = to_float(patches[(static_cast<int64_t>(b) * Np + t - off) * D + j]);
    out[static_cast<int64_t>(b) * row_len + tj] = from_float<T>(src + p);
  }
}

// One thread per (t, j) column of dout (Tn·D < 2^31, checked by the launcher: 32-bit index math).
template <typename T, typename TG>
__global__ void tokens_backward_kernel(const T* __restrict__ dout, T* __restrict__ dpatches, TG* __restrict__ dcls,
                                       TG* __restrict__ ddist, TG* __restrict__ dpos, int off, int B, int Np, int D) {
  const int row_len = (Np + off) * D;
  const int tj = blockIdx.x * blockDim.x + threadIdx.x;
  if (tj >= row_len) return;
  const int t = tj / D, j = tj - t * D;
  const bool patch_row = t >= off;
  float s = 0.f;
  for (int b = 0; b < B; ++b) {
    const T g = dout[static_cast<int64_t>(b) * row_len + tj];
    s += to_float(g);
    if (dpatches && patch_row) dpatches[(static_cast<int64_t>(b) * Np + t - off) * D + j] = g;
  }
  if (dpos) dpos[tj] = from_float<TG>(to_float(dpos[tj]) + s);
  if (dcls && t == 0 && off > 0) dcls[j] = from_float<TG>(to_float(dcls[j]) + s);
  if (ddist && t == 1 && off > 1) ddist[j] = from_float<TG>(to_float(ddist[j]) + s);
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {
void check(const char* op, int B, int Np, int D) {
  if (B < 0 || Np < 0 || D <= 0)
    throw Error(std::string(op) + ": B, Np must be >= 0 and D > 0 (got B=" + std::to_string(B) +
                ", Np=" + std::to_string(Np) + ", D=" + std::to_string(D) + ")");
}
// The kernels index a token row (Tn·D elements) with 32-bit ints.
int64_t checked_row_len(const char* op, int Np, int off, int D) {
  const int64_t row_len = (static_cast<int64_t>(Np) + off) * D;
  if (row_len > std::numeric_limits<int>::max())
    throw Error(std::string(op) + ": (Np + prefix tokens)·D = " + std::to_string(row_len) + " exceeds 2^31 - 1");
  return row_len;
}
void require(const char* op, const void* p, const char* name) {
  if (!p) throw Error(std::string(op) + ": " + name + " is null");
}
}  // namespace

template <typename T>
void tokens_forward(const T* patches, const T* cls, const T* dist, const T* pos, T* out, int B, int Np, int D,
                    rt::Stream stream) {
  constexpr const char* op = "tokens_forward";
  check(op, B, Np, D);
  require(op, patches, "patches");
  require(op, pos, "pos");
  require(op, out, "out");
  if (dist && !cls) throw Error("tokens_forward: dist (the distillation token) needs cls");
  const int64_t row_len = checked_row_len(op, Np, (cls ? 1 : 0) + (dist ? 1 : 0), D);
  if (B == 0 || row_len == 0) return;
  // 256 threads, or the token row rounded up to a warp when shorter (tiny models).
  const int threads = static_cast<int>(std::min<int64_t>(256, (row_len + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>((row_len + threads - 1) / threads), static_cast<unsigned>(std::min(B, 65535)));
  launch(tokens_forward_kernel<T>, grid, dim3(threads), 0, stream, patches, cls, dist, pos, out, B, Np, D);
}

template <typename T, typename TG>
void tokens_backward(const T* dout, T* dpatches, TG* dcls, TG* ddist, TG* dpos, int num_prefix, int B, int Np, int D,
                     rt::Stream stream) {
  constexpr const char* op = "tokens_backward";
  check(op, B, Np, D);
  require(op, dout, "dout");
  if (num_prefix < 0 || num_prefix > 2)
    throw Error("tokens_backward: num_prefix must be 0, 1 (cls) or 2 (cls, dist), got " + std::to_string(num_prefix));
  if (dcls && num_prefix < 1) throw Error("tokens_backward: dcls is given but num_prefix is 0");
  if (ddist && num_prefix < 2)
    throw Error("tokens_backward: ddist is given but num_prefix is " + std::to_string(num_prefix));
  const int64_t row_len = checked_row_len(op, Np, num_prefix, D);
  if (row_len == 0 || (!dpatches && !dcls && !ddist && !dpos)) return;
  constexpr int kThreads = 128;
  launch(tokens_backward_kernel<T, TG>, dim3(static_cast<unsigned>((row_len + kThreads - 1) / kThreads)),
         dim3(kThreads), 0, stream, dout, dpatches, dcls, ddist, dpos, num_prefix, B, Np, D);
}

template void tokens_forward<float>(const float*, const float*, const float*, const float*, float*, int, int, int,
                                    rt::Stream);
template void tokens_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                            const __nv_bfloat16*, __nv_bfloat16*, int, int, int, rt::Stream);
template void tokens_backward<float, float>(const float*, float*, float*, float*, float*, int, int, int, int,
                                            rt::Stream);
template void tokens_backward<__nv_bfloat16, float>(const __nv_bfloat16*, __nv_bfloat16*, float*, float*, float*, int,
                                                    int, int, int, rt::Stream);
template void tokens_backward<__nv_bfloat16, __nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*,
                                                            __nv_bfloat16*, __nv_bfloat16*, int, int, int, int,
                                                            rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
