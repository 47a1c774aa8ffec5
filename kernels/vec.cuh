// vitcuda — 16-byte vector access and launch sizing shared by the bandwidth-bound kernels
// (dropout, elementwise, adamw, sum_squares). One 16-byte access per thread per iteration is
// what it takes to reach DRAM bandwidth on A100/H100 (LDG.128 / STG.128); narrower accesses
// issue more instructions for the same bytes and fall 10-30% short.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/common.cuh"

// Keep a grid-stride loop rolled: unrolled, nvcc computes the trip count of a loop with a 64-bit
// counter by a 64-bit division (the div64 gate of tests/gates), for no gain in a loop that waits
// on memory. Nothing for the host compiler of the emulation build (VITCUDA_UNROLL's counterpart,
// kernels/common.cuh).
#if defined(__CUDACC__)
#define VITCUDA_NO_UNROLL _Pragma("unroll 1")
#else
#define VITCUDA_NO_UNROLL
#endif

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// kVec elements of T in one 16-byte access: 4 floats or 8 bf16.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  T v[kVec];
};

template <typename T>
__device__ __forceinline__ Vec16<T> load_vec16(const T* p) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  Vec16<T> out;
  memcpy(&out, &raw, sizeof(out));  // a register move under nvcc; no aliasing questions
  return out;
}

template <typename T>
__device__ __forceinline__ void store_vec16(T* p, const Vec16<T>& val) {
  uint4 raw;
  memcpy(&raw, &val, sizeof(raw));
  *reinterpret_cast<uint4*>(p) = raw;
}

// 4 elements of T: one float4 (16 bytes) or four bf16 (8 bytes) — AdamW's compute copy, which
// follows the fp32 master arena four elements at a time.
template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

template <typename T>
__device__ __forceinline__ void store_vec4(T* p, const Vec4<T>& val) {
  if constexpr (sizeof(T) == 4) {
    uint4 raw;
    memcpy(&raw, &val, sizeof(raw));
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
    uint2 raw;
    memcpy(&raw, &val, sizeof(raw));
    *reinterpret_cast<uint2*>(p) = raw;
  }
}

inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Grid for a grid-stride loop over `items` with `threads` per block: one item per thread when
// that fits in kMaxStreamingBlocks (≈ 8 waves of 256-thread blocks on an H100's 132 SMs, which
// hides the tail of the last wave), else grid-stride.
constexpr int kStreamingThreads = 256;
constexpr int64_t kMaxStreamingBlocks = 8192;
inline int streaming_blocks(int64_t items, int threads = kStreamingThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxStreamingBlocks ? kMaxStreamingBlocks : blocks));
}

// Argument checks shared by the launchers: a vitcuda::Error naming the op and the argument.
inline void require_pointer(const char* op, const char* name, const void* p, size_t elem_bytes) {
  if (!p) throw Error(std::string(op) + ": " + name + " is null");
  if (!aligned_to(p, elem_bytes))
    throw Error(std::string(op) + ": " + name + " is not aligned to " + std::to_string(elem_bytes) + " bytes");
}
inline void require_nonnegative(const char* op, const char* name, int64_t v) {
  if (v < 0) throw Error(std::string(op) + ": " + name + " must be >= 0, got " + std::to_string(v));
}

VITCUDA_KERNELS_END
}  // namespace vitcuda
