#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *arg_value(const char *cmd, int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "xray-dp %s: %s needs a value\n", cmd, argv[*i]);
    return NULL;
  }
  return argv[++*i];
}

int arg_int(const char *cmd, const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi) {
    fprintf(stderr, "xray-dp %s: %s: expected an integer in [%lld, %lld], got '%s'\n", cmd, opt, (long long)lo,
            (long long)hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

int arg_double(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
    fprintf(stderr, "xray-dp %s: %s: expected a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

void arg_join(int argc, char **argv, char *buf, int n) {
  int k = 0;
  buf[0] = 0;
  for (int i = 0; i < argc && k < n - 1; i++) {
    int plain = argv[i][0] != 0 && strpbrk(argv[i], " \t'\"$\\*?;&|<>()") == NULL;
    k += snprintf(buf + k, (size_t)(n - k), plain ? "%s%s" : "%s'%s'", i ? " " : "", argv[i]);
  }
}

int arg_mem_limit(const char *cmd, const char *v) {
  uint64_t b = 0;
  if (xd_parse_size(v, &b) != 0 || b < ((uint64_t)1 << 20)) {
    fprintf(stderr, "xray-dp %s: --mem-limit: expected a size of at least 1M (e.g. 512M, 8G), got '%s'\n", cmd, v);
    return -1;
  }
  xd_mem_limit_set(b);
  return 0;
}
