/* conv2d: im2col + SGEMM per sample, samples spread over threads.
 *
 * Scratch layout: [B][F * C*KH*KW] per-sample weight gradients and [B][F] per-sample bias gradients
 * (summed over samples in a fixed order, so dw and db never depend on the thread count), then
 * [nthreads][C*KH*KW * OH*OW] column buffers. The caller
 * sizes it with conv2d_scratch_floats(d, omp_get_max_threads()).
 * The backward pass rebuilds the columns instead of keeping them from the forward pass, for the weight
 * gradient in the transposed (pixel-major) layout, which the GEMM then reads in place as its B. */
#include "isa.h"
#include "layers.h"

#include <omp.h>
#include <string.h>

static size_t col_floats(const xd_conv_dims *d) {
  return (size_t)d->C * d->KH * d->KW * (size_t)d->OH * d->OW;
}

/* 1x1, stride 1, no padding: the input plane already is the column matrix. */
static size_t dwpart_floats(const xd_conv_dims *d) {
  return (size_t)d->B * d->F * (d->C * d->KH * d->KW + 1); /* + the per-sample bias gradients */
}

/* Sum of one gradient plane in SUM_LANES interleaved partial sums (so it vectorises at any width with the
 * same result), combined in a fixed order, then the tail. */
#define SUM_LANES 16
static float plane_sum(const float *restrict g, int n) {
  float acc[SUM_LANES] = {0};
  int nv = n - n % SUM_LANES;
  for (int p = 0; p < nv; p += SUM_LANES)
    for (int j = 0; j < SUM_LANES; j++) acc[j] += g[p + j];
  float s = 0.0f;
  for (int j = 0; j < SUM_LANES; j++) s += acc[j];
  for (int p = nv; p < n; p++) s += g[p];
  return s;
}

static int is_pointwise(const xd_conv_dims *d) {
  return d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad_top == 0 && d->pad_left == 0 && d->OH == d->H &&
         d->OW == d->W;
}

/* One input channel, stride 1, no padding: the direct kernels of the ISA table replace im2col + GEMM. */
static int is_direct_c1(const xd_conv_dims *d) {
  return d->C == 1 && d->stride == 1 && d->pad_top == 0 && d->pad_left == 0 && d->KH * d->KW <= 49 &&
         d->OH == d->H - d->KH + 1 && d->OW == d->W - d->KW + 1;
}

size_t conv2d_scratch_floats(const xd_conv_dims *d, int nthreads) {
  if (nthreads < 1) nthreads = 1;
  return dwpart_floats(d) + (size_t)nthreads * col_floats(d);
}

/* Range of ox whose input column ox*s - pl + kx lies inside [0, W): [*lo, *hi). */
static void valid_range(int n_out, int stride, int pad, int k, int n_in, int *lo, int *hi) {
  int a = pad - k; /* need ox*stride >= a */
  int l = a <= 0 ? 0 : (a + stride - 1) / stride;
  int b = n_in + pad - k; /* need ox*stride < b */
  int h = b <= 0 ? 0 : (b + stride - 1) / stride;
  if (h > n_out) h = n_out;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* col[(c*KH+ky)*KW+kx][oy*OW+ox] = x[c][oy*s-pt+ky][ox*s-pl+kx], zero outside. */
static void im2col(const xd_conv_dims *d, const float *restrict x, float *restrict col) {
  const int s = d->stride, OW = d->OW, OH = d->OH;
  for (int c = 0; c < d->C; c++)
    for (int ky = 0; ky < d->KH; ky++)
      for (int kx = 0; kx < d->KW; kx++) {
        float *dst = col + (size_t)((c * d->KH + ky) * d->KW + kx) * OH * OW;
        int lo, hi;
        valid_range(OW, s, d->pad_left, kx, d->W, &lo, &hi);
        for (int oy = 0; oy < OH; oy++) {
          float *row = dst + (size_t)oy * OW;
          int iy = oy * s - d->pad_top + ky;
          if (iy < 0 || iy >= d->H) {
            memset(row, 0, sizeof(float) * OW);
            continue;
          }
          const float *src = x + ((size_t)c * d->H + iy) * d->W - d->pad_left + kx;
          for (int ox = 0; ox < lo; ox++) row[ox] = 0.0f;
          if (s == 1)
            memcpy(row + lo, src + lo, sizeof(float) * (hi - lo));
          else
            for (int ox = lo; ox < hi; ox++) row[ox] = src[ox * s];
          for (int ox = hi; ox < OW; ox++) row[ox] = 0.0f;
        }
      }
}

/* Inverse of im2col: dx = sum of the column entries that read each input pixel (dx overwritten). */
static void col2im(const xd_conv_dims *d, const float *restrict col, float *restrict dx) {
  const int s = d->stride, OW = d->OW, OH = d->OH;
  memset(dx, 0, sizeof(float) * (size_t)d->C * d->H * d->W);
  for (int c = 0; c < d->C; c++)
    for (int ky = 0; ky < d->KH; ky++)
      for (int kx = 0; kx < d->KW; kx++) {
        const float *srcc = col + (size_t)((c * d->KH + ky) * d->KW + kx) * OH * OW;
        int lo, hi;
        valid_range(OW, s, d->pad_left, kx, d->W, &lo, &hi);
        for (int oy = 0; oy < OH; oy++) {
          int iy = oy * s - d->pad_top + ky;
          if (iy < 0 || iy >= d->H) continue;
          const float *row = srcc + (size_t)oy * OW;
          float *dst = dx + ((size_t)c * d->H + iy) * d->W - d->pad_left + kx;
          if (s == 1)
            for (int ox = lo; ox < hi; ox++) dst[ox] += row[ox];
          else
            for (int ox = lo; ox < hi; ox++) dst[ox * s] += row[ox];
        }
      }
}

/* The transpose of im2col: rows[p - p0][(c*KH+ky)*KW+kx] = x[c][oy*s-pt+ky][ox*s-pl+kx] for the pixels
 * p = oy*OW+ox in [p0, p1), zero outside. KH and KW are parameters so the 3x3 case unrolls; it copies 4
 * floats per (c,ky) where the input row allows it: the 4th lands on the next entry of rows, which is
 * written after it (the last pixel, whose 4th would leave the buffer, takes the exact path). */
static inline void im2row_body(const xd_conv_dims *d, int KH, int KW, const float *restrict x, int p0, int p1,
                               float *restrict rows) {
  const int s = d->stride, OW = d->OW, W = d->W, H = d->H, C = d->C, K = C * KH * KW;
  const size_t plane = (size_t)H * W;
  int oy = p0 / OW, ox = p0 % OW;
  for (int p = p0; p < p1; p++, rows += K) {
    const int ix0 = ox * s - d->pad_left, iy0 = oy * s - d->pad_top;
    if (++ox == OW) ox = 0, oy++;
    float *o = rows;
    if (KW == 3 && ix0 >= 0 && ix0 + 4 <= W && iy0 >= 0 && iy0 + KH <= H && p + 1 < p1) {
      const float *src = x + (size_t)iy0 * W + ix0;
      for (int c = 0; c < C; c++, src += plane)
        for (int ky = 0; ky < KH; ky++, o += KW) memcpy(o, src + (size_t)ky * W, 4 * sizeof(float));
      continue;
    }
    const int inside = ix0 >= 0 && ix0 + KW <= W;
    for (int c = 0; c < C; c++)
      for (int ky = 0; ky < KH; ky++, o += KW) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= H) {
          for (int kx = 0; kx < KW; kx++) o[kx] = 0.0f;
          continue;
        }
        const float *src = x + c * plane + (size_t)iy * W + ix0;
        if (inside)
          for (int kx = 0; kx < KW; kx++) o[kx] = src[kx];
        else
          for (int kx = 0; kx < KW; kx++) o[kx] = ix0 + kx >= 0 && ix0 + kx < W ? src[kx] : 0.0f;
      }
  }
}

static __attribute__((noinline)) void im2row(const xd_conv_dims *d, const float *x, int p0, int p1, float *rows) {
  if (d->KH == 3 && d->KW == 3)
    im2row_body(d, 3, 3, x, p0, p1, rows);
  else
    im2row_body(d, d->KH, d->KW, x, p0, p1, rows);
}

/* Pixels per weight-gradient chunk: a multiple of the GEMM's K block (KC = 256 in gemm_impl.h), so the
 * chunked calls (beta 1 after the first) make the same sums as one call, and the chunk's rows stay in L2
 * between im2row and the GEMM. */
#define WG_CHUNK_PIX 512

/* dW of one sample (overwritten): dY times the pixel-major columns, which the GEMM reads in place. */
static void conv_dw_sample(const xd_kernels *kt, const xd_conv_dims *d, const float *xn, const float *dyn,
                           float *buf, float *dwn) {
  const int K = d->C * d->KH * d->KW, P = d->OH * d->OW;
  for (int p0 = 0; p0 < P; p0 += WG_CHUNK_PIX) {
    const int p1 = P - p0 < WG_CHUNK_PIX ? P : p0 + WG_CHUNK_PIX;
    im2row(d, xn, p0, p1, buf);
    kt->sgemm(0, 0, d->F, K, p1 - p0, dyn + p0, P, buf, K, p0 ? 1.0f : 0.0f, dwn, K);
  }
}

void conv2d_forward(const xd_conv_dims *d, const float *x, const float *w, const float *b, float *y, float *scratch) {
  const int K = d->C * d->KH * d->KW, P = d->OH * d->OW;
  const size_t ncol = col_floats(d);
  const int pw = is_pointwise(d), c1 = is_direct_c1(d);
  const xd_kernels *kt = xd_kernels_active();
#pragma omp parallel for schedule(static)
  for (int n = 0; n < d->B; n++) {
    const float *xn = x + (size_t)n * d->C * d->H * d->W;
    float *yn = y + (size_t)n * d->F * P;
    if (c1) {
      kt->conv_c1_forward(d->H, d->W, d->F, d->KH, d->KW, d->OH, d->OW, xn, w, b, yn);
      continue;
    }
    const float *col = xn;
    if (!pw) {
      float *buf = scratch + dwpart_floats(d) + (size_t)omp_get_thread_num() * ncol;
      im2col(d, xn, buf);
      col = buf;
    }
    for (int f = 0; f < d->F; f++) {
      float bf = b ? b[f] : 0.0f;
      float *yf = yn + (size_t)f * P;
      for (int p = 0; p < P; p++) yf[p] = bf;
    }
    kt->sgemm(0, 0, d->F, P, K, w, K, col, P, 1.0f, yn, P);
  }
}

void conv2d_backward(const xd_conv_dims *d, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db, float *scratch) {
  const int K = d->C * d->KH * d->KW, P = d->OH * d->OW, F = d->F;
  const size_t ncol = col_floats(d);
  const int pw = is_pointwise(d), c1 = is_direct_c1(d);
  const xd_kernels *kt = xd_kernels_active();
  float *dwpart = scratch, *dbpart = scratch + (size_t)d->B * F * K;
#pragma omp parallel
  {
    float *buf = scratch + dwpart_floats(d) + (size_t)omp_get_thread_num() * ncol;
#pragma omp for schedule(static)
    for (int n = 0; n < d->B; n++) {
      const float *xn = x + (size_t)n * d->C * d->H * d->W;
      const float *dyn = dy + (size_t)n * F * P;
      if (c1) {
        kt->conv_c1_wgrad(d->H, d->W, F, d->KH, d->KW, d->OH, d->OW, xn, dyn, dwpart + (size_t)n * F * K);
      } else {
        if (pw) {
          kt->sgemm(0, 1, F, K, P, dyn, P, xn, P, 0.0f, dwpart + (size_t)n * F * K, K);
        } else { /* B = the pixel-major columns, read in place: nothing to transpose */
          conv_dw_sample(kt, d, xn, dyn, buf, dwpart + (size_t)n * F * K);
        }
      }
      if (db)
        for (int f = 0; f < F; f++) dbpart[(size_t)n * F + f] = plane_sum(dyn + (size_t)f * P, P);
      if (dx) {
        float *dxn = dx + (size_t)n * d->C * d->H * d->W;
        if (pw) {
          kt->sgemm(1, 0, K, P, F, w, K, dyn, P, 0.0f, dxn, P);
        } else {
          kt->sgemm(1, 0, K, P, F, w, K, dyn, P, 0.0f, buf, P);
          col2im(d, buf, dxn);
        }
      }
    }
    /* Fixed-order sums over samples: each output element belongs to exactly one thread. */
    const size_t FK = (size_t)F * K;
#pragma omp for schedule(static)
    for (size_t i = 0; i < FK; i++) {
      float s = 0.0f;
      for (int n = 0; n < d->B; n++) s += dwpart[(size_t)n * FK + i];
      dw[i] = s;
    }
    if (db) {
#pragma omp for schedule(static)
      for (int f = 0; f < F; f++) {
        double s = 0.0;
        for (int n = 0; n < d->B; n++) s += dbpart[(size_t)n * F + f];
        db[f] = (float)s;
      }
    }
  }
}

/* ---- plain reference versions (double accumulation) ---- */

static int in_x(const xd_conv_dims *d, int oy, int ox, int ky, int kx, int *iy, int *ix) {
  *iy = oy * d->stride - d->pad_top + ky;
  *ix = ox * d->stride - d->pad_left + kx;
  return *iy >= 0 && *iy < d->H && *ix >= 0 && *ix < d->W;
}

void conv2d_forward_ref(const xd_conv_dims *d, const float *x, const float *w, const float *b, float *y) {
  for (int n = 0; n < d->B; n++)
    for (int f = 0; f < d->F; f++)
      for (int oy = 0; oy < d->OH; oy++)
        for (int ox = 0; ox < d->OW; ox++) {
          double s = b ? b[f] : 0.0;
          for (int c = 0; c < d->C; c++)
            for (int ky = 0; ky < d->KH; ky++)
              for (int kx = 0; kx < d->KW; kx++) {
                int iy, ix;
                if (!in_x(d, oy, ox, ky, kx, &iy, &ix)) continue;
                s += (double)x[(((size_t)n * d->C + c) * d->H + iy) * d->W + ix] *
                     w[(((size_t)f * d->C + c) * d->KH + ky) * d->KW + kx];
              }
          y[(((size_t)n * d->F + f) * d->OH + oy) * d->OW + ox] = (float)s;
        }
}

void conv2d_backward_ref(const xd_conv_dims *d, const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db) {
  size_t nx = (size_t)d->B * d->C * d->H * d->W, nw = (size_t)d->F * d->C * d->KH * d->KW;
  if (dx) memset(dx, 0, nx * sizeof(float));
  for (size_t i = 0; i < nw; i++) {
    int kx = (int)(i % d->KW), ky = (int)(i / d->KW % d->KH), c = (int)(i / d->KW / d->KH % d->C),
        f = (int)(i / d->KW / d->KH / d->C);
    double s = 0.0;
    for (int n = 0; n < d->B; n++)
      for (int oy = 0; oy < d->OH; oy++)
        for (int ox = 0; ox < d->OW; ox++) {
          int iy, ix;
          if (!in_x(d, oy, ox, ky, kx, &iy, &ix)) continue;
          s += (double)dy[(((size_t)n * d->F + f) * d->OH + oy) * d->OW + ox] *
               x[(((size_t)n * d->C + c) * d->H + iy) * d->W + ix];
        }
    dw[i] = (float)s;
  }
  if (db)
    for (int f = 0; f < d->F; f++) {
      double s = 0.0;
      for (int n = 0; n < d->B; n++)
        for (int p = 0; p < d->OH * d->OW; p++) s += dy[((size_t)n * d->F + f) * d->OH * d->OW + p];
      db[f] = (float)s;
    }
  if (!dx) return;
  for (int n = 0; n < d->B; n++)
    for (int c = 0; c < d->C; c++)
      for (int iy = 0; iy < d->H; iy++)
        for (int ix = 0; ix < d->W; ix++) {
          double s = 0.0;
          for (int f = 0; f < d->F; f++)
            for (int ky = 0; ky < d->KH; ky++)
              for (int kx = 0; kx < d->KW; kx++) {
                int ty = iy + d->pad_top - ky, tx = ix + d->pad_left - kx;
                if (ty < 0 || tx < 0 || ty % d->stride || tx % d->stride) continue;
                int oy = ty / d->stride, ox = tx / d->stride;
                if (oy >= d->OH || ox >= d->OW) continue;
                s += (double)dy[(((size_t)n * d->F + f) * d->OH + oy) * d->OW + ox] *
                     w[(((size_t)f * d->C + c) * d->KH + ky) * d->KW + kx];
              }
          dx[(((size_t)n * d->C + c) * d->H + iy) * d->W + ix] = (float)s;
        }
}
