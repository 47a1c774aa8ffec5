// vitcuda — knowledge distillation's loss term (kernels/distill.cu), as vitcuda::ref::distill_loss
// and Backend::distill_loss (DeiT; timm's DistillationLoss). Per sample b of the student's logits
// s[B, C] and the teacher's t[B, C] (T storage, fp32 math):
//   hard: L = lse(s) − s_y, y = the first index of max_j t_j;    ∂L/∂s = softmax(s) − onehot(y)
//   soft: L = τ²·Σ_j q_j (log q_j − log p_j), q = softmax(t/τ), p = softmax(s/τ);  ∂L/∂s = τ·(p − q)
//   losses[b] = (1 − α)·losses[b] + α·L;   dlogits = α·dscale·∂L/∂s, written or (accumulate) added.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// losses: fp32 [B], read and written. dlogits [B, C] may be null. alpha in [0, 1], tau > 0 and
// finite, dscale finite. T: float or bf16.
template <typename T>
void distill_loss(const T* student, const T* teacher, Distill kind, float tau, float alpha, float dscale, float* losses,
                  T* dlogits, bool accumulate, int64_t B, int64_t C, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
