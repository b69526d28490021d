/* Forward and backward passes over a built model, using the layer kernels. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rng.h"

static size_t out_size(const xd_layer *L) { return (size_t)L->out_c * L->out_h * L->out_w; }
/* values per sample of tensor t (0 = the model input) */
static size_t tensor_size(const xd_model *m, int t) {
  return t == 0 ? (size_t)m->in_c * m->in_h * m->in_w : out_size(&m->layers[t - 1]);
}

static xd_conv_dims conv_dims(const xd_layer *L, int B) {
  xd_conv_dims d = {B, L->in_c, L->in_h, L->in_w, L->out_c, L->p.conv.kh, L->p.conv.kw, L->p.conv.stride,
                    L->p.conv.pad_top, L->p.conv.pad_left, L->out_h, L->out_w};
  return d;
}

static xd_pool_dims pool_dims(const xd_layer *L, int B) {
  xd_pool_dims d = {B, L->in_c, L->in_h, L->in_w, L->p.pool.kh, L->p.pool.kw, L->p.pool.sh, L->p.pool.sw,
                    L->out_h, L->out_w};
  return d;
}

/* ---- per-kind table: one forward and one backward per layer kind ----
 * fwd: x = tensor in0 [B, in], y = this layer's output [B, out] (the fused activation is applied by the
 * caller). bwd: dy = gradient w.r.t. the output (after the activation's backward), dx[k] = gradient
 * w.r.t. input k (NULL when not needed: the model input); kernels overwrite dx and the layer's grads. */
typedef struct layer_io {
  xd_model *m;
  xd_workspace *ws;
  const xd_step_ctx *c;
  int i, B;
  const xd_layer *L;
} layer_io;
typedef void (*fwd_fn)(const layer_io *io, const float *x, float *y);
typedef void (*bwd_fn)(const layer_io *io, const float *x, const float *dy, float *dx[2]);

#define W_(io) ((io)->m->params + (io)->L->w_off)
#define B_(io) ((io)->m->params + (io)->L->b_off)
#define GW_(io) ((io)->m->grads + (io)->L->w_off)
#define GB_(io) ((io)->m->grads + (io)->L->b_off)
#define NOUT(io) ((size_t)(io)->B * out_size((io)->L))

static void conv_fwd(const layer_io *io, const float *x, float *y) {
  xd_conv_dims d = conv_dims(io->L, io->B);
  conv2d_forward(&d, x, W_(io), io->L->b_n ? B_(io) : NULL, y, io->ws->scratch);
}
static void conv_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  xd_conv_dims d = conv_dims(io->L, io->B);
  conv2d_backward(&d, x, W_(io), dy, dx[0], GW_(io), io->L->b_n ? GB_(io) : NULL, io->ws->scratch);
}
static void dense_fwd(const layer_io *io, const float *x, float *y) {
  dense_forward(io->B, io->L->in_c, io->L->out_c, x, W_(io), B_(io), y);
}
static void dense_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  dense_backward(io->B, io->L->in_c, io->L->out_c, x, W_(io), dy, dx[0], GW_(io), GB_(io));
}
static void maxpool_fwd(const layer_io *io, const float *x, float *y) {
  xd_pool_dims d = pool_dims(io->L, io->B);
  maxpool_forward(&d, x, y, io->ws->argmax[io->i]);
}
static void maxpool_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  xd_pool_dims d = pool_dims(io->L, io->B);
  if (dx[0]) maxpool_backward(&d, dy, io->ws->argmax[io->i], dx[0]);
}
static void avgpool_fwd(const layer_io *io, const float *x, float *y) {
  xd_pool_dims d = pool_dims(io->L, io->B);
  avgpool_forward(&d, x, y);
}
static void avgpool_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  xd_pool_dims d = pool_dims(io->L, io->B);
  if (dx[0]) avgpool_backward(&d, dy, dx[0]);
}
static void gap_fwd(const layer_io *io, const float *x, float *y) {
  globalavgpool_forward(io->B, io->L->in_c, io->L->in_h * io->L->in_w, x, y);
}
static void gap_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  if (dx[0]) globalavgpool_backward(io->B, io->L->in_c, io->L->in_h * io->L->in_w, dy, dx[0]);
}
static void bn_fwd(const layer_io *io, const float *x, float *y) {
  const xd_layer *L = io->L;
  const xd_step_ctx *c = io->c;
  xd_workspace *ws = io->ws;
  int HW = L->in_h * L->in_w, B = io->B;
  float *rm = io->m->buffers + L->rm_off, *rv = io->m->buffers + L->rv_off;
  if (c->training) {
    batchnorm_stats(B, L->in_c, HW, x, ws->bn_stats);
    double count = (double)B * HW;
    if (c->sync_bn && c->sync_bn->sum_doubles) {
      c->sync_bn->sum_doubles(c->sync_bn->ctx, ws->bn_stats, 2 * L->in_c);
      count = (double)c->global_batch * HW;
    }
    batchnorm_forward_train(B, L->in_c, HW, x, ws->bn_stats, count, W_(io), B_(io), L->p.bn.eps, L->p.bn.momentum, y,
                            ws->bn_mean[io->i], ws->bn_invstd[io->i], rm, rv);
  } else {
    batchnorm_forward_eval(B, L->in_c, HW, x, W_(io), B_(io), rm, rv, L->p.bn.eps, y);
  }
}
static void bn_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  const xd_layer *L = io->L;
  const xd_step_ctx *c = io->c;
  xd_workspace *ws = io->ws;
  int HW = L->in_h * L->in_w, B = io->B;
  const float *w = W_(io);
  if (!c->training) { /* Grad-CAM through a frozen batchnorm: a per-channel scale */
    if (!dx[0]) return;
    const float *rv = io->m->buffers + L->rv_off;
    for (int64_t s = 0; s < (int64_t)B * L->in_c; s++) {
      int ch = (int)(s % L->in_c);
      float k = w[ch] / sqrtf(rv[ch] + L->p.bn.eps);
      for (int j = 0; j < HW; j++) dx[0][s * HW + j] = dy[s * HW + j] * k;
    }
    return;
  }
  batchnorm_backward_stats(B, L->in_c, HW, x, dy, ws->bn_mean[io->i], ws->bn_invstd[io->i], ws->bn_stats, GW_(io),
                           GB_(io));
  double count = (double)B * HW;
  if (c->sync_bn && c->sync_bn->sum_doubles) {
    c->sync_bn->sum_doubles(c->sync_bn->ctx, ws->bn_stats, 2 * L->in_c);
    count = (double)c->global_batch * HW;
  }
  if (dx[0])
    batchnorm_backward(B, L->in_c, HW, x, dy, ws->bn_mean[io->i], ws->bn_invstd[io->i], w, ws->bn_stats, count, dx[0]);
}
static uint64_t dropout_key(const xd_step_ctx *c, int layer) {
  return xd_key(c->seed, XD_STREAM_DROPOUT, c->step, (uint64_t)layer);
}
static void dropout_fwd(const layer_io *io, const float *x, float *y) {
  size_t on = out_size(io->L);
  if (io->c->training && io->L->p.dropout.rate > 0)
    dropout_forward((int64_t)io->B * on, io->L->p.dropout.rate, dropout_key(io->c, io->i),
                    (uint64_t)io->c->first_sample * on, x, y);
  else
    memcpy(y, x, NOUT(io) * sizeof(float));
}
static void dropout_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  size_t on = out_size(io->L);
  if (!dx[0]) return;
  if (io->c->training && io->L->p.dropout.rate > 0)
    dropout_backward((int64_t)io->B * on, io->L->p.dropout.rate, dropout_key(io->c, io->i),
                     (uint64_t)io->c->first_sample * on, dy, dx[0]);
  else
    memcpy(dx[0], dy, NOUT(io) * sizeof(float));
}
static void copy_fwd(const layer_io *io, const float *x, float *y) { memcpy(y, x, NOUT(io) * sizeof(float)); }
static void copy_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  if (dx[0]) memcpy(dx[0], dy, NOUT(io) * sizeof(float));
}
static void add_fwd(const layer_io *io, const float *x, float *y) {
  add_forward((int64_t)NOUT(io), x, io->ws->act[io->L->in1], y);
}
static void add_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  for (int k = 0; k < 2; k++)
    if (dx[k]) memcpy(dx[k], dy, NOUT(io) * sizeof(float));
}
static void stdz_fwd(const layer_io *io, const float *x, float *y) {
  standardize_forward(io->B, (int64_t)out_size(io->L), io->L->p.stdz.eps, x, y, io->ws->bn_invstd[io->i]);
}
static void stdz_bwd(const layer_io *io, const float *x, const float *dy, float *dx[2]) {
  if (dx[0])
    standardize_backward(io->B, (int64_t)out_size(io->L), io->ws->act[io->i + 1], io->ws->bn_invstd[io->i], dy, dx[0]);
}

static const struct {
  fwd_fn fwd;
  bwd_fn bwd;
  int fused_act; /* the kind carries an activation applied to its output */
} KIND[XD_L_NKINDS] = {
    [XD_L_CONV] = {conv_fwd, conv_bwd, 1},
    [XD_L_MAXPOOL] = {maxpool_fwd, maxpool_bwd, 0},
    [XD_L_AVGPOOL] = {avgpool_fwd, avgpool_bwd, 0},
    [XD_L_GAP] = {gap_fwd, gap_bwd, 0},
    [XD_L_BATCHNORM] = {bn_fwd, bn_bwd, 1},
    [XD_L_DROPOUT] = {dropout_fwd, dropout_bwd, 0},
    [XD_L_FLATTEN] = {NULL, NULL, 0}, /* aliases its input: no work either way */
    [XD_L_DENSE] = {dense_fwd, dense_bwd, 1},
    [XD_L_ACT] = {copy_fwd, copy_bwd, 1},
    [XD_L_ADD] = {add_fwd, add_bwd, 1},
    [XD_L_STANDARDIZE] = {stdz_fwd, stdz_bwd, 0},
};

static int has_act(const xd_model *m, int i) {
  const xd_layer *L = &m->layers[i];
  /* the last layer's activation is fused into the loss: its buffer keeps the logits */
  return KIND[L->kind].fused_act && L->act != XD_ACT_LINEAR && i != m->nlayers - 1;
}

/* ---- gradient buffers: tensor t's gradient lives from its last consumer's backward to its producer's ---- */

static float *gbuf_get(xd_workspace *w, int *nfree, int *peak, int dry) {
  if (dry) {
    (*nfree)--;
    if (-*nfree > *peak) *peak = -*nfree;
    return (float *)w; /* any non-NULL marker */
  }
  return w->gpool[w->gfree[--*nfree]];
}
static void gbuf_put(xd_workspace *w, float *b, int *nfree, int dry) {
  if (dry) {
    (*nfree)++;
    return;
  }
  for (int k = 0; k < w->ngpool; k++)
    if (w->gpool[k] == b) {
      w->gfree[(*nfree)++] = k;
      return;
    }
}
static int is_pool_buf(const xd_workspace *w, const float *b) {
  for (int k = 0; k < w->ngpool; k++)
    if (w->gpool[k] == b) return 1;
  return 0;
}

/* Gradient buffers the backward pass holds at once: a dry run of it (only pointer arrays are allocated). */
static int count_gpool(const xd_model *m, int *ngpool) {
  xd_workspace dry;
  memset(&dry, 0, sizeof dry);
  dry.grad_of = calloc((size_t)m->nlayers + 1, sizeof *dry.grad_of);
  if (!dry.grad_of) return -1;
  dry.dlast = (float *)&dry; /* a marker: the last layer's gradient exists */
  xd_backward((xd_model *)m, &dry, -1, NULL, -1); /* B = -1: count only */
  free(dry.grad_of);
  *ngpool = dry.ngpool;
  return 0;
}

/* bytes of one xd_alloc of n values of size sz (rounded up to 64 bytes), saturating */
static uint64_t abytes(uint64_t n, uint64_t sz) { return xd_add_sat(xd_mul_sat(n ? n : 1, sz), 64); }

/* The workspace size, following xd_workspace_alloc allocation by allocation. */
static uint64_t workspace_bytes(const xd_model *m, int batch, int nthreads, int ngpool) {
  if (batch <= 0) return UINT64_MAX;
  const uint64_t B = (uint64_t)batch;
  const int n = m->nlayers;
  uint64_t t = xd_mul_sat(5 * ((uint64_t)n + 1), sizeof(void *)); /* the pointer arrays */
  uint64_t in_n = (uint64_t)m->in_c * m->in_h * m->in_w, maxn = in_n, scratch = 0;
  int64_t maxc = 1;
  t = xd_add_sat(t, abytes(xd_mul_sat(B, in_n), sizeof(float)));
  for (int i = 0; i < n; i++) {
    const xd_layer *L = &m->layers[i];
    uint64_t on = out_size(L);
    if (on > maxn) maxn = on;
    if (L->kind == XD_L_FLATTEN) continue;
    t = xd_add_sat(t, abytes(xd_mul_sat(B, on), sizeof(float)));
    if (L->kind == XD_L_MAXPOOL) t = xd_add_sat(t, abytes(xd_mul_sat(B, on), sizeof(int32_t)));
    if (L->kind == XD_L_BATCHNORM) {
      t = xd_add_sat(t, xd_mul_sat(abytes((uint64_t)L->in_c, sizeof(float)), 2));
      if (L->in_c > maxc) maxc = L->in_c;
    }
    if (L->kind == XD_L_STANDARDIZE) t = xd_add_sat(t, abytes(B, sizeof(float)));
    if (L->kind == XD_L_CONV) {
      xd_conv_dims d = conv_dims(L, batch);
      uint64_t s = conv2d_scratch_floats(&d, nthreads);
      if (s > scratch) scratch = s;
    }
  }
  t = xd_add_sat(t, abytes(scratch, sizeof(float)));
  t = xd_add_sat(t, abytes(2 * (uint64_t)maxc, sizeof(double)));
  t = xd_add_sat(t, abytes(xd_mul_sat(B, (uint64_t)m->nout), sizeof(float)));
  t = xd_add_sat(t, xd_mul_sat(2 * ((uint64_t)ngpool + 1), sizeof(void *)));
  t = xd_add_sat(t, xd_mul_sat((uint64_t)ngpool, abytes(xd_mul_sat(B, maxn), sizeof(float))));
  return t;
}

uint64_t xd_workspace_bytes(const xd_model *m, int batch) {
  int ngpool;
  if (count_gpool(m, &ngpool)) return UINT64_MAX;
  return workspace_bytes(m, batch, omp_get_max_threads(), ngpool);
}

int xd_workspace_alloc(xd_workspace *w, const xd_model *m, int batch, xd_err *e) {
  memset(w, 0, sizeof *w);
  if (batch <= 0) return xd_fail(e, "%s: batch of %d samples (must be positive)", m->source, batch);
  /* the whole size first, then the allocations: a batch too large for the machine is one line, not the
   * OOM killer */
  int n = m->nlayers, nthreads = omp_get_max_threads(), ngpool;
  if (count_gpool(m, &ngpool)) return xd_fail(e, "%s: out of memory allocating the workspace", m->source);
  {
    char what[sizeof m->source + 96];
    snprintf(what, sizeof what, "%s: the workspace for batch %d (with the model's parameters)", m->source, batch);
    if (xd_mem_check(xd_add_sat(workspace_bytes(m, batch, nthreads, ngpool), xd_model_bytes(m)), what, e)) return -1;
  }
  w->batch = batch;
  w->act = calloc((size_t)n + 1, sizeof *w->act);
  w->argmax = calloc((size_t)n, sizeof *w->argmax);
  w->bn_mean = calloc((size_t)n, sizeof *w->bn_mean);
  w->bn_invstd = calloc((size_t)n, sizeof *w->bn_invstd);
  w->grad_of = calloc((size_t)n + 1, sizeof *w->grad_of);
  if (!w->act || !w->argmax || !w->bn_mean || !w->bn_invstd || !w->grad_of) goto oom;
  size_t in_n = (size_t)m->in_c * m->in_h * m->in_w, maxn = in_n, scratch = 0;
  int maxc = 1;
  if (!(w->act[0] = xd_alloc((size_t)batch * in_n * sizeof(float), "input batch", e))) goto fail;
  for (int i = 0; i < n; i++) {
    const xd_layer *L = &m->layers[i];
    size_t on = out_size(L);
    if (on > maxn) maxn = on;
    if (L->kind == XD_L_FLATTEN) {
      w->act[i + 1] = w->act[L->in0]; /* same memory, NCHW order is already C,H,W */
      continue;
    }
    if (!(w->act[i + 1] = xd_alloc((size_t)batch * on * sizeof(float), "activations", e))) goto fail;
    if (L->kind == XD_L_MAXPOOL &&
        !(w->argmax[i] = xd_alloc((size_t)batch * on * sizeof(int32_t), "pooling indices", e)))
      goto fail;
    if (L->kind == XD_L_BATCHNORM) {
      if (!(w->bn_mean[i] = xd_alloc((size_t)L->in_c * sizeof(float), "batchnorm", e))) goto fail;
      if (!(w->bn_invstd[i] = xd_alloc((size_t)L->in_c * sizeof(float), "batchnorm", e))) goto fail;
      if (L->in_c > maxc) maxc = L->in_c;
    }
    if (L->kind == XD_L_STANDARDIZE && !(w->bn_invstd[i] = xd_alloc((size_t)batch * sizeof(float), "standardize", e)))
      goto fail;
    if (L->kind == XD_L_CONV) {
      xd_conv_dims d = conv_dims(L, batch);
      size_t s = conv2d_scratch_floats(&d, nthreads);
      if (s > scratch) scratch = s;
    }
  }
  w->scratch_n = scratch;
  if (!(w->scratch = xd_alloc((scratch ? scratch : 1) * sizeof(float), "convolution scratch", e))) goto fail;
  if (!(w->bn_stats = xd_alloc(2 * (size_t)maxc * sizeof(double), "batchnorm", e))) goto fail;
  if (!(w->dlast = xd_alloc((size_t)batch * m->nout * sizeof(float), "loss gradient", e))) goto fail;
  w->ngpool = ngpool;
  w->gpool = calloc((size_t)w->ngpool + 1, sizeof *w->gpool);
  w->gfree = calloc((size_t)w->ngpool + 1, sizeof *w->gfree);
  if (!w->gpool || !w->gfree) goto oom;
  for (int k = 0; k < w->ngpool; k++)
    if (!(w->gpool[k] = xd_alloc((size_t)batch * maxn * sizeof(float), "gradient buffers", e))) goto fail;
  return 0;
oom:
  xd_fail(e, "%s: out of memory allocating the workspace", m->source);
  xd_workspace_free(w, m);
  return -1;
fail: {
  char msg[XD_ERR_MAX];
  snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
  xd_fail(e, "%s: %s", m->source, msg);
}
  xd_workspace_free(w, m);
  return -1;
}

void xd_workspace_free(xd_workspace *w, const xd_model *m) {
  if (w->act) {
    xd_free(w->act[0]);
    for (int i = 0; i < m->nlayers; i++)
      if (m->layers[i].kind != XD_L_FLATTEN) xd_free(w->act[i + 1]);
  }
  if (w->argmax)
    for (int i = 0; i < m->nlayers; i++) xd_free(w->argmax[i]);
  if (w->bn_mean)
    for (int i = 0; i < m->nlayers; i++) xd_free(w->bn_mean[i]), xd_free(w->bn_invstd[i]);
  if (w->gpool)
    for (int k = 0; k < w->ngpool; k++) xd_free(w->gpool[k]);
  free(w->gpool);
  free(w->gfree);
  free(w->grad_of);
  free(w->act);
  free(w->argmax);
  free(w->bn_mean);
  free(w->bn_invstd);
  xd_free(w->scratch);
  xd_free(w->bn_stats);
  xd_free(w->dlast);
  memset(w, 0, sizeof *w);
}

const float *xd_forward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c) {
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    if (!KIND[L->kind].fwd) continue; /* flatten */
    layer_io io = {m, ws, c, i, B, L};
    float *y = ws->act[i + 1];
    KIND[L->kind].fwd(&io, ws->act[L->in0], y);
    /* softmax normalises per sample over features; elementwise activations see any row split */
    if (has_act(m, i)) act_forward(L->act, B, (int64_t)out_size(L), y);
  }
  return ws->act[m->nlayers];
}

/* Backward over the layer graph in reverse order. Each tensor's gradient is a buffer taken from a pool
 * when its last consumer (in forward order) runs backward and returned when its producer has run; a
 * tensor read by several layers (a skip connection) accumulates their contributions in a fixed order.
 * B < 0: a dry run that only counts the buffers needed at once (ws->ngpool). */
void xd_backward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c, int stop_at) {
  const int n = m->nlayers, dry = B < 0;
  int nfree = dry ? 0 : ws->ngpool, peak = 0;
  if (!dry)
    for (int k = 0; k < ws->ngpool; k++) ws->gfree[k] = ws->ngpool - 1 - k;
  for (int t = 0; t <= n; t++) ws->grad_of[t] = NULL;
  ws->grad_of[n] = ws->dlast;
  for (int i = n - 1; i >= 0; i--) {
    const xd_layer *L = &m->layers[i];
    float *dy = ws->grad_of[i + 1];
    if (i == stop_at) { /* gradient w.r.t. the layer's (activated) output: Grad-CAM's dA */
      ws->gradcam_dy = dy;
      return;
    }
    if (!dy) continue; /* cannot happen: every output but the last has a consumer */
    if (!dry && has_act(m, i)) /* dy is one of our own buffers here (the last layer never gets here) */
      act_backward(L->act, B, (int64_t)out_size(L), ws->act[i + 1], dy);
    const int in[2] = {L->in0, L->in1};
    float *dx[2] = {NULL, NULL}, *acc[2] = {NULL, NULL};
    int handed_over = 0;
    for (int k = 0; k < 2; k++) {
      int t = in[k];
      if (t <= 0 || !m->layers[t - 1].needs_grad) continue; /* the model input, or nothing upstream to train */
      if (L->kind == XD_L_FLATTEN && !ws->grad_of[t]) { /* same layout: the gradient buffer changes hands */
        ws->grad_of[t] = dy;
        handed_over = 1;
        continue;
      }
      if (L->kind == XD_L_FLATTEN) { /* a second consumer: accumulate dy directly */
        acc[k] = ws->grad_of[t];
        dx[k] = dy;
        continue;
      }
      if (!ws->grad_of[t]) {
        dx[k] = ws->grad_of[t] = gbuf_get(ws, &nfree, &peak, dry);
      } else {
        acc[k] = ws->grad_of[t];
        dx[k] = gbuf_get(ws, &nfree, &peak, dry);
      }
    }
    if (!dry && KIND[L->kind].bwd) {
      layer_io io = {m, ws, c, i, B, L};
      KIND[L->kind].bwd(&io, ws->act[L->in0], dy, dx);
    }
    for (int k = 0; k < 2; k++) {
      if (!acc[k]) continue;
      if (!dry) add_forward((int64_t)B * tensor_size(m, in[k]), acc[k], dx[k], acc[k]);
      if (dx[k] != dy) gbuf_put(ws, dx[k], &nfree, dry);
    }
    if (!handed_over && i + 1 != n && (dry || is_pool_buf(ws, dy))) gbuf_put(ws, dy, &nfree, dry);
  }
  if (dry) ws->ngpool = peak;
}

void xd_probs(const xd_model *m, int B, const float *logits, float *out) {
  if (out != logits) memcpy(out, logits, (size_t)B * m->nout * sizeof(float));
  act_forward(m->nout == 1 ? XD_ACT_SIGMOID : XD_ACT_SOFTMAX, B, m->nout, out);
}
