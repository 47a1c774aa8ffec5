// Device discovery through the CUDA runtime; a machine without a GPU (or without a driver)
// simply reports none.
#include <cuda_runtime.h>

namespace vitcuda {
bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device/driver" error
    return false;
  }
  return count > 0;
}
}  // namespace vitcuda
