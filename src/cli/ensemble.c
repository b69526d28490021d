/* Several checkpoints scored as one model; see ensemble.h. */
#include "ensemble.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "metrics.h"

int cli_ensemble_load(cli_ensemble *E, xd_err *e) {
  E->loaded = E->have_ws = 0;
  E->m = calloc((size_t)E->k, sizeof *E->m);
  E->ws = calloc((size_t)E->k, sizeof *E->ws);
  E->st = calloc((size_t)E->k, sizeof *E->st);
  E->meta = calloc((size_t)E->k, sizeof *E->meta);
  if (!E->m || !E->ws || !E->st || !E->meta) return xd_fail(e, "out of memory loading %d checkpoints", E->k);
  for (int j = 0; j < E->k; j++) {
    XD_TRY(xd_checkpoint_load(E->path[j], &E->m[j], &E->st[j], &E->meta[j], e));
    E->loaded = j + 1;
    if (j == 0) continue;
    const xd_model *a = &E->m[0], *b = &E->m[j];
    const xd_ckpt_meta *ma = &E->meta[0], *mb = &E->meta[j];
    if (a->in_c != b->in_c || a->in_h != b->in_h || a->in_w != b->in_w)
      return xd_fail(e, "%s: input %dx%dx%d, but %s has %dx%dx%d (an ensemble needs one input size)", E->path[j],
                     b->in_c, b->in_h, b->in_w, E->path[0], a->in_c, a->in_h, a->in_w);
    int same = ma->nclasses == mb->nclasses;
    for (int c = 0; same && c < ma->nclasses; c++) same = !strcmp(ma->class_names[c], mb->class_names[c]);
    if (!same) {
      char ca[256] = "", cb[256] = "";
      for (int c = 0; c < ma->nclasses; c++)
        snprintf(ca + strlen(ca), sizeof ca - strlen(ca), "%s%s", c ? "," : "", ma->class_names[c]);
      for (int c = 0; c < mb->nclasses; c++)
        snprintf(cb + strlen(cb), sizeof cb - strlen(cb), "%s%s", c ? "," : "", mb->class_names[c]);
      return xd_fail(e, "%s: classes [%s], but %s has [%s] (an ensemble needs the same class names)", E->path[j], cb,
                     E->path[0], ca);
    }
    if (a->nout != b->nout)
      return xd_fail(e, "%s: %d outputs, but %s has %d (an ensemble needs the same output layer)", E->path[j], b->nout,
                     E->path[0], a->nout);
  }
  return 0;
}

int cli_ensemble_workspaces(cli_ensemble *E, int batch, xd_err *e) {
  for (int j = 0; j < E->k; j++) {
    XD_TRY(xd_workspace_alloc(&E->ws[j], &E->m[j], batch, e));
    E->have_ws = j + 1;
  }
  return 0;
}

void cli_ensemble_free(cli_ensemble *E) {
  for (int j = 0; j < E->have_ws; j++) xd_workspace_free(&E->ws[j], &E->m[j]);
  for (int j = 0; j < E->loaded; j++) xd_model_free(&E->m[j]);
  free(E->m);
  free(E->ws);
  free(E->st);
  free(E->meta);
  E->m = NULL;
  E->ws = NULL;
  E->st = NULL;
  E->meta = NULL;
  E->loaded = E->have_ws = 0;
}

void cli_ensemble_names(const cli_ensemble *E, char *buf, size_t n) {
  if (n == 0) return;
  buf[0] = 0;
  for (int j = 0; j < E->k; j++) {
    size_t l = strlen(buf);
    if (l + 1 >= n) break;
    snprintf(buf + l, n - l, "%s%s", j ? " + " : "", E->path[j]);
  }
}

int cli_ensemble_check_data(const cli_ensemble *E, const xd_dataset_info *info, const char *data_path, xd_err *e) {
  const xd_model *m = &E->m[0];
  if (info->height != m->in_h || info->width != m->in_w)
    return xd_fail(e, "%s: images are %dx%d but %s expects %dx%d", data_path, info->height, info->width, E->path[0],
                   m->in_h, m->in_w);
  if (info->channels != m->in_c)
    return xd_fail(e, "%s: images have %d channel(s) but %s expects %d", data_path, info->channels, E->path[0],
                   m->in_c);
  return 0;
}

/* The checkpoint's root attribute train_prior, or NAN. */
static double attr_train_prior(const char *path) {
  double v = NAN;
  xd_h5_quiet q = xd_h5_quiet_begin();
  hid_t f = xd_h5_open_read(path, NULL);
  if (f >= 0) {
    if (H5Aexists(f, "train_prior") > 0) {
      hid_t a = H5Aopen(f, "train_prior", H5P_DEFAULT);
      if (a >= 0) {
        hid_t sp = H5Aget_space(a);
        if (sp < 0 || H5Sget_simple_extent_npoints(sp) != 1 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) v = NAN;
        if (sp >= 0) H5Sclose(sp);
        H5Aclose(a);
      }
    }
    H5Fclose(f);
  }
  xd_h5_quiet_end(q);
  return v > 0 && v < 1 ? v : NAN;
}

/* Positive share of the train split of the dataset file the checkpoint was trained on (its `data`
 * attribute), or NAN when that file cannot be read. Labels only: no image is read. */
static double data_train_share(const char *data) {
  if (!data[0]) return NAN;
  xd_dataset *ds = NULL;
  xd_err e;
  if (xd_dataset_open(&ds, data, "train", &e)) return NAN;
  const xd_dataset_info *info = xd_dataset_get_info(ds);
  double v = NAN;
  uint8_t *lab = info->nclasses == 2 && info->n > 0 ? malloc((size_t)info->n) : NULL;
  if (lab && xd_dataset_read_u8(ds, 0, info->n, NULL, lab, &e) == 0) {
    int64_t pos = 0;
    for (int64_t i = 0; i < info->n; i++) pos += lab[i] != 0;
    v = (double)pos / (double)info->n;
  }
  free(lab);
  xd_dataset_close(ds);
  return v > 0 && v < 1 ? v : NAN;
}

double cli_ensemble_train_prior(const cli_ensemble *E, const char **from) {
  double sum = 0;
  *from = "checkpoint";
  for (int j = 0; j < E->k; j++) {
    double v = attr_train_prior(E->path[j]);
    if (isnan(v)) {
      v = data_train_share(E->meta[j].data);
      *from = "training data";
    }
    if (isnan(v)) return NAN;
    sum += v;
  }
  return sum / E->k;
}

int cli_ensemble_score_range(cli_ensemble *E, xd_dataset *ds, int64_t a, int64_t b, int tta, float *prob,
                             uint8_t *lab, xd_err *e) {
  const xd_model *m = &E->m[0];
  const int64_t B = E->ws[0].batch * 4 > 256 ? E->ws[0].batch * 4 : 256; /* read in blocks, not all at once */
  const size_t px = (size_t)m->in_c * m->in_h * m->in_w;
  uint8_t *img = malloc((size_t)B * px);
  if (!img) return xd_fail(e, "out of memory reading images");
  int rc = 0;
  for (int64_t i = a; i < b && rc == 0; i += B) {
    int64_t j = i + B < b ? i + B : b;
    rc = xd_dataset_read_u8(ds, i, j, img, lab ? lab + (i - a) : NULL, e);
    if (rc == 0) rc = xd_infer_ensemble(E->k, E->m, E->ws, j - i, img, tta, prob + (i - a), e);
  }
  free(img);
  return rc;
}

int cli_ensemble_val_threshold(cli_ensemble *E, const char *data_path, int tta, double *thr, xd_err *e) {
  xd_dataset *ds = NULL;
  int has = xd_dataset_has_split(data_path, "val", e);
  if (has < 0) return -1;
  if (has == 0)
    return xd_fail(e, "%s: no val split to choose the threshold of %s on (give --val-data V.h5 or --threshold T)",
                   data_path, E->k > 1 ? "an ensemble" : "--tta");
  XD_TRY(xd_dataset_open(&ds, data_path, "val", e));
  const xd_dataset_info *info = xd_dataset_get_info(ds);
  int64_t n = info->n;
  float *p = NULL;
  uint8_t *y = NULL;
  int rc = cli_ensemble_check_data(E, info, data_path, e);
  if (rc == 0 && n == 0) rc = xd_fail(e, "%s: the val split is empty", data_path);
  if (rc == 0 && info->nclasses != 2)
    rc = xd_fail(e, "%s: choosing a threshold needs 2 classes, the file has %d", data_path, info->nclasses);
  if (rc == 0) {
    char what[4200];
    snprintf(what, sizeof what, "%s: the probabilities of %lld val images", data_path, (long long)n);
    rc = xd_mem_check(xd_mul_sat((uint64_t)n, sizeof *p + 1), what, e);
  }
  if (rc == 0) {
    p = malloc((size_t)n * sizeof *p);
    y = malloc((size_t)n);
    if (!p || !y) rc = xd_fail(e, "%s: out of memory for %lld val probabilities", data_path, (long long)n);
  }
  if (rc == 0) rc = cli_ensemble_score_range(E, ds, 0, n, tta, p, y, e);
  for (int64_t i = 0; rc == 0 && i < n; i++) {
    if (p[i] >= 0 && p[i] <= 1) continue;
    char path[4096], names[2048];
    xd_err pe;
    if (xd_dataset_read_path(ds, i, path, sizeof path, &pe)) snprintf(path, sizeof path, "#%lld", (long long)i);
    cli_ensemble_names(E, names, sizeof names);
    rc = xd_fail(e, "%s [val] image %lld (%s): %s gives the probability %g, not a number in [0, 1] (non-finite "
                 "weights or activations)", data_path, (long long)i, path, names, isnan(p[i]) ? NAN : (double)p[i]);
  }
  if (rc == 0) {
    *thr = xd_threshold_for_sensitivity(n, p, y, 0.95);
    if (isnan(*thr)) rc = xd_fail(e, "%s: no threshold reaches 95%% sensitivity on the val split (no %s case there?)", data_path,
                   info->class_names[1]);
  }
  free(p);
  free(y);
  xd_dataset_close(ds);
  return rc;
}
