// vitcuda — the qkv head split (kernels/qkv.cu): the packed projection of a ViT block,
// qkv[B, T, 3, H, d] (the output of linear_forward with w[3·H·d, D]), to head-major q, k, v
// [B, H, T, d], and back for the gradients. Same layout as vitcuda::ref::qkv_split / qkv_merge
// (host/cpu/ref_ops.h). The projection itself is a linear (kernels/linear.h).
#pragma once
#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// q, k, v = split(qkv) (+ bias[s·H·d + h·d + j] when bias is given, for a projection that ran
// without its bias; added in fp32, rounded once to T). Overwrites q, k, v.
template <typename T>
void qkv_split(const T* qkv, const T* bias, T* q, T* k, T* v, int B, int T_, int H, int d, rt::Stream stream);

// dqkv = merge(dq, dk, dv): the exact inverse permutation (a copy). Overwrites dqkv.
template <typename T>
void qkv_merge(const T* dq, const T* dk, const T* dv, T* dqkv, int B, int T_, int H, int d, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
