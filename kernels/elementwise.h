// vitcuda — element-wise launchers (kernels/elementwise.cu) behind Backend::add and
// Backend::copy: out = (a + b)·scale (fp32 math, T storage) and dtype conversion between fp32 and bf16
// (round to nearest even, as __float2bfloat16; bf16 -> fp32 is exact).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// out[i] = (a[i] + b[i])·scale for i < n, summed and scaled in fp32 (scale 1: exactly a + b). out
// may alias a and/or b exactly (not a partial overlap).
template <typename T>
void add(const T* a, const T* b, T* out, int64_t n, rt::Stream stream, float scale = 1.f);

// dst[i] = Dst(src[i]) for i < n: fp32 <-> bf16, or a device-to-device copy when Src == Dst.
// src and dst must not overlap unless they are the same pointer of the same type (a no-op).
template <typename Src, typename Dst>
void convert_dtype(const Src* src, Dst* dst, int64_t n, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
