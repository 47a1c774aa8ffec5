// vitcuda — LayerNorm launchers (kernels/layernorm.cu). Same semantics as the CPU reference
// (host/cpu/ref_ops.h, vitcuda::ref::layernorm_forward / layernorm_backward) and the Backend
// conventions: rows of C features, fp32 math, T storage (float or bf16), mean and rstd fp32 [rows].
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// s = x (+ residual), written to sum_out when sum_out is given (required with a residual); per row:
// mean = Σs/C, rstd = 1/sqrt(Σ(s-mean)²/C + eps), y = (s - mean)·rstd·gamma + beta.
// With a residual the stored (rounded) s is what gets normalised, so backward sees the same x.
template <typename T>
void layernorm_forward(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta, float eps, T* y,
                       float* mean, float* rstd, int rows, int C, rt::Stream stream);

// Scratch (device memory, fp32) that layernorm_backward needs for its per-block dgamma/dbeta
// partial sums; the reduction over blocks is done in a fixed order, so results are bitwise
// reproducible.
size_t layernorm_backward_scratch_floats(int rows, int C);

// x is the normalised input (sum_out when the forward had a residual). dx, dgamma and dbeta
// ACCUMULATE (+=); any of them may be null. TG is the gradient storage of dgamma/dbeta
// (T, or float for fp32 master gradients with bf16 activations).
template <typename T, typename TG>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const float* mean, const float* rstd, T* dx,
                        TG* dgamma, TG* dbeta, float* scratch, int rows, int C, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
