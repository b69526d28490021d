#include "loss.h"

#include <math.h>

double xd_loss_bce(int B, const float *z, const uint8_t *y, const float *cw, double scale, float *dz) {
  double total = 0;
  for (int i = 0; i < B; i++) {
    double zi = z[i], t = y[i] ? 1.0 : 0.0, w = cw ? cw[y[i]] : 1.0;
    /* log(1 + e^-|z|) + max(z, 0) - z t: no overflow for any z */
    double l = fmax(zi, 0.0) - zi * t + log1p(exp(-fabs(zi)));
    double p = zi >= 0 ? 1.0 / (1.0 + exp(-zi)) : exp(zi) / (1.0 + exp(zi));
    total += w * l;
    if (dz) dz[i] = (float)(w * (p - t) * scale);
  }
  return total * scale;
}

double xd_loss_ce(int B, int K, const float *z, const uint8_t *y, const float *cw, double scale, float *dz) {
  double total = 0;
  for (int i = 0; i < B; i++) {
    const float *zi = z + (int64_t)i * K;
    double mx = zi[0];
    for (int k = 1; k < K; k++) mx = fmax(mx, zi[k]);
    double s = 0;
    for (int k = 0; k < K; k++) s += exp(zi[k] - mx);
    double lse = mx + log(s), w = cw ? cw[y[i]] : 1.0;
    total += w * (lse - zi[y[i]]);
    if (dz)
      for (int k = 0; k < K; k++) dz[(int64_t)i * K + k] = (float)(w * (exp(zi[k] - lse) - (k == y[i])) * scale);
  }
  return total * scale;
}
