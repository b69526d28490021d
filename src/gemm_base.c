/* Kernels for the build's baseline target (SSE2 on x86-64 by default; whatever -march says otherwise). */
#define XD_ISA_SUFFIX base
#define XD_ISA_ENUM XD_ISA_BASE
#include "gemm_impl.h"
