#include "dataset_write.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

struct xd_dsw {
  char path[4096], target[4096], tmp[4200], split[16];
  hid_t file, group, images, labels, paths;
  hid_t str_type;
  int height, width;
  int64_t n;
};

/* Why an HDF5 call that writes the file failed. HDF5's file driver records the system error in its error
 * stack ("... errno = 28, error message = 'No space left on device' ..."); errno itself is what the last
 * failing system call left (the caller zeroes it before the HDF5 call). */
static herr_t find_errno(unsigned n, const H5E_error2_t *d, void *data) {
  (void)n;
  int *out = data;
  const char *p = d && d->desc ? strstr(d->desc, "errno = ") : NULL;
  if (p && *out == 0) {
    int v = atoi(p + 8);
    if (v > 0) *out = v;
  }
  return 0;
}

static int h5_reason(int saved_errno) {
  int v = 0;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_errno, &v);
  return v ? v : saved_errno;
}

/* Fills e with "PATH: WHAT: REASON" for a failed HDF5 call (the reason read right after it failed). */
static int dsw_fail(xd_err *e, int saved_errno, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int dsw_fail(xd_err *e, int saved_errno, const char *fmt, ...) {
  int err = h5_reason(saved_errno);
  char what[XD_ERR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return xd_fail(e, "%s: %s", what, err ? strerror(err) : "HDF5 library error (no system error reported)");
}

/* A failing HDF5 call: one line with the reason, then `goto fail`. */
#define DSW_GOTO(call, e, ...)              \
  do {                                      \
    errno = 0;                              \
    if ((call) < 0) {                       \
      dsw_fail((e), errno, __VA_ARGS__);    \
      goto fail;                            \
    }                                       \
  } while (0)

/* Modification times in object headers would make two identical runs differ byte for byte. */
static hid_t no_times_plist(hid_t cls) {
  hid_t p = H5Pcreate(cls);
  if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
    H5Pclose(p);
    return -1;
  }
  return p;
}

/* Closes the split's objects (closing a dataset writes its cached chunks): 0, or the errno-style reason
 * of the first failure (-1 when HDF5 gave none). */
static int close_split(xd_dsw *w) {
  hid_t ids[4] = {w->paths, w->labels, w->images, w->group};
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    if (ids[i] < 0) continue;
    errno = 0;
    if ((i < 3 ? H5Dclose(ids[i]) : H5Gclose(ids[i])) < 0 && !bad) {
      int r = h5_reason(errno);
      bad = r ? r : -1;
    }
  }
  w->paths = w->labels = w->images = w->group = -1;
  return bad;
}

static void close_all(xd_dsw *w) {
  close_split(w);
  if (w->str_type >= 0) H5Tclose(w->str_type);
  if (w->file >= 0) H5Fclose(w->file);
  w->str_type = w->file = -1;
}

void xd_dsw_abort(xd_dsw *w) {
  if (!w) return;
  xd_h5_quiet q = xd_h5_quiet_begin();
  close_all(w);
  xd_h5_quiet_end(q);
  unlink(w->tmp);
  free(w);
}

int xd_dsw_create(xd_dsw **out, const char *path, int height, int width, const char *const *class_names,
                  int nclasses, const char *source, xd_err *e) {
  *out = NULL;
  xd_dsw *w = calloc(1, sizeof *w);
  if (!w) return xd_fail(e, "%s: out of memory", path);
  w->file = w->group = w->images = w->labels = w->paths = w->str_type = -1;
  w->height = height;
  w->width = width;
  snprintf(w->path, sizeof w->path, "%s", path);
  /* a directory, a device or a missing folder fails here, before any work; a symbolic link's target is
   * what gets replaced */
  if (xd_output_check(path, 0, w->target, sizeof w->target, e) != 0) {
    free(w);
    return -1;
  }
  xd_clean_stale_tmp(w->target);
  xd_tmp_name(w->target, w->tmp, sizeof w->tmp);
  xd_h5_quiet q = xd_h5_quiet_begin();
  /* checksummed metadata (superblock v2, v2 object headers: HDF5 >= 1.8 reads them); the datasets get
   * Fletcher-32 checksums per chunk (create_extendible), so a flipped bit is an error on reading */
  hid_t fcpl = no_times_plist(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fcpl < 0 || fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) < 0) {
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    xd_h5_quiet_end(q);
    free(w);
    return xd_fail(e, "%s: cannot set up HDF5 file properties", path);
  }
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl, 0, 1);
#endif
  unlink(w->tmp); /* a leftover of an earlier process with this pid; never write through a link there */
  errno = 0;
  w->file = H5Fcreate(w->tmp, H5F_ACC_EXCL, fcpl, fapl);
  int create_errno = w->file < 0 ? h5_reason(errno) : 0;
  H5Pclose(fcpl);
  H5Pclose(fapl);
  if (w->file < 0) {
    xd_h5_quiet_end(q);
    xd_fail(e, "%s: cannot create: %s", path, create_errno ? strerror(create_errno) : "HDF5 cannot create the file");
    unlink(w->tmp);
    free(w);
    return -1;
  }
  w->str_type = H5Tcopy(H5T_C_S1);
  XD_H5_GOTO(w->str_type, e, "%s: HDF5 string type", path);
  XD_H5_GOTO(H5Tset_size(w->str_type, H5T_VARIABLE), e, "%s: HDF5 string type", path);
  XD_H5_GOTO(H5Tset_cset(w->str_type, H5T_CSET_UTF8), e, "%s: HDF5 string type", path);
  DSW_GOTO(xd_h5_attr_write_fstr(w->file, "format", "xray-dp-dataset"), e, "%s: writing attributes", path);
  DSW_GOTO(xd_h5_attr_write_int(w->file, "version", 1), e, "%s: writing attributes", path);
  DSW_GOTO(xd_h5_attr_write_fstrs(w->file, "class_names", class_names, nclasses), e, "%s: writing attributes",
           path);
  DSW_GOTO(xd_h5_attr_write_int(w->file, "height", height), e, "%s: writing attributes", path);
  DSW_GOTO(xd_h5_attr_write_int(w->file, "width", width), e, "%s: writing attributes", path);
  DSW_GOTO(xd_h5_attr_write_int(w->file, "channels", 1), e, "%s: writing attributes", path);
  DSW_GOTO(xd_h5_attr_write_fstr(w->file, "source", source), e, "%s: writing attributes", path);
  xd_h5_quiet_end(q);
  *out = w;
  return 0;
fail:
  xd_h5_quiet_end(q);
  xd_dsw_abort(w);
  return -1;
}

/* checksum: a Fletcher-32 checksum per chunk, verified by HDF5 on every read. HDF5 refuses mandatory
 * filters on variable-length types ("not suitable for filters"), so the paths (variable-length strings)
 * go without; their chunk index and object header are covered by the metadata checksums. */
static hid_t create_extendible(hid_t group, const char *name, hid_t type, int rank, const hsize_t *chunk,
                               int checksum) {
  hsize_t dims[3] = {0, chunk[1], chunk[2]}, maxd[3] = {H5S_UNLIMITED, chunk[1], chunk[2]};
  hid_t s = H5Screate_simple(rank, dims, maxd);
  hid_t dcpl = no_times_plist(H5P_DATASET_CREATE);
  hid_t d = -1;
  if (s >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
      (!checksum || H5Pset_fletcher32(dcpl) >= 0))
    d = H5Dcreate2(group, name, type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (s >= 0) H5Sclose(s);
  return d;
}

int xd_dsw_begin_split(xd_dsw *w, const char *split, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  snprintf(w->split, sizeof w->split, "%s", split);
  w->n = 0;
  hid_t gcpl = no_times_plist(H5P_GROUP_CREATE);
  w->group = H5Gcreate2(w->file, split, H5P_DEFAULT, gcpl >= 0 ? gcpl : H5P_DEFAULT, H5P_DEFAULT);
  if (gcpl >= 0) H5Pclose(gcpl);
  DSW_GOTO(w->group, e, "%s: cannot create group /%s", w->path, split);
  hsize_t ichunk[3] = {1, (hsize_t)w->height, (hsize_t)w->width}, lchunk[3] = {4096, 0, 0},
          pchunk[3] = {1024, 0, 0};
  errno = 0;
  w->images = create_extendible(w->group, "images", H5T_STD_U8LE, 3, ichunk, 1);
  DSW_GOTO(w->images, e, "%s: cannot create /%s/images", w->path, split);
  w->labels = create_extendible(w->group, "labels", H5T_STD_U8LE, 1, lchunk, 1);
  DSW_GOTO(w->labels, e, "%s: cannot create /%s/labels", w->path, split);
  w->paths = create_extendible(w->group, "paths", w->str_type, 1, pchunk, 0);
  DSW_GOTO(w->paths, e, "%s: cannot create /%s/paths", w->path, split);
  xd_h5_quiet_end(q);
  return 0;
fail:
  xd_h5_quiet_end(q);
  return -1;
}

/* Extends d to n0+k rows and writes `data` (k rows) at n0. */
static herr_t append_rows(hid_t d, hid_t memtype, int rank, const hsize_t *rowdims, int64_t n0, int64_t k,
                          const void *data) {
  hsize_t size[3] = {(hsize_t)(n0 + k), rowdims[1], rowdims[2]};
  hsize_t start[3] = {(hsize_t)n0, 0, 0}, count[3] = {(hsize_t)k, rowdims[1], rowdims[2]};
  if (H5Dset_extent(d, size) < 0) return -1;
  hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
  herr_t rc = -1;
  if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    rc = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, data);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  return rc;
}

int xd_dsw_append(xd_dsw *w, const uint8_t *images, const uint8_t *labels, const char *const *paths, int64_t k,
                  xd_err *e) {
  if (k <= 0) return 0;
  xd_h5_quiet q = xd_h5_quiet_begin();
  hsize_t img[3] = {0, (hsize_t)w->height, (hsize_t)w->width}, one[3] = {0, 1, 1};
  DSW_GOTO(append_rows(w->images, H5T_NATIVE_UCHAR, 3, img, w->n, k, images), e,
           "%s: writing /%s/images", w->path, w->split);
  DSW_GOTO(append_rows(w->labels, H5T_NATIVE_UCHAR, 1, one, w->n, k, labels), e,
           "%s: writing /%s/labels", w->path, w->split);
  DSW_GOTO(append_rows(w->paths, w->str_type, 1, one, w->n, k, paths), e, "%s: writing /%s/paths",
           w->path, w->split);
  w->n += k;
  xd_h5_quiet_end(q);
  return 0;
fail:
  xd_h5_quiet_end(q);
  return -1;
}

static const char *reason_str(int r) { return r > 0 ? strerror(r) : "HDF5 library error (no system error reported)"; }

int xd_dsw_end_split(xd_dsw *w, int64_t *n, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  int r = close_split(w);
  if (r) {
    xd_h5_quiet_end(q);
    return xd_fail(e, "%s: writing /%s: %s", w->path, w->split, reason_str(r));
  }
  if (n) *n = w->n;
  if (w->n == 0) DSW_GOTO(H5Ldelete(w->file, w->split, H5P_DEFAULT), e, "%s: removing empty /%s", w->path,
                          w->split);
  xd_h5_quiet_end(q);
  return 0;
fail:
  xd_h5_quiet_end(q);
  return -1;
}

int xd_dsw_commit(xd_dsw *w, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  int r = close_split(w);
  H5Tclose(w->str_type);
  w->str_type = -1;
  if (!r) {
    /* the last metadata and cached chunks reach the disk here: a full disk shows now */
    errno = 0;
    if (H5Fflush(w->file, H5F_SCOPE_LOCAL) < 0) {
      int x = h5_reason(errno);
      r = x ? x : -1;
    }
  }
  errno = 0;
  herr_t rc = H5Fclose(w->file);
  if (rc < 0 && !r) {
    int x = h5_reason(errno);
    r = x ? x : -1;
  }
  w->file = -1;
  xd_h5_quiet_end(q);
  if (r) {
    xd_fail(e, "%s: cannot write: %s", w->path, reason_str(r));
    xd_dsw_abort(w);
    return -1;
  }
  /* renamed over the target (a symbolic link's target: the link stays); messages name the user's path */
  r = xd_commit_file(w->tmp, w->target, e);
  if (r && strcmp(w->target, w->path)) {
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
    xd_fail(e, "%s (%s)", msg, w->path);
  }
  free(w);
  return r;
}
