// vitcuda — qkv split/merge: a permutation of rows of d contiguous elements,
// [B, T, 3, H, d] <-> 3 × [B, H, T, d]. Memory-bound: one thread per element, consecutive threads
// on consecutive elements of a row, so both the packed side and the head-major side are read and
// written in runs of d·sizeof(T) bytes (128 B for d = 64 in bf16: full sectors). Expected: close
// to copy bandwidth (~2.5–3 TB/s read+write on an H100).
#include "kernels/qkv.h"

#include <algorithm>
#include <string>

#include "kernels/common.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// i runs over the packed tensor in memory order: i = (((b·T + t)·3 + s)·H + h)·d + j.
template <typename T, bool kSplit>
__global__ void qkv_permute_kernel(const T* __restrict__ packed_in, const T* __restrict__ bias,
                                   T* __restrict__ packed_out, T* q, T* k, T* v, int B, int T_, int H, int d) {
  const int64_t total = static_cast<int64_t>(B) * T_ * 3 * H * d;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / d;  // ((b·T + t)·3 + s)·H + h
    const int j = static_cast<int>(i - row * d);
    const int h = static_cast<int>(row % H);
    const int64_t bts = row / H;
    const int s = static_cast<int>(bts % 3);
    const int64_t bt = bts / 3;
    const int t = static_cast<int>(bt % T_);
    const int64_t b = bt / T_;
    const int64_t head_major = ((b * H + h) * T_ + t) * d + j;
    T* part = s == 0 ? q : (s == 1 ? k : v);
    if constexpr (kSplit) {
      if (bias)
        part[head_major] = from_float<T>(to_float(packed_in[i]) + to_float(bias[(s * H + h) * d + j]));
      else
        part[head_major] = packed_in[i];
    } else {
      packed_out[i] = part[head_major];
    }
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {
void check(const char* op, int B, int T_, int H, int d) {
  if (B < 0 || T_ < 0 || H <= 0 || d <= 0)
    throw Error(std::string(op) + ": B, T must be >= 0 and H, d > 0 (got B=" + std::to_string(B) +
                ", T=" + std::to_string(T_) + ", H=" + std::to_string(H) + ", d=" + std::to_string(d) + ")");
}
void require(const char* op, const void* p, const char* name) {
  if (!p) throw Error(std::string(op) + ": " + name + " is null");
}
int blocks_for(int64_t total) {
  // grid-stride: at most 16 blocks of 256 per SM of a 132-SM H100
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((total + 255) / 256, 132 * 16)));
}
}  // namespace

template <typename T>
void qkv_split(const T* qkv, const T* bias, T* q, T* k, T* v, int B, int T_, int H, int d, rt::Stream stream) {
  constexpr const char* op = "qkv_split";
  check(op, B, T_, H, d);
  require(op, qkv, "qkv");
  require(op, q, "q");
  require(op, k, "k");
  require(op, v, "v");
  const int64_t total = static_cast<int64_t>(B) * T_ * 3 * H * d;
  if (total == 0) return;
  launch(qkv_permute_kernel<T, true>, dim3(blocks_for(total)), dim3(256), 0, stream, qkv, bias,
         static_cast<T*>(nullptr), q, k, v, B, T_, H, d);
}

template <typename T>
void qkv_merge(const T* dq, const T* dk, const T* dv, T* dqkv, int B, int T_, int H, int d, rt::Stream stream) {
  constexpr const char* op = "qkv_merge";
  check(op, B, T_, H, d);
  require(op, dq, "dq");
  require(op, dk, "dk");
  require(op, dv, "dv");
  require(op, dqkv, "dqkv");
  const int64_t total = static_cast<int64_t>(B) * T_ * 3 * H * d;
  if (total == 0) return;
  launch(qkv_permute_kernel<T, false>, dim3(blocks_for(total)), dim3(256), 0, stream, static_cast<const T*>(nullptr),
         static_cast<const T*>(nullptr), dqkv, const_cast<T*>(dq), const_cast<T*>(dk), const_cast<T*>(dv), B, T_, H, d);
}

template void qkv_split<float>(const float*, const float*, float*, float*, float*, int, int, int, int, rt::Stream);
template void qkv_split<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*,
                                       __nv_bfloat16*, int, int, int, int, rt::Stream);
template void qkv_merge<float>(const float*, const float*, const float*, float*, int, int, int, int, rt::Stream);
template void qkv_merge<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*,
                                       int, int, int, int, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
