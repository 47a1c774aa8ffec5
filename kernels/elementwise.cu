// vitcuda — element-wise add and dtype conversion. Pure streaming: each thread moves 16 bytes
// of its widest operand per iteration (4 fp32 or 8 bf16 values), so these run at DRAM
// bandwidth like a device-to-device copy of the same bytes (bench/bench_elementwise.cu reports
// the fraction). Misaligned pointers fall back to the scalar loop, still correct.
#include "kernels/elementwise.h"

#include <string>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// Vectors [0, n_vec) of kVec elements (n_vec = 0 when a pointer is not 16-byte aligned), then
// the rest element by element. No __restrict__: out may be a or b. The grid-stride loops here
// carry VITCUDA_NO_UNROLL: unrolled, nvcc computes their 64-bit trip count with a 64-bit
// division (the div64 gate), for no gain in a loop that waits on memory.
// out = (a + b) · scale in fp32; scale 1 multiplies exactly, so the sum is that of a plain add.
template <typename T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n, int64_t n_vec, float scale) {
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  VITCUDA_NO_UNROLL
  for (int64_t i = tid; i < n_vec; i += stride) {
    const Vec16<T> va = load_vec16(a + i * kVec), vb = load_vec16(b + i * kVec);
    Vec16<T> vo;
    for (int k = 0; k < kVec; ++k) vo.v[k] = from_float<T>((to_float(va.v[k]) + to_float(vb.v[k])) * scale);
    store_vec16(out + i * kVec, vo);
  }
  VITCUDA_NO_UNROLL
  for (int64_t i = n_vec * kVec + tid; i < n; i += stride)
    out[i] = from_float<T>((to_float(a[i]) + to_float(b[i])) * scale);
}

// 8 elements per thread and iteration: 32 bytes of fp32 and 16 of bf16 on either side.
template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n, int64_t n_vec8) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  VITCUDA_NO_UNROLL
  for (int64_t i = tid; i < n_vec8; i += stride) {
    Src in[8];
    Dst out[8];
    for (int h = 0; h < 8; h += Vec16<Src>::kVec) {
      const Vec16<Src> v = load_vec16(src + i * 8 + h);
      for (int k = 0; k < Vec16<Src>::kVec; ++k) in[h + k] = v.v[k];
    }
    for (int k = 0; k < 8; ++k) out[k] = from_float<Dst>(to_float(in[k]));
    for (int h = 0; h < 8; h += Vec16<Dst>::kVec) {
      Vec16<Dst> v;
      for (int k = 0; k < Vec16<Dst>::kVec; ++k) v.v[k] = out[h + k];
      store_vec16(dst + i * 8 + h, v);
    }
  }
  VITCUDA_NO_UNROLL
  for (int64_t i = n_vec8 * 8 + tid; i < n; i += stride) dst[i] = from_float<Dst>(to_float(src[i]));
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {
bool partially_overlap(const void* p, size_t p_bytes, const void* q, size_t q_bytes) {
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a != b && a < b + q_bytes && b < a + p_bytes;
}
}  // namespace

template <typename T>
void add(const T* a, const T* b, T* out, int64_t n, rt::Stream stream, float scale) {
  require_nonnegative("add", "n", n);
  if (n == 0) return;
  require_pointer("add", "a", a, sizeof(T));
  require_pointer("add", "b", b, sizeof(T));
  require_pointer("add", "out", out, sizeof(T));
  const size_t bytes = static_cast<size_t>(n) * sizeof(T);
  if (partially_overlap(out, bytes, a, bytes) || partially_overlap(out, bytes, b, bytes))
    throw Error("add: out overlaps a or b without being it (in-place needs out == a or out == b)");
  constexpr int kVec = Vec16<T>::kVec;
  const bool vec = aligned_to(a, 16) && aligned_to(b, 16) && aligned_to(out, 16);
  const int64_t n_vec = vec ? n / kVec : 0;
  launch(add_kernel<T>, dim3(streaming_blocks(vec ? n_vec : n)), dim3(kStreamingThreads), 0, stream, a, b, out, n,
         n_vec, scale);
}

template <typename Src, typename Dst>
void convert_dtype(const Src* src, Dst* dst, int64_t n, rt::Stream stream) {
  require_nonnegative("convert_dtype", "n", n);
  if (n == 0) return;
  require_pointer("convert_dtype", "src", src, sizeof(Src));
  require_pointer("convert_dtype", "dst", dst, sizeof(Dst));
  if constexpr (std::is_same_v<Src, Dst>) {
    if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return;
  }
  if (reinterpret_cast<uintptr_t>(src) < reinterpret_cast<uintptr_t>(dst + n) &&
      reinterpret_cast<uintptr_t>(dst) < reinterpret_cast<uintptr_t>(src + n))
    throw Error("convert_dtype: dst overlaps src");
  if constexpr (std::is_same_v<Src, Dst>) {
    rt::copy_device_to_device(dst, src, static_cast<size_t>(n) * sizeof(Src), stream);
  } else {
    const bool vec = aligned_to(src, 16) && aligned_to(dst, 16);
    const int64_t n_vec8 = vec ? n / 8 : 0;
    launch(convert_kernel<Src, Dst>, dim3(streaming_blocks(vec ? n_vec8 : n)), dim3(kStreamingThreads), 0, stream, src,
           dst, n, n_vec8);
  }
}

template void add<float>(const float*, const float*, float*, int64_t, rt::Stream, float);
template void add<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int64_t, rt::Stream,
                                 float);
template void convert_dtype<float, __nv_bfloat16>(const float*, __nv_bfloat16*, int64_t, rt::Stream);
template void convert_dtype<__nv_bfloat16, float>(const __nv_bfloat16*, float*, int64_t, rt::Stream);
template void convert_dtype<float, float>(const float*, float*, int64_t, rt::Stream);
template void convert_dtype<__nv_bfloat16, __nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
