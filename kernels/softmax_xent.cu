// vitcuda — fused softmax cross-entropy (+ label smoothing, top-1/top-5 hits), one warp per row.
// The classifier logits are small (B·C = 256·1000 bf16 is 0.5 MB), so the kernel is about
// latency, not bandwidth: a warp per row keeps every reduction in registers and shuffles (no
// shared memory, no block barrier), the row statistics come from one pass with the online
// softmax update (running max and rescaled sum, as in FlashAttention), and the dlogits pass
// re-reads the row from L1/L2. Any C works; lanes stride over it.
#include "kernels/softmax_xent.h"

#include <cfloat>
#include <cmath>
#include <string>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
constexpr int kWarp = 32;
// 4 warps (rows) per block: for B = 256 that is 64 blocks, enough to spread over the SMs.
constexpr int kRowsPerBlock = 4;
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// Merge of two online-softmax states (max m, Σ exp(z - m)). -FLT_MAX (not -inf) marks an empty
// state, so exp(m - max) is exp(-huge) = 0 and never exp(-inf + inf).
__device__ __forceinline__ void softmax_merge(float& m, float& s, float om, float os) {
  const float nm = fmaxf(m, om);
  s = s * expf(m - nm) + os * expf(om - nm);
  m = nm;
}

template <typename T>
__global__ void softmax_xent_kernel(const T* __restrict__ logits, const int32_t* __restrict__ labels, float smoothing,
                                    float dscale, float* __restrict__ losses, T* __restrict__ dlogits,
                                    int32_t* __restrict__ hits, int64_t B, int64_t C) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= B) return;  // whole warps: no barrier in this kernel
  const T* z = logits + row * C;
  const int32_t y = labels[row];
  if (y < 0 || y >= C) {  // warp-uniform
    if (lane == 0) {
      losses[row] = NAN;
      if (hits) hits[row] = 0;
    }
    if (dlogits)
      for (int64_t j = lane; j < C; j += kWarp) dlogits[row * C + j] = from_float<T>(0.f);
    return;
  }
  const float zy = to_float(z[y]);

  float m = -FLT_MAX, s = 0.f, sum_z = 0.f;
  int above = 0;  // classes scoring strictly above the label, as the reference counts rank
  for (int64_t j = lane; j < C; j += kWarp) {
    const float v = to_float(z[j]);
    sum_z += v;
    above += v > zy;
    if (v > m) {  // new running max: rescale the sum once instead of every element
      s = s * expf(m - v) + 1.f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const float om = __shfl_xor_sync(kFullWarpMask, m, offset);
    const float os = __shfl_xor_sync(kFullWarpMask, s, offset);
    softmax_merge(m, s, om, os);  // commutative: every lane ends with the same (m, s)
    above += __shfl_xor_sync(kFullWarpMask, above, offset);
  }
  sum_z = warp_reduce_sum(sum_z);
  const float lse = m + logf(s);
  if (lane == 0) {
    const float nll = lse - zy;
    const float smooth = lse - sum_z / static_cast<float>(C);  // mean_j(-log p_j)
    losses[row] = (1.f - smoothing) * nll + smoothing * smooth;
    if (hits) hits[row] = (above == 0 ? 1 : 0) | (above < 5 ? 2 : 0);
  }
  if (dlogits) {
    const float off_target = smoothing / static_cast<float>(C);
    const float on_target = (1.f - smoothing) + off_target;
    for (int64_t j = lane; j < C; j += kWarp) {
      const float p = expf(to_float(z[j]) - lse);
      dlogits[row * C + j] = from_float<T>((p - (j == y ? on_target : off_target)) * dscale);
    }
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

template <typename T>
void softmax_xent(const T* logits, const int32_t* labels, float smoothing, float dscale, float* losses, T* dlogits,
                  int32_t* hits, int64_t B, int64_t C, rt::Stream stream) {
  const char* op = "softmax_xent";
  require_nonnegative(op, "B", B);
  if (C <= 0) throw Error(std::string(op) + ": C must be > 0, got " + std::to_string(C));
  if (!(smoothing >= 0.f && smoothing <= 1.f))
    throw Error(std::string(op) + ": smoothing must lie in [0, 1], got " + std::to_string(smoothing));
  if (!std::isfinite(dscale)) throw Error(std::string(op) + ": dscale must be finite, got " + std::to_string(dscale));
  if (B == 0) return;
  require_pointer(op, "logits", logits, sizeof(T));
  require_pointer(op, "labels", labels, sizeof(int32_t));
  require_pointer(op, "losses", losses, sizeof(float));
  if (dlogits) require_pointer(op, "dlogits", dlogits, sizeof(T));
  if (hits) require_pointer(op, "hits", hits, sizeof(int32_t));
  const int64_t blocks = (B + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) throw Error(std::string(op) + ": B is too large for one grid");
  launch(softmax_xent_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kRowsPerBlock * kWarp), 0, stream, logits,
         labels, smoothing, dscale, losses, dlogits, hits, B, C);
}

template void softmax_xent<float>(const float*, const int32_t*, float, float, float*, float*, int32_t*, int64_t,
                                  int64_t, rt::Stream);
template void softmax_xent<__nv_bfloat16>(const __nv_bfloat16*, const int32_t*, float, float, float*, __nv_bfloat16*,
                                          int32_t*, int64_t, int64_t, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
