// vitcuda — distillation loss (hard: CE against the teacher's argmax; soft: τ²·KL(q ‖ p)), one
// warp per row, as kernels/softmax_xent.cu: the logits are small (B·C = 256·1000), so the kernel
// is about latency; every reduction stays in registers and shuffles. One pass over the row builds
// the online-softmax statistics (running max and rescaled sum) of the student and, for soft, of
// the teacher (or, for hard, the teacher's argmax); a second pass, from L1/L2, forms the KL sum
// and the gradient.
#include "kernels/distill.h"

#include <cfloat>
#include <cmath>
#include <string>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;  // 4 warps (rows) per block, as softmax_xent
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// Online-softmax state (max m, Σ exp(z − m)): one more value, and the merge of two states.
// -FLT_MAX (not -inf) marks an empty state, so exp(m − max) is exp(−huge) = 0, never NaN.
__device__ __forceinline__ void online_add(float& m, float& s, float v) {
  if (v > m) {  // new running max: rescale the sum once instead of every element
    s = s * expf(m - v) + 1.f;
    m = v;
  } else {
    s += expf(v - m);
  }
}
__device__ __forceinline__ void online_merge(float& m, float& s, float om, float os) {
  const float nm = fmaxf(m, om);
  s = s * expf(m - nm) + os * expf(om - nm);
  m = nm;
}

// Warp-wide log-sum-exp of the lanes' states: every lane ends with the same value.
__device__ __forceinline__ float warp_lse(float m, float s) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const float om = __shfl_xor_sync(kFullWarpMask, m, offset);
    const float os = __shfl_xor_sync(kFullWarpMask, s, offset);
    online_merge(m, s, om, os);
  }
  return m + logf(s);
}

template <typename T>
__global__ void distill_loss_kernel(const T* __restrict__ student, const T* __restrict__ teacher, bool soft, float tau,
                                    float alpha, float dscale, float* __restrict__ losses, T* __restrict__ dlogits,
                                    bool accumulate, int64_t B, int64_t C) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= B) return;  // whole warps: no barrier in this kernel
  const T* s = student + row * C;
  const T* t = teacher + row * C;
  T* dl = dlogits ? dlogits + row * C : nullptr;
  const float g = alpha * dscale;
  float L;
  if (!soft) {
    // The student's softmax statistics and the teacher's argmax: each lane's first maximum over
    // its classes (ascending), then the larger value, or on a tie the smaller index, across lanes.
    float m = -FLT_MAX, sum = 0.f, tmax = -FLT_MAX;
    int y = -1;  // none yet
    for (int64_t j = lane; j < C; j += kWarp) {
      online_add(m, sum, to_float(s[j]));
      const float v = to_float(t[j]);
      if (y < 0 || v > tmax) {
        tmax = v;
        y = static_cast<int>(j);
      }
    }
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
      const float ov = __shfl_xor_sync(kFullWarpMask, tmax, offset);
      const int oy = __shfl_xor_sync(kFullWarpMask, y, offset);
      if (oy >= 0 && (y < 0 || ov > tmax || (ov == tmax && oy < y))) {
        tmax = ov;
        y = oy;
      }
    }
    const float lse = warp_lse(m, sum);
    L = lse - to_float(s[y]);
    if (dl) {
      for (int64_t j = lane; j < C; j += kWarp) {
        const float d = g * (expf(to_float(s[j]) - lse) - (j == y ? 1.f : 0.f));
        dl[j] = from_float<T>(accumulate ? to_float(dl[j]) + d : d);
      }
    }
  } else {
    float ms = -FLT_MAX, ss = 0.f, mt = -FLT_MAX, st = 0.f;
    for (int64_t j = lane; j < C; j += kWarp) {
      online_add(ms, ss, to_float(s[j]) / tau);
      online_add(mt, st, to_float(t[j]) / tau);
    }
    const float lse_s = warp_lse(ms, ss), lse_t = warp_lse(mt, st);
    float kl = 0.f;
    for (int64_t j = lane; j < C; j += kWarp) {
      const float log_p = to_float(s[j]) / tau - lse_s, log_q = to_float(t[j]) / tau - lse_t;
      const float q = expf(log_q);
      kl += q * (log_q - log_p);
      if (dl) {
        const float d = g * tau * (expf(log_p) - q);
        dl[j] = from_float<T>(accumulate ? to_float(dl[j]) + d : d);
      }
    }
    L = tau * tau * warp_reduce_sum(kl);
  }
  if (lane == 0) losses[row] = (1.f - alpha) * losses[row] + alpha * L;
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

template <typename T>
void distill_loss(const T* student, const T* teacher, Distill kind, float tau, float alpha, float dscale, float* losses,
                  T* dlogits, bool accumulate, int64_t B, int64_t C, rt::Stream stream) {
  const char* op = "distill_loss";
  require_nonnegative(op, "B", B);
  if (C <= 0 || C > 0x7fffffff)
    throw Error(std::string(op) + ": C must be in [1, 2^31), got " + std::to_string(C));  // the argmax is an int
  if (kind != Distill::Hard && kind != Distill::Soft) throw Error(std::string(op) + ": kind must be hard or soft");
  if (!(alpha >= 0.f && alpha <= 1.f))
    throw Error(std::string(op) + ": alpha must lie in [0, 1], got " + std::to_string(alpha));
  if (!(std::isfinite(tau) && tau > 0.f))
    throw Error(std::string(op) + ": tau must be finite and > 0, got " + std::to_string(tau));
  if (!std::isfinite(dscale)) throw Error(std::string(op) + ": dscale must be finite, got " + std::to_string(dscale));
  if (B == 0) return;
  require_pointer(op, "student", student, sizeof(T));
  require_pointer(op, "teacher", teacher, sizeof(T));
  require_pointer(op, "losses", losses, sizeof(float));
  if (dlogits) require_pointer(op, "dlogits", dlogits, sizeof(T));
  const int64_t blocks = (B + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) throw Error(std::string(op) + ": B is too large for one grid");
  launch(distill_loss_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kRowsPerBlock * kWarp), 0, stream, student,
         teacher, kind == Distill::Soft, tau, alpha, dscale, losses, dlogits, accumulate, B, C);
}

template void distill_loss<float>(const float*, const float*, Distill, float, float, float, float*, float*, bool,
                                  int64_t, int64_t, rt::Stream);
template void distill_loss<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, Distill, float, float, float,
                                          float*, __nv_bfloat16*, bool, int64_t, int64_t, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
