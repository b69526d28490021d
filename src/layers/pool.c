/* Pooling without padding: max (PyTorch's first-maximum tie rule, NaN wins), average, global average.
 * Parallel over (sample, channel) planes; each plane's backward is owned by one thread. */
#include "layers.h"

#include <string.h>

/* Candidate v replaces the running maximum m: larger, or the first NaN (PyTorch propagates NaN). */
static inline int takes_over(float v, float m) { return v > m || (v != v && m == m); }

/* The common 2x2 / stride 2 window, written branch-free so that it vectorises. */
static void maxpool2x2_plane(int W, int OH, int OW, const float *restrict xp, float *restrict yp,
                             int32_t *restrict ap) {
  for (int oy = 0; oy < OH; oy++) {
    const float *r0 = xp + (size_t)2 * oy * W, *r1 = r0 + W;
    const int32_t base = 2 * oy * W;
    for (int ox = 0; ox < OW; ox++) {
      float m = r0[2 * ox], v;
      int32_t best = base + 2 * ox, c;
      v = r0[2 * ox + 1], c = takes_over(v, m), m = c ? v : m, best = c ? base + 2 * ox + 1 : best;
      v = r1[2 * ox], c = takes_over(v, m), m = c ? v : m, best = c ? base + W + 2 * ox : best;
      v = r1[2 * ox + 1], c = takes_over(v, m), m = c ? v : m, best = c ? base + W + 2 * ox + 1 : best;
      yp[oy * OW + ox] = m;
      ap[oy * OW + ox] = best;
    }
  }
}

static void maxpool_plane(const xd_pool_dims *d, const float *restrict xp, float *restrict yp,
                          int32_t *restrict ap) {
  const int W = d->W, KH = d->KH, KW = d->KW, SH = d->SH, SW = d->SW, OH = d->OH, OW = d->OW;
  for (int oy = 0; oy < OH; oy++)
    for (int ox = 0; ox < OW; ox++) {
      int y0 = oy * SH, x0 = ox * SW;
      int best = y0 * W + x0;
      float m = xp[best];
      for (int ky = 0; ky < KH; ky++)
        for (int kx = 0; kx < KW; kx++) {
          int idx = (y0 + ky) * W + x0 + kx;
          float v = xp[idx];
          if (takes_over(v, m)) {
            m = v;
            best = idx;
          }
        }
      yp[oy * OW + ox] = m;
      ap[oy * OW + ox] = best;
    }
}

void maxpool_forward(const xd_pool_dims *d, const float *x, float *y, int32_t *argmax) {
  const int64_t planes = (int64_t)d->B * d->C;
  const int k2 = d->KH == 2 && d->KW == 2 && d->SH == 2 && d->SW == 2;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = x + pl * d->H * d->W;
    float *yp = y + pl * d->OH * d->OW;
    int32_t *ap = argmax + pl * d->OH * d->OW;
    if (k2)
      maxpool2x2_plane(d->W, d->OH, d->OW, xp, yp, ap);
    else
      maxpool_plane(d, xp, yp, ap);
  }
}

void maxpool_backward(const xd_pool_dims *d, const float *dy, const int32_t *argmax, float *dx) {
  const int64_t planes = (int64_t)d->B * d->C;
  const int n_out = d->OH * d->OW;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    float *dxp = dx + pl * d->H * d->W;
    const float *dyp = dy + pl * n_out;
    const int32_t *ap = argmax + pl * n_out;
    memset(dxp, 0, sizeof(float) * d->H * d->W);
    for (int i = 0; i < n_out; i++) dxp[ap[i]] += dyp[i];
  }
}

void avgpool_forward(const xd_pool_dims *d, const float *x, float *y) {
  const int64_t planes = (int64_t)d->B * d->C;
  const float inv = 1.0f / (float)(d->KH * d->KW);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = x + pl * d->H * d->W;
    float *yp = y + pl * d->OH * d->OW;
    for (int oy = 0; oy < d->OH; oy++)
      for (int ox = 0; ox < d->OW; ox++) {
        const float *w0 = xp + (oy * d->SH) * d->W + ox * d->SW;
        float s = 0.0f;
        for (int ky = 0; ky < d->KH; ky++)
          for (int kx = 0; kx < d->KW; kx++) s += w0[ky * d->W + kx];
        yp[oy * d->OW + ox] = s * inv;
      }
  }
}

void avgpool_backward(const xd_pool_dims *d, const float *dy, float *dx) {
  const int64_t planes = (int64_t)d->B * d->C;
  const float inv = 1.0f / (float)(d->KH * d->KW);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    float *dxp = dx + pl * d->H * d->W;
    const float *dyp = dy + pl * d->OH * d->OW;
    memset(dxp, 0, sizeof(float) * d->H * d->W);
    for (int oy = 0; oy < d->OH; oy++)
      for (int ox = 0; ox < d->OW; ox++) {
        float g = dyp[oy * d->OW + ox] * inv;
        float *w0 = dxp + (oy * d->SH) * d->W + ox * d->SW;
        for (int ky = 0; ky < d->KH; ky++)
          for (int kx = 0; kx < d->KW; kx++) w0[ky * d->W + kx] += g;
      }
  }
}

void globalavgpool_forward(int B, int C, int HW, const float *x, float *y) {
  const int64_t planes = (int64_t)B * C;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    const float *xp = x + pl * HW;
    double s = 0.0;
    for (int i = 0; i < HW; i++) s += xp[i];
    y[pl] = (float)(s / HW);
  }
}

void globalavgpool_backward(int B, int C, int HW, const float *dy, float *dx) {
  const int64_t planes = (int64_t)B * C;
  const float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; pl++) {
    float g = dy[pl] * inv;
    float *dxp = dx + pl * HW;
    for (int i = 0; i < HW; i++) dxp[i] = g;
  }
}
