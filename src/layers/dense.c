/* Dense layer y = x w^T + b with PyTorch's w [OUT, IN]. Threads take fixed-size column blocks of each
 * product; xd_sgemm sums every element over K in a fixed order, so the split does not change results. */
#include "layers.h"

#include <string.h>

#define DW_COLS 1536 /* dw column block: 16 x DENSE_BLOCK */
#define DENSE_BLOCK 96 /* a multiple of every micro-kernel width (12, 24, 48) */

#define DENSE_ROWS 8 /* forward: batch rows per job (a multiple of every micro-kernel height): a small OUT
                        * still gives every thread work; the split is fixed, so results do not depend on it */
#define FWD_COLS 48   /* forward: output columns per job (a multiple of every micro-kernel width) */

void dense_forward(int B, int IN, int OUT, const float *x, const float *w, const float *b, float *y) {
  const int nblk = (OUT + FWD_COLS - 1) / FWD_COLS, nrow = (B + DENSE_ROWS - 1) / DENSE_ROWS;
#pragma omp parallel for schedule(static)
  for (int job = 0; job < nblk * nrow; job++) {
    int jb = job % nblk, n0 = job / nblk * DENSE_ROWS, nn = B - n0 < DENSE_ROWS ? B - n0 : DENSE_ROWS;
    int j0 = jb * FWD_COLS, nj = OUT - j0 < FWD_COLS ? OUT - j0 : FWD_COLS;
    for (int n = n0; n < n0 + nn; n++)
      for (int j = 0; j < nj; j++) y[(size_t)n * OUT + j0 + j] = b ? b[j0 + j] : 0.0f;
    /* y[n0:, j0:j0+nj] += x[n0:, :] * w[j0:j0+nj, :]^T */
    xd_sgemm(0, 1, nn, nj, IN, x + (size_t)n0 * IN, IN, w + (size_t)j0 * IN, IN, 1.0f, y + (size_t)n0 * OUT + j0, OUT);
  }
}

void dense_backward(int B, int IN, int OUT, const float *x, const float *w, const float *dy, float *dx, float *dw,
                    float *db) {
  /* dw is tiled over rows and over DW_COLS-wide column blocks: a dense layer with few outputs (64) and
   * many inputs (28800) would otherwise be one serial job as large as all of dx */
  const int nout = (OUT + DENSE_BLOCK - 1) / DENSE_BLOCK, ndwc = (IN + DW_COLS - 1) / DW_COLS;
  const int ndw = nout * ndwc;
  const int nin = (IN + DENSE_BLOCK - 1) / DENSE_BLOCK;
  const int njobs = ndw + (dx ? nin : 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int job = 0; job < njobs; job++) {
    if (job < ndw) { /* dw[o0:o0+no, c0:c0+nc] = dy[:, o0:]^T x[:, c0:], summed over the batch in order */
      int o0 = job / ndwc * DENSE_BLOCK, no = OUT - o0 < DENSE_BLOCK ? OUT - o0 : DENSE_BLOCK;
      int c0 = job % ndwc * DW_COLS, nc = IN - c0 < DW_COLS ? IN - c0 : DW_COLS;
      xd_sgemm(1, 0, no, nc, B, dy + o0, OUT, x + c0, IN, 0.0f, dw + (size_t)o0 * IN + c0, IN);
      if (db && c0 == 0)
        for (int o = o0; o < o0 + no; o++) {
          float s = 0.0f;
          for (int n = 0; n < B; n++) s += dy[(size_t)n * OUT + o];
          db[o] = s;
        }
    } else { /* dx[:, i0:i0+ni] = dy w[:, i0:] */
      int i0 = (job - ndw) * DENSE_BLOCK, ni = IN - i0 < DENSE_BLOCK ? IN - i0 : DENSE_BLOCK;
      xd_sgemm(0, 0, B, ni, OUT, dy, OUT, w + i0, IN, 0.0f, dx + i0, IN);
    }
  }
}

void dense_forward_ref(int B, int IN, int OUT, const float *x, const float *w, const float *b, float *y) {
  for (int n = 0; n < B; n++)
    for (int o = 0; o < OUT; o++) {
      double s = b ? b[o] : 0.0;
      for (int i = 0; i < IN; i++) s += (double)x[(size_t)n * IN + i] * w[(size_t)o * IN + i];
      y[(size_t)n * OUT + o] = (float)s;
    }
}

void dense_backward_ref(int B, int IN, int OUT, const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *db) {
  for (int o = 0; o < OUT; o++) {
    for (int i = 0; i < IN; i++) {
      double s = 0.0;
      for (int n = 0; n < B; n++) s += (double)dy[(size_t)n * OUT + o] * x[(size_t)n * IN + i];
      dw[(size_t)o * IN + i] = (float)s;
    }
    if (db) {
      double s = 0.0;
      for (int n = 0; n < B; n++) s += dy[(size_t)n * OUT + o];
      db[o] = (float)s;
    }
  }
  if (dx)
    for (int n = 0; n < B; n++)
      for (int i = 0; i < IN; i++) {
        double s = 0.0;
        for (int o = 0; o < OUT; o++) s += (double)dy[(size_t)n * OUT + o] * w[(size_t)o * IN + i];
        dx[(size_t)n * IN + i] = (float)s;
      }
}
