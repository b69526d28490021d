#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "dataset.h"
#include "infer.h"
#include "loss.h"
#include "metrics.h"
#include "rng.h"

/* Extra floats after the gradient arena, all-reduced with it so one call per step carries everything. */
enum { EX_LOSS, EX_CORRECT, EX_STOP, EX_COUNT };

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
  int lb, steps_per_epoch, has_val;
  float cw[2];
  const float *cwp;
  char dir[2048], last_path[2100], best_path[2100], csv_path[2100], log_path[2100];
  FILE *log;
  xd_reducer bn_reducer;
  float *val_probs;
  double allreduce_s; /* time in the gradient all-reduce this epoch (includes waiting for slower ranks) */
} run;

static int leader(const run *r) { return r->d->rank == 0; }

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
  s->images = xd_alloc((size_t)s->n * px, "images", e);
  s->labels = s->images ? xd_alloc((size_t)s->n + 1, "labels", e) : NULL;
  int rc = s->labels ? 0 : -1;
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

/* ---- run directory files (rank 0) ---- */

static int csv_open_truncated(run *r, xd_err *e) {
  /* keep the header and the rows of completed epochs: a resumed run rewrites what came after last.h5 */
  FILE *in = fopen(r->csv_path, "r");
  char tmp[2200];
  xd_tmp_name(r->csv_path, tmp, sizeof tmp);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    if (in) fclose(in);
    return xd_fail(e, "%s: cannot write: %s", tmp, strerror(errno));
  }
  fputs("epoch,train_loss,train_acc,val_loss,val_acc,val_auc,val_precision,val_recall,val_specificity,val_f1,lr,"
        "images_per_s,seconds\n", out);
  if (in) {
    char line[1024];
    int64_t rows = 0;
    if (fgets(line, sizeof line, in)) { /* header */
      while (rows < r->st.epoch && fgets(line, sizeof line, in)) {
        fputs(line, out);
        rows++;
      }
    }
    fclose(in);
  }
  if (fclose(out) != 0) return xd_fail(e, "%s: write error", tmp);
  return xd_commit_file(tmp, r->csv_path, e);
}

static void csv_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, ",%.6g", v);
  else fputs(",", f);
}

static int csv_append(run *r, int epoch, double tl, double ta, const xd_binary_metrics *vm, float lr, double ips,
                      double secs, xd_err *e) {
  FILE *f = fopen(r->csv_path, "a");
  if (!f) return xd_fail(e, "%s: cannot append: %s", r->csv_path, strerror(errno));
  fprintf(f, "%d", epoch);
  csv_num(f, tl);
  csv_num(f, ta);
  csv_num(f, vm->loss);
  csv_num(f, vm->accuracy);
  csv_num(f, vm->roc_auc);
  csv_num(f, vm->precision);
  csv_num(f, vm->recall);
  csv_num(f, vm->specificity);
  csv_num(f, vm->f1);
  csv_num(f, lr);
  csv_num(f, ips);
  csv_num(f, secs);
  fputc('\n', f);
  int bad = ferror(f);
  fflush(f);
  fsync(fileno(f));
  if (fclose(f) != 0 || bad) return xd_fail(e, "%s: write error", r->csv_path);
  return 0;
}

static void say(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(run *r, const char *fmt, ...) {
  if (!leader(r)) return;
  va_list ap;
  if (!r->o->quiet) {
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
  }
  if (r->log) {
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
  }
}

/* ---- validation (rank 0) ---- */

static void validate(run *r, xd_binary_metrics *vm) {
  double loss = 0;
  xd_infer(&r->m, &r->ws, r->val.n, r->val.images, r->val.labels, r->val_probs, &loss);
  xd_metrics_binary(r->val.n, r->val_probs, r->val.labels, 0.5, vm);
  vm->loss = loss / (double)r->val.n;
}

/* ---- setup ---- */

static int bcast_model(run *r, xd_err *e) {
  /* rank 0 built the model (fresh or from last.h5); the others build the same text, then take its state */
  int64_t len = leader(r) ? (int64_t)strlen(r->m.text) + 1 : 0;
  xd_dist_bcast_idle(r->d, &len, sizeof len);
  char *text = leader(r) ? r->m.text : malloc((size_t)len);
  if (!text) return xd_fail(e, "out of memory");
  xd_dist_bcast_idle(r->d, text, (int)len);
  if (!leader(r)) {
    int rc = xd_model_build(&r->m, text, "model from rank 0", e);
    free(text);
    XD_TRY(rc);
  }
  xd_dist_bcast_idle(r->d, r->m.params, (int)(r->m.nparams * sizeof(float)));
  if (r->m.nbuffers) xd_dist_bcast_idle(r->d, r->m.buffers, (int)(r->m.nbuffers * sizeof(float)));
  return 0;
}

static int setup(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  xd_dist *d = r->d;
  /* every rank opens the file itself and reads only its shard */
  xd_dataset *ds;
  XD_TRY(xd_dataset_open(&ds, o->data, "train", e));
  r->info = *xd_dataset_get_info(ds);
  xd_dataset_close(ds);
  r->train_total = r->info.n;
  if (o->batch % d->size)
    return xd_fail(e, "--batch %d is the global batch and must be divisible by the %d ranks", o->batch, d->size);
  r->lb = o->batch / d->size;
  int64_t a, b;
  xd_shard_range(r->train_total, d->rank, d->size, &a, &b);
  int64_t smallest = r->train_total / d->size; /* shards differ by at most one */
  if (smallest < r->lb)
    return xd_fail(e, "%s: train split has %lld images: a rank's shard (%lld) is smaller than its local batch %d",
                   o->data, (long long)r->train_total, (long long)smallest, r->lb);
  /* every rank runs the same number of steps: the smallest shard decides */
  r->steps_per_epoch = (int)(smallest / r->lb);
  double mb = (double)(b - a) * r->info.height * r->info.width / 1048576.0;
  if (mb > o->mem_cap_mb) {
    XD_TRY(xd_dataset_open(&r->pf.ds, o->data, "train", e));
    r->pf.shard_a = a;
    r->pf.lb = r->lb;
    r->pf.px = (size_t)r->info.height * r->info.width;
    r->train.n = b - a;
    if (!(r->train.labels = xd_alloc((size_t)(b - a) + 1, "labels", e))) return -1;
    XD_TRY(xd_dataset_read_u8(r->pf.ds, a, b, NULL, r->train.labels, e));
    for (int k = 0; k < 2; k++)
      if (!(r->pf.buf[k] = xd_alloc((size_t)r->lb * r->pf.px, "prefetch buffer", e))) return -1;
  } else {
    XD_TRY(read_split(o->data, "train", a, b, &r->train, NULL, NULL, e));
  }
  double counts[2] = {0, 0};
  for (int64_t i = 0; i < r->train.n; i++)
    if (r->train.labels[i] < 2) counts[r->train.labels[i]] += 1;
  xd_dist_sum_doubles(d, counts, 2);
  r->class_count[0] = (int64_t)counts[0];
  r->class_count[1] = (int64_t)counts[1];
  r->cwp = NULL;
  if (o->class_weight == 1) {
    if (r->info.nclasses != 2 || !counts[0] || !counts[1])
      return xd_fail(e, "%s: --class-weight balanced needs two classes, both present in train", o->data);
    r->cw[0] = (float)((counts[0] + counts[1]) / (2 * counts[0]));
    r->cw[1] = (float)((counts[0] + counts[1]) / (2 * counts[1]));
    r->cwp = r->cw;
  } else if (o->class_weight == 2) {
    r->cw[0] = o->cw[0];
    r->cw[1] = o->cw[1];
    r->cwp = r->cw;
  }
  if (leader(r)) {
    int hv = xd_dataset_has_split(o->data, "val", e);
    if (hv < 0) return -1;
    r->has_val = hv;
    if (hv) {
      XD_TRY(read_split(o->data, "val", 0, -1, &r->val, NULL, NULL, e));
      if (!(r->val_probs = xd_alloc(((size_t)r->val.n + 1) * sizeof(float), "validation", e))) return -1;
    }
  }
  if (xd_augment_parse(o->augment, &r->aug)) return xd_fail(e, "bad --augment '%s'", o->augment);

  /* model: fresh, or the state of DIR/last.h5 */
  r->st.seed = o->seed;
  r->st.threshold = 0.5;
  r->st.best_metric = NAN;
  int resume_from = 0;
  if (leader(r)) {
    if (o->resume && xd_file_exists(r->last_path)) {
      xd_ckpt_meta meta;
      XD_TRY(xd_checkpoint_load(r->last_path, &r->m, &r->st, &meta, e));
      if (r->m.in_c != r->info.channels || r->m.in_h != r->info.height || r->m.in_w != r->info.width)
        return xd_fail(e, "%s: checkpoint input %dx%dx%d does not match %s (%dx%dx%d)", r->last_path, r->m.in_c,
                       r->m.in_h, r->m.in_w, o->data, r->info.channels, r->info.height, r->info.width);
      if (r->st.seed != o->seed)
        return xd_fail(e, "%s: was trained with --seed %llu, not %llu", r->last_path, (unsigned long long)r->st.seed,
                       (unsigned long long)o->seed);
      resume_from = 1;
    } else {
      if (o->resume && !o->quiet) printf("xray-dp: --resume: no %s yet, starting a new run\n", r->last_path);
      XD_TRY(xd_model_from_arg(&r->m, o->model, r->info.channels, r->info.height, r->info.width, e));
      xd_model_init(&r->m, o->init, o->seed);
    }
  }
  int flags[2] = {resume_from, 0};
  xd_dist_bcast_idle(d, flags, sizeof flags);
  resume_from = flags[0];
  XD_TRY(bcast_model(r, e));
  xd_dist_bcast_idle(d, &r->st, sizeof r->st);
  if (r->m.nout != 1 && r->m.nout != r->info.nclasses)
    return xd_fail(e, "model has %d outputs but %s has %d classes", r->m.nout, o->data, r->info.nclasses);
  if (r->m.nout == 1 && r->info.nclasses != 2)
    return xd_fail(e, "'dense 1 sigmoid' needs 2 classes, %s has %d", o->data, r->info.nclasses);

  XD_TRY(xd_opt_alloc(&r->opt, &o->opt, r->m.nparams, e));
  if (o->ema > 0) XD_TRY(xd_opt_ema_init(&r->opt, o->ema, r->m.params, r->m.buffers, r->m.nbuffers, e));
  if (resume_from) {
    if (leader(r)) XD_TRY(xd_checkpoint_load_optim(r->last_path, &r->m, &r->opt, e));
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
  if (!g) return -1;
  xd_free(r->m.grads);
  r->m.grads = g;
  XD_TRY(xd_workspace_alloc(&r->ws, &r->m, r->lb, e));
  r->bn_reducer.sum_doubles = xd_dist_sum_doubles_cb;
  r->bn_reducer.ctx = d;
  r->bn_reducer.world = d->size;

  r->meta.nclasses = r->info.nclasses;
  memcpy(r->meta.class_names, r->info.class_names, sizeof r->meta.class_names);
  snprintf(r->meta.command, sizeof r->meta.command, "%s", o->command ? o->command : "");
  snprintf(r->meta.monitor, sizeof r->meta.monitor, "%s",
           o->monitor_last ? "last" : (o->monitor_auc ? "val_auc" : "val_loss"));
  snprintf(r->meta.data, sizeof r->meta.data, "%s", o->data);
  if (r->info.nclasses == 2) { /* the prior the weighted loss saw: what eval --prior corrects from */
    double w0 = r->cwp ? r->cw[0] : 1.0, w1 = r->cwp ? r->cw[1] : 1.0;
    double a = w0 * (double)r->class_count[0], b = w1 * (double)r->class_count[1];
    r->meta.train_prior = a + b > 0 ? b / (a + b) : 0;
  }
  return 0;
}

static int open_logs(run *r, xd_err *e) {
  const xd_train_opts *o = r->o;
  XD_TRY(csv_open_truncated(r, e));
  r->log = fopen(r->log_path, "a");
  if (!r->log) return xd_fail(e, "%s: cannot write: %s", r->log_path, strerror(errno));
  time_t now = time(NULL);
  char ts[64];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  fprintf(r->log, "=== %s %s\ncommand: %s\n", ts, r->st.epoch || r->st.step ? "resumed" : "started",
          o->command ? o->command : "");
  fprintf(r->log, "ranks x threads: %d x %d; global batch %d (local %d); %d steps per epoch\n", r->d->size,
          omp_get_max_threads(), o->batch, r->lb, r->steps_per_epoch);
  fprintf(r->log, "data: %s: %dx%d, train %lld (%s %lld, %s %lld), val %lld; source: %s\n", o->data,
          r->info.height, r->info.width, (long long)r->train_total, r->info.class_names[0],
          (long long)r->class_count[0], r->info.nclasses > 1 ? r->info.class_names[1] : "-",
          (long long)r->class_count[1], (long long)r->val.n, r->info.source);
  if (o->recipe) fprintf(r->log, "recipe of the preset (before the options given): %s\n", o->recipe);
  fprintf(r->log, "optimizer %s lr %g weight decay %g warm-up %d epoch(s); EMA %g; augment %s; class weights %s%s\n",
          xd_opt_name(o->opt.kind), o->opt.lr, o->opt.weight_decay, o->sched.warmup_epochs, o->ema, o->augment,
          r->cwp ? "balanced/given" : "none", o->sync_bn ? "; sync-bn" : "");
  xd_model_summary(&r->m, r->log);
  fflush(r->log);
  return 0;
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

static int save_last(run *r, xd_err *e) {
  return xd_checkpoint_save(r->last_path, &r->m, &r->opt, &r->st, &r->meta, e);
}

static void progress(run *r, int epoch, int s, double t0, double loss_sum, double count) {
  if (!leader(r) || r->o->quiet || !isatty(2)) return;
  double el = xd_now() - t0;
  int done = s + 1, total = r->steps_per_epoch, w = 24, k = done * w / total;
  double ips = el > 0 ? done * (double)r->o->batch / el : 0, eta = done ? el / done * (total - done) : 0;
  char bar[32];
  for (int i = 0; i < w; i++) bar[i] = i < k ? '=' : (i == k ? '>' : '.');
  bar[w] = 0;
  fprintf(stderr, "\repoch %d/%d [%s] %d/%d  %.0f img/s  loss %.4f  ETA %d:%02d ", epoch, r->o->epochs, bar, done,
          total, ips, count > 0 ? loss_sum / count : 0.0, (int)eta / 60, (int)eta % 60);
  if (done == total) fputs("\r\033[K", stderr);
  fflush(stderr);
}

/* One epoch's steps, starting at st.step_in_epoch. Returns 0 epoch done, 1 stop requested (signal or
 * max-steps; last.h5 written), -1 error. */
static int run_epoch(run *r, int epoch, float *lr_out, xd_err *e) {
  const xd_train_opts *o = r->o;
  xd_model *m = &r->m;
  const int H = r->info.height, W = r->info.width, lb = r->lb;
  const size_t px = (size_t)H * W;
  int64_t n = r->train.n;
  int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
  if (!perm) return xd_fail(e, "out of memory");
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  if (!o->no_shuffle) {
    xd_rng rng = xd_rng_make(xd_key(o->seed, XD_STREAM_SHUFFLE, (uint64_t)epoch, (uint64_t)r->d->rank));
    xd_shuffle(&rng, perm, n);
  }
  uint8_t *y = malloc((size_t)lb);
  double t0 = xd_now() - r->st.part_seconds;
  int rc = 0;
  prefetch *pf = r->pf.ds ? &r->pf : NULL;
  r->allreduce_s = 0;
  if (pf) {
    pf->perm = perm;
    if (r->st.step_in_epoch < r->steps_per_epoch && prefetch_start(pf, r->st.step_in_epoch, e)) rc = -1;
  }
  for (int s = (int)r->st.step_in_epoch; rc == 0 && s < r->steps_per_epoch; s++) {
    if (o->max_steps >= 0 && r->st.step >= o->max_steps) {
      rc = 1;
      break;
    }
    const uint8_t *batch = NULL; /* streaming: this step's images in order j = 0..lb-1 */
    if (pf) {
      if (!(batch = prefetch_wait(pf, e))) {
        rc = -1;
        break;
      }
      if (s + 1 < r->steps_per_epoch && prefetch_start(pf, s + 1, e)) {
        rc = -1;
        break;
      }
    }
    float *x = r->ws.act[0];
    uint64_t akey = xd_key(o->seed, XD_STREAM_AUGMENT, (uint64_t)r->st.step, 0);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < lb; j++) {
      const uint8_t *src = batch ? batch + (size_t)j * px : r->train.images + (size_t)perm[(int64_t)s * lb + j] * px;
      if (r->aug.on) {
        xd_augment_apply(&r->aug, akey, (uint64_t)(r->d->rank * lb + j), src, H, W, x + (size_t)j * px);
      } else {
        for (size_t i = 0; i < px; i++) x[(size_t)j * px + i] = src[i] * (1.0f / 255.0f);
      }
    }
    for (int j = 0; j < lb; j++) y[j] = r->train.labels[perm[(int64_t)s * lb + j]];
    xd_step_ctx c = {1, o->seed, (uint64_t)r->st.step, (int64_t)r->d->rank * lb, o->batch,
                     o->sync_bn && r->d->size > 1 ? &r->bn_reducer : NULL};
    const float *z = xd_forward(m, &r->ws, lb, &c);
    double loss;
    float correct = 0;
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
    float *ex = m->grads + m->nparams;
    ex[EX_LOSS] = (float)loss;
    ex[EX_CORRECT] = correct;
    ex[EX_STOP] = (o->stop_flag && *o->stop_flag) ? 1.0f : 0.0f;
    double t_ar = xd_now();
    xd_dist_sum_floats(r->d, m->grads, m->nparams + EX_COUNT);
    r->allreduce_s += xd_now() - t_ar;
    if (!isfinite(ex[EX_LOSS])) {
      rc = xd_fail(e, "training diverged: loss is %g at step %lld; try a lower --lr", ex[EX_LOSS],
                   (long long)r->st.step);
      break;
    }
    float lr = xd_schedule_lr_step(&o->sched, o->opt.lr, r->st.step, r->steps_per_epoch, o->epochs);
    *lr_out = lr;
    xd_opt_step(&r->opt, m->params, m->grads, lr);
    xd_opt_ema_step(&r->opt, m->params, m->buffers);
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
    if (leader(r) && isatty(2) && !o->quiet) fputs("\n", stderr);
    if (leader(r) && save_last(r, e)) return -1;
    return rc;
  }
  return rc;
}

int xd_train(const xd_train_opts *o, xd_dist *d, xd_err *e) {
  run *r = calloc(1, sizeof *r);
  if (!r) return xd_fail(e, "out of memory");
  r->o = o;
  r->d = d;
  int rc = 0;
  snprintf(r->dir, sizeof r->dir, "%s", o->out);
  snprintf(r->last_path, sizeof r->last_path, "%s/last.h5", r->dir);
  snprintf(r->best_path, sizeof r->best_path, "%s/best.h5", r->dir);
  snprintf(r->csv_path, sizeof r->csv_path, "%s/metrics.csv", r->dir);
  snprintf(r->log_path, sizeof r->log_path, "%s/train.log", r->dir);
  if (leader(r)) rc = xd_mkdir_p(r->dir, e);
  if (rc == 0) rc = setup(r, e);
  if (rc == 0 && leader(r)) rc = open_logs(r, e);
  if (rc) goto done;
  if (leader(r) && !o->quiet) {
    printf("xray-dp: training %s on %s: %lld train / %lld val images at %dx%d, %d rank%s x %d thread%s, global batch "
           "%d, %d steps/epoch -> %s\n",
           o->model, o->data, (long long)r->train_total, (long long)r->val.n, r->info.height, r->info.width, d->size,
           d->size > 1 ? "s" : "", omp_get_max_threads(), omp_get_max_threads() > 1 ? "s" : "", o->batch,
           r->steps_per_epoch, r->dir);
    if (r->st.epoch || r->st.step)
      printf("xray-dp: resumed from %s at epoch %lld, step %lld\n", r->last_path, (long long)r->st.epoch + 1,
             (long long)r->st.step);
    fflush(stdout);
  }
  if (o->max_steps == 0 && r->st.step == 0) {
    if (leader(r)) rc = save_last(r, e);
    say(r, "xray-dp: --max-steps 0: wrote the initial weights to %s\n", r->last_path);
    goto done;
  }
  if (r->st.stopped) {
    say(r, "xray-dp: %s says early stopping already ended this run at epoch %lld (best epoch %lld)\n", r->last_path,
        (long long)r->st.epoch, (long long)r->st.best_epoch);
    goto done;
  }
  for (int epoch = (int)r->st.epoch; epoch < o->epochs; epoch++) {
    float lr = xd_schedule_lr_step(&o->sched, o->opt.lr, r->st.step, r->steps_per_epoch, o->epochs);
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
      say(r, "xray-dp: interrupted by a signal at epoch %d step %lld; state saved to %s; rerun with --resume to "
             "continue\n", epoch + 1, (long long)r->st.step_in_epoch, r->last_path);
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
      rc = xd_fail(e, "ranks hold different weights after epoch %d: the all-reduce diverged (a bug; please report)",
                   epoch + 1);
      goto done;
    }
    /* rank 0: validate, decide, checkpoint; then tell everyone whether to go on */
    int32_t decision[2] = {0, 0}; /* stop, error */
    if (leader(r)) {
      ema_swap(r); /* with an EMA, the averaged weights are the model: validated and kept */
      xd_binary_metrics vm;
      memset(&vm, 0, sizeof vm);
      vm.loss = vm.accuracy = vm.roc_auc = vm.precision = vm.recall = vm.specificity = vm.f1 = NAN;
      if (r->has_val) validate(r, &vm);
      double metric = r->has_val ? (o->monitor_auc ? vm.roc_auc : vm.loss) : tl;
      int better = o->monitor_last || r->st.best_epoch == 0 ||
                   (o->monitor_auc && r->has_val ? metric > r->st.best_metric + o->min_delta
                                                 : metric < r->st.best_metric - o->min_delta);
      if (!isfinite(metric)) better = r->st.best_epoch == 0;
      if (better) {
        r->st.best_metric = metric;
        r->st.best_epoch = epoch + 1;
        r->st.bad_epochs = 0;
        if (r->has_val) {
          double thr = xd_threshold_for_sensitivity(r->val.n, r->val_probs, r->val.labels, 0.95);
          r->st.threshold = isfinite(thr) ? thr : 0.5;
        }
      } else {
        r->st.bad_epochs++;
      }
      if (o->patience > 0 && r->st.bad_epochs >= o->patience) r->st.stopped = 1;
      double secs = xd_now() - t_epoch;
      int ok = csv_append(r, epoch + 1, tl, ta, &vm, lr, ips, secs, e) == 0;
      if (ok && better) ok = xd_checkpoint_save(r->best_path, &r->m, NULL, &r->st, &r->meta, e) == 0;
      ema_swap(r);
      if (ok) ok = save_last(r, e) == 0;
      char comm[48] = "";
      if (d->size > 1) snprintf(comm, sizeof comm, " (all-reduce %.0f%%)", 100.0 * r->allreduce_s / train_secs);
      if (r->has_val)
        say(r, "epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc %.4f auc %.4f sens %.3f spec %.3f | %.0f img/s%s "
               "%.1fs%s\n", epoch + 1, o->epochs, tl, ta, vm.loss, vm.accuracy, vm.roc_auc, vm.recall, vm.specificity,
            ips, comm, secs, better ? " *" : "");
      else
        say(r, "epoch %d/%d: loss %.4f acc %.4f | %.0f img/s%s %.1fs%s\n", epoch + 1, o->epochs, tl, ta, ips, comm, secs,
            better ? " *" : "");
      decision[0] = r->st.stopped;
      decision[1] = !ok;
    }
    xd_dist_bcast_idle(d, decision, sizeof decision);
    if (decision[1]) {
      rc = -1; /* rank 0 holds the message */
      if (!leader(r)) xd_fail(e, "rank 0 failed to write the run directory");
      goto done;
    }
    if (decision[0]) {
      say(r, "xray-dp: early stopping after epoch %d: no %s improvement for %d epochs; best epoch %lld (%s)\n",
          epoch + 1, o->monitor_auc ? "val_auc" : "val_loss", o->patience, (long long)r->st.best_epoch,
          r->best_path);
      break;
    }
  }
  if (rc == 0 && r->st.best_epoch && o->monitor_last)
    say(r, "xray-dp: done; kept the last epoch's %smodel (epoch %lld, threshold %.4f for >= 95%% sensitivity) in %s\n",
        r->opt.ema ? "weight-averaged (EMA) " : "", (long long)r->st.best_epoch, r->st.threshold, r->best_path);
  else if (rc == 0 && r->st.best_epoch)
    say(r, "xray-dp: done; best epoch %lld (%s %.4f, threshold %.4f for >= 95%% sensitivity) in %s\n",
        (long long)r->st.best_epoch, r->has_val ? (o->monitor_auc ? "val_auc" : "val_loss") : "train_loss",
        r->st.best_metric, r->st.threshold, r->best_path);
done:
  if (r->log) fclose(r->log);
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
