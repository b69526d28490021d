/* `pack`: a folder of images -> dataset file. The file list is fixed (sorted, carved) before any decoding,
 * and blocks of files are decoded in parallel but written in list order, so the output does not depend on
 * the thread count and memory stays bounded by one block of output images plus one decoded source image
 * per thread. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "dataset_write.h"
#include "image.h"
#include "pack.h"
#include "rng.h"

#define PACK_BLOCK 64

static const char *const split_names[3] = {"train", "val", "test"};

typedef struct {
  char *rel; /* path relative to SRC */
  int label;
} entry;

typedef struct {
  entry *v;
  int64_t n, cap;
} entry_list;

typedef struct {
  char *v[XD_MAX_CLASSES];
  int n;
} class_list;

static int list_push(entry_list *l, const char *rel, int label) {
  if (l->n == l->cap) {
    int64_t cap = l->cap ? l->cap * 2 : 1024;
    entry *v = realloc(l->v, sizeof(entry) * (size_t)cap);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n].rel = xd_strdup(rel);
  if (!l->v[l->n].rel) return -1;
  l->v[l->n++].label = label;
  return 0;
}

static void list_free(entry_list *l) {
  for (int64_t i = 0; i < l->n; i++) free(l->v[i].rel);
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const entry *)a)->rel, ((const entry *)b)->rel);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sorted names of the non-hidden entries of dir that are directories (want_dirs) or regular files. */
static int list_names(const char *dir, int want_dirs, char ***names, int64_t *count, xd_err *e) {
  DIR *d = opendir(dir);
  if (!d) return xd_fail(e, "%s: cannot read directory: %s", dir, strerror(errno));
  char **v = NULL;
  int64_t n = 0, cap = 0;
  struct dirent *de;
  char full[8192];
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "__MACOSX") == 0) continue;
    snprintf(full, sizeof full, "%s/%s", dir, de->d_name);
    struct stat st;
    if (stat(full, &st) != 0) continue;
    if (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      char **nv = realloc(v, sizeof(char *) * (size_t)cap);
      if (!nv) break;
      v = nv;
    }
    if (!(v[n] = xd_strdup(de->d_name))) break;
    n++;
  }
  int bad = de != NULL;
  closedir(d);
  if (bad) {
    for (int64_t i = 0; i < n; i++) free(v[i]);
    free(v);
    return xd_fail(e, "%s: out of memory listing directory", dir);
  }
  if (n) qsort(v, (size_t)n, sizeof(char *), cmp_str);
  *names = v;
  *count = n;
  return 0;
}

static void free_names(char **v, int64_t n) {
  for (int64_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Class names go into tables, TSV columns and JSON strings: printable UTF-8 only. */
static int class_name_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p;
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || c < 0x20 || c == 0x7f) return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < len; k++) {
      if ((p[k] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (p[k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp < 0xA0))
      return 0;
    p += len;
  }
  return 1;
}

/* Class folders of one split directory; the first split seen defines the classes, later ones must match. */
static int scan_classes(const char *dir, class_list *cls, int first, xd_err *e) {
  char **names = NULL;
  int64_t n = 0;
  XD_TRY(list_names(dir, 1, &names, &n, e));
  int rc = 0;
  if (n == 0) {
    rc = xd_fail(e, "%s: no class folders (expected %s/<CLASS>/<images>)", dir, dir);
  } else if (n > XD_MAX_CLASSES) {
    rc = xd_fail(e, "%s: %lld class folders (at most %d)", dir, (long long)n, XD_MAX_CLASSES);
  } else if (first) {
    for (int64_t i = 0; i < n && rc == 0; i++) {
      if (strlen(names[i]) >= XD_CLASS_NAME_MAX)
        rc = xd_fail(e, "%s/%s: class name longer than %d bytes (the folder name is the class name)", dir, names[i],
                     XD_CLASS_NAME_MAX - 1);
      else if (!class_name_ok(names[i]))
        rc = xd_fail(e, "%s/%s: class name has control characters or is not UTF-8 (the folder name is the class "
                     "name; it appears in tables, TSV and JSON)", dir, names[i]);
      cls->v[i] = names[i];
      names[i] = NULL;
    }
    cls->n = (int)n;
  } else {
    int same = n == cls->n;
    for (int64_t i = 0; same && i < n; i++) same = strcmp(names[i], cls->v[i]) == 0;
    if (!same) {
      char have[512] = "", want[512] = "";
      for (int64_t i = 0; i < n; i++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", i ? "," : "", names[i]);
      for (int i = 0; i < cls->n; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", i ? "," : "", cls->v[i]);
      rc = xd_fail(e, "%s: class folders [%s] differ from the first split's [%s]", dir, have, want);
    }
  }
  free_names(names, n);
  return rc;
}

/* Appends every file of dir/<class>/ to l, paths relative to SRC prefixed with `prefix`. */
static int scan_files(const char *src, const char *prefix, const class_list *cls, entry_list *l, xd_err *e) {
  char dir[8192], rel[8192];
  for (int c = 0; c < cls->n; c++) {
    snprintf(dir, sizeof dir, "%s/%s%s", src, prefix, cls->v[c]);
    char **names = NULL;
    int64_t n = 0;
    XD_TRY(list_names(dir, 0, &names, &n, e));
    for (int64_t i = 0; i < n; i++) {
      snprintf(rel, sizeof rel, "%s%s/%s", prefix, cls->v[c], names[i]);
      if (list_push(l, rel, c) != 0) {
        free_names(names, n);
        return xd_fail(e, "%s: out of memory listing files", src);
      }
    }
    free_names(names, n);
  }
  return 0;
}

/* ---- grouping: files that must not be split between train and val ---- */

typedef struct {
  uint64_t key;
  int64_t idx;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
  const keyed *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

static int64_t uf_find(int64_t *p, int64_t i) {
  while (p[i] != i) i = p[i] = p[p[i]];
  return i;
}

/* the smaller index becomes the root, so groups do not depend on the order of unions */
static void uf_union(int64_t *p, int64_t a, int64_t b) {
  a = uf_find(p, a);
  b = uf_find(p, b);
  if (a < b) p[b] = a;
  else if (b < a) p[a] = b;
}

static uint64_t hash_bytes(uint64_t h, const unsigned char *b, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = xd_mix64(h ^ w);
  }
  uint64_t tail = 0;
  memcpy(&tail, b + i, n - i);
  return xd_mix64(h ^ tail ^ ((uint64_t)n << 56));
}

/* 64-bit hash of a file's bytes; 0 with *ok = 0 if it cannot be read (such files are skipped later) */
static uint64_t file_hash(const char *path, int *ok) {
  FILE *f = fopen(path, "rb");
  *ok = 0;
  if (!f) return 0;
  unsigned char buf[65536];
  uint64_t h = 0x9e3779b97f4a7c15ULL, len = 0;
  size_t r;
  while ((r = fread(buf, 1, sizeof buf, f)) > 0) {
    h = hash_bytes(h, buf, r);
    len += r;
  }
  *ok = !ferror(f);
  fclose(f);
  return xd_mix64(h ^ len);
}

/* parent[] (union-find) over train: byte-identical files, and files whose names share the regex's match */
static int group_train(const char *src, const entry_list *train, const xd_pack_opts *o, int64_t *parent, xd_err *e) {
  const int64_t n = train->n;
  keyed *k = malloc(sizeof(keyed) * ((size_t)n + 1));
  char *ok = malloc((size_t)n + 1);
  if (!k || !ok) {
    free(k);
    free(ok);
    return xd_fail(e, "out of memory grouping files for the validation split");
  }
  for (int64_t i = 0; i < n; i++) parent[i] = i;
  int nt = o->threads > 0 ? o->threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
  for (int64_t i = 0; i < n; i++) {
    char path[4096];
    int good;
    snprintf(path, sizeof path, "%s/%s", src, train->v[i].rel);
    k[i].key = file_hash(path, &good);
    k[i].idx = i;
    ok[i] = (char)good;
  }
  qsort(k, (size_t)n, sizeof *k, cmp_keyed);
  for (int64_t i = 1; i < n; i++)
    if (k[i].key == k[i - 1].key && ok[k[i].idx] && ok[k[i - 1].idx]) uf_union(parent, k[i].idx, k[i - 1].idx);
  int rc = 0;
  if (o->group_regex) {
    regex_t re;
    int rerr = regcomp(&re, o->group_regex, REG_EXTENDED);
    if (rerr != 0) {
      char why[256];
      regerror(rerr, &re, why, sizeof why);
      rc = xd_fail(e, "--group-regex '%s' is not a valid extended regular expression: %s", o->group_regex, why);
    } else {
      int64_t m = 0;
      for (int64_t i = 0; i < n; i++) {
        const char *name = strrchr(train->v[i].rel, '/');
        name = name ? name + 1 : train->v[i].rel;
        regmatch_t g[2];
        if (regexec(&re, name, 2, g, 0) != 0) continue;
        regmatch_t use = g[1].rm_so >= 0 ? g[1] : g[0];
        k[m].key = hash_bytes(0x51ed27, (const unsigned char *)name + use.rm_so, (size_t)(use.rm_eo - use.rm_so));
        k[m++].idx = i;
      }
      regfree(&re);
      qsort(k, (size_t)m, sizeof *k, cmp_keyed);
      for (int64_t i = 1; i < m; i++)
        if (k[i].key == k[i - 1].key) uf_union(parent, k[i].idx, k[i - 1].idx);
    }
  }
  free(k);
  free(ok);
  return rc;
}

/* Moves a stratified, seeded fraction of each class of train into val, whole groups at a time (a group
 * belongs to the class of its first file); both lists stay sorted by path. */
static int carve_val(const char *src, entry_list *train, entry_list *val, int nclasses, const xd_pack_opts *o,
                     xd_err *e) {
  const int64_t n = train->n;
  char *to_val = calloc((size_t)n + 1, 1);
  int64_t *parent = malloc(sizeof(int64_t) * ((size_t)n + 1)), *size = calloc((size_t)n + 1, sizeof(int64_t));
  int64_t *roots = malloc(sizeof(int64_t) * ((size_t)n + 1));
  if (!to_val || !parent || !size || !roots) {
    free(to_val);
    free(parent);
    free(size);
    free(roots);
    return xd_fail(e, "out of memory carving the validation split");
  }
  int rc = group_train(src, train, o, parent, e);
  for (int64_t i = 0; rc == 0 && i < n; i++) size[uf_find(parent, i)]++;
  for (int c = 0; rc == 0 && c < nclasses; c++) {
    int64_t m = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
      if (train->v[i].label != c) continue;
      m++;
      if (parent[i] == i) roots[r++] = i; /* roots are their group's smallest index */
    }
    int64_t k = (int64_t)llround(o->val_fraction * (double)m), taken = 0;
    xd_rng rng = xd_rng_make(xd_key(o->seed, XD_STREAM_SPLIT, (uint64_t)c, 0));
    xd_shuffle(&rng, roots, r);
    for (int64_t j = 0; j < r && taken < k; j++) {
      if (taken + size[roots[j]] >= m) continue; /* every class keeps at least one training image */
      to_val[roots[j]] = 1;
      taken += size[roots[j]];
    }
  }
  for (int64_t i = 0; i < n; i++) to_val[i] = to_val[uf_find(parent, i)];
  int64_t t = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!to_val[i]) {
      train->v[t++] = train->v[i];
    } else if (rc == 0) {
      rc = list_push(val, train->v[i].rel, train->v[i].label) ? xd_fail(e, "out of memory carving the validation split") : 0;
      free(train->v[i].rel);
    } else {
      free(train->v[i].rel);
    }
  }
  train->n = t;
  free(to_val);
  free(parent);
  free(size);
  free(roots);
  if (rc != 0) return -1;
  if (val->n) qsort(val->v, (size_t)val->n, sizeof(entry), cmp_entry);
  return 0;
}

typedef struct {
  const char *src;
  const xd_pack_opts *o;
  xd_dsw *w;
  xd_pack_summary *s;
  int64_t done, total;
  double t0;
  uint8_t *images, *labels;
  const char **paths;
  xd_err *errs;
  int *ok;
} pack_ctx;

static void progress(pack_ctx *c) {
  double dt = xd_now() - c->t0, rate = dt > 0 ? (double)c->done / dt : 0;
  double eta = rate > 0 ? (double)(c->total - c->done) / rate : 0;
  fprintf(stderr, "\rpack: %lld/%lld files, %.0f files/s, ETA %.0fs\033[K", (long long)c->done,
          (long long)c->total, rate, eta);
  fflush(stderr);
}

static void clear_progress(pack_ctx *c) {
  if (c->o->progress) fprintf(stderr, "\r\033[K");
}

static int pack_split(pack_ctx *c, int split, const entry_list *l, xd_err *e) {
  if (l->n == 0) return 0;
  XD_TRY(xd_dsw_begin_split(c->w, split_names[split], e));
  const int size = c->o->size;
  const size_t hw = (size_t)size * (size_t)size;
  for (int64_t start = 0; start < l->n; start += PACK_BLOCK) {
    int m = (int)(l->n - start < PACK_BLOCK ? l->n - start : PACK_BLOCK);
    int nt = c->o->threads > 0 ? c->o->threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int i = 0; i < m; i++) {
      char full[8192];
      snprintf(full, sizeof full, "%s/%s", c->src, l->v[start + i].rel);
      c->ok[i] = xd_image_load_gray(full, size, c->images + (size_t)i * hw, &c->errs[i]) == 0;
    }
    int k = 0;
    for (int i = 0; i < m; i++) {
      const entry *en = &l->v[start + i];
      if (!c->ok[i]) {
        clear_progress(c);
        xd_msg_oneline(c->errs[i].msg); /* a file name with a newline must not make two lines */
        if (c->o->log) fprintf(c->o->log, "skip %s\n", c->errs[i].msg[0] ? c->errs[i].msg : en->rel);
        c->s->skipped++;
        continue;
      }
      if (k != i) memcpy(c->images + (size_t)k * hw, c->images + (size_t)i * hw, hw);
      c->labels[k] = (uint8_t)en->label;
      c->paths[k++] = en->rel;
      c->s->per_class[split][en->label]++;
    }
    XD_TRY(xd_dsw_append(c->w, c->images, c->labels, c->paths, k, e));
    c->done += m;
    if (c->o->progress) progress(c);
  }
  clear_progress(c);
  return xd_dsw_end_split(c->w, &c->s->written[split], e);
}

static void print_summary(FILE *f, const char *out, const class_list *cls, const xd_pack_summary *s,
                          int64_t files, int size) {
  int64_t total = s->written[0] + s->written[1] + s->written[2];
  fprintf(f, "pack: wrote %s: %lld images %dx%d, %d classes, %lld skipped; %lld files in %.2f s (%.0f files/s)\n",
          out, (long long)total, size, size, cls->n, (long long)s->skipped, (long long)files, s->seconds,
          s->seconds > 0 ? (double)files / s->seconds : 0.0);
  fprintf(f, "  %-6s", "split");
  for (int c = 0; c < cls->n; c++) fprintf(f, " %10s", cls->v[c]);
  fprintf(f, " %10s\n", "total");
  for (int sp = 0; sp < 3; sp++) {
    if (!s->written[sp]) continue;
    fprintf(f, "  %-6s", split_names[sp]);
    for (int c = 0; c < cls->n; c++) fprintf(f, " %10lld", (long long)s->per_class[sp][c]);
    fprintf(f, " %10lld\n", (long long)s->written[sp]);
  }
}

/* Fills lists[3] (train, val, test) from SRC, each sorted by path; cls gets the class folder names. */
static int scan_src(const char *src, class_list *cls, entry_list lists[3], xd_err *e) {
  if (!is_dir(src)) return xd_fail(e, "%s: not a directory", src);
  char dir[8192];
  int has_split = 0;
  for (int sp = 0; sp < 3; sp++) {
    snprintf(dir, sizeof dir, "%s/%s", src, split_names[sp]);
    has_split |= is_dir(dir);
  }
  if (!has_split) {
    XD_TRY(scan_classes(src, cls, 1, e));
    XD_TRY(scan_files(src, "", cls, &lists[0], e));
  } else {
    for (int sp = 0; sp < 3; sp++) {
      snprintf(dir, sizeof dir, "%s/%s", src, split_names[sp]);
      if (!is_dir(dir)) continue;
      XD_TRY(scan_classes(dir, cls, cls->n == 0, e));
      char prefix[16];
      snprintf(prefix, sizeof prefix, "%s/", split_names[sp]);
      XD_TRY(scan_files(src, prefix, cls, &lists[sp], e));
    }
  }
  for (int sp = 0; sp < 3; sp++)
    if (lists[sp].n) qsort(lists[sp].v, (size_t)lists[sp].n, sizeof(entry), cmp_entry);
  return 0;
}

/* SPEC: carve val from train when SRC has none or a tiny one (< 5% of train); a tiny val is merged into
 * train first so that its images are not lost and val is stratified like the rest. */
static int make_val(const char *src, entry_list lists[3], int nclasses, const xd_pack_opts *o, const char **note,
                    xd_err *e) {
  *note = lists[1].n ? "val=source" : "val=none";
  if (o->val_fraction <= 0 || lists[0].n == 0) return 0;
  if (lists[1].n > 0 && (double)lists[1].n >= 0.05 * (double)lists[0].n) return 0;
  *note = lists[1].n ? "val=merged-into-train-then-carved" : "val=carved";
  for (int64_t i = 0; i < lists[1].n; i++)
    if (list_push(&lists[0], lists[1].v[i].rel, lists[1].v[i].label) != 0)
      return xd_fail(e, "out of memory merging the validation split");
  list_free(&lists[1]);
  qsort(lists[0].v, (size_t)lists[0].n, sizeof(entry), cmp_entry);
  return carve_val(src, &lists[0], &lists[1], nclasses, o, e);
}

/* OUT must not replace one of the images being packed (OUT given as SRC/NORMAL/x.png): the rename at the
 * end would destroy an input. Only a file of the same name can be replaced, so only those are stat'ed. */
static int check_out_not_input(const char *src, const char *target, const entry_list lists[3], xd_err *e) {
  struct stat st;
  if (stat(target, &st) != 0) return 0;
  const char *tb = strrchr(target, '/');
  tb = tb ? tb + 1 : target;
  char full[8192];
  for (int sp = 0; sp < 3; sp++)
    for (int64_t i = 0; i < lists[sp].n; i++) {
      const char *rb = strrchr(lists[sp].v[i].rel, '/');
      rb = rb ? rb + 1 : lists[sp].v[i].rel;
      if (strcmp(rb, tb)) continue;
      snprintf(full, sizeof full, "%s/%s", src, lists[sp].v[i].rel);
      if (xd_same_file(full, target)) return xd_fail(e, "%s: the output file is one of the input images (%s)", target, full);
    }
  return 0;
}

static int pack_all(const char *src, const char *out, const xd_pack_opts *o, xd_pack_summary *s,
                    class_list *cls, entry_list lists[3], xd_err *e) {
  double t0 = xd_now();
  char target[4096];
  /* a directory, a device or a missing folder as OUT fails now, not after decoding every image */
  if (xd_output_check(out, 0, target, sizeof target, e) != 0) return -1;
  char what[4200];
  snprintf(what, sizeof what, "%s: a block of %d images of %dx%d", out, PACK_BLOCK, o->size, o->size);
  XD_TRY(xd_mem_check(xd_mul_sat((uint64_t)PACK_BLOCK, xd_mul_sat((uint64_t)o->size, (uint64_t)o->size)), what, e));
  XD_TRY(scan_src(src, cls, lists, e));
  XD_TRY(check_out_not_input(src, target, lists, e));
  const char *note = "";
  XD_TRY(make_val(src, lists, cls->n, o, &note, e));
  int64_t files = lists[0].n + lists[1].n + lists[2].n;
  if (files == 0) return xd_fail(e, "%s: no files found under the class folders", src);
  char source[1024];
  snprintf(source, sizeof source, "pack %s size=%d val-fraction=%g seed=%llu %s", src, o->size, o->val_fraction,
           (unsigned long long)o->seed, note);
  pack_ctx c = {.src = src, .o = o, .s = s, .total = files, .t0 = t0};
  size_t hw = (size_t)o->size * (size_t)o->size;
  c.images = xd_alloc((size_t)PACK_BLOCK * hw, "image block", e);
  c.labels = malloc(PACK_BLOCK);
  c.paths = malloc(sizeof(char *) * PACK_BLOCK);
  c.errs = malloc(sizeof(xd_err) * PACK_BLOCK);
  c.ok = malloc(sizeof(int) * PACK_BLOCK);
  int rc = -1;
  if (!c.images || !c.labels || !c.paths || !c.errs || !c.ok) {
    if (c.images) xd_fail(e, "%s: out of memory", out);
    goto done;
  }
  if (xd_dsw_create(&c.w, out, o->size, o->size, (const char *const *)cls->v, cls->n, source, e) != 0) goto done;
  for (int sp = 0; sp < 3; sp++)
    if (pack_split(&c, sp, &lists[sp], e) != 0) goto done;
  s->seconds = xd_now() - t0;
  if (s->written[0] + s->written[1] + s->written[2] == 0) {
    xd_fail(e, "%s: no readable image among %lld files (all skipped)", src, (long long)files);
    goto done;
  }
  rc = xd_dsw_commit(c.w, e);
  c.w = NULL;
  if (rc == 0 && o->log) print_summary(o->log, out, cls, s, files, o->size);
done:
  xd_dsw_abort(c.w);
  xd_free(c.images);
  free(c.labels);
  free(c.paths);
  free(c.errs);
  free(c.ok);
  return rc;
}

int xd_pack(const char *src, const char *out, const xd_pack_opts *o, xd_pack_summary *s, xd_err *e) {
  xd_pack_summary local;
  if (!s) s = &local;
  memset(s, 0, sizeof *s);
  if (o->size < 1 || o->size > 4096) return xd_fail(e, "invalid --size %d (1 to 4096)", o->size);
  if (!(o->val_fraction >= 0 && o->val_fraction < 1))
    return xd_fail(e, "invalid --val-fraction %g (0 <= F < 1)", o->val_fraction);
  class_list cls = {{0}, 0};
  entry_list lists[3] = {{0}, {0}, {0}};
  int rc = pack_all(src, out, o, s, &cls, lists, e);
  for (int i = 0; i < 3; i++) list_free(&lists[i]);
  for (int i = 0; i < cls.n; i++) free(cls.v[i]);
  return rc;
}
