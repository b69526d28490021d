/* Element-wise layers: the residual sum, and per-image standardisation. */
#include <math.h>

#include "layers.h"

void add_forward(int64_t n, const float *a, const float *b, float *y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

/* Each sample is one thread's work (sums in double, in index order): bitwise identical for any thread
 * count. sigma = sqrt(mean((x - mu)^2)) (the population deviation), clamped below at eps. */
void standardize_forward(int B, int64_t n, float eps, const float *x, float *y, float *invstd) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    const float *xb = x + (size_t)b * n;
    float *yb = y + (size_t)b * n;
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) s += xb[i];
    double mu = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
      double d = xb[i] - mu;
      ss += d * d;
    }
    double sd = sqrt(ss / (double)n);
    /* a clamped deviation is a constant: the backward pass needs to know (negative = clamped) */
    float k = (float)(1.0 / (sd > eps ? sd : eps));
    invstd[b] = sd > eps ? k : -k;
    const float m = (float)mu;
    for (int64_t i = 0; i < n; i++) yb[i] = (xb[i] - m) * k;
  }
}

/* dx = k (dy - mean(dy) - y mean(dy y)) with y the output; without the last term when sigma was clamped. */
void standardize_backward(int B, int64_t n, const float *y, const float *invstd, const float *dy, float *dx) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    const float *yb = y + (size_t)b * n, *gb = dy + (size_t)b * n;
    float *xb = dx + (size_t)b * n;
    double s = 0, sy = 0;
    for (int64_t i = 0; i < n; i++) {
      s += gb[i];
      sy += (double)gb[i] * yb[i];
    }
    const int clamped = invstd[b] < 0;
    const float k = clamped ? -invstd[b] : invstd[b];
    const float mg = (float)(s / (double)n), mgy = clamped ? 0.0f : (float)(sy / (double)n);
    for (int64_t i = 0; i < n; i++) xb[i] = k * (gb[i] - mg - yb[i] * mgy);
  }
}
