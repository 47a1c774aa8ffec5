// vitcuda — LayerNorm forward (optionally fused with the residual add) and backward.
// Storage T is float or bf16; all arithmetic is fp32. One warp normalises one row, with
// warp-shuffle reductions. The forward keeps its row in registers and moves it with 16-byte
// accesses when C is a multiple of 8 (bf16) or 4 (fp32) and the row fits (C <= 2048 bf16,
// 1024 fp32), the ViT case; otherwise (odd C, misaligned tensors) a general kernel stages the
// row in shared memory with element-wide accesses. The backward does the same (registers and
// 16-byte accesses, or the general kernel), keeps per-warp dgamma/dbeta partials in shared memory
// (conflict-free layouts), writes one partial per block, and a second kernel sums the blocks'
// partials in a fixed order (no atomics: bitwise reproducible) into the accumulating dgamma/dbeta.
#include "kernels/layernorm.h"

#include <algorithm>
#include <string>

#include "kernels/common.cuh"
#include "kernels/ptx.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
constexpr int kWarp = 32;
constexpr int kMaxWarpsPerBlock = 8;
// Upper bound on backward blocks: enough to fill an H100 (132 SMs) several times while keeping
// the per-block partials small (kMaxBackwardBlocks · 2C floats).
constexpr int kMaxBackwardBlocks = 512;
// Registers of the vectorised forward and backward: up to 8 chunks of 16 bytes per lane (C <= 2048 in bf16,
// 1024 in fp32; ViT-H's 1280 in fp32 takes the general kernel).
constexpr int kMaxForwardChunks = 8;
// Row slices of layernorm_param_grad_kernel: 32 × 16 = 512 threads per CTA, each summing
// blocks / 16 partials (32 for the 512 blocks of a ViT step).
constexpr int kParamGradSlices = 16;
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// The vectorised forward. blockDim.x = 32·W: warp w normalises row blockIdx.x·W + w; lane l holds
// the 16-byte chunks l, l + 32, ... of its row (kChunks at most) in registers: x and residual are
// read once and sum_out and y written once, all with 16-byte accesses, and no shared memory or
// barrier is needed. Needs C % V == 0, C / V <= 32·kChunks and 16-byte aligned tensors.
template <typename T, int kChunks>
__global__ void layernorm_forward_vec_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                                             T* __restrict__ sum_out, const T* __restrict__ gamma,
                                             const T* __restrict__ beta, float eps, T* __restrict__ y,
                                             float* __restrict__ mean, float* __restrict__ rstd, int rows, int C) {
  constexpr int V = Vec16<T>::kVec;
  const int warps = blockDim.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  if (row >= rows) return;
  const size_t base = static_cast<size_t>(row) * C;
  const int chunks = C / V;

  float v[kChunks][V];
  float sum = 0.f;
  VITCUDA_UNROLL
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane + k * kWarp;
    if (c >= chunks) continue;
    Vec16<T> s = load_vec16(x + base + static_cast<size_t>(c) * V);
    if (residual) {
      const Vec16<T> r = load_vec16(residual + base + static_cast<size_t>(c) * V);
      VITCUDA_UNROLL
      for (int j = 0; j < V; ++j) s.v[j] = from_float<T>(to_float(s.v[j]) + to_float(r.v[j]));
    }
    // normalise the rounded sum that is stored: backward reads sum_out as its x
    if (sum_out) store_vec16(sum_out + base + static_cast<size_t>(c) * V, s);
    VITCUDA_UNROLL
    for (int j = 0; j < V; ++j) {
      v[k][j] = to_float(s.v[j]);
      sum += v[k][j];
    }
  }
  const float m = warp_reduce_sum(sum) / C;

  float sq = 0.f;  // two-pass variance from registers: no cancellation when |mean| >> std
  VITCUDA_UNROLL
  for (int k = 0; k < kChunks; ++k) {
    if (lane + k * kWarp >= chunks) continue;
    VITCUDA_UNROLL
    for (int j = 0; j < V; ++j) {
      const float d = v[k][j] - m;
      sq += d * d;
    }
  }
  const float r = rsqrtf(warp_reduce_sum(sq) / C + eps);

  VITCUDA_UNROLL
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane + k * kWarp;
    if (c >= chunks) continue;
    const Vec16<T> g = load_vec16(gamma + static_cast<size_t>(c) * V);
    const Vec16<T> b = load_vec16(beta + static_cast<size_t>(c) * V);
    Vec16<T> out;
    VITCUDA_UNROLL
    for (int j = 0; j < V; ++j) out.v[j] = from_float<T>((v[k][j] - m) * r * to_float(g.v[j]) + to_float(b.v[j]));
    store_vec16(y + base + static_cast<size_t>(c) * V, out);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// The general forward. blockDim.x = 32·W: warp w normalises row blockIdx.x·W + w. Shared memory (fp32):
// gamma[C], beta[C], then one row of s per warp, so x and residual are read from global memory
// once and sum_out is written once.
template <typename T>
__global__ void layernorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                                         T* __restrict__ sum_out, const T* __restrict__ gamma,
                                         const T* __restrict__ beta, float eps, T* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd, int rows, int C) {
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  SmemPtr<float> s_gamma = smem;
  SmemPtr<float> s_beta = smem + C;
  SmemPtr<float> s_row = smem + (2 + warp) * C;

  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    s_gamma[i] = to_float(gamma[i]);
    s_beta[i] = to_float(beta[i]);
  }
  __syncthreads();

  const int row = blockIdx.x * warps + warp;
  if (row >= rows) return;  // whole warps leave together, after the only barrier
  const size_t base = static_cast<size_t>(row) * C;

  float sum = 0.f;
  for (int i = lane; i < C; i += kWarp) {
    float v = to_float(x[base + i]);
    if (residual) v = to_float(from_float<T>(v + to_float(residual[base + i])));
    // normalise the rounded sum that is stored: backward reads sum_out as its x
    if (sum_out) sum_out[base + i] = from_float<T>(v);
    s_row[i] = v;  // each lane reads back only its own elements: no barrier needed
    sum += v;
  }
  const float m = warp_reduce_sum(sum) / C;

  float sq = 0.f;  // two-pass variance: no cancellation when |mean| >> std
  for (int i = lane; i < C; i += kWarp) {
    const float d = s_row[i] - m;
    sq += d * d;
  }
  const float r = rsqrtf(warp_reduce_sum(sq) / C + eps);

  for (int i = lane; i < C; i += kWarp) y[base + i] = from_float<T>((s_row[i] - m) * r * s_gamma[i] + s_beta[i]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// The end of the general backward kernel: after a barrier, the block sums its warps' [dgamma | dbeta]
// partials (smem[w·2C ...]; consecutive threads read consecutive floats: conflict-free) in warp
// order into scratch[blockIdx.x]: reproducible.
template <typename Smem>
__device__ __forceinline__ void store_block_partials(const Smem& smem, int warps, int C, float* scratch) {
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < warps; ++w) s += smem[w * 2 * C + i];
    scratch[static_cast<size_t>(blockIdx.x) * 2 * C + i] = s;
  }
}

// blockDim.x = 32·W; block b handles rows b·W + w, stepping by gridDim.x·W. Per row:
//   xhat = (x - mean)·rstd, g = dy·gamma,
//   dx += rstd·(g - mean(g) - xhat·mean(g·xhat)),
// and each warp accumulates dy·xhat and dy into its own shared-memory row of partials
// (W · 2C floats), summed over the warps at the end into scratch[blockIdx.x][2C].
template <typename T>
__global__ void layernorm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const T* __restrict__ gamma, const float* __restrict__ mean,
                                          const float* __restrict__ rstd, T* __restrict__ dx,
                                          float* __restrict__ scratch, int rows, int C) {
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  SmemPtr<float> acc = smem + warp * 2 * C;  // [dgamma partial | dbeta partial]
  for (int i = lane; i < 2 * C; i += kWarp) acc[i] = 0.f;

  for (int row = blockIdx.x * warps + warp; row < rows; row += gridDim.x * warps) {
    const size_t base = static_cast<size_t>(row) * C;
    const float m = mean[row];
    const float r = rstd[row];
    float g_sum = 0.f, gx_sum = 0.f;
    for (int i = lane; i < C; i += kWarp) {
      const float xhat = (to_float(x[base + i]) - m) * r;
      const float g = to_float(dy[base + i]) * to_float(gamma[i]);
      g_sum += g;
      gx_sum += g * xhat;
    }
    const float g_mean = warp_reduce_sum(g_sum) / C;
    const float gx_mean = warp_reduce_sum(gx_sum) / C;
    for (int i = lane; i < C; i += kWarp) {
      const float d = to_float(dy[base + i]);
      const float xhat = (to_float(x[base + i]) - m) * r;
      if (dx) {
        const float g = d * to_float(gamma[i]);
        dx[base + i] = from_float<T>(to_float(dx[base + i]) + r * (g - g_mean - xhat * gx_mean));
      }
      acc[i] += d * xhat;
      acc[C + i] += d;
    }
  }
  store_block_partials(smem, warps, C, scratch);
}

// Resident 256-thread CTAs per SM the vectorised backward is compiled for (register cap
// 65536 / (256·n), rounded down to 8): at 1-2 chunks per lane the float4 partials' addressing
// would otherwise take ptxas to 56 registers, below the occupancy of the earlier feature-order
// layout (fp32: 40 registers, 48 warps/SM at 1 chunk, 48 and 40 at 2; bf16: 48, 40 warps at 1,
// 64 at 2, where 48 spills); at 3-8 chunks 2 (<= 128 registers: 16 warps/SM), which without
// the cap nvcc reaches anyway (91-127), except bf16 at 8 chunks under a 256-thread bound (135).
template <typename T>
constexpr int backward_vec_min_blocks(int chunks) {
  if (chunks == 1) return sizeof(T) == 4 ? 6 : 5;
  if (chunks == 2) return sizeof(T) == 4 ? 5 : 4;
  return 2;
}

// Makes nvcc forget the values it derived from v (ptx::register_barrier).
template <typename T>
__device__ __forceinline__ void opaque(Vec16<T>& v) {
  uint4 raw;
  memcpy(&raw, &v, sizeof(raw));
  ptx::register_barrier(raw);
  memcpy(&v, &raw, sizeof(raw));
}

// The vectorised backward: the same work split as layernorm_backward_kernel, but lane l holds the
// 16-byte chunks l, l + 32, ... of its row: dy and x are read once with 16-byte loads and kept in
// registers, still packed in T (bf16: half the registers of fp32 copies; xhat is recomputed, two
// FMAs), between the two reductions; dx is read and written with 16-byte accesses.
//
// Each warp's dgamma/dbeta partials stay in shared memory, each lane updating only its own
// chunks, in the same row order: deterministic. The layout makes every access conflict-free:
// a chunk's V features are V/4 float4s, and float4 (half h, quarter q, chunk c) sits at
// (h·V/4 + q)·chunks + c, so for a given (h, q) the 32 lanes (c = lane + 32k) touch 32
// consecutive float4s: LDS.128/STS.128 at 4 wavefronts, the minimum for 512 bytes. (The
// feature-order layout, float c·V + j, put lane l at a stride of V floats: 8-way bank
// conflicts for bf16, 4-way for fp32, on every scalar access.)
template <typename T, int kChunks>
__global__ void __launch_bounds__(kMaxWarpsPerBlock* kWarp, backward_vec_min_blocks<T>(kChunks))
    layernorm_backward_vec_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                                  const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                                  float* __restrict__ scratch, int rows, int C) {
  constexpr int V = Vec16<T>::kVec;
  constexpr int Q = V / 4;  // float4s per chunk
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int chunks = C / V;
  const int units = C / 2;  // float4s of one warp's [dgamma | dbeta]: 2C / 4
  SmemPtr<float4> all = smem_cast<float4>(smem);
  SmemPtr<float4> acc = all + warp * units;
  for (int u = lane; u < units; u += kWarp) acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);

  for (int row = blockIdx.x * warps + warp; row < rows; row += gridDim.x * warps) {
    const size_t base = static_cast<size_t>(row) * C;
    const float m = mean[row];
    const float r = rstd[row];
    Vec16<T> dv[kChunks], xv[kChunks];
    float g_sum = 0.f, gx_sum = 0.f;
    VITCUDA_UNROLL
    for (int k = 0; k < kChunks; ++k) {
      const int c = lane + k * kWarp;
      if (c >= chunks) continue;
      dv[k] = load_vec16(dy + base + static_cast<size_t>(c) * V);
      xv[k] = load_vec16(x + base + static_cast<size_t>(c) * V);
      const Vec16<T> gv = load_vec16(gamma + static_cast<size_t>(c) * V);
      VITCUDA_UNROLL
      for (int j = 0; j < V; ++j) {
        const float g = to_float(dv[k].v[j]) * to_float(gv.v[j]);
        g_sum += g;
        gx_sum += g * ((to_float(xv[k].v[j]) - m) * r);
      }
    }
    const float g_mean = warp_reduce_sum(g_sum) / C;
    const float gx_mean = warp_reduce_sum(gx_sum) / C;
    VITCUDA_UNROLL
    for (int k = 0; k < kChunks; ++k) {
      const int c = lane + k * kWarp;
      if (c >= chunks) continue;
      opaque(dv[k]);  // convert again below: keeping the fp32 copies costs twice the registers
      opaque(xv[k]);
      float d[V], xh[V];
      VITCUDA_UNROLL
      for (int j = 0; j < V; ++j) {
        d[j] = to_float(dv[k].v[j]);
        xh[j] = (to_float(xv[k].v[j]) - m) * r;
      }
      if (dx) {
        const Vec16<T> gv = load_vec16(gamma + static_cast<size_t>(c) * V);
        Vec16<T> o = load_vec16(dx + base + static_cast<size_t>(c) * V);
        VITCUDA_UNROLL
        for (int j = 0; j < V; ++j) {
          const float g = d[j] * to_float(gv.v[j]);
          o.v[j] = from_float<T>(to_float(o.v[j]) + r * (g - g_mean - xh[j] * gx_mean));
        }
        store_vec16(dx + base + static_cast<size_t>(c) * V, o);
      }
      VITCUDA_UNROLL
      for (int q = 0; q < Q; ++q) {
        float4 a = acc[q * chunks + c];
        a.x += d[4 * q] * xh[4 * q];
        a.y += d[4 * q + 1] * xh[4 * q + 1];
        a.z += d[4 * q + 2] * xh[4 * q + 2];
        a.w += d[4 * q + 3] * xh[4 * q + 3];
        acc[q * chunks + c] = a;
        float4 b = acc[(Q + q) * chunks + c];
        b.x += d[4 * q];
        b.y += d[4 * q + 1];
        b.z += d[4 * q + 2];
        b.w += d[4 * q + 3];
        acc[(Q + q) * chunks + c] = b;
      }
    }
  }

  // The block's sum of its warps' partials, in warp order, float4 u of the layout above at a
  // time (consecutive threads, consecutive float4s: conflict-free), into scratch[blockIdx.x] in
  // feature order [dgamma | dbeta].
  __syncthreads();
  float* out = scratch + static_cast<size_t>(blockIdx.x) * 2 * C;
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    float4 s = all[u];
    for (int w = 1; w < warps; ++w) {
      const float4 p = all[w * units + u];
      s.x += p.x;
      s.y += p.y;
      s.z += p.z;
      s.w += p.w;
    }
    const int hq = u / chunks, c = u - hq * chunks;  // 32-bit: u < C/2
    const int h = hq / Q, q = hq - h * Q;
    float* o = out + h * C + c * V + 4 * q;
    o[0] = s.x;
    o[1] = s.y;
    o[2] = s.z;
    o[3] = s.w;
  }
}

// The parameter gradients from the per-block partials scratch[blocks][2C] ([dgamma | dbeta]):
// block (32, kParamGradSlices) takes 32 consecutive columns of the 2C; thread (x, y) sums blocks
// y, y + kParamGradSlices, ... in that order, then thread (x, 0) sums the slices in y order and
// accumulates. The order depends on `blocks` only, never on scheduling: bitwise reproducible.
// 2C/32 CTAs of 512 threads (48 for ViT-B's C = 768) read the partials with 128-byte rows,
// where one thread per column (C/256 = 3 CTAs for ViT-B) walked 512 dependent-latency rows.
template <typename TG>
__global__ void layernorm_param_grad_kernel(const float* __restrict__ scratch, int blocks, int C,
                                            TG* __restrict__ dgamma, TG* __restrict__ dbeta) {
  __shared__ float part[kParamGradSlices][kWarp];
  const int col = blockIdx.x * kWarp + threadIdx.x;  // < 2C
  const int width = 2 * C;
  float s = 0.f;
  if (col < width)
    for (int b = threadIdx.y; b < blocks; b += kParamGradSlices) s += scratch[static_cast<size_t>(b) * width + col];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || col >= width) return;
  float t = 0.f;
  VITCUDA_UNROLL
  for (int y = 0; y < kParamGradSlices; ++y) t += part[y][threadIdx.x];
  if (col < C) {
    if (dgamma) dgamma[col] = from_float<TG>(to_float(dgamma[col]) + t);
  } else if (dbeta) {
    dbeta[col - C] = from_float<TG>(to_float(dbeta[col - C]) + t);
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

void check_shape(const char* op, int rows, int C) {
  if (rows < 0 || C <= 0)
    throw Error(std::string(op) + ": rows must be >= 0 and C > 0 (got rows=" + std::to_string(rows) +
                ", C=" + std::to_string(C) + ")");
}

// Warps per block such that `floats_per_warp` per warp plus `shared_floats` fit in 48 KiB.
int warps_for(size_t shared_floats, size_t floats_per_warp) {
  const size_t budget = kDefaultDynamicSmem / sizeof(float);
  if (budget <= shared_floats + floats_per_warp) return 1;
  return static_cast<int>(std::clamp<size_t>((budget - shared_floats) / floats_per_warp, 1, kMaxWarpsPerBlock));
}

int backward_warps(int C) { return warps_for(0, 2 * static_cast<size_t>(C)); }
int backward_blocks(int rows, int C) {
  return std::max(1, std::min(kMaxBackwardBlocks, ceil_div(rows, backward_warps(C))));
}

}  // namespace

template <typename T>
void layernorm_forward(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta, float eps, T* y,
                       float* mean, float* rstd, int rows, int C, rt::Stream stream) {
  check_shape("layernorm_forward", rows, C);
  if (residual && !sum_out) throw Error("layernorm_forward: a residual needs sum_out to hold x + residual");
  if (rows == 0) return;
  constexpr int V = Vec16<T>::kVec;
  const int chunks_per_lane = C % V == 0 ? ceil_div(C / V, kWarp) : 0;
  const bool aligned = aligned_to(x, 16) && aligned_to(residual, 16) && aligned_to(sum_out, 16) &&
                       aligned_to(gamma, 16) && aligned_to(beta, 16) && aligned_to(y, 16);
  if (chunks_per_lane > 0 && chunks_per_lane <= kMaxForwardChunks && aligned) {
    constexpr int kVecWarps = 4;  // 128-thread blocks: many small blocks, no shared memory
    const dim3 grid(ceil_div(rows, kVecWarps)), block(kVecWarps * kWarp);
    auto run = [&](auto kernel) {
      launch(kernel, grid, block, 0, stream, x, residual, sum_out, gamma, beta, eps, y, mean, rstd, rows, C);
    };
    if (chunks_per_lane <= 1)
      run(layernorm_forward_vec_kernel<T, 1>);
    else if (chunks_per_lane <= 2)
      run(layernorm_forward_vec_kernel<T, 2>);
    else if (chunks_per_lane <= 4)
      run(layernorm_forward_vec_kernel<T, 4>);
    else
      run(layernorm_forward_vec_kernel<T, kMaxForwardChunks>);
    return;
  }
  const int warps = warps_for(2 * static_cast<size_t>(C), C);
  const size_t smem = (2 + static_cast<size_t>(warps)) * C * sizeof(float);
  reserve_dynamic_smem("layernorm_forward", layernorm_forward_kernel<T>, smem, "C=" + std::to_string(C));
  launch(layernorm_forward_kernel<T>, dim3(ceil_div(rows, warps)), dim3(warps * kWarp), smem, stream, x, residual,
         sum_out, gamma, beta, eps, y, mean, rstd, rows, C);
}

size_t layernorm_backward_scratch_floats(int rows, int C) {
  check_shape("layernorm_backward_scratch_floats", rows, C);
  return static_cast<size_t>(backward_blocks(rows, C)) * 2 * C;
}

template <typename T, typename TG>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const float* mean, const float* rstd, T* dx,
                        TG* dgamma, TG* dbeta, float* scratch, int rows, int C, rt::Stream stream) {
  check_shape("layernorm_backward", rows, C);
  if (rows == 0) return;
  if (!scratch)
    throw Error(
        "layernorm_backward: scratch of layernorm_backward_scratch_floats(rows, C) "
        "floats is required");
  const int warps = backward_warps(C);
  const int blocks = backward_blocks(rows, C);
  const size_t smem = static_cast<size_t>(warps) * 2 * C * sizeof(float);
  constexpr int V = Vec16<T>::kVec;
  const int chunks_per_lane = C % V == 0 ? ceil_div(C / V, kWarp) : 0;
  const bool aligned = aligned_to(dy, 16) && aligned_to(x, 16) && aligned_to(gamma, 16) && aligned_to(dx, 16);
  auto run = [&](auto kernel) {
    reserve_dynamic_smem("layernorm_backward", kernel, smem, "C=" + std::to_string(C));
    launch(kernel, dim3(blocks), dim3(warps * kWarp), smem, stream, dy, x, gamma, mean, rstd, dx, scratch, rows, C);
  };
  if (chunks_per_lane > 0 && chunks_per_lane <= kMaxForwardChunks && aligned) {
    if (chunks_per_lane <= 1)
      run(layernorm_backward_vec_kernel<T, 1>);
    else if (chunks_per_lane <= 2)
      run(layernorm_backward_vec_kernel<T, 2>);
    else if (chunks_per_lane <= 4)
      run(layernorm_backward_vec_kernel<T, 4>);
    else
      run(layernorm_backward_vec_kernel<T, kMaxForwardChunks>);
  } else {
    run(layernorm_backward_kernel<T>);
  }
  if (dgamma || dbeta) {
    launch(layernorm_param_grad_kernel<TG>, dim3(ceil_div(2 * C, kWarp)), dim3(kWarp, kParamGradSlices), 0, stream,
           static_cast<const float*>(scratch), blocks, C, dgamma, dbeta);
  }
}

// ---- instantiations: fp32, and bf16 storage with bf16 or fp32 parameter gradients ----------
template void layernorm_forward<float>(const float*, const float*, float*, const float*, const float*, float, float*,
                                       float*, float*, int, int, rt::Stream);
template void layernorm_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*,
                                               const __nv_bfloat16*, const __nv_bfloat16*, float, __nv_bfloat16*,
                                               float*, float*, int, int, rt::Stream);
template void layernorm_backward<float, float>(const float*, const float*, const float*, const float*, const float*,
                                               float*, float*, float*, float*, int, int, rt::Stream);
template void layernorm_backward<__nv_bfloat16, __nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                               const __nv_bfloat16*, const float*, const float*,
                                                               __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, float*,
                                                               int, int, rt::Stream);
template void layernorm_backward<__nv_bfloat16, float>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                       const float*, const float*, __nv_bfloat16*, float*, float*,
                                                       float*, int, int, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
