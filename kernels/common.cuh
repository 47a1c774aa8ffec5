// vitcuda — the one header every kernels/*.cu includes.
//
// Compiled by nvcc it is CUDA. Compiled by g++ with -DVITCUDA_EMU it is the emulation build
// (kernels/emu/emu.h): the same kernel source runs on the CPU, one block at a time, its threads as
// fibers. Kernel code written against this header compiles in both builds when it:
//   * launches through vitcuda::launch(kernel, grid, block, smem_bytes, stream, args...),
//     never the triple-chevron syntax;
//   * reaches dynamic shared memory through VITCUDA_DYNAMIC_SMEM(T, name), which declares
//     `name` as a SmemPtr<T> (a raw T* under nvcc, a bounds-checked pointer in the emulator);
//   * keeps inline PTX in kernels/ptx.cuh.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <memory>
#include <type_traits>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include "kernels/runtime.h"
#include "vitcuda/tensor.h"

#if defined(VITCUDA_EMU)
#include "kernels/emu/emu.h"
#else
#include <cuda_runtime.h>
#endif

// Full unrolling of a loop with a compile-time trip count, so that arrays indexed by its
// counter stay in registers (nvcc; e.g. attention.cu's register fragments, which would otherwise
// go to local memory); nothing for the host compiler of the emulation build.
#if defined(__CUDACC__)
#define VITCUDA_UNROLL _Pragma("unroll")
#else
#define VITCUDA_UNROLL
#endif

namespace vitcuda {

// ---- dynamic shared memory ------------------------------------------------------------------
#if defined(VITCUDA_EMU)
// A pointer into the launch's dynamic shared memory that checks every access against the size
// given at launch (and the alignment of T). Pointer arithmetic is free; only dereferencing checks.
template <typename T>
class SmemPtr {
 public:
  SmemPtr() = default;
  SmemPtr(unsigned char* base, size_t bytes, ptrdiff_t offset) : base_(base), bytes_(bytes), offset_(offset) {}

  T& operator[](ptrdiff_t i) const { return *checked(offset_ + i * static_cast<ptrdiff_t>(sizeof(T))); }
  T& operator*() const { return *checked(offset_); }
  T* operator->() const { return checked(offset_); }
  SmemPtr operator+(ptrdiff_t n) const { return {base_, bytes_, offset_ + n * ptrdiff_t(sizeof(T))}; }
  SmemPtr operator-(ptrdiff_t n) const { return {base_, bytes_, offset_ - n * ptrdiff_t(sizeof(T))}; }
  ptrdiff_t operator-(const SmemPtr& o) const { return (offset_ - o.offset_) / ptrdiff_t(sizeof(T)); }
  SmemPtr& operator+=(ptrdiff_t n) {
    offset_ += n * ptrdiff_t(sizeof(T));
    return *this;
  }
  SmemPtr& operator-=(ptrdiff_t n) {
    offset_ -= n * ptrdiff_t(sizeof(T));
    return *this;
  }
  SmemPtr& operator++() { return *this += 1; }
  SmemPtr& operator--() { return *this -= 1; }
  bool operator==(const SmemPtr& o) const { return base_ == o.base_ && offset_ == o.offset_; }
  bool operator!=(const SmemPtr& o) const { return !(*this == o); }

  // The raw address (for PTX wrappers); the pointer itself must lie within [0, size].
  T* raw() const {
    if (offset_ < 0 || static_cast<size_t>(offset_) > bytes_) emu::fail_smem_access(offset_, 0, bytes_, "pointer");
    return reinterpret_cast<T*>(base_ + offset_);
  }
  template <typename U>
  SmemPtr<U> cast() const {
    return {base_, bytes_, offset_};
  }

 private:
  T* checked(ptrdiff_t off) const {
    if (off < 0 || static_cast<size_t>(off) + sizeof(T) > bytes_ || off % alignof(T) != 0)
      emu::fail_smem_access(off, sizeof(T), bytes_, typeid_name());
    return reinterpret_cast<T*>(base_ + off);
  }
  static const char* typeid_name() {
    if constexpr (std::is_same_v<T, float>)
      return "float";
    else if constexpr (std::is_same_v<T, double>)
      return "double";
    else if constexpr (std::is_same_v<T, int>)
      return "int";
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
      return "bf16";
    else if constexpr (std::is_same_v<T, __half>)
      return "half";
    else if constexpr (std::is_same_v<T, float4>)
      return "float4";
    else
      return "element";
  }
  unsigned char* base_ = nullptr;
  size_t bytes_ = 0;
  ptrdiff_t offset_ = 0;
};
template <typename U, typename T>
SmemPtr<U> smem_cast(SmemPtr<T> p) {
  return p.template cast<U>();
}
template <typename T>
T* smem_raw(SmemPtr<T> p) {
  return p.raw();
}

#define VITCUDA_DYNAMIC_SMEM(T, name)                                      \
  const ::vitcuda::SmemPtr<T> name = [] {                                  \
    const ::vitcuda::emu::DynamicSmem d_ = ::vitcuda::emu::dynamic_smem(); \
    return ::vitcuda::SmemPtr<T>(d_.base, d_.bytes, 0);                    \
  }()
#else
template <typename T>
using SmemPtr = T*;
template <typename U, typename T>
__device__ __forceinline__ U* smem_cast(T* p) {
  return reinterpret_cast<U*>(p);
}
template <typename T>
__device__ __forceinline__ T* smem_raw(T* p) {
  return p;
}

#define VITCUDA_DYNAMIC_SMEM(T, name)                                    \
  extern __shared__ __align__(16) unsigned char vitcuda_dynamic_smem_[]; \
  T* const name = reinterpret_cast<T*>(vitcuda_dynamic_smem_)
#endif

// ---- launch ---------------------------------------------------------------------------------
// launch(kernel, grid, block, smem_bytes, stream, args...): the only way kernels are started.
// Throws vitcuda::Error (naming the kernel) when the launch is refused.
VITCUDA_KERNELS_BEGIN
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, rt::Stream stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
  const void* k = reinterpret_cast<const void*>(kernel);
  if (rt::capturing_other_stream(stream))
    rt::refuse_other_stream_while_capturing(stream, "launch of " + rt::kernel_name(k));
  rt::note_launch(k, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem_bytes);
#if defined(VITCUDA_EMU)
  using Closure = emu::LaunchClosure<void (*)(P...), std::tuple<std::decay_t<P>...>>;
  if (emu::capturing(stream)) {  // a graph node: the closure moves to the heap, run at replay
    emu::check_launch_config(k, grid, block, smem_bytes);
    auto closure =
        std::make_shared<const Closure>(Closure{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)});
    emu::capture_node([k, grid, block, smem_bytes, stream, closure] {
      emu::run_grid(k, grid, block, smem_bytes, stream, &Closure::invoke, closure.get());
    });
    return;
  }
  const Closure closure{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  emu::run_grid(k, grid, block, smem_bytes, stream, &Closure::invoke, &closure);
#else
  kernel<<<grid, block, smem_bytes, reinterpret_cast<cudaStream_t>(stream)>>>(std::forward<A>(args)...);
  rt::check_launch(reinterpret_cast<const void*>(kernel), grid.x, grid.y, grid.z, block.x, block.y, block.z,
                   smem_bytes);
#endif
}
VITCUDA_KERNELS_END

// ---- small device helpers shared by the kernels ----------------------------------------------
__host__ __device__ __forceinline__ float to_float(float v) { return v; }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__host__ __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__host__ __device__ __forceinline__ T from_float(float v);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);  // round to nearest even
}
template <>
__host__ __device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}

constexpr unsigned kFullWarpMask = 0xffffffffu;

// Butterfly sum over the 32 lanes of a full warp; every lane gets the total.
__device__ __forceinline__ float warp_reduce_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullWarpMask, v, offset);
  return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullWarpMask, v, offset));
  return v;
}

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Dynamic shared memory over the default 48 KiB needs the kernel's opt-in, which fails past the
// device's limit: then a vitcuda::Error naming the op and what asked for that much (`why`, e.g.
// "C=4096").
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
template <typename Kernel>
void reserve_dynamic_smem(const char* op, Kernel kernel, size_t bytes, const std::string& why) {
  if (bytes <= kDefaultDynamicSmem) return;
  try {
    rt::set_max_dynamic_smem(kernel, bytes);
  } catch (const Error& e) {
    throw Error(std::string(op) + ": " + why + " needs " + std::to_string(bytes) +
                " bytes of shared memory, more than the device allows: " + e.what());
  }
}

}  // namespace vitcuda
