// The execution model itself: block barriers and shared memory, warp shuffles and votes,
// a tiled transpose, dynamic shared memory, atomics, cp.async and Philox in a kernel. Every
// kernel here is exact on integers, so results must equal the CPU bit for bit.
#include <algorithm>
#include <numeric>

#include "kernel_test.h"
#include "kernels/ptx.cuh"
#include "kernels/philox.h"

namespace vitcuda::test {
namespace {

// ---- a block reduction through shared memory and __syncthreads --------------------------------
constexpr int kReduceThreads = 256;

__global__ void block_sum_kernel(const float* in, float* out, int n) {
  __shared__ float partial[kReduceThreads];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  partial[threadIdx.x] = i < n ? in[i] : 0.f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

TEST_F(KernelTest, BlockReductionThroughSharedMemory) {
  const int n = kReduceThreads * 5 + 17;  // a partial last block
  const int blocks = ceil_div(n, kReduceThreads);
  const std::vector<float> host = random_ints(n, -100, 100, 1);
  rt::DeviceBuffer<float> in(host), out(blocks);
  launch(block_sum_kernel, dim3(blocks), dim3(kReduceThreads), 0, nullptr, in.get(), out.get(), n);
  const std::vector<float> got = out.download();
  for (int b = 0; b < blocks; ++b) {
    float want = 0.f;
    for (int i = b * kReduceThreads; i < std::min(n, (b + 1) * kReduceThreads); ++i) want += host[i];
    EXPECT_EQ(got[b], want) << "block " << b;  // integers: exact in any order
  }
}

// ---- warp shuffles: tree reduction, scan, butterfly, broadcast; votes --------------------------
__global__ void warp_ops_kernel(const int* in, int* out) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int v = in[threadIdx.x];
  int* o = out + threadIdx.x * 8;

  int sum = v;  // tree reduction: lane 0 holds the warp's sum
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  o[0] = __shfl_sync(0xffffffffu, sum, 0);  // broadcast from lane 0

  int scan = v;  // inclusive prefix sum
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int up = __shfl_up_sync(0xffffffffu, scan, offset);
    if (lane >= offset) scan += up;
  }
  o[1] = scan;

  int mx = v;  // butterfly max: every lane gets it
  for (int offset = 16; offset > 0; offset >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
  o[2] = mx;

  o[3] = __shfl_sync(0xffffffffu, v, 3, 8);  // width 8: lane 3 of each group of 8
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, v > 0));
  o[5] = __any_sync(0xffffffffu, v > 90);
  o[6] = __all_sync(0xffffffffu, v > -1000);
  // half-warp reduction with a partial mask: lanes 0..15 only
  int half = 0;
  if (lane < 16) {
    half = v;
    for (int offset = 8; offset > 0; offset >>= 1) half += __shfl_xor_sync(0x0000ffffu, half, offset, 16);
  }
  __syncwarp();
  o[7] = half + warp * 0;
}

TEST_F(KernelTest, WarpShuffleTreeReductionScanAndVotes) {
  const int threads = 64;  // two warps
  const std::vector<float> f = random_ints(threads, -100, 100, 2);
  std::vector<int> host(threads);
  for (int i = 0; i < threads; ++i) host[i] = static_cast<int>(f[i]);
  rt::DeviceBuffer<int> in(host), out(threads * 8);
  launch(warp_ops_kernel, dim3(1), dim3(threads), 0, nullptr, in.get(), out.get());
  const std::vector<int> got = out.download();
  for (int w = 0; w < threads / 32; ++w) {
    const int* v = host.data() + w * 32;
    unsigned ballot = 0;
    bool any = false, all = true;
    int sum = 0, mx = -1000, half = 0;
    for (int l = 0; l < 32; ++l) {
      sum += v[l];
      mx = std::max(mx, v[l]);
      if (v[l] > 0) ballot |= 1u << l;
      any |= v[l] > 90;
      all &= v[l] > -1000;
      if (l < 16) half += v[l];
    }
    int scan = 0;
    for (int l = 0; l < 32; ++l) {
      scan += v[l];
      const int* o = got.data() + (w * 32 + l) * 8;
      EXPECT_EQ(o[0], sum) << "warp " << w << " lane " << l;
      EXPECT_EQ(o[1], scan) << "lane " << l;
      EXPECT_EQ(o[2], mx) << "lane " << l;
      EXPECT_EQ(o[3], v[(l / 8) * 8 + 3]) << "lane " << l;
      EXPECT_EQ(static_cast<unsigned>(o[4]), ballot) << "lane " << l;
      EXPECT_EQ(o[5], any ? 1 : 0);
      EXPECT_EQ(o[6], all ? 1 : 0);
      EXPECT_EQ(o[7], l < 16 ? half : 0) << "lane " << l;
    }
  }
}

// ---- tiled transpose: 32x32 tiles through padded shared memory, 2D blocks ---------------------
constexpr int kTile = 32;
constexpr int kRowsPerPass = 8;

__global__ void transpose_kernel(const float* in, float* out, int rows, int cols) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the column read
  const int x = blockIdx.x * kTile + threadIdx.x;
  const int y0 = blockIdx.y * kTile;
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass)
    if (x < cols && y0 + j < rows) tile[j][threadIdx.x] = in[(y0 + j) * cols + x];
  __syncthreads();
  const int ox = blockIdx.y * kTile + threadIdx.x;  // column of the output = row of the input
  const int oy0 = blockIdx.x * kTile;
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass)
    if (ox < rows && oy0 + j < cols) out[(oy0 + j) * rows + ox] = tile[threadIdx.x][j];
}

TEST_F(KernelTest, TiledTranspose) {
  const int rows = 67, cols = 45;  // neither a multiple of the tile
  const std::vector<float> host = random_floats(rows * cols, -1.f, 1.f, 3);
  rt::DeviceBuffer<float> in(host), out(rows * cols);
  launch(transpose_kernel, dim3(ceil_div(cols, kTile), ceil_div(rows, kTile)), dim3(kTile, kRowsPerPass), 0, nullptr,
         in.get(), out.get(), rows, cols);
  const std::vector<float> got = out.download();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) ASSERT_EQ(got[c * rows + r], host[r * cols + c]) << r << "," << c;
}

// ---- dynamic shared memory and the counting barriers ------------------------------------------
__global__ void dynamic_smem_kernel(const int* in, int* out, int n) {
  VITCUDA_DYNAMIC_SMEM(int, buf);
  const int t = threadIdx.x;
  buf[t] = in[t];
  __syncthreads();
  buf[n + t] = buf[n - 1 - t];  // reversed copy in the second half
  const int positives = __syncthreads_count(in[t] > 0);
  const int all_small = __syncthreads_and(in[t] < 50);
  const int any_big = __syncthreads_or(in[t] > 90);
  out[t] = buf[n + t];
  if (t == 0) {
    out[n] = positives;
    out[n + 1] = all_small;
    out[n + 2] = any_big;
  }
}

TEST_F(KernelTest, DynamicSharedMemoryAndCountingBarriers) {
  const int n = 96;  // three warps
  const std::vector<float> f = random_ints(n, -100, 100, 4);
  std::vector<int> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<int>(f[i]);
  rt::DeviceBuffer<int> in(host), out(n + 3);
  launch(dynamic_smem_kernel, dim3(1), dim3(n), 2 * n * sizeof(int), nullptr, in.get(), out.get(), n);
  const std::vector<int> got = out.download();
  for (int t = 0; t < n; ++t) EXPECT_EQ(got[t], host[n - 1 - t]);
  EXPECT_EQ(got[n], std::count_if(host.begin(), host.end(), [](int v) { return v > 0; }));
  EXPECT_EQ(got[n + 1], std::all_of(host.begin(), host.end(), [](int v) { return v < 50; }) ? 1 : 0);
  EXPECT_EQ(got[n + 2], std::any_of(host.begin(), host.end(), [](int v) { return v > 90; }) ? 1 : 0);
}

// ---- atomics ----------------------------------------------------------------------------------
__global__ void atomics_kernel(const int* in, int n, int* sum, int* mx, unsigned* cas_count, float* fsum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(sum, in[i]);
  atomicMax(mx, in[i]);
  atomicAdd(fsum, 0.5f);
  unsigned old = *cas_count, assumed;  // increment through a CAS loop
  do {
    assumed = old;
    old = atomicCAS(cas_count, assumed, assumed + 1);
  } while (old != assumed);
}

TEST_F(KernelTest, Atomics) {
  const int n = 1000;
  const std::vector<float> f = random_ints(n, -1000, 1000, 5);
  std::vector<int> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<int>(f[i]);
  rt::DeviceBuffer<int> in(host), sum(1), mx(std::vector<int>{-(1 << 30)});
  rt::DeviceBuffer<unsigned> cas(1);
  rt::DeviceBuffer<float> fsum(1);
  sum.zero();
  cas.zero();
  fsum.zero();
  launch(atomics_kernel, dim3(ceil_div(n, 128)), dim3(128), 0, nullptr, in.get(), n, sum.get(), mx.get(), cas.get(),
         fsum.get());
  EXPECT_EQ(sum.download()[0], std::accumulate(host.begin(), host.end(), 0));
  EXPECT_EQ(mx.download()[0], *std::max_element(host.begin(), host.end()));
  EXPECT_EQ(cas.download()[0], static_cast<unsigned>(n));
  EXPECT_EQ(fsum.download()[0], 0.5f * n);  // exact: multiples of 0.5 below 2^23
}

// ---- cp.async: groups land at wait_group ------------------------------------------------------
__global__ void cp_async_kernel(const float4* in, float4* out) {
  VITCUDA_DYNAMIC_SMEM(float4, buf);
  const int t = threadIdx.x;
  ptx::cp_async<16>(smem_raw(buf + t), in + t);
  ptx::cp_async_commit_group();
  ptx::cp_async<8>(smem_raw(smem_cast<float2>(buf + blockDim.x + t)), &in[blockDim.x + t]);
  ptx::cp_async<8>(smem_raw(smem_cast<float2>(buf + blockDim.x + t) + 1),
                   reinterpret_cast<const float2*>(&in[blockDim.x + t]) + 1);
  ptx::cp_async_commit_group();
  ptx::cp_async_zfill<16>(smem_raw(buf + 2 * blockDim.x + t), in + t, 4);  // 4 bytes, then zeros
  ptx::cp_async_commit_group();
  ptx::cp_async_wait_group<2>();  // the first group has landed
  out[t] = buf[t];
  ptx::cp_async_wait_all();
  out[blockDim.x + t] = buf[blockDim.x + t];
  out[2 * blockDim.x + t] = buf[2 * blockDim.x + t];
}

TEST_F(KernelTest, CpAsyncGroups) {
  const int threads = 64;
  const std::vector<float> f = random_floats(threads * 2 * 4, -1.f, 1.f, 6);
  rt::DeviceBuffer<float4> in(threads * 2), out(threads * 3);
  rt::copy_to_device(in.get(), f.data(), f.size() * sizeof(float));
  launch(cp_async_kernel, dim3(1), dim3(threads), 3 * threads * sizeof(float4), nullptr,
         static_cast<const float4*>(in.get()), out.get());
  std::vector<float> got(threads * 3 * 4);
  rt::copy_to_host(got.data(), out.get(), got.size() * sizeof(float));
  for (int i = 0; i < threads * 2 * 4; ++i) EXPECT_EQ(got[i], f[i]) << i;
  for (int t = 0; t < threads; ++t) {
    EXPECT_EQ(got[(2 * threads + t) * 4], f[t * 4]);
    for (int k = 1; k < 4; ++k) EXPECT_EQ(got[(2 * threads + t) * 4 + k], 0.f);
  }
}

// ---- Philox4x32-10: the Random123 known-answer vectors, on the host and in a kernel -----------
struct PhiloxCase {
  uint32_t ctr[4];
  uint32_t key[2];
  uint32_t expect[4];
};
const PhiloxCase kPhiloxKat[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

__global__ void philox_kernel(const uint32_t* ctr_key, uint32_t* out, int cases) {
  const int i = threadIdx.x;
  if (i >= cases) return;
  const uint32_t* c = ctr_key + 6 * i;
  const Philox4 r = philox4x32_10(Philox4{{c[0], c[1], c[2], c[3]}}, c[4], c[5]);
  for (int k = 0; k < 4; ++k) out[4 * i + k] = r.x[k];
}

TEST(Philox, Random123KnownAnswersOnTheHost) {
  for (const PhiloxCase& k : kPhiloxKat) {
    const Philox4 r = philox4x32_10(Philox4{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}}, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.x[i], k.expect[i]) << "word " << i;
  }
}

TEST_F(KernelTest, PhiloxRandom123KnownAnswersInAKernel) {
  const int cases = sizeof(kPhiloxKat) / sizeof(kPhiloxKat[0]);
  std::vector<uint32_t> in;
  for (const PhiloxCase& k : kPhiloxKat) {
    in.insert(in.end(), k.ctr, k.ctr + 4);
    in.insert(in.end(), k.key, k.key + 2);
  }
  rt::DeviceBuffer<uint32_t> d_in(in), d_out(4 * cases);
  launch(philox_kernel, dim3(1), dim3(32), 0, nullptr, static_cast<const uint32_t*>(d_in.get()), d_out.get(), cases);
  const std::vector<uint32_t> got = d_out.download();
  for (int c = 0; c < cases; ++c)
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got[4 * c + i], kPhiloxKat[c].expect[i]) << "case " << c;
}

// ---- streams and events through the runtime layer ---------------------------------------------
TEST_F(KernelTest, StreamsEventsAndCopies) {
  rt::Stream s = rt::stream_create();
  rt::Event a = rt::event_create(), b = rt::event_create();
  std::vector<float> host(1000, 3.f);
  rt::DeviceBuffer<float> d(host.size()), e(host.size());
  rt::event_record(a, s);
  rt::copy_to_device(d.get(), host.data(), host.size() * sizeof(float), s);
  rt::copy_device_to_device(e.get(), d.get(), host.size() * sizeof(float), s);
  rt::memset_device(d.get(), 0, host.size() * sizeof(float), s);
  rt::event_record(b, s);
  rt::stream_synchronize(s);
  EXPECT_GE(rt::event_elapsed_ms(a, b), 0.f);
  EXPECT_EQ(e.download(), host);
  EXPECT_EQ(d.download(), std::vector<float>(host.size(), 0.f));
  rt::event_destroy(a);
  rt::event_destroy(b);
  rt::stream_destroy(s);
}

}  // namespace
}  // namespace vitcuda::test
