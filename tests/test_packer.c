/* xd_pack on generated folders: pixels and labels of every image, class mapping, stratified seeded
 * carve-out, thread-count independence, bad files skipped and counted, clean failure. */
#include <dirent.h>
#include <hdf5.h>
#include <string.h>

#include "check.h"
#include "dataset.h"
#include "img_fixtures.h"
#include "pack.h"

static char work[4096];

static const char *wp(const char *fmt, const char *a) {
  static char buf[32][5200];
  static int k = 0;
  k = (k + 1) % 32;
  char rel[1024];
  snprintf(rel, sizeof rel, fmt, a);
  snprintf(buf[k], sizeof buf[k], "%s/%s", work, rel);
  return buf[k];
}

static void mkdirs(const char *path) {
  xd_err e;
  CHECK(xd_mkdir_p(path, &e) == 0);
}

/* Image files named v<value>_<n>.<ext>: constant gray <value> (or an RGB triple with that luma). */
static void write_tree_files(const char *dir, int first_value, int count, int salt) {
  static const char *ext[] = {"png", "jpg", "bmp"};
  mkdirs(dir);
  for (int i = 0; i < count; i++) {
    int v = first_value + 3 * i;
    char p[4400];
    int kind = (i + salt) % 3, w = 20 + 7 * ((i + salt) % 5), h = 17 + 11 * ((i * 3 + salt) % 4);
    snprintf(p, sizeof p, "%s/v%03d_%d.%s", dir, v, i, ext[kind]);
    uint8_t px[3] = {(uint8_t)v, (uint8_t)v, (uint8_t)v};
    CHECK(fx_write_const(p, w, h, (i % 2) ? 3 : 1, px) == 0);
  }
}

static xd_pack_opts opts(int threads, uint64_t seed, double vf) {
  xd_pack_opts o = {.size = 12, .val_fraction = vf, .seed = seed, .threads = threads, .progress = 0, .log = NULL};
  return o;
}

static int files_equal(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb) same = 0;
    if (ca == EOF || cb == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

/* Every image: label matches its class folder, pixels all equal the value in its file name. */
static void check_split_content(const char *h5, const char *split, int64_t expect_n) {
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  CHECK_MSG(xd_dataset_open(&d, h5, split, &e) == 0, "%s", e.msg);
  if (!d) return;
  const xd_dataset_info *in = xd_dataset_get_info(d);
  CHECK(in->n == expect_n);
  CHECK(in->nclasses == 2 && !strcmp(in->class_names[0], "NORMAL") && !strcmp(in->class_names[1], "PNEUMONIA"));
  CHECK(in->height == 12 && in->width == 12 && in->channels == 1);
  uint8_t img[144], lab;
  char path[512], prev[512] = "";
  int bad_px = 0, bad_lab = 0, unsorted = 0;
  for (int64_t i = 0; i < in->n; i++) {
    CHECK(xd_dataset_read_u8(d, i, i + 1, img, &lab, &e) == 0);
    CHECK(xd_dataset_read_path(d, i, path, sizeof path, &e) == 0);
    const char *base = strrchr(path, '/');
    int v = base ? atoi(base + 2) : -1;
    int is_pn = strstr(path, "PNEUMONIA/") != NULL;
    bad_lab += lab != is_pn;
    int tol = strstr(path, ".jpg") ? 2 : 0;
    for (int k = 0; k < 144; k++) bad_px += abs(img[k] - v) > tol;
    unsorted += strcmp(prev, path) >= 0;
    snprintf(prev, sizeof prev, "%s", path);
  }
  CHECK_MSG(bad_lab == 0, "%s/%s: %d wrong labels", h5, split, bad_lab);
  CHECK_MSG(bad_px == 0, "%s/%s: %d wrong pixels", h5, split, bad_px);
  CHECK_MSG(unsorted == 0, "%s/%s: paths not sorted", h5, split);
  xd_dataset_close(d);
}

static void test_split_layout(void) {
  const char *src = wp("split_src", "");
  write_tree_files(wp("split_src/train/NORMAL", ""), 10, 9, 0);
  write_tree_files(wp("split_src/train/PNEUMONIA", ""), 11, 12, 1);
  write_tree_files(wp("split_src/test/NORMAL", ""), 100, 3, 2);
  write_tree_files(wp("split_src/test/PNEUMONIA", ""), 101, 4, 0);
  xd_pack_opts o = opts(2, 1, 0.2);
  xd_pack_summary s;
  xd_err e = {{0}};
  const char *out = wp("split.h5", "");
  CHECK_MSG(xd_pack(src, out, &o, &s, &e) == 0, "%s", e.msg);
  /* round(0.2*9)=2 NORMAL and round(0.2*12)=2 PNEUMONIA carved into val */
  CHECK(s.written[0] == 17 && s.written[1] == 4 && s.written[2] == 7 && s.skipped == 0);
  CHECK(s.per_class[1][0] == 2 && s.per_class[1][1] == 2);
  check_split_content(out, "train", 17);
  check_split_content(out, "val", 4);
  check_split_content(out, "test", 7);
  xd_err e2;
  CHECK(xd_dataset_has_split(out, "val", &e2) == 1);
}

static void read_val_paths(const char *h5, char *joined, size_t n) {
  xd_dataset *d = NULL;
  xd_err e;
  joined[0] = 0;
  if (xd_dataset_open(&d, h5, "val", &e) != 0) return;
  char p[512];
  for (int64_t i = 0; i < xd_dataset_get_info(d)->n; i++) {
    if (xd_dataset_read_path(d, i, p, sizeof p, &e) == 0)
      snprintf(joined + strlen(joined), n - strlen(joined), "%s;", p);
  }
  xd_dataset_close(d);
}

static void test_stratified_seeded(void) {
  const char *src = wp("strat_src", "");
  write_tree_files(wp("strat_src/NORMAL", ""), 1, 40, 0);
  write_tree_files(wp("strat_src/PNEUMONIA", ""), 2, 60, 1);
  xd_pack_summary s;
  xd_err e = {{0}};
  const char *a = wp("strat_a.h5", ""), *b = wp("strat_b.h5", ""), *c = wp("strat_c.h5", "");
  xd_pack_opts o1 = opts(1, 7, 0.25), o2 = opts(2, 7, 0.25), o3 = opts(2, 8, 0.25);
  CHECK_MSG(xd_pack(src, a, &o1, &s, &e) == 0, "%s", e.msg);
  CHECK(s.per_class[0][0] == 30 && s.per_class[0][1] == 45);
  CHECK(s.per_class[1][0] == 10 && s.per_class[1][1] == 15);
  CHECK(s.written[2] == 0);
  check_split_content(a, "train", 75);
  check_split_content(a, "val", 25);
  CHECK_MSG(xd_pack(src, b, &o2, &s, &e) == 0, "%s", e.msg);
  CHECK_MSG(files_equal(a, b), "threads 1 and 2 give different files");
  CHECK_MSG(xd_pack(src, c, &o3, &s, &e) == 0, "%s", e.msg);
  CHECK(s.per_class[1][0] == 10 && s.per_class[1][1] == 15);
  static char pa[8192], pc[8192];
  read_val_paths(a, pa, sizeof pa);
  read_val_paths(c, pc, sizeof pc);
  CHECK(strlen(pa) > 0 && strcmp(pa, pc) != 0);
  CHECK(!files_equal(a, c));
  /* val fraction 0: no val at all */
  xd_pack_opts o0 = opts(1, 7, 0.0);
  CHECK(xd_pack(src, c, &o0, &s, &e) == 0);
  CHECK(s.written[0] == 100 && s.written[1] == 0);
  xd_err e2;
  CHECK(xd_dataset_has_split(c, "val", &e2) == 0);
}

static void test_tiny_val_merged(void) {
  write_tree_files(wp("tiny_src/train/NORMAL", ""), 1, 30, 0);
  write_tree_files(wp("tiny_src/train/PNEUMONIA", ""), 2, 30, 1);
  write_tree_files(wp("tiny_src/val/NORMAL", ""), 200, 1, 0);
  write_tree_files(wp("tiny_src/val/PNEUMONIA", ""), 201, 1, 0);
  xd_pack_summary s;
  xd_err e = {{0}};
  xd_pack_opts o = opts(2, 1, 0.1);
  const char *out = wp("tiny.h5", "");
  CHECK_MSG(xd_pack(wp("tiny_src", ""), out, &o, &s, &e) == 0, "%s", e.msg);
  /* 2 val files < 5% of 60: merged (31 per class), then round(3.1) = 3 per class carved */
  CHECK(s.written[0] + s.written[1] == 62);
  CHECK(s.per_class[1][0] == 3 && s.per_class[1][1] == 3);
  check_split_content(out, "train", 56);
  /* a big enough val is kept as it is */
  write_tree_files(wp("big_src/train/NORMAL", ""), 1, 10, 0);
  write_tree_files(wp("big_src/train/PNEUMONIA", ""), 2, 10, 1);
  write_tree_files(wp("big_src/val/NORMAL", ""), 200, 2, 0);
  write_tree_files(wp("big_src/val/PNEUMONIA", ""), 201, 1, 0);
  CHECK_MSG(xd_pack(wp("big_src", ""), out, &o, &s, &e) == 0, "%s", e.msg);
  CHECK(s.written[0] == 20 && s.written[1] == 3);
  check_split_content(out, "val", 3);
}

static void test_bad_files_skipped(void) {
  write_tree_files(wp("bad_src/NORMAL", ""), 50, 4, 0);
  write_tree_files(wp("bad_src/PNEUMONIA", ""), 51, 4, 1);
  uint8_t px[3] = {9, 9, 9};
  CHECK(fx_write_const(wp("bad_src/PNEUMONIA/big.jpg", ""), 200, 200, 3, px) == 0);
  CHECK(fx_write_const(wp("bad_src/NORMAL/big.bmp", ""), 200, 200, 3, px) == 0);
  CHECK(fx_write_const(wp("bad_src/NORMAL/big.png", ""), 200, 200, 3, px) == 0);
  CHECK(fx_truncate_copy(wp("bad_src/PNEUMONIA/big.jpg", ""), wp("bad_src/PNEUMONIA/t1.jpg", ""), 0.5) == 0);
  CHECK(fx_truncate_copy(wp("bad_src/NORMAL/big.bmp", ""), wp("bad_src/NORMAL/t2.bmp", ""), 0.5) == 0);
  CHECK(fx_truncate_copy(wp("bad_src/NORMAL/big.png", ""), wp("bad_src/NORMAL/t3.png", ""), 0.5) == 0);
  remove(wp("bad_src/PNEUMONIA/big.jpg", ""));
  remove(wp("bad_src/NORMAL/big.bmp", ""));
  remove(wp("bad_src/NORMAL/big.png", ""));
  CHECK(fx_write_bytes(wp("bad_src/NORMAL/zero.png", ""), "", 0) == 0);
  CHECK(fx_write_bytes(wp("bad_src/PNEUMONIA/text.jpeg", ""), "hello\n", 6) == 0);
  CHECK(fx_write_png_header(wp("bad_src/PNEUMONIA/huge.png", ""), 100000, 100000) == 0);
  CHECK(fx_write_bytes(wp("bad_src/NORMAL/.hidden", ""), "x", 1) == 0); /* ignored, not counted */
  const char *logp = wp("bad.log", "");
  FILE *log = fopen(logp, "w");
  xd_pack_opts o = opts(2, 1, 0.0);
  o.log = log;
  xd_pack_summary s;
  xd_err e = {{0}};
  const char *out = wp("bad.h5", "");
  CHECK_MSG(xd_pack(wp("bad_src", ""), out, &o, &s, &e) == 0, "%s", e.msg);
  fclose(log);
  CHECK(s.skipped == 6 && s.written[0] == 8);
  check_split_content(out, "train", 8);
  static char text[16384];
  FILE *f = fopen(logp, "r");
  size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f) fclose(f);
  text[n] = 0;
  const char *want[] = {"t1.jpg: truncated JPEG", "t2.bmp: truncated BMP", "t3.png: corrupt", "zero.png: zero-byte",
                        "text.jpeg: not a supported image", "huge.png: absurd dimensions"};
  for (int i = 0; i < 6; i++) CHECK_MSG(strstr(text, want[i]) != NULL, "log lacks '%s':\n%s", want[i], text);
  int lines = 0;
  for (char *p = text; (p = strstr(p, "skip ")) != NULL; p++) lines++;
  CHECK(lines == 6);
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) n += de->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static void test_failures(void) {
  mkdirs(wp("none_src/NORMAL", ""));
  mkdirs(wp("none_out", ""));
  CHECK(fx_write_bytes(wp("none_src/NORMAL/a.png", ""), "", 0) == 0);
  CHECK(fx_write_bytes(wp("none_src/NORMAL/b.jpg", ""), "junk", 4) == 0);
  xd_pack_opts o = opts(2, 1, 0.1);
  xd_pack_summary s;
  xd_err e = {{0}};
  char out[5200]; /* wp() reuses its buffers */
  snprintf(out, sizeof out, "%s", wp("none_out/x.h5", ""));
  CHECK(xd_pack(wp("none_src", ""), out, &o, &s, &e) == -1);
  CHECK_MSG(strstr(e.msg, "no readable image") != NULL, "%s", e.msg);
  CHECK(s.skipped == 2);
  CHECK(!xd_file_exists(out));
  CHECK_MSG(count_entries(wp("none_out", "")) == 0, "temporary file left behind");
  CHECK(xd_pack(wp("does_not_exist", ""), out, &o, &s, &e) == -1);
  CHECK(strstr(e.msg, "does_not_exist") != NULL);
  /* inconsistent classes across splits */
  write_tree_files(wp("incons/train/NORMAL", ""), 1, 2, 0);
  write_tree_files(wp("incons/train/PNEUMONIA", ""), 1, 2, 0);
  write_tree_files(wp("incons/test/NORMAL", ""), 1, 2, 0);
  write_tree_files(wp("incons/test/COVID", ""), 1, 2, 0);
  CHECK(xd_pack(wp("incons", ""), out, &o, &s, &e) == -1);
  CHECK_MSG(strstr(e.msg, "differ") != NULL, "%s", e.msg);
  CHECK(!xd_file_exists(out) && count_entries(wp("none_out", "")) == 0);
  /* output directory missing */
  write_tree_files(wp("ok_src/A", ""), 1, 2, 0);
  CHECK(xd_pack(wp("ok_src", ""), wp("no_such_dir/x.h5", ""), &o, &s, &e) == -1);
}

int main(int argc, char **argv) {
  snprintf(work, sizeof work, "%s", argc > 2 ? argv[2] : "/tmp/xd_test_packer");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
  if (system(cmd) != 0) return 1;
  mkdirs(work);
  test_split_layout();
  test_stratified_seeded();
  test_tiny_val_merged();
  test_bad_files_skipped();
  test_failures();
  return check_done("packer");
}
