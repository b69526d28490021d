/* Run-time instruction-set dispatch (see include/isa.h). The only process-wide state is the pointer to
 * one of the const kernel tables, written once under pthread_once and read-only afterwards. */
#include "isa.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>


extern const xd_kernels xd_kernels_base;
#if defined(__x86_64__) || defined(__i386__)
extern const xd_kernels xd_kernels_avx2, xd_kernels_avx512;
#endif

const char *xd_isa_name(xd_isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case XD_ISA_BASE: return "sse2";
#else
    case XD_ISA_BASE: return "generic";
#endif
    case XD_ISA_AVX2: return "avx2";
    case XD_ISA_AVX512: return "avx512";
    default: return "unknown";
  }
}

int xd_isa_supported(xd_isa isa) {
  if (isa == XD_ISA_BASE) return 1;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init(); /* idempotent; the checks include the OS's XSAVE support for the wide registers */
  if (isa == XD_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == XD_ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#endif
  return 0;
}

const xd_kernels *xd_kernels_for(xd_isa isa) {
  if (!xd_isa_supported(isa)) return NULL;
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case XD_ISA_AVX2: return &xd_kernels_avx2;
    case XD_ISA_AVX512: return &xd_kernels_avx512;
#endif
    default: return &xd_kernels_base;
  }
}

static const xd_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void) {
  int want = XD_ISA_COUNT - 1;
  const char *env = getenv("XD_ISA");
  if (env && *env) /* an unknown name keeps the automatic choice */
    for (int i = 0; i < XD_ISA_COUNT; i++)
      if (!strcmp(env, xd_isa_name((xd_isa)i)) || (i == XD_ISA_BASE && !strcmp(env, "base"))) want = i;
  while (want > XD_ISA_BASE && !xd_isa_supported((xd_isa)want)) want--;
  chosen = xd_kernels_for((xd_isa)want);
}

const xd_kernels *xd_kernels_active(void) {
  pthread_once(&chosen_once, choose);
  return chosen;
}
