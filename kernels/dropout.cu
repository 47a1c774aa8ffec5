// vitcuda — dropout and drop-path (stochastic depth) with counter-based random numbers.
// Both are pure streaming ops (read x once, write y once), so the target is DRAM bandwidth:
// each thread moves 16 bytes per iteration (4 fp32 or 8 bf16), and one Philox4x32-10 call yields
// the 4 random words of 4 consecutive elements (philox_bits uses word index % 4 of counter
// index / 4), i.e. 1 call per fp32 vector, 2 per bf16 vector — ~60 integer instructions per
// 16 bytes, well under what an SM issues while waiting for memory.
#include "kernels/dropout.h"

#include <string>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"
#include "kernels/philox.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// The 4 words of Philox counter block `group` (elements 4·group .. 4·group+3), exactly as
// philox_bits(seed, stream, 4·group + k) returns word k.
__device__ __forceinline__ Philox4 philox_group(uint64_t seed, uint64_t stream_id, uint64_t group) {
  const Philox4 ctr{{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), static_cast<uint32_t>(stream_id),
                     static_cast<uint32_t>(stream_id >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

template <typename T>
__device__ __forceinline__ T drop_or_scale(T v, bool keep, float scale) {
  return keep ? from_float<T>(to_float(v) * scale) : from_float<T>(0.f);
}

// Vectors [0, n_vec) of kVec elements (n_vec = 0 when x or y is not 16-byte aligned), then the
// remaining elements one by one; both loops grid-stride.
template <typename T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, int64_t n_vec, uint64_t seed, uint64_t stream_id,
                               uint32_t threshold, float scale) {
  // No __restrict__: y may be x.
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n_vec; i += stride) {
    Vec16<T> v = load_vec16(x + i * kVec);
    for (int g = 0; g < kVec / 4; ++g) {
      const Philox4 r = philox_group(seed, stream_id, static_cast<uint64_t>(i) * (kVec / 4) + g);
      for (int k = 0; k < 4; ++k) v.v[4 * g + k] = drop_or_scale(v.v[4 * g + k], r.x[k] >= threshold, scale);
    }
    store_vec16(y + i * kVec, v);
  }
  for (int64_t i = n_vec * kVec + tid; i < n; i += stride)
    y[i] = drop_or_scale(x[i], dropout_keep(seed, stream_id, static_cast<uint64_t>(i), threshold), scale);
}

// grid.y walks the samples, grid.x (with blockDim.x) the elements of one sample: the keep
// decision is one Philox call per thread and sample. A dropped sample is x·0 (as the reference:
// -0 for negative x, NaN stays NaN), so x is read either way. vec_per_sample = 0 when rows are
// not 16-byte aligned.
template <typename T>
__global__ void drop_path_kernel(const T* x, T* y, int64_t B, int64_t per_sample, int64_t vec_per_sample, uint64_t seed,
                                 uint64_t stream_id, uint32_t threshold, float scale) {
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const float f = dropout_keep(seed, stream_id, static_cast<uint64_t>(b), threshold) ? scale : 0.f;
    const T* xs = x + b * per_sample;
    T* ys = y + b * per_sample;
    for (int64_t i = tid; i < vec_per_sample; i += stride) {
      Vec16<T> v = load_vec16(xs + i * kVec);
      for (int k = 0; k < kVec; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) * f);
      store_vec16(ys + i * kVec, v);
    }
    for (int64_t i = vec_per_sample * kVec + tid; i < per_sample; i += stride)
      ys[i] = from_float<T>(to_float(xs[i]) * f);
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

// Checks shared by dropout and drop_path; returns false when there is nothing to launch (p == 0
// or no elements), after doing the copy p == 0 asks for.
template <typename T>
bool prepare(const char* op, const T* x, T* y, int64_t n, const DropoutSpec& spec, rt::Stream stream) {
  if (!(spec.p >= 0.f && spec.p < 1.f))
    throw Error(std::string(op) + ": p must lie in [0, 1), got " + std::to_string(spec.p));
  if (n == 0) return false;
  require_pointer(op, "x", x, sizeof(T));
  require_pointer(op, "y", y, sizeof(T));
  if (x != y && x < y + n && y < x + n)
    throw Error(std::string(op) + ": y overlaps x without being x (in-place needs y == x)");
  if (!spec.active()) {
    if (x != y) rt::copy_device_to_device(y, x, static_cast<size_t>(n) * sizeof(T), stream);
    return false;
  }
  return true;
}

float keep_scale(float p) { return static_cast<float>(1.0 / (1.0 - static_cast<double>(p))); }

}  // namespace

template <typename T>
void dropout(const T* x, T* y, int64_t n, const DropoutSpec& spec, rt::Stream stream) {
  require_nonnegative("dropout", "n", n);
  if (!prepare("dropout", x, y, n, spec, stream)) return;
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t n_vec = aligned_to(x, 16) && aligned_to(y, 16) ? n / kVec : 0;
  const int64_t items = n_vec > 0 ? n_vec : n;  // the scalar loop covers everything when misaligned
  launch(dropout_kernel<T>, dim3(streaming_blocks(items)), dim3(kStreamingThreads), 0, stream, x, y, n, n_vec,
         spec.seed, spec.stream, dropout_threshold(spec.p), keep_scale(spec.p));
}

template <typename T>
void drop_path(const T* x, T* y, int64_t B, int64_t per_sample, const DropoutSpec& spec, rt::Stream stream) {
  require_nonnegative("drop_path", "B", B);
  require_nonnegative("drop_path", "per_sample", per_sample);
  if (!prepare("drop_path", x, y, B * per_sample, spec, stream)) return;
  constexpr int kVec = Vec16<T>::kVec;
  const bool vec = aligned_to(x, 16) && aligned_to(y, 16) && per_sample % kVec == 0;
  const int64_t vec_per_sample = vec ? per_sample / kVec : 0;
  const int64_t items = vec ? vec_per_sample : per_sample;
  // grid.y <= 65535 (CUDA's limit); larger batches loop over samples.
  const unsigned grid_y = static_cast<unsigned>(B < 65535 ? B : 65535);
  launch(drop_path_kernel<T>, dim3(streaming_blocks(items), grid_y), dim3(kStreamingThreads), 0, stream, x, y, B,
         per_sample, vec_per_sample, spec.seed, spec.stream, dropout_threshold(spec.p), keep_scale(spec.p));
}

template void dropout<float>(const float*, float*, int64_t, const DropoutSpec&, rt::Stream);
template void dropout<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, const DropoutSpec&, rt::Stream);
template void drop_path<float>(const float*, float*, int64_t, int64_t, const DropoutSpec&, rt::Stream);
template void drop_path<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, int64_t, const DropoutSpec&,
                                       rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
