/* Small HDF5 helpers: quiet error stacks (with checksum and errno detection), read-only opening without
 * file locks, link and storage checks for files from outside, string attributes. */
#ifndef XD_H5UTIL_H
#define XD_H5UTIL_H
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* HDF5 prints its whole error stack on stderr by default; users must only see our one-line message.
 * Bracket HDF5 calls with begin/end (restores whatever the caller had). Inside a bracket every failing
 * HDF5 call is looked at (not printed): whether the failure was a checksum mismatch (Fletcher-32 on raw
 * data, or the checksum of a superblock, object header, heap or B-tree) and which errno a failed system
 * call left. xd_h5_seen_reset() forgets both; xd_h5_seen_checksum()/xd_h5_seen_errno() report what the
 * calls since the last reset saw (per thread). */
typedef struct {
  H5E_auto2_t func;
  void *data;
} xd_h5_quiet;
xd_h5_quiet xd_h5_quiet_begin(void);
void xd_h5_quiet_end(xd_h5_quiet q);
void xd_h5_seen_reset(void);
int xd_h5_seen_checksum(void);
int xd_h5_seen_errno(void); /* 0 when no failed system call was reported */

/* A negative HDF5 return becomes an error naming this source line; jumps to `fail`. */
#define XD_H5_GOTO(call, e, ...)                                  \
  do {                                                           \
    if ((call) < 0) {                                            \
      xd_fail_at((e), __FILE__, __LINE__, __VA_ARGS__);          \
      goto fail;                                                 \
    }                                                            \
  } while (0)

/* Opens a file read-only with file locking off (cluster filesystems often refuse locks). Refuses what
 * is not a regular file before opening it (a FIFO would block), and distinguishes a missing file, a file
 * that is not HDF5, a file whose metadata fails its checksum and one HDF5 cannot open. Returns the file
 * id or -1. */
hid_t xd_h5_open_read(const char *path, xd_err *e);
/* Whether the file starts with (or has at a userblock offset) the HDF5 signature. */
int xd_h5_has_signature(const char *path);

/* Objects in files from outside. xd_h5_find: 1 if every component of `path` exists and is a hard link
 * (an object of this file), 0 if some component is missing, -2 if one is a soft or external link (which
 * could lead anywhere, a FIFO in another file included), -1 if HDF5 failed (see xd_h5_seen_checksum).
 * xd_h5_kind: H5I_DATASET, H5I_GROUP, ... of the object at path, or -1. */
int xd_h5_find(hid_t loc, const char *path);
int xd_h5_kind(hid_t loc, const char *path);

/* Checks that dataset ds stores all the data its dataspace declares, before anything allocates for it:
 * a contiguous or compact dataset must hold dims x elem_size bytes, a chunked one every chunk; the chunk
 * size must fit the memory budget; external raw-data files and virtual layouts are refused (they would
 * read other files). 0, or -1 with the reason in why ("declares 10000000000 rows but stores 0 of its
 * 10000000000 chunks"); the caller names the file and dataset. */
int xd_h5_check_storage(hid_t ds, size_t elem_size, char *why, size_t n);
/* 1 if dataset ds has the Fletcher-32 filter, 0 if not, -1 on error. */
int xd_h5_has_fletcher32(hid_t ds);

/* Attributes. xd_h5_attr_write_str(s) write variable-length UTF-8 strings (h5py reads them as str; the
 * bytes live in a global heap, which HDF5 does not checksum). xd_h5_attr_write_fstr(s) write
 * fixed-length UTF-8 strings, stored inside the attribute itself and so covered by the checksum of the
 * object header (h5py reads them as bytes). Readers accept fixed- and variable-length strings. Return 0,
 * or -1 without filling an error (callers name the file). */
int xd_h5_attr_write_str(hid_t obj, const char *name, const char *value);
int xd_h5_attr_write_strs(hid_t obj, const char *name, const char *const *values, int n);
int xd_h5_attr_write_fstr(hid_t obj, const char *name, const char *value);
int xd_h5_attr_write_fstrs(hid_t obj, const char *name, const char *const *values, int n);
int xd_h5_attr_write_int(hid_t obj, const char *name, int value);
/* Readers: 0; -1 if missing, not a string/number, of the wrong shape or unreadable; -2 if a string does
 * not fit in n (width) bytes with its NUL or holds bytes after a NUL (never silently truncated). */
int xd_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t n);
/* Reads a 1-D string array attribute into out[max][width]; *count gets the number of strings (-1 if
 * more than max, which also returns -1). */
int xd_h5_attr_read_strs(hid_t obj, const char *name, char *out, int max, size_t width, int *count);
/* An integer attribute (integer type, or a float holding an integer) within int's range. */
int xd_h5_attr_read_int(hid_t obj, const char *name, int *value);

/* Reads the root "format" attribute ("" when absent). -1 with an error if the file cannot be opened or
 * its root metadata fails its checksum. */
int xd_h5_file_format(const char *path, char *buf, size_t n, xd_err *e);

#endif
