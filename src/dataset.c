#include "dataset.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5util.h"

/* The longest path a dataset may store (a path is a file name; anything longer is corruption). */
#define PATH_BYTES_MAX ((size_t)1 << 16)

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

/* The failure of an HDF5 call on obj: a checksum mismatch, or `what`. */
static int h5_fail(const xd_dataset *d, const char *obj, const char *what, xd_err *e) {
  if (xd_h5_seen_checksum()) return xd_fail(e, "%s: checksum mismatch in %s (file corrupted)", d->path, obj);
  return xd_fail(e, "%s: %s %s (file corrupt?)", d->path, what, obj);
}

static int read_root(xd_dataset *d, xd_err *e) {
  const char *p = d->path;
  char fmt[64];
  int version = 0;
  xd_dataset_info *in = &d->info;
  xd_h5_seen_reset();
  if (xd_h5_attr_read_str(d->file, "format", fmt, sizeof fmt) != 0) {
    if (xd_h5_seen_checksum()) return h5_fail(d, "the root group", "cannot read", e);
    return xd_fail(e, "%s: not an xray-dp dataset (no root attribute 'format')", p);
  }
  if (strcmp(fmt, "xray-dp-dataset") != 0)
    return xd_fail(e, "%s: not an xray-dp dataset (format is '%s')", p, fmt);
  if (xd_h5_attr_read_int(d->file, "version", &version) != 0)
    return xd_h5_seen_checksum() ? h5_fail(d, "attribute 'version'", "cannot read", e)
                                 : xd_fail(e, "%s: missing or invalid root attribute 'version'", p);
  if (version != 1) return xd_fail(e, "%s: unsupported dataset version %d (this build reads 1)", p, version);
  int rc = xd_h5_attr_read_strs(d->file, "class_names", &in->class_names[0][0], XD_MAX_CLASSES, XD_CLASS_NAME_MAX,
                                &in->nclasses);
  if (rc != 0) {
    if (xd_h5_seen_checksum()) return h5_fail(d, "attribute 'class_names'", "cannot read", e);
    if (rc == -2)
      return xd_fail(e, "%s: 'class_names' has a name longer than %d bytes (or not a plain string)", p,
                     XD_CLASS_NAME_MAX - 1);
    return in->nclasses < 0
               ? xd_fail(e, "%s: more than %d classes in 'class_names'", p, XD_MAX_CLASSES)
               : xd_fail(e, "%s: missing or invalid root attribute 'class_names' (array of strings)", p);
  }
  if (in->nclasses < 1) return xd_fail(e, "%s: 'class_names' is empty", p);
  for (int c = 0; c < in->nclasses; c++) {
    if (!in->class_names[c][0]) return xd_fail(e, "%s: 'class_names' has an empty name (class %d)", p, c);
    for (const unsigned char *q = (const unsigned char *)in->class_names[c]; *q; q++)
      if (*q < 0x20 || *q == 0x7f)
        return xd_fail(e, "%s: 'class_names' has a name with a control character (class %d)", p, c);
  }
  if (xd_h5_attr_read_int(d->file, "height", &in->height) != 0 ||
      xd_h5_attr_read_int(d->file, "width", &in->width) != 0 ||
      xd_h5_attr_read_int(d->file, "channels", &in->channels) != 0)
    return xd_h5_seen_checksum() ? h5_fail(d, "the root group's attributes", "cannot read", e)
                                 : xd_fail(e, "%s: missing or invalid root attribute 'height', 'width' or 'channels'", p);
  if (in->height <= 0 || in->width <= 0 || in->channels != 1)
    return xd_fail(e, "%s: invalid image geometry %dx%d with %d channels (need channels=1)", p, in->height,
                   in->width, in->channels);
  rc = xd_h5_attr_read_str(d->file, "source", in->source, sizeof in->source);
  if (rc != 0 && xd_h5_seen_checksum()) return h5_fail(d, "attribute 'source'", "cannot read", e);
  if (rc == -2) return xd_fail(e, "%s: attribute 'source' is longer than %zu bytes", p, sizeof in->source - 1);
  if (rc != 0) in->source[0] = '\0';
  return 0;
}

/* Opens /split/name: a hard link to a dataset of this file, of the given rank (dims receives its
 * shape) and type class; elem_size > 0 also demands that size (uint8: 1), and an unsigned integer. Its
 * storage must hold everything its dataspace declares (xd_h5_check_storage). */
static hid_t open_checked(xd_dataset *d, const char *name, int rank, hsize_t *dims, xd_err *e) {
  char full[64];
  snprintf(full, sizeof full, "/%s/%s", d->split, name);
  xd_h5_seen_reset();
  int found = xd_h5_find(d->file, full);
  if (found == 0) return xd_fail(e, "%s: missing dataset %s", d->path, full);
  if (found == -2) return xd_fail(e, "%s: %s is a soft or external link (refused: a dataset file holds its own data)", d->path, full);
  if (found < 0) return h5_fail(d, full, "cannot find", e);
  int kind = xd_h5_kind(d->file, full);
  if (kind < 0) return h5_fail(d, full, "cannot open", e);
  if (kind != H5I_DATASET) return xd_fail(e, "%s: %s is not a dataset", d->path, full);
  hid_t ds = H5Dopen2(d->file, full, H5P_DEFAULT);
  if (ds < 0) return h5_fail(d, full, "cannot open", e);
  hid_t s = H5Dget_space(ds);
  int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
  if (r == rank) H5Sget_simple_extent_dims(s, dims, NULL);
  if (s >= 0) H5Sclose(s);
  if (r < 0) {
    H5Dclose(ds);
    return h5_fail(d, full, "cannot read the shape of", e);
  }
  if (r != rank) {
    H5Dclose(ds);
    return xd_fail(e, "%s: %s has rank %d (need %d)", d->path, full, r, rank);
  }
  return ds;
}

static hid_t open_u8(xd_dataset *d, const char *name, int rank, hsize_t *dims, xd_err *e) {
  hid_t ds = open_checked(d, name, rank, dims, e);
  if (ds < 0) return -1;
  char full[64], why[256];
  snprintf(full, sizeof full, "/%s/%s", d->split, name);
  hid_t t = H5Dget_type(ds);
  int ok_type = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
  if (t >= 0) H5Tclose(t);
  if (!ok_type) {
    H5Dclose(ds);
    return xd_fail(e, "%s: %s has the wrong dtype (need uint8)", d->path, full);
  }
  if (xd_h5_check_storage(ds, 1, why, sizeof why) != 0) {
    H5Dclose(ds);
    return xd_fail(e, "%s: %s %s", d->path, full, why);
  }
  return ds;
}

/* The global heap collection a path's bytes live in has no checksum in any HDF5 format, and libhdf5
 * 1.10 trusts it: a corrupt object size made H5HG_read copy past its buffer (SIGSEGV), a zero one
 * made its decoder loop forever (both found by the fuzzer). Before HDF5 reads any path, every
 * collection the references point to is checked here against the documented layout ("GCOL", version
 * 1, its size, then objects: index (2 bytes), reference count (2), reserved (4), size, data padded to
 * 8 bytes; index 0 is the free space and takes the rest) and each reference must name an object of
 * exactly its length. Anything else refuses the file. */
typedef struct {
  uint64_t addr;
  uint16_t nobj;
  uint16_t *idx;
  uint64_t *size;
} gh_coll;

typedef struct {
  int fd;
  uint64_t file_size;
  size_t sizeof_size;
  gh_coll *c;
  int n, cap;
} gh_cache;

static uint64_t le_n(const unsigned char *q, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && i < 8; i++) v |= (uint64_t)q[i] << (8 * i);
  return v;
}

/* 0 ok, -1 malformed (why filled). */
static int gh_load(gh_cache *g, uint64_t addr, gh_coll *out, const char **why) {
  const size_t ss = g->sizeof_size, hdr = 8 + ss;
  unsigned char head[16];
  *why = "unreadable";
  if (ss < 2 || ss > 8 || addr > g->file_size || g->file_size - addr < hdr) return -1;
  if (pread(g->fd, head, hdr, (off_t)addr) != (ssize_t)hdr) return -1;
  *why = "no global heap collection where a path points";
  if (memcmp(head, "GCOL", 4) != 0 || head[4] != 1) return -1;
  uint64_t size = le_n(head + 8, ss);
  *why = "global heap collection of an impossible size";
  if (size < hdr || size > g->file_size - addr || size > ((uint64_t)64 << 20)) return -1;
  unsigned char *b = malloc((size_t)size);
  if (!b) return -1;
  *why = "unreadable global heap collection";
  if (pread(g->fd, b, (size_t)size, (off_t)addr) != (ssize_t)size) {
    free(b);
    return -1;
  }
  size_t cap = 16, n = 0;
  out->idx = malloc(cap * sizeof *out->idx);
  out->size = malloc(cap * sizeof *out->size);
  out->addr = addr;
  uint64_t p = hdr;
  int rc = 0;
  *why = "malformed global heap collection";
  while (out->idx && out->size && p < size) {
    const uint64_t ohdr = 8 + ss;
    if (size - p < ohdr) break; /* a tail too small for an object header is free space (as libhdf5 reads it) */
    uint16_t ix = (uint16_t)le_n(b + p, 2);
    uint64_t osz = le_n(b + p + 8, ss);
    if (ix == 0) { /* free space: exactly the rest of the collection */
      if (osz != size - p) rc = -1;
      break;
    }
    uint64_t padded = (osz + 7) / 8 * 8;
    if (osz > size || padded > size - p - ohdr) { rc = -1; break; }
    for (size_t k = 0; k < n; k++)
      if (out->idx[k] == ix) rc = -1;
    if (rc) break;
    if (n == cap) {
      cap *= 2;
      uint16_t *ni = realloc(out->idx, cap * sizeof *ni);
      if (ni) out->idx = ni;
      uint64_t *ns = realloc(out->size, cap * sizeof *ns);
      if (ns) out->size = ns;
      if (!ni || !ns) { rc = -1; break; }
    }
    out->idx[n] = ix;
    out->size[n] = osz;
    n++;
    p += ohdr + padded;
  }
  if (!out->idx || !out->size || n > 65535) rc = -1;
  out->nobj = (uint16_t)n;
  free(b);
  if (rc) {
    free(out->idx);
    free(out->size);
    out->idx = NULL;
    out->size = NULL;
  }
  return rc;
}

/* 0 if the reference (addr, index) names an object of exactly len bytes in a well-formed collection. */
static int gh_check(gh_cache *g, uint64_t addr, uint32_t ix, uint32_t len, const char **why) {
  gh_coll *c = NULL;
  for (int i = 0; i < g->n; i++)
    if (g->c[i].addr == addr) c = &g->c[i];
  if (!c) {
    if (g->n == g->cap) {
      int cap = g->cap ? 2 * g->cap : 16;
      gh_coll *nc = realloc(g->c, (size_t)cap * sizeof *nc);
      if (!nc) {
        *why = "out of memory";
        return -1;
      }
      g->c = nc;
      g->cap = cap;
    }
    if (gh_load(g, addr, &g->c[g->n], why) != 0) return -1;
    c = &g->c[g->n++];
  }
  for (int k = 0; k < c->nobj; k++)
    if (c->idx[k] == ix) {
      if (c->size[k] == len) return 0;
      *why = "a path whose length differs from its stored bytes";
      return -1;
    }
  *why = "a path pointing to a missing global heap object";
  return -1;
}

static void gh_free(gh_cache *g) {
  for (int i = 0; i < g->n; i++) {
    free(g->c[i].idx);
    free(g->c[i].size);
  }
  free(g->c);
}

/* A variable-length string is stored as a reference: its length (4 bytes), then where its bytes are in a
 * global heap. HDF5 allocates the declared length before it looks at the bytes, so a corrupt length
 * (0xFFFFFFF0) costs 4 GiB per path: the references are checked here, from the raw storage, before any
 * path is read. Chunked storage without filters (what xray-dp writes) and contiguous storage are
 * checked; other layouts are left to the bounded reader. 0, or -1 naming the first bad row. */
static int check_path_refs(xd_dataset *d, const char *p, const char *full, int64_t n, xd_err *e) {
  /* on disk a reference is: length (4 bytes), heap collection address (the file's address size), index (4) */
  size_t ref_size = 0, sizeof_addr = 0, sizeof_size = 0;
  hid_t fcpl = H5Fget_create_plist(d->file);
  if (fcpl >= 0 && H5Pget_sizes(fcpl, &sizeof_addr, &sizeof_size) >= 0) ref_size = 8 + sizeof_addr;
  if (fcpl >= 0) H5Pclose(fcpl);
  if (n <= 0) return 0;
  if (ref_size <= 8 || sizeof_addr > 8 || sizeof_size < 2 || sizeof_size > 8)
    return xd_fail(e, "%s: %s: unsupported address sizes in this HDF5 file", p, full);
  hid_t dcpl = H5Dget_create_plist(d->paths);
  if (dcpl < 0) return xd_fail(e, "%s: %s: cannot read its storage properties (file corrupt?)", p, full);
  H5D_layout_t layout = H5Pget_layout(dcpl);
  int nfilters = H5Pget_nfilters(dcpl);
  hsize_t chunk[1] = {0};
  if (layout == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, chunk) != 1) chunk[0] = 0;
  H5Pclose(dcpl);
  uint64_t rows_per = layout == H5D_CHUNKED ? (uint64_t)chunk[0] : (uint64_t)n;
  /* what xray-dp writes: chunked, no filters. Contiguous storage (h5py's default) is checked too. */
  if (nfilters != 0 || (layout != H5D_CHUNKED && layout != H5D_CONTIGUOUS) || rows_per == 0 ||
      rows_per > ((uint64_t)1 << 20))
    return xd_fail(e, "%s: %s: stored in a layout xray-dp cannot check (chunked without filters or contiguous)",
                   p, full);
  size_t bytes = (size_t)rows_per * ref_size;
  unsigned char *buf = malloc(bytes);
  if (!buf) return xd_fail(e, "%s: out of memory checking %s", p, full);
  gh_cache g = {.fd = open(d->path, O_RDONLY | O_CLOEXEC), .sizeof_size = sizeof_size};
  struct stat st;
  int rc = 0;
  if (g.fd < 0 || fstat(g.fd, &st) != 0) {
    rc = xd_fail(e, "%s: %s", p, strerror(errno));
  }
  g.file_size = rc == 0 ? (uint64_t)st.st_size : 0;
  haddr_t off = 0;
  if (rc == 0 && layout == H5D_CONTIGUOUS) {
    off = H5Dget_offset(d->paths);
    if (off == HADDR_UNDEF) rc = xd_fail(e, "%s: %s: no stored paths (file corrupt?)", p, full);
  }
  for (int64_t r0 = 0; rc == 0 && r0 < n; r0 += (int64_t)rows_per) {
    int64_t rows = n - r0 < (int64_t)rows_per ? n - r0 : (int64_t)rows_per;
    if (layout == H5D_CHUNKED) {
      hsize_t offset[1] = {(hsize_t)r0}, got = 0;
      uint32_t mask = 0;
      if (H5Dget_chunk_storage_size(d->paths, offset, &got) < 0 || got != bytes ||
          H5Dread_chunk(d->paths, H5P_DEFAULT, offset, &mask, buf) < 0) {
        rc = xd_fail(e, "%s: %s: cannot read the stored references of rows %lld.. (file corrupt?)", p, full,
                     (long long)r0);
        break;
      }
    } else if (pread(g.fd, buf, (size_t)rows * ref_size, (off_t)off) != (ssize_t)((size_t)rows * ref_size)) {
      rc = xd_fail(e, "%s: %s: cannot read the stored references (file truncated?)", p, full);
      break;
    }
    for (int64_t i = 0; i < rows; i++) {
      const unsigned char *q = buf + (size_t)i * ref_size;
      uint32_t len = (uint32_t)le_n(q, 4);
      uint64_t addr = le_n(q + 4, sizeof_addr);
      uint32_t ix = (uint32_t)le_n(q + 4 + sizeof_addr, 4);
      const char *why = NULL;
      if (len > PATH_BYTES_MAX) {
        rc = xd_fail(e, "%s: %s[%lld] declares a path of %u bytes (at most %zu; file corrupt?)", p, full,
                     (long long)(r0 + i), len, PATH_BYTES_MAX);
        break;
      }
      if (len == 0) continue;
      if (ix == 0 || ix > 65535 || gh_check(&g, addr, ix, len, &why) != 0) {
        rc = xd_fail(e, "%s: %s[%lld]: %s (file corrupt?)", p, full, (long long)(r0 + i),
                     why ? why : "a path pointing to an impossible global heap object");
        break;
      }
    }
  }
  if (g.fd >= 0) close(g.fd);
  gh_free(&g);
  free(buf);
  return rc;
}

static int open_split(xd_dataset *d, xd_err *e) {
  const char *p = d->path, *sp = d->split;
  xd_dataset_info *in = &d->info;
  char grp[32];
  snprintf(grp, sizeof grp, "/%s", sp);
  xd_h5_seen_reset();
  int found = xd_h5_find(d->file, grp);
  if (found == -1) return h5_fail(d, grp, "cannot find", e);
  if (found == 0) {
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
  if (found == -2) return xd_fail(e, "%s: %s is a soft or external link (refused)", p, grp);
  int kind = xd_h5_kind(d->file, grp);
  if (kind < 0) return h5_fail(d, grp, "cannot open", e);
  if (kind != H5I_GROUP) return xd_fail(e, "%s: %s is not a group", p, grp);
  hsize_t idims[3] = {0, 0, 0}, ldims[1] = {0}, pdims[1] = {0};
  d->images = open_u8(d, "images", 3, idims, e);
  if (d->images < 0) return -1;
  if ((int64_t)idims[1] != in->height || (int64_t)idims[2] != in->width)
    return xd_fail(e, "%s: /%s/images has shape [%llu,%llu,%llu] but the root attributes say %dx%d", p, sp,
                   (unsigned long long)idims[0], (unsigned long long)idims[1], (unsigned long long)idims[2],
                   in->height, in->width);
  if (idims[0] > (hsize_t)INT64_MAX / 2)
    return xd_fail(e, "%s: /%s/images declares %llu images", p, sp, (unsigned long long)idims[0]);
  hid_t lab = open_u8(d, "labels", 1, ldims, e);
  if (lab < 0) return -1;
  in->checksummed = xd_h5_has_fletcher32(d->images) == 1 && xd_h5_has_fletcher32(lab) == 1;
  in->n = (int64_t)idims[0];
  if (ldims[0] != idims[0]) {
    H5Dclose(lab);
    return xd_fail(e, "%s: /%s/labels has %llu rows but /%s/images has %llu", p, sp,
                   (unsigned long long)ldims[0], sp, (unsigned long long)idims[0]);
  }
  /* every label is held in memory: checked against the budget before allocating */
  char what[4200];
  snprintf(what, sizeof what, "%s: /%s/labels (%lld labels)", p, sp, (long long)in->n);
  if (xd_mem_check(xd_add_sat((uint64_t)in->n, 1), what, e) != 0) {
    H5Dclose(lab);
    return -1;
  }
  d->labels = malloc((size_t)in->n + 1);
  if (!d->labels) {
    H5Dclose(lab);
    return xd_fail(e, "%s: out of memory for /%s/labels (%lld labels)", p, sp, (long long)in->n);
  }
  xd_h5_seen_reset();
  herr_t rc = in->n ? H5Dread(lab, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, d->labels) : 0;
  H5Dclose(lab);
  if (rc < 0) {
    snprintf(what, sizeof what, "/%s/labels", sp);
    return h5_fail(d, what, "cannot read", e);
  }
  for (int64_t i = 0; i < in->n; i++)
    if (d->labels[i] >= in->nclasses)
      return xd_fail(e, "%s: /%s/labels[%lld] = %d is out of range (%d classes)", p, sp, (long long)i,
                     d->labels[i], in->nclasses);
  char full[64], why[256];
  snprintf(full, sizeof full, "/%s/paths", sp);
  d->paths = open_checked(d, "paths", 1, pdims, e);
  if (d->paths < 0) return -1;
  hid_t t = H5Dget_type(d->paths);
  int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0;
  size_t ref_size = t >= 0 ? H5Tget_size(t) : 0; /* a variable-length string's reference in the file */
  /* HDF5 has no conversion between character sets: the memory type must carry the file's */
  H5T_cset_t cset = ok ? H5Tget_cset(t) : H5T_CSET_ERROR;
  if (t >= 0) H5Tclose(t);
  if (ok && cset != H5T_CSET_ASCII && cset != H5T_CSET_UTF8) ok = 0;
  if (!ok) return xd_fail(e, "%s: %s must be a 1-D array of variable-length strings", p, full);
  if (pdims[0] != idims[0])
    return xd_fail(e, "%s: %s has %llu rows but /%s/images has %llu", p, full, (unsigned long long)pdims[0], sp,
                   (unsigned long long)idims[0]);
  /* the references to the strings must all be stored */
  if (xd_h5_check_storage(d->paths, ref_size ? ref_size : 16, why, sizeof why) != 0) return xd_fail(e, "%s: %s %s", p, full, why);
  if (check_path_refs(d, p, full, (int64_t)pdims[0], e) != 0) return -1;
  d->str_type = H5Tcopy(H5T_C_S1);
  if (d->str_type < 0 || H5Tset_size(d->str_type, H5T_VARIABLE) < 0 || H5Tset_cset(d->str_type, cset) < 0)
    return xd_fail_at(e, __FILE__, __LINE__, "%s: HDF5 string type", p);
  uint64_t block = xd_mul_sat(xd_mul_sat(XD_F32_BLOCK, (uint64_t)in->height), (uint64_t)in->width);
  snprintf(what, sizeof what, "%s: the read buffer for %dx%d images", p, in->height, in->width);
  if (xd_mem_check(block, what, e) != 0) return -1;
  d->scratch = xd_alloc((size_t)block, "read buffer", e);
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
  xd_h5_seen_reset();
  int n = 0, bad = 0;
  for (int i = 0; i < 3 && !bad; i++) {
    htri_t ex = H5Lexists(f, split_names[i], H5P_DEFAULT);
    if (ex < 0) bad = 1;
    else if (ex > 0) snprintf(names[n++], 8, "%s", split_names[i]);
  }
  int checksum = xd_h5_seen_checksum();
  H5Fclose(f);
  xd_h5_quiet_end(q);
  if (bad) {
    if (checksum) return xd_fail(e, "%s: checksum mismatch in the root group (file corrupted)", path);
    return xd_fail(e, "%s: cannot read the root group (file corrupt?)", path);
  }
  return n;
}

int xd_dataset_has_split(const char *path, const char *split, xd_err *e) {
  hid_t f = xd_h5_open_read(path, e);
  if (f < 0) return -1;
  xd_h5_quiet q = xd_h5_quiet_begin();
  xd_h5_seen_reset();
  htri_t ex = strchr(split, '/') == NULL && split[0] ? H5Lexists(f, split, H5P_DEFAULT) : 0;
  int checksum = xd_h5_seen_checksum();
  H5Fclose(f);
  xd_h5_quiet_end(q);
  if (ex < 0) {
    if (checksum) return xd_fail(e, "%s: checksum mismatch in the root group (file corrupted)", path);
    return xd_fail(e, "%s: cannot read the root group (file corrupt?)", path);
  }
  return ex > 0;
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
  xd_h5_seen_reset();
  hid_t fs = H5Dget_space(d->images), ms = H5Screate_simple(3, count, NULL);
  herr_t rc = -1;
  if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    rc = H5Dread(d->images, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, images);
  int checksum = xd_h5_seen_checksum();
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  xd_h5_quiet_end(q);
  if (rc < 0 && checksum)
    return xd_fail(e, "%s: checksum mismatch in /%s/images (file corrupted; images %lld to %lld)", d->path, d->split,
                   (long long)a, (long long)b - 1);
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

/* Variable-length reads get their memory from here (a second line of defence after check_path_refs). */
static void *bounded_alloc(size_t size, void *info) {
  if (size > PATH_BYTES_MAX) {
    *(int *)info = 1;
    return NULL;
  }
  return malloc(size ? size : 1);
}
static void bounded_free(void *p, void *info) { free(p); }

int xd_dataset_read_path(xd_dataset *d, int64_t i, char *buf, size_t n, xd_err *e) {
  XD_TRY(check_range(d, i, i + 1, e));
  hsize_t start[1] = {(hsize_t)i}, count[1] = {1};
  char *s = NULL;
  xd_h5_quiet q = xd_h5_quiet_begin();
  xd_h5_seen_reset();
  hid_t fs = H5Dget_space(d->paths), ms = H5Screate_simple(1, count, NULL), dx = H5Pcreate(H5P_DATASET_XFER);
  herr_t rc = -1;
  int too_long = 0;
  if (fs >= 0 && ms >= 0 && dx >= 0 && H5Pset_vlen_mem_manager(dx, bounded_alloc, &too_long, bounded_free, NULL) >= 0 &&
      H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
    rc = H5Dread(d->paths, d->str_type, ms, fs, dx, &s);
  int checksum = xd_h5_seen_checksum();
  if (dx >= 0) H5Pclose(dx);
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  xd_h5_quiet_end(q);
  if (rc < 0 && too_long)
    return xd_fail(e, "%s: /%s/paths[%lld] declares a path longer than %zu bytes (file corrupt?)", d->path, d->split,
                   (long long)i, PATH_BYTES_MAX);
  if (rc < 0 && checksum)
    return xd_fail(e, "%s: checksum mismatch in /%s/paths (file corrupted; path %lld)", d->path, d->split, (long long)i);
  if (rc < 0) return xd_fail(e, "%s: cannot read /%s/paths[%lld] (file corrupt?)", d->path, d->split, (long long)i);
  if (n) snprintf(buf, n, "%s", s ? s : "");
  free(s);
  return 0;
}

void xd_shard_range(int64_t n, int rank, int nranks, int64_t *a, int64_t *b) {
  int64_t base = n / nranks, extra = n % nranks;
  *a = rank * base + (rank < extra ? rank : extra);
  *b = *a + base + (rank < extra ? 1 : 0);
}
