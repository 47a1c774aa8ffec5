// vitcuda — choosing this process's GPU (vitcuda::use_cuda_device, include/vitcuda/backend.h): the
// CUDA runtime's part, built into vitcuda_kernels (nvcc builds) and called by
// host/backend_factory.cpp.
#pragma once

namespace vitcuda {

// cudaSetDevice(ordinal), after checking that GPU `ordinal` exists; Error naming the ordinal and
// the GPU count otherwise.
void set_cuda_device(int ordinal);

}  // namespace vitcuda
