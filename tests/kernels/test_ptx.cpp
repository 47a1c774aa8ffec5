// The PTX wrappers (kernels/ptx.cuh): ldmatrix fragments on their own, mma.sync with fragments
// built by hand from the PTX ISA layouts, and both composed with cp.async into a 64x64x64 matmul
// that must equal a plain CPU matmul. Inputs are small integers, so every product and every
// partial sum is exact in fp32 and the comparison is bit-exact: a single misplaced fragment
// element changes the result.
#include <cstring>

#include "kernel_test.h"
#include "kernels/ptx.cuh"

namespace vitcuda::test {
namespace {

// ---- ldmatrix on its own: M_i[r][c] = i·1000 + r·8 + c, checked lane by lane -------------------
template <int kNum, bool kTrans>
__global__ void ldmatrix_kernel(uint32_t* out) {
  __shared__ __align__(16) uint16_t mats[4][8][8];
  const int lane = threadIdx.x;
  for (int e = lane; e < 4 * 64; e += 32)
    mats[e / 64][(e / 8) % 8][e % 8] = static_cast<uint16_t>((e / 64) * 1000 + (e % 64));
  __syncwarp();
  // lanes 8i..8i+7 give the rows of matrix i (lanes past the count give valid addresses too)
  const void* row = &mats[(lane / 8) % kNum][lane % 8][0];
  uint32_t r[kNum];
  if constexpr (kNum == 1) {
    if constexpr (kTrans)
      ptx::ldmatrix_x1_trans(r, row);
    else
      ptx::ldmatrix_x1(r, row);
  } else if constexpr (kNum == 2) {
    if constexpr (kTrans)
      ptx::ldmatrix_x2_trans(r, row);
    else
      ptx::ldmatrix_x2(r, row);
  } else {
    if constexpr (kTrans)
      ptx::ldmatrix_x4_trans(r, row);
    else
      ptx::ldmatrix_x4(r, row);
  }
  for (int i = 0; i < kNum; ++i) out[lane * 4 + i] = r[i];
}

template <int kNum, bool kTrans>
void check_ldmatrix() {
  rt::DeviceBuffer<uint32_t> out(32 * 4);
  out.zero();
  launch(ldmatrix_kernel<kNum, kTrans>, dim3(1), dim3(32), 0, nullptr, out.get());
  const std::vector<uint32_t> got = out.download();
  auto M = [](int i, int r, int c) { return static_cast<uint32_t>(i * 1000 + r * 8 + c); };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < kNum; ++i) {
      const uint32_t lo = kTrans ? M(i, 2 * t, g) : M(i, g, 2 * t);
      const uint32_t hi = kTrans ? M(i, 2 * t + 1, g) : M(i, g, 2 * t + 1);
      EXPECT_EQ(got[lane * 4 + i], lo | (hi << 16))
          << "x" << kNum << (kTrans ? ".trans" : "") << " lane " << lane << " register " << i;
    }
  }
}

TEST_F(KernelTest, LdmatrixFragments) {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}

// ---- 64x64x64 matmul: cp.async tiles into shared memory, ldmatrix, mma.sync ----------------------
// C[64x64] (fp32) = A[64x64] · B[64x64], A row-major [m][k], B row-major [k][n]. Four warps each
// own a 32x32 quarter of C: 2 m-tiles of 16 x 4 n-tiles of 8, over 4 k-steps of 16.
constexpr int kDim = 64;
constexpr int kLd = kDim + 8;  // padded shared-memory rows (144 bytes: 16-byte aligned)

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         const float (&c)[4]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    ptx::mma_m16n8k16_bf16(d, a, b, c);
  else
    ptx::mma_m16n8k16_f16(d, a, b, c);
}

template <typename T>
__global__ void matmul64_kernel(const T* A, const T* B, float* C) {
  VITCUDA_DYNAMIC_SMEM(T, smem);
  SmemPtr<T> sA = smem;               // [64][kLd]
  SmemPtr<T> sB = smem + kDim * kLd;  // [64][kLd]
  const int tid = threadIdx.x;
  // 64 rows x 8 chunks of 16 bytes per matrix; 128 threads copy 4 chunks of each.
  for (int chunk = tid; chunk < kDim * 8; chunk += blockDim.x) {
    const int r = chunk / 8, c = (chunk % 8) * 8;
    ptx::cp_async<16>(smem_raw(sA + r * kLd + c), A + r * kDim + c);
    ptx::cp_async<16>(smem_raw(sB + r * kLd + c), B + r * kDim + c);
  }
  ptx::cp_async_commit_group();
  ptx::cp_async_wait_group<0>();
  __syncthreads();

  const int warp = tid / 32, lane = tid % 32;
  const int m0 = (warp / 2) * 32, n0 = (warp % 2) * 32;
  float acc[2][4][4] = {};
  for (int k0 = 0; k0 < kDim; k0 += 16) {
    uint32_t a[2][4], b[4][2];
    for (int mt = 0; mt < 2; ++mt)  // A: the four 8x8 matrices (rows 0-7|8-15) x (k 0-7|8-15)
      ptx::ldmatrix_x4(a[mt], smem_raw(sA + (m0 + mt * 16 + lane % 16) * kLd + k0 + (lane / 16) * 8));
    for (int nt = 0; nt < 4; nt += 2) {  // B is [k][n]: .trans gives the col-major fragment
      uint32_t r[4];
      ptx::ldmatrix_x4_trans(r, smem_raw(sB + (k0 + lane % 16) * kLd + n0 + nt * 8 + (lane / 16) * 8));
      b[nt][0] = r[0];
      b[nt][1] = r[1];
      b[nt + 1][0] = r[2];
      b[nt + 1][1] = r[3];
    }
    for (int mt = 0; mt < 2; ++mt)
      for (int nt = 0; nt < 4; ++nt) mma16816<T>(acc[mt][nt], a[mt], b[nt], acc[mt][nt]);
  }
  const int g = lane / 4, t = lane % 4;
  for (int mt = 0; mt < 2; ++mt)
    for (int nt = 0; nt < 4; ++nt) {
      const int row = m0 + mt * 16 + g, col = n0 + nt * 8 + 2 * t;
      C[row * kDim + col] = acc[mt][nt][0];
      C[row * kDim + col + 1] = acc[mt][nt][1];
      C[(row + 8) * kDim + col] = acc[mt][nt][2];
      C[(row + 8) * kDim + col + 1] = acc[mt][nt][3];
    }
}

std::vector<float> cpu_matmul(const std::vector<float>& A, const std::vector<float>& B, int M, int N, int K) {
  std::vector<float> C(static_cast<size_t>(M) * N, 0.f);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(A[m * K + k]) * B[k * N + n];
      C[m * N + n] = static_cast<float>(s);
    }
  return C;
}

template <typename T>
void check_matmul64(bool integers) {
  std::vector<float> A = integers ? random_ints(kDim * kDim, -4, 4, 11) : random_floats(kDim * kDim, -1, 1, 11);
  std::vector<float> B = integers ? random_ints(kDim * kDim, -4, 4, 12) : random_floats(kDim * kDim, -1, 1, 12);
  const std::vector<T> At = convert<T>(A), Bt = convert<T>(B);
  A = to_floats(At);  // the values the tensor core sees
  B = to_floats(Bt);
  rt::DeviceBuffer<T> dA(At), dB(Bt);
  rt::DeviceBuffer<float> dC(kDim * kDim);
  launch(matmul64_kernel<T>, dim3(1), dim3(128), 2 * kDim * kLd * sizeof(T), nullptr, static_cast<const T*>(dA.get()),
         static_cast<const T*>(dB.get()), dC.get());
  const std::vector<float> got = dC.download();
  const std::vector<float> want = cpu_matmul(A, B, kDim, kDim, kDim);
  for (int i = 0; i < kDim * kDim; ++i) {
    if (integers) {
      ASSERT_EQ(got[i], want[i]) << "C[" << i / kDim << "][" << i % kDim << "]";  // exact
    } else {
      // fp32 accumulation of 64 exact products of magnitude <= 1, in the tensor core's order:
      // |error| <= 64 · 2^-24 · Σ|a·b| <= 64 · 64 · 2^-24 ≈ 2.4e-4.
      ASSERT_NEAR(got[i], want[i], 2.5e-4f) << "C[" << i / kDim << "][" << i % kDim << "]";
    }
  }
}

TEST_F(KernelTest, MmaLdmatrixMatmul64Bf16) {
  check_matmul64<__nv_bfloat16>(true);
  check_matmul64<__nv_bfloat16>(false);
}
TEST_F(KernelTest, MmaLdmatrixMatmul64F16) {
  check_matmul64<__half>(true);
  check_matmul64<__half>(false);
}

// ---- mma fragments built by hand from the layouts (no ldmatrix): one m16n8k16 tile ------------
template <typename T>
__global__ void mma16816_direct_kernel(const T* A /*16x16 row*/, const T* B /*16x8, [k][n]*/, const float* Cin /*16x8*/,
                                       float* D) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto pack = [](T lo, T hi) {
    uint16_t l, h;
    memcpy(&l, &lo, 2);
    memcpy(&h, &hi, 2);
    return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
  };
  uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
    a[i] = pack(A[row * 16 + col], A[row * 16 + col + 1]);
  }
  for (int j = 0; j < 2; ++j) {
    const int k = 2 * t + 8 * j;
    b[j] = pack(B[k * 8 + g], B[(k + 1) * 8 + g]);
  }
  const float c[4] = {Cin[g * 8 + 2 * t], Cin[g * 8 + 2 * t + 1], Cin[(g + 8) * 8 + 2 * t],
                      Cin[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  mma16816<T>(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

template <typename T>
void check_mma16816_direct() {
  std::vector<float> A = random_ints(16 * 16, -8, 8, 21), B = random_ints(16 * 8, -8, 8, 22),
                     C = random_ints(16 * 8, -100, 100, 23);
  rt::DeviceBuffer<T> dA(convert<T>(A)), dB(convert<T>(B));
  rt::DeviceBuffer<float> dC(C), dD(16 * 8);
  launch(mma16816_direct_kernel<T>, dim3(1), dim3(32), 0, nullptr, static_cast<const T*>(dA.get()),
         static_cast<const T*>(dB.get()), static_cast<const float*>(dC.get()), dD.get());
  const std::vector<float> got = dD.download();
  std::vector<float> want = cpu_matmul(A, B, 16, 8, 16);
  for (int i = 0; i < 16 * 8; ++i) EXPECT_EQ(got[i], want[i] + C[i]) << "D[" << i / 8 << "][" << i % 8 << "]";
}

TEST_F(KernelTest, MmaM16n8k16FragmentsFromTheLayoutBf16) { check_mma16816_direct<__nv_bfloat16>(); }
TEST_F(KernelTest, MmaM16n8k16FragmentsFromTheLayoutF16) { check_mma16816_direct<__half>(); }

// ---- mma.m16n8k8.tf32, fragments from the layout ----------------------------------------------
__global__ void mma1688_tf32_kernel(const float* A /*16x8 row*/, const float* B /*8x8 [k][n]*/, float* D) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  const uint32_t a[4] = {ptx::f32_to_tf32(A[g * 8 + t]), ptx::f32_to_tf32(A[(g + 8) * 8 + t]),
                         ptx::f32_to_tf32(A[g * 8 + t + 4]), ptx::f32_to_tf32(A[(g + 8) * 8 + t + 4])};
  const uint32_t b[2] = {ptx::f32_to_tf32(B[t * 8 + g]), ptx::f32_to_tf32(B[(t + 4) * 8 + g])};
  const float c[4] = {0.f, 0.f, 0.f, 0.f};
  float d[4];
  ptx::mma_m16n8k8_tf32(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

TEST_F(KernelTest, MmaM16n8k8Tf32) {
  // Integers in [-64, 64] are exact in tf32 (10 mantissa bits); the sums too.
  const std::vector<float> A = random_ints(16 * 8, -64, 64, 31), B = random_ints(8 * 8, -64, 64, 32);
  rt::DeviceBuffer<float> dA(A), dB(B), dD(16 * 8);
  launch(mma1688_tf32_kernel, dim3(1), dim3(32), 0, nullptr, static_cast<const float*>(dA.get()),
         static_cast<const float*>(dB.get()), dD.get());
  const std::vector<float> got = dD.download();
  const std::vector<float> want = cpu_matmul(A, B, 16, 8, 8);
  for (int i = 0; i < 16 * 8; ++i) EXPECT_EQ(got[i], want[i]) << "D[" << i / 8 << "][" << i % 8 << "]";
}

__global__ void tf32_round_kernel(const float* in, uint32_t* out, int n) {
  const int i = threadIdx.x;
  if (i < n) out[i] = ptx::f32_to_tf32(in[i]);
}

TEST_F(KernelTest, Tf32RoundsToNearestTiesAway) {
  // 1 + 2^-12 (below half an ulp of tf32) rounds down; 1 + 2^-11 (a tie) rounds away from zero.
  const std::vector<float> in = {1.0f + 0x1p-12f, 1.0f + 0x1p-11f, -(1.0f + 0x1p-11f), 3.0f};
  const std::vector<uint32_t> want = {0x3f800000u, 0x3f802000u, 0xbf802000u, 0x40400000u};
  rt::DeviceBuffer<float> d_in(in);
  rt::DeviceBuffer<uint32_t> d_out(in.size());
  launch(tf32_round_kernel, dim3(1), dim3(32), 0, nullptr, static_cast<const float*>(d_in.get()), d_out.get(),
         static_cast<int>(in.size()));
  EXPECT_EQ(d_out.download(), want);
}

}  // namespace
}  // namespace vitcuda::test
