// vitcuda — fused softmax cross-entropy with label smoothing (kernels/softmax_xent.cu), as
// vitcuda::ref::softmax_xent and Backend::softmax_xent. Per sample b of logits[B, C] (T storage,
// fp32 math), with label y and smoothing ε:
//   loss[b]  = (1-ε)·(lse - z_y) + ε·(lse - mean_j z_j)          (timm's LabelSmoothingCrossEntropy)
//   dlogits  = (softmax(z) - target)·dscale, target_j = (1-ε)·[j == y] + ε/C   (when dlogits != null)
//   hits[b]  = bit 0: rank == 0 (top-1), bit 1: rank < 5 (top-5), rank = #{j : z_j > z_y}
// in one kernel: one read of the row for the statistics, one more (from cache) for dlogits.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// losses: fp32 [B], required. dlogits [B, C] (OVERWRITTEN) and hits int32 [B] may be null.
// labels live in device memory, so they are checked on the device: a label outside [0, C) gives
// loss NaN, hits 0 and a zero dlogits row (the host cannot see it without a synchronisation).
template <typename T>
void softmax_xent(const T* logits, const int32_t* labels, float smoothing, float dscale, float* losses, T* dlogits,
                  int32_t* hits, int64_t B, int64_t C, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
