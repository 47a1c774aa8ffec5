// vitcuda — PTX wrappers: the only place inline asm appears. Each wrapper has a PTX body (nvcc,
// sm_80 and later) and a C++ body for the emulator that reproduces the PTX ISA's fragment layouts
// exactly (PTX ISA, "Warp-level matrix fragment" sections for mma.m16n8k16 / m16n8k8 and
// ldmatrix). Fragment notation: groupID = lane / 4, threadID_in_group = lane % 4; a .b32 register
// holding two 16-bit elements keeps the lower-indexed one in its low half.
//
//   mma_m16n8k16_bf16 / _f16   D[16x8] (f32) = A[16x16] (row) · B[16x8] (col) + C (f32)
//       A: a[0] = {A[g][2t], A[g][2t+1]}      a[1] = {A[g+8][2t], A[g+8][2t+1]}
//          a[2] = {A[g][2t+8], A[g][2t+9]}    a[3] = {A[g+8][2t+8], A[g+8][2t+9]}
//       B: b[0] = {B[2t][g], B[2t+1][g]}      b[1] = {B[2t+8][g], B[2t+9][g]}
//       C, D: c[0] = C[g][2t], c[1] = C[g][2t+1], c[2] = C[g+8][2t], c[3] = C[g+8][2t+1]
//   mma_m16n8k8_tf32           D[16x8] (f32) = A[16x8] (row) · B[8x8] (col) + C (f32)
//       A: a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4]
//       B: b[0] = B[t][g], b[1] = B[t+4][g];   C, D as above
//   ldmatrix_x{1,2,4}[_trans]  8x8 b16 matrices from shared memory; lanes 8i..8i+7 give the row
//       addresses of matrix i (16 bytes each, 16-byte aligned); r[i] of lane l holds
//       {M_i[l/4][2(l%4)], M_i[l/4][2(l%4)+1]}, or with .trans {M_i[2(l%4)][l/4], M_i[2(l%4)+1][l/4]}.
//   cp_async<4|8|16>, cp_async_commit_group, cp_async_wait_group<N>, cp_async_wait_all
//   register_barrier           no instruction: stops nvcc reusing values derived from 4 registers
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/common.cuh"

namespace vitcuda::ptx {

#if defined(VITCUDA_EMU)
namespace emu_detail {

inline float bf16_lo(uint32_t r) { return __uint_as_float(r << 16); }
inline float bf16_hi(uint32_t r) { return __uint_as_float(r & 0xffff0000u); }
inline float f16_bits_to_float(uint16_t bits) {
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}
inline float f16_lo(uint32_t r) { return f16_bits_to_float(static_cast<uint16_t>(r & 0xffffu)); }
inline float f16_hi(uint32_t r) { return f16_bits_to_float(static_cast<uint16_t>(r >> 16)); }
// The tensor core reads only the 19 high bits of a .tf32 operand.
inline float tf32_operand(uint32_t r) { return __uint_as_float(r & 0xffffe000u); }

struct MmaIn16 {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

// D = A·B + C with fp32 accumulation in k order (products of 8- and 11-bit mantissas are exact).
template <int K>
inline void mma_product(const float (&A)[16][K], const float (&B)[K][8], const float (&C)[16][8], float (&D)[16][8]) {
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float acc = C[m][n];
      for (int k = 0; k < K; ++k) acc = std::fma(A[m][k], B[k][n], acc);
      D[m][n] = acc;
    }
}

inline void gather_c(const vitcuda::emu::WarpSlot* s, float (&C)[16][8]) {
  for (int lane = 0; lane < 32; ++lane) {
    const auto* in = static_cast<const MmaIn16*>(s[lane].in);
    const int g = lane >> 2, t = lane & 3;
    C[g][2 * t] = in->c[0];
    C[g][2 * t + 1] = in->c[1];
    C[g + 8][2 * t] = in->c[2];
    C[g + 8][2 * t + 1] = in->c[3];
  }
}
inline void scatter_d(const vitcuda::emu::WarpSlot* s, const float (&D)[16][8]) {
  for (int lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<float*>(s[lane].out);
    const int g = lane >> 2, t = lane & 3;
    out[0] = D[g][2 * t];
    out[1] = D[g][2 * t + 1];
    out[2] = D[g + 8][2 * t];
    out[3] = D[g + 8][2 * t + 1];
  }
}

template <bool kBf16>
void mma_m16n8k16_complete(unsigned, const vitcuda::emu::WarpSlot* s) {
  float A[16][16], B[16][8], C[16][8], D[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto* in = static_cast<const MmaIn16*>(s[lane].in);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i & 1);
      const int col = 2 * t + 8 * (i >> 1);
      A[row][col] = kBf16 ? bf16_lo(in->a[i]) : f16_lo(in->a[i]);
      A[row][col + 1] = kBf16 ? bf16_hi(in->a[i]) : f16_hi(in->a[i]);
    }
    for (int j = 0; j < 2; ++j) {
      const int k = 2 * t + 8 * j;
      B[k][g] = kBf16 ? bf16_lo(in->b[j]) : f16_lo(in->b[j]);
      B[k + 1][g] = kBf16 ? bf16_hi(in->b[j]) : f16_hi(in->b[j]);
    }
  }
  gather_c(s, C);
  mma_product<16>(A, B, C, D);
  scatter_d(s, D);
}

inline void mma_m16n8k8_tf32_complete(unsigned, const vitcuda::emu::WarpSlot* s) {
  float A[16][8], B[8][8], C[16][8], D[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto* in = static_cast<const MmaIn16*>(s[lane].in);
    const int g = lane >> 2, t = lane & 3;
    A[g][t] = tf32_operand(in->a[0]);
    A[g + 8][t] = tf32_operand(in->a[1]);
    A[g][t + 4] = tf32_operand(in->a[2]);
    A[g + 8][t + 4] = tf32_operand(in->a[3]);
    B[t][g] = tf32_operand(in->b[0]);
    B[t + 4][g] = tf32_operand(in->b[1]);
  }
  gather_c(s, C);
  mma_product<8>(A, B, C, D);
  scatter_d(s, D);
}

// ldmatrix: lanes 8i..8i+7 hold the row addresses of matrix i.
template <int kNum, bool kTrans>
void ldmatrix_complete(unsigned, const vitcuda::emu::WarpSlot* s) {
  uint16_t M[4][8][8];
  for (int i = 0; i < kNum; ++i)
    for (int r = 0; r < 8; ++r) {
      const void* row = *static_cast<const void* const*>(s[8 * i + r].in);
      if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
        vitcuda::emu::fail("ldmatrix: the row address given by lane " + std::to_string(8 * i + r) +
                           " is not 16-byte aligned");
      vitcuda::emu::check_shared_range(row, 16, "ldmatrix");
      std::memcpy(M[i][r], row, 16);
    }
  for (int lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<uint32_t*>(s[lane].out);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < kNum; ++i) {
      const uint16_t lo = kTrans ? M[i][2 * t][g] : M[i][g][2 * t];
      const uint16_t hi = kTrans ? M[i][2 * t + 1][g] : M[i][g][2 * t + 1];
      out[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

template <int kNum, bool kTrans>
inline void ldmatrix(uint32_t* r, const void* smem_row, const char* file, int line) {
  static const char* const names[2][3] = {{"ldmatrix.x1", "ldmatrix.x2", "ldmatrix.x4"},
                                          {"ldmatrix.x1.trans", "ldmatrix.x2.trans", "ldmatrix.x4.trans"}};
  uint32_t out[4] = {0, 0, 0, 0};
  vitcuda::emu::warp_collective(names[kTrans][kNum == 1   ? 0
                                              : kNum == 2 ? 1
                                                          : 2],
                                &ldmatrix_complete<kNum, kTrans>, 0xffffffffu, &smem_row, out, file, line);
  for (int i = 0; i < kNum; ++i) r[i] = out[i];
}

}  // namespace emu_detail
#define VITCUDA_PTX_SITE , const char *file = __builtin_FILE(), int line = __builtin_LINE()
#else
#define VITCUDA_PTX_SITE
#endif

// ---- mma.sync -----------------------------------------------------------------------------------

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4] VITCUDA_PTX_SITE) {
#if defined(VITCUDA_EMU)
  emu_detail::MmaIn16 in{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  float out[4];
  vitcuda::emu::warp_collective("mma.sync.m16n8k16.bf16", &emu_detail::mma_m16n8k16_complete<true>, 0xffffffffu, &in,
                                out, file, line);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  __trap();  // mma.sync with bf16 needs sm_80
#endif
}

__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4] VITCUDA_PTX_SITE) {
#if defined(VITCUDA_EMU)
  emu_detail::MmaIn16 in{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  float out[4];
  vitcuda::emu::warp_collective("mma.sync.m16n8k16.f16", &emu_detail::mma_m16n8k16_complete<false>, 0xffffffffu, &in,
                                out, file, line);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  __trap();
#endif
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4] VITCUDA_PTX_SITE) {
#if defined(VITCUDA_EMU)
  emu_detail::MmaIn16 in{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  float out[4];
  vitcuda::emu::warp_collective("mma.sync.m16n8k8.tf32", &emu_detail::mma_m16n8k8_tf32_complete, 0xffffffffu, &in, out,
                                file, line);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  __trap();
#endif
}

// cvt.rna.tf32.f32: round to 19 bits, ties away from zero (NaN and Inf pass through).
__device__ __forceinline__ uint32_t f32_to_tf32(float x) {
#if defined(VITCUDA_EMU)
  const uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
  return (bits + 0x1000u) & 0xffffe000u;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  __trap();
  return 0;
#endif
}

// ---- ldmatrix -----------------------------------------------------------------------------------
// ldmatrix, cp.async and its commit/wait carry a "memory" clobber: the asm reads or writes shared
// memory through an address the compiler cannot see, so without it the compiler may keep a
// shared-memory value in a register or move an ordinary shared load or store across the asm (e.g.
// read a tile before the wait_group that completes it, or store into a buffer ldmatrix is still
// to read).

#if !defined(VITCUDA_EMU)
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

#if defined(VITCUDA_EMU)
#define VITCUDA_LDMATRIX(NAME, NUM, TRANS, PTX)                                                    \
  __device__ __forceinline__ void NAME(uint32_t(&r)[NUM], const void* smem_row VITCUDA_PTX_SITE) { \
    emu_detail::ldmatrix<NUM, TRANS>(r, smem_row, file, line);                                     \
  }
#else
#define VITCUDA_LDMATRIX_OUT1 "=r"(r[0])
#define VITCUDA_LDMATRIX_OUT2 "=r"(r[0]), "=r"(r[1])
#define VITCUDA_LDMATRIX_OUT4 "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
#define VITCUDA_LDMATRIX(NAME, NUM, TRANS, PTX)                                               \
  __device__ __forceinline__ void NAME(uint32_t(&r)[NUM], const void* smem_row) {             \
    asm volatile(PTX : VITCUDA_LDMATRIX_OUT##NUM : "r"(shared_address(smem_row)) : "memory"); \
  }
#endif

VITCUDA_LDMATRIX(ldmatrix_x1, 1, false, "ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n")
VITCUDA_LDMATRIX(ldmatrix_x2, 2, false, "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n")
VITCUDA_LDMATRIX(ldmatrix_x4, 4, false, "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n")
VITCUDA_LDMATRIX(ldmatrix_x1_trans, 1, true, "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n")
VITCUDA_LDMATRIX(ldmatrix_x2_trans, 2, true, "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n")
VITCUDA_LDMATRIX(ldmatrix_x4_trans, 4, true, "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n")
#undef VITCUDA_LDMATRIX

// ---- cp.async (sm_80): global -> shared without registers ------------------------------------
// The emulator defers each copy to the wait_group that covers it, so reading the destination
// before waiting sees stale data there too.

template <int kBytes>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(VITCUDA_EMU)
  vitcuda::emu::cp_async(smem_dst, gmem_src, kBytes, kBytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(smem_dst)), "l"(gmem_src), "n"(kBytes)
               : "memory");
#else
  __trap();
#endif
}

// Copies src_bytes (0..kBytes) and zero-fills the rest: out-of-range tiles without a branch.
template <int kBytes>
__device__ __forceinline__ void cp_async_zfill(void* smem_dst, const void* gmem_src, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(VITCUDA_EMU)
  vitcuda::emu::cp_async(smem_dst, gmem_src, kBytes, src_bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(smem_dst)), "l"(gmem_src),
               "n"(kBytes), "r"(src_bytes)
               : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit_group() {
#if defined(VITCUDA_EMU)
  vitcuda::emu::cp_async_commit_group();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most kPending of the most recent committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(kPending >= 0 && kPending <= 7, "cp.async.wait_group takes 0..7");
#if defined(VITCUDA_EMU)
  vitcuda::emu::cp_async_wait_group(kPending);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#if defined(VITCUDA_EMU)
  vitcuda::emu::cp_async_wait_group(-1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// ---- register barrier ---------------------------------------------------------------------------
// An empty asm that "changes" the 4 registers: the compiler must forget what it derived from them,
// so values computed from them before it are recomputed after it rather than kept alive (no
// common-subexpression elimination across it). The LayerNorm backward stages a row as packed bf16
// and converts it twice: without the barrier nvcc keeps the converted fp32 copies instead (twice
// the registers: 190 instead of 127 at 8 bf16 chunks per lane, sm_90a). No instruction is emitted.
__device__ __forceinline__ void register_barrier(uint4& v) {
#if defined(VITCUDA_EMU)
  (void)v;
#else
  asm volatile("" : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w));
#endif
}

#undef VITCUDA_PTX_SITE

}  // namespace vitcuda::ptx
