/* Losses: finite-difference gradients (with class weights and a scale), stability at large logits,
 * and values against closed forms. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "loss.h"

static double bce(int B, const double *z, const uint8_t *y, const float *cw, double scale) {
  float zf[16];
  for (int i = 0; i < B; i++) zf[i] = (float)z[i];
  return xd_loss_bce(B, zf, y, cw, scale, NULL);
}

int main(void) {
  /* BCE: FD on logits, including a weighted class and a batch scale */
  {
    const int B = 5;
    double z[5] = {-2.3, -0.4, 0.0, 0.7, 3.1};
    uint8_t y[5] = {0, 1, 1, 0, 1};
    float cw[2] = {0.7f, 2.5f}, zf[5], dz[5];
    for (int i = 0; i < B; i++) zf[i] = (float)z[i];
    xd_loss_bce(B, zf, y, cw, 1.0 / 8, dz);
    for (int i = 0; i < B; i++) {
      double h = 1e-3, zp[5], zm[5];
      memcpy(zp, z, sizeof z);
      memcpy(zm, z, sizeof z);
      zp[i] += h;
      zm[i] -= h;
      double fd = (bce(B, zp, y, cw, 1.0 / 8) - bce(B, zm, y, cw, 1.0 / 8)) / (2 * h);
      CHECK_CLOSE(dz[i], fd, 1e-3, 1e-6);
    }
    /* closed form: mean of weighted -log sigmoid / -log(1 - sigmoid) */
    double want = 0;
    for (int i = 0; i < B; i++) {
      double p = 1 / (1 + exp(-(double)zf[i]));
      want += cw[y[i]] * -(y[i] ? log(p) : log(1 - p));
    }
    CHECK_CLOSE(xd_loss_bce(B, zf, y, cw, 1.0 / 8, NULL), want / 8, 1e-9, 0);
  }
  /* BCE stability: huge logits give finite losses, exact gradient limits */
  {
    float z[4] = {100.0f, -100.0f, 100.0f, -100.0f}, dz[4];
    uint8_t y[4] = {1, 0, 0, 1};
    double l = xd_loss_bce(4, z, y, NULL, 1.0, dz);
    CHECK(isfinite(l));
    CHECK_CLOSE(l, 200.0, 1e-9, 0); /* two confident mistakes of margin 100 */
    CHECK_CLOSE(dz[0], 0.0, 0, 1e-30);
    CHECK_CLOSE(dz[1], 0.0, 0, 1e-30);
    CHECK_CLOSE(dz[2], 1.0, 0, 1e-12);
    CHECK_CLOSE(dz[3], -1.0, 0, 1e-12);
  }
  /* CE with softmax: FD on every logit of a 3-class batch, weights and scale */
  {
    const int B = 3, K = 3;
    float z[9] = {0.2f, -1.0f, 0.5f, 2.0f, 0.1f, -0.3f, -0.7f, 0.0f, 1.2f}, dz[9];
    uint8_t y[3] = {2, 0, 1};
    float cw[3] = {1.0f, 0.5f, 2.0f};
    xd_loss_ce(B, K, z, y, cw, 1.0 / 3, dz);
    for (int i = 0; i < B * K; i++) {
      float zp[9], zm[9], h = 1e-2f;
      memcpy(zp, z, sizeof z);
      memcpy(zm, z, sizeof z);
      zp[i] += h;
      zm[i] -= h;
      double fd = (xd_loss_ce(B, K, zp, y, cw, 1.0 / 3, NULL) - xd_loss_ce(B, K, zm, y, cw, 1.0 / 3, NULL)) /
                  (double)(zp[i] - zm[i]);
      CHECK_CLOSE(dz[i], fd, 2e-3, 1e-6);
    }
    /* rows of the gradient sum to zero (softmax) */
    for (int b = 0; b < B; b++) CHECK_CLOSE(dz[b * K] + dz[b * K + 1] + dz[b * K + 2], 0.0, 0, 1e-7);
  }
  /* CE stability at large logits */
  {
    float z[4] = {1000.0f, -1000.0f, -1000.0f, 1000.0f}, dz[4];
    uint8_t y[2] = {0, 0};
    double l = xd_loss_ce(2, 2, z, y, NULL, 1.0, dz);
    CHECK(isfinite(l));
    CHECK_CLOSE(l, 2000.0, 1e-9, 0);
    CHECK(isfinite(dz[0]) && isfinite(dz[3]));
  }
  return check_done("loss");
}
