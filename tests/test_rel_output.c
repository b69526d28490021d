/* Issue 9, outputs (library level): JSON strings are valid whatever the bytes, TSV fields cannot split a
 * row, stale temporaries of dead writers are removed (and live ones kept), output paths are checked
 * before any work (directories, missing folders, devices, symbolic links, the empty path), whole-file
 * writes are atomic and checked (a file size limit is "File too large" with the path, nothing left
 * behind, an old file unchanged; /dev/full is "No space left on device"), the dataset writer fails the
 * same way, and dataset files carry checksums: a flipped image byte is a read error, not other pixels.
 *
 * Also a fixture maker for tests/test_rel_output.sh:
 *   test_rel_output --huge-weights IN.h5 OUT.h5   a copy of checkpoint IN whose weights are finite but
 *                                                 +-3e38, so that the model's outputs are NaN
 *   test_rel_output --set-threshold IN.h5 OUT.h5 T   a copy whose stored threshold is T */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "check.h"
#include "checkpoint.h"
#include "common.h"
#include "dataset.h"
#include "dataset_write.h"
#include "metrics.h"
#include "train.h"

static char g_work[4096];

static const char *wp(const char *name) {
  static char buf[4][8192];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", g_work, name);
  return buf[k];
}

static void touch(const char *path, const char *content) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fputs(content, f);
  fclose(f);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)len + 1);
  if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
    free(b);
    b = NULL;
  }
  if (b) b[len] = 0;
  fclose(f);
  if (n) *n = (size_t)len;
  return b;
}

static int exists(const char *p) {
  struct stat st;
  return lstat(p, &st) == 0;
}

/* Files in the work folder whose name contains ".tmp." */
static int count_tmp(void) {
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '\\.tmp\\.'", g_work);
  FILE *p = popen(cmd, "r");
  int n = -1;
  if (p) {
    if (fscanf(p, "%d", &n) != 1) n = -1;
    pclose(p);
  }
  return n;
}

static char *json_of(const char *s) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  xd_json_string(f, s);
  fclose(f);
  return buf;
}

static char *tsv_of(const char *s) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  xd_tsv_field(f, s);
  fclose(f);
  return buf;
}

static void test_json_string(void) {
  static const struct {
    const char *in, *want;
  } cases[] = {
      {"plain/a.png", "\"plain/a.png\""},
      {"q\"b\\s", "\"q\\\"b\\\\s\""},
      {"tab\there\nnl\rcr", "\"tab\\there\\nnl\\rcr\""},
      {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""}, /* valid UTF-8 */
      {"bad\xff\xfe.png", "\"bad\\ufffd\\ufffd.png\""},                                          /* not UTF-8 */
      {"over\xc0\xaflong", "\"over\\ufffd\\ufffdlong\""},                                        /* overlong '/' */
      {"sur\xed\xa0\x80x", "\"sur\\ufffd\\ufffd\\ufffdx\""},                                     /* a surrogate */
      {"cut\xe2\x82", "\"cut\\ufffd\\ufffd\""},                                                  /* truncated */
      {"big\xf4\x90\x80\x80", "\"big\\ufffd\\ufffd\\ufffd\\ufffd\""},                           /* > U+10FFFF */
      {"", "\"\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = json_of(cases[i].in);
    CHECK_MSG(got && !strcmp(got, cases[i].want), "case %zu: got %s want %s", i, got ? got : "-", cases[i].want);
    /* whatever the bytes: no raw control character, and every byte >= 0x80 is part of valid UTF-8 */
    for (const char *p = got; p && *p; p++) CHECK((unsigned char)*p >= 0x20);
    free(got);
  }
  /* every single byte value, alone and after a lead byte: the result never holds an invalid sequence */
  for (int b = 1; b < 256; b++) {
    char in[4] = {(char)b, 0}, in2[4] = {(char)0xe2, (char)b, 0};
    char *g1 = json_of(in), *g2 = json_of(in2);
    int ok1 = g1 && g1[0] == '"' && g1[strlen(g1) - 1] == '"', ok2 = g2 && g2[0] == '"';
    for (const unsigned char *p = (const unsigned char *)g1; ok1 && *p; p++) ok1 = *p >= 0x20 && *p < 0x80;
    for (const unsigned char *p = (const unsigned char *)g2; ok2 && *p; p++) ok2 = *p >= 0x20 && *p < 0x80;
    CHECK_MSG(ok1 && ok2, "byte 0x%02x: %s / %s", b, g1 ? g1 : "-", g2 ? g2 : "-");
    free(g1);
    free(g2);
  }
}

static void test_tsv_field(void) {
  char *got = tsv_of("a\tb\nc\\d\re");
  CHECK_MSG(got && !strcmp(got, "a\\tb\\nc\\\\d\\re"), "got %s", got ? got : "-");
  CHECK(got && !strchr(got, '\t') && !strchr(got, '\n') && !strchr(got, '\r'));
  free(got);
  got = tsv_of("NORMAL/x.png");
  CHECK(got && !strcmp(got, "NORMAL/x.png"));
  free(got);
}

/* A pid no process can have (above pid_max): a reaped child's pid can be reused at once on a busy
 * machine. */
static pid_t dead_pid(int k) {
  long max = 4194304;
  FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
  if (f) {
    if (fscanf(f, "%ld", &max) != 1) max = 4194304;
    fclose(f);
  }
  return (pid_t)(max + 1 + k);
}

static void test_clean_stale(void) {
  char name[8300];
  pid_t d1 = dead_pid(0), d2 = dead_pid(1);
  const char *out = wp("out.h5");
  snprintf(name, sizeof name, "%s.tmp.%d", out, (int)d1);
  touch(name, "stale");
  char live[8300], other[8300], notnum[8300], dir[8300], mine[8300];
  snprintf(live, sizeof live, "%s.tmp.%d", out, (int)getppid()); /* a live process: kept */
  touch(live, "live");
  snprintf(other, sizeof other, "%s.tmp.%d", wp("other.h5"), (int)d1); /* another output's: kept */
  touch(other, "other");
  snprintf(notnum, sizeof notnum, "%s.tmp.12ab", out);
  touch(notnum, "x");
  snprintf(dir, sizeof dir, "%s.tmp.%d", out, (int)d2); /* not a regular file: kept */
  mkdir(dir, 0777);
  snprintf(mine, sizeof mine, "%s.tmp.%d", out, (int)getpid()); /* this process's own: kept */
  touch(mine, "mine");
  touch(out, "the output itself");
  int n = xd_clean_stale_tmp(out);
  CHECK_MSG(n == 1, "removed %d", n);
  CHECK(!exists(name));
  CHECK(exists(live) && exists(other) && exists(notnum) && exists(dir) && exists(mine) && exists(out));
  /* predict's PNGs: any name ending in .png.tmp.<dead pid> */
  char png[8300], txt[8300], pnglive[8300];
  snprintf(png, sizeof png, "%s/a_p0.500.png.tmp.%d", g_work, (int)d1);
  snprintf(txt, sizeof txt, "%s/notes.txt.tmp.%d", g_work, (int)d1);
  snprintf(pnglive, sizeof pnglive, "%s/b_p0.100.png.tmp.%d", g_work, (int)getppid());
  touch(png, "x");
  touch(txt, "x");
  touch(pnglive, "x");
  n = xd_clean_stale_tmp_suffix(g_work, ".png");
  CHECK_MSG(n == 1 && !exists(png) && exists(txt) && exists(pnglive), "removed %d", n);
  unlink(txt);
  unlink(pnglive);
  /* a bare file name (the current folder) and a missing folder are fine */
  CHECK(xd_clean_stale_tmp("no-such-folder-xyz/out.h5") == 0);
  unlink(live);
  unlink(other);
  unlink(notnum);
  rmdir(dir);
  unlink(mine);
  unlink(out);
}

static void test_output_check(void) {
  char t[4096];
  xd_err e = {{0}};
  mkdir(wp("adir"), 0777);
  CHECK(xd_output_check(wp("adir"), 1, t, sizeof t, &e) == -1);
  CHECK_MSG(strstr(e.msg, "is a directory") && strstr(e.msg, "adir"), "%s", e.msg);
  CHECK(xd_output_check(wp("adir/"), 1, t, sizeof t, &e) == -1);
  CHECK(xd_output_check(wp("missing/x.tsv"), 1, t, sizeof t, &e) == -1);
  CHECK_MSG(strstr(e.msg, "No such file or directory") && strstr(e.msg, "missing/x.tsv"), "%s", e.msg);
  touch(wp("afile"), "x");
  CHECK(xd_output_check(wp("afile/x.tsv"), 1, t, sizeof t, &e) == -1);
  CHECK_MSG(strstr(e.msg, "Not a directory"), "%s", e.msg);
  CHECK(xd_output_check("", 1, t, sizeof t, &e) == -1);
  CHECK(xd_output_check(wp("new.tsv"), 1, t, sizeof t, &e) == 0 && !strcmp(t, wp("new.tsv")));
  CHECK(xd_output_check(wp("afile"), 0, t, sizeof t, &e) == 0 && !strcmp(t, wp("afile")));
  CHECK(xd_output_check("/dev/null", 1, t, sizeof t, &e) == 1);
  CHECK(xd_output_check("/dev/null", 0, t, sizeof t, &e) == -1);
  CHECK_MSG(strstr(e.msg, "not a regular file (a character device)"), "%s", e.msg);
  CHECK(xd_output_check("/dev/stdout", 1, t, sizeof t, &e) == 1);
  CHECK(xd_output_check("/dev/stdout", 0, t, sizeof t, &e) == -1);
  mkfifo(wp("fifo"), 0666);
  CHECK(xd_output_check(wp("fifo"), 0, t, sizeof t, &e) == -1);
  CHECK_MSG(strstr(e.msg, "a FIFO"), "%s", e.msg);
  CHECK(xd_output_check(wp("fifo"), 1, t, sizeof t, &e) == 1);
  /* a symbolic link: its target is what gets replaced, the link stays */
  CHECK(symlink("afile", wp("link")) == 0);
  char real[4096];
  CHECK(realpath(wp("afile"), real) != NULL);
  CHECK(xd_output_check(wp("link"), 0, t, sizeof t, &e) == 0);
  CHECK_MSG(!strcmp(t, real), "%s vs %s", t, real);
  CHECK(symlink("nowhere", wp("dangling")) == 0);
  CHECK(xd_output_check(wp("dangling"), 1, t, sizeof t, &e) == -1);
  CHECK(symlink("adir", wp("dirlink")) == 0);
  CHECK(xd_output_check(wp("dirlink"), 1, t, sizeof t, &e) == -1 && strstr(e.msg, "is a directory"));
  CHECK(xd_same_file(wp("link"), wp("afile")) == 1);
  CHECK(xd_same_file(wp("afile"), wp("new.tsv")) == 0);
}

static void test_atomic_writes(void) {
  xd_err e = {{0}};
  const char *p = wp("atomic.txt");
  CHECK_MSG(xd_write_file_atomic(p, "hello\n", 6, &e) == 0, "%s", e.msg);
  size_t n = 0;
  char *b = slurp(p, &n);
  CHECK(b && n == 6 && !memcmp(b, "hello\n", 6));
  free(b);
  /* over a file size limit (ulimit -f): EFBIG with the path, the old file kept, no temporary */
  size_t big = 64 * 1024;
  char *data = malloc(big);
  memset(data, 'x', big);
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 16 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  int rc = xd_write_file_atomic(p, data, big, &e);
  CHECK(rc == -1);
  CHECK_MSG(strstr(e.msg, "File too large") && strstr(e.msg, p), "%s", e.msg);
  b = slurp(p, &n);
  CHECK_MSG(b && n == 6 && !memcmp(b, "hello\n", 6), "the old file changed");
  free(b);
  CHECK_MSG(count_tmp() == 0, "%d temporaries left", count_tmp());

  /* the dataset writer under the same limit: the reason in the message, nothing left */
  xd_dsw *w = NULL;
  const char *names[2] = {"NORMAL", "PNEUMONIA"};
  const char *ds = wp("big.h5");
  rc = xd_dsw_create(&w, ds, 64, 64, names, 2, "test", &e);
  uint8_t *img = calloc(64 * 64 * 16, 1), lab[16] = {0};
  const char *paths[16];
  for (int i = 0; i < 16; i++) paths[i] = "x.png";
  for (size_t i = 0; i < 64 * 64 * 16; i++) img[i] = (uint8_t)(i * 7);
  if (rc == 0) rc = xd_dsw_begin_split(w, "train", &e);
  for (int k = 0; rc == 0 && k < 8; k++) rc = xd_dsw_append(w, img, lab, paths, 16, &e);
  if (rc == 0) rc = xd_dsw_end_split(w, NULL, &e);
  if (rc == 0) rc = xd_dsw_commit(w, &e);
  else xd_dsw_abort(w);
  CHECK(rc == -1);
  CHECK_MSG(strstr(e.msg, "File too large") && strstr(e.msg, ds), "%s", e.msg);
  CHECK(!exists(ds));
  CHECK_MSG(count_tmp() == 0, "%d temporaries left", count_tmp());
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);

  /* a device is written directly, and its errors are reported */
  CHECK(xd_write_direct("/dev/full", data, 100, &e) == -1);
  CHECK_MSG(strstr(e.msg, "No space left on device") && strstr(e.msg, "/dev/full"), "%s", e.msg);
  CHECK(xd_write_direct("/dev/null", data, 100, &e) == 0);
  free(data);
  free(img);

  char m[] = "a\nb\tc\rd";
  xd_msg_oneline(m);
  CHECK(!strcmp(m, "a?b?c?d"));
}

/* A dataset file whose image bytes are flipped on disk must fail to read (Fletcher-32), not return other
 * pixels; the labels too. */
static void test_checksums(void) {
  xd_err e = {{0}};
  xd_dsw *w = NULL;
  const char *names[2] = {"NORMAL", "PNEUMONIA"};
  const char *ds = wp("sum.h5");
  enum { S = 32, N = 4 };
  uint8_t img[N * S * S], lab[N] = {0, 1, 0, 1};
  const char *paths[N] = {"a.png", "b.png", "c.png", "d.png"};
  for (int i = 0; i < N * S * S; i++) img[i] = (uint8_t)((i * 131 + 17) >> 3) ^ (uint8_t)(i / (S * S) * 37); /* every image different */
  int rc = xd_dsw_create(&w, ds, S, S, names, 2, "test", &e);
  if (rc == 0) rc = xd_dsw_begin_split(w, "train", &e);
  if (rc == 0) rc = xd_dsw_append(w, img, lab, paths, N, &e);
  if (rc == 0) rc = xd_dsw_end_split(w, NULL, &e);
  if (rc == 0) rc = xd_dsw_commit(w, &e);
  else xd_dsw_abort(w);
  CHECK_MSG(rc == 0, "%s", e.msg);
  size_t n = 0;
  char *file = slurp(ds, &n);
  CHECK(file != NULL);
  if (!file) return;
  /* the file reads back as written */
  xd_dataset *d = NULL;
  uint8_t back[N * S * S], lb[N];
  CHECK_MSG(xd_dataset_open(&d, ds, "train", &e) == 0, "%s", e.msg);
  if (d) {
    CHECK(xd_dataset_read_u8(d, 0, N, back, lb, &e) == 0 && !memcmp(back, img, sizeof img) && !memcmp(lb, lab, N));
    xd_dataset_close(d);
  }
  /* the third image's bytes are somewhere in the file, as written (no compression) */
  const uint8_t *third = img + 2 * S * S;
  char *at = NULL;
  for (size_t i = 0; i + S * S <= n && !at; i++)
    if (!memcmp(file + i, third, S * S)) at = file + i;
  CHECK(at != NULL);
  if (at) {
    at[S * S / 2] ^= 0x10; /* one bit */
    FILE *f = fopen(ds, "wb");
    fwrite(file, 1, n, f);
    fclose(f);
    d = NULL;
    rc = xd_dataset_open(&d, ds, "train", &e);
    if (rc == 0) {
      rc = xd_dataset_read_u8(d, 2, 3, back, NULL, &e);
      CHECK_MSG(rc == -1, "a flipped bit in an image was read without error");
      CHECK(xd_dataset_read_u8(d, 0, 1, back, NULL, &e) == 0); /* other chunks still read */
      xd_dataset_close(d);
    }
  }
  free(file);
}

static int set_threshold(const char *in, const char *out, double thr) {
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta meta;
  xd_err e = {{0}};
  if (xd_checkpoint_load(in, &m, &st, &meta, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  int rc = xd_checkpoint_save(out, &m, NULL, &st, &meta, &e);
  if (rc) fprintf(stderr, "%s\n", e.msg);
  xd_model_free(&m);
  if (rc) return 1;
  /* the writer refuses a bad threshold, so it is written behind its back, as a corrupt file would have it */
  hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t a = f >= 0 ? H5Aopen(f, "threshold", H5P_DEFAULT) : -1;
  rc = a >= 0 && H5Awrite(a, H5T_NATIVE_DOUBLE, &thr) >= 0 ? 0 : 1;
  if (a >= 0) H5Aclose(a);
  if (f >= 0 && H5Fclose(f) < 0) rc = 1;
  if (rc) fprintf(stderr, "%s: cannot rewrite the threshold attribute\n", out);
  return rc;
}

static int huge_weights(const char *in, const char *out) {
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta meta;
  xd_err e = {{0}};
  if (xd_checkpoint_load(in, &m, &st, &meta, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  for (size_t i = 0; i < m.nparams; i++) m.params[i] = i % 2 ? -3e38f : 3e38f;
  int rc = xd_checkpoint_save(out, &m, NULL, &st, &meta, &e);
  if (rc) fprintf(stderr, "%s\n", e.msg);
  xd_model_free(&m);
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  /* as main.c: a file whose close failed on a full disk must not crash HDF5's exit handler */
  H5dont_atexit();
  if (argc == 4 && !strcmp(argv[1], "--huge-weights")) return huge_weights(argv[2], argv[3]);
  if (argc == 5 && !strcmp(argv[1], "--set-threshold")) return set_threshold(argv[2], argv[3], atof(argv[4]));
  if (argc < 3) {
    fprintf(stderr, "usage: test_rel_output FIXTURES WORK\n");
    return 2;
  }
  snprintf(g_work, sizeof g_work, "%s", argv[2]);
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", g_work, g_work);
  if (system(cmd) != 0) return 1;
  test_json_string();
  test_tsv_field();
  test_clean_stale();
  test_output_check();
  test_atomic_writes();
  test_checksums();
  return check_done("rel_output");
}
