/* Minimal assertion helpers for the C tests: each failed CHECK prints file:line and the values, the
 * test keeps going, and check_done() returns the exit status (non-zero if anything failed). */
#ifndef XD_TEST_CHECK_H
#define XD_TEST_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    check_count++;                                                              \
    if (!(cond)) {                                                              \
      check_failures++;                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                           \
  } while (0)

#define CHECK_MSG(cond, ...)                                           \
  do {                                                                 \
    check_count++;                                                     \
    if (!(cond)) {                                                     \
      check_failures++;                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                    \
      fprintf(stderr, "\n");                                           \
    }                                                                  \
  } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                                        \
  do {                                                                                      \
    double _a = (double)(a), _b = (double)(b);                                              \
    check_count++;                                                                          \
    if (!(fabs(_a - _b) <= (atol) + (rtol)*fabs(_b))) {                                     \
      check_failures++;                                                                     \
      fprintf(stderr, "%s:%d: CHECK_CLOSE failed: %s=%.9g vs %s=%.9g\n", __FILE__, __LINE__, #a, _a, #b, _b); \
    }                                                                                       \
  } while (0)

static inline int check_done(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}
#endif
