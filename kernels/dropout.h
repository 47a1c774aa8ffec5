// vitcuda — dropout and drop-path launchers (kernels/dropout.cu). Same semantics as the CPU
// reference (host/cpu/ref_ops.h: vitcuda::ref::dropout / drop_path) and Backend::dropout /
// Backend::drop_path: the keep mask is a pure function of (spec.seed, spec.stream, index) through
// Philox4x32-10 (kernels/philox.h), so forward and backward are the same call and the
// mask is bit-identical to the CPU's. Storage T is float or bf16; the scaling is fp32.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/philox.h"
#include "kernels/runtime.h"
#include "vitcuda/backend.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// y[i] = keep(i) ? x[i]·(1/(1-p)) : 0 over n elements, keep(i) = dropout_keep(seed, stream, i,
// dropout_threshold(p)). y may alias x (exactly; a partial overlap is refused). p == 0 copies
// (nothing to do when y == x). p must lie in [0, 1).
// The kernels' form of a DropoutSpec: seed, stream, the stream-offset pointer (read by the
// kernels, on the device), threshold and scale. Also what the fused linear epilogues take
// (kernels/gemm.h).
DropoutParams dropout_params(const DropoutSpec& spec);

// With spec.stream_offset set, the stream is spec.stream + *spec.stream_offset, read by the kernel.
template <typename T>
void dropout(const T* x, T* y, int64_t n, const DropoutSpec& spec, rt::Stream stream);

// Stochastic depth over x[B, per_sample]: sample b is kept (and scaled by 1/(1-p)) iff
// dropout_keep(seed, stream, b, threshold); a dropped sample becomes x·0 (±0, NaN stays NaN),
// exactly as the reference (dropout instead writes +0 for a dropped element, as its reference).
// Same aliasing and p rules as dropout.
template <typename T>
void drop_path(const T* x, T* y, int64_t B, int64_t per_sample, const DropoutSpec& spec, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
