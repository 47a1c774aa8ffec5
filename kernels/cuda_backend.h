// vitcuda — the CUDA backend: vitcuda::Backend over the launchers in kernels/*.cu. The same
// source is built twice: natively ("cuda", in vitcuda_kernels, linked into libvitcuda when
// nvcc is present) and under emulation ("cuda-emu", in vitcuda_kernels_emu, for the tests).
#pragma once
#include <memory>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// compute: DType::BF16 (bf16 activations and weight copy, fp32 accumulation, fp32 master
// weights, gradients and optimizer state) or DType::F32.
std::unique_ptr<Backend> make_cuda_backend(DType compute = DType::BF16);

VITCUDA_KERNELS_END
}  // namespace vitcuda
