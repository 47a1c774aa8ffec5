// vitcuda — emu::sgemm (see emu_blas.h).
#include "kernels/emu/emu_blas.h"

#include <cblas.h>

namespace vitcuda::emu {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // Emulated kernels run one block at a time on one thread; OpenBLAS's own pool would only
  // spin against the test runner's other process (ctest -j2 on two cores).
  static const bool single = (openblas_set_num_threads(1), true);
  (void)single;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)M,
              (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

}  // namespace vitcuda::emu
