#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

#define CKPT_FORMAT "xray-dp-checkpoint"
/* Version 1: plain HDF5 (no checksums): still read, `info` says "no checksums".
 * Version 2: every tensor chunked with HDF5's Fletcher-32 filter, superblock v3 and v2 object headers
 * (checksummed metadata, libver bounds v110..latest), strings fixed-length (inside the checksummed
 * headers, not in the unchecksummed global heap). A version 2 file missing any of these is refused. */
#define CKPT_VERSION 2
#define CKPT_MODEL_MAX ((size_t)1 << 20) /* model descriptions are at most 1 MiB (xd_model_from_arg) */
/* An attribute over ~64 KiB cannot live in its object header: HDF5 keeps it in a heap whose big objects
 * have no checksum. A model description longer than this is also written to /model_text (uint8, with
 * Fletcher-32), and a load demands that the attribute equals that checksummed copy. */
#define CKPT_INLINE_MAX 60000

/* ---- the tensors of a model, in PyTorch's layout ---- */

/* Dataset names and shapes of layer i's tensors. Returns the count (0..4). */
typedef struct {
  const char *name;
  int rank;
  hsize_t dims[4];
  size_t off, n;
  int buffer;   /* in m->buffers (batchnorm running statistics), else in m->params */
  int nonneg;   /* running_var: must be >= 0 */
} tensor_desc;

static int layer_tensors(const xd_layer *L, tensor_desc t[4]) {
  int k = 0;
  if (L->kind == XD_L_CONV) {
    t[k++] = (tensor_desc){"weight", 4, {(hsize_t)L->out_c, (hsize_t)L->in_c, (hsize_t)L->p.conv.kh, (hsize_t)L->p.conv.kw}, L->w_off, L->w_n, 0, 0};
    if (L->b_n) t[k++] = (tensor_desc){"bias", 1, {(hsize_t)L->out_c}, L->b_off, L->b_n, 0, 0};
  } else if (L->kind == XD_L_DENSE) {
    t[k++] = (tensor_desc){"weight", 2, {(hsize_t)L->out_c, (hsize_t)L->in_c}, L->w_off, L->w_n, 0, 0};
    t[k++] = (tensor_desc){"bias", 1, {(hsize_t)L->out_c}, L->b_off, L->b_n, 0, 0};
  } else if (L->kind == XD_L_BATCHNORM) {
    hsize_t c = (hsize_t)L->in_c;
    t[k++] = (tensor_desc){"weight", 1, {c}, L->w_off, L->w_n, 0, 0};
    t[k++] = (tensor_desc){"bias", 1, {c}, L->b_off, L->b_n, 0, 0};
    t[k++] = (tensor_desc){"running_mean", 1, {c}, L->rm_off, (size_t)c, 1, 0};
    t[k++] = (tensor_desc){"running_var", 1, {c}, L->rv_off, (size_t)c, 1, 1};
  }
  return k;
}

/* The groups tensors live under: the weights, and in a full checkpoint the optimizer's moments and EMA. */
enum { G_PARAMS, G_M, G_V, G_EMA };
static const char *const group_path[4] = {"/params", "/optim/m", "/optim/v", "/optim/ema"};

/* Where tensor t of layer i lives in memory for group g (NULL: the group has no copy of it). */
static const float *tensor_src(const xd_model *m, const xd_optimizer *opt, int g, const tensor_desc *t) {
  switch (g) {
    case G_PARAMS: return (t->buffer ? m->buffers : m->params) + t->off;
    case G_M: return opt && !t->buffer ? opt->m + t->off : NULL;
    case G_V: return opt && !t->buffer ? opt->v + t->off : NULL;
    default: return opt && opt->ema ? (t->buffer ? opt->ema_buf : opt->ema) + t->off : NULL;
  }
}

/* 0, or -1 with "/params/3/weight holds NaN (layer 4, line 5 of the model)". Second moments (square
 * sums of every optimizer) and running variances must also be >= 0. */
static int check_values(const float *x, size_t n, int nonneg, const char *dspath, const xd_layer *L, int i,
                        xd_err *e) {
  for (size_t k = 0; k < n; k++) {
    float v = x[k];
    if (isfinite(v) && (!nonneg || v >= 0.0f)) continue;
    char what[64], value[40] = "";
    if (isnan(v)) snprintf(what, sizeof what, "NaN");
    else if (isinf(v)) snprintf(what, sizeof what, "%s", v > 0 ? "+Inf" : "-Inf");
    else {
      snprintf(what, sizeof what, "a negative value");
      snprintf(value, sizeof value, "%.3g at index %zu; ", (double)v, k);
    }
    return xd_fail(e, "%s holds %s (%slayer %d, line %d of the model)", dspath, what, value, i, L->line);
  }
  return 0;
}

int xd_checkpoint_check_values(const xd_model *m, const xd_optimizer *opt, xd_err *e) {
  char p[96];
  for (int g = G_PARAMS; g <= G_EMA; g++)
    for (int i = 0; i < m->nlayers; i++) {
      tensor_desc t[4];
      int k = layer_tensors(&m->layers[i], t);
      for (int j = 0; j < k; j++) {
        const float *src = tensor_src(m, opt, g, &t[j]);
        if (!src) continue;
        snprintf(p, sizeof p, "%s/%d/%s", group_path[g], i, t[j].name);
        XD_TRY(check_values(src, t[j].n, t[j].nonneg || g == G_V, p, &m->layers[i], i, e));
      }
    }
  return 0;
}

/* The scalar training state: what resuming and predicting rely on. */
static int check_state(const xd_train_state *st, xd_err *e) {
  struct { const char *name; int64_t v; } ints[] = {{"step", st->step}, {"epoch", st->epoch},
      {"step_in_epoch", st->step_in_epoch}, {"best_epoch", st->best_epoch}, {"bad_epochs", st->bad_epochs},
      {"lr_drops", st->lr_drops}, {"plateau_bad", st->plateau_bad}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (ints[i].v < 0) return xd_fail(e, "attribute '%s' = %lld is negative", ints[i].name, (long long)ints[i].v);
  if (st->threshold_chosen != 0 && st->threshold_chosen != 1)
    return xd_fail(e, "attribute 'threshold_chosen' = %lld is not 0 or 1", (long long)st->threshold_chosen);
  if (st->stopped != 0 && st->stopped != 1)
    return xd_fail(e, "attribute 'stopped' = %lld is not 0 or 1", (long long)st->stopped);
  if (!(st->threshold >= 0.0 && st->threshold <= 1.0))
    return xd_fail(e, "attribute 'threshold' = %g is not in [0, 1]", st->threshold);
  if (!isfinite(st->plateau_best))
    return xd_fail(e, "attribute 'plateau_best' = %g is not finite", st->plateau_best);
  if (st->best_epoch > 0 && !isfinite(st->best_metric))
    return xd_fail(e, "attribute 'best_metric' = %g is not finite (best epoch %lld)", st->best_metric,
                   (long long)st->best_epoch);
  if (isinf(st->best_metric)) return xd_fail(e, "attribute 'best_metric' = %g is not finite", st->best_metric);
  struct { const char *name; double v; } part[] = {{"partial_loss", st->part_loss},
      {"partial_correct", st->part_correct}, {"partial_count", st->part_count},
      {"partial_seconds", st->part_seconds}};
  for (size_t i = 0; i < sizeof part / sizeof part[0]; i++)
    if (!(isfinite(part[i].v) && part[i].v >= 0))
      return xd_fail(e, "attribute '%s' = %g is not a finite number >= 0", part[i].name, part[i].v);
  if (st->part_correct > st->part_count)
    return xd_fail(e, "attribute 'partial_correct' = %g exceeds 'partial_count' = %g", st->part_correct,
                   st->part_count);
  return 0;
}

static int check_meta(const xd_model *m, const xd_ckpt_meta *meta, xd_err *e) {
  if (meta->nclasses > 0) {
    int want = m->nout == 1 ? 2 : m->nout;
    if (meta->nclasses != want)
      return xd_fail(e, "attribute 'class_names' has %d names but the model has %d output%s (%d classes)",
                     meta->nclasses, m->nout, m->nout == 1 ? "" : "s", want);
    for (int c = 0; c < meta->nclasses; c++) {
      if (!meta->class_names[c][0]) return xd_fail(e, "attribute 'class_names' has an empty name (class %d)", c);
      for (const unsigned char *q = (const unsigned char *)meta->class_names[c]; *q; q++)
        if (*q < 0x20 || *q == 0x7f)
          return xd_fail(e, "attribute 'class_names' has a name with a control character (class %d)", c);
    }
  }
  if (meta->train_prior != 0 && !(meta->train_prior > 0 && meta->train_prior < 1))
    return xd_fail(e, "attribute 'train_prior' = %g is not in (0, 1)", meta->train_prior);
  return 0;
}

static int check_ema_decay(double d, xd_err *e) {
  if (!(d >= 0.0 && d < 1.0)) return xd_fail(e, "attribute 'ema_decay' of /optim = %g is not in [0, 1)", d);
  return 0;
}

/* ---- writing: the file is built in memory (HDF5's core driver), then written with write(2) ---- */

typedef struct {
  hid_t f, gcpl;
  xd_err *e;
} writer;

static int w_fail(writer *w, const char *what) {
  return xd_fail(w->e, "HDF5 failed %s (out of memory?)", what);
}

static hid_t plist(hid_t cls) {
  hid_t p = H5Pcreate(cls);
  /* no modification times: the same state gives the same bytes */
  if (p >= 0 && cls != H5P_FILE_ACCESS && H5Pset_obj_track_times(p, 0) < 0) {
    H5Pclose(p);
    return -1;
  }
  return p;
}

static int mk_group(writer *w, const char *path) {
  hid_t g = H5Gcreate2(w->f, path, H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
  if (g < 0 || H5Gclose(g) < 0) return w_fail(w, path);
  return 0;
}

static int write_data(writer *w, const char *path, const tensor_desc *t, hid_t ftype, hid_t mtype, size_t esize,
                      const void *data) {
  hsize_t chunk[4];
  for (int i = 0; i < t->rank; i++) chunk[i] = t->dims[i];
  /* one chunk = the whole tensor (HDF5 chunks stay below 4 GiB: split the rows of a bigger one) */
  uint64_t row = esize;
  for (int i = 1; i < t->rank; i++) row *= t->dims[i];
  uint64_t rows_max = ((uint64_t)1 << 30) / (row ? row : 1);
  if (chunk[0] > rows_max) chunk[0] = rows_max ? rows_max : 1;
  int ok = 0;
  hid_t dcpl = plist(H5P_DATASET_CREATE), sp = H5Screate_simple(t->rank, t->dims, NULL), d = -1;
  if (dcpl >= 0 && sp >= 0 && H5Pset_chunk(dcpl, t->rank, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0 &&
      H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0)
    d = H5Dcreate2(w->f, path, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (d >= 0) ok = H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
  if (d >= 0 && H5Dclose(d) < 0) ok = 0;
  if (sp >= 0) H5Sclose(sp);
  if (dcpl >= 0) H5Pclose(dcpl);
  return ok ? 0 : w_fail(w, path);
}
static int write_tensor(writer *w, const char *path, const tensor_desc *t, const float *data) {
  return write_data(w, path, t, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, sizeof(float), data);
}
static int write_bytes(writer *w, const char *path, const tensor_desc *t, const char *data) {
  return write_data(w, path, t, H5T_STD_U8LE, H5T_NATIVE_UCHAR, 1, data);
}

static int w_attr(writer *w, hid_t loc, const char *name, hid_t mtype, hid_t ftype, const void *v) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = sp >= 0 ? H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  int ok = a >= 0 && H5Awrite(a, mtype, v) >= 0;
  if (a >= 0 && H5Aclose(a) < 0) ok = 0;
  if (sp >= 0) H5Sclose(sp);
  return ok ? 0 : w_fail(w, name);
}
static int w_i64(writer *w, hid_t loc, const char *name, int64_t v) {
  return w_attr(w, loc, name, H5T_NATIVE_INT64, H5T_STD_I64LE, &v);
}
static int w_f64(writer *w, hid_t loc, const char *name, double v) {
  return w_attr(w, loc, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, &v);
}
static int w_str(writer *w, hid_t loc, const char *name, const char *v) {
  return xd_h5_attr_write_fstr(loc, name, v) == 0 ? 0 : w_fail(w, name);
}

static int write_all(writer *w, const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                     const xd_ckpt_meta *meta) {
  hid_t f = w->f;
  char path[96];
  XD_TRY(mk_group(w, "/params"));
  if (opt) {
    XD_TRY(mk_group(w, "/optim"));
    XD_TRY(mk_group(w, "/optim/m"));
    XD_TRY(mk_group(w, "/optim/v"));
    if (opt->ema) XD_TRY(mk_group(w, "/optim/ema"));
  }
  for (int g = G_PARAMS; g <= G_EMA; g++)
    for (int i = 0; i < m->nlayers; i++) {
      tensor_desc t[4];
      int k = layer_tensors(&m->layers[i], t), made = 0;
      for (int j = 0; j < k; j++) {
        const float *src = tensor_src(m, opt, g, &t[j]);
        if (!src) continue;
        if (!made) {
          snprintf(path, sizeof path, "%s/%d", group_path[g], i);
          XD_TRY(mk_group(w, path));
          made = 1;
        }
        snprintf(path, sizeof path, "%s/%d/%s", group_path[g], i, t[j].name);
        XD_TRY(write_tensor(w, path, &t[j], src));
      }
    }
  XD_TRY(w_str(w, f, "format", CKPT_FORMAT));
  XD_TRY(w_i64(w, f, "version", CKPT_VERSION));
  XD_TRY(w_str(w, f, "model", m->text));
  size_t tl = strlen(m->text);
  if (tl + 1 > CKPT_INLINE_MAX) {
    tensor_desc t = {"model_text", 1, {(hsize_t)tl}, 0, tl, 0, 0};
    XD_TRY(write_bytes(w, "/model_text", &t, m->text));
  }
  XD_TRY(w_i64(w, f, "channels", m->in_c));
  XD_TRY(w_i64(w, f, "height", m->in_h));
  XD_TRY(w_i64(w, f, "width", m->in_w));
  if (meta) {
    XD_TRY(w_str(w, f, "command", meta->command));
    XD_TRY(w_str(w, f, "monitor", meta->monitor));
    XD_TRY(w_str(w, f, "data", meta->data));
    if (meta->config[0]) XD_TRY(w_str(w, f, "train_config", meta->config));
    if (meta->nclasses > 0) {
      const char *ptrs[XD_MAX_CLASSES];
      for (int i = 0; i < meta->nclasses; i++) ptrs[i] = meta->class_names[i];
      if (xd_h5_attr_write_fstrs(f, "class_names", ptrs, meta->nclasses) != 0) return w_fail(w, "class_names");
    }
    if (meta->train_prior > 0 && meta->train_prior < 1) XD_TRY(w_f64(w, f, "train_prior", meta->train_prior));
  }
  if (st) {
    XD_TRY(w_i64(w, f, "step", st->step));
    XD_TRY(w_i64(w, f, "epoch", st->epoch));
    XD_TRY(w_i64(w, f, "step_in_epoch", st->step_in_epoch));
    XD_TRY(w_i64(w, f, "seed", (int64_t)st->seed));
    XD_TRY(w_f64(w, f, "best_metric", st->best_metric));
    XD_TRY(w_i64(w, f, "best_epoch", st->best_epoch));
    XD_TRY(w_i64(w, f, "bad_epochs", st->bad_epochs));
    XD_TRY(w_f64(w, f, "threshold", st->threshold));
    XD_TRY(w_f64(w, f, "partial_loss", st->part_loss));
    XD_TRY(w_f64(w, f, "partial_correct", st->part_correct));
    XD_TRY(w_f64(w, f, "partial_count", st->part_count));
    XD_TRY(w_f64(w, f, "partial_seconds", st->part_seconds));
    XD_TRY(w_i64(w, f, "stopped", st->stopped));
    XD_TRY(w_i64(w, f, "threshold_chosen", st->threshold_chosen));
    XD_TRY(w_i64(w, f, "lr_drops", st->lr_drops));
    XD_TRY(w_f64(w, f, "plateau_best", st->plateau_best));
    XD_TRY(w_i64(w, f, "plateau_bad", st->plateau_bad));
  }
  if (opt) {
    hid_t g = H5Gopen2(f, "/optim", H5P_DEFAULT);
    if (g < 0) return w_fail(w, "/optim");
    int rc = w_str(w, g, "kind", xd_opt_name(opt->c.kind)) || w_i64(w, g, "step", opt->step) ||
             w_f64(w, g, "lr", opt->c.lr) || w_f64(w, g, "beta1", opt->c.beta1) ||
             w_f64(w, g, "beta2", opt->c.beta2) || w_f64(w, g, "eps", opt->c.eps) ||
             w_f64(w, g, "momentum", opt->c.momentum) || w_i64(w, g, "nesterov", opt->c.nesterov) ||
             w_f64(w, g, "alpha", opt->c.alpha) || w_f64(w, g, "weight_decay", opt->c.weight_decay) ||
             w_f64(w, g, "ema_decay", opt->ema ? opt->ema_decay : 0.0);
    if (H5Gclose(g) < 0 && rc == 0) rc = w_fail(w, "/optim");
    if (rc) return -1;
  }
  return 0;
}

/* Bytes the tensors take in the file (the image is about this plus a few KiB of metadata). */
static uint64_t tensor_bytes(const xd_model *m, const xd_optimizer *opt) {
  uint64_t p = xd_mul_sat(m->nparams, sizeof(float)), b = xd_mul_sat(m->nbuffers, sizeof(float));
  uint64_t t = xd_add_sat(p, b);
  if (opt) t = xd_add_sat(t, xd_mul_sat(p, 2));
  if (opt && opt->ema) t = xd_add_sat(t, xd_add_sat(p, b));
  return t;
}

/* The core driver's buffer, captured when the file closes (HDF5 1.10's H5Fget_file_image hands out a
 * superblock whose checksum was not updated after clearing its status flags: the image after a real
 * close is the right one). */
typedef struct {
  void *ptr, *final;
  size_t size, final_size;
} image_ud;
static void *img_malloc(size_t size, H5FD_file_image_op_t op, void *ud) {
  (void)op;
  image_ud *u = ud;
  void *p = malloc(size ? size : 1);
  if (p) {
    u->ptr = p;
    u->size = size;
  }
  return p;
}
static void *img_memcpy(void *dst, const void *src, size_t size, H5FD_file_image_op_t op, void *ud) {
  (void)op;
  (void)ud;
  return memcpy(dst, src, size);
}
static void *img_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *ud) {
  (void)op;
  image_ud *u = ud;
  void *p = realloc(ptr, size ? size : 1);
  if (p) {
    u->ptr = p;
    u->size = size;
  }
  return p;
}
static herr_t img_free(void *ptr, H5FD_file_image_op_t op, void *ud) {
  image_ud *u = ud;
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr && ptr == u->ptr) {
    free(u->final);
    u->final = ptr;
    u->final_size = u->size;
    u->ptr = NULL;
  } else {
    if (ptr == u->ptr) u->ptr = NULL;
    free(ptr);
  }
  return 0;
}
static void *img_udata_copy(void *ud) { return ud; }
static herr_t img_udata_free(void *ud) {
  (void)ud;
  return 0;
}

/* The file's length: the "end of file address" of a version 2/3 superblock (HDF5 file format spec). */
static size_t image_length(const unsigned char *b, size_t cap) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (cap < 48 || memcmp(b, sig, 8) != 0 || (b[8] != 2 && b[8] != 3)) return 0;
  unsigned o = b[9];
  if (o != 2 && o != 4 && o != 8) return 0;
  uint64_t eof = 0;
  for (unsigned i = 0; i < o; i++) eof |= (uint64_t)b[12 + 2 * o + i] << (8 * i);
  return eof > 0 && eof <= cap ? (size_t)eof : 0;
}

/* Builds the whole file in memory: *img (malloc'd) and *len. 0, or -1 with the reason in e. */
static int build_image(const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                       const xd_ckpt_meta *meta, char **img, size_t *len, xd_err *e) {
  *img = NULL;
  *len = 0;
  uint64_t est = xd_add_sat(tensor_bytes(m, opt), (uint64_t)1 << 20);
  /* the core driver's buffer (the file is written from it: no copy) */
  XD_TRY(xd_mem_check(est, "the checkpoint's image in memory", e));
  writer w = {-1, -1, e};
  image_ud ud = {NULL, NULL, 0, 0};
  H5FD_file_image_callbacks_t cb = {img_malloc, img_memcpy, img_realloc, img_free, img_udata_copy, img_udata_free, &ud};
  int rc = -1;
  hid_t fcpl = plist(H5P_FILE_CREATE), fapl = plist(H5P_FILE_ACCESS);
  w.gcpl = plist(H5P_GROUP_CREATE);
  /* every attribute and link in its object header (checksummed), not in dense storage, whose heaps
   * keep objects over 4 KiB unchecksummed */
  if (fcpl < 0 || fapl < 0 || w.gcpl < 0 || H5Pset_attr_phase_change(fcpl, 1000, 900) < 0 ||
      H5Pset_link_phase_change(fcpl, 60000, 50000) < 0 || H5Pset_attr_phase_change(w.gcpl, 1000, 900) < 0 ||
      H5Pset_link_phase_change(w.gcpl, 60000, 50000) < 0 ||
#if H5_VERSION_GE(1, 10, 2)
      H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) < 0 ||
#else
      H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0 ||
#endif
      H5Pset_fapl_core(fapl, (size_t)(est < ((uint64_t)1 << 30) ? est : ((uint64_t)1 << 30)), 0) < 0 ||
      H5Pset_file_image_callbacks(fapl, &cb) < 0) {
    w_fail(&w, "setting up the file");
    goto done;
  }
  w.f = H5Fcreate("checkpoint-in-memory.h5", H5F_ACC_TRUNC, fcpl, fapl);
  if (w.f < 0) {
    w_fail(&w, "creating the file in memory");
    goto done;
  }
  if (write_all(&w, m, opt, st, meta) != 0) goto done;
  rc = 0;
done:;
  int closed = 1;
  if (w.f >= 0 && H5Fclose(w.f) < 0) {
    closed = 0;
    if (rc == 0) rc = w_fail(&w, "closing the file in memory");
  }
  if (w.gcpl >= 0) H5Pclose(w.gcpl);
  if (fapl >= 0) H5Pclose(fapl);
  if (fcpl >= 0) H5Pclose(fcpl);
  if (closed) free(ud.ptr); /* a buffer the driver did not hand back (it still owns it if the close failed) */
  if (rc == 0) {
    *len = ud.final ? image_length(ud.final, ud.final_size) : 0;
    if (*len == 0) rc = xd_fail(e, "HDF5 handed back no file image (unexpected superblock)");
  }
  if (rc == 0) *img = ud.final;
  else free(ud.final);
  return rc;
}

/* Writes the image to tmp: every write, the fsync and the close checked. errno of the first failure, 0. */
static int write_file(const char *tmp, const char *buf, size_t len) {
  /* a leftover of this pid (or a link planted at the name) is removed: the file is created, never
   * written through whatever was there */
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) return errno ? errno : EIO;
  size_t off = 0;
  int err = 0;
  while (off < len) {
    ssize_t k = write(fd, buf + off, len - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      err = k < 0 ? errno : ENOSPC; /* a write of 0 bytes to a regular file: the disk is full */
      break;
    }
    off += (size_t)k;
  }
  if (!err && fsync(fd) != 0) err = errno;
  if (close(fd) != 0 && !err) err = errno;
  return err;
}

int xd_checkpoint_save(const char *path, const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                       const xd_ckpt_meta *meta, xd_err *e) {
  xd_err why = {{0}};
  /* never write what no load would accept */
  if (xd_checkpoint_check_values(m, opt, &why) != 0 || (st && check_state(st, &why) != 0) ||
      (meta && check_meta(m, meta, &why) != 0) || (opt && opt->ema && check_ema_decay(opt->ema_decay, &why) != 0))
    return xd_fail(e, "%s: checkpoint not written: %s", path, why.msg);
  char *img = NULL;
  size_t len = 0;
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = build_image(m, opt, st, meta, &img, &len, &why);
  xd_h5_quiet_end(q);
  if (rc != 0) return xd_fail(e, "%s: cannot write checkpoint: %s", path, why.msg);
  char tmp[4200];
  xd_clean_stale_tmp(path); /* temporaries of writers killed mid-write (kill -9) */
  xd_tmp_name(path, tmp, sizeof tmp);
  int err = write_file(tmp, img, len);
  free(img);
  if (err) {
    unlink(tmp);
    return xd_fail(e, "%s: cannot write checkpoint: %s", path, strerror(err));
  }
  return xd_commit_file(tmp, path, e);
}

/* ---- reading: every object and value checked ---- */

typedef struct {
  hid_t f;
  const char *path;
  int version;
  xd_err *e;
} reader;

/* The failure of an HDF5 call on object obj: a checksum mismatch, or `what`. */
static int r_fail(reader *r, const char *obj, const char *what) {
  if (xd_h5_seen_checksum()) return xd_fail(r->e, "%s: checksum mismatch in %s (file corrupted)", r->path, obj);
  return xd_fail(r->e, "%s: %s %s (file corrupt?)", r->path, what, obj);
}

static void attr_where(char *buf, size_t n, const char *group, const char *name) {
  if (group[0]) snprintf(buf, n, "attribute '%s' of %s", name, group);
  else snprintf(buf, n, "attribute '%s'", name);
}

/* A numeric scalar attribute of loc (group "" = root). integer: an integer type is required (int64_t
 * out), else any number (double out). 1 read, 0 absent, -1 error. */
static int r_num(reader *r, hid_t loc, const char *group, const char *name, int integer, void *out) {
  char where[128];
  attr_where(where, sizeof where, group, name);
  xd_h5_seen_reset();
  htri_t ex = H5Aexists(loc, name);
  if (ex < 0) return r_fail(r, group[0] ? group : "the root group", "cannot read the attributes of");
  if (ex == 0) return 0;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return r_fail(r, where, "cannot open");
  hid_t t = H5Aget_type(a), s = H5Aget_space(a);
  H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
  hssize_t np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
  int rc = 1;
  if (np != 1) rc = xd_fail(r->e, "%s: %s is not a single value", r->path, where);
  else if (integer && cls != H5T_INTEGER) rc = xd_fail(r->e, "%s: %s is not an integer", r->path, where);
  else if (!integer && cls != H5T_INTEGER && cls != H5T_FLOAT) rc = xd_fail(r->e, "%s: %s is not a number", r->path, where);
  else if (H5Aread(a, integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, out) < 0) rc = r_fail(r, where, "cannot read");
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return rc;
}

/* A string attribute into buf[n]. 1 read, 0 absent, -1 error (not a string, longer than n - 1). */
static int r_str(reader *r, hid_t loc, const char *group, const char *name, char *buf, size_t n) {
  char where[128];
  attr_where(where, sizeof where, group, name);
  buf[0] = '\0';
  xd_h5_seen_reset();
  htri_t ex = H5Aexists(loc, name);
  if (ex < 0) return r_fail(r, group[0] ? group : "the root group", "cannot read the attributes of");
  if (ex == 0) return 0;
  int rc = xd_h5_attr_read_str(loc, name, buf, n);
  if (rc == 0) return 1;
  if (xd_h5_seen_checksum()) return r_fail(r, where, "cannot read");
  if (rc == -2) return xd_fail(r->e, "%s: %s is longer than %zu bytes (or not a plain string)", r->path, where, n - 1);
  return xd_fail(r->e, "%s: %s is not a string", r->path, where);
}

static void dims_str(char *buf, size_t n, int rank, const hsize_t *d) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? "," : "", (unsigned long long)d[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

/* Reads tensor t of layer i from dspath into out, checking everything on the way. */
static int read_tensor(reader *r, const char *dspath, const tensor_desc *t, const xd_layer *L, int i, int nonneg,
                       float *out) {
  char at[64];
  snprintf(at, sizeof at, "layer %d, line %d of the model", i, L->line);
  xd_h5_seen_reset();
  int found = xd_h5_find(r->f, dspath);
  if (found == 0) return xd_fail(r->e, "%s: missing dataset %s (%s)", r->path, dspath, at);
  if (found == -2) return xd_fail(r->e, "%s: %s is a soft or external link (refused: a checkpoint holds its own data)", r->path, dspath);
  if (found < 0) return r_fail(r, dspath, "cannot find");
  int kind = xd_h5_kind(r->f, dspath);
  if (kind < 0) return r_fail(r, dspath, "cannot open");
  if (kind != H5I_DATASET) return xd_fail(r->e, "%s: %s is not a dataset", r->path, dspath);
  hid_t d = H5Dopen2(r->f, dspath, H5P_DEFAULT);
  if (d < 0) return r_fail(r, dspath, "cannot open");
  int rc = 0;
  hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
  hsize_t dims[H5S_MAX_RANK];
  int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (ty < 0 || sp < 0 || rank < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
    rc = r_fail(r, dspath, "cannot read the type and shape of");
  } else if (H5Tget_class(ty) != H5T_FLOAT) {
    rc = xd_fail(r->e, "%s: %s does not hold floating-point numbers", r->path, dspath);
  } else {
    int same = rank == t->rank;
    for (int k = 0; same && k < rank; k++) same = dims[k] == t->dims[k];
    char why[256];
    if (!same) {
      char have[128], want[128];
      dims_str(have, sizeof have, rank, dims);
      dims_str(want, sizeof want, t->rank, t->dims);
      rc = xd_fail(r->e, "%s: %s has shape %s, the stored model needs %s (%s)", r->path, dspath, have, want, at);
    } else if (xd_h5_check_storage(d, H5Tget_size(ty), why, sizeof why) != 0) {
      rc = xd_fail(r->e, "%s: %s %s", r->path, dspath, why);
    } else if (r->version >= 2 && xd_h5_has_fletcher32(d) != 1) {
      rc = xd_fail(r->e, "%s: %s has no checksum (a version %d checkpoint always has one: file altered?)", r->path,
                   dspath, r->version);
    } else {
      xd_h5_seen_reset();
      if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) rc = r_fail(r, dspath, "cannot read");
    }
  }
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  H5Dclose(d);
  if (rc == 0 && check_values(out, t->n, nonneg, dspath, L, i, r->e) != 0) {
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", r->e ? r->e->msg : "");
    rc = xd_fail(r->e, "%s: %s", r->path, msg);
  }
  return rc;
}

/* Opens a checkpoint: HDF5, the format and version attributes, checksummed metadata for version 2. */
static int open_ckpt(const char *path, reader *r, xd_err *e) {
  r->f = -1;
  r->path = path;
  r->e = e;
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  r->f = f;
  char fmt[64];
  int got = r_str(r, f, "", "format", fmt, sizeof fmt);
  if (got < 0 && xd_h5_seen_checksum()) goto fail;
  if (got <= 0 || strcmp(fmt, CKPT_FORMAT) != 0) {
    xd_fail(e, "%s: not an xray-dp checkpoint (format attribute is '%s')", path, got > 0 ? fmt : "");
    goto fail;
  }
  int64_t v = 0;
  got = r_num(r, f, "", "version", 1, &v);
  if (got < 0) goto fail;
  if (got == 0) {
    xd_fail(e, "%s: checkpoint without a 'version' attribute", path);
    goto fail;
  }
  if (v < 1 || v > CKPT_VERSION) {
    xd_fail(e, "%s: checkpoint version %lld is not one this build reads (1 to %d)%s", path, (long long)v,
            CKPT_VERSION, v > CKPT_VERSION ? ": written by a newer xray-dp" : "");
    goto fail;
  }
  r->version = (int)v;
  if (r->version >= 2) {
    H5F_info2_t fi;
    if (H5Fget_info2(f, &fi) < 0 || fi.super.version < 2) {
      xd_fail(e, "%s: a version %d checkpoint without checksummed metadata (superblock version %u): file altered?",
              path, r->version, fi.super.version);
      goto fail;
    }
  }
  return 0;
fail:
  H5Fclose(f);
  r->f = -1;
  return -1;
}

int xd_checkpoint_probe(const char *path) {
  char fmt[64];
  if (xd_h5_file_format(path, fmt, sizeof fmt, NULL) != 0) return -1;
  return !strcmp(fmt, CKPT_FORMAT);
}

static int load_params(reader *r, xd_model *m) {
  char p[96];
  for (int i = 0; i < m->nlayers; i++) {
    tensor_desc t[4];
    int k = layer_tensors(&m->layers[i], t);
    for (int j = 0; j < k; j++) {
      snprintf(p, sizeof p, "/params/%d/%s", i, t[j].name);
      XD_TRY(read_tensor(r, p, &t[j], &m->layers[i], i, t[j].nonneg, (t[j].buffer ? m->buffers : m->params) + t[j].off));
    }
  }
  return 0;
}

static int read_state(reader *r, xd_train_state *st) {
  memset(st, 0, sizeof *st);
  st->threshold = 0.5;
  st->threshold_chosen = 1; /* files written before the attribute: every run chose it on val */
  st->best_metric = NAN;
  int64_t seed = 0;
  hid_t f = r->f;
  if (r_num(r, f, "", "step", 1, &st->step) < 0 || r_num(r, f, "", "epoch", 1, &st->epoch) < 0 ||
      r_num(r, f, "", "step_in_epoch", 1, &st->step_in_epoch) < 0 || r_num(r, f, "", "seed", 1, &seed) < 0 ||
      r_num(r, f, "", "best_metric", 0, &st->best_metric) < 0 ||
      r_num(r, f, "", "best_epoch", 1, &st->best_epoch) < 0 ||
      r_num(r, f, "", "bad_epochs", 1, &st->bad_epochs) < 0 || r_num(r, f, "", "threshold", 0, &st->threshold) < 0 ||
      r_num(r, f, "", "partial_loss", 0, &st->part_loss) < 0 ||
      r_num(r, f, "", "partial_correct", 0, &st->part_correct) < 0 ||
      r_num(r, f, "", "partial_count", 0, &st->part_count) < 0 ||
      r_num(r, f, "", "partial_seconds", 0, &st->part_seconds) < 0 || r_num(r, f, "", "stopped", 1, &st->stopped) < 0 ||
      r_num(r, f, "", "threshold_chosen", 1, &st->threshold_chosen) < 0 ||
      r_num(r, f, "", "lr_drops", 1, &st->lr_drops) < 0 || r_num(r, f, "", "plateau_best", 0, &st->plateau_best) < 0 ||
      r_num(r, f, "", "plateau_bad", 1, &st->plateau_bad) < 0)
    return -1;
  st->seed = (uint64_t)seed;
  xd_err why;
  if (check_state(st, &why) != 0) return xd_fail(r->e, "%s: %s", r->path, why.msg);
  return 0;
}

static int read_meta(reader *r, const xd_model *m, xd_ckpt_meta *meta) {
  memset(meta, 0, sizeof *meta);
  hid_t f = r->f;
  if (r_str(r, f, "", "command", meta->command, sizeof meta->command) < 0 ||
      r_str(r, f, "", "monitor", meta->monitor, sizeof meta->monitor) < 0 ||
      r_str(r, f, "", "data", meta->data, sizeof meta->data) < 0 ||
      r_str(r, f, "", "train_config", meta->config, sizeof meta->config) < 0)
    return -1;
  if (r_num(r, f, "", "train_prior", 0, &meta->train_prior) < 0) return -1;
  xd_h5_seen_reset();
  htri_t ex = H5Aexists(f, "class_names");
  if (ex < 0) return r_fail(r, "the root group", "cannot read the attributes of");
  if (ex > 0) {
    int n = 0;
    int rc = xd_h5_attr_read_strs(f, "class_names", &meta->class_names[0][0], XD_MAX_CLASSES, XD_CLASS_NAME_MAX, &n);
    if (rc != 0 && xd_h5_seen_checksum()) return r_fail(r, "attribute 'class_names'", "cannot read");
    if (rc == -2)
      return xd_fail(r->e, "%s: attribute 'class_names' has a name longer than %d bytes (or not a plain string)",
                     r->path, XD_CLASS_NAME_MAX - 1);
    if (rc != 0 && n < 0)
      return xd_fail(r->e, "%s: attribute 'class_names' has more than %d names", r->path, XD_MAX_CLASSES);
    if (rc != 0) return xd_fail(r->e, "%s: attribute 'class_names' is not an array of strings", r->path);
    if (n == 0) return xd_fail(r->e, "%s: attribute 'class_names' is empty", r->path);
    meta->nclasses = n;
  }
  xd_err why;
  if (check_meta(m, meta, &why) != 0) return xd_fail(r->e, "%s: %s", r->path, why.msg);
  return 0;
}

/* A long description (over CKPT_INLINE_MAX) must equal its checksummed copy /model_text (version 2). */
static int check_model_copy(reader *r, const char *text) {
  size_t tl = strlen(text);
  if (r->version < 2 || tl + 1 <= CKPT_INLINE_MAX) return 0;
  const char *p = "/model_text";
  xd_h5_seen_reset();
  int found = xd_h5_find(r->f, p);
  if (found == 0) return xd_fail(r->e, "%s: the model description has no checksummed copy %s (file altered?)", r->path, p);
  if (found < 0 && found != -2) return r_fail(r, p, "cannot find");
  if (found == -2 || xd_h5_kind(r->f, p) != H5I_DATASET) return xd_fail(r->e, "%s: %s is not a dataset of this file", r->path, p);
  hid_t d = H5Dopen2(r->f, p, H5P_DEFAULT);
  if (d < 0) return r_fail(r, p, "cannot open");
  int rc = 0;
  hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
  hsize_t n = 0;
  char why[256];
  if (ty < 0 || sp < 0 || H5Tget_class(ty) != H5T_INTEGER || H5Tget_size(ty) != 1 ||
      H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, &n, NULL) < 0 || n != tl)
    rc = xd_fail(r->e, "%s: %s is not the %zu bytes of the model description (file corrupted)", r->path, p, tl);
  else if (xd_h5_check_storage(d, 1, why, sizeof why) != 0)
    rc = xd_fail(r->e, "%s: %s %s", r->path, p, why);
  else if (xd_h5_has_fletcher32(d) != 1)
    rc = xd_fail(r->e, "%s: %s has no checksum (file altered?)", r->path, p);
  char *copy = rc == 0 ? malloc(tl + 1) : NULL;
  if (rc == 0 && !copy) rc = xd_fail(r->e, "%s: out of memory", r->path);
  if (rc == 0) {
    xd_h5_seen_reset();
    if (H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, copy) < 0) rc = r_fail(r, p, "cannot read");
    else if (memcmp(copy, text, tl) != 0)
      rc = xd_fail(r->e, "%s: attribute 'model' differs from its checksummed copy %s (file corrupted)", r->path, p);
  }
  free(copy);
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  H5Dclose(d);
  return rc;
}

/* The stored description and the input geometry attributes, which must agree with it. */
static int build_model(reader *r, xd_model *m) {
  char *buf = malloc(CKPT_MODEL_MAX + 1);
  if (!buf) return xd_fail(r->e, "%s: out of memory reading the model description", r->path);
  int got = r_str(r, r->f, "", "model", buf, CKPT_MODEL_MAX + 1);
  if (got == 0) xd_fail(r->e, "%s: checkpoint has no model description", r->path);
  if (got <= 0) {
    free(buf);
    return -1;
  }
  if (check_model_copy(r, buf) != 0) {
    free(buf);
    return -1;
  }
  char source[4200];
  snprintf(source, sizeof source, "%s (stored model)", r->path);
  int rc = xd_model_build(m, buf, source, r->e);
  free(buf);
  if (rc != 0) return -1;
  const char *names[3] = {"channels", "height", "width"};
  int want[3] = {m->in_c, m->in_h, m->in_w};
  for (int i = 0; i < 3; i++) {
    int64_t v = 0;
    got = r_num(r, r->f, "", names[i], 1, &v);
    if (got > 0 && v != want[i])
      got = xd_fail(r->e, "%s: attribute '%s' = %lld but the stored model's input is %dx%dx%d", r->path, names[i],
                    (long long)v, m->in_c, m->in_h, m->in_w);
    if (got < 0) {
      xd_model_free(m);
      return -1;
    }
  }
  return 0;
}

static int load_impl(const char *path, xd_model *m, xd_train_state *st, xd_ckpt_meta *meta, xd_err *e) {
  reader r;
  XD_TRY(open_ckpt(path, &r, e));
  int rc = build_model(&r, m);
  if (rc == 0) {
    rc = load_params(&r, m);
    if (rc == 0) {
      xd_train_state st0;
      xd_ckpt_meta *meta0 = meta ? meta : malloc(sizeof *meta0);
      rc = read_state(&r, st ? st : &st0);
      if (rc == 0) rc = meta0 ? read_meta(&r, m, meta0) : xd_fail(e, "%s: out of memory", path);
      if (meta0 != meta) free(meta0);
    }
    if (rc != 0) xd_model_free(m);
  }
  H5Fclose(r.f);
  return rc;
}

static int load_weights_impl(const char *path, xd_model *m, xd_err *e) {
  reader r;
  XD_TRY(open_ckpt(path, &r, e));
  int rc = load_params(&r, m);
  H5Fclose(r.f);
  return rc;
}

/* The /optim group: its kind, step and EMA decay (validated). */
static int read_optim_attrs(reader *r, hid_t *g, xd_opt_kind *kind, int64_t *step, double *ema_decay) {
  xd_h5_seen_reset();
  int found = xd_h5_find(r->f, "/optim");
  if (found < 0 && found != -2) return r_fail(r, "/optim", "cannot find");
  if (found == 0)
    return xd_fail(r->e, "%s: no optimizer state (a best.h5? --resume needs last.h5, which has it)", r->path);
  if (found == -2) return xd_fail(r->e, "%s: /optim is a soft or external link (refused)", r->path);
  int kind_of = xd_h5_kind(r->f, "/optim");
  if (kind_of < 0) return r_fail(r, "/optim", "cannot open");
  if (kind_of != H5I_GROUP) return xd_fail(r->e, "%s: /optim is not a group", r->path);
  *g = H5Gopen2(r->f, "/optim", H5P_DEFAULT);
  if (*g < 0) return r_fail(r, "/optim", "cannot open");
  char name[32];
  int rc = r_str(r, *g, "/optim", "kind", name, sizeof name);
  if (rc == 0) rc = xd_fail(r->e, "%s: /optim has no 'kind' attribute", r->path);
  if (rc > 0 && xd_opt_parse(name, kind) != 0) rc = xd_fail(r->e, "%s: unknown optimizer '%s' in /optim", r->path, name);
  *step = 0;
  *ema_decay = 0;
  if (rc > 0) rc = r_num(r, *g, "/optim", "step", 1, step);
  if (rc >= 0 && *step < 0) rc = xd_fail(r->e, "%s: attribute 'step' of /optim = %lld is negative", r->path, (long long)*step);
  if (rc >= 0) rc = r_num(r, *g, "/optim", "ema_decay", 0, ema_decay);
  xd_err why;
  if (rc >= 0 && check_ema_decay(*ema_decay, &why) != 0) rc = xd_fail(r->e, "%s: %s", r->path, why.msg);
  static const char *const hyper[] = {"lr", "beta1", "beta2", "eps", "momentum", "alpha", "weight_decay"};
  for (size_t i = 0; rc >= 0 && i < sizeof hyper / sizeof hyper[0]; i++) {
    double v = 0;
    rc = r_num(r, *g, "/optim", hyper[i], 0, &v);
    if (rc > 0 && !isfinite(v)) rc = xd_fail(r->e, "%s: attribute '%s' of /optim = %g is not finite", r->path, hyper[i], v);
  }
  if (rc < 0) {
    H5Gclose(*g);
    *g = -1;
    return -1;
  }
  return 0;
}

static int load_optim_impl(const char *path, const xd_model *m, xd_optimizer *opt, xd_err *e) {
  reader r;
  XD_TRY(open_ckpt(path, &r, e));
  hid_t g = -1;
  xd_opt_kind kind;
  int64_t step = 0;
  double ema_decay = 0;
  int rc = read_optim_attrs(&r, &g, &kind, &step, &ema_decay);
  if (g >= 0) H5Gclose(g);
  if (rc == 0 && kind != opt->c.kind)
    rc = xd_fail(e, "%s: optimizer state is for '%s', this run uses '%s'", path, xd_opt_name(kind), xd_opt_name(opt->c.kind));
  if (rc == 0 && (ema_decay > 0) != (opt->ema != NULL))
    rc = xd_fail(e, "%s: the run was %s an EMA of the weights, this one is %s (--ema)", path,
                 ema_decay > 0 ? "trained with" : "trained without", opt->ema ? "with" : "without");
  if (rc == 0) opt->step = step;
  char p[96];
  for (int gi = G_M; rc == 0 && gi <= G_EMA; gi++)
    for (int i = 0; rc == 0 && i < m->nlayers; i++) {
      tensor_desc t[4];
      int k = layer_tensors(&m->layers[i], t);
      for (int j = 0; rc == 0 && j < k; j++) {
        float *dst = (float *)tensor_src(m, opt, gi, &t[j]);
        if (!dst) continue;
        snprintf(p, sizeof p, "%s/%d/%s", group_path[gi], i, t[j].name);
        rc = read_tensor(&r, p, &t[j], &m->layers[i], i, t[j].nonneg || gi == G_V, dst);
      }
    }
  H5Fclose(r.f);
  return rc;
}

int xd_checkpoint_optim_info(const char *path, xd_opt_kind *kind, double *ema_decay, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  reader r;
  int rc = open_ckpt(path, &r, e);
  if (rc == 0) {
    hid_t g = -1;
    int64_t step = 0;
    rc = read_optim_attrs(&r, &g, kind, &step, ema_decay);
    if (g >= 0) H5Gclose(g);
    H5Fclose(r.f);
  }
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_checksummed(const char *path, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  reader r;
  int rc = open_ckpt(path, &r, e);
  if (rc == 0) {
    rc = r.version >= 2;
    H5Fclose(r.f);
  }
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_describe(const char *path, FILE *out, xd_err *e) {
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta *meta = malloc(sizeof *meta);
  if (!meta) return xd_fail(e, "%s: out of memory", path);
  if (xd_checkpoint_load(path, &m, &st, meta, e) != 0) {
    free(meta);
    return -1;
  }
  int checksummed = xd_checkpoint_checksummed(path, e);
  /* a full checkpoint: the optimizer state is read and checked too, so that `info` vouches for it all */
  int has_optim = 0;
  xd_opt_kind kind = XD_OPT_ADAM;
  double ema = 0;
  xd_optimizer opt;
  memset(&opt, 0, sizeof opt);
  int rc = checksummed < 0 ? -1 : 0;
  if (rc == 0) {
    xd_h5_quiet q = xd_h5_quiet_begin();
    hid_t f = xd_h5_open_read(path, e);
    has_optim = f >= 0 && H5Lexists(f, "/optim", H5P_DEFAULT) > 0;
    if (f >= 0) H5Fclose(f);
    else rc = -1;
    xd_h5_quiet_end(q);
  }
  if (rc == 0 && has_optim) {
    xd_opt_config c;
    xd_err why;
    rc = xd_checkpoint_optim_info(path, &kind, &ema, e);
    if (rc == 0) {
      c = xd_opt_defaults(kind, 1e-3f);
      if (xd_opt_alloc(&opt, &c, m.nparams, &why) != 0 ||
          (ema > 0 && xd_opt_ema_init(&opt, ema, m.params, m.buffers, m.nbuffers, &why) != 0))
        rc = xd_fail(e, "%s: %s", path, why.msg);
    }
    if (rc == 0) rc = xd_checkpoint_load_optim(path, &m, &opt, e);
  }
  if (rc == 0) {
    fprintf(out, "%s: xray-dp checkpoint (%s)\n", path, has_optim ? "full training state" : "weights only");
    fprintf(out, "  input %dx%dx%d, classes:", m.in_c, m.in_h, m.in_w);
    for (int i = 0; i < meta->nclasses; i++) fprintf(out, " %s", meta->class_names[i]);
    char best[96];
    if (st.best_epoch > 0)
      snprintf(best, sizeof best, "best epoch %lld (%s %.6g)", (long long)st.best_epoch,
               meta->monitor[0] ? meta->monitor : "-", st.best_metric);
    else
      snprintf(best, sizeof best, "best epoch 0 (none yet)");
    fprintf(out, "\n  epoch %lld, step %lld, %s, threshold %.4f%s\n", (long long)st.epoch, (long long)st.step, best,
            st.threshold, st.stopped ? ", stopped early" : st.threshold_chosen ? "" : " (not chosen: no val split)");
    if (has_optim) {
      fprintf(out, "  optimizer: %s, step %lld", xd_opt_name(kind), (long long)opt.step);
      if (ema > 0) fprintf(out, ", weight EMA (decay %g)", ema);
      fprintf(out, "\n");
    }
    fprintf(out, "  checksums: %s\n",
            checksummed ? "Fletcher-32 on every tensor, checksummed metadata (all verified)"
                        : "none (a version 1 checkpoint, written before checksums; values checked)");
    if (meta->command[0]) fprintf(out, "  command: %s\n", meta->command);
    if (meta->data[0]) fprintf(out, "  data: %s\n", meta->data);
    xd_model_summary(&m, out);
  }
  xd_opt_free(&opt);
  xd_model_free(&m);
  free(meta);
  return rc;
}

int xd_checkpoint_load(const char *path, xd_model *m, xd_train_state *st, xd_ckpt_meta *meta, xd_err *e) {
  /* our messages only: HDF5 would print its error stack for every missing object */
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_impl(path, m, st, meta, e);
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_load_weights(const char *path, xd_model *m, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_weights_impl(path, m, e);
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_load_optim(const char *path, const xd_model *m, xd_optimizer *opt, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_optim_impl(path, m, opt, e);
  xd_h5_quiet_end(q);
  return rc;
}
