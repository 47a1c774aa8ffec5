// Built when the CUDA toolkit is absent: no GPU can be used.
namespace vitcuda {
bool cuda_device_available() { return false; }
}  // namespace vitcuda
