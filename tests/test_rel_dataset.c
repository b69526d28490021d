/* Hostile dataset files (issue 9, items 3 and 4 for readers; checksums of dataset files): each crafted
 * file is refused by xd_dataset_open within a second, in one line naming the file and the problem, before
 * anything big is allocated:
 *  - a 10 KB file declaring 10^10 images (chunked or contiguous, nothing stored), a dataset with chunks
 *    missing, labels stored nowhere;
 *  - counts that disagree (labels, paths vs images), height/width attributes vs the images' dataspace,
 *    class ids out of range, attributes of the wrong type (height = 1e300), overlong or non-terminated
 *    class names, more than 16 classes, empty names;
 *  - structure: a split that is a dataset, images that are a group, soft and external links, raw data in
 *    an external file (a FIFO: must not block), chunks above the memory limit, labels above it;
 *  - a FIFO or a directory given as the file;
 *  - files written with Fletcher-32: a flipped byte in the images or labels is reported as
 *    "checksum mismatch in /train/images (file corrupted ...)".
 * `test_rel_dataset --make DIR` only writes the crafted files (DIR/bad.tsv: name and expected words) for
 * tests/test_rel_dataset.sh, which runs `xray-dp info` on them. */
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "h5util.h"

static char work[4096];

static const char *wp(const char *name) {
  static char buf[32][4200];
  static int k = 0;
  k = (k + 1) % 32;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work, name);
  return buf[k];
}

typedef struct {
  hsize_t n;             /* images declared (12 by default) */
  hsize_t stored;        /* images written (n by default) */
  int none;              /* write no images, labels or paths at all */
  int contiguous;        /* images without chunks */
  hsize_t chunk;         /* images per chunk (4 by default) */
  int deflate;           /* compress images and labels (big declared files stay small) */
  int fletcher;          /* Fletcher-32 on images, labels and paths */
  hsize_t labels_n, paths_n;
  int label_bad, attr_h;
  double attr_h_float;   /* height written as a float */
  int long_class, many_classes, empty_class, junk_class, ctrl_class;
  int images_group, train_dataset, images_soft, images_ext_link, images_ext_storage, labels_unwritten;
  hsize_t chunk_h, chunk_w; /* image size (4x5 by default) */
} craft;

static void attr_f64(hid_t loc, const char *name, double v) {
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(loc, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
  H5Aclose(a);
  H5Sclose(s);
}

/* Writes a 1-D or 3-D dataset: `stored` rows of data (zeros but for labels), chunked unless contiguous. */
static void write_rows(hid_t g, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims,
                       hsize_t chunk_rows, int contiguous, int deflate, int fletcher, hsize_t stored, const void *data) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (!contiguous) {
    hsize_t c[3] = {chunk_rows, rank > 1 ? dims[1] : 0, rank > 2 ? dims[2] : 0};
    H5Pset_chunk(dcpl, rank, c);
    if (deflate) H5Pset_deflate(dcpl, 6);
    if (fletcher) H5Pset_fletcher32(dcpl);
  }
  hid_t s = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(g, name, ftype, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (stored > 0 && data) {
    hsize_t start[3] = {0, 0, 0}, count[3] = {stored, rank > 1 ? dims[1] : 0, rank > 2 ? dims[2] : 0};
    hid_t ms = H5Screate_simple(rank, count, NULL);
    H5Sselect_hyperslab(s, H5S_SELECT_SET, start, NULL, count, NULL);
    H5Dwrite(d, mtype, ms, s, H5P_DEFAULT, data);
    H5Sclose(ms);
  }
  H5Dclose(d);
  H5Sclose(s);
  H5Pclose(dcpl);
}

/* A dataset file with /train (12 images 4x5 by default), written with the raw HDF5 API. */
static void write_crafted(const char *path, craft c) {
  hsize_t n = c.n ? c.n : 12, H = c.chunk_h ? c.chunk_h : 4, Wd = c.chunk_w ? c.chunk_w : 5;
  hsize_t stored = c.none ? 0 : c.stored ? c.stored : n;
  if (stored > n) stored = n;
  if (stored > 4000000) stored = 0; /* never write gigabytes */
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  char longname[101];
  memset(longname, 'x', 100);
  longname[100] = 0;
  const char *classes[17] = {"NORMAL", "PNEUMONIA", "C2", "C3", "C4", "C5", "C6", "C7", "C8",
                             "C9",     "C10",       "C11", "C12", "C13", "C14", "C15", "C16"};
  if (c.long_class) classes[1] = longname;
  if (c.empty_class) classes[1] = "";
  if (c.ctrl_class) classes[0] = "NOR\tMAL";
  xd_h5_attr_write_str(f, "format", "xray-dp-dataset");
  xd_h5_attr_write_int(f, "version", 1);
  if (c.junk_class) {
    char raw[2][16] = {"NORMAL", "PNEUMONIA"};
    memcpy(raw[0] + 8, "junk", 4);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 16);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hsize_t two[1] = {2};
    hid_t s = H5Screate_simple(1, two, NULL), a = H5Acreate2(f, "class_names", t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, raw);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
  } else {
    xd_h5_attr_write_strs(f, "class_names", classes, c.many_classes ? 17 : 2);
  }
  if (c.attr_h_float != 0) attr_f64(f, "height", c.attr_h_float);
  else xd_h5_attr_write_int(f, "height", c.attr_h ? c.attr_h : (int)H);
  xd_h5_attr_write_int(f, "width", (int)Wd);
  xd_h5_attr_write_int(f, "channels", 1);
  xd_h5_attr_write_str(f, "source", "crafted");
  if (c.train_dataset) {
    hsize_t one[1] = {1};
    write_rows(f, "train", H5T_STD_U8LE, H5T_NATIVE_UCHAR, 1, one, 1, 0, 0, 0, 0, NULL);
    H5Fclose(f);
    return;
  }
  hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  size_t img_bytes = (size_t)(stored * H * Wd);
  uint8_t *img = calloc(img_bytes + 1, 1), *lab = calloc((size_t)stored + 1, 1);
  for (size_t i = 0; i < img_bytes && stored <= 4096; i++) img[i] = (uint8_t)(i % 251);
  for (hsize_t i = 0; i < stored; i++) lab[i] = (uint8_t)(i % 2);
  if (c.label_bad) lab[7] = 5;
  hsize_t d3[3] = {n, H, Wd};
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo", work);
  if (c.images_group) {
    hid_t gg = H5Gcreate2(g, "images", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(gg);
  } else if (c.images_soft) {
    H5Lcreate_soft("/train/labels", g, "images", H5P_DEFAULT, H5P_DEFAULT);
  } else if (c.images_ext_link) {
    H5Lcreate_external(fifo, "/train/images", g, "images", H5P_DEFAULT, H5P_DEFAULT);
  } else if (c.images_ext_storage) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_external(dcpl, fifo, 0, (hsize_t)(n * H * Wd));
    hid_t s = H5Screate_simple(3, d3, NULL), d = H5Dcreate2(g, "images", H5T_STD_U8LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    H5Pclose(dcpl);
  } else {
    write_rows(g, "images", H5T_STD_U8LE, H5T_NATIVE_UCHAR, 3, d3, c.chunk ? c.chunk : 4, c.contiguous, c.deflate,
               c.fletcher, stored, img);
  }
  hsize_t ln[1] = {c.labels_n ? c.labels_n : n};
  hsize_t lstored = stored < ln[0] ? stored : ln[0];
  write_rows(g, "labels", H5T_STD_U8LE, H5T_NATIVE_UCHAR, 1, ln, c.labels_unwritten ? 0 : (ln[0] < 1024 ? ln[0] : c.deflate ? 65536 : 1024),
             c.labels_unwritten, c.deflate, c.fletcher, c.labels_unwritten ? 0 : lstored, lab);
  hsize_t pn[1] = {c.paths_n ? c.paths_n : n};
  hsize_t pstored = pn[0] < stored ? pn[0] : stored;
  if (pstored > 4096) pstored = 0;
  const char **paths = calloc((size_t)pstored + 1, sizeof *paths);
  for (hsize_t i = 0; i < pstored; i++) paths[i] = i % 2 ? "PNEUMONIA/p.png" : "NORMAL/n.png";
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  /* (HDF5 applies no filter to variable-length strings: the paths never have Fletcher-32) */
  write_rows(g, "paths", st, st, 1, pn, pn[0] < 1024 ? pn[0] : 1024, 0, 0, 0, pstored, paths);
  H5Tclose(st);
  free(paths);
  free(img);
  free(lab);
  H5Gclose(g);
  H5Fclose(f);
}

typedef struct {
  const char *name;
  craft c;
  const char *words;
} bad_case;

static const bad_case bad_cases[] = {
    {"images_1e10_chunked", {.n = 10000000000ULL, .stored = 1, .chunk = 1, .labels_n = 0},
     "/train/images declares 10000000000 rows but stores 1 of its 10000000000 chunks"},
    {"images_1e10_contiguous", {.n = 10000000000ULL, .none = 1, .contiguous = 1},
     "/train/images declares 10000000000 rows (200000000000 bytes) but stores only 0 bytes"},
    {"chunks_missing", {.n = 12, .stored = 4, .chunk = 4}, "/train/images declares 12 rows but stores 1 of its 3 chunks"},
    {"labels_unwritten", {.labels_unwritten = 1}, "/train/labels declares 12 rows (12 bytes) but stores only 0 bytes"},
    {"labels_short", {.labels_n = 11}, "/train/labels has 11 rows but /train/images has 12"},
    {"paths_short", {.paths_n = 10}, "/train/paths has 10 rows but /train/images has 12"},
    {"label_out_of_range", {.label_bad = 1}, "/train/labels[7] = 5 is out of range (2 classes)"},
    {"height_mismatch", {.attr_h = 6}, "/train/images has shape [12,4,5] but the root attributes say 6x5"},
    {"height_1e300", {.attr_h_float = 1e300}, "missing or invalid root attribute 'height'"},
    {"class_name_100", {.long_class = 1}, "'class_names' has a name longer than 63 bytes"},
    {"class_name_junk", {.junk_class = 1}, "'class_names' has a name longer than 63 bytes (or not a plain string)"},
    {"classes_17", {.many_classes = 1}, "more than 16 classes in 'class_names'"},
    {"class_name_empty", {.empty_class = 1}, "'class_names' has an empty name (class 1)"},
    {"class_name_tab", {.ctrl_class = 1}, "'class_names' has a name with a control character (class 0)"},
    {"images_is_group", {.images_group = 1}, "/train/images is not a dataset"},
    {"train_is_dataset", {.train_dataset = 1}, "/train is not a group"},
    {"images_soft_link", {.images_soft = 1}, "/train/images is a soft or external link"},
    {"images_external_link_fifo", {.images_ext_link = 1}, "/train/images is a soft or external link"},
    {"images_external_storage_fifo", {.images_ext_storage = 1}, "/train/images keeps its data in external files"},
};
#define NBAD ((int)(sizeof bad_cases / sizeof bad_cases[0]))

/* The file address of the first chunk of dataset ds (its raw bytes). */
static haddr_t chunk_addr(const char *path, const char *ds) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, ds, H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  hsize_t off[3];
  unsigned mask = 0;
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  H5Dget_chunk_info(d, s, 0, off, &mask, &addr, &size);
  H5Sclose(s);
  H5Dclose(d);
  H5Fclose(f);
  return addr;
}

static void flip_byte(const char *from, const char *to, long off) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  int ch;
  long i = 0;
  while (a && b && (ch = fgetc(a)) != EOF) fputc(i++ == off ? ch ^ 0x10 : ch, b);
  if (a) fclose(a);
  if (b) fclose(b);
}

static int make_all(FILE *index) {
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo", work);
  unlink(fifo);
  if (mkfifo(fifo, 0600) != 0) return -1;
  for (int i = 0; i < NBAD; i++) {
    char name[128];
    snprintf(name, sizeof name, "bad_%s.h5", bad_cases[i].name);
    write_crafted(wp(name), bad_cases[i].c);
    if (index) fprintf(index, "%s\t%s\n", name, bad_cases[i].words);
  }
  /* a good file for --mem-limit: 2,000,000 images of 4x5 (compressed: a few hundred KB) */
  write_crafted(wp("big_labels.h5"), (craft){.n = 2000000, .chunk = 4096, .deflate = 1});
  /* chunks of 1.25 MiB */
  write_crafted(wp("big_chunks.h5"), (craft){.n = 70000, .chunk = 65536, .deflate = 1});
  /* a good file with Fletcher-32, and copies with a byte flipped in the first chunk of the images and
   * of the labels */
  write_crafted(wp("fletcher.h5"), (craft){.fletcher = 1});
  haddr_t a = chunk_addr(wp("fletcher.h5"), "/train/images");
  if (a == HADDR_UNDEF) return -1;
  flip_byte(wp("fletcher.h5"), wp("flip_images.h5"), (long)a + 7);
  a = chunk_addr(wp("fletcher.h5"), "/train/labels");
  if (a == HADDR_UNDEF) return -1;
  flip_byte(wp("fletcher.h5"), wp("flip_labels.h5"), (long)a + 2);
  if (index) fprintf(index, "flip_labels.h5\tchecksum mismatch in /train/labels (file corrupted)\n");
  return 0;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void test_crafted(void) {
  CHECK(make_all(NULL) == 0);
  for (int i = 0; i < NBAD; i++) {
    char name[128];
    snprintf(name, sizeof name, "bad_%s.h5", bad_cases[i].name);
    xd_dataset *d = NULL;
    xd_err e = {{0}};
    double t0 = xd_now();
    int rc = xd_dataset_open(&d, wp(name), "train", &e);
    double dt = xd_now() - t0;
    CHECK_MSG(rc == -1, "%s opened", name);
    if (rc == 0) xd_dataset_close(d);
    CHECK_MSG(strstr(e.msg, name) && !strchr(e.msg, '\n') && strstr(e.msg, bad_cases[i].words), "%s: '%s' (expected '%s')",
              name, e.msg, bad_cases[i].words);
    CHECK_MSG(dt < 1.0, "%s took %.2f s", name, dt);
  }
  printf("crafted dataset files: %d refused\n", NBAD);
  CHECK_MSG(file_size(wp("bad_images_1e10_chunked.h5")) < 64 * 1024, "the 10^10 file is %ld bytes",
            file_size(wp("bad_images_1e10_chunked.h5")));
  /* not regular files: refused before anything opens them */
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  double t0 = xd_now();
  CHECK(xd_dataset_open(&d, wp("fifo"), "train", &e) == -1 && strstr(e.msg, "not a regular file (a FIFO)"));
  CHECK(xd_dataset_open(&d, work, "train", &e) == -1 && strstr(e.msg, "not a regular file (a directory)"));
  char names[3][8];
  CHECK(xd_dataset_splits(wp("fifo"), names, &e) == -1 && strstr(e.msg, "a FIFO"));
  CHECK(xd_now() - t0 < 1.0);
  /* the memory budget: 2,000,000 labels are refused under 1 MiB, accepted under the default */
  xd_mem_limit_set((uint64_t)1 << 20);
  CHECK_MSG(xd_dataset_open(&d, wp("big_labels.h5"), "train", &e) == -1 &&
                strstr(e.msg, "big_labels.h5: /train/labels (2000000 labels) needs") &&
                strstr(e.msg, "above the memory limit of 1.0 MiB (--mem-limit)"),
            "%s", e.msg);
  CHECK_MSG(xd_dataset_open(&d, wp("big_chunks.h5"), "train", &e) == -1 &&
                strstr(e.msg, "big_chunks.h5: /train/images has chunks of 1310720 bytes: one chunk needs 1.2 MiB, "
                              "above the memory limit of 1.0 MiB"),
            "%s", e.msg);
  xd_mem_limit_set(0);
  /* under the default budget the labels are read (the file then fails later: its paths were never
   * written, which is refused too) */
  CHECK_MSG(xd_dataset_open(&d, wp("big_labels.h5"), "train", &e) == -1 && !strstr(e.msg, "memory limit") &&
                strstr(e.msg, "/train/paths declares 2000000 rows but stores 0 of its"),
            "%s", e.msg);
}

static void test_fletcher(void) {
  xd_dataset *d = NULL;
  xd_err e = {{0}};
  const char *good = wp("fletcher.h5");
  uint8_t img[12 * 20], lab[12];
  char path[256];
  CHECK_MSG(xd_dataset_open(&d, good, "train", &e) == 0, "%s", e.msg);
  if (d) {
    CHECK(xd_dataset_read_u8(d, 0, 12, img, lab, &e) == 0 && img[21] == 21 && lab[3] == 1);
    CHECK(xd_dataset_read_path(d, 3, path, sizeof path, &e) == 0 && !strcmp(path, "PNEUMONIA/p.png"));
    xd_dataset_close(d);
    d = NULL;
  }
  /* a flipped byte in the first images chunk: open works (labels are fine), the read says checksum */
  CHECK_MSG(xd_dataset_open(&d, wp("flip_images.h5"), "train", &e) == 0, "%s", e.msg);
  if (d) {
    int rc = xd_dataset_read_u8(d, 0, 4, img, NULL, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "flip_images.h5: checksum mismatch in /train/images (file corrupted"), "'%s'", e.msg);
    /* the next chunk is intact */
    CHECK(xd_dataset_read_u8(d, 4, 8, img, NULL, &e) == 0);
    float fimg[4 * 20];
    CHECK(xd_dataset_read_f32(d, 0, 4, fimg, NULL, &e) == -1 && strstr(e.msg, "checksum mismatch in /train/images"));
    xd_dataset_close(d);
    d = NULL;
  }
  /* in the labels: refused at open */
  CHECK(xd_dataset_open(&d, wp("flip_labels.h5"), "train", &e) == -1 &&
        strstr(e.msg, "flip_labels.h5: checksum mismatch in /train/labels (file corrupted)"));
}

int main(int argc, char **argv) {
  H5dont_atexit();
  if (argc == 3 && !strcmp(argv[1], "--make")) {
    snprintf(work, sizeof work, "%s", argv[2]);
    FILE *idx = fopen(wp("bad.tsv"), "w");
    int rc = idx ? make_all(idx) : -1;
    if (idx && fclose(idx) != 0) rc = -1;
    return rc == 0 ? 0 : 1;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: test_rel_dataset FIXTURES WORK | --make DIR\n");
    return 2;
  }
  snprintf(work, sizeof work, "%s", argv[2]);
  xd_err e;
  if (xd_mkdir_p(work, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  test_crafted();
  test_fletcher();
  CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);
  return check_done("rel_dataset");
}
