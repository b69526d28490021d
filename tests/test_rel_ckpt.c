/* Checked checkpoints (issue 9, items 5 and 6 and full disks):
 *  - round trip of a full checkpoint (weights, batchnorm statistics, Adam moments, EMA, state, meta);
 *  - the file is checksummed: every tensor has Fletcher-32, the superblock is version >= 2;
 *  - bit flips: >= 200 seeded single-bit flips across the whole file of a last.h5, a best.h5 and one whose
 *    model description (100 KB) is too long for the checksummed object header; each
 *    flipped file is either refused (-1, one line naming the file) or loads to bitwise the same state and
 *    predictions (XD_FLIP_ALL=1 flips one bit in every byte instead, for a study);
 *  - crafted files with valid checksums but bad values or structure (NaN/Inf weights, negative Adam v or
 *    running variance, threshold NaN or 2, negative counters, wrong types, shapes, links, external
 *    storage on a FIFO, ...): each refused in one line naming the file and the tensor or attribute;
 *  - saving refuses non-finite values (naming the layer) and leaves nothing behind;
 *  - a full disk (a small tmpfs, root only): every fill level either writes the new checkpoint or fails
 *    with "PATH: cannot write checkpoint: No space left on device", removes its temporary and leaves the
 *    previous checkpoint intact;
 *  - FIFO and directory paths are refused without blocking; --schedule values; EMA decay.
 * `test_rel_ckpt --make DIR` only writes a good checkpoint and the crafted bad ones (DIR/bad.tsv lists
 * name and expected words) for tests/test_rel_ckpt.sh, which runs them through the CLI. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "h5util.h"
#include "infer.h"

static char work[4096];

static const char *wp(const char *name) {
  static char buf[32][4200];
  static int k = 0;
  k = (k + 1) % 32;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work, name);
  return buf[k];
}

/* 10 parameter layers (more than HDF5's 8 compact links), every tensor kind */
static const char *model_text =
    "input 1x12x12\n"
    "conv 4 3x3 relu pad=same\n"
    "batchnorm\n"
    "conv 4 3x3 pad=same bias=0\n"
    "batchnorm relu\n"
    "maxpool 2x2\n"
    "conv 6 3x3 relu\n"
    "batchnorm\n"
    "conv 6 1x1 relu\n"
    "flatten\n"
    "dense 8 relu\n"
    "dense 6 relu\n"
    "dense 1 sigmoid\n";

static uint64_t rng_state = 1;
static uint64_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return rng_state >> 17;
}
static float rndf(void) { return (float)(rnd() % 2000000) / 1000000.0f - 1.0f; }

typedef struct {
  xd_model m;
  xd_optimizer o;
  xd_train_state st;
  xd_ckpt_meta meta;
} full;

static int make_full(full *F, uint64_t seed) {
  xd_err e = {{0}};
  memset(F, 0, sizeof *F);
  if (xd_model_build(&F->m, model_text, "test model", &e)) {
    fprintf(stderr, "model: %s\n", e.msg);
    return -1;
  }
  xd_model_init(&F->m, XD_INIT_TORCH, seed);
  rng_state = seed;
  for (size_t i = 0; i < F->m.nbuffers; i++) F->m.buffers[i] = 0.5f + 0.25f * rndf(); /* running var > 0 too */
  xd_opt_config c = xd_opt_defaults(XD_OPT_ADAM, 1e-3f);
  if (xd_opt_alloc(&F->o, &c, F->m.nparams, &e) ||
      xd_opt_ema_init(&F->o, 0.99, F->m.params, F->m.buffers, F->m.nbuffers, &e)) {
    fprintf(stderr, "optimizer: %s\n", e.msg);
    return -1;
  }
  for (size_t i = 0; i < F->m.nparams; i++) {
    F->o.m[i] = 1e-3f * rndf();
    F->o.v[i] = 1e-6f * (1.0f + rndf());
    F->o.ema[i] += 1e-3f * rndf();
  }
  /* the alignment padding between tensors is never saved: keep it zero */
  char *used = calloc(F->m.nparams + 1, 1);
  for (int l = 0; l < F->m.nlayers; l++) {
    const xd_layer *L = &F->m.layers[l];
    if (L->w_n) memset(used + L->w_off, 1, L->w_n);
    if (L->b_n) memset(used + L->b_off, 1, L->b_n);
  }
  for (size_t i = 0; i < F->m.nparams; i++)
    if (!used[i]) F->o.m[i] = F->o.v[i] = F->o.ema[i] = 0;
  free(used);
  F->o.step = 37;
  F->st = (xd_train_state){37, 3, 1, seed, 0.25, 2, 1, 0.375, 1.5, 3, 4, 0.5, 0};
  F->meta.nclasses = 2;
  snprintf(F->meta.class_names[0], XD_CLASS_NAME_MAX, "NORMAL");
  snprintf(F->meta.class_names[1], XD_CLASS_NAME_MAX, "PNEUMONIA");
  snprintf(F->meta.command, sizeof F->meta.command, "xray-dp train --data d.h5 --epochs 5");
  snprintf(F->meta.monitor, sizeof F->meta.monitor, "val_auc");
  snprintf(F->meta.data, sizeof F->meta.data, "d.h5");
  snprintf(F->meta.config, sizeof F->meta.config, "epochs=5\nbatch=4\n");
  F->meta.train_prior = 0.625;
  return 0;
}

static void free_full(full *F) {
  xd_opt_free(&F->o);
  xd_model_free(&F->m);
}

/* Fixed images at the model's input size. */
static uint8_t images[4][144];
static void probs(xd_model *m, float out[4]) {
  xd_workspace ws;
  xd_err e;
  if (xd_workspace_alloc(&ws, m, 4, &e)) {
    fprintf(stderr, "workspace: %s\n", e.msg);
    for (int i = 0; i < 4; i++) out[i] = NAN;
    return;
  }
  xd_infer(m, &ws, 4, &images[0][0], NULL, out, NULL);
  xd_workspace_free(&ws, m);
}

static int same_state(const xd_train_state *a, const xd_train_state *b) {
  return a->step == b->step && a->epoch == b->epoch && a->step_in_epoch == b->step_in_epoch && a->seed == b->seed &&
         !memcmp(&a->best_metric, &b->best_metric, sizeof(double)) && a->best_epoch == b->best_epoch &&
         a->bad_epochs == b->bad_epochs && !memcmp(&a->threshold, &b->threshold, sizeof(double)) &&
         a->part_loss == b->part_loss && a->part_correct == b->part_correct && a->part_count == b->part_count &&
         a->part_seconds == b->part_seconds && a->stopped == b->stopped;
}

static int same_meta(const xd_ckpt_meta *a, const xd_ckpt_meta *b) {
  if (a->nclasses != b->nclasses || strcmp(a->command, b->command) || strcmp(a->monitor, b->monitor) ||
      strcmp(a->data, b->data) || strcmp(a->config, b->config) || a->train_prior != b->train_prior)
    return 0;
  for (int i = 0; i < a->nclasses; i++)
    if (strcmp(a->class_names[i], b->class_names[i])) return 0;
  return 1;
}

/* Loads path completely (weights, state, meta, and with optim the optimizer): 0 and F filled, or -1. */
static int load_full(const char *path, full *F, int optim, xd_err *e) {
  memset(F, 0, sizeof *F);
  if (xd_checkpoint_load(path, &F->m, &F->st, &F->meta, e)) return -1;
  if (!optim) return 0;
  xd_opt_kind kind;
  double ema = 0;
  xd_opt_config c;
  if (xd_checkpoint_optim_info(path, &kind, &ema, e)) goto fail;
  c = xd_opt_defaults(kind, 1e-3f);
  if (xd_opt_alloc(&F->o, &c, F->m.nparams, e)) goto fail;
  if (ema > 0 && xd_opt_ema_init(&F->o, ema, F->m.params, F->m.buffers, F->m.nbuffers, e)) goto fail;
  if (xd_checkpoint_load_optim(path, &F->m, &F->o, e)) goto fail;
  return 0;
fail:
  free_full(F);
  return -1;
}

/* Bitwise the same weights, statistics, state, meta (and optimizer when optim). */
static int same_full(const full *a, const full *b, int optim) {
  if (a->m.nparams != b->m.nparams || a->m.nbuffers != b->m.nbuffers || strcmp(a->m.text, b->m.text)) return 0;
  if (memcmp(a->m.params, b->m.params, a->m.nparams * sizeof(float)) ||
      memcmp(a->m.buffers, b->m.buffers, a->m.nbuffers * sizeof(float)))
    return 0;
  if (!same_state(&a->st, &b->st) || !same_meta(&a->meta, &b->meta)) return 0;
  if (optim && (a->o.step != b->o.step || memcmp(a->o.m, b->o.m, a->m.nparams * sizeof(float)) ||
                memcmp(a->o.v, b->o.v, a->m.nparams * sizeof(float)) || !a->o.ema != !b->o.ema ||
                (a->o.ema && (memcmp(a->o.ema, b->o.ema, a->m.nparams * sizeof(float)) ||
                              memcmp(a->o.ema_buf, b->o.ema_buf, a->m.nbuffers * sizeof(float))))))
    return 0;
  return 1;
}

static int one_line_naming(const char *msg, const char *name) {
  return msg[0] && !strchr(msg, '\n') && strstr(msg, name) != NULL;
}

static int tmp_leftovers(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    if (strstr(de->d_name, ".tmp")) n++;
  if (d) closedir(d);
  return n;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static char *slurp(const char *p, size_t *n) {
  FILE *f = fopen(p, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)len + 1);
  if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
    free(b);
    b = NULL;
  }
  fclose(f);
  *n = (size_t)len;
  return b;
}

static int spit(const char *p, const char *b, size_t n) {
  FILE *f = fopen(p, "wb");
  if (!f) return -1;
  int ok = fwrite(b, 1, n, f) == n;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* ---- round trip and format ---- */

static void test_roundtrip(void) {
  full F, G;
  if (make_full(&F, 11)) {
    CHECK(0);
    return;
  }
  xd_err e = {{0}};
  CHECK_MSG(xd_checkpoint_save(wp("last.h5"), &F.m, &F.o, &F.st, &F.meta, &e) == 0, "%s", e.msg);
  CHECK_MSG(xd_checkpoint_save(wp("best.h5"), &F.m, NULL, &F.st, &F.meta, &e) == 0, "%s", e.msg);
  CHECK(tmp_leftovers(work) == 0);
  CHECK_MSG(load_full(wp("last.h5"), &G, 1, &e) == 0, "%s", e.msg);
  CHECK_MSG(same_full(&F, &G, 1), "last.h5 does not load back bitwise");
  free_full(&G);
  CHECK_MSG(load_full(wp("best.h5"), &G, 0, &e) == 0, "%s", e.msg);
  CHECK_MSG(same_full(&F, &G, 0), "best.h5 does not load back bitwise");
  free_full(&G);
  CHECK(xd_checkpoint_checksummed(wp("last.h5"), &e) == 1);
  /* a weights-only file has no optimizer state, in one line */
  xd_opt_kind k;
  double ema;
  CHECK(xd_checkpoint_optim_info(wp("best.h5"), &k, &ema, &e) == -1 && one_line_naming(e.msg, "best.h5") &&
        strstr(e.msg, "no optimizer state"));
  /* the same state gives the same bytes (no timestamps in the file) */
  CHECK_MSG(xd_checkpoint_save(wp("last2.h5"), &F.m, &F.o, &F.st, &F.meta, &e) == 0, "%s", e.msg);
  size_t n1 = 0, n2 = 0;
  char *a = slurp(wp("last.h5"), &n1), *b = slurp(wp("last2.h5"), &n2);
  CHECK_MSG(a && b && n1 == n2 && !memcmp(a, b, n1), "two saves of the same state differ");
  free(a);
  free(b);
  /* the checksums are really there: every dataset has Fletcher-32, the superblock is v2+ */
  hid_t f = xd_h5_open_read(wp("last.h5"), &e);
  CHECK(f >= 0);
  if (f >= 0) {
    H5F_info2_t fi;
    CHECK(H5Fget_info2(f, &fi) >= 0 && fi.super.version >= 2);
    const char *some[] = {"/params/0/weight", "/params/1/running_var", "/optim/v/9/bias", "/optim/ema/6/running_mean"};
    for (int i = 0; i < 4; i++) {
      hid_t d = H5Dopen2(f, some[i], H5P_DEFAULT);
      CHECK_MSG(d >= 0 && xd_h5_has_fletcher32(d) == 1, "%s has no Fletcher-32", some[i]);
      if (d >= 0) H5Dclose(d);
    }
    H5Fclose(f);
  }
  free_full(&F);
}

/* ---- bit flips ---- */

typedef struct {
  int tried, refused_checksum, refused_other, identical;
} flip_counts;

/* HDF5 objects open (files, groups, datasets, attributes, named types): none may leak on a refusal. */
static long h5_ids(void) { return (long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL); }

static void flip_study(const char *good, const char *flipped, int optim, int nflips, uint64_t seed, flip_counts *c) {
  full ref;
  xd_err e = {{0}};
  if (load_full(good, &ref, optim, &e)) {
    CHECK_MSG(0, "%s", e.msg);
    return;
  }
  float p0[4];
  probs(&ref.m, p0);
  size_t n = 0;
  char *img = slurp(good, &n);
  if (!img) {
    CHECK(0);
    free_full(&ref);
    return;
  }
  int all = getenv("XD_FLIP_ALL") && atoi(getenv("XD_FLIP_ALL")) > 0;
  int count = all ? (int)n : nflips;
  rng_state = seed;
  for (int k = 0; k < count; k++) {
    size_t off = all ? (size_t)k : (size_t)(rnd() % n);
    int bit = (int)(rnd() % 8);
    img[off] ^= (char)(1 << bit);
    CHECK(spit(flipped, img, n) == 0);
    img[off] ^= (char)(1 << bit);
    full G;
    c->tried++;
    long ids0 = h5_ids();
    int lrc = load_full(flipped, &G, optim, &e);
    CHECK_MSG(h5_ids() == ids0, "flip at %zu bit %d: %ld HDF5 identifiers leaked (%s)", off, bit, h5_ids() - ids0,
              lrc ? e.msg : "loaded");
    if (lrc != 0) {
      CHECK_MSG(one_line_naming(e.msg, flipped), "flip at %zu bit %d: message '%s'", off, bit, e.msg);
      if (strstr(e.msg, "checksum mismatch")) c->refused_checksum++;
      else c->refused_other++;
      if (getenv("XD_FLIP_VERBOSE") && !strstr(e.msg, "checksum mismatch"))
        fprintf(stderr, "flip %zu.%d: %s\n", off, bit, e.msg);
      continue;
    }
    float p1[4];
    probs(&G.m, p1);
    int same = same_full(&ref, &G, optim) && !memcmp(p0, p1, sizeof p0);
    CHECK_MSG(same, "flip at byte %zu bit %d of %s was accepted and changed the checkpoint", off, bit, good);
    if (same) c->identical++;
    free_full(&G);
  }
  free(img);
  unlink(flipped);
  free_full(&ref);
}

/* A description over 64 KiB (comments) lives outside the object header: its checksummed copy /model_text
 * must catch flips there. */
static void save_big_text(const char *path) {
  size_t cap = 120000, k = 0;
  char *t = malloc(cap);
  k += (size_t)snprintf(t + k, cap - k, "input 1x12x12\nconv 3 3x3 relu\nflatten\n");
  while (k < 100000) k += (size_t)snprintf(t + k, cap - k, "# a long comment to make the description big, at %zu\n", k);
  snprintf(t + k, cap - k, "dense 1 sigmoid\n");
  xd_model m;
  xd_err e = {{0}};
  xd_train_state st = {0};
  st.threshold = 0.5;
  CHECK_MSG(xd_model_build(&m, t, "big", &e) == 0, "%s", e.msg);
  xd_model_init(&m, XD_INIT_TORCH, 4);
  CHECK_MSG(xd_checkpoint_save(path, &m, NULL, &st, NULL, &e) == 0, "%s", e.msg);
  xd_model_free(&m);
  free(t);
  hid_t f = xd_h5_open_read(path, &e);
  CHECK(f >= 0 && H5Lexists(f, "/model_text", H5P_DEFAULT) > 0);
  if (f >= 0) H5Fclose(f);
}

static void test_flips(void) {
  flip_counts c = {0, 0, 0, 0};
  flip_study(wp("last.h5"), wp("flipped_last.h5"), 1, 240, 20240901, &c);
  flip_study(wp("best.h5"), wp("flipped_best.h5"), 0, 120, 77, &c);
  save_big_text(wp("big_text.h5"));
  flip_study(wp("big_text.h5"), wp("flipped_big.h5"), 0, 100, 5, &c);
  printf("bit flips: %d tried, %d refused by a checksum, %d refused otherwise, %d accepted with bitwise "
         "identical state and predictions\n",
         c.tried, c.refused_checksum, c.refused_other, c.identical);
  CHECK(c.tried >= 200);
  CHECK(c.refused_checksum + c.refused_other + c.identical == c.tried);
  CHECK(c.refused_checksum > c.tried / 2); /* most bytes of a checkpoint are checksummed data */
}

/* ---- crafted files: valid checksums, bad contents ---- */

typedef void (*mutate_fn)(hid_t f, const char *dir);

static void set_f64(hid_t loc, const char *name, double v) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(loc, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
  H5Aclose(a);
  H5Sclose(s);
}
static void set_i64(hid_t loc, const char *name, int64_t v) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(loc, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Sclose(s);
}
static void set_str(hid_t loc, const char *name, const char *v) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  xd_h5_attr_write_str(loc, name, v);
}
static void poke(hid_t f, const char *ds, int index, float v) {
  hid_t d = H5Dopen2(f, ds, H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  hssize_t n = H5Sget_simple_extent_npoints(s);
  float *x = calloc((size_t)n, sizeof(float));
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
  x[index] = v;
  H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
  free(x);
  H5Sclose(s);
  H5Dclose(d);
}
/* Replaces dataset ds by one of the given type/shape, chunked with Fletcher-32 when chunked. */
static void replace(hid_t f, const char *ds, hid_t type, int rank, const hsize_t *dims, int chunked, int write) {
  H5Ldelete(f, ds, H5P_DEFAULT);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (chunked) {
    H5Pset_chunk(dcpl, rank, dims);
    H5Pset_fletcher32(dcpl);
  }
  hid_t s = H5Screate_simple(rank, dims, NULL), d = H5Dcreate2(f, ds, type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (write) {
    double zeros[4096] = {0};
    H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
  }
  H5Dclose(d);
  H5Sclose(s);
  H5Pclose(dcpl);
}

static void m_nan_weight(hid_t f, const char *d) { (void)d; poke(f, "/params/2/weight", 5, NAN); }
static void m_inf_bias(hid_t f, const char *d) { (void)d; poke(f, "/params/0/bias", 1, INFINITY); }
static void m_neg_var(hid_t f, const char *d) { (void)d; poke(f, "/params/1/running_var", 0, -0.5f); }
static void m_nan_mean(hid_t f, const char *d) { (void)d; poke(f, "/params/6/running_mean", 2, NAN); }
static void m_neg_v(hid_t f, const char *d) { (void)d; poke(f, "/optim/v/0/weight", 3, -1e-3f); }
static void m_nan_m(hid_t f, const char *d) { (void)d; poke(f, "/optim/m/9/weight", 0, NAN); }
static void m_inf_ema(hid_t f, const char *d) { (void)d; poke(f, "/optim/ema/0/weight", 0, -INFINITY); }
static void m_thr_nan(hid_t f, const char *d) { (void)d; set_f64(f, "threshold", NAN); }
static void m_thr_2(hid_t f, const char *d) { (void)d; set_f64(f, "threshold", 2.0); }
static void m_step_neg(hid_t f, const char *d) { (void)d; set_i64(f, "step", -5); }
static void m_sie_neg(hid_t f, const char *d) { (void)d; set_i64(f, "step_in_epoch", -1); }
static void m_epoch_neg(hid_t f, const char *d) { (void)d; set_i64(f, "epoch", -2); }
static void m_best_epoch_neg(hid_t f, const char *d) { (void)d; set_i64(f, "best_epoch", -3); }
static void m_bad_epochs_neg(hid_t f, const char *d) { (void)d; set_i64(f, "bad_epochs", -1); }
static void m_stopped_7(hid_t f, const char *d) { (void)d; set_i64(f, "stopped", 7); }
static void m_best_metric_nan(hid_t f, const char *d) { (void)d; set_f64(f, "best_metric", NAN); }
static void m_part_count_neg(hid_t f, const char *d) { (void)d; set_f64(f, "partial_count", -1); }
static void m_prior_15(hid_t f, const char *d) { (void)d; set_f64(f, "train_prior", 1.5); }
static void m_prior_nan(hid_t f, const char *d) { (void)d; set_f64(f, "train_prior", NAN); }
static void m_ema_decay(hid_t f, const char *d) {
  (void)d;
  hid_t g = H5Gopen2(f, "/optim", H5P_DEFAULT);
  set_f64(g, "ema_decay", 1.5);
  H5Gclose(g);
}
static void m_optim_kind(hid_t f, const char *d) {
  (void)d;
  hid_t g = H5Gopen2(f, "/optim", H5P_DEFAULT);
  set_str(g, "kind", "lbfgs");
  H5Gclose(g);
}
static void m_optim_lr_nan(hid_t f, const char *d) {
  (void)d;
  hid_t g = H5Gopen2(f, "/optim", H5P_DEFAULT);
  set_f64(g, "lr", NAN);
  H5Gclose(g);
}
static void m_three_classes(hid_t f, const char *d) {
  (void)d;
  const char *n[3] = {"A", "B", "C"};
  H5Adelete(f, "class_names");
  xd_h5_attr_write_strs(f, "class_names", n, 3);
}
static void m_long_class(hid_t f, const char *d) {
  (void)d;
  char longname[101];
  memset(longname, 'x', 100);
  longname[100] = 0;
  const char *n[2] = {"NORMAL", longname};
  H5Adelete(f, "class_names");
  xd_h5_attr_write_strs(f, "class_names", n, 2);
}
static void m_class_ctrl(hid_t f, const char *d) {
  (void)d;
  const char *n[2] = {"NOR\nMAL", "PNEUMONIA"};
  H5Adelete(f, "class_names");
  xd_h5_attr_write_strs(f, "class_names", n, 2);
}
static void m_step_string(hid_t f, const char *d) { (void)d; set_str(f, "step", "12"); }
static void m_thr_array(hid_t f, const char *d) {
  (void)d;
  H5Adelete(f, "threshold");
  hsize_t two[1] = {2};
  double v[2] = {0.5, 0.5};
  hid_t s = H5Screate_simple(1, two, NULL), a = H5Acreate2(f, "threshold", H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, v);
  H5Aclose(a);
  H5Sclose(s);
}
static void m_version_3(hid_t f, const char *d) { (void)d; set_i64(f, "version", 3); }
static void m_channels(hid_t f, const char *d) { (void)d; set_i64(f, "channels", 3); }
static void m_model_garbage(hid_t f, const char *d) { (void)d; set_str(f, "model", "input 1x12x12\nconv 4 3x3 wobble\n"); }
static void m_model_missing(hid_t f, const char *d) { (void)d; H5Adelete(f, "model"); }
static void m_command_long(hid_t f, const char *d) {
  (void)d;
  char *s = malloc(10001);
  memset(s, 'c', 10000);
  s[10000] = 0;
  set_str(f, "command", s);
  free(s);
}
static void m_format_junk(hid_t f, const char *d) {
  (void)d;
  H5Adelete(f, "format");
  /* "xray-dp-checkpoint" then garbage after the terminator */
  char raw[32] = "xray-dp-checkpoint";
  memcpy(raw + 19, "JUNK", 4);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, 24);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, raw);
  H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
}
static void m_shape(hid_t f, const char *d) {
  (void)d;
  hsize_t dims[4] = {4, 1, 3, 2};
  replace(f, "/params/0/weight", H5T_IEEE_F32LE, 4, dims, 1, 1);
}
static void m_int_tensor(hid_t f, const char *d) {
  (void)d;
  hsize_t dims[1] = {4};
  replace(f, "/params/0/bias", H5T_STD_I32LE, 1, dims, 1, 1);
}
static void m_no_fletcher(hid_t f, const char *d) {
  (void)d;
  hsize_t dims[1] = {4};
  replace(f, "/params/0/bias", H5T_IEEE_F32LE, 1, dims, 0, 1);
}
static void m_unwritten(hid_t f, const char *d) {
  (void)d;
  hsize_t dims[1] = {4};
  replace(f, "/params/0/bias", H5T_IEEE_F32LE, 1, dims, 0, 0);
}
static void m_group(hid_t f, const char *d) {
  (void)d;
  H5Ldelete(f, "/params/9/bias", H5P_DEFAULT);
  hid_t g = H5Gcreate2(f, "/params/9/bias", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Gclose(g);
}
static void m_missing(hid_t f, const char *d) { (void)d; H5Ldelete(f, "/params/7/bias", H5P_DEFAULT); }
static void m_soft(hid_t f, const char *d) {
  (void)d;
  H5Ldelete(f, "/params/0/bias", H5P_DEFAULT);
  H5Lcreate_soft("/params/9/bias", f, "/params/0/bias", H5P_DEFAULT, H5P_DEFAULT);
}
static void m_ext_link(hid_t f, const char *d) {
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo", d);
  H5Ldelete(f, "/params/0/bias", H5P_DEFAULT);
  H5Lcreate_external(fifo, "/x", f, "/params/0/bias", H5P_DEFAULT, H5P_DEFAULT);
}
static void m_ext_storage(hid_t f, const char *d) {
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo", d);
  H5Ldelete(f, "/params/0/bias", H5P_DEFAULT);
  hsize_t dims[1] = {4};
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_external(dcpl, fifo, 0, 16);
  hid_t s = H5Screate_simple(1, dims, NULL);
  hid_t ds = H5Dcreate2(f, "/params/0/bias", H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dclose(ds);
  H5Sclose(s);
  H5Pclose(dcpl);
}
static void m_optim_dataset(hid_t f, const char *d) {
  (void)d;
  H5Ldelete(f, "/optim", H5P_DEFAULT);
  hsize_t dims[1] = {4};
  replace(f, "/optim", H5T_IEEE_F32LE, 1, dims, 1, 1);
}

typedef struct {
  const char *name;
  mutate_fn fn;
  int optim; /* refused only once the optimizer state is read (info, --resume) */
  const char *words;
} crafted;

static const crafted bad_files[] = {
    {"nan_weight", m_nan_weight, 0, "/params/2/weight holds NaN (layer 2, line 4 of the model)"},
    {"inf_bias", m_inf_bias, 0, "/params/0/bias holds +Inf (layer 0, line 2 of the model)"},
    {"neg_running_var", m_neg_var, 0, "/params/1/running_var holds a negative value"},
    {"nan_running_mean", m_nan_mean, 0, "/params/6/running_mean holds NaN"},
    {"neg_adam_v", m_neg_v, 1, "/optim/v/0/weight holds a negative value"},
    {"nan_adam_m", m_nan_m, 1, "/optim/m/9/weight holds NaN (layer 9"},
    {"inf_ema", m_inf_ema, 1, "/optim/ema/0/weight holds -Inf"},
    {"threshold_nan", m_thr_nan, 0, "attribute 'threshold' = nan is not in [0, 1]"},
    {"threshold_2", m_thr_2, 0, "attribute 'threshold' = 2 is not in [0, 1]"},
    {"step_neg", m_step_neg, 0, "attribute 'step' = -5 is negative"},
    {"step_in_epoch_neg", m_sie_neg, 0, "attribute 'step_in_epoch' = -1 is negative"},
    {"epoch_neg", m_epoch_neg, 0, "attribute 'epoch' = -2 is negative"},
    {"best_epoch_neg", m_best_epoch_neg, 0, "attribute 'best_epoch' = -3 is negative"},
    {"bad_epochs_neg", m_bad_epochs_neg, 0, "attribute 'bad_epochs' = -1 is negative"},
    {"stopped_7", m_stopped_7, 0, "attribute 'stopped' = 7 is not 0 or 1"},
    {"best_metric_nan", m_best_metric_nan, 0, "attribute 'best_metric' = nan is not finite"},
    {"partial_count_neg", m_part_count_neg, 0, "attribute 'partial_count' = -1"},
    {"train_prior_1.5", m_prior_15, 0, "attribute 'train_prior' = 1.5 is not in (0, 1)"},
    {"train_prior_nan", m_prior_nan, 0, "attribute 'train_prior' = nan"},
    {"ema_decay_1.5", m_ema_decay, 1, "attribute 'ema_decay' of /optim = 1.5 is not in [0, 1)"},
    {"optim_kind", m_optim_kind, 1, "unknown optimizer 'lbfgs'"},
    {"optim_lr_nan", m_optim_lr_nan, 1, "attribute 'lr' of /optim = nan is not finite"},
    {"three_classes", m_three_classes, 0, "attribute 'class_names' has 3 names but the model has 1 output"},
    {"long_class_name", m_long_class, 0, "attribute 'class_names' has a name longer than 63 bytes"},
    {"class_name_newline", m_class_ctrl, 0, "attribute 'class_names' has a name with a control character (class 0)"},
    {"step_string", m_step_string, 0, "attribute 'step' is not an integer"},
    {"threshold_array", m_thr_array, 0, "attribute 'threshold' is not a single value"},
    {"version_3", m_version_3, 0, "checkpoint version 3 is not one this build reads"},
    {"channels_3", m_channels, 0, "attribute 'channels' = 3 but the stored model's input is 1x12x12"},
    {"model_garbage", m_model_garbage, 0, "(stored model):2"},
    {"model_missing", m_model_missing, 0, "checkpoint has no model description"},
    {"command_10k", m_command_long, 0, "attribute 'command' is longer than 4095 bytes"},
    {"format_junk", m_format_junk, 0, "(format attribute is '')"},
    {"wrong_shape", m_shape, 0, "/params/0/weight has shape [4,1,3,2], the stored model needs [4,1,3,3]"},
    {"int_tensor", m_int_tensor, 0, "/params/0/bias does not hold floating-point numbers"},
    {"no_fletcher", m_no_fletcher, 0, "/params/0/bias has no checksum"},
    {"unwritten_tensor", m_unwritten, 0, "/params/0/bias declares 4 rows (16 bytes) but stores only 0 bytes"},
    {"tensor_is_group", m_group, 0, "/params/9/bias is not a dataset"},
    {"missing_tensor", m_missing, 0, "missing dataset /params/7/bias (layer 7, line 9 of the model)"},
    {"soft_link", m_soft, 0, "/params/0/bias is a soft or external link"},
    {"external_link_fifo", m_ext_link, 0, "/params/0/bias is a soft or external link"},
    {"external_storage_fifo", m_ext_storage, 0, "/params/0/bias keeps its data in external files"},
    {"optim_is_dataset", m_optim_dataset, 1, "/optim is not a group"},
};
#define NBAD ((int)(sizeof bad_files / sizeof bad_files[0]))

/* Writes dir/bad_<name>.h5 for every crafted case from the good last.h5 `good` (and the FIFO some need). */
static int make_bad(const char *good, const char *dir, FILE *index) {
  char fifo[4200], p[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  unlink(fifo);
  if (mkfifo(fifo, 0600) != 0) return -1;
  for (int i = 0; i < NBAD; i++) {
    snprintf(p, sizeof p, "%s/bad_%s.h5", dir, bad_files[i].name);
    size_t n = 0;
    char *b = slurp(good, &n);
    if (!b || spit(p, b, n) != 0) return -1;
    free(b);
    xd_h5_quiet q = xd_h5_quiet_begin(); /* some mutations delete what may not exist */
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f >= 0) bad_files[i].fn(f, dir);
    int rc = f < 0 || H5Fclose(f) < 0 ? -1 : 0;
    xd_h5_quiet_end(q);
    if (rc) return -1;
    if (index) fprintf(index, "bad_%s.h5\t%d\t%s\n", bad_files[i].name, bad_files[i].optim, bad_files[i].words);
  }
  return 0;
}

static void test_crafted(void) {
  CHECK(make_bad(wp("last.h5"), work, NULL) == 0);
  for (int i = 0; i < NBAD; i++) {
    char name[128];
    snprintf(name, sizeof name, "bad_%s.h5", bad_files[i].name);
    full G;
    xd_err e = {{0}};
    double t0 = xd_now();
    int rc = load_full(wp(name), &G, bad_files[i].optim, &e);
    CHECK_MSG(rc == -1, "%s was accepted", name);
    if (rc == 0) {
      free_full(&G);
      continue;
    }
    CHECK_MSG(one_line_naming(e.msg, name) && strstr(e.msg, bad_files[i].words), "%s: '%s' (expected '%s')", name,
              e.msg, bad_files[i].words);
    CHECK_MSG(xd_now() - t0 < 5, "%s took %.1f s", name, xd_now() - t0);
    /* info checks the optimizer state too */
    FILE *devnull = fopen("/dev/null", "w");
    CHECK_MSG(xd_checkpoint_describe(wp(name), devnull, &e) == -1 && strstr(e.msg, bad_files[i].words),
              "describe %s: '%s'", name, e.msg);
    fclose(devnull);
  }
  printf("crafted checkpoints: %d refused\n", NBAD);
  /* not regular files: refused before anything opens them (a FIFO would block) */
  full G;
  xd_err e = {{0}};
  CHECK(load_full(wp("fifo"), &G, 0, &e) == -1 && strstr(e.msg, "not a regular file (a FIFO)"));
  CHECK(load_full(work, &G, 0, &e) == -1 && strstr(e.msg, "not a regular file (a directory)"));
  CHECK(load_full(wp("missing.h5"), &G, 0, &e) == -1 && strstr(e.msg, "No such file"));
  /* a version 1 file (what older builds and h5py write: no checksums) still loads */
  char fx[4200];
  snprintf(fx, sizeof fx, "%s/torch_mixed.h5", getenv("XD_FIXTURES") ? getenv("XD_FIXTURES") : ".");
  if (xd_file_exists(fx)) {
    xd_model m;
    CHECK_MSG(xd_checkpoint_load(fx, &m, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK(xd_checkpoint_checksummed(fx, &e) == 0);
    xd_model_free(&m);
  }
}

/* ---- saving refuses what loading would ---- */

static void save_refused(full *F, const xd_optimizer *opt, const char *words) {
  xd_err e = {{0}};
  const char *p = wp("refused.h5");
  unlink(p);
  int rc = xd_checkpoint_save(p, &F->m, opt, &F->st, &F->meta, &e);
  CHECK_MSG(rc == -1 && one_line_naming(e.msg, "refused.h5") && strstr(e.msg, "checkpoint not written") &&
                strstr(e.msg, words),
            "save: rc %d '%s' (expected '%s')", rc, e.msg, words);
  CHECK_MSG(!xd_file_exists(p) && tmp_leftovers(work) == 0, "a refused save left a file behind");
}

static void test_save_refuses(void) {
  full F;
  if (make_full(&F, 5)) return;
  char want[128];
  const xd_layer *L = &F.m.layers[2];
  float keep = F.m.params[L->w_off + 3];
  F.m.params[L->w_off + 3] = NAN;
  snprintf(want, sizeof want, "/params/2/weight holds NaN (layer 2, line %d of the model)", L->line);
  save_refused(&F, NULL, want);
  F.m.params[L->w_off + 3] = keep;
  L = &F.m.layers[1];
  F.m.buffers[L->rv_off] = -1;
  save_refused(&F, NULL, "/params/1/running_var holds a negative value");
  F.m.buffers[L->rv_off] = 1;
  F.o.v[7] = -1e-9f;
  save_refused(&F, &F.o, "/optim/v/0/weight holds a negative value");
  F.o.v[7] = 0;
  F.o.m[F.m.layers[9].b_off] = INFINITY;
  save_refused(&F, &F.o, "/optim/m/9/bias holds +Inf (layer 9");
  F.o.m[F.m.layers[9].b_off] = 0;
  F.o.ema[0] = NAN;
  save_refused(&F, &F.o, "/optim/ema/0/weight holds NaN");
  F.o.ema[0] = 0;
  F.st.threshold = NAN;
  save_refused(&F, NULL, "'threshold' = nan");
  F.st.threshold = 2;
  save_refused(&F, NULL, "'threshold' = 2");
  F.st.threshold = 0.5;
  F.st.step = -5;
  save_refused(&F, NULL, "'step' = -5");
  F.st.step = 5;
  F.meta.train_prior = 1.5;
  save_refused(&F, NULL, "'train_prior' = 1.5");
  F.meta.train_prior = 0.5;
  F.meta.nclasses = 3;
  snprintf(F.meta.class_names[2], XD_CLASS_NAME_MAX, "OTHER");
  save_refused(&F, NULL, "'class_names' has 3 names");
  F.meta.nclasses = 2;
  /* the named error for train's per-epoch check */
  xd_err e = {{0}};
  CHECK(xd_checkpoint_check_values(&F.m, &F.o, &e) == 0);
  F.m.params[F.m.layers[7].w_off] = -INFINITY;
  CHECK(xd_checkpoint_check_values(&F.m, &F.o, &e) == -1 && strstr(e.msg, "/params/7/weight holds -Inf (layer 7"));
  F.m.params[F.m.layers[7].w_off] = 0;
  /* a save into a missing folder names the reason */
  CHECK(xd_checkpoint_save(wp("nope/last.h5"), &F.m, NULL, &F.st, &F.meta, &e) == -1 &&
        strstr(e.msg, "nope/last.h5: cannot write checkpoint: No such file or directory"));
  free_full(&F);
}

/* ---- full disk ---- */

static void test_full_disk(void) {
  if (geteuid() != 0) {
    printf("SKIP full-disk checks: not root (they mount a small tmpfs)\n");
    return;
  }
  const char *mnt = wp("tmpfs");
  mkdir(mnt, 0755);
  umount2(mnt, MNT_DETACH);
  int mounted = mount("tmpfs", mnt, "tmpfs", 0, "size=1m") == 0;
  CHECK_MSG(mounted, "mount -t tmpfs %s: %s", mnt, strerror(errno));
  if (!mounted) return;
  full A, B, G;
  if (make_full(&A, 1) || make_full(&B, 2)) {
    CHECK(0);
    umount2(mnt, MNT_DETACH);
    return;
  }
  char last[4200], filler[4200];
  snprintf(last, sizeof last, "%s/last.h5", mnt);
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  xd_err e = {{0}};
  CHECK_MSG(xd_checkpoint_save(last, &A.m, &A.o, &A.st, &A.meta, &e) == 0, "%s", e.msg);
  long size = file_size(last);
  /* free space from 0 up to past a whole checkpoint, in pages: every level either writes B or fails
   * cleanly with A intact */
  int failed = 0, written = 0;
  for (long room = 0; room <= size + 8192; room += 4096) {
    unlink(filler);
    /* rewrite A, then fill until only `room` bytes are left */
    CHECK_MSG(xd_checkpoint_save(last, &A.m, &A.o, &A.st, &A.meta, &e) == 0, "%s", e.msg);
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static char zeros[4096];
    while (write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros) {
    }
    close(fd);
    /* give back `room` bytes */
    long fs = file_size(filler);
    CHECK(truncate(filler, fs > room ? fs - room : 0) == 0);
    int rc = xd_checkpoint_save(last, &B.m, &B.o, &B.st, &B.meta, &e);
    if (rc == 0) {
      written++;
      CHECK_MSG(load_full(last, &G, 1, &e) == 0 && same_full(&B, &G, 1), "room %ld: the new checkpoint is not B", room);
      free_full(&G);
    } else {
      failed++;
      char want[4400];
      snprintf(want, sizeof want, "%s: cannot write checkpoint: No space left on device", last);
      CHECK_MSG(!strcmp(e.msg, want), "room %ld: '%s'", room, e.msg);
      CHECK_MSG(tmp_leftovers(mnt) == 0, "room %ld: a temporary was left", room);
      CHECK_MSG(load_full(last, &G, 1, &e) == 0 && same_full(&A, &G, 1), "room %ld: the previous checkpoint is damaged", room);
      free_full(&G);
    }
  }
  printf("full disk: %d fill levels failed cleanly, %d had room (checkpoint of %ld bytes)\n", failed, written, size);
  CHECK(failed >= 3 && written >= 1);
  unlink(filler);
  CHECK(umount2(mnt, 0) == 0 || umount2(mnt, MNT_DETACH) == 0);
  free_full(&A);
  free_full(&B);
}

/* ---- optimizer odds and ends ---- */

static void test_optim(void) {
  xd_schedule s;
  const char *good[] = {"constant", "cosine", "cosine:0.1", "cosine:0", "cosine:1", "step:3:0.5", "step:1:1", "step:2:1e-12"};
  const char *badv[] = {"step:1:nan", "step:1:inf", "step:1:-0.5", "step:1:0", "step:1:2", "step:0:0.5", "step:-1:0.5",
                        "step:99999999999:0.5", "step:1:", "step:1:0.5x", "step: 1:0.5", "step:1: 0.5", "cosine:",
                        "cosine:nan", "cosine:-0.1", "cosine:1.5", "cosine:0.1x", "step", "linear"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) CHECK_MSG(xd_schedule_parse(good[i], &s) == 0, "%s refused", good[i]);
  for (size_t i = 0; i < sizeof badv / sizeof badv[0]; i++) CHECK_MSG(xd_schedule_parse(badv[i], &s) != 0, "%s accepted", badv[i]);
  xd_optimizer o;
  xd_opt_config c = xd_opt_defaults(XD_OPT_ADAM, 1e-3f);
  xd_err e = {{0}};
  float p[4] = {0};
  CHECK(xd_opt_alloc(&o, &c, 4, &e) == 0);
  CHECK(xd_opt_ema_init(&o, NAN, p, p, 0, &e) == -1);
  CHECK(xd_opt_ema_init(&o, 1.0, p, p, 0, &e) == -1);
  xd_opt_free(&o);
  /* the moments' memory is checked before allocating */
  xd_mem_limit_set(1 << 20);
  CHECK(xd_opt_alloc(&o, &c, (size_t)1 << 30, &e) == -1 && strstr(e.msg, "the optimizer state needs"));
  xd_mem_limit_set(0);
}

int main(int argc, char **argv) {
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 144; j++) images[i][j] = (uint8_t)((i * 37 + j * 11 + (j / 12) * 5) % 256);
  if (argc == 3 && !strcmp(argv[1], "--make")) {
    H5dont_atexit();
    /* for the shell test: good checkpoints and the crafted bad ones */
    snprintf(work, sizeof work, "%s", argv[2]);
    full F;
    xd_err e = {{0}};
    if (make_full(&F, 3) || xd_checkpoint_save(wp("good_last.h5"), &F.m, &F.o, &F.st, &F.meta, &e) ||
        xd_checkpoint_save(wp("good_best.h5"), &F.m, NULL, &F.st, &F.meta, &e)) {
      fprintf(stderr, "test_rel_ckpt --make: %s\n", e.msg);
      return 1;
    }
    FILE *idx = fopen(wp("bad.tsv"), "w");
    int rc = idx ? make_bad(wp("good_last.h5"), work, idx) : -1;
    if (idx && fclose(idx) != 0) rc = -1;
    free_full(&F);
    return rc == 0 ? 0 : 1;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: test_rel_ckpt FIXTURES WORK | --make DIR\n");
    return 2;
  }
  setenv("XD_FIXTURES", argv[1], 1);
  snprintf(work, sizeof work, "%s", argv[2]);
  xd_err e;
  if (xd_mkdir_p(work, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  umount2(wp("tmpfs"), MNT_DETACH); /* a previous run that died */
  H5dont_atexit(); /* as main.c: HDF5 1.10 can keep internal state of a corrupt file it failed to open */
  /* every phase leaves no HDF5 object open (a leak on an error path keeps files open) */
#define PHASE(f)                                                                                   \
  do {                                                                                             \
    f();                                                                                           \
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);                                 \
    CHECK_MSG(open_ids == 0, "%s left %zd HDF5 objects open", #f, open_ids);                       \
  } while (0)
  PHASE(test_roundtrip);
  PHASE(test_flips);
  PHASE(test_crafted);
  PHASE(test_save_refuses);
  PHASE(test_full_disk);
  PHASE(test_optim);
  return check_done("rel_ckpt");
}
