// vitcuda — set_cuda_device (kernels/cuda_device.h). Host code against the CUDA runtime: compiled
// into vitcuda_kernels by the host compiler.
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include <string>

#include "vitcuda/tensor.h"  // vitcuda::Error

namespace vitcuda {

void set_cuda_device(int ordinal) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    count = 0;  // no driver or no device: the same answer as cuda_device_available()
    cudaGetLastError();
  }
  if (ordinal < 0 || ordinal >= count)
    throw Error("use_cuda_device(" + std::to_string(ordinal) + "): no such GPU: this machine has " +
                (count == 0 ? std::string("no CUDA GPU")
                            : std::to_string(count) + " CUDA GPU(s), ordinals 0.." + std::to_string(count - 1)));
  const cudaError_t e = cudaSetDevice(ordinal);
  if (e != cudaSuccess)
    throw Error("use_cuda_device(" + std::to_string(ordinal) + "): cudaSetDevice failed: " + cudaGetErrorString(e));
}

}  // namespace vitcuda
