#include "dataset_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5util.h"

struct xd_dsw {
  char path[4096], tmp[4200], split[16];
  hid_t file, group, images, labels, paths;
  hid_t str_type;
  int height, width;
  int64_t n;
};

/* Modification times in object headers would make two identical runs differ byte for byte. */
static hid_t no_times_plist(hid_t cls) {
  hid_t p = H5Pcreate(cls);
  if (p >= 0 && H5Pset_obj_track_times(p, 0) < 0) {
    H5Pclose(p);
    return -1;
  }
  return p;
}

static void close_split(xd_dsw *w) {
  if (w->paths >= 0) H5Dclose(w->paths);
  if (w->labels >= 0) H5Dclose(w->labels);
  if (w->images >= 0) H5Dclose(w->images);
  if (w->group >= 0) H5Gclose(w->group);
  w->paths = w->labels = w->images = w->group = -1;
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
  xd_tmp_name(path, w->tmp, sizeof w->tmp);
  xd_h5_quiet q = xd_h5_quiet_begin();
  hid_t fcpl = no_times_plist(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
  if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
#endif
  w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, fcpl >= 0 ? fcpl : H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
  if (fcpl >= 0) H5Pclose(fcpl);
  if (fapl >= 0) H5Pclose(fapl);
  if (w->file < 0) {
    xd_h5_quiet_end(q);
    xd_fail(e, "%s: cannot create output file %s", path, w->tmp);
    unlink(w->tmp);
    free(w);
    return -1;
  }
  w->str_type = H5Tcopy(H5T_C_S1);
  XD_H5_GOTO(w->str_type, e, "%s: HDF5 string type", path);
  XD_H5_GOTO(H5Tset_size(w->str_type, H5T_VARIABLE), e, "%s: HDF5 string type", path);
  XD_H5_GOTO(H5Tset_cset(w->str_type, H5T_CSET_UTF8), e, "%s: HDF5 string type", path);
  XD_H5_GOTO(xd_h5_attr_write_str(w->file, "format", "xray-dp-dataset"), e, "%s: writing attributes", path);
  XD_H5_GOTO(xd_h5_attr_write_int(w->file, "version", 1), e, "%s: writing attributes", path);
  XD_H5_GOTO(xd_h5_attr_write_strs(w->file, "class_names", class_names, nclasses), e, "%s: writing attributes",
             path);
  XD_H5_GOTO(xd_h5_attr_write_int(w->file, "height", height), e, "%s: writing attributes", path);
  XD_H5_GOTO(xd_h5_attr_write_int(w->file, "width", width), e, "%s: writing attributes", path);
  XD_H5_GOTO(xd_h5_attr_write_int(w->file, "channels", 1), e, "%s: writing attributes", path);
  XD_H5_GOTO(xd_h5_attr_write_str(w->file, "source", source), e, "%s: writing attributes", path);
  xd_h5_quiet_end(q);
  *out = w;
  return 0;
fail:
  xd_h5_quiet_end(q);
  xd_dsw_abort(w);
  return -1;
}

static hid_t create_extendible(hid_t group, const char *name, hid_t type, int rank, const hsize_t *chunk) {
  hsize_t dims[3] = {0, chunk[1], chunk[2]}, maxd[3] = {H5S_UNLIMITED, chunk[1], chunk[2]};
  hid_t s = H5Screate_simple(rank, dims, maxd);
  hid_t dcpl = no_times_plist(H5P_DATASET_CREATE);
  hid_t d = -1;
  if (s >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0)
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
  XD_H5_GOTO(w->group, e, "%s: cannot create group /%s", w->path, split);
  hsize_t ichunk[3] = {1, (hsize_t)w->height, (hsize_t)w->width}, lchunk[3] = {4096, 0, 0},
          pchunk[3] = {1024, 0, 0};
  w->images = create_extendible(w->group, "images", H5T_STD_U8LE, 3, ichunk);
  XD_H5_GOTO(w->images, e, "%s: cannot create /%s/images", w->path, split);
  w->labels = create_extendible(w->group, "labels", H5T_STD_U8LE, 1, lchunk);
  XD_H5_GOTO(w->labels, e, "%s: cannot create /%s/labels", w->path, split);
  w->paths = create_extendible(w->group, "paths", w->str_type, 1, pchunk);
  XD_H5_GOTO(w->paths, e, "%s: cannot create /%s/paths", w->path, split);
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
  XD_H5_GOTO(append_rows(w->images, H5T_NATIVE_UCHAR, 3, img, w->n, k, images), e,
             "%s: writing /%s/images", w->path, w->split);
  XD_H5_GOTO(append_rows(w->labels, H5T_NATIVE_UCHAR, 1, one, w->n, k, labels), e,
             "%s: writing /%s/labels", w->path, w->split);
  XD_H5_GOTO(append_rows(w->paths, w->str_type, 1, one, w->n, k, paths), e, "%s: writing /%s/paths",
             w->path, w->split);
  w->n += k;
  xd_h5_quiet_end(q);
  return 0;
fail:
  xd_h5_quiet_end(q);
  return -1;
}

int xd_dsw_end_split(xd_dsw *w, int64_t *n, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  close_split(w);
  if (n) *n = w->n;
  if (w->n == 0) XD_H5_GOTO(H5Ldelete(w->file, w->split, H5P_DEFAULT), e, "%s: removing empty /%s", w->path,
                            w->split);
  xd_h5_quiet_end(q);
  return 0;
fail:
  xd_h5_quiet_end(q);
  return -1;
}

int xd_dsw_commit(xd_dsw *w, xd_err *e) {
  xd_h5_quiet q = xd_h5_quiet_begin();
  close_split(w);
  H5Tclose(w->str_type);
  w->str_type = -1;
  herr_t rc = H5Fclose(w->file);
  w->file = -1;
  xd_h5_quiet_end(q);
  if (rc < 0) {
    xd_fail(e, "%s: error closing the HDF5 file (disk full?)", w->path);
    xd_dsw_abort(w);
    return -1;
  }
  int r = xd_commit_file(w->tmp, w->path, e);
  free(w);
  return r;
}
