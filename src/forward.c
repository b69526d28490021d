/* Forward and backward passes over a built model, using the layer kernels. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rng.h"

static size_t out_size(const xd_layer *L) { return (size_t)L->out_c * L->out_h * L->out_w; }

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

int xd_workspace_alloc(xd_workspace *w, const xd_model *m, int batch, xd_err *e) {
  memset(w, 0, sizeof *w);
  w->batch = batch;
  int n = m->nlayers;
  w->act = calloc((size_t)n + 1, sizeof *w->act);
  w->argmax = calloc((size_t)n, sizeof *w->argmax);
  w->bn_mean = calloc((size_t)n, sizeof *w->bn_mean);
  w->bn_invstd = calloc((size_t)n, sizeof *w->bn_invstd);
  if (!w->act || !w->argmax || !w->bn_mean || !w->bn_invstd) goto oom;
  size_t in_n = (size_t)m->in_c * m->in_h * m->in_w, maxn = in_n, scratch = 0;
  int maxc = 1, nthreads = omp_get_max_threads();
  if (!(w->act[0] = xd_alloc((size_t)batch * in_n * sizeof(float), "input batch", e))) goto fail;
  for (int i = 0; i < n; i++) {
    const xd_layer *L = &m->layers[i];
    size_t on = out_size(L);
    if (on > maxn) maxn = on;
    if (L->kind == XD_L_FLATTEN) {
      w->act[i + 1] = w->act[i]; /* same memory, NCHW order is already C,H,W */
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
    if (L->kind == XD_L_CONV) {
      xd_conv_dims d = conv_dims(L, batch);
      size_t s = conv2d_scratch_floats(&d, nthreads);
      if (s > scratch) scratch = s;
    }
  }
  w->scratch_n = scratch;
  if (!(w->scratch = xd_alloc((scratch ? scratch : 1) * sizeof(float), "convolution scratch", e))) goto fail;
  if (!(w->bn_stats = xd_alloc(2 * (size_t)maxc * sizeof(double), "batchnorm", e))) goto fail;
  for (int k = 0; k < 2; k++)
    if (!(w->dbuf[k] = xd_alloc((size_t)batch * maxn * sizeof(float), "gradient buffers", e))) goto fail;
  if (!(w->dlast = xd_alloc((size_t)batch * m->nout * sizeof(float), "loss gradient", e))) goto fail;
  return 0;
oom:
  xd_fail(e, "out of memory allocating the workspace");
fail:
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
  free(w->act);
  free(w->argmax);
  free(w->bn_mean);
  free(w->bn_invstd);
  xd_free(w->scratch);
  xd_free(w->bn_stats);
  xd_free(w->dbuf[0]);
  xd_free(w->dbuf[1]);
  xd_free(w->dlast);
  memset(w, 0, sizeof *w);
}

static uint64_t dropout_key(const xd_step_ctx *c, int layer) {
  return xd_key(c->seed, XD_STREAM_DROPOUT, c->step, (uint64_t)layer);
}

const float *xd_forward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c) {
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    const float *x = ws->act[i];
    float *y = ws->act[i + 1];
    const float *w = m->params + L->w_off, *b = m->params + L->b_off;
    size_t on = out_size(L);
    /* the last layer's activation is fused into the loss: its buffer keeps the logits */
    int last = i == m->nlayers - 1;
    switch (L->kind) {
      case XD_L_CONV: {
        xd_conv_dims d = conv_dims(L, B);
        conv2d_forward(&d, x, w, b, y, ws->scratch);
        break;
      }
      case XD_L_DENSE:
        dense_forward(B, L->in_c, L->out_c, x, w, b, y);
        break;
      case XD_L_MAXPOOL: {
        xd_pool_dims d = pool_dims(L, B);
        maxpool_forward(&d, x, y, ws->argmax[i]);
        break;
      }
      case XD_L_AVGPOOL: {
        xd_pool_dims d = pool_dims(L, B);
        avgpool_forward(&d, x, y);
        break;
      }
      case XD_L_GAP:
        globalavgpool_forward(B, L->in_c, L->in_h * L->in_w, x, y);
        break;
      case XD_L_BATCHNORM: {
        int HW = L->in_h * L->in_w;
        float *rm = m->buffers + L->rm_off, *rv = m->buffers + L->rv_off;
        if (c->training) {
          batchnorm_stats(B, L->in_c, HW, x, ws->bn_stats);
          double count = (double)B * HW;
          if (c->sync_bn && c->sync_bn->sum_doubles) {
            c->sync_bn->sum_doubles(c->sync_bn->ctx, ws->bn_stats, 2 * L->in_c);
            count = (double)c->global_batch * HW;
          }
          batchnorm_forward_train(B, L->in_c, HW, x, ws->bn_stats, count, w, b, L->p.bn.eps, L->p.bn.momentum, y,
                                  ws->bn_mean[i], ws->bn_invstd[i], rm, rv);
        } else {
          batchnorm_forward_eval(B, L->in_c, HW, x, w, b, rm, rv, L->p.bn.eps, y);
        }
        break;
      }
      case XD_L_DROPOUT:
        if (c->training && L->p.dropout.rate > 0)
          dropout_forward((int64_t)B * on, L->p.dropout.rate, dropout_key(c, i), (uint64_t)c->first_sample * on, x, y);
        else
          memcpy(y, x, (size_t)B * on * sizeof(float));
        break;
      case XD_L_FLATTEN:
        break;
      case XD_L_ACT:
        memcpy(y, x, (size_t)B * on * sizeof(float));
        break;
    }
    if ((L->kind == XD_L_CONV || L->kind == XD_L_DENSE || L->kind == XD_L_ACT) && !last && L->act != XD_ACT_LINEAR) {
      /* softmax normalises per sample over features; elementwise activations see any row split */
      act_forward(L->act, B, (int64_t)on, y);
    }
  }
  return ws->act[m->nlayers];
}

void xd_backward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c, int stop_at) {
  const float *dy = ws->dlast;
  int cur = 0; /* which dbuf the next dx goes to */
  for (int i = m->nlayers - 1; i >= 0; i--) {
    const xd_layer *L = &m->layers[i];
    size_t on = out_size(L);
    int last = i == m->nlayers - 1;
    float *gw = m->grads + L->w_off, *gb = m->grads + L->b_off;
    const float *w = m->params + L->w_off;
    const float *x = ws->act[i];
    if (i == stop_at) { /* gradient w.r.t. the layer's (activated) output: Grad-CAM's dA */
      ws->gradcam_dy = dy;
      return;
    }
    if ((L->kind == XD_L_CONV || L->kind == XD_L_DENSE || L->kind == XD_L_ACT) && !last && L->act != XD_ACT_LINEAR) {
      /* dy is always one of our own buffers here (the last layer never gets here) */
      act_backward(L->act, B, (int64_t)on, ws->act[i + 1], (float *)dy);
    }
    float *dx = i == 0 ? NULL : ws->dbuf[cur];
    switch (L->kind) {
      case XD_L_CONV: {
        xd_conv_dims d = conv_dims(L, B);
        conv2d_backward(&d, x, w, dy, dx, gw, gb, ws->scratch);
        break;
      }
      case XD_L_DENSE:
        dense_backward(B, L->in_c, L->out_c, x, w, dy, dx, gw, gb);
        break;
      case XD_L_MAXPOOL: {
        xd_pool_dims d = pool_dims(L, B);
        if (dx) maxpool_backward(&d, dy, ws->argmax[i], dx);
        break;
      }
      case XD_L_AVGPOOL: {
        xd_pool_dims d = pool_dims(L, B);
        if (dx) avgpool_backward(&d, dy, dx);
        break;
      }
      case XD_L_GAP:
        if (dx) globalavgpool_backward(B, L->in_c, L->in_h * L->in_w, dy, dx);
        break;
      case XD_L_BATCHNORM: {
        int HW = L->in_h * L->in_w;
        if (!c->training) { /* Grad-CAM through a frozen batchnorm: a per-channel scale */
          if (!dx) break;
          const float *rv = m->buffers + L->rv_off;
          for (int64_t s = 0; s < (int64_t)B * L->in_c; s++) {
            int ch = (int)(s % L->in_c);
            float k = w[ch] / sqrtf(rv[ch] + L->p.bn.eps);
            for (int j = 0; j < HW; j++) dx[s * HW + j] = dy[s * HW + j] * k;
          }
          break;
        }
        batchnorm_backward_stats(B, L->in_c, HW, x, dy, ws->bn_mean[i], ws->bn_invstd[i], ws->bn_stats, gw, gb);
        double count = (double)B * HW;
        if (c->sync_bn && c->sync_bn->sum_doubles) {
          c->sync_bn->sum_doubles(c->sync_bn->ctx, ws->bn_stats, 2 * L->in_c);
          count = (double)c->global_batch * HW;
        }
        if (dx) batchnorm_backward(B, L->in_c, HW, x, dy, ws->bn_mean[i], ws->bn_invstd[i], w, ws->bn_stats, count, dx);
        break;
      }
      case XD_L_DROPOUT:
        if (dx) {
          if (c->training && L->p.dropout.rate > 0)
            dropout_backward((int64_t)B * on, L->p.dropout.rate, dropout_key(c, i), (uint64_t)c->first_sample * on, dy, dx);
          else
            memcpy(dx, dy, (size_t)B * on * sizeof(float));
        }
        break;
      case XD_L_FLATTEN:
        dx = NULL; /* pass dy through unchanged: same memory layout */
        break;
      case XD_L_ACT:
        if (dx) memcpy(dx, dy, (size_t)B * on * sizeof(float));
        break;
    }
    if (dx) {
      dy = dx;
      cur ^= 1;
    }
  }
}

void xd_probs(const xd_model *m, int B, const float *logits, float *out) {
  if (out != logits) memcpy(out, logits, (size_t)B * m->nout * sizeof(float));
  act_forward(m->nout == 1 ? XD_ACT_SIGMOID : XD_ACT_SOFTMAX, B, m->nout, out);
}
