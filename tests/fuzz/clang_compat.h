/* Forced into the GEMM sources of the fuzz build only (fuzz.cmake): src/gemm_impl.h uses GCC's
 * __builtin_shuffle(a, b, mask), which clang lacks (clang has __builtin_shufflevector with constant
 * indices). This stands in for the one form used there, 4 floats, element by element; speed does not
 * matter while fuzzing. */
#ifndef XD_FUZZ_CLANG_COMPAT_H
#define XD_FUZZ_CLANG_COMPAT_H
#if defined(__clang__)
typedef float xd_fz_v4f __attribute__((vector_size(16)));
typedef int xd_fz_v4i __attribute__((vector_size(16)));
static inline xd_fz_v4f xd_fz_shuffle4(xd_fz_v4f a, xd_fz_v4f b, xd_fz_v4i m) {
  xd_fz_v4f r;
  for (int i = 0; i < 4; i++) {
    int k = m[i] & 7;
    r[i] = k < 4 ? a[k] : b[k - 4];
  }
  return r;
}
#define __builtin_shuffle(a, b, ...) xd_fz_shuffle4((a), (b), (__VA_ARGS__)) /* the mask holds commas */
#endif
#endif
