/* Shared by the libFuzzer targets in this folder (each defines LLVMFuzzerTestOneInput; replay_main.c
 * drives the same code over committed inputs in the ordinary ctest builds). */
#ifndef XD_FUZZ_UTIL_H
#define XD_FUZZ_UTIL_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "common.h"

/* The input as a file opened by name like any other (the public loaders take paths): a fresh file
 * (new inode each time) in /dev/shm (memory) or $TMPDIR, removed at exit. HDF5 resolves the real path
 * of what it opens, so a memfd's /proc/self/fd/N name does not work. The caller closes *fd. */
static char fz_path_buf[512];
static void fz_cleanup(void) {
  if (fz_path_buf[0]) unlink(fz_path_buf);
}
static inline const char *fz_mem_file(const uint8_t *d, size_t n, int *fd) {
  if (!fz_path_buf[0]) {
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(fz_path_buf, sizeof fz_path_buf, "%s/xd-fuzz-%ld.h5", dir, (long)getpid());
    atexit(fz_cleanup);
  }
  unlink(fz_path_buf);
  *fd = open(fz_path_buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (*fd < 0) return NULL;
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(*fd, d + off, n - off);
    if (w <= 0) {
      close(*fd);
      *fd = -1;
      return NULL;
    }
    off += (size_t)w;
  }
  return fz_path_buf;
}

/* The project's message contract, enforced on every refusal: one line, non-empty. `ours_only`: the
 * message quotes nothing from the input (image decoding), so it must also be printable ASCII and never
 * hold an empty "()" reason. A violation aborts, so the fuzzer reports it with the input. */
static inline void fz_check_msg(const char *what, const char *msg, int ours_only) {
  size_t n = strlen(msg);
  int bad = n == 0 || (ours_only && strstr(msg, "()") != NULL);
  for (size_t i = 0; i < n && !bad; i++) {
    unsigned char c = (unsigned char)msg[i];
    if (c == '\n' || c == '\r' || (ours_only && (c < 0x20 || c > 0x7e))) bad = 1;
  }
  if (bad) {
    fprintf(stderr, "%s: message breaks the one-line contract: '%s'\n", what, msg);
    abort();
  }
}

static inline FILE *fz_devnull(void) {
  static FILE *f;
  if (!f) f = fopen("/dev/null", "w");
  return f;
}

#endif
