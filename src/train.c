#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "h5util.h"
#include "dataset.h"
#include "infer.h"
#include "loss.h"
#include "metrics.h"
#include "rng.h"

/* Extra floats after the gradient arena, all-reduced with it so one call per step carries everything. */
enum { EX_LOSS, EX_CORRECT, EX_STOP, EX_ERR, EX_ANOMALY, EX_COUNT };

typedef struct split_data {
  int64_t n;
  uint8_t *images, *labels;
} split_data;

/* Streaming: when a rank's shard does not fit under --mem-cap, a thread reads the next step's images
 * (one chunk each) while the current step computes. HDF5 is not thread-safe here, so the thread exists
 * only inside an epoch's step loop, where no other HDF5 call happens on this rank. */
typedef struct prefetch {
  xd_dataset *ds;
  int64_t shard_a;        /* first image of the shard in the split */
  const int64_t *perm;    /* this epoch's order, shard-relative */
  int64_t step;           /* which step's batch to load */
  int lb;
  size_t px;
  uint8_t *buf[2];        /* double buffer, lb images each */
  int rc;
  xd_err err;
  pthread_t th;
  int running;
} prefetch;

static void *prefetch_main(void *arg) {
  prefetch *p = arg;
  uint8_t *dst = p->buf[p->step & 1];
  p->rc = 0;
  for (int j = 0; j < p->lb && p->rc == 0; j++) {
    int64_t i = p->shard_a + p->perm[p->step * p->lb + j];
    p->rc = xd_dataset_read_u8(p->ds, i, i + 1, dst + (size_t)j * p->px, NULL, &p->err);
  }
  return NULL;
}

static int prefetch_start(prefetch *p, int64_t step, xd_err *e) {
  p->step = step;
  if (pthread_create(&p->th, NULL, prefetch_main, p) != 0) return xd_fail(e, "cannot start the prefetch thread");
  p->running = 1;
  return 0;
}

/* Waits for the load in flight; returns its buffer or NULL with e filled. */
static const uint8_t *prefetch_wait(prefetch *p, xd_err *e) {
  if (!p->running) return NULL;
  pthread_join(p->th, NULL);
  p->running = 0;
  if (p->rc) {
    *e = p->err;
    return NULL;
  }
  return p->buf[p->step & 1];
}

typedef struct run {
  const xd_train_opts *o;
  xd_dist *d;
  xd_model m;
  xd_optimizer opt;
  xd_workspace ws;
  xd_train_state st;
  xd_ckpt_meta meta;
  xd_augment aug;
  xd_dataset_info info;
  split_data train, val; /* train: this rank's shard (labels only when streaming); val: rank 0 only */
  prefetch pf;           /* streaming reader; pf.ds == NULL when the shard is in memory */
  int64_t train_total, class_count[2];
  int64_t shard_a, shard_b, val_n; /* this rank's shard [a, b) of train; rank 0: images in val */
  int lb, steps_per_epoch, has_val, streamed;
  float cw[2];
  const float *cwp;
  char dir[2048], last_path[2100], best_path[2100], csv_path[2100], log_path[2100];
  char hosts[1024];      /* where the ranks run (xd_dist_hosts), for train.log */
  FILE *log;
  int log_errno;         /* first failed write to train.log (0: none) */
  xd_reducer bn_reducer;
  float *val_probs;
  double allreduce_s; /* time in the gradient all-reduce this epoch (includes waiting for slower ranks) */
  int64_t good_epoch, good_step; /* the state last.h5 holds (good_step < 0: no last.h5 of this run yet) */
  int bar;                 /* rank 0 draws the progress bar on stdout (o->progress, not quiet) */
  int bar_epoch;           /* the epoch (1-based) the bar describes */
  double bar_last;         /* when the bar was last drawn (drawn at most 10 times a second, and at the ends) */
  double step_secs;        /* seconds per step of the current epoch (0: not known yet) */
  double val_secs;         /* the last validation's seconds (0: none yet) */
} run;

static int leader(const run *r) { return r->d->rank == 0; }

/* An error every rank detected identically (same data, all-reduced values): rank 0 keeps the message,
 * the others an empty one, so that the job prints it once. Returns -1. */
static int fail_all(run *r, xd_err *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_all(run *r, xd_err *e, const char *fmt, ...) {
  if (!e) return -1;
  if (!leader(r)) {
    e->msg[0] = 0;
    return -1;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return -1;
}

/* Every rank learns whether any rank failed (rc != 0). The failing ranks keep their message, the others
 * get "". Returns 0 when all succeeded, else -1 on every rank. */
static int agree(run *r, int rc, xd_err *e) {
  if (!xd_dist_max_i64(r->d, rc != 0)) return 0;
  if (rc == 0 && e) e->msg[0] = 0;
  return -1;
}

/* A rank-0-only phase's status, told to every rank (the others get ""). */
static int agree_leader(run *r, int rc, xd_err *e) {
  int32_t v = rc != 0;
  xd_dist_bcast_idle(r->d, &v, sizeof v);
  if (!v) return 0;
  if (!leader(r) && e) e->msg[0] = 0;
  return -1;
}

/* What last.h5 holds, for messages about a stop: "runs/x/last.h5 keeps epoch 2 (step 84)". */
static const char *kept(const run *r, char *buf, size_t n) {
  if (r->good_step < 0)
    snprintf(buf, n, "no checkpoint was written");
  else
    snprintf(buf, n, "%s keeps epoch %lld, step %lld", r->last_path, (long long)r->good_epoch,
             (long long)r->good_step);
  return buf;
}

static int read_split(const char *path, const char *split, int64_t a, int64_t b, split_data *s, int64_t *total,
                      xd_dataset_info *info, xd_err *e) {
  xd_dataset *ds;
  XD_TRY(xd_dataset_open(&ds, path, split, e));
  const xd_dataset_info *in = xd_dataset_get_info(ds);
  if (info) *info = *in;
  if (total) *total = in->n;
  if (b < 0) b = in->n;
  if (a > b) a = b;
  s->n = b - a;
  size_t px = (size_t)in->height * in->width;
  int rc = 0;
  char what[64];
  snprintf(what, sizeof what, "the %s split's images", split);
  if (xd_mem_check(xd_mul_sat((uint64_t)s->n, px), what, e)) {
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", e->msg);
    rc = xd_fail(e, "%s: %s", path, msg);
  }
  s->images = rc ? NULL : xd_alloc((size_t)s->n * px, "images", e);
  s->labels = s->images ? xd_alloc((size_t)s->n + 1, "labels", e) : NULL;
  if (rc == 0 && !s->labels) rc = -1;
  if (rc == 0 && s->n > 0) rc = xd_dataset_read_u8(ds, a, b, s->images, s->labels, e);
  xd_dataset_close(ds);
  return rc;
}

static uint64_t params_hash(const xd_model *m) {
  const uint32_t *p = (const uint32_t *)m->params;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < m->nparams; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

/* ---- finiteness (issue 9): name the layer, never keep or write a non-finite state ---- */

static const char *kind_name(xd_layer_kind k) {
  static const char *const n[] = {"conv", "maxpool", "avgpool", "globalavgpool", "batchnorm", "dropout", "flatten",
                                  "dense", "activation", "add", "standardize"};
  return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "layer";
}

static const char *layer_label(const xd_model *m, int i, char *buf, size_t n) {
  snprintf(buf, n, "layer %d (%s, line %d of the model)", i, kind_name(m->layers[i].kind), m->layers[i].line);
  return buf;
}

/* 1 if a[0..n) holds a NaN or an infinity (or, with nonneg, a negative value). Branch-free on the bits. */
static int bad_floats(const float *a, size_t n, int nonneg) {
  const uint32_t *u = (const uint32_t *)a;
  uint32_t bad = 0;
  if (nonneg) {
    for (size_t i = 0; i < n; i++) bad |= ((u[i] & 0x7f800000u) == 0x7f800000u) | ((u[i] >> 31) & (u[i] != 0x80000000u));
  } else {
    for (size_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
  }
  return bad != 0;
}

/* First layer whose parameter-arena values (weights and biases, in a params/grads/moments-shaped arena)
 * are bad, or -1. */
static int bad_param_layer(const xd_model *m, const float *a, int nonneg) {
  if (!a) return -1;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    if ((L->w_n && bad_floats(a + L->w_off, L->w_n, nonneg)) || (L->b_n && bad_floats(a + L->b_off, L->b_n, nonneg)))
      return i;
  }
  return -1;
}

/* Same for the batchnorm statistics (running variances must also be >= 0). */
static int bad_buffer_layer(const xd_model *m, const float *b) {
  if (!b) return -1;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    if (L->kind != XD_L_BATCHNORM) continue;
    if (bad_floats(b + L->rm_off, (size_t)L->in_c, 0) || bad_floats(b + L->rv_off, (size_t)L->in_c, 1)) return i;
  }
  return -1;
}

/* The whole state that checkpoints hold: weights, batchnorm statistics, optimizer moments, EMA. 0, or -1
 * with "WHEN: non-finite WHAT in layer 5 (conv, line 6 of the model); stopped: runs/x/last.h5 keeps ...". */
static int check_state(run *r, const char *when, xd_err *e) {
  const xd_model *m = &r->m;
  struct { const float *a; const char *what; int buffers, nonneg; } t[] = {
      {m->params, "weight", 0, 0},
      {m->buffers, "batchnorm statistic", 1, 0},
      {r->opt.m, "optimizer moment", 0, 0},
      {r->opt.v, "optimizer second moment (NaN, Inf or negative)", 0, 1},
      {r->opt.ema, "EMA weight", 0, 0},
      {r->opt.ema_buf, "EMA batchnorm statistic", 1, 0},
  };
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
    int l = t[k].buffers ? bad_buffer_layer(m, t[k].a) : bad_param_layer(m, t[k].a, t[k].nonneg);
    if (l >= 0) {
      char lab[160], kb[2300];
      return xd_fail(e, "%s: non-finite %s in %s; stopped, %s", when, t[k].what, layer_label(m, l, lab, sizeof lab),
                     kept(r, kb, sizeof kb));
    }
  }
  return 0;
}

/* First layer whose output (ws->act[l + 1], B samples) holds a NaN or an infinity, or -1. */
static int bad_activation_layer(const xd_model *m, const xd_workspace *ws, int B) {
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    size_t n = (size_t)B * L->out_c * L->out_h * L->out_w;
    if (bad_floats(ws->act[i + 1], n, 0)) return i;
  }
  return -1;
}

/* ---- run directory files (rank 0) ---- */

static const char *CSV_HEADER =
    "epoch,train_loss,train_acc,val_loss,val_acc,val_auc,val_precision,val_recall,val_specificity,val_f1,lr,"
    "images_per_s,seconds\n";

static int csv_open_truncated(run *r, xd_err *e) {
  /* keep the header and the rows of completed epochs: a resumed run rewrites what came after last.h5 */
  if (xd_file_exists(r->csv_path)) XD_TRY(xd_check_regular(r->csv_path, e));
  FILE *in = fopen(r->csv_path, "r");
  if (!in && errno != ENOENT) return xd_fail(e, "%s: cannot read: %s", r->csv_path, strerror(errno));
  char line[1024];
  int64_t rows = 0;
  int keep = 0;
  if (in) {
    /* nothing to drop (the usual resume): leave the file as it is */
    if (fgets(line, sizeof line, in) && !strcmp(line, CSV_HEADER)) {
      keep = 1;
      int c, at_start = 1;
      while ((c = fgetc(in)) != EOF) {
        if (c == '\n') rows++;
        at_start = c == '\n';
      }
      if (!at_start || rows != r->st.epoch) keep = 0;
    }
    if (ferror(in)) {
      int err = errno;
      fclose(in);
      return xd_fail(e, "%s: cannot read: %s", r->csv_path, strerror(err));
    }
    if (keep) {
      fclose(in);
      return 0;
    }
    rewind(in);
  }
  char tmp[2200];
  xd_tmp_name(r->csv_path, tmp, sizeof tmp);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    int err = errno;
    if (in) fclose(in);
    return xd_fail(e, "%s: cannot write: %s", r->csv_path, strerror(err));
  }
  fputs(CSV_HEADER, out);
  if (in) {
    rows = 0;
    if (fgets(line, sizeof line, in)) { /* header */
      while (rows < r->st.epoch && fgets(line, sizeof line, in)) {
        fputs(line, out);
        rows++;
      }
    }
    fclose(in);
  }
  int err = ferror(out) ? (errno ? errno : EIO) : 0;
  if (fflush(out) != 0 && !err) err = errno;
  if (fclose(out) != 0 && !err) err = errno;
  if (err) {
    unlink(tmp);
    return xd_fail(e, "%s: cannot write: %s", r->csv_path, strerror(err));
  }
  return xd_commit_file(tmp, r->csv_path, e);
}

/* Writes metrics.csv anew (a temporary name, renamed when complete and flushed): a row is all there or
 * not at all, also on a full disk. */
static int csv_replace(run *r, const char *text, size_t n, xd_err *e) {
  char tmp[2200];
  xd_tmp_name(r->csv_path, tmp, sizeof tmp);
  FILE *out = fopen(tmp, "w");
  if (!out) return xd_fail(e, "%s: cannot write: %s", r->csv_path, strerror(errno));
  errno = 0;
  int err = fwrite(text, 1, n, out) != n ? (errno ? errno : EIO) : 0;
  if (fflush(out) != 0 && !err) err = errno ? errno : EIO;
  if (fclose(out) != 0 && !err) err = errno ? errno : EIO;
  if (err) {
    unlink(tmp);
    return xd_fail(e, "%s: cannot write: %s", r->csv_path, strerror(err));
  }
  return xd_commit_file(tmp, r->csv_path, e);
}

static void csv_num(char *buf, size_t n, double v) {
  size_t at = strlen(buf);
  if (isfinite(v)) snprintf(buf + at, n - at, ",%.6g", v);
  else snprintf(buf + at, n - at, ",");
}

/* One more row: the file as it is (the rows of the epochs before) plus this epoch's. */
static int csv_append(run *r, int epoch, double tl, double ta, const xd_binary_metrics *vm, float lr, double ips,
                      double secs, xd_err *e) {
  char row[512];
  snprintf(row, sizeof row, "%d", epoch);
  const double v[] = {tl, ta, vm->loss, vm->accuracy, vm->roc_auc, vm->precision, vm->recall, vm->specificity,
                      vm->f1, lr, ips, secs};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) csv_num(row, sizeof row, v[i]);
  strcat(row, "\n");
  FILE *in = fopen(r->csv_path, "r");
  if (!in) return xd_fail(e, "%s: cannot read: %s", r->csv_path, strerror(errno));
  size_t cap = 4096, n = 0, k;
  char *buf = malloc(cap);
  while (buf && (k = fread(buf + n, 1, cap - n, in)) > 0) {
    n += k;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  int rerr = ferror(in) ? errno : 0;
  fclose(in);
  if (!buf) return xd_fail(e, "%s: out of memory", r->csv_path);
  if (rerr) {
    free(buf);
    return xd_fail(e, "%s: cannot read: %s", r->csv_path, strerror(rerr));
  }
  size_t rl = strlen(row);
  if (n + rl + 1 > cap) {
    char *nb = realloc(buf, n + rl + 1);
    if (!nb) {
      free(buf);
      return xd_fail(e, "%s: out of memory", r->csv_path);
    }
    buf = nb;
  }
  memcpy(buf + n, row, rl);
  int rc = csv_replace(r, buf, n + rl, e);
  free(buf);
  return rc;
}

static void say(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(run *r, const char *fmt, ...) {
  if (!leader(r)) return;
  va_list ap;
  if (!r->o->quiet) {
    if (r->bar) fputs("\r\033[K", stdout); /* the progress bar's line */
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
  }
  if (r->log && !r->log_errno) {
    errno = 0;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    if (fflush(r->log) != 0 || ferror(r->log)) r->log_errno = errno ? errno : EIO;
  }
}

/* 0, or -1 naming train.log and why the last write to it failed. */
static int log_status(run *r, xd_err *e) {
  if (!r->log_errno) return 0;
  return xd_fail(e, "%s: cannot write: %s", r->log_path, strerror(r->log_errno));
}

/* ---- validation (rank 0) ---- */

static void bar_val(run *r, int64_t done, double t0);

static void validate(run *r, xd_binary_metrics *vm) {
  double loss = 0, t0 = xd_now();
  /* in pieces of whole workspace batches, for the progress bar: the same forward passes and the same
   * order of the loss sum as one call */
  const size_t px = (size_t)r->m.in_c * r->m.in_h * r->m.in_w;
  int64_t piece = (int64_t)r->ws.batch * (r->bar ? 1 : (r->val.n / r->ws.batch + 1));
  for (int64_t a = 0; a < r->val.n; a += piece) {
    int64_t nb = r->val.n - a < piece ? r->val.n - a : piece;
    xd_infer(&r->m, &r->ws, nb, r->val.images + (size_t)a * px, r->val.labels + a, r->val_probs + a, &loss);
    bar_val(r, a + nb, t0);
  }
  r->val_secs = xd_now() - t0;
  xd_metrics_binary(r->val.n, r->val_probs, r->val.labels, 0.5, vm);
  vm->loss = loss / (double)r->val.n;
}

/* ---- setup ---- */

static int bcast_model(run *r, xd_err *e) {
  /* rank 0 built the model (fresh or from last.h5); the others build the same text, then take its state */
  int64_t len = leader(r) ? (int64_t)strlen(r->m.text) + 1 : 0;
  xd_dist_bcast_idle(r->d, &len, sizeof len);
  char *text = leader(r) ? r->m.text : malloc((size_t)len);
  int rc = text ? 0 : xd_fail(e, "out of memory");
  if (agree(r, rc, e)) return -1;
  xd_dist_bcast_idle(r->d, text, (int)len);
  if (!leader(r)) {
    rc = xd_model_build(&r->m, text, "model from rank 0", e);
    free(text);
  }
  if (agree(r, rc, e)) return -1;
  xd_dist_bcast_idle(r->d, r->m.params, (int)(r->m.nparams * sizeof(float)));
  if (r->m.nbuffers) xd_dist_bcast_idle(r->d, r->m.buffers, (int)(r->m.nbuffers * sizeof(float)));
  return 0;
}

/* What every rank needs to know before anything big is read: the train split's size and classes, the
 * shard of this rank, the steps of an epoch, and whether the shard is streamed (over --mem-cap). */
static int shard_info(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  xd_dist *d = r->d;
  if (o->resume && !o->data_given && !xd_file_exists(o->data))
    return xd_fail(e, "%s: the run's dataset %s is missing (give --data with the same dataset)", r->last_path,
                   o->data);
  xd_dataset *ds;
  XD_TRY(xd_dataset_open(&ds, o->data, "train", e));
  r->info = *xd_dataset_get_info(ds);
  xd_dataset_close(ds);
  r->train_total = r->info.n;
  if (o->batch % d->size)
    return xd_fail(e, "--batch %d is the global batch and must be divisible by the %d ranks", o->batch, d->size);
  r->lb = o->batch / d->size;
  xd_shard_range(r->train_total, d->rank, d->size, &r->shard_a, &r->shard_b);
  int64_t smallest = r->train_total / d->size; /* shards differ by at most one */
  if (smallest < r->lb)
    return xd_fail(e, "%s: train split has %lld images: a rank's shard (%lld) is smaller than its local batch %d",
                   o->data, (long long)r->train_total, (long long)smallest, r->lb);
  /* every rank runs the same number of steps: the smallest shard decides */
  r->steps_per_epoch = (int)(smallest / r->lb);
  double mb = (double)(r->shard_b - r->shard_a) * r->info.height * r->info.width / 1048576.0;
  r->streamed = mb > o->mem_cap_mb;
  return 0;
}

/* This rank's shard of the train split: in memory, or streamed (labels only, and the prefetch buffers). */
static int read_shard(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  int64_t a = r->shard_a, b = r->shard_b;
  if (r->streamed) {
    XD_TRY(xd_dataset_open(&r->pf.ds, o->data, "train", e));
    r->pf.shard_a = a;
    r->pf.lb = r->lb;
    r->pf.px = (size_t)r->info.height * r->info.width;
    r->train.n = b - a;
    if (!(r->train.labels = xd_alloc((size_t)(b - a) + 1, "labels", e))) return -1;
    XD_TRY(xd_dataset_read_u8(r->pf.ds, a, b, NULL, r->train.labels, e));
    for (int k = 0; k < 2; k++)
      if (!(r->pf.buf[k] = xd_alloc((size_t)r->lb * r->pf.px, "prefetch buffer", e))) return -1;
    return 0;
  }
  return read_split(o->data, "train", a, b, &r->train, NULL, NULL, e);
}

/* The val split must hold both classes: val loss, AUC, early stopping and the threshold chosen for 95%
 * sensitivity are all undefined otherwise (they were NaN decisions). */
static int check_val(run *r, xd_err *e) {
  const char *data = r->o->data;
  if (r->val.n == 0)
    return xd_fail(e, "%s: the val split is empty: validation, early stopping and the decision threshold need "
                   "images of both classes there", data);
  int64_t neg = 0, pos = 0;
  for (int64_t i = 0; i < r->val.n; i++) {
    if (r->val.labels[i] == 0) neg++;
    else pos++;
  }
  if (neg == 0 || pos == 0) {
    const char *missing = neg == 0 ? r->info.class_names[0] : (r->info.nclasses > 1 ? r->info.class_names[1] : "class 1");
    return xd_fail(e, "%s: the val split has no %s images (%lld images, all of one class): validation loss, AUC, "
                   "early stopping and the threshold for 95%% sensitivity need both classes there", data, missing,
                   (long long)r->val.n);
  }
  return 0;
}

static int same_classes(const xd_ckpt_meta *meta, const xd_dataset_info *in) {
  if (meta->nclasses != in->nclasses) return 0;
  for (int i = 0; i < in->nclasses; i++)
    if (strcmp(meta->class_names[i], in->class_names[i])) return 0;
  return 1;
}

static void class_list(char *buf, size_t n, int k, const char names[][XD_CLASS_NAME_MAX]) {
  size_t at = 0;
  buf[0] = 0;
  for (int i = 0; i < k && at + 1 < n; i++) {
    int w = snprintf(buf + at, n - at, "%s%s", i ? "," : "", names[i]);
    if (w < 0) break;
    at += (size_t)w;
  }
}

/* Resume: the stored state must make sense for this run (the checkpoint module validated each value on
 * its own; what needs the run's context is checked here). */
static int check_resumed(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  const xd_train_state *st = &r->st;
  const char *lp = r->last_path;
  /* the dataset: a different path is fine for the same classes and image size */
  const char *dname = o->data_given ? "--data " : "the run's dataset ";
  if (r->m.in_c != r->info.channels || r->m.in_h != r->info.height || r->m.in_w != r->info.width)
    return xd_fail(e, "%s%s: images are %dx%dx%d, the run in %s was trained on %dx%dx%d", dname, o->data,
                   r->info.channels, r->info.height, r->info.width, lp, r->m.in_c, r->m.in_h, r->m.in_w);
  if (r->meta.nclasses > 0 && !same_classes(&r->meta, &r->info)) {
    char a[600], b[600];
    class_list(a, sizeof a, r->info.nclasses, r->info.class_names);
    class_list(b, sizeof b, r->meta.nclasses, r->meta.class_names);
    return xd_fail(e, "%s%s: classes %s, the run in %s was trained on %s", dname, o->data, a, lp, b);
  }
  if (o->model_given) {
    xd_model other;
    XD_TRY(xd_model_from_arg(&other, o->model, r->m.in_c, r->m.in_h, r->m.in_w, e));
    int same = !strcmp(other.text, r->m.text);
    xd_model_free(&other);
    if (!same)
      return xd_fail(e, "--model %s: not the network of the run in %s (leave --model out to resume it)", o->model, lp);
  }
  if (st->seed != o->seed)
    return xd_fail(e, "--seed %llu: the run in %s was trained with --seed %llu", (unsigned long long)o->seed, lp,
                   (unsigned long long)st->seed);
  /* the state */
  if (st->step < 0 || st->epoch < 0 || st->step_in_epoch < 0)
    return xd_fail(e, "%s: invalid state: step %lld, epoch %lld, step in epoch %lld", lp, (long long)st->step,
                   (long long)st->epoch, (long long)st->step_in_epoch);
  if (st->step_in_epoch > r->steps_per_epoch)
    return xd_fail(e, "%s: stored step %lld of the unfinished epoch is past the epoch's %d steps", lp,
                   (long long)st->step_in_epoch, r->steps_per_epoch);
  if (st->step < st->epoch + st->step_in_epoch)
    return xd_fail(e, "%s: invalid state: %lld steps in total cannot complete %lld epochs and %lld steps", lp,
                   (long long)st->step, (long long)st->epoch, (long long)st->step_in_epoch);
  if (st->best_epoch < 0 || st->best_epoch > st->epoch || st->bad_epochs < 0 || st->bad_epochs > st->epoch ||
      (st->best_epoch > 0 && !isfinite(st->best_metric)) || !(st->threshold >= 0 && st->threshold <= 1))
    return xd_fail(e, "%s: invalid state: best epoch %lld (metric %g), %lld epochs without improvement, threshold %g "
                   "after %lld epochs", lp, (long long)st->best_epoch, st->best_metric, (long long)st->bad_epochs,
                   st->threshold, (long long)st->epoch);
  if (!(st->part_count >= 0 && isfinite(st->part_count) && isfinite(st->part_loss) && st->part_correct >= 0 &&
        st->part_correct <= st->part_count && st->part_seconds >= 0 && isfinite(st->part_seconds)) ||
      (st->step_in_epoch == 0 && st->part_count != 0))
    return xd_fail(e, "%s: invalid state of the unfinished epoch (loss sum %g over %g images, %g correct)", lp,
                   st->part_loss, st->part_count, st->part_correct);
  int64_t in_epoch = st->epoch + (st->step_in_epoch > 0);
  if (in_epoch > o->epochs)
    return xd_fail(e, "--epochs %d: the run in %s has already %s %lld epochs", o->epochs, lp,
                   st->step_in_epoch > 0 ? "started" : "completed", (long long)in_epoch);
  return 0;
}

/* Rank 0's part of the setup: whether there is a val split (and its size), and the model (fresh or the
 * state of DIR/last.h5). */
static int setup_leader(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  int hv = xd_dataset_has_split(o->data, "val", e);
  if (hv < 0) return -1;
  r->has_val = hv;
  if (hv) {
    xd_dataset *ds;
    XD_TRY(xd_dataset_open(&ds, o->data, "val", e));
    r->val_n = xd_dataset_get_info(ds)->n;
    xd_dataset_close(ds);
  }
  if (o->resume) {
    XD_TRY(xd_checkpoint_load(r->last_path, &r->m, &r->st, &r->meta, e));
    XD_TRY(check_resumed(r, e));
    r->good_epoch = r->st.epoch;
    r->good_step = r->st.step;
    if (o->patience_given) /* a new --patience decides again whether early stopping has fired */
      r->st.stopped = o->patience > 0 && r->st.bad_epochs >= o->patience;
  } else {
    XD_TRY(xd_model_from_arg(&r->m, o->model, r->info.channels, r->info.height, r->info.width, e));
    xd_model_init(&r->m, o->init, o->seed);
  }
  return 0;
}

/* Rank 0: the val split, which must hold both classes. */
static int read_val(run *r, xd_err *e) {
  if (!r->has_val) return 0;
  XD_TRY(read_split(r->o->data, "val", 0, -1, &r->val, NULL, NULL, e));
  XD_TRY(check_val(r, e));
  if (!(r->val_probs = xd_alloc(((size_t)r->val.n + 1) * sizeof(float), "validation", e))) return -1;
  return 0;
}

/* Up front, before the big allocations: the whole run of this rank against --mem-limit: the model's
 * arenas, optimizer state, EMA, gradient reduction and activations (xd_model_train_bytes), and the images
 * it holds (its shard, or the prefetch buffers; rank 0 also the val split and its probabilities). */
static int check_memory(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  uint64_t bytes = xd_model_train_bytes(&r->m, r->lb, o->ema > 0);
  uint64_t px = xd_mul_sat((uint64_t)r->info.height, (uint64_t)r->info.width);
  uint64_t shard = (uint64_t)(r->shard_b - r->shard_a);
  bytes = xd_add_sat(bytes, r->streamed ? xd_add_sat(xd_mul_sat(2 * (uint64_t)r->lb, px), shard)
                                        : xd_mul_sat(shard, xd_add_sat(px, 1)));
  if (leader(r)) bytes = xd_add_sat(bytes, xd_mul_sat((uint64_t)r->val_n, xd_add_sat(px, 5)));
  char what[160];
  snprintf(what, sizeof what, "training with a local batch of %d (model, optimizer, activations and images)", r->lb);
  if (xd_mem_check(bytes, what, e)) {
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", e->msg);
    return xd_fail(e, "%s: %s", o->data, msg);
  }
  return 0;
}

static int setup(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  xd_dist *d = r->d;
  r->good_step = -1;
  r->st.seed = o->seed;
  r->st.threshold = 0.5;
  r->st.threshold_chosen = 0; /* until a val split chooses it */
  r->st.best_metric = NAN;
  if (xd_dist_hosts(d, r->hosts, sizeof r->hosts) != 0) snprintf(r->hosts, sizeof r->hosts, "unknown hosts");
  if (agree(r, shard_info(r, e), e)) return -1;
  if (agree_leader(r, leader(r) ? setup_leader(r, e) : 0, e)) return -1;
  XD_TRY(bcast_model(r, e));
  xd_dist_bcast_idle(d, &r->st, sizeof r->st);
  if (r->m.nout != 1 && r->m.nout != r->info.nclasses)
    return fail_all(r, e, "model has %d outputs but %s has %d classes", r->m.nout, o->data, r->info.nclasses);
  if (r->m.nout == 1 && r->info.nclasses != 2)
    return fail_all(r, e, "'dense 1 sigmoid' needs 2 classes, %s has %d", o->data, r->info.nclasses);
  if (agree(r, check_memory(r, e), e)) return -1;
  /* every rank opens the file itself and reads only its shard; rank 0 the val split too */
  if (agree(r, read_shard(r, e), e)) return -1;
  if (agree_leader(r, leader(r) ? read_val(r, e) : 0, e)) return -1;
  double counts[2] = {0, 0};
  for (int64_t i = 0; i < r->train.n; i++)
    if (r->train.labels[i] < 2) counts[r->train.labels[i]] += 1;
  xd_dist_sum_doubles(d, counts, 2);
  r->class_count[0] = (int64_t)counts[0];
  r->class_count[1] = (int64_t)counts[1];
  r->cwp = NULL;
  if (o->class_weight == 1) {
    if (r->info.nclasses != 2 || !counts[0] || !counts[1])
      return fail_all(r, e, "%s: --class-weight balanced needs two classes, both present in train", o->data);
    r->cw[0] = (float)((counts[0] + counts[1]) / (2 * counts[0]));
    r->cw[1] = (float)((counts[0] + counts[1]) / (2 * counts[1]));
    r->cwp = r->cw;
  } else if (o->class_weight == 2) {
    r->cw[0] = o->cw[0];
    r->cw[1] = o->cw[1];
    r->cwp = r->cw;
  }
  if (xd_augment_parse(o->augment, &r->aug)) return fail_all(r, e, "bad --augment '%s'", o->augment);

  int rc = xd_opt_alloc(&r->opt, &o->opt, r->m.nparams, e);
  if (rc == 0 && o->ema > 0) rc = xd_opt_ema_init(&r->opt, o->ema, r->m.params, r->m.buffers, r->m.nbuffers, e);
  if (agree(r, rc, e)) return -1;
  if (o->resume) {
    rc = 0;
    if (leader(r)) {
      rc = xd_checkpoint_load_optim(r->last_path, &r->m, &r->opt, e);
      if (rc == 0 && r->opt.step != r->st.step)
        rc = xd_fail(e, "%s: invalid state: the optimizer took %lld steps, the run %lld", r->last_path,
                     (long long)r->opt.step, (long long)r->st.step);
      if (rc == 0) rc = check_state(r, "resuming", e);
    }
    if (agree_leader(r, rc, e)) return -1;
    xd_dist_bcast_idle(d, r->opt.m, (int)(r->m.nparams * sizeof(float)));
    xd_dist_bcast_idle(d, r->opt.v, (int)(r->m.nparams * sizeof(float)));
    xd_dist_bcast_idle(d, &r->opt.step, sizeof r->opt.step);
    if (r->opt.ema) {
      xd_dist_bcast_idle(d, r->opt.ema, (int)(r->m.nparams * sizeof(float)));
      if (r->m.nbuffers) xd_dist_bcast_idle(d, r->opt.ema_buf, (int)(r->m.nbuffers * sizeof(float)));
    }
  }
  /* one spare tail on the gradient arena for the per-step counters */
  float *g = xd_alloc((r->m.nparams + EX_COUNT) * sizeof(float), "gradients", e);
  rc = g ? 0 : -1;
  if (g) {
    xd_free(r->m.grads);
    r->m.grads = g;
    rc = xd_workspace_alloc(&r->ws, &r->m, r->lb, e);
  }
  if (agree(r, rc, e)) return -1;
  r->bn_reducer.sum_doubles = xd_dist_sum_doubles_cb;
  r->bn_reducer.ctx = d;
  r->bn_reducer.world = d->size;

  r->meta.nclasses = r->info.nclasses;
  memcpy(r->meta.class_names, r->info.class_names, sizeof r->meta.class_names);
  snprintf(r->meta.command, sizeof r->meta.command, "%s", o->command ? o->command : "");
  snprintf(r->meta.monitor, sizeof r->meta.monitor, "%s",
           o->monitor_last ? "last" : (o->monitor_auc ? "val_auc" : "val_loss"));
  snprintf(r->meta.data, sizeof r->meta.data, "%s", o->data);
  snprintf(r->meta.config, sizeof r->meta.config, "%s", o->config ? o->config : "");
  r->meta.train_prior = 0;
  if (r->info.nclasses == 2) { /* the prior the weighted loss saw: what eval --prior corrects from */
    double w0 = r->cwp ? r->cw[0] : 1.0, w1 = r->cwp ? r->cw[1] : 1.0;
    double a = w0 * (double)r->class_count[0], b = w1 * (double)r->class_count[1];
    r->meta.train_prior = a + b > 0 ? b / (a + b) : 0;
  }
  return 0;
}

/* --overwrite: the earlier run's files go only now, once the new run is set up and about to write. */
static int clear_previous(run *r, xd_err *e) {
  const char *paths[] = {r->last_path, r->best_path, r->csv_path, r->log_path};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    if (unlink(paths[i]) != 0 && errno != ENOENT)
      return xd_fail(e, "%s: cannot remove the earlier run's file: %s", paths[i], strerror(errno));
  return 0;
}

static int open_logs(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  if (o->overwrite) XD_TRY(clear_previous(r, e));
  XD_TRY(csv_open_truncated(r, e));
  if (xd_file_exists(r->log_path)) XD_TRY(xd_check_regular(r->log_path, e));
  r->log = fopen(r->log_path, "a");
  if (!r->log) return xd_fail(e, "%s: cannot write: %s", r->log_path, strerror(errno));
  errno = 0;
  time_t now = time(NULL);
  char ts[64];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  fprintf(r->log, "=== %s %s\ncommand: %s\n", ts, o->resume ? "resumed" : "started", o->command ? o->command : "");
  fprintf(r->log, "ranks x threads: %d x %d; global batch %d (local %d); %d steps per epoch\n", r->d->size,
          omp_get_max_threads(), o->batch, r->lb, r->steps_per_epoch);
  fprintf(r->log, "hosts: %s\n", r->hosts);
  fprintf(r->log, "data: %s: %dx%d, train %lld (%s %lld, %s %lld), val %lld; source: %s\n", o->data,
          r->info.height, r->info.width, (long long)r->train_total, r->info.class_names[0],
          (long long)r->class_count[0], r->info.nclasses > 1 ? r->info.class_names[1] : "-",
          (long long)r->class_count[1], (long long)r->val.n, r->info.source);
  if (o->recipe) fprintf(r->log, "recipe of the preset (before the options given): %s\n", o->recipe);
  fprintf(r->log, "optimizer %s lr %g weight decay %g warm-up %d epoch(s); EMA %g; augment %s; class weights %s%s\n",
          xd_opt_name(o->opt.kind), o->opt.lr, o->opt.weight_decay, o->sched.warmup_epochs, o->ema, o->augment,
          r->cwp ? "balanced/given" : "none", o->sync_bn ? "; sync-bn" : "");
  if (o->config && o->config[0]) {
    fputs("settings (stored in last.h5, reused by --resume): ", r->log);
    for (const char *p = o->config; *p; p++) fputc(*p == '\n' && p[1] ? ' ' : *p, r->log);
  }
  if (!r->has_val)
    fputs("no val split: the train loss decides the best epoch and the threshold is not chosen (0.5)\n", r->log);
  xd_model_summary(&r->m, r->log);
  if (ferror(r->log) || fflush(r->log) != 0) r->log_errno = errno ? errno : EIO;
  return log_status(r, e);
}

/* Exchanges the live weights and batchnorm statistics with their EMA (no-op without one). */
static void ema_swap(run *r) {
  if (!r->opt.ema) return;
  float *p = r->m.params, *b = r->m.buffers;
  r->m.params = r->opt.ema;
  r->m.buffers = r->opt.ema_buf;
  r->opt.ema = p;
  r->opt.ema_buf = b;
}

/* Rank 0: last.h5, only from a finite state. */
static int save_last(run *r, xd_err *e) {
  char when[96];
  snprintf(when, sizeof when, "step %lld (epoch %lld)", (long long)r->st.step, (long long)r->st.epoch + 1);
  XD_TRY(check_state(r, when, e));
  XD_TRY(xd_checkpoint_save(r->last_path, &r->m, &r->opt, &r->st, &r->meta, e));
  r->good_epoch = r->st.epoch;
  r->good_step = r->st.step;
  return 0;
}

/* The lr of the next step: the schedule's, times FACTOR^drops with --schedule plateau. */
static float lr_now(const run *r) {
  const xd_train_opts *o = r->o;
  float lr = xd_schedule_lr_step(&o->sched, o->opt.lr, r->st.step, r->steps_per_epoch, o->epochs);
  if (o->sched.kind == 3 && r->st.lr_drops > 0) lr = (float)(lr * pow(o->sched.gamma, (double)r->st.lr_drops));
  return lr;
}

/* ---- the progress bar (rank 0, stdout: the epoch lines' stream, so that they never interleave) ---- */

static void fmt_secs(double t, char *b, size_t n) {
  long s = t > 0 && t < 1e8 ? (long)(t + 0.5) : 0;
  if (s >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else snprintf(b, n, "%ld:%02ld", s / 60, s % 60);
}

/* Seconds left in the whole run after `steps_done` steps in total, validations still to come after epochs
 * first_val..the last complete one: the train steps at this epoch's rate, the validations at the last
 * one's speed (before the first one: a forward pass per image at a third of a training step's time per image). */
static double run_eta(run *r, int64_t steps_done, int first_val) {
  const xd_train_opts *o = r->o;
  int64_t total = (int64_t)o->epochs * r->steps_per_epoch;
  if (o->max_steps >= 0 && o->max_steps < total) total = o->max_steps;
  int64_t vals = total / r->steps_per_epoch - first_val + 1;
  double left = (double)(total > steps_done ? total - steps_done : 0) * r->step_secs;
  double val = r->val_secs > 0 ? r->val_secs : r->step_secs / o->batch * (double)r->val.n / 3;
  return left + (r->has_val && vals > 0 ? (double)vals * val : 0);
}

static void bar_draw(run *r, const char *what, int64_t done, int64_t total, const char *tail, int force) {
  double now = xd_now();
  if (!force && now - r->bar_last < 0.1) return;
  r->bar_last = now;
  int w = 24, k = (int)(total > 0 ? done * w / total : w);
  char bar[32];
  for (int i = 0; i < w; i++) bar[i] = i < k ? '=' : (i == k ? '>' : '.');
  bar[w] = 0;
  fprintf(stdout, "\r\033[Kepoch %d/%d %s[%s] %lld/%lld  %s", r->bar_epoch, r->o->epochs, what, bar, (long long)done,
          (long long)total, tail);
  fflush(stdout);
}

static void progress(run *r, int epoch, int s, double t0, double loss_sum, double count) {
  if (!r->bar) return;
  double el = xd_now() - t0;
  int done = s + 1, total = r->steps_per_epoch;
  r->bar_epoch = epoch;
  r->step_secs = done > 0 ? el / done : 0;
  double ips = el > 0 ? done * (double)r->o->batch / el : 0, eta = r->step_secs * (total - done);
  char te[24], tr[24], tail[160];
  fmt_secs(eta, te, sizeof te);
  fmt_secs(run_eta(r, r->st.step, epoch), tr, sizeof tr);
  snprintf(tail, sizeof tail, "%.0f img/s  loss %.4f  ETA epoch %s, run %s ", ips, count > 0 ? loss_sum / count : 0.0,
           te, tr);
  bar_draw(r, "", done, total, tail, done == 1 || done == total);
}

static void bar_val(run *r, int64_t done, double t0) {
  if (!r->bar) return;
  double el = xd_now() - t0;
  double left = done > 0 ? el / done * (double)(r->val.n - done) : 0;
  char tr[24], tail[96];
  fmt_secs(left + run_eta(r, r->st.step, r->bar_epoch + 1), tr, sizeof tr);
  snprintf(tail, sizeof tail, "ETA run %s ", tr);
  bar_draw(r, "validating ", done, r->val.n, tail, done == r->val.n);
}

/* --detect-anomaly after the all-reduce (every rank sees the same values): the forward pass's activations
 * on any rank, the loss, the gradients. 0 or -1 (agreed) naming the step and the layer. */
static int step_anomaly(run *r, int local_bad_act, const float *ex, xd_err *e) {
  xd_model *m = &r->m;
  char lab[160], kb[2300];
  long long step = (long long)r->st.step + 1;
  if (ex[EX_ANOMALY] > 0) {
    int64_t worst = xd_dist_max_i64(r->d, local_bad_act >= 0 ? m->nlayers - local_bad_act : 0);
    int l = m->nlayers - (int)worst;
    return fail_all(r, e, "step %lld: non-finite activation in the forward pass, in %s; stopped, %s", step,
                    layer_label(m, l, lab, sizeof lab), kept(r, kb, sizeof kb));
  }
  if (!isfinite(ex[EX_LOSS]))
    return fail_all(r, e, "step %lld: the loss is %g; stopped, %s", step, ex[EX_LOSS], kept(r, kb, sizeof kb));
  int l = bad_param_layer(m, m->grads, 0);
  if (l >= 0)
    return fail_all(r, e, "step %lld: non-finite gradient in %s; stopped, %s", step,
                    layer_label(m, l, lab, sizeof lab), kept(r, kb, sizeof kb));
  return 0;
}

/* One epoch's steps, starting at st.step_in_epoch. Returns 0 epoch done, 1 stop requested by --max-steps, 2
 * by a signal (last.h5 written for both), -1 error (agreed by every rank). */
static int run_epoch(run *r, int epoch, float *lr_out, xd_err *e) {
  const xd_train_opts *o = r->o;
  xd_model *m = &r->m;
  const int H = r->info.height, W = r->info.width, lb = r->lb;
  const size_t px = (size_t)H * W;
  int64_t n = r->train.n;
  int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
  uint8_t *y = malloc((size_t)lb);
  if (agree(r, perm && y ? 0 : xd_fail(e, "out of memory"), e)) {
    free(perm);
    free(y);
    return -1;
  }
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  if (!o->no_shuffle) {
    xd_rng rng = xd_rng_make(xd_key(o->seed, XD_STREAM_SHUFFLE, (uint64_t)epoch, (uint64_t)r->d->rank));
    xd_shuffle(&rng, perm, n);
  }
  double t0 = xd_now() - r->st.part_seconds;
  int rc = 0, local_err = 0;
  r->bar_epoch = epoch + 1;
  prefetch *pf = r->pf.ds ? &r->pf : NULL;
  r->allreduce_s = 0;
  if (pf) {
    pf->perm = perm;
    if (r->st.step_in_epoch < r->steps_per_epoch && prefetch_start(pf, r->st.step_in_epoch, e)) local_err = 1;
  }
  for (int s = (int)r->st.step_in_epoch; rc == 0 && s < r->steps_per_epoch; s++) {
    if (o->max_steps >= 0 && r->st.step >= o->max_steps) {
      rc = 1;
      break;
    }
    const uint8_t *batch = NULL; /* streaming: this step's images in order j = 0..lb-1 */
    if (pf && !local_err) {
      if (!(batch = prefetch_wait(pf, e))) local_err = 1;
      else if (s + 1 < r->steps_per_epoch && prefetch_start(pf, s + 1, e)) local_err = 1;
    }
    float *ex = m->grads + m->nparams;
    double loss = 0;
    float correct = 0;
    int bad_act = -1;
    xd_step_ctx c = {1, o->seed, (uint64_t)r->st.step, (int64_t)r->d->rank * lb, o->batch,
                     o->sync_bn && r->d->size > 1 ? &r->bn_reducer : NULL};
    if (!local_err) {
      float *x = r->ws.act[0];
      uint64_t akey = xd_key(o->seed, XD_STREAM_AUGMENT, (uint64_t)r->st.step, 0);
#pragma omp parallel for schedule(static)
      for (int j = 0; j < lb; j++) {
        const uint8_t *src =
            batch ? batch + (size_t)j * px : r->train.images + (size_t)perm[(int64_t)s * lb + j] * px;
        if (r->aug.on) {
          xd_augment_apply(&r->aug, akey, (uint64_t)(r->d->rank * lb + j), src, H, W, x + (size_t)j * px);
        } else {
          for (size_t i = 0; i < px; i++) x[(size_t)j * px + i] = src[i] * (1.0f / 255.0f);
        }
      }
      for (int j = 0; j < lb; j++) y[j] = r->train.labels[perm[(int64_t)s * lb + j]];
      const float *z = xd_forward(m, &r->ws, lb, &c);
      if (o->detect_anomaly) bad_act = bad_activation_layer(m, &r->ws, lb);
      if (m->loss == XD_LOSS_BCE) {
        loss = xd_loss_bce(lb, z, y, r->cwp, 1.0 / o->batch, r->ws.dlast);
        for (int j = 0; j < lb; j++) correct += (z[j] >= 0) == (y[j] != 0);
      } else {
        loss = xd_loss_ce(lb, m->nout, z, y, r->cwp, 1.0 / o->batch, r->ws.dlast);
        for (int j = 0; j < lb; j++) {
          int best = 0;
          for (int k = 1; k < m->nout; k++)
            if (z[(size_t)j * m->nout + k] > z[(size_t)j * m->nout + best]) best = k;
          correct += best == y[j];
        }
      }
      xd_backward(m, &r->ws, lb, &c, -1);
    } else {
      /* this rank failed to load its batch: it still joins the all-reduce, to tell the others */
      memset(m->grads, 0, m->nparams * sizeof(float));
    }
    ex[EX_LOSS] = (float)loss;
    ex[EX_CORRECT] = correct;
    ex[EX_STOP] = (o->stop_flag && *o->stop_flag) ? 1.0f : 0.0f;
    ex[EX_ERR] = local_err ? 1.0f : 0.0f;
    ex[EX_ANOMALY] = bad_act >= 0 ? 1.0f : 0.0f;
    double t_ar = xd_now();
    xd_dist_sum_floats(r->d, m->grads, m->nparams + EX_COUNT);
    r->allreduce_s += xd_now() - t_ar;
    if (ex[EX_ERR] > 0) {
      if (!local_err) e->msg[0] = 0; /* the failing rank holds the message */
      rc = -1;
      break;
    }
    if (o->detect_anomaly && step_anomaly(r, bad_act, ex, e)) {
      rc = -1;
      break;
    }
    if (!isfinite(ex[EX_LOSS])) {
      char kb[2300];
      rc = fail_all(r, e, "training diverged: loss is %g at step %lld; try a lower --lr (stopped, %s)", ex[EX_LOSS],
                    (long long)r->st.step + 1, kept(r, kb, sizeof kb));
      break;
    }
    float lr = lr_now(r);
    *lr_out = lr;
    xd_opt_step(&r->opt, m->params, m->grads, lr);
    xd_opt_ema_step(&r->opt, m->params, m->buffers);
    if (o->detect_anomaly) {
      int l = bad_param_layer(m, m->params, 0);
      if (l < 0) l = bad_param_layer(m, r->opt.ema, 0);
      if (l >= 0) {
        char lab[160], kb[2300];
        rc = fail_all(r, e, "step %lld: non-finite weight in %s after the optimizer step (lr %g); stopped, %s",
                      (long long)r->st.step + 1, layer_label(m, l, lab, sizeof lab), lr, kept(r, kb, sizeof kb));
        break;
      }
    }
    r->st.step++;
    r->st.step_in_epoch = s + 1;
    r->st.part_loss += (double)ex[EX_LOSS] * o->batch;
    r->st.part_correct += ex[EX_CORRECT];
    r->st.part_count += o->batch;
    progress(r, epoch + 1, s, t0, r->st.part_loss, r->st.part_count);
    if (ex[EX_STOP] > 0) {
      rc = 2;
      break;
    }
  }
  if (pf && pf->running) { /* stopped early: drain the load in flight before anything else uses HDF5 */
    xd_err ignore;
    prefetch_wait(pf, &ignore);
  }
  r->st.part_seconds = xd_now() - t0;
  free(perm);
  free(y);
  if (rc < 0) return -1;
  if (rc > 0) {
    if (agree_leader(r, leader(r) ? save_last(r, e) : 0, e)) return -1;
    return rc;
  }
  return rc;
}

/* Rank 0 after an epoch: check the state, validate, decide, write metrics.csv, best.h5 and last.h5 (in
 * that order; last.h5 last, so that it never claims an epoch the others lack). 0 or -1. */
static int end_epoch(run *r, int epoch, float lr, double t_epoch, double tl, double ta, double ips,
                     double train_secs, int *better_out, xd_err *e) {
  const xd_train_opts *o = r->o;
  char when[96], kb[2300];
  snprintf(when, sizeof when, "epoch %d (step %lld)", epoch + 1, (long long)r->st.step);
  XD_TRY(check_state(r, when, e));
  XD_TRY(log_status(r, e));
  ema_swap(r); /* with an EMA, the averaged weights are the model: validated and kept */
  xd_binary_metrics vm;
  memset(&vm, 0, sizeof vm);
  vm.loss = vm.accuracy = vm.roc_auc = vm.precision = vm.recall = vm.specificity = vm.f1 = NAN;
  if (r->has_val) validate(r, &vm);
  const char *mname = r->has_val ? (o->monitor_auc ? "val_auc" : "val_loss") : "train_loss";
  double metric = r->has_val ? (o->monitor_auc ? vm.roc_auc : vm.loss) : tl;
  int rc = 0;
  if (!isfinite(metric)) /* never a NaN decision */
    rc = xd_fail(e, "epoch %d: %s is %g; stopped, %s", epoch + 1, mname, metric, kept(r, kb, sizeof kb));
  int better = 0;
  if (rc == 0) {
    better = o->monitor_last || r->st.best_epoch == 0 ||
             (o->monitor_auc && r->has_val ? metric > r->st.best_metric + o->min_delta
                                           : metric < r->st.best_metric - o->min_delta);
    if (better) {
      double thr = 0.5;
      if (r->has_val) {
        thr = xd_threshold_for_sensitivity(r->val.n, r->val_probs, r->val.labels, 0.95);
        if (!(thr >= 0 && thr <= 1))
          rc = xd_fail(e, "epoch %d: no threshold reaches 95%% sensitivity on %s's val split (probabilities are "
                       "not finite?); stopped, %s", epoch + 1, o->data, kept(r, kb, sizeof kb));
      }
      if (rc == 0) {
        r->st.best_metric = metric;
        r->st.best_epoch = epoch + 1;
        r->st.bad_epochs = 0;
        r->st.threshold = thr;
        r->st.threshold_chosen = r->has_val ? 1 : 0;
      }
    } else {
      r->st.bad_epochs++;
    }
  }
  int dropped = 0; /* --schedule plateau: the lr drops after this epoch */
  if (rc == 0 && o->sched.kind == 3) {
    int up = o->monitor_auc && r->has_val;
    if (epoch == 0 || (up ? metric > r->st.plateau_best + o->min_delta : metric < r->st.plateau_best - o->min_delta)) {
      r->st.plateau_best = metric;
      r->st.plateau_bad = 0;
    } else if (++r->st.plateau_bad >= o->sched.every) {
      r->st.lr_drops++;
      r->st.plateau_bad = 0;
      dropped = 1;
    }
  }
  if (rc == 0) {
    if (o->patience > 0 && r->st.bad_epochs >= o->patience) r->st.stopped = 1;
    double secs = xd_now() - t_epoch;
    rc = csv_append(r, epoch + 1, tl, ta, &vm, lr, ips, secs, e);
    if (rc == 0 && better) rc = xd_checkpoint_save(r->best_path, &r->m, NULL, &r->st, &r->meta, e);
    if (rc == 0) {
      char comm[48] = "";
      if (r->d->size > 1) snprintf(comm, sizeof comm, " (all-reduce %.0f%%)", 100.0 * r->allreduce_s / train_secs);
      if (r->has_val)
        say(r, "epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc %.4f auc %.4f sens %.3f spec %.3f | %.0f img/s%s "
               "%.1fs%s\n", epoch + 1, o->epochs, tl, ta, vm.loss, vm.accuracy, vm.roc_auc, vm.recall, vm.specificity,
            ips, comm, secs, better ? " *" : "");
      else
        say(r, "epoch %d/%d: loss %.4f acc %.4f | %.0f img/s%s %.1fs%s\n", epoch + 1, o->epochs, tl, ta, ips, comm,
            secs, better ? " *" : "");
      if (dropped)
        say(r, "xray-dp: no %s improvement for %d epoch%s: lr x %g = %g\n", mname, o->sched.every,
            o->sched.every > 1 ? "s" : "", o->sched.gamma, (double)lr_now(r));
    }
  }
  ema_swap(r);
  if (rc == 0) rc = save_last(r, e);
  if (rc == 0) rc = log_status(r, e);
  *better_out = better;
  return rc;
}

int xd_train(const xd_train_opts *o, xd_dist *d, xd_err *e) {
  run *r = calloc(1, sizeof *r);
  if (!r) return xd_fail(e, "out of memory"), -2;
  r->o = o;
  r->d = d;
  r->bar = leader(r) && o->progress && !o->quiet;
  int rc = 0;
  snprintf(r->dir, sizeof r->dir, "%s", o->out);
  snprintf(r->last_path, sizeof r->last_path, "%s/last.h5", r->dir);
  snprintf(r->best_path, sizeof r->best_path, "%s/best.h5", r->dir);
  snprintf(r->csv_path, sizeof r->csv_path, "%s/metrics.csv", r->dir);
  snprintf(r->log_path, sizeof r->log_path, "%s/train.log", r->dir);
  rc = setup(r, e);
  if (rc == 0) rc = agree_leader(r, leader(r) ? open_logs(r, e) : 0, e);
  if (rc) goto done;
  if (leader(r) && !o->quiet) {
    printf("xray-dp: training %s on %s: %lld train / %lld val images at %dx%d, %d rank%s x %d thread%s, global batch "
           "%d, %d steps/epoch -> %s\n",
           o->model, o->data, (long long)r->train_total, (long long)r->val.n, r->info.height, r->info.width, d->size,
           d->size > 1 ? "s" : "", omp_get_max_threads(), omp_get_max_threads() > 1 ? "s" : "", o->batch,
           r->steps_per_epoch, r->dir);
    if (o->resume && r->st.epoch < o->epochs && !r->st.stopped)
      printf("xray-dp: resumed from %s at epoch %lld, step %lld\n", r->last_path, (long long)r->st.epoch + 1,
             (long long)r->st.step);
    if (!r->has_val)
      printf("xray-dp: %s has no val split: the train loss decides the best epoch; no threshold is chosen (0.5)\n",
             o->data);
    fflush(stdout);
  }
  if (o->notes && o->notes[0]) say(r, "%s", o->notes);
  if (o->max_steps == 0 && r->st.step == 0) {
    rc = agree_leader(r, leader(r) ? save_last(r, e) : 0, e);
    if (rc == 0) say(r, "xray-dp: --max-steps 0: wrote the initial weights to %s\n", r->last_path);
    goto done;
  }
  if (r->st.stopped) {
    say(r, "xray-dp: %s says early stopping already ended this run at epoch %lld (best epoch %lld; a larger "
           "--patience continues it)\n", r->last_path, (long long)r->st.epoch, (long long)r->st.best_epoch);
    goto done;
  }
  if (o->resume && r->st.epoch >= o->epochs) {
    say(r, "xray-dp: %s: the run has already finished its %d epochs (a larger --epochs extends it)\n", r->last_path,
        o->epochs);
    goto done;
  }
  for (int epoch = (int)r->st.epoch; epoch < o->epochs; epoch++) {
    float lr = lr_now(r);
    double t_epoch = xd_now() - r->st.part_seconds;
    int er = run_epoch(r, epoch, &lr, e);
    if (er < 0) {
      rc = -1;
      goto done;
    }
    if (er == 1) {
      say(r, "xray-dp: stopped at --max-steps %lld; state in %s\n", (long long)o->max_steps, r->last_path);
      goto done;
    }
    if (er == 2) {
      char mpi[40] = "";
      if (d->size > 1) snprintf(mpi, sizeof mpi, "mpirun -np %d ", d->size);
      say(r, "xray-dp: interrupted by a signal at epoch %d step %lld; state saved to %s\n"
             "xray-dp: to continue: %sxray-dp train --out %s --resume\n", epoch + 1, (long long)r->st.step_in_epoch,
          r->last_path, mpi, r->dir);
      rc = 1;
      goto done;
    }
    double train_secs = r->st.part_seconds;
    double tl = r->st.part_loss / r->st.part_count, ta = r->st.part_correct / r->st.part_count;
    double ips = r->st.part_count / (train_secs > 0 ? train_secs : 1e-9);
    r->st.epoch = epoch + 1;
    r->st.step_in_epoch = 0;
    r->st.part_loss = r->st.part_correct = r->st.part_count = r->st.part_seconds = 0;
    if (!xd_dist_all_equal_u64(d, params_hash(&r->m))) {
      rc = fail_all(r, e, "ranks hold different weights after epoch %d: the all-reduce diverged (a bug; please report)",
                    epoch + 1);
      goto done;
    }
    /* rank 0: validate, decide, checkpoint; then tell everyone whether to go on */
    int64_t decision[3] = {0, 0, 0}; /* stop, error, the plateau schedule's lr drops */
    int better = 0;
    if (leader(r)) {
      decision[1] = end_epoch(r, epoch, lr, t_epoch, tl, ta, ips, train_secs, &better, e) != 0;
      decision[0] = r->st.stopped;
      decision[2] = r->st.lr_drops;
    }
    xd_dist_bcast_idle(d, decision, sizeof decision);
    r->st.lr_drops = decision[2];
    if (decision[1]) {
      rc = -1; /* rank 0 holds the message */
      if (!leader(r)) e->msg[0] = 0;
      goto done;
    }
    if (decision[0]) {
      say(r, "xray-dp: early stopping after epoch %d: no %s improvement for %d epochs; best epoch %lld (%s)\n",
          epoch + 1, r->has_val ? (o->monitor_auc ? "val_auc" : "val_loss") : "train_loss", o->patience,
          (long long)r->st.best_epoch, r->best_path);
      break;
    }
  }
  if (rc == 0 && r->st.best_epoch) {
    char thr[96];
    if (r->has_val) snprintf(thr, sizeof thr, "threshold %.4f for >= 95%% sensitivity on val", r->st.threshold);
    else snprintf(thr, sizeof thr, "threshold 0.5, not chosen: no val split");
    if (o->monitor_last)
      say(r, "xray-dp: done; kept the last epoch's %smodel (epoch %lld, %s) in %s\n",
          r->opt.ema ? "weight-averaged (EMA) " : "", (long long)r->st.best_epoch, thr, r->best_path);
    else
      say(r, "xray-dp: done; best epoch %lld (%s %.4f, %s) in %s\n", (long long)r->st.best_epoch,
          r->has_val ? (o->monitor_auc ? "val_auc" : "val_loss") : "train_loss", r->st.best_metric, thr,
          r->best_path);
  }
done:
  if (r->log) {
    if (fclose(r->log) != 0 && !r->log_errno) r->log_errno = errno ? errno : EIO;
    r->log = NULL;
  }
  /* the last line could not be logged: the run's record is incomplete (rank 0 only; the others are done) */
  if (rc >= 0 && leader(r) && r->log_errno) rc = log_status(r, e);
  xd_workspace_free(&r->ws, &r->m);
  xd_opt_free(&r->opt);
  xd_model_free(&r->m);
  xd_free(r->train.images);
  xd_free(r->train.labels);
  if (r->pf.ds) xd_dataset_close(r->pf.ds);
  xd_free(r->pf.buf[0]);
  xd_free(r->pf.buf[1]);
  xd_free(r->val.images);
  xd_free(r->val.labels);
  xd_free(r->val_probs);
  free(r);
  return rc;
}

/* ---- the run folder ---- */

int xd_run_lock(const char *dir, xd_err *e) {
  XD_TRY(xd_mkdir_p(dir, e));
  char path[4200];
  snprintf(path, sizeof path, "%s/.lock", dir);
  for (int attempt = 0;; attempt++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return xd_fail(e, "%s: cannot create the run folder's lock: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      if (err == EWOULDBLOCK || err == EAGAIN) {
        /* the holder writes "pid N on host H" right after locking: give it a moment */
        char who[300] = "";
        for (int tries = 0; tries < 50; tries++) {
          ssize_t k = pread(fd, who, sizeof who - 1, 0);
          if (k > 0) {
            who[k] = 0;
            who[strcspn(who, "\n")] = 0;
            break;
          }
          struct timespec ts = {0, 10000000};
          nanosleep(&ts, NULL);
        }
        close(fd);
        return xd_fail(e, "%s: run folder is in use by another training (%s)", dir, who[0] ? who : "pid unknown");
      }
      close(fd);
      return xd_fail(e, "%s: cannot lock the run folder: %s%s", path, strerror(err),
                     err == ENOLCK || err == ENOSYS || err == EOPNOTSUPP || err == EINVAL
                         ? " (this file system does not support locks: put --out on one that does)" : "");
    }
    /* a holder that gave up removes the lock file: make sure the file locked is still the one at the path */
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      char host[256] = "?", buf[400];
      if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
      host[sizeof host - 1] = 0;
      int n = snprintf(buf, sizeof buf, "pid %ld on host %s\n", (long)getpid(), host);
      /* informational only: a full disk must not hide the real error, which comes with the first real write */
      if (ftruncate(fd, 0) == 0 && pwrite(fd, buf, (size_t)n, 0) != n) {
      }
      return fd;
    }
    close(fd);
    if (attempt >= 100) return xd_fail(e, "%s: the lock file keeps changing under this process", path);
  }
}

void xd_run_unlock(int fd, const char *dir, int remove) {
  if (fd < 0) return;
  if (remove && dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    unlink(path); /* while still holding it: a process that opened it meanwhile sees it gone and retries */
  }
  close(fd);
}

int xd_run_inspect(const char *dir, xd_run_files *f, xd_err *e) {
  memset(f, 0, sizeof *f);
  char p[4200];
  snprintf(p, sizeof p, "%s/last.h5", dir);
  f->last = xd_file_exists(p);
  snprintf(p, sizeof p, "%s/best.h5", dir);
  f->best = xd_file_exists(p);
  snprintf(p, sizeof p, "%s/metrics.csv", dir);
  if (!xd_file_exists(p)) return 0;
  XD_TRY(xd_check_regular(p, e));
  FILE *in = fopen(p, "r");
  if (!in) return xd_fail(e, "%s: cannot read: %s", p, strerror(errno));
  int c, prev = '\n', line = 0;
  while ((c = fgetc(in)) != EOF) {
    if (prev == '\n' && c != '\n' && line++ > 0) f->csv_rows++;
    prev = c;
  }
  int bad = ferror(in);
  fclose(in);
  if (bad) return xd_fail(e, "%s: cannot read", p);
  return 0;
}

int xd_run_clean_tmp(const char *dir) {
  static const char *const names[] = {"last.h5.tmp.", "best.h5.tmp.", "metrics.csv.tmp."};
  DIR *dp = opendir(dir);
  if (!dp) return 0;
  int removed = 0;
  long me = (long)getpid();
  struct dirent *de;
  while ((de = readdir(dp)) != NULL) {
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
      size_t len = strlen(names[k]);
      if (strncmp(de->d_name, names[k], len)) continue;
      const char *pid = de->d_name + len;
      char *end;
      long v = strtol(pid, &end, 10);
      if (end == pid || *end || v <= 0 || v == me) continue;
      /* the caller holds the run lock: no other training writes here, every such writer is gone */
      char p[4200];
      snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
      if (unlink(p) == 0) removed++;
    }
  }
  closedir(dp);
  return removed;
}

int xd_run_read_config(const char *ckpt, char *buf, size_t n, xd_err *e) {
  buf[0] = 0;
  XD_TRY(xd_check_regular(ckpt, e));
  hid_t f = xd_h5_open_read(ckpt, e);
  if (f < 0) return -1;
  xd_h5_quiet q = xd_h5_quiet_begin();
  char fmt[64] = "";
  int rc = 0;
  if (xd_h5_attr_read_str(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, "xray-dp-checkpoint"))
    rc = xd_fail(e, "%s: not an xray-dp checkpoint", ckpt);
  else if (H5Aexists(f, "train_config") > 0 && xd_h5_attr_read_str(f, "train_config", buf, n) != 0)
    rc = xd_fail(e, "%s: unreadable train_config attribute", ckpt);
  H5Fclose(f);
  xd_h5_quiet_end(q);
  return rc;
}
