// vitcuda — the backend factory: make_backend by name, pick_backend for the tools' --device
// flag, whether a CUDA GPU is usable (the CUDA runtime through kernels/runtime.h when this
// build carries the CUDA backend; never, otherwise), and which GPU this process uses.
#include <memory>
#include <string>

#include "host/cpu/cpu_backend.h"
#if defined(VITCUDA_WITH_CUDA_BACKEND)
#include "kernels/cuda_backend.h"
#include "kernels/cuda_device.h"
#endif
#include "vitcuda/backend.h"

namespace vitcuda {

bool cuda_device_available() {
#if defined(VITCUDA_WITH_CUDA_BACKEND)
  return rt::device_count() > 0;  // 0 without a driver or a device
#else
  return false;
#endif
}

void use_cuda_device(int ordinal) {
#if defined(VITCUDA_WITH_CUDA_BACKEND)
  set_cuda_device(ordinal);
#else
  // Without CUDA every rank runs on the CPU: GPU 0 stands for "this process's device".
  if (ordinal != 0)
    throw Error("use_cuda_device(" + std::to_string(ordinal) +
                "): no such GPU: this build of vitcuda has no CUDA backend (0 CUDA GPUs)");
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& name, DType compute) {
  if (name == "cpu") return make_cpu_backend();  // always fp32
  if (name == "cuda") {
#if defined(VITCUDA_WITH_CUDA_BACKEND)
    return make_cuda_backend(compute);
#else
    (void)compute;
    throw Error("backend 'cuda': this build of vitcuda has no CUDA backend (configure with the CUDA toolkit)");
#endif
  }
  if (name == "cuda-emu")
    throw Error("backend 'cuda-emu' is a test device: it is linked into the kernel tests, not into libvitcuda");
  throw Error("unknown backend '" + name + "' (known: cpu, cuda)");
}

std::unique_ptr<Backend> pick_backend(const std::string& device, DType compute, std::string* note) {
  if (device == "cpu") return make_backend("cpu");
  if (device == "cuda") {
    if (!cuda_device_available()) throw Error("--device cuda: no CUDA GPU is available on this machine");
    return make_backend("cuda", compute);
  }
  if (device != "auto") throw Error("--device must be auto, cpu or cuda, got '" + device + "'");
  if (cuda_device_available()) {
    try {
      return make_backend("cuda", compute);
    } catch (const Error& e) {
      if (note) *note = std::string("a GPU is present but ") + e.what() + "; using the CPU";
    }
  }
  return make_backend("cpu");
}

}  // namespace vitcuda
