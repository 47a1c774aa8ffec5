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

template <typename T>
__device__ __forceinline__ T drop_or_scale(T v, bool keep, float scale) {
  return keep ? from_float<T>(to_float(v) * scale) : from_float<T>(0.f);
}

// Vectors [0, n_vec) of kVec elements (n_vec = 0 when x or y is not 16-byte aligned): one 16-byte
// load and store and kVec/4 Philox calls each. Then the Philox blocks of 4 elements from
// n_vec·kVec/4 to n_blocks = ceil(n / 4), element by element but still one call per 4 elements
// (the misaligned case and the tail). Both loops grid-stride; VITCUDA_NO_UNROLL keeps nvcc from
// unrolling them, which costs a 64-bit division for the trip count.
// __launch_bounds__: at most 32 registers for fp32 (8 CTAs of 256 threads, full occupancy), 40 for
// bf16 (6 CTAs; its two Philox blocks per vector spill at 32, and registers come in steps of 8).
// Unbounded, nvcc gave 36-46 (5-6 CTAs).
template <typename T>
__global__ void __launch_bounds__(kStreamingThreads, sizeof(T) == 4 ? 8 : 6)
    dropout_kernel(const T* x, T* y, int64_t n, int64_t n_vec, int64_t n_blocks, DropoutParams d) {
  // No __restrict__: y may be x.
  constexpr int kVec = Vec16<T>::kVec;
  const uint64_t stream_id = d.stream_id();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  VITCUDA_NO_UNROLL
  for (int64_t i = tid; i < n_vec; i += stride) {
    Vec16<T> v = load_vec16(x + i * kVec);
    VITCUDA_UNROLL
    for (int g = 0; g < kVec / 4; ++g) {
      const Philox4 r = philox4_block(d.seed, stream_id, static_cast<uint64_t>(i) * (kVec / 4) + g);
      VITCUDA_UNROLL
      for (int k = 0; k < 4; ++k) v.v[4 * g + k] = drop_or_scale(v.v[4 * g + k], r.x[k] >= d.threshold, d.scale);
    }
    store_vec16(y + i * kVec, v);
  }
  VITCUDA_NO_UNROLL
  for (int64_t blk = n_vec * (kVec / 4) + tid; blk < n_blocks; blk += stride) {
    const Philox4 r = philox4_block(d.seed, stream_id, static_cast<uint64_t>(blk));
    VITCUDA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const int64_t i = blk * 4 + k;
      if (i < n) y[i] = drop_or_scale(x[i], r.x[k] >= d.threshold, d.scale);
    }
  }
}

// grid.y walks the samples, grid.x (with blockDim.x) the elements of one sample: the keep
// decision is one Philox call per thread and sample. A dropped sample is x·0 (as the reference:
// -0 for negative x, NaN stays NaN), so x is read either way. vec_per_sample = 0 when rows are
// not 16-byte aligned.
template <typename T>
__global__ void drop_path_kernel(const T* x, T* y, int64_t B, int64_t per_sample, int64_t vec_per_sample,
                                 DropoutParams d) {
  constexpr int kVec = Vec16<T>::kVec;
  const uint64_t stream_id = d.stream_id();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  VITCUDA_NO_UNROLL
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const float f = dropout_keep(d.seed, stream_id, static_cast<uint64_t>(b), d.threshold) ? d.scale : 0.f;
    const T* xs = x + b * per_sample;
    T* ys = y + b * per_sample;
    VITCUDA_NO_UNROLL
    for (int64_t i = tid; i < vec_per_sample; i += stride) {
      Vec16<T> v = load_vec16(xs + i * kVec);
      VITCUDA_UNROLL
      for (int k = 0; k < kVec; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) * f);
      store_vec16(ys + i * kVec, v);
    }
    VITCUDA_NO_UNROLL
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

}  // namespace

DropoutParams dropout_params(const DropoutSpec& spec) {
  DropoutParams d;
  d.seed = spec.seed;
  d.stream = spec.stream;
  d.stream_offset = spec.stream_offset;
  d.threshold = dropout_threshold(spec.p);
  d.scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(spec.p)));
  return d;
}

template <typename T>
void dropout(const T* x, T* y, int64_t n, const DropoutSpec& spec, rt::Stream stream) {
  require_nonnegative("dropout", "n", n);
  if (!prepare("dropout", x, y, n, spec, stream)) return;
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t n_vec = aligned_to(x, 16) && aligned_to(y, 16) ? n / kVec : 0;
  const int64_t n_blocks = (n + 3) / 4;  // Philox blocks of 4 elements
  // One thread per vector; the remaining Philox blocks (the tail, or everything when misaligned)
  // reuse the same threads.
  const int64_t items = n_vec > 0 ? n_vec : n_blocks;
  launch(dropout_kernel<T>, dim3(streaming_blocks(items)), dim3(kStreamingThreads), 0, stream, x, y, n, n_vec, n_blocks,
         dropout_params(spec));
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
         per_sample, vec_per_sample, dropout_params(spec));
}

template void dropout<float>(const float*, float*, int64_t, const DropoutSpec&, rt::Stream);
template void dropout<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, const DropoutSpec&, rt::Stream);
template void drop_path<float>(const float*, float*, int64_t, int64_t, const DropoutSpec&, rt::Stream);
template void drop_path<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int64_t, int64_t, const DropoutSpec&,
                                       rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
