/* Batch normalisation in phases (stats -> [all-reduce] -> normalise; grad stats -> [all-reduce] -> dx) so
 * that sync-bn only has to sum small per-channel double vectors between them. Parallel over channels;
 * each channel's sums run in a fixed order over (sample, pixel): XD_BN_LANES interleaved double
 * accumulators per plane (lane = pixel index mod XD_BN_LANES), combined in lane order. The lanes are
 * independent dependency chains, so the loop vectorises instead of waiting on one add at a time. */
#include "layers.h"

#include <math.h>

#define XD_BN_LANES 8

void batchnorm_stats(int B, int C, int HW, const float *x, double *stats) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    double s[XD_BN_LANES] = {0}, s2[XD_BN_LANES] = {0};
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      int i = 0;
      for (; i + XD_BN_LANES <= HW; i += XD_BN_LANES)
        for (int l = 0; l < XD_BN_LANES; l++) {
          double v = p[i + l];
          s[l] += v;
          s2[l] += v * v;
        }
      for (int l = 0; i < HW; i++, l++) {
        double v = p[i];
        s[l] += v;
        s2[l] += v * v;
      }
    }
    double a = 0.0, b = 0.0;
    for (int l = 0; l < XD_BN_LANES; l++) a += s[l], b += s2[l];
    stats[2 * c] = a;
    stats[2 * c + 1] = b;
  }
}

void batchnorm_forward_train(int B, int C, int HW, const float *x, const double *stats, double count,
                             const float *gamma, const float *beta, float eps, float momentum, float *y,
                             float *save_mean, float *save_invstd, float *running_mean, float *running_var) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    double mean = stats[2 * c] / count;
    double var = stats[2 * c + 1] / count - mean * mean;
    if (var < 0.0) var = 0.0;
    float m = (float)mean, inv = (float)(1.0 / sqrt(var + (double)eps));
    save_mean[c] = m;
    save_invstd[c] = inv;
    double unbiased = count > 1.0 ? var * count / (count - 1.0) : var;
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * m;
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
    float g = gamma ? gamma[c] : 1.0f, bt = beta ? beta[c] : 0.0f;
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      float *q = y + ((size_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) q[i] = (p[i] - m) * inv * g + bt;
    }
  }
}

void batchnorm_forward_eval(int B, int C, int HW, const float *x, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, float eps, float *y) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    float m = running_mean[c], inv = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
    float g = gamma ? gamma[c] : 1.0f, bt = beta ? beta[c] : 0.0f;
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      float *q = y + ((size_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) q[i] = (p[i] - m) * inv * g + bt;
    }
  }
}

void batchnorm_backward_stats(int B, int C, int HW, const float *x, const float *dy, const float *save_mean,
                              const float *save_invstd, double *stats, float *dgamma, float *dbeta) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    float m = save_mean[c], inv = save_invstd[c];
    double a[XD_BN_LANES] = {0}, b[XD_BN_LANES] = {0};
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      const float *g = dy + ((size_t)n * C + c) * HW;
      int i = 0;
      for (; i + XD_BN_LANES <= HW; i += XD_BN_LANES)
        for (int l = 0; l < XD_BN_LANES; l++) {
          a[l] += g[i + l];
          b[l] += (double)g[i + l] * ((p[i + l] - m) * inv);
        }
      for (int l = 0; i < HW; i++, l++) {
        a[l] += g[i];
        b[l] += (double)g[i] * ((p[i] - m) * inv);
      }
    }
    double sd = 0.0, sdx = 0.0;
    for (int l = 0; l < XD_BN_LANES; l++) sd += a[l], sdx += b[l];
    stats[2 * c] = sd;
    stats[2 * c + 1] = sdx;
    if (dgamma) dgamma[c] = (float)sdx;
    if (dbeta) dbeta[c] = (float)sd;
  }
}

void batchnorm_backward(int B, int C, int HW, const float *x, const float *dy, const float *save_mean,
                        const float *save_invstd, const float *gamma, const double *stats, double count, float *dx) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    float m = save_mean[c], inv = save_invstd[c];
    float k = (gamma ? gamma[c] : 1.0f) * inv;
    float mdy = (float)(stats[2 * c] / count), mdyx = (float)(stats[2 * c + 1] / count);
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      const float *g = dy + ((size_t)n * C + c) * HW;
      float *q = dx + ((size_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) q[i] = k * (g[i] - mdy - (p[i] - m) * inv * mdyx);
    }
  }
}
