// vitcuda — the runtime layer of the native build: thin wrappers over the CUDA runtime that throw
// vitcuda::Error naming the call and the CUDA error.
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <cstdlib>

#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN
namespace rt {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear a non-sticky error so later calls see their own
    throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

cudaStream_t native(Stream s) { return reinterpret_cast<cudaStream_t>(s); }
cudaEvent_t native(Event e) { return reinterpret_cast<cudaEvent_t>(e); }

}  // namespace

const char* backend_name() { return "cuda"; }

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: report none
    return 0;
  }
  return count;
}

DeviceInfo device_info() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp p;
  check(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.max_threads_per_block = p.maxThreadsPerBlock;
  d.max_dynamic_smem_default = p.sharedMemPerBlock;
  d.max_dynamic_smem_optin = p.sharedMemPerBlockOptin;
  return d;
}

void* device_malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
  return p;
}

void device_free(void* ptr) {
  if (ptr) check(cudaFree(ptr), "cudaFree");
}

void copy_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  ++counters().h2d;
  counters().h2d_bytes += int64_t(bytes);
  if (bytes)
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, native(stream)), "cudaMemcpyAsync host to device");
}
void copy_to_host(void* dst, const void* src, size_t bytes, Stream stream) {
  ++counters().d2h;
  counters().d2h_bytes += int64_t(bytes);
  if (!bytes) return;
  ++counters().syncs;  // the wait below
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, native(stream)), "cudaMemcpyAsync device to host");
  // Host memory is pageable: the caller reads it right after, so wait for the copy.
  check(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize after a copy to host");
}
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  ++counters().d2d;
  if (bytes)
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, native(stream)),
          "cudaMemcpyAsync device to device");
}
void memset_device(void* dst, int value, size_t bytes, Stream stream) {
  ++counters().memsets;
  if (bytes) check(cudaMemsetAsync(dst, value, bytes, native(stream)), "cudaMemsetAsync");
}

Stream stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return reinterpret_cast<Stream>(s);
}
void stream_destroy(Stream stream) {
  if (stream) check(cudaStreamDestroy(native(stream)), "cudaStreamDestroy");
}
void stream_synchronize(Stream stream) {
  ++counters().syncs;
  check(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize");
}
void device_synchronize() {
  ++counters().syncs;
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Event event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "cudaEventCreate");
  return reinterpret_cast<Event>(e);
}
void event_destroy(Event event) {
  if (event) check(cudaEventDestroy(native(event)), "cudaEventDestroy");
}
void event_record(Event event, Stream stream) {
  check(cudaEventRecord(native(event), native(stream)), "cudaEventRecord");
}
void event_synchronize(Event event) {
  ++counters().syncs;
  check(cudaEventSynchronize(native(event)), "cudaEventSynchronize");
}
float event_elapsed_ms(Event start, Event stop) {
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, native(start), native(stop)), "cudaEventElapsedTime");
  return ms;
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        ("cudaFuncSetAttribute(MaxDynamicSharedMemorySize = " + std::to_string(bytes) + ") for " + kernel_name(kernel))
            .c_str());
}

std::string kernel_name(const void* kernel) {
  const char* name = nullptr;
  if (cudaFuncGetName(&name, kernel) == cudaSuccess && name) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string out = status == 0 && demangled ? demangled : name;
    std::free(demangled);
    return out;
  }
  (void)cudaGetLastError();
  char buf[32];
  std::snprintf(buf, sizeof buf, "kernel@%p", kernel);
  return buf;
}

void check_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  size_t smem) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw Error("cuda: launch of " + kernel_name(kernel) + " with grid (" + std::to_string(gx) + "," +
                std::to_string(gy) + "," + std::to_string(gz) + "), block (" + std::to_string(bx) + "," +
                std::to_string(by) + "," + std::to_string(bz) + "), " + std::to_string(smem) +
                " bytes of dynamic shared memory: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace rt
VITCUDA_KERNELS_END
}  // namespace vitcuda
