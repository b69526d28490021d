#include "h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

xd_h5_quiet xd_h5_quiet_begin(void) {
  xd_h5_quiet q = {NULL, NULL};
  H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return q;
}

void xd_h5_quiet_end(xd_h5_quiet q) { H5Eset_auto2(H5E_DEFAULT, q.func, q.data); }

int xd_h5_has_signature(const char *path) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  int found = 0;
  /* The superblock sits at 0 or after a user block of 512, 1024, 2048, ... bytes. */
  for (long off = 0; off <= (1L << 24) && !found; off = off ? off * 2 : 512) {
    unsigned char b[8];
    if (fseek(f, off, SEEK_SET) != 0 || fread(b, 1, 8, f) != 8) break;
    found = memcmp(b, sig, 8) == 0;
  }
  fclose(f);
  return found;
}

hid_t xd_h5_open_read(const char *path, xd_err *e) {
  struct stat st;
  if (stat(path, &st) != 0) return xd_fail(e, "%s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return xd_fail(e, "%s: is a directory, not an HDF5 file", path);
  if (!xd_h5_has_signature(path)) return xd_fail(e, "%s: not an HDF5 file", path);
  xd_h5_quiet q = xd_h5_quiet_begin();
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
  if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
#endif
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
  if (fapl >= 0) H5Pclose(fapl);
  xd_h5_quiet_end(q);
  if (f < 0) return xd_fail(e, "%s: HDF5 cannot open the file (corrupt or truncated?)", path);
  return f;
}

static hid_t vlen_str_type(void) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return -1;
  if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

static int write_attr(hid_t obj, const char *name, hid_t type, hid_t space, const void *data) {
  hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) return -1;
  herr_t rc = H5Awrite(a, type, data);
  H5Aclose(a);
  return rc < 0 ? -1 : 0;
}

int xd_h5_attr_write_str(hid_t obj, const char *name, const char *value) {
  return xd_h5_attr_write_strs(obj, name, &value, 0);
}

/* n == 0 means one scalar string. */
int xd_h5_attr_write_strs(hid_t obj, const char *name, const char *const *values, int n) {
  hid_t t = vlen_str_type();
  hsize_t dims[1] = {(hsize_t)n};
  hid_t s = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
  int rc = (t < 0 || s < 0) ? -1 : write_attr(obj, name, t, s, values);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  return rc;
}

int xd_h5_attr_write_int(hid_t obj, const char *name, int value) {
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = s < 0 ? -1 : write_attr(obj, name, H5T_STD_I32LE, s, &value);
  if (s >= 0) H5Sclose(s);
  return rc;
}

/* Reads all strings of a string attribute (scalar or 1-D) through a callback-free copy into out. */
static int read_strings(hid_t obj, const char *name, char *out, int max, size_t width, int *count) {
  int rc = -1;
  hid_t a = -1, ft = -1, sp = -1, mt = -1;
  if (H5Aexists(obj, name) <= 0) return -1;
  if ((a = H5Aopen(obj, name, H5P_DEFAULT)) < 0) goto done;
  if ((ft = H5Aget_type(a)) < 0 || H5Tget_class(ft) != H5T_STRING) goto done;
  if ((sp = H5Aget_space(a)) < 0) goto done;
  int rank = H5Sget_simple_extent_ndims(sp);
  hssize_t npts = H5Sget_simple_extent_npoints(sp);
  if (rank > 1 || npts < 0) goto done;
  *count = (int)npts;
  if (npts > max) {
    *count = -1;
    goto done;
  }
  if (H5Tis_variable_str(ft) > 0) {
    char **v = calloc((size_t)npts + 1, sizeof(char *));
    if (!v || (mt = vlen_str_type()) < 0 || H5Aread(a, mt, v) < 0) {
      free(v);
      goto done;
    }
    for (hssize_t i = 0; i < npts; i++) {
      snprintf(out + (size_t)i * width, width, "%s", v[i] ? v[i] : "");
      H5free_memory(v[i]);
    }
    free(v);
  } else {
    size_t sz = H5Tget_size(ft);
    char *raw = calloc((size_t)npts + 1, sz + 1);
    if (!raw || (mt = H5Tcopy(ft)) < 0 || H5Aread(a, mt, raw) < 0) {
      free(raw);
      goto done;
    }
    for (hssize_t i = 0; i < npts; i++) {
      size_t len = strnlen(raw + (size_t)i * sz, sz);
      if (len >= width) len = width - 1;
      memcpy(out + (size_t)i * width, raw + (size_t)i * sz, len);
      out[(size_t)i * width + len] = '\0';
    }
    free(raw);
  }
  rc = 0;
done:
  if (mt >= 0) H5Tclose(mt);
  if (sp >= 0) H5Sclose(sp);
  if (ft >= 0) H5Tclose(ft);
  if (a >= 0) H5Aclose(a);
  return rc;
}

int xd_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t n) {
  int count = 0;
  if (n == 0) return -1;
  /* A scalar has one point; a 1-element array is accepted too. */
  if (read_strings(obj, name, buf, 1, n, &count) != 0 || count != 1) return -1;
  return 0;
}

int xd_h5_attr_read_strs(hid_t obj, const char *name, char *out, int max, size_t width, int *count) {
  return read_strings(obj, name, out, max, width, count);
}

int xd_h5_attr_read_int(hid_t obj, const char *name, int *value) {
  if (H5Aexists(obj, name) <= 0) return -1;
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) return -1;
  int rc = -1;
  hid_t t = H5Aget_type(a), s = H5Aget_space(a);
  if (t >= 0 && s >= 0 && (H5Tget_class(t) == H5T_INTEGER || H5Tget_class(t) == H5T_FLOAT) &&
      H5Sget_simple_extent_npoints(s) == 1) {
    long long v = 0;
    if (H5Tget_class(t) == H5T_INTEGER) {
      rc = H5Aread(a, H5T_NATIVE_LLONG, &v) < 0 ? -1 : 0;
    } else {
      double d = 0;
      rc = H5Aread(a, H5T_NATIVE_DOUBLE, &d) < 0 ? -1 : 0;
      v = (long long)d;
    }
    if (v < -2147483647LL || v > 2147483647LL) rc = -1;
    *value = (int)v;
  }
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  H5Aclose(a);
  return rc;
}

int xd_h5_file_format(const char *path, char *buf, size_t n, xd_err *e) {
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  xd_h5_quiet q = xd_h5_quiet_begin();
  if (xd_h5_attr_read_str(f, "format", buf, n) != 0) buf[0] = '\0';
  H5Fclose(f);
  xd_h5_quiet_end(q);
  return 0;
}
