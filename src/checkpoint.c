#include "checkpoint.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

#define CKPT_FORMAT "xray-dp-checkpoint"
#define CKPT_VERSION 1

/* ---- small HDF5 helpers (errors carry file:line: these calls fail only on I/O or library trouble) ---- */

static int attr_write(hid_t loc, const char *name, hid_t mtype, hid_t ftype, const void *v, xd_err *e) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = a >= 0 ? H5Awrite(a, mtype, v) : -1;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  XD_CHECK(rc >= 0, e, "writing attribute %s", name);
  return 0;
}
static int attr_i64(hid_t loc, const char *name, int64_t v, xd_err *e) {
  return attr_write(loc, name, H5T_NATIVE_INT64, H5T_STD_I64LE, &v, e);
}
static int attr_f64(hid_t loc, const char *name, double v, xd_err *e) {
  return attr_write(loc, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, &v, e);
}
static int attr_str(hid_t loc, const char *name, const char *v, xd_err *e) {
  XD_CHECK(xd_h5_attr_write_str(loc, name, v) == 0, e, "writing attribute %s", name);
  return 0;
}
static int attr_strs(hid_t loc, const char *name, int n, const char names[][XD_CLASS_NAME_MAX], xd_err *e) {
  const char *ptrs[XD_MAX_CLASSES];
  for (int i = 0; i < n; i++) ptrs[i] = names[i];
  XD_CHECK(xd_h5_attr_write_strs(loc, name, ptrs, n) == 0, e, "writing attribute %s", name);
  return 0;
}

static int read_attr_num(hid_t loc, const char *name, hid_t mtype, void *v) {
  if (H5Aexists(loc, name) <= 0) return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return -1;
  herr_t rc = H5Aread(a, mtype, v);
  H5Aclose(a);
  return rc < 0 ? -1 : 0;
}
static int read_attr_str(hid_t loc, const char *name, char *buf, size_t n) {
  buf[0] = 0;
  return xd_h5_attr_read_str(loc, name, buf, n);
}

static int write_tensor(hid_t file, const char *path, int rank, const hsize_t *dims, const float *data, xd_err *e) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(file, path, H5T_IEEE_F32LE, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = d >= 0 ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : -1;
  if (d >= 0) H5Dclose(d);
  H5Sclose(sp);
  H5Pclose(lcpl);
  XD_CHECK(rc >= 0, e, "writing %s", path);
  return 0;
}

/* Reads a float tensor of exactly n elements; a missing dataset or a wrong shape is a user-facing error. */
static int read_tensor(hid_t file, const char *fname, const char *path, float *out, size_t n, xd_err *e) {
  if (H5Lexists(file, path, H5P_DEFAULT) <= 0) {
    /* H5Lexists fails on a missing intermediate group; treat both as "missing" */
    return xd_fail(e, "%s: missing dataset %s", fname, path);
  }
  hid_t d = H5Dopen2(file, path, H5P_DEFAULT);
  if (d < 0) return xd_fail(e, "%s: cannot open %s", fname, path);
  hid_t sp = H5Dget_space(d);
  hssize_t np = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  int rc = 0;
  if (np != (hssize_t)n)
    rc = xd_fail(e, "%s: %s has %lld values, the model needs %zu", fname, path, (long long)np, n);
  else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    rc = xd_fail(e, "%s: cannot read %s", fname, path);
  H5Dclose(d);
  return rc;
}

/* Dataset names and shapes of layer i's tensors, in PyTorch's layout. Returns the count (0..4). */
typedef struct { const char *name; int rank; hsize_t dims[4]; size_t off, n; int buffer; } tensor_desc;

static int layer_tensors(const xd_layer *L, tensor_desc t[4]) {
  int k = 0;
  if (L->kind == XD_L_CONV) {
    t[k++] = (tensor_desc){"weight", 4, {(hsize_t)L->out_c, (hsize_t)L->in_c, (hsize_t)L->p.conv.kh, (hsize_t)L->p.conv.kw}, L->w_off, L->w_n, 0};
    if (L->b_n) t[k++] = (tensor_desc){"bias", 1, {(hsize_t)L->out_c}, L->b_off, L->b_n, 0};
  } else if (L->kind == XD_L_DENSE) {
    t[k++] = (tensor_desc){"weight", 2, {(hsize_t)L->out_c, (hsize_t)L->in_c}, L->w_off, L->w_n, 0};
    t[k++] = (tensor_desc){"bias", 1, {(hsize_t)L->out_c}, L->b_off, L->b_n, 0};
  } else if (L->kind == XD_L_BATCHNORM) {
    hsize_t c = (hsize_t)L->in_c;
    t[k++] = (tensor_desc){"weight", 1, {c}, L->w_off, L->w_n, 0};
    t[k++] = (tensor_desc){"bias", 1, {c}, L->b_off, L->b_n, 0};
    t[k++] = (tensor_desc){"running_mean", 1, {c}, L->rm_off, (size_t)c, 1};
    t[k++] = (tensor_desc){"running_var", 1, {c}, L->rv_off, (size_t)c, 1};
  }
  return k;
}

static int write_all(hid_t f, const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                     const xd_ckpt_meta *meta, xd_err *e) {
  char path[128];
  for (int i = 0; i < m->nlayers; i++) {
    tensor_desc t[4];
    int k = layer_tensors(&m->layers[i], t);
    for (int j = 0; j < k; j++) {
      const float *src = (t[j].buffer ? m->buffers : m->params) + t[j].off;
      snprintf(path, sizeof path, "/params/%d/%s", i, t[j].name);
      XD_TRY(write_tensor(f, path, t[j].rank, t[j].dims, src, e));
      if (opt && opt->ema) {
        snprintf(path, sizeof path, "/optim/ema/%d/%s", i, t[j].name);
        XD_TRY(write_tensor(f, path, t[j].rank, t[j].dims, (t[j].buffer ? opt->ema_buf : opt->ema) + t[j].off, e));
      }
      if (opt && !t[j].buffer) {
        snprintf(path, sizeof path, "/optim/m/%d/%s", i, t[j].name);
        XD_TRY(write_tensor(f, path, t[j].rank, t[j].dims, opt->m + t[j].off, e));
        snprintf(path, sizeof path, "/optim/v/%d/%s", i, t[j].name);
        XD_TRY(write_tensor(f, path, t[j].rank, t[j].dims, opt->v + t[j].off, e));
      }
    }
  }
  XD_TRY(attr_str(f, "format", CKPT_FORMAT, e));
  XD_TRY(attr_i64(f, "version", CKPT_VERSION, e));
  XD_TRY(attr_str(f, "model", m->text, e));
  XD_TRY(attr_i64(f, "channels", m->in_c, e));
  XD_TRY(attr_i64(f, "height", m->in_h, e));
  XD_TRY(attr_i64(f, "width", m->in_w, e));
  if (meta) {
    XD_TRY(attr_str(f, "command", meta->command, e));
    XD_TRY(attr_str(f, "monitor", meta->monitor, e));
    XD_TRY(attr_str(f, "data", meta->data, e));
    if (meta->config[0]) XD_TRY(attr_str(f, "train_config", meta->config, e));
    if (meta->nclasses > 0) XD_TRY(attr_strs(f, "class_names", meta->nclasses, meta->class_names, e));
    if (meta->train_prior > 0 && meta->train_prior < 1) XD_TRY(attr_f64(f, "train_prior", meta->train_prior, e));
  }
  if (st) {
    XD_TRY(attr_i64(f, "step", st->step, e));
    XD_TRY(attr_i64(f, "epoch", st->epoch, e));
    XD_TRY(attr_i64(f, "step_in_epoch", st->step_in_epoch, e));
    XD_TRY(attr_i64(f, "seed", (int64_t)st->seed, e));
    XD_TRY(attr_f64(f, "best_metric", st->best_metric, e));
    XD_TRY(attr_i64(f, "best_epoch", st->best_epoch, e));
    XD_TRY(attr_i64(f, "bad_epochs", st->bad_epochs, e));
    XD_TRY(attr_f64(f, "threshold", st->threshold, e));
    XD_TRY(attr_f64(f, "partial_loss", st->part_loss, e));
    XD_TRY(attr_f64(f, "partial_correct", st->part_correct, e));
    XD_TRY(attr_f64(f, "partial_count", st->part_count, e));
    XD_TRY(attr_f64(f, "partial_seconds", st->part_seconds, e));
    XD_TRY(attr_i64(f, "stopped", st->stopped, e));
  }
  if (opt) {
    hid_t g = H5Gopen2(f, "/optim", H5P_DEFAULT);
    if (g < 0) { /* a model without parameters still records the optimizer */
      g = H5Gcreate2(f, "/optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    }
    XD_CHECK(g >= 0, e, "creating /optim");
    int rc = attr_str(g, "kind", xd_opt_name(opt->c.kind), e) || attr_i64(g, "step", opt->step, e) ||
             attr_f64(g, "lr", opt->c.lr, e) || attr_f64(g, "beta1", opt->c.beta1, e) ||
             attr_f64(g, "beta2", opt->c.beta2, e) || attr_f64(g, "eps", opt->c.eps, e) ||
             attr_f64(g, "momentum", opt->c.momentum, e) || attr_i64(g, "nesterov", opt->c.nesterov, e) ||
             attr_f64(g, "alpha", opt->c.alpha, e) || attr_f64(g, "weight_decay", opt->c.weight_decay, e) ||
             attr_f64(g, "ema_decay", opt->ema ? opt->ema_decay : 0.0, e);
    H5Gclose(g);
    if (rc) return -1;
  }
  return 0;
}

int xd_checkpoint_save(const char *path, const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                       const xd_ckpt_meta *meta, xd_err *e) {
  char tmp[4200];
  xd_tmp_name(path, tmp, sizeof tmp);
  xd_h5_quiet q = xd_h5_quiet_begin();
  /* no file locks: cluster filesystems often refuse them, and nobody else sees the temporary name */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
  if (fapl >= 0) H5Pclose(fapl);
  if (f < 0) {
    xd_h5_quiet_end(q);
    return xd_fail(e, "%s: cannot create checkpoint file (directory missing or not writable?)", tmp);
  }
  int rc = write_all(f, m, opt, st, meta, e);
  if (H5Fclose(f) < 0 && rc == 0) rc = xd_fail(e, "%s: error closing checkpoint (disk full?)", tmp);
  xd_h5_quiet_end(q);
  if (rc) {
    unlink(tmp);
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
    return xd_fail(e, "%s: checkpoint not written: %s", path, msg);
  }
  return xd_commit_file(tmp, path, e);
}

static hid_t open_ckpt(const char *path, xd_err *e) {
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  char fmt[64];
  if (read_attr_str(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, CKPT_FORMAT) != 0) {
    H5Fclose(f);
    xd_fail(e, "%s: not an xray-dp checkpoint (format attribute is '%s')", path, fmt);
    return -1;
  }
  return f;
}

int xd_checkpoint_probe(const char *path) {
  char fmt[64];
  if (xd_h5_file_format(path, fmt, sizeof fmt, NULL) != 0) return -1;
  return !strcmp(fmt, CKPT_FORMAT);
}

static int load_params(hid_t f, const char *path, xd_model *m, xd_err *e) {
  char p[128];
  for (int i = 0; i < m->nlayers; i++) {
    tensor_desc t[4];
    int k = layer_tensors(&m->layers[i], t);
    for (int j = 0; j < k; j++) {
      snprintf(p, sizeof p, "/params/%d/%s", i, t[j].name);
      XD_TRY(read_tensor(f, path, p, (t[j].buffer ? m->buffers : m->params) + t[j].off, t[j].n, e));
    }
  }
  return 0;
}

static void read_state(hid_t f, xd_train_state *st) {
  memset(st, 0, sizeof *st);
  st->threshold = 0.5;
  int64_t seed = 0;
  read_attr_num(f, "step", H5T_NATIVE_INT64, &st->step);
  read_attr_num(f, "epoch", H5T_NATIVE_INT64, &st->epoch);
  read_attr_num(f, "step_in_epoch", H5T_NATIVE_INT64, &st->step_in_epoch);
  read_attr_num(f, "seed", H5T_NATIVE_INT64, &seed);
  st->seed = (uint64_t)seed;
  read_attr_num(f, "best_metric", H5T_NATIVE_DOUBLE, &st->best_metric);
  read_attr_num(f, "best_epoch", H5T_NATIVE_INT64, &st->best_epoch);
  read_attr_num(f, "bad_epochs", H5T_NATIVE_INT64, &st->bad_epochs);
  read_attr_num(f, "threshold", H5T_NATIVE_DOUBLE, &st->threshold);
  read_attr_num(f, "partial_loss", H5T_NATIVE_DOUBLE, &st->part_loss);
  read_attr_num(f, "partial_correct", H5T_NATIVE_DOUBLE, &st->part_correct);
  read_attr_num(f, "partial_count", H5T_NATIVE_DOUBLE, &st->part_count);
  read_attr_num(f, "partial_seconds", H5T_NATIVE_DOUBLE, &st->part_seconds);
  read_attr_num(f, "stopped", H5T_NATIVE_INT64, &st->stopped);
}

static void read_meta(hid_t f, xd_ckpt_meta *meta) {
  memset(meta, 0, sizeof *meta);
  read_attr_str(f, "command", meta->command, sizeof meta->command);
  read_attr_str(f, "monitor", meta->monitor, sizeof meta->monitor);
  read_attr_str(f, "data", meta->data, sizeof meta->data);
  read_attr_str(f, "train_config", meta->config, sizeof meta->config);
  int n = 0;
  if (xd_h5_attr_read_strs(f, "class_names", &meta->class_names[0][0], XD_MAX_CLASSES, XD_CLASS_NAME_MAX, &n) != 0) n = 0;
  meta->nclasses = n;
}

static int load_impl(const char *path, xd_model *m, xd_train_state *st, xd_ckpt_meta *meta, xd_err *e) {
  hid_t f = open_ckpt(path, e);
  if (f < 0) return -1;
  char *text = NULL;
  int rc = 0;
  {
    /* model descriptions are at most 1 MiB (xd_model_from_arg) */
    size_t cap = (size_t)1 << 20;
    char *buf = malloc(cap);
    if (buf && read_attr_str(f, "model", buf, cap) == 0) text = xd_strdup(buf);
    free(buf);
  }
  if (!text) rc = xd_fail(e, "%s: checkpoint has no model description", path);
  char source[4200];
  snprintf(source, sizeof source, "%s (stored model)", path);
  if (rc == 0) rc = xd_model_build(m, text, source, e);
  free(text);
  if (rc == 0 && (rc = load_params(f, path, m, e)) != 0) xd_model_free(m);
  if (rc == 0 && st) read_state(f, st);
  if (rc == 0 && meta) read_meta(f, meta);
  H5Fclose(f);
  return rc;
}

static int load_weights_impl(const char *path, xd_model *m, xd_err *e) {
  hid_t f = open_ckpt(path, e);
  if (f < 0) return -1;
  int rc = load_params(f, path, m, e);
  H5Fclose(f);
  return rc;
}

static int load_optim_impl(const char *path, const xd_model *m, xd_optimizer *opt, xd_err *e) {
  hid_t f = open_ckpt(path, e);
  if (f < 0) return -1;
  int rc = 0;
  char p[128], kind[32] = "";
  hid_t g = H5Lexists(f, "/optim", H5P_DEFAULT) > 0 ? H5Gopen2(f, "/optim", H5P_DEFAULT) : -1;
  if (g < 0) rc = xd_fail(e, "%s: no optimizer state (is it a best.h5? --resume needs last.h5)", path);
  if (rc == 0) {
    read_attr_str(g, "kind", kind, sizeof kind);
    if (strcmp(kind, xd_opt_name(opt->c.kind)) != 0)
      rc = xd_fail(e, "%s: optimizer state is for '%s', this run uses '%s'", path, kind, xd_opt_name(opt->c.kind));
    read_attr_num(g, "step", H5T_NATIVE_INT64, &opt->step);
    double ema_decay = 0;
    read_attr_num(g, "ema_decay", H5T_NATIVE_DOUBLE, &ema_decay);
    if (rc == 0 && (ema_decay > 0) != (opt->ema != NULL))
      rc = xd_fail(e, "%s: the run was %s an EMA of the weights, this one is %s (--ema)", path,
                   ema_decay > 0 ? "trained with" : "trained without", opt->ema ? "with" : "without");
    H5Gclose(g);
  }
  for (int i = 0; rc == 0 && i < m->nlayers; i++) {
    tensor_desc t[4];
    int k = layer_tensors(&m->layers[i], t);
    for (int j = 0; rc == 0 && j < k; j++) {
      if (opt->ema) {
        snprintf(p, sizeof p, "/optim/ema/%d/%s", i, t[j].name);
        rc = read_tensor(f, path, p, (t[j].buffer ? opt->ema_buf : opt->ema) + t[j].off, t[j].n, e);
      }
      if (rc || t[j].buffer) continue;
      snprintf(p, sizeof p, "/optim/m/%d/%s", i, t[j].name);
      rc = read_tensor(f, path, p, opt->m + t[j].off, t[j].n, e);
      snprintf(p, sizeof p, "/optim/v/%d/%s", i, t[j].name);
      if (rc == 0) rc = read_tensor(f, path, p, opt->v + t[j].off, t[j].n, e);
    }
  }
  H5Fclose(f);
  return rc;
}

int xd_checkpoint_optim_info(const char *path, xd_opt_kind *kind, double *ema_decay, xd_err *e) {
  hid_t f = open_ckpt(path, e);
  if (f < 0) return -1;
  int rc = 0;
  char name[32] = "";
  *ema_decay = 0;
  hid_t g = H5Lexists(f, "/optim", H5P_DEFAULT) > 0 ? H5Gopen2(f, "/optim", H5P_DEFAULT) : -1;
  if (g < 0) rc = xd_fail(e, "%s: no optimizer state (a best.h5? only last.h5 has it)", path);
  if (rc == 0) {
    read_attr_str(g, "kind", name, sizeof name);
    read_attr_num(g, "ema_decay", H5T_NATIVE_DOUBLE, ema_decay);
    H5Gclose(g);
    if (xd_opt_parse(name, kind)) rc = xd_fail(e, "%s: unknown optimizer '%s'", path, name);
  }
  H5Fclose(f);
  return rc;
}

int xd_checkpoint_describe(const char *path, FILE *out, xd_err *e) {
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta meta;
  XD_TRY(xd_checkpoint_load(path, &m, &st, &meta, e));
  hid_t f = open_ckpt(path, e);
  int has_optim = f >= 0 && H5Lexists(f, "/optim", H5P_DEFAULT) > 0;
  if (f >= 0) H5Fclose(f);
  fprintf(out, "%s: xray-dp checkpoint (%s)\n", path, has_optim ? "full training state" : "weights only");
  fprintf(out, "  input %dx%dx%d, classes:", m.in_c, m.in_h, m.in_w);
  for (int i = 0; i < meta.nclasses; i++) fprintf(out, " %s", meta.class_names[i]);
  fprintf(out, "\n  epoch %lld, step %lld, best epoch %lld (%s %.6g), threshold %.4f%s\n", (long long)st.epoch,
          (long long)st.step, (long long)st.best_epoch, meta.monitor[0] ? meta.monitor : "-", st.best_metric,
          st.threshold, st.stopped ? ", stopped early" : "");
  if (meta.command[0]) fprintf(out, "  command: %s\n", meta.command);
  if (meta.data[0]) fprintf(out, "  data: %s\n", meta.data);
  xd_model_summary(&m, out);
  xd_model_free(&m);
  return 0;
}

int xd_checkpoint_load(const char *path, xd_model *m, xd_train_state *st, xd_ckpt_meta *meta, xd_err *e) {
  /* our messages only: HDF5 would print its error stack for every missing object */
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_impl(path, m, st, meta, e);
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_load_weights(const char *path, xd_model *m, xd_err *e) {
  /* our messages only: HDF5 would print its error stack for every missing object */
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_weights_impl(path, m, e);
  xd_h5_quiet_end(q);
  return rc;
}

int xd_checkpoint_load_optim(const char *path, const xd_model *m, xd_optimizer *opt, xd_err *e) {
  /* our messages only: HDF5 would print its error stack for every missing object */
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = load_optim_impl(path, m, opt, e);
  xd_h5_quiet_end(q);
  return rc;
}
