/* Batch normalisation in phases (stats -> [all-reduce] -> normalise; grad stats -> [all-reduce] -> dx) so
 * that sync-bn only has to sum small per-channel double vectors between them. Parallel over channels;
 * each channel's sums run in a fixed order over (sample, pixel). */
#include "layers.h"

#include <math.h>

void batchnorm_stats(int B, int C, int HW, const float *x, double *stats) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    double s = 0.0, s2 = 0.0;
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        double v = p[i];
        s += v;
        s2 += v * v;
      }
    }
    stats[2 * c] = s;
    stats[2 * c + 1] = s2;
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
    double sd = 0.0, sdx = 0.0;
    for (int n = 0; n < B; n++) {
      const float *p = x + ((size_t)n * C + c) * HW;
      const float *g = dy + ((size_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        sd += g[i];
        sdx += (double)g[i] * ((p[i] - m) * inv);
      }
    }
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
