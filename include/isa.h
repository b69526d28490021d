/* Run-time choice of instruction set for the hot kernels.
 *
 * The portable build compiles the kernels once per instruction set (src/gemm_<isa>.c, each with its own
 * target flags) and picks one table of function pointers at the first call: the widest the CPU and OS
 * support, or the one named by the environment variable XD_ISA (sse2|avx2|avx512; an ISA the CPU lacks
 * falls back to the widest it has). The choice is made once per process (pthread_once) and never
 * changes, so a run is bitwise reproducible for a given ISA and any thread count; different ISAs round
 * differently (FMA) and may differ in the last bits. Non-x86 builds have the base set only. */
#ifndef XD_ISA_H
#define XD_ISA_H

typedef enum { XD_ISA_BASE = 0, XD_ISA_AVX2, XD_ISA_AVX512, XD_ISA_COUNT } xd_isa;

typedef struct xd_kernels {
  xd_isa isa;
  /* same contract as xd_sgemm in layers.h */
  void (*sgemm)(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc);
  /* conv2d of ONE sample with one input channel, stride 1, no padding (OH = H-KH+1, OW = W-KW+1, KH*KW <= 49):
   * y[F][OH*OW] = b + w (*) x (b may be NULL); wgrad overwrites dw[F][KH*KW] = sum over pixels of dy * x. */
  void (*conv_c1_forward)(int H, int W, int F, int KH, int KW, int OH, int OW, const float *x, const float *w,
                          const float *b, float *y);
  void (*conv_c1_wgrad)(int H, int W, int F, int KH, int KW, int OH, int OW, const float *x, const float *dy,
                        float *dw);
} xd_kernels;

/* 1 if this build has kernels for `isa` and the CPU/OS can run them. */
int xd_isa_supported(xd_isa isa);
/* "sse2" / "avx2" / "avx512" ("generic" for the base set off x86). */
const char *xd_isa_name(xd_isa isa);
/* The kernel table for a supported isa (NULL otherwise); tests use it to run every ISA in one process. */
const xd_kernels *xd_kernels_for(xd_isa isa);
/* The process-wide table chosen once (XD_ISA or the widest supported). */
const xd_kernels *xd_kernels_active(void);

#endif
