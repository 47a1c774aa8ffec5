// vitcuda — pooling of the token sequence to one vector per sample (kernels/pool.cu), as
// vitcuda::ref::pool_forward / pool_backward and Backend::pool_forward / pool_backward:
// x[B, N, D] -> the num_prefix prefix rows, token-major: out[p, b, :] = x[b, p, :], out
// [num_prefix·B, D] (Pool::Token; [B, D], the cls row, for one prefix token), or, as timm's
// global_pool='avg', out[B, D] = the mean over the tokens t >= num_prefix (Pool::Avg). T is float
// or bf16 storage; sums are fp32.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/config.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// Pool::Flatten is a view, not an op: refused. num_prefix must lie in [1, N] for Token, [0, N) for Avg.
template <typename T>
void pool_forward(const T* x, Pool pool, int num_prefix, T* out, int64_t B, int64_t N, int64_t D, rt::Stream stream);

// dx[B, N, D] is OVERWRITTEN (an activation gradient): Token: dx[b, p] = dout[p, b] in the prefix
// rows p < num_prefix, zeros elsewhere;
// Avg: dout / (N - num_prefix) in rows t >= num_prefix, zeros in the prefix rows.
template <typename T>
void pool_backward(const T* dout, Pool pool, int num_prefix, T* dx, int64_t B, int64_t N, int64_t D, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
