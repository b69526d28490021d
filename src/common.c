#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int xd_fail(xd_err *e, const char *fmt, ...) {
  if (e) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int xd_fail_at(xd_err *e, const char *file, int line, const char *fmt, ...) {
  if (e) {
    const char *base = strrchr(file, '/');
    int k = snprintf(e->msg, sizeof e->msg, "%s:%d: ", base ? base + 1 : file, line);
    if (k < 0 || (size_t)k >= sizeof e->msg) k = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + k, sizeof e->msg - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return -1;
}

void *xd_alloc(size_t bytes, const char *what, xd_err *e) {
  size_t n = (bytes + 63) & ~(size_t)63;
  if (n == 0) n = 64;
  void *p = NULL;
  if (posix_memalign(&p, 64, n) != 0) {
    xd_fail(e, "out of memory allocating %zu bytes for %s", bytes, what);
    return NULL;
  }
  memset(p, 0, n);
  return p;
}

void xd_free(void *p) { free(p); }

double xd_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void xd_tmp_name(const char *path, char *tmp, size_t n) {
  snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
}

static int fsync_path(const char *path, int flags) {
  int fd = open(path, flags);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int xd_commit_file(const char *tmp, const char *path, xd_err *e) {
  if (fsync_path(tmp, O_RDONLY) != 0) {
    int err = errno;
    unlink(tmp);
    return xd_fail(e, "%s: cannot sync temporary file: %s", path, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    int err = errno;
    unlink(tmp);
    return xd_fail(e, "%s: cannot rename temporary file into place: %s", path, strerror(err));
  }
  char *dup = xd_strdup(path);
  if (dup) {
    fsync_path(dirname(dup), O_RDONLY | O_DIRECTORY); /* best effort: some filesystems refuse */
    free(dup);
  }
  return 0;
}

int xd_mkdir_p(const char *dir, xd_err *e) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return xd_fail(e, "%s: path too long", dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return xd_fail(e, "%s: cannot create directory: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST) return xd_fail(e, "%s: cannot create directory: %s", buf, strerror(errno));
  struct stat st;
  if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return xd_fail(e, "%s: exists and is not a directory", buf);
  return 0;
}

int xd_file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

char *xd_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static uint64_t g_mem_limit; /* 0 = default */

static uint64_t mem_limit_default(void) {
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  uint64_t lim = (pages > 0 && psz > 0) ? (uint64_t)pages * (uint64_t)psz / 10 * 9 : (uint64_t)8 << 30;
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < lim)
    lim = (uint64_t)rl.rlim_cur;
  return lim;
}

uint64_t xd_mem_limit(void) { return g_mem_limit ? g_mem_limit : mem_limit_default(); }
void xd_mem_limit_set(uint64_t bytes) { g_mem_limit = bytes; }

uint64_t xd_mul_sat(uint64_t a, uint64_t b) {
  if (a != 0 && b > UINT64_MAX / a) return UINT64_MAX;
  return a * b;
}
uint64_t xd_add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static void fmt_bytes(char *buf, size_t n, uint64_t b) {
  if (b == UINT64_MAX) snprintf(buf, n, "more than 16 EiB");
  else if (b >= ((uint64_t)1 << 30)) snprintf(buf, n, "%.1f GiB", (double)b / (double)((uint64_t)1 << 30));
  else snprintf(buf, n, "%.1f MiB", (double)b / (double)(1 << 20));
}

int xd_mem_check(uint64_t bytes, const char *what, xd_err *e) {
  uint64_t lim = xd_mem_limit();
  if (bytes != UINT64_MAX && bytes <= lim) return 0;
  char need[48], have[48];
  fmt_bytes(need, sizeof need, bytes);
  fmt_bytes(have, sizeof have, lim);
  return xd_fail(e, "%s needs %s, above the memory limit of %s (--mem-limit)", what, need, have);
}

int xd_parse_size(const char *s, uint64_t *out) {
  if (!s || !*s) return -1;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || !(v >= 0)) return -1;
  double mul = 1;
  if (*end) {
    switch (*end) {
      case 'k': case 'K': mul = 1024.0; break;
      case 'm': case 'M': mul = 1024.0 * 1024; break;
      case 'g': case 'G': mul = 1024.0 * 1024 * 1024; break;
      case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
      default: return -1;
    }
    end++;
    if (*end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
  }
  double b = v * mul;
  if (!(b < 1.8e19)) return -1;
  *out = (uint64_t)b;
  return 0;
}

int xd_check_regular(const char *path, xd_err *e) {
  struct stat st;
  if (stat(path, &st) != 0) return xd_fail(e, "%s: %s", path, strerror(errno));
  if (S_ISREG(st.st_mode)) return 0;
  const char *kind = S_ISDIR(st.st_mode)    ? "a directory"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "not a plain file";
  return xd_fail(e, "%s: not a regular file (%s)", path, kind);
}
