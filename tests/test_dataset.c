/* The shard reader on good and deliberately broken files (crafted with the HDF5 API), shard ranges, and
 * the synthetic dataset: reproducibility, thread independence, balance, anatomy, non-trivial classes. */
#include <hdf5.h>
#include <omp.h>
#include <string.h>

#include "check.h"
#include "dataset.h"
#include "h5util.h"
#include "pack.h"

static char work[4096];

static const char *wp(const char *name) {
  static char buf[32][4200];
  static int k = 0;
  k = (k + 1) % 32;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work, name);
  return buf[k];
}

typedef struct {
  int images_float, images_rank2, labels_n, label_bad, no_labels, no_paths, no_format, attr_h;
} craft;

/* A dataset file with /train: 12 images 4x5, labels i%2, written with the raw HDF5 API. */
static void write_crafted(const char *path, craft c) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const char *classes[2] = {"NORMAL", "PNEUMONIA"};
  if (!c.no_format) xd_h5_attr_write_str(f, "format", "xray-dp-dataset");
  xd_h5_attr_write_int(f, "version", 1);
  xd_h5_attr_write_strs(f, "class_names", classes, 2);
  xd_h5_attr_write_int(f, "height", c.attr_h ? c.attr_h : 4);
  xd_h5_attr_write_int(f, "width", 5);
  xd_h5_attr_write_int(f, "channels", 1);
  xd_h5_attr_write_str(f, "source", "crafted");
  hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  uint8_t img[12 * 20], lab[12];
  float fimg[12 * 20];
  for (int i = 0; i < 240; i++) fimg[i] = img[i] = (uint8_t)(i % 251);
  for (int i = 0; i < 12; i++) lab[i] = (uint8_t)(i % 2);
  if (c.label_bad) lab[7] = 5;
  hsize_t d3[3] = {12, 4, 5}, d2[2] = {12, 20};
  hid_t s = c.images_rank2 ? H5Screate_simple(2, d2, NULL) : H5Screate_simple(3, d3, NULL);
  hid_t ds = H5Dcreate2(g, "images", c.images_float ? H5T_IEEE_F32LE : H5T_STD_U8LE, s, H5P_DEFAULT, H5P_DEFAULT,
                        H5P_DEFAULT);
  H5Dwrite(ds, c.images_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT,
           c.images_float ? (void *)fimg : (void *)img);
  H5Dclose(ds);
  H5Sclose(s);
  if (!c.no_labels) {
    hsize_t n[1] = {(hsize_t)(c.labels_n ? c.labels_n : 12)};
    s = H5Screate_simple(1, n, NULL);
    ds = H5Dcreate2(g, "labels", H5T_STD_U8LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, lab);
    H5Dclose(ds);
    H5Sclose(s);
  }
  if (!c.no_paths) {
    const char *paths[12];
    char names[12][24]; /* room for any int, so -Wformat-truncation stays quiet */
    for (int i = 0; i < 12; i++) {
      snprintf(names[i], sizeof names[i], "img%02d.png", i);
      paths[i] = names[i];
    }
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hsize_t n[1] = {12};
    s = H5Screate_simple(1, n, NULL);
    ds = H5Dcreate2(g, "paths", t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, paths);
    H5Dclose(ds);
    H5Sclose(s);
    H5Tclose(t);
  }
  H5Gclose(g);
  H5Fclose(f);
}

static void expect_open_error(const char *name, craft c, const char *split, const char *want) {
  const char *path = wp(name);
  write_crafted(path, c);
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  CHECK_MSG(xd_dataset_open(&d, path, split, &e) == -1, "%s opened", name);
  CHECK_MSG(strstr(e.msg, path) == e.msg, "%s: message does not start with the file: %s", name, e.msg);
  CHECK_MSG(strstr(e.msg, want) != NULL, "%s: expected '%s' in: %s", name, want, e.msg);
  CHECK_MSG(strchr(e.msg, '\n') == NULL, "%s: not one line", name);
  CHECK(d == NULL);
}

static void test_reader_good(void) {
  const char *path = wp("good.h5");
  craft c = {0};
  write_crafted(path, c);
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  CHECK_MSG(xd_dataset_open(&d, path, "train", &e) == 0, "%s", e.msg);
  if (!d) return;
  const xd_dataset_info *in = xd_dataset_get_info(d);
  CHECK(in->n == 12 && in->height == 4 && in->width == 5 && in->channels == 1 && in->nclasses == 2);
  CHECK(!strcmp(in->class_names[1], "PNEUMONIA") && !strcmp(in->source, "crafted"));
  uint8_t u[5 * 20], lab[5];
  float f[5 * 20];
  CHECK(xd_dataset_read_u8(d, 3, 8, u, lab, &e) == 0);
  int ok = 1;
  for (int i = 0; i < 100; i++) ok &= u[i] == (uint8_t)((60 + i) % 251);
  for (int i = 0; i < 5; i++) ok &= lab[i] == (3 + i) % 2;
  CHECK(ok);
  CHECK(xd_dataset_read_f32(d, 3, 8, f, NULL, &e) == 0);
  ok = 1;
  for (int i = 0; i < 100; i++) ok &= f[i] == (float)u[i] / 255.0f;
  CHECK(ok);
  CHECK(f[0] >= 0.0f && f[99] <= 1.0f);
  char p[64];
  CHECK(xd_dataset_read_path(d, 11, p, sizeof p, &e) == 0 && !strcmp(p, "img11.png"));
  CHECK(xd_dataset_read_u8(d, 10, 13, u, lab, &e) == -1 && strstr(e.msg, "range") != NULL);
  CHECK(xd_dataset_read_u8(d, 5, 5, u, lab, &e) == 0);
  xd_dataset_close(d);
  char names[3][8];
  CHECK(xd_dataset_splits(path, names, &e) == 1 && !strcmp(names[0], "train"));
  CHECK(xd_dataset_has_split(path, "test", &e) == 0);
}

static void test_reader_errors(void) {
  craft c0 = {0}, c;
  c = c0; c.images_float = 1;
  expect_open_error("float.h5", c, "train", "/train/images has the wrong dtype (need uint8)");
  c = c0; c.label_bad = 1;
  expect_open_error("label.h5", c, "train", "/train/labels[7] = 5 is out of range (2 classes)");
  c = c0; c.labels_n = 10;
  expect_open_error("nmismatch.h5", c, "train", "/train/labels has 10 rows but /train/images has 12");
  c = c0; c.no_labels = 1;
  expect_open_error("nolabels.h5", c, "train", "missing dataset /train/labels");
  c = c0; c.no_paths = 1;
  expect_open_error("nopaths.h5", c, "train", "missing dataset /train/paths");
  c = c0; c.images_rank2 = 1;
  expect_open_error("rank.h5", c, "train", "/train/images has rank 2 (need 3)");
  c = c0; c.attr_h = 7;
  expect_open_error("shape.h5", c, "train", "root attributes say 7x5");
  c = c0; c.no_format = 1;
  expect_open_error("noformat.h5", c, "train", "not an xray-dp dataset");
  expect_open_error("nosplit.h5", c0, "val", "no split 'val'");
  /* not HDF5, missing file */
  const char *txt = wp("text.h5");
  FILE *f = fopen(txt, "w");
  fputs("just some text, long enough to look like a file\n", f);
  fclose(f);
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  CHECK(xd_dataset_open(&d, txt, "train", &e) == -1 && strstr(e.msg, "not an HDF5 file") && strstr(e.msg, txt));
  CHECK(xd_dataset_open(&d, wp("missing.h5"), "train", &e) == -1 && strstr(e.msg, "No such file") &&
        strstr(e.msg, "missing.h5"));
  CHECK(xd_dataset_splits(txt, (char(*)[8])NULL, &e) == -1);
}

static void test_shard_range(void) {
  int ok = 1;
  for (int64_t n = 0; n < 40; n++)
    for (int r = 1; r <= 7; r++) {
      int64_t prev = 0, lo = n, hi = 0;
      for (int k = 0; k < r; k++) {
        int64_t a, b;
        xd_shard_range(n, k, r, &a, &b);
        ok &= a == prev && b >= a;
        prev = b;
        lo = b - a < lo ? b - a : lo;
        hi = b - a > hi ? b - a : hi;
      }
      ok &= prev == n && hi - lo <= 1;
    }
  CHECK(ok);
  int64_t a, b;
  xd_shard_range(10, 0, 4, &a, &b);
  CHECK(a == 0 && b == 3);
  xd_shard_range(10, 3, 4, &a, &b);
  CHECK(a == 8 && b == 10);
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

static uint8_t *read_split(const char *path, const char *split, int64_t *n, uint8_t **labels) {
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  if (xd_dataset_open(&d, path, split, &e) != 0) {
    fprintf(stderr, "%s\n", e.msg);
    return NULL;
  }
  const xd_dataset_info *in = xd_dataset_get_info(d);
  *n = in->n;
  uint8_t *img = malloc((size_t)in->n * in->height * in->width + 1);
  *labels = malloc((size_t)in->n + 1);
  if (xd_dataset_read_u8(d, 0, in->n, img, *labels, &e) != 0) fprintf(stderr, "%s\n", e.msg);
  xd_dataset_close(d);
  return img;
}

static void test_synth(void) {
  xd_synth_opts o = {.n = 200, .size = 32, .seed = 5};
  xd_err e = {{0}};
  const char *a = wp("s_a.h5"), *b = wp("s_b.h5"), *c = wp("s_c.h5");
  omp_set_num_threads(1);
  CHECK_MSG(xd_synth(a, &o, &e) == 0, "%s", e.msg);
  omp_set_num_threads(2);
  CHECK_MSG(xd_synth(b, &o, &e) == 0, "%s", e.msg);
  CHECK_MSG(files_equal(a, b), "synth differs between 1 and 2 threads");
  o.seed = 6;
  CHECK(xd_synth(c, &o, &e) == 0);
  static const char *splits[3] = {"train", "val", "test"};
  const int64_t expect_n[3] = {140, 30, 30};
  for (int s = 0; s < 3; s++) {
    int64_t na = 0, nc = 0;
    uint8_t *la = NULL, *lc = NULL;
    uint8_t *ia = read_split(a, splits[s], &na, &la), *ic = read_split(c, splits[s], &nc, &lc);
    CHECK(ia && ic && na == expect_n[s] && nc == na);
    if (ia && ic && na == nc) {
      CHECK(memcmp(ia, ic, (size_t)na * 32 * 32) != 0);
      int64_t pos = 0;
      for (int64_t i = 0; i < na; i++) pos += la[i];
      CHECK_MSG(pos * 2 == na, "%s: %lld of %lld PNEUMONIA", splits[s], (long long)pos, (long long)na);
    }
    free(ia);
    free(ic);
    free(la);
    free(lc);
  }
  xd_dataset *d = NULL;
  CHECK(xd_dataset_open(&d, a, "val", &e) == 0);
  if (d) {
    char p[128];
    uint8_t lab;
    CHECK(xd_dataset_read_path(d, 3, p, sizeof p, &e) == 0);
    CHECK(xd_dataset_read_u8(d, 3, 4, NULL, &lab, &e) == 0);
    char want[128];
    snprintf(want, sizeof want, "synth/val/%s/000003.png", lab ? "PNEUMONIA" : "NORMAL");
    CHECK_MSG(!strcmp(p, want), "%s vs %s", p, want);
    CHECK(!strcmp(xd_dataset_get_info(d)->source, "synth seed=5 n=200"));
    xd_dataset_close(d);
  }
  CHECK(xd_synth(wp("bad.h5"), &(xd_synth_opts){.n = 3, .size = 32, .seed = 1}, &e) == -1);
}

/* The phantoms look like chests (dark air outside at the top corners, mediastinum brighter than the lung
 * fields) and the classes are not separable by overall brightness. */
static void test_synth_content(void) {
  enum { S = 64, N = 200 };
  static uint8_t img[S * S];
  double med = 0, lung = 0, corner = 0, mean[N];
  int label[N];
  for (int i = 0; i < N; i++) {
    label[i] = i % 2;
    xd_synth_image(3, i, label[i], S, img);
    double m = 0;
    for (int k = 0; k < S * S; k++) m += img[k];
    mean[i] = m / (S * S);
    for (int y = 22; y < 34; y++) {
      med += img[y * S + S / 2] + img[y * S + S / 2 - 1];
      lung += img[y * S + 16] + img[y * S + 47];
    }
    for (int y = 0; y < 4; y++)
      for (int x = 0; x < 4; x++) corner += img[y * S + x] + img[y * S + S - 1 - x];
  }
  med /= N * 24.0;
  lung /= N * 24.0;
  corner /= N * 32.0;
  CHECK_MSG(med > lung + 30, "mediastinum %.1f vs lungs %.1f", med, lung);
  CHECK_MSG(corner < 60 && corner < lung, "corners %.1f lungs %.1f", corner, lung);
  /* best single threshold on the mean intensity */
  double best = 0;
  for (int t = 0; t < N; t++) {
    int correct = 0;
    for (int i = 0; i < N; i++) correct += (mean[i] > mean[t]) == label[i];
    double acc = (double)correct / N;
    if (acc < 0.5) acc = 1 - acc;
    if (acc > best) best = acc;
  }
  CHECK_MSG(best < 0.8, "classes separable by mean brightness alone: %.2f", best);
  printf("synth: mediastinum %.1f lungs %.1f corners %.1f; mean-brightness threshold accuracy %.2f\n", med, lung,
         corner, best);
}

int main(int argc, char **argv) {
  snprintf(work, sizeof work, "%s", argc > 2 ? argv[2] : "/tmp/xd_test_dataset");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
  if (system(cmd) != 0) return 1;
  xd_err e;
  if (xd_mkdir_p(work, &e) != 0) return 1;
  test_reader_good();
  test_reader_errors();
  test_shard_range();
  test_synth();
  test_synth_content();
  return check_done("dataset");
}
