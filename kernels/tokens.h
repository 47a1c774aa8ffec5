// vitcuda — token assembly (kernels/tokens.cu): prepend the cls token and DeiT's distillation
// token (each optional, dist only with cls) and add the learned position embedding, as
// vitcuda::ref::tokens_forward / tokens_backward (host/cpu/ref_ops.h) and
// vitcuda::Backend::tokens_forward / tokens_backward:
//   out[b, t] = [cls; dist; patches[b]][t] + pos[t],  off = (cls ? 1 : 0) + (dist ? 1 : 0), Tn = Np + off.
#pragma once
#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// patches [B, Np, D], cls [D] or null, dist [D] or null (only with cls), pos [Tn, D], out [B, Tn, D]
// (overwritten). T: float, bf16.
template <typename T>
void tokens_forward(const T* patches, const T* cls, const T* dist, const T* pos, T* out, int B, int Np, int D,
                    rt::Stream stream);

// num_prefix (0, 1 or 2) says how many prefix rows the forward prepended (Tn = Np + num_prefix: cls,
// then dist); ref::tokens_backward derives it from dcls and ddist != null, here it is explicit so
// they may be skipped. dpatches [B, Np, D] is OVERWRITTEN with dout's patch rows; dcls [D], ddist
// [D] and dpos [Tn, D] ACCUMULATE (+=) the sums over the batch, taken in batch order in fp32
// (deterministic). Any output may be null. TG: float or T.
template <typename T, typename TG>
void tokens_backward(const T* dout, T* dpatches, TG* dcls, TG* ddist, TG* dpos, int num_prefix, int B, int Np, int D,
                     rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
