#include "h5util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- quiet error stacks that still tell what failed ---- */

static _Thread_local int seen_checksum, seen_errno;

static herr_t walk_cb(unsigned n, const H5E_error2_t *err, void *data) {
  (void)n;
  (void)data;
  const char *d = err->desc ? err->desc : "";
  /* "data error detected by Fletcher32 checksum" (raw data), "incorrect metadata checksum ..." (object
   * headers, superblock v2+, heaps, B-trees v2) */
  if (strstr(d, "checksum") || strstr(d, "Fletcher32")) seen_checksum = 1;
  /* the sec2 driver: "file write failed: ..., errno = 28, error message = 'No space left on device', ..." */
  const char *p = strstr(d, "errno = ");
  if (p && !seen_errno) {
    int v = atoi(p + 8);
    if (v > 0) seen_errno = v;
  }
  return 0;
}

/* Called by HDF5 instead of printing, once per failing API call. */
static herr_t quiet_handler(hid_t estack, void *data) {
  (void)data;
  H5Ewalk2(estack, H5E_WALK_DOWNWARD, walk_cb, NULL);
  return 0;
}

xd_h5_quiet xd_h5_quiet_begin(void) {
  xd_h5_quiet q = {NULL, NULL};
  H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
  H5Eset_auto2(H5E_DEFAULT, quiet_handler, NULL);
  return q;
}

void xd_h5_quiet_end(xd_h5_quiet q) { H5Eset_auto2(H5E_DEFAULT, q.func, q.data); }
void xd_h5_seen_reset(void) { seen_checksum = seen_errno = 0; }
int xd_h5_seen_checksum(void) { return seen_checksum; }
int xd_h5_seen_errno(void) { return seen_errno; }

/* ---- files ---- */

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
  /* before anything opens it: a FIFO would block fopen, a directory or device is never an input */
  if (xd_check_regular(path, e) != 0) return -1;
  FILE *probe = fopen(path, "rb");
  if (!probe) return xd_fail(e, "%s: %s", path, strerror(errno));
  fclose(probe);
  if (!xd_h5_has_signature(path)) return xd_fail(e, "%s: not an HDF5 file", path);
  xd_h5_quiet q = xd_h5_quiet_begin();
  xd_h5_seen_reset();
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
  if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
#endif
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
  int checksum = xd_h5_seen_checksum();
  if (fapl >= 0) H5Pclose(fapl);
  xd_h5_quiet_end(q);
  if (f < 0 && checksum) return xd_fail(e, "%s: checksum mismatch in the file's superblock or root group (file corrupted)", path);
  if (f < 0) return xd_fail(e, "%s: HDF5 cannot open the file (corrupt or truncated?)", path);
  return f;
}

int xd_h5_find(hid_t loc, const char *path) {
  char buf[1024];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) return 0;
  memcpy(buf, path, len + 1);
  /* every prefix "/a", "/a/b", ... in turn: each must exist, be a hard link, and (but the last) a group */
  for (size_t i = 1; i <= len; i++) {
    if (i < len && buf[i] != '/') continue;
    char save = buf[i];
    buf[i] = '\0';
    int rc = 1;
    if (strcmp(buf, "/") != 0 && buf[0] != '\0') {
      htri_t ex = H5Lexists(loc, buf, H5P_DEFAULT);
      if (ex < 0) rc = -1;
      else if (ex == 0) rc = 0;
      else {
        H5L_info_t li;
        if (H5Lget_info(loc, buf, &li, H5P_DEFAULT) < 0) rc = -1;
        else if (li.type != H5L_TYPE_HARD) rc = -2;
        else if (i < len) {
          int k = xd_h5_kind(loc, buf);
          if (k < 0) rc = -1;
          else if (k != H5I_GROUP) rc = 0; /* "/train/images" where /train is a dataset: no such object */
        }
      }
    }
    buf[i] = save;
    if (rc != 1) return rc;
  }
  return 1;
}

int xd_h5_kind(hid_t loc, const char *path) {
  hid_t o = H5Oopen(loc, path, H5P_DEFAULT);
  if (o < 0) return -1;
  H5I_type_t t = H5Iget_type(o);
  H5Oclose(o);
  return (int)t;
}

int xd_h5_has_fletcher32(hid_t ds) {
  hid_t dcpl = H5Dget_create_plist(ds);
  if (dcpl < 0) return -1;
  int n = H5Pget_nfilters(dcpl), found = 0;
  for (int i = 0; i < n && !found; i++) {
    unsigned flags = 0, cfg = 0;
    size_t nelm = 0;
    if (H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelm, NULL, 0, NULL, &cfg) == H5Z_FILTER_FLETCHER32) found = 1;
  }
  H5Pclose(dcpl);
  return n < 0 ? -1 : found;
}

int xd_h5_check_storage(hid_t ds, size_t elem_size, char *why, size_t n) {
  int rc = -1;
  hid_t sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
  hsize_t dims[H5S_MAX_RANK], cdims[H5S_MAX_RANK];
  int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (sp < 0 || dcpl < 0 || rank < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
    snprintf(why, n, "has an unreadable dataspace or creation property list");
    goto done;
  }
  uint64_t rows = rank > 0 ? (uint64_t)dims[0] : 1, bytes = elem_size;
  for (int i = 0; i < rank; i++) bytes = xd_mul_sat(bytes, (uint64_t)dims[i]);
  if (H5Pget_external_count(dcpl) > 0) {
    snprintf(why, n, "keeps its data in external files (refused: it would read other files)");
    goto done;
  }
  H5D_layout_t layout = H5Pget_layout(dcpl);
  if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
    hsize_t have = H5Dget_storage_size(ds);
    if (bytes > 0 && (uint64_t)have < bytes) {
      snprintf(why, n, "declares %llu rows (%llu bytes) but stores only %llu bytes", (unsigned long long)rows,
               (unsigned long long)bytes, (unsigned long long)have);
      goto done;
    }
  } else if (layout == H5D_CHUNKED) {
    if (H5Pget_chunk(dcpl, rank, cdims) != rank) {
      snprintf(why, n, "has an unreadable chunk layout");
      goto done;
    }
    uint64_t cbytes = elem_size, expect = 1;
    for (int i = 0; i < rank; i++) {
      if (cdims[i] == 0) {
        snprintf(why, n, "has a chunk dimension of 0");
        goto done;
      }
      cbytes = xd_mul_sat(cbytes, (uint64_t)cdims[i]);
      expect = xd_mul_sat(expect, ((uint64_t)dims[i] + cdims[i] - 1) / cdims[i]);
    }
    xd_err me;
    if (xd_mem_check(cbytes, "one chunk", &me) != 0) {
      snprintf(why, n, "has chunks of %llu bytes: %s", (unsigned long long)cbytes, me.msg);
      goto done;
    }
    if (bytes > 0) {
#if H5_VERSION_GE(1, 10, 5)
      hsize_t have = 0;
      if (H5Dget_num_chunks(ds, sp, &have) < 0) { /* the file space: 1.10.8 refuses H5S_ALL */
        snprintf(why, n, "has an unreadable chunk index");
        goto done;
      }
      if ((uint64_t)have < expect) {
        snprintf(why, n, "declares %llu rows but stores %llu of its %llu chunks", (unsigned long long)rows,
                 (unsigned long long)have, (unsigned long long)expect);
        goto done;
      }
#else
      if (H5Pget_nfilters(dcpl) == 0 && (uint64_t)H5Dget_storage_size(ds) < bytes) {
        snprintf(why, n, "declares %llu rows (%llu bytes) but stores only %llu bytes", (unsigned long long)rows,
                 (unsigned long long)bytes, (unsigned long long)H5Dget_storage_size(ds));
        goto done;
      }
#endif
    }
  } else {
    snprintf(why, n, "has a layout this reader refuses (virtual datasets read other files)");
    goto done;
  }
  rc = 0;
done:
  if (dcpl >= 0) H5Pclose(dcpl);
  if (sp >= 0) H5Sclose(sp);
  return rc;
}

/* ---- attributes ---- */

static hid_t str_type(size_t size) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return -1;
  if (H5Tset_size(t, size) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0 ||
      (size != H5T_VARIABLE && H5Tset_strpad(t, H5T_STR_NULLTERM) < 0)) {
    H5Tclose(t);
    return -1;
  }
  return t;
}

static int write_attr(hid_t obj, const char *name, hid_t type, hid_t space, const void *data) {
  hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) return -1;
  herr_t rc = H5Awrite(a, type, data);
  if (H5Aclose(a) < 0) rc = -1;
  return rc < 0 ? -1 : 0;
}

int xd_h5_attr_write_str(hid_t obj, const char *name, const char *value) {
  return xd_h5_attr_write_strs(obj, name, &value, 0);
}

/* n == 0 means one scalar string. */
int xd_h5_attr_write_strs(hid_t obj, const char *name, const char *const *values, int n) {
  hid_t t = str_type(H5T_VARIABLE);
  hsize_t dims[1] = {(hsize_t)n};
  hid_t s = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
  int rc = (t < 0 || s < 0) ? -1 : write_attr(obj, name, t, s, values);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  return rc;
}

int xd_h5_attr_write_fstr(hid_t obj, const char *name, const char *value) {
  return xd_h5_attr_write_fstrs(obj, name, &value, 0);
}

/* n == 0 means one scalar string. Width: the longest string and its NUL. */
int xd_h5_attr_write_fstrs(hid_t obj, const char *name, const char *const *values, int n) {
  int count = n ? n : 1;
  size_t w = 1;
  for (int i = 0; i < count; i++)
    if (strlen(values[i]) + 1 > w) w = strlen(values[i]) + 1;
  char *buf = calloc((size_t)count, w);
  if (!buf) return -1;
  for (int i = 0; i < count; i++) memcpy(buf + (size_t)i * w, values[i], strlen(values[i]));
  hid_t t = str_type(w);
  hsize_t dims[1] = {(hsize_t)n};
  hid_t s = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
  int rc = (t < 0 || s < 0) ? -1 : write_attr(obj, name, t, s, buf);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  free(buf);
  return rc;
}

int xd_h5_attr_write_int(hid_t obj, const char *name, int value) {
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = s < 0 ? -1 : write_attr(obj, name, H5T_STD_I32LE, s, &value);
  if (s >= 0) H5Sclose(s);
  return rc;
}

/* Fixed-length strings longer than this are not read at all unless they fit the caller's width. */
#define FIXED_READ_MAX ((size_t)1 << 20)

/* Reads all strings of a string attribute (scalar or 1-D) into out[max][width]. 0, -1 (missing, not
 * strings, too many: *count = -1), -2 (a string too long for width, or bytes after its NUL). */
static int read_strings(hid_t obj, const char *name, char *out, int max, size_t width, int *count) {
  int rc = -1;
  hid_t a = -1, ft = -1, sp = -1, mt = -1;
  *count = 0;
  if (width == 0 || H5Aexists(obj, name) <= 0) return -1;
  if ((a = H5Aopen(obj, name, H5P_DEFAULT)) < 0) goto done;
  if ((ft = H5Aget_type(a)) < 0 || H5Tget_class(ft) != H5T_STRING) goto done;
  if ((sp = H5Aget_space(a)) < 0) goto done;
  int rank = H5Sget_simple_extent_ndims(sp);
  hssize_t npts = H5Sget_simple_extent_npoints(sp);
  if (rank < 0 || rank > 1 || npts < 0) goto done;
  if (npts > max) {
    *count = -1;
    goto done;
  }
  *count = (int)npts;
  if (H5Tis_variable_str(ft) > 0) {
    char **v = calloc((size_t)npts + 1, sizeof(char *));
    if (!v || (mt = str_type(H5T_VARIABLE)) < 0 || H5Aread(a, mt, v) < 0) {
      free(v);
      goto done;
    }
    rc = 0;
    for (hssize_t i = 0; i < npts; i++) {
      const char *s = v[i] ? v[i] : "";
      if (strlen(s) >= width) rc = -2;
      else memcpy(out + (size_t)i * width, s, strlen(s) + 1);
      H5free_memory(v[i]);
    }
    free(v);
  } else {
    size_t sz = H5Tget_size(ft);
    if (sz == 0) goto done;
    if (sz > width && sz > FIXED_READ_MAX) {
      rc = -2;
      goto done;
    }
    H5T_str_t pad = H5Tget_strpad(ft);
    char *raw = calloc((size_t)npts + 1, sz + 1);
    if (!raw || (mt = H5Tcopy(ft)) < 0 || H5Aread(a, mt, raw) < 0) {
      free(raw);
      goto done;
    }
    rc = 0;
    for (hssize_t i = 0; i < npts; i++) {
      const char *s = raw + (size_t)i * sz;
      size_t len = strnlen(s, sz);
      for (size_t k = len; k < sz; k++)
        if (s[k] != '\0') rc = -2; /* bytes after the terminator: not a string we wrote */
      if (pad == H5T_STR_SPACEPAD)
        while (len > 0 && s[len - 1] == ' ') len--;
      if (len >= width) rc = -2;
      if (rc == 0) {
        memcpy(out + (size_t)i * width, s, len);
        out[(size_t)i * width + len] = '\0';
      }
    }
    free(raw);
  }
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
  buf[0] = '\0';
  /* A scalar has one point; a 1-element array is accepted too. */
  int rc = read_strings(obj, name, buf, 1, n, &count);
  if (rc != 0) return rc;
  return count == 1 ? 0 : -1;
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
  H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
  if (s >= 0 && (cls == H5T_INTEGER || cls == H5T_FLOAT) && H5Sget_simple_extent_npoints(s) == 1) {
    if (cls == H5T_INTEGER) {
      long long v = 0;
      if (H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0 && v >= -2147483647LL && v <= 2147483647LL) {
        *value = (int)v;
        rc = 0;
      }
    } else {
      double d = 0;
      /* only a float holding an integer in range: converting anything else is undefined */
      if (H5Aread(a, H5T_NATIVE_DOUBLE, &d) >= 0 && isfinite(d) && d == floor(d) && d >= -2147483647.0 &&
          d <= 2147483647.0) {
        *value = (int)d;
        rc = 0;
      }
    }
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
  xd_h5_seen_reset();
  int rc = xd_h5_attr_read_str(f, "format", buf, n);
  int checksum = xd_h5_seen_checksum();
  if (rc != 0) buf[0] = '\0';
  H5Fclose(f);
  xd_h5_quiet_end(q);
  if (checksum) return xd_fail(e, "%s: checksum mismatch in the root group's attributes (file corrupted)", path);
  return 0;
}
