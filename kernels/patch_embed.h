// vitcuda — patch extraction for the patch embedding (kernels/patch_embed.cu): the im2col of
// Conv2d(kernel = stride = P) with the input normalisation fused, exactly
// vitcuda::ref::patch_extract (host/cpu/ref_ops.h):
//   cols[b·Np + p, (c·P + ky)·P + kx] = (pixel / 255 (uint8 only) − mean[c]) / std[c],
//   p = py·(W/P) + px, pixel = image[b, c, py·P + ky, px·P + kx] (NCHW) or [b, y, x, c] (NHWC).
// Np = (H/P)·(W/P); rows and columns past the last whole patch are ignored, as Conv2d does.
// The projection is then linear_forward(cols, w[D, C·P·P], b, Act::None, ...) (kernels/linear.h);
// its backward is linear_backward with dx = null (no gradient for pixels).
#pragma once
#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"  // ImageLayout

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// Channels the launcher passes to the kernel by value (mean and 1/std as kernel arguments).
constexpr int kPatchMaxChannels = 8;

// images: device memory, uint8 (images_u8) or float. mean, stdev: HOST arrays of C floats.
// cols: device memory [B·Np, C·P·P] of T (float or bf16), overwritten.
template <typename T>
void patch_extract(const void* images, bool images_u8, ImageLayout layout, int B, int C, int H, int W, int P,
                   const float* mean, const float* stdev, T* cols, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
