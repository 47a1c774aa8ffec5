// vitcuda — prefix-token (cls, DeiT's distillation token) and average pooling over the sequence,
// forward and backward.
// Both are tiny next to the transformer blocks (B·N·D elements read or written once), so the
// kernels are plain coalesced loops: consecutive threads take consecutive features c, a block
// row of 256 features reads 512-1024 contiguous bytes of each token row.
#include "kernels/pool.h"

#include <string>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
constexpr int kPoolThreads = 256;
constexpr int64_t kMaxGridYZ = 65535;
}  // namespace

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

// grid (ceil(D/256), min(B, 65535)): thread c of sample b copies its column of each prefix row
// (token) or sums its column over the tokens in fp32, in token order (avg).
template <typename T>
__global__ void pool_forward_kernel(const T* __restrict__ x, bool avg, int num_prefix, T* __restrict__ out, int64_t B,
                                    int64_t N, int64_t D) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= D) return;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const T* xb = x + b * N * D + c;
    if (!avg) {
      for (int64_t p = 0; p < num_prefix; ++p) out[(p * B + b) * D + c] = xb[p * D];
      continue;
    }
    float s = 0.f;
    for (int64_t t = num_prefix; t < N; ++t) s += to_float(xb[t * D]);
    out[b * D + c] = from_float<T>(s / static_cast<float>(N - num_prefix));
  }
}

// grid (ceil(D/256), min(N, 65535), min(B, 65535)): one thread per element of dx.
template <typename T>
__global__ void pool_backward_kernel(const T* __restrict__ dout, bool avg, int num_prefix, T* __restrict__ dx,
                                     int64_t B, int64_t N, int64_t D) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= D) return;
  const float n_avg = static_cast<float>(N - num_prefix);
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    const float g = avg ? to_float(dout[b * D + c]) : 0.f;
    for (int64_t t = blockIdx.y; t < N; t += gridDim.y) {
      float v;
      if (avg)
        v = t < num_prefix ? 0.f : g / n_avg;
      else
        v = t < num_prefix ? to_float(dout[(t * B + b) * D + c]) : 0.f;
      dx[(b * N + t) * D + c] = from_float<T>(v);
    }
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

// Throws naming the op and argument; returns false when there is nothing to do.
bool check_pool(const char* op, const void* in, const char* in_name, size_t elem, Pool pool, int num_prefix,
                const void* out, const char* out_name, int64_t B, int64_t N, int64_t D) {
  if (pool != Pool::Token && pool != Pool::Avg)
    throw Error(std::string(op) + ": pool must be Token or Avg (Flatten is a view, not an op)");
  require_nonnegative(op, "B", B);
  if (N <= 0 || D <= 0)
    throw Error(std::string(op) + ": N and D must be > 0 (got N=" + std::to_string(N) + ", D=" + std::to_string(D) +
                ")");
  if (pool == Pool::Token && (num_prefix < 1 || num_prefix > N))
    throw Error(std::string(op) + ": num_prefix=" + std::to_string(num_prefix) +
                " out of range [1, N=" + std::to_string(N) + "] for Token pooling");
  if (pool == Pool::Avg && (num_prefix < 0 || num_prefix >= N))
    throw Error(std::string(op) + ": num_prefix=" + std::to_string(num_prefix) +
                " out of range [0, N=" + std::to_string(N) + ") for Avg pooling");
  if (B == 0) return false;
  require_pointer(op, in_name, in, elem);
  require_pointer(op, out_name, out, elem);
  return true;
}

unsigned capped(int64_t v) { return static_cast<unsigned>(v < kMaxGridYZ ? v : kMaxGridYZ); }

}  // namespace

template <typename T>
void pool_forward(const T* x, Pool pool, int num_prefix, T* out, int64_t B, int64_t N, int64_t D, rt::Stream stream) {
  if (!check_pool("pool_forward", x, "x", sizeof(T), pool, num_prefix, out, "out", B, N, D)) return;
  const dim3 grid(static_cast<unsigned>((D + kPoolThreads - 1) / kPoolThreads), capped(B));
  launch(pool_forward_kernel<T>, grid, dim3(kPoolThreads), 0, stream, x, pool == Pool::Avg, num_prefix, out, B, N, D);
}

template <typename T>
void pool_backward(const T* dout, Pool pool, int num_prefix, T* dx, int64_t B, int64_t N, int64_t D,
                   rt::Stream stream) {
  if (!check_pool("pool_backward", dout, "dout", sizeof(T), pool, num_prefix, dx, "dx", B, N, D)) return;
  const dim3 grid(static_cast<unsigned>((D + kPoolThreads - 1) / kPoolThreads), capped(N), capped(B));
  launch(pool_backward_kernel<T>, grid, dim3(kPoolThreads), 0, stream, dout, pool == Pool::Avg, num_prefix, dx, B, N,
         D);
}

template void pool_forward<float>(const float*, Pool, int, float*, int64_t, int64_t, int64_t, rt::Stream);
template void pool_forward<__nv_bfloat16>(const __nv_bfloat16*, Pool, int, __nv_bfloat16*, int64_t, int64_t, int64_t,
                                          rt::Stream);
template void pool_backward<float>(const float*, Pool, int, float*, int64_t, int64_t, int64_t, rt::Stream);
template void pool_backward<__nv_bfloat16>(const __nv_bfloat16*, Pool, int, __nv_bfloat16*, int64_t, int64_t, int64_t,
                                           rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
