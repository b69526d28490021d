#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"

#define XD_F32_BLOCK 64 /* images converted per read in xd_dataset_read_f32 */

struct xd_dataset {
  char path[4096], split[16];
  hid_t file, images, paths, str_type;
  xd_dataset_info info;
  uint8_t *labels; /* all labels, validated at open */
  uint8_t *scratch;
};

static const char *const split_names[3] = {"train", "val", "test"};

void xd_dataset_close(xd_dataset *d) {
  if (!d) return;
  xd_h5_quiet q = xd_h5_quiet_begin();
  if (d->str_type >= 0) H5Tclose(d->str_type);
  if (d->paths >= 0) H5Dclose(d->paths);
  if (d->images >= 0) H5Dclose(d->images);
  if (d->file >= 0) H5Fclose(d->file);
  xd_h5_quiet_end(q);
  free(d->labels);
  xd_free(d->scratch);
  free(d);
}

const xd_dataset_info *xd_dataset_get_info(const xd_dataset *d) { return &d->info; }

static int read_root(xd_dataset *d, xd_err *e) {
  const char *p = d->path;
  char fmt[64];
  int version = 0;
  xd_dataset_info *in = &d->info;
  if (xd_h5_attr_read_str(d->file, "format", fmt, sizeof fmt) != 0)
    return xd_fail(e, "%s: not an xray-dp dataset (no root attribute 'format')", p);
  if (strcmp(fmt, "xray-dp-dataset") != 0)
    return xd_fail(e, "%s: not an xray-dp dataset (format is '%s')", p, fmt);
  if (xd_h5_attr_read_int(d->file, "version", &version) != 0)
    return xd_fail(e, "%s: missing or invalid root attribute 'version'", p);
  if (version != 1) return xd_fail(e, "%s: unsupported dataset version %d (this build reads 1)", p, version);
  if (xd_h5_attr_read_strs(d->file, "class_names", &in->class_names[0][0], XD_MAX_CLASSES, XD_CLASS_NAME_MAX,
                           &in->nclasses) != 0)
    return in->nclasses < 0
               ? xd_fail(e, "%s: more than %d classes in 'class_names'", p, XD_MAX_CLASSES)
               : xd_fail(e, "%s: missing or invalid root attribute 'class_names' (array of strings)", p);
  if (in->nclasses < 1) return xd_fail(e, "%s: 'class_names' is empty", p);
  if (xd_h5_attr_read_int(d->file, "height", &in->height) != 0 ||
      xd_h5_attr_read_int(d->file, "width", &in->width) != 0 ||
      xd_h5_attr_read_int(d->file, "channels", &in->channels) != 0)
    return xd_fail(e, "%s: missing or invalid root attribute 'height', 'width' or 'channels'", p);
  if (in->height <= 0 || in->width <= 0 || in->channels != 1)
    return xd_fail(e, "%s: invalid image geometry %dx%d with %d channels (need channels=1)", p, in->height,
                   in->width, in->channels);
  if (xd_h5_attr_read_str(d->file, "source", in->source, sizeof in->source) != 0) in->source[0] = '\0';
  return 0;
}

/* Opens /split/name and checks that it is an unsigned 8-bit integer dataset of the given rank;
 * dims receives its shape. */
static hid_t open_u8(xd_dataset *d, const char *name, int rank, hsize_t *dims, xd_err *e) {
  char full[64];
  snprintf(full, sizeof full, "/%s/%s", d->split, name);
  if (H5Lexists(d->file, full, H5P_DEFAULT) <= 0) return xd_fail(e, "%s: missing dataset %s", d->path, full);
  hid_t ds = H5Dopen2(d->file, full, H5P_DEFAULT);
  if (ds < 0) return xd_fail(e, "%s: %s is not a dataset", d->path, full);
  hid_t t = H5Dget_type(ds), s = H5Dget_space(ds);
  int ok_type = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
  int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
  if (r == rank) H5Sget_simple_extent_dims(s, dims, NULL);
  if (t >= 0) H5Tclose(t);
  if (s >= 0) H5Sclose(s);
  if (!ok_type) {
    H5Dclose(ds);
    return xd_fail(e, "%s: %s has the wrong dtype (need uint8)", d->path, full);
  }
  if (r != rank) {
    H5Dclose(ds);
    return xd_fail(e, "%s: %s has rank %d (need %d)", d->path, full, r, rank);
  }
  return ds;
}

static int open_split(xd_dataset *d, xd_err *e) {
  const char *p = d->path, *sp = d->split;
  xd_dataset_info *in = &d->info;
  char grp[32];
  snprintf(grp, sizeof grp, "/%s", sp);
  if (H5Lexists(d->file, grp, H5P_DEFAULT) <= 0) {
    char have[64] = "";
    static const char *const all[3] = {"train", "val", "test"};
    for (int i = 0; i < 3; i++) {
      char g[16];
      snprintf(g, sizeof g, "/%s", all[i]);
      if (H5Lexists(d->file, g, H5P_DEFAULT) > 0)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", have[0] ? ", " : "", all[i]);
    }
    return xd_fail(e, "%s: no split '%s' in the file (it has: %s)", p, sp, have[0] ? have : "none");
  }
  hsize_t idims[3] = {0, 0, 0}, ldims[1] = {0}, pdims[1] = {0};
  d->images = open_u8(d, "images", 3, idims, e);
  if (d->images < 0) return -1;
  if ((int64_t)idims[1] != in->height || (int64_t)idims[2] != in->width)
    return xd_fail(e, "%s: /%s/images has shape [%llu,%llu,%llu] but the root attributes say %dx%d", p, sp,
                   (unsigned long long)idims[0], (unsigned long long)idims[1], (unsigned long long)idims[2],
                   in->height, in->width);
  hid_t lab = open_u8(d, "labels", 1, ldims, e);
  if (lab < 0) return -1;
  in->n = (int64_t)idims[0];
  if (ldims[0] != idims[0]) {
    H5Dclose(lab);
    return xd_fail(e, "%s: /%s/labels has %llu rows but /%s/images has %llu", p, sp,
                   (unsigned long long)ldims[0], sp, (unsigned long long)idims[0]);
  }
  d->labels = malloc((size_t)in->n + 1);
  herr_t rc = d->labels ? H5Dread(lab, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->labels) : -1;
  H5Dclose(lab);
  if (rc < 0) return xd_fail(e, "%s: cannot read /%s/labels", p, sp);
  for (int64_t i = 0; i < in->n; i++)
    if (d->labels[i] >= in->nclasses)
      return xd_fail(e, "%s: /%s/labels[%lld] = %d is out of range (%d classes)", p, sp, (long long)i,
                     d->labels[i], in->nclasses);
  char full[64];
  snprintf(full, sizeof full, "/%s/paths", sp);
  if (H5Lexists(d->file, full, H5P_DEFAULT) <= 0) return xd_fail(e, "%s: missing dataset %s", p, full);
  d->paths = H5Dopen2(d->file, full, H5P_DEFAULT);
  if (d->paths < 0) return xd_fail(e, "%s: %s is not a dataset", p, full);
  hid_t t = H5Dget_type(d->paths), s = H5Dget_space(d->paths);
  int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0 && s >= 0 &&
           H5Sget_simple_extent_ndims(s) == 1;
  if (ok) H5Sget_simple_extent_dims(s, pdims, NULL);
  if (t >= 0) H5Tclose(t);
  if (s >= 0) H5Sclose(s);
  if (!ok) return xd_fail(e, "%s: %s must be a 1-D array of variable-length strings", p, full);
  if (pdims[0] != idims[0])
    return xd_fail(e, "%s: %s has %llu rows but /%s/images has %llu", p, full, (unsigned long long)pdims[0], sp,
                   (unsigned long long)idims[0]);
  d->str_type = H5Tcopy(H5T_C_S1);
  if (d->str_type < 0 || H5Tset_size(d->str_type, H5T_VARIABLE) < 0)
    return xd_fail_at(e, __FILE__, __LINE__, "%s: HDF5 string type", p);
  d->scratch = xd_alloc((size_t)XD_F32_BLOCK * (size_t)in->height * (size_t)in->width, "read buffer", e);
  return d->scratch ? 0 : -1;
}

int xd_dataset_open(xd_dataset **out, const char *path, const char *split, xd_err *e) {
  *out = NULL;
  if (strlen(split) >= 16 || strchr(split, '/')) return xd_fail(e, "%s: invalid split name '%s'", path, split);
  xd_dataset *d = calloc(1, sizeof *d);
  if (!d) return xd_fail(e, "%s: out of memory", path);
  d->file = d->images = d->paths = d->str_type = -1;
  snprintf(d->path, sizeof d->path, "%s", path);
  snprintf(d->split, sizeof d->split, "%s", split);
  d->file = xd_h5_open_read(path, e);
  if (d->file < 0) {
    free(d);
    return -1;
  }
  xd_h5_quiet q = xd_h5_quiet_begin();
  int rc = read_root(d, e);
  if (rc == 0) rc = open_split(d, e);
  xd_h5_quiet_end(q);
  if (rc != 0) {
    xd_dataset_close(d);
    return -1;
  }
  *out = d;
  return 0;
}

int xd_dataset_splits(const char *path, char names[3][8], xd_err *e) {
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  xd_h5_quiet q = xd_h5_quiet_begin();
  int n = 0;
  for (int i = 0; i < 3; i++)
    if (H5Lexists(f, split_names[i], H5P_DEFAULT) > 0) snprintf(names[n++], 8, "%s", split_names[i]);
  H5Fclose(f);
  xd_h5_quiet_end(q);
  return n;
}

int xd_dataset_has_split(const char *path, const char *split, xd_err *e) {
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  xd_h5_quiet q = xd_h5_quiet_begin();
  int has = strchr(split, '/') == NULL && H5Lexists(f, split, H5P_DEFAULT) > 0;
  H5Fclose(f);
  xd_h5_quiet_end(q);
  return has;
}

static int check_range(const xd_dataset *d, int64_t a, int64_t b, xd_err *e) {
  if (a < 0 || b < a || b > d->info.n)
    return xd_fail(e, "%s: range [%lld, %lld) outside /%s (%lld images)", d->path, (long long)a, (long long)b,
                   d->split, (long long)d->info.n);
  return 0;
}

int xd_dataset_read_u8(xd_dataset *d, int64_t a, int64_t b, uint8_t *images, uint8_t *labels, xd_err *e) {
  XD_TRY(check_range(d, a, b, e));
  if (labels) memcpy(labels, d->labels + a, (size_t)(b - a));
  if (b == a || !images) return 0;
  hsize_t start[3] = {(hsize_t)a, 0, 0}, count[3] = {(hsize_t)(b - a), (hsize_t)d->info.height,
                                                     (hsize_t)d->info.width};
  xd_h5_quiet q = xd_h5_quiet_begin();
  hid_t fs = H5Dget_space(d->images), ms = H5Screate_simple(3, count, NULL);
  herr_t rc = -1;
  if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    rc = H5Dread(d->images, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, images);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  xd_h5_quiet_end(q);
  if (rc < 0)
    return xd_fail(e, "%s: cannot read /%s/images [%lld, %lld) (file corrupt?)", d->path, d->split, (long long)a,
                   (long long)b);
  return 0;
}

int xd_dataset_read_f32(xd_dataset *d, int64_t a, int64_t b, float *images, uint8_t *labels, xd_err *e) {
  XD_TRY(check_range(d, a, b, e));
  if (labels) memcpy(labels, d->labels + a, (size_t)(b - a));
  if (!images) return 0;
  float lut[256];
  for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f;
  size_t hw = (size_t)d->info.height * (size_t)d->info.width;
  for (int64_t i = a; i < b; i += XD_F32_BLOCK) {
    int64_t j = i + XD_F32_BLOCK < b ? i + XD_F32_BLOCK : b;
    XD_TRY(xd_dataset_read_u8(d, i, j, d->scratch, NULL, e));
    float *dst = images + (size_t)(i - a) * hw;
    size_t m = (size_t)(j - i) * hw;
    for (size_t k = 0; k < m; k++) dst[k] = lut[d->scratch[k]];
  }
  return 0;
}

int xd_dataset_read_path(xd_dataset *d, int64_t i, char *buf, size_t n, xd_err *e) {
  XD_TRY(check_range(d, i, i + 1, e));
  hsize_t start[1] = {(hsize_t)i}, count[1] = {1};
  char *s = NULL;
  xd_h5_quiet q = xd_h5_quiet_begin();
  hid_t fs = H5Dget_space(d->paths), ms = H5Screate_simple(1, count, NULL);
  herr_t rc = -1;
  if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    rc = H5Dread(d->paths, d->str_type, ms, fs, H5P_DEFAULT, &s);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  xd_h5_quiet_end(q);
  if (rc < 0) return xd_fail(e, "%s: cannot read /%s/paths[%lld]", d->path, d->split, (long long)i);
  if (n) snprintf(buf, n, "%s", s ? s : "");
  H5free_memory(s);
  return 0;
}

void xd_shard_range(int64_t n, int rank, int nranks, int64_t *a, int64_t *b) {
  int64_t base = n / nranks, extra = n % nranks;
  *a = rank * base + (rank < extra ? rank : extra);
  *b = *a + base + (rank < extra ? 1 : 0);
}
