/* xd_sgemm: the layers.h entry point, forwarded to the kernel table chosen at run time (isa.c). */
#include "isa.h"
#include "layers.h"

void xd_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
  xd_kernels_active()->sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
