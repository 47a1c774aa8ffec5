// vitcuda — the emulator's stand-in for cuBLASLt's arithmetic: an fp32 row-major GEMM through
// OpenBLAS. kernels/gemm.cu (emulation build) widens its operands to fp32, multiplies here and
// applies the epilogue itself. The emulator's own copy (not the CPU reference's ref::gemm) so
// that vitcuda_emu depends on nothing in host/.
#pragma once
#include <cstdint>

namespace vitcuda::emu {

// C[M, N] = alpha * op(A) · op(B) + beta * C, row-major, single-threaded OpenBLAS.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace vitcuda::emu
