/* Small HDF5 helpers: quiet error stacks, read-only opening without file locks, string attributes. */
#ifndef XD_H5UTIL_H
#define XD_H5UTIL_H
#include <hdf5.h>
#include <stddef.h>

#include "common.h"

/* HDF5 prints its whole error stack on stderr by default; users must only see our one-line message.
 * Bracket HDF5 calls with begin/end (restores whatever the caller had). */
typedef struct {
  H5E_auto2_t func;
  void *data;
} xd_h5_quiet;
xd_h5_quiet xd_h5_quiet_begin(void);
void xd_h5_quiet_end(xd_h5_quiet q);

/* A negative HDF5 return becomes an error naming this source line; jumps to `fail`. */
#define XD_H5_GOTO(call, e, ...)                                  \
  do {                                                           \
    if ((call) < 0) {                                            \
      xd_fail_at((e), __FILE__, __LINE__, __VA_ARGS__);          \
      goto fail;                                                 \
    }                                                            \
  } while (0)

/* Opens a file read-only with file locking off (cluster filesystems often refuse locks). Distinguishes
 * a missing file, a file that is not HDF5 and one HDF5 cannot open. Returns the file id or -1. */
hid_t xd_h5_open_read(const char *path, xd_err *e);
/* Whether the file starts with (or has at a userblock offset) the HDF5 signature. */
int xd_h5_has_signature(const char *path);

/* Attributes. Strings are written as variable-length UTF-8 (h5py reads them as str). Readers accept
 * fixed- and variable-length strings. Return 0, or -1 without filling an error (callers name the file). */
int xd_h5_attr_write_str(hid_t obj, const char *name, const char *value);
int xd_h5_attr_write_strs(hid_t obj, const char *name, const char *const *values, int n);
int xd_h5_attr_write_int(hid_t obj, const char *name, int value);
int xd_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t n);
/* Reads a 1-D string array attribute into out[max][width]; *count gets the number of strings (-1 if
 * more than max, which also returns -1). */
int xd_h5_attr_read_strs(hid_t obj, const char *name, char *out, int max, size_t width, int *count);
int xd_h5_attr_read_int(hid_t obj, const char *name, int *value);

/* Reads the root "format" attribute ("" when absent). -1 with an error if the file cannot be opened. */
int xd_h5_file_format(const char *path, char *buf, size_t n, xd_err *e);

#endif
