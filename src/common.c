#include "common.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
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

/* Folder and file name of path (dir "." for a bare name). */
static void split_path(const char *path, char *dir, size_t dn, char *base, size_t bn) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(dir, dn, ".");
    snprintf(base, bn, "%s", path);
  } else if (slash == path) {
    snprintf(dir, dn, "/");
    snprintf(base, bn, "%s", slash + 1);
  } else {
    snprintf(dir, dn, "%.*s", (int)(slash - path), path);
    snprintf(base, bn, "%s", slash + 1);
  }
}

/* Removes dir's regular files named <base>.tmp.<pid> (any_prefix: <anything><base>.tmp.<pid>) whose
 * process is dead. */
static int clean_stale(const char *dir, const char *base, int any_prefix) {
  size_t bl = strlen(base);
  DIR *d = opendir(dir);
  if (!d) return 0;
  int removed = 0, saved = errno;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *nm = de->d_name, *t = strstr(nm, ".tmp.");
    if (!t) continue;
    while (strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp."); /* the last one */
    size_t pl = (size_t)(t - nm);
    if (any_prefix ? (pl < bl || strncmp(t - bl, base, bl) != 0) : (pl != bl || strncmp(nm, base, bl) != 0)) continue;
    const char *num = t + 5;
    if (!*num || strspn(num, "0123456789") != strlen(num) || strlen(num) > 9) continue;
    long pid = strtol(num, NULL, 10);
    if (pid <= 0 || pid == (long)getpid()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to judge) */
    char full[8192];
    if (snprintf(full, sizeof full, "%s/%s", dir, nm) >= (int)sizeof full) continue;
    struct stat st;
    if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (unlink(full) == 0) removed++;
  }
  closedir(d);
  errno = saved;
  return removed;
}

int xd_clean_stale_tmp(const char *path) {
  char dir[4096], base[1024];
  if (!path || !*path) return 0;
  split_path(path, dir, sizeof dir, base, sizeof base);
  if (!base[0]) return 0;
  return clean_stale(dir, base, 0);
}

int xd_clean_stale_tmp_suffix(const char *dir, const char *suffix) {
  if (!dir || !*dir || !suffix || !*suffix) return 0;
  return clean_stale(dir, suffix, 1);
}

/* Paths that name an already open file descriptor: writing them must not replace anything. */
static int is_fd_path(const char *p) {
  if (!strcmp(p, "/dev/stdout") || !strcmp(p, "/dev/stderr") || !strcmp(p, "/dev/stdin")) return 1;
  if (!strncmp(p, "/dev/fd/", 8) || !strncmp(p, "/proc/self/fd/", 14) || !strncmp(p, "/proc/thread-self/fd/", 21))
    return 1;
  if (!strncmp(p, "/proc/", 6)) {
    const char *q = p + 6;
    while (*q >= '0' && *q <= '9') q++;
    if (q > p + 6 && !strncmp(q, "/fd/", 4)) return 1;
  }
  return 0;
}

static const char *kind_of(mode_t m) {
  return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

int xd_output_check(const char *path, int allow_direct, char *target, size_t n, xd_err *e) {
  if (!path || !*path) return xd_fail(e, "empty output path");
  if (snprintf(target, n, "%s", path) >= (int)n) return xd_fail(e, "%s: path too long", path);
  struct stat st;
  if (is_fd_path(path)) {
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return xd_fail(e, "%s: is a directory", path);
    if (!allow_direct) return xd_fail(e, "%s: not a regular file (an open file descriptor)", path);
    return 1;
  }
  if (lstat(path, &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      char real[PATH_MAX];
      if (!realpath(path, real)) {
        if (errno == ENOENT) return xd_fail(e, "%s: a symbolic link to a missing file", path);
        return xd_fail(e, "%s: cannot resolve the symbolic link: %s", path, strerror(errno));
      }
      if (snprintf(target, n, "%s", real) >= (int)n) return xd_fail(e, "%s: path too long", path);
      if (stat(real, &st) != 0) return xd_fail(e, "%s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) return xd_fail(e, "%s: is a directory", path);
    if (!S_ISREG(st.st_mode)) {
      if (!allow_direct) return xd_fail(e, "%s: not a regular file (%s)", path, kind_of(st.st_mode));
      snprintf(target, n, "%s", path);
      return 1;
    }
  } else if (errno != ENOENT) {
    return xd_fail(e, "%s: %s", path, strerror(errno));
  } else if (path[strlen(path) - 1] == '/') {
    return xd_fail(e, "%s: cannot create: %s", path, strerror(EISDIR));
  }
  char dir[4096], base[1024];
  split_path(target, dir, sizeof dir, base, sizeof base);
  if (stat(dir, &st) != 0) return xd_fail(e, "%s: cannot create: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return xd_fail(e, "%s: cannot create: %s", path, strerror(ENOTDIR));
  if (access(dir, W_OK | X_OK) != 0) return xd_fail(e, "%s: cannot create: %s", path, strerror(errno));
  return 0;
}

int xd_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* write(2) until done; returns 0 or an errno. */
static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno ? errno : EIO;
    }
    if (w == 0) return EIO;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int xd_tmp_write(const char *path, const void *buf, size_t n, char *tmp, size_t tmpn, xd_err *e) {
  xd_tmp_name(path, tmp, tmpn);
  unlink(tmp); /* a leftover of an earlier process with this pid; never write through a link there */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    int err = errno;
    tmp[0] = 0;
    return xd_fail(e, "%s: cannot create: %s", path, strerror(err));
  }
  int err = write_all(fd, buf, n);
  if (!err && fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  if (close(fd) != 0 && !err && errno != EINTR) err = errno;
  if (err) {
    unlink(tmp);
    tmp[0] = 0;
    return xd_fail(e, "%s: cannot write: %s", path, strerror(err));
  }
  return 0;
}

int xd_write_file_atomic(const char *path, const void *buf, size_t n, xd_err *e) {
  char tmp[4200];
  xd_clean_stale_tmp(path);
  XD_TRY(xd_tmp_write(path, buf, n, tmp, sizeof tmp, e));
  return xd_commit_file(tmp, path, e);
}

int xd_write_direct(const char *path, const void *buf, size_t n, xd_err *e) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return xd_fail(e, "%s: cannot write: %s", path, strerror(errno));
  int err = write_all(fd, buf, n);
  if (close(fd) != 0 && !err && errno != EINTR) err = errno;
  if (err) return xd_fail(e, "%s: cannot write: %s", path, strerror(err));
  return 0;
}

int xd_write_stdout(const void *buf, size_t n, xd_err *e) {
  int err = 0;
  errno = 0;
  if (n && fwrite(buf, 1, n, stdout) != n) err = errno ? errno : EIO;
  if (!err && fflush(stdout) != 0) err = errno ? errno : EIO;
  if (!err && ferror(stdout)) err = EIO;
  if (!err) return 0;
  char link[4096] = "";
  ssize_t k = readlink("/proc/self/fd/1", link, sizeof link - 1);
  link[k > 0 ? k : 0] = 0;
  if (link[0] == '/') return xd_fail(e, "stdout (%s): cannot write: %s", link, strerror(err));
  return xd_fail(e, "stdout: cannot write: %s", strerror(err));
}

void xd_msg_oneline(char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
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
