/* Error reporting, allocation and small utilities shared by every module.
 *
 * Library code never exits: a failing function records one line in an xd_err and returns -1.
 * Only src/cli/ prints the message and picks the exit status. */
#ifndef XD_COMMON_H
#define XD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define XD_ERR_MAX 1024
typedef struct xd_err {
  char msg[XD_ERR_MAX];
} xd_err;

/* Formats a one-line message into *e (e may be NULL) and returns -1: `return xd_fail(e, "%s: ...", path);` */
int xd_fail(xd_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, prefixed with file:line: for failures of calls that should not fail (HDF5/MPI internals), where
 * the location is what a bug report needs. */
int xd_fail_at(xd_err *e, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Checked calls. XD_TRY propagates a -1 from a function that already filled the xd_err.
 * XD_CHECK turns a C-style failure (negative return / NULL) into an error naming file:line. */
#define XD_TRY(call)           \
  do {                         \
    if ((call) != 0) return -1; \
  } while (0)
#define XD_CHECK(cond, e, ...)                                   \
  do {                                                          \
    if (!(cond)) return xd_fail_at((e), __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/* 64-byte aligned allocation (AVX-512 friendly, no false sharing between arenas). Returns NULL and
 * fills e (naming `what` and the size) on failure. Zero-initialised. Free with xd_free. */
void *xd_alloc(size_t bytes, const char *what, xd_err *e);
void xd_free(void *p);

/* Monotonic wall-clock seconds. */
double xd_now(void);

/* Writes a whole file atomically: the caller writes `tmp` (from xd_tmp_name), then xd_commit_file
 * fsyncs it, renames it over `path` and fsyncs the directory. */
void xd_tmp_name(const char *path, char *tmp, size_t n);
int xd_commit_file(const char *tmp, const char *path, xd_err *e);
int xd_mkdir_p(const char *dir, xd_err *e);

/* ---- output files (issue 9: full disks, stale temporaries, outputs that name inputs) ----
 *
 * Removes the temporaries of dead writers of `path`: files named PATH.tmp.<pid> (what xd_tmp_name makes)
 * whose process no longer exists (kill(pid, 0) fails with ESRCH). Live writers' temporaries (another
 * process still writing) are kept. Best effort, never fails; returns how many were removed. A pid is
 * only meaningful on this host: do not share an output path between writers on different machines. */
int xd_clean_stale_tmp(const char *path);
/* The same for every file of dir named <anything><suffix>.tmp.<pid> (predict's Grad-CAM PNGs, whose
 * names change from run to run: suffix ".png"). */
int xd_clean_stale_tmp_suffix(const char *dir, const char *suffix);

/* Checks an output path before any work is done, so that a long run does not fail at its end:
 *   - a directory, a dangling symbolic link, or a missing/unwritable/read-only parent folder: -1 with
 *     one line naming the path and the reason (strerror);
 *   - an existing regular file, a new name, or a symbolic link to a regular file: 0, and `target` gets
 *     the name to write atomically (the link's target for a link, so that the link is kept);
 *   - something that cannot be replaced by a rename (a device such as /dev/null, a FIFO, /dev/stdout,
 *     /dev/fd/N): 1 (write it directly, target = path) when allow_direct, else -1 "not a regular file".
 * The empty path is refused too (callers report it as bad usage first). */
int xd_output_check(const char *path, int allow_direct, char *target, size_t n, xd_err *e);

/* 1 if a and b exist and are the same file (device and inode), else 0. */
int xd_same_file(const char *a, const char *b);

/* Writes buf[0..n) to a new temporary file for `path` (xd_tmp_name), fsyncs and closes it; every call is
 * checked. On failure the temporary is removed and -1 returned with "PATH: cannot write: REASON"
 * (e.g. "No space left on device", "File too large"). On success tmp holds the name for xd_commit_file. */
int xd_tmp_write(const char *path, const void *buf, size_t n, char *tmp, size_t tmpn, xd_err *e);
/* The whole file: xd_clean_stale_tmp, xd_tmp_write, xd_commit_file. */
int xd_write_file_atomic(const char *path, const void *buf, size_t n, xd_err *e);
/* For what xd_output_check returned 1 for: opens path for appending (no truncation: /dev/stdout keeps
 * what the shell set up) and writes buf, every call checked. 0 or -1 "PATH: cannot write: REASON". */
int xd_write_direct(const char *path, const void *buf, size_t n, xd_err *e);
/* Writes buf to stdout and flushes it, checked: -1 with "stdout (FILE): cannot write: REASON" naming the
 * file stdout is redirected to when it is one. */
int xd_write_stdout(const void *buf, size_t n, xd_err *e);

/* Makes a message one printable line in place: control characters (a newline or tab in a file name)
 * become '?'. */
void xd_msg_oneline(char *s);
int xd_file_exists(const char *path);

/* Memory budget (issue 9): the one process-wide setting. Work whose size is known before it is
 * allocated (a model's arenas, a workspace, a dataset's declared images) is checked against it first,
 * in 64-bit with overflow checks, and refused with one line instead of being handed to the OOM killer.
 * Default: 90% of physical memory (or RLIMIT_AS when lower); `--mem-limit` sets it. */
uint64_t xd_mem_limit(void);
void xd_mem_limit_set(uint64_t bytes); /* 0 restores the default */
/* 0 if `bytes` fits the budget, else -1 with "WHAT needs 12.3 GiB, above the memory limit of 8.0 GiB
 * (--mem-limit)" (callers prefix the file). UINT64_MAX means "overflowed" and always fails. */
int xd_mem_check(uint64_t bytes, const char *what, xd_err *e);
/* Overflow-checked 64-bit size arithmetic: the result saturates at UINT64_MAX. */
uint64_t xd_mul_sat(uint64_t a, uint64_t b);
uint64_t xd_add_sat(uint64_t a, uint64_t b);
/* Parses a size with an optional K/M/G/T suffix (powers of 1024; "1.5G", "800M", "123456"). 0 or -1. */
int xd_parse_size(const char *s, uint64_t *out);

/* Refuses what is not a regular file before anything opens it (a FIFO would block forever, a
 * directory or device is never an input): 0, or -1 with "PATH: not a regular file (a FIFO)". */
int xd_check_regular(const char *path, xd_err *e);

/* Portable strdup (C11 lacks it). */
char *xd_strdup(const char *s);

#endif
