#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
