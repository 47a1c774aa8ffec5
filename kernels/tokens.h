// vitcuda — token assembly (kernels/tokens.cu): prepend the cls token (optional) and add the
// learned position embedding, as vitcuda::ref::tokens_forward / tokens_backward
// (host/cpu/ref_ops.h) and vitcuda::Backend::tokens_forward / tokens_backward:
//   out[b, t] = (t < off ? cls : patches[b, t − off]) + pos[t],  off = cls ? 1 : 0, Tn = Np + off.
#pragma once
#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// patches [B, Np, D], cls [D] or null, pos [Tn, D], out [B, Tn, D] (overwritten). T: float, bf16.
template <typename T>
void tokens_forward(const T* patches, const T* cls, const T* pos, T* out, int B, int Np, int D, rt::Stream stream);

// has_cls says whether the forward prepended a cls row (Tn = Np + 1); ref::tokens_backward derives
// it from dcls != null, here it is explicit so dcls may be skipped. dpatches [B, Np, D] is
// OVERWRITTEN with dout's patch rows; dcls [D] and dpos [Tn, D] ACCUMULATE (+=) the sums over the
// batch, taken in batch order in fp32 (deterministic). Any output may be null. TG: float or T.
template <typename T, typename TG>
void tokens_backward(const T* dout, T* dpatches, TG* dcls, TG* dpos, bool has_cls, int B, int Np, int D,
                     rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
