/* AVX-512 (F/BW/DQ/VL) + FMA kernels; CMakeLists.txt gives this file its target flags on x86. */
#if defined(__x86_64__) || defined(__i386__)
#define XD_ISA_SUFFIX avx512
#define XD_ISA_ENUM XD_ISA_AVX512
#include "gemm_impl.h"
#else
typedef int xd_no_avx512; /* not x86: nothing to compile (ISO C forbids an empty file) */
#endif
