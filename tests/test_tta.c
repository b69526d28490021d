/* Test-time augmentation and ensembles (include/infer.h): the variants' geometry on crafted images
 * (identity, exact integer shifts, mirror symmetry kept by the centred zooms and stretches, constant
 * images stay constant), and the probabilities: TTA independent of the batch it is computed in, an
 * ensemble of one = xd_infer bitwise, an ensemble of two = the mean of both. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "infer.h"
#include "model.h"

static void test_geometry(void) {
  enum { H = 20, W = 100 };
  static uint8_t src[H * W], dst[H * W], sym[H * W];
  uint32_t s = 12345;
  for (int i = 0; i < H * W; i++) {
    s = s * 1664525u + 1013904223u;
    src[i] = (uint8_t)(s >> 24);
  }
  xd_tta_apply(0, 1, H, W, src, dst);
  CHECK(memcmp(src, dst, sizeof src) == 0);
  CHECK(strcmp(xd_tta_name(0), "original") == 0 && strcmp(xd_tta_name(XD_TTA_VARIANTS), "?") == 0);

  /* 3% of 100 columns is exactly 3 pixels: a pure shift, edge pixels repeated where nothing comes in */
  int right = -1, left = -1, down = -1;
  for (int v = 1; v < XD_TTA_VARIANTS; v++) {
    if (!strcmp(xd_tta_name(v), "shift right 3%")) right = v;
    if (!strcmp(xd_tta_name(v), "shift left 3%")) left = v;
    if (!strcmp(xd_tta_name(v), "shift down 3%")) down = v;
  }
  CHECK(right > 0 && left > 0 && down > 0);
  xd_tta_apply(right, 1, H, W, src, dst);
  int ok = 1;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) ok &= dst[y * W + x] == src[y * W + (x - 3 < 0 ? 0 : x - 3)];
  CHECK_MSG(ok, "shift right is not a 3-pixel shift");
  xd_tta_apply(left, 1, H, W, src, dst);
  ok = 1;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) ok &= dst[y * W + x] == src[y * W + (x + 3 > W - 1 ? W - 1 : x + 3)];
  CHECK_MSG(ok, "shift left is not a 3-pixel shift");
  /* 3% of 20 rows = 0.6 pixel: between rows, a blend of the row above and this one */
  xd_tta_apply(down, 1, H, W, src, dst);
  ok = 1;
  for (int y = 1; y < H; y++)
    for (int x = 0; x < W; x++) {
      int a = src[(y - 1) * W + x], b = src[y * W + x], d = dst[y * W + x];
      ok &= d >= (a < b ? a : b) && d <= (a > b ? a : b);
    }
  CHECK_MSG(ok, "shift down is not a blend of neighbouring rows");

  /* A left-right mirror-symmetric image stays symmetric under the centred zooms and stretches, and no
   * variant is a flip of an asymmetric one (its left edge column stays the source's left edge). */
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) sym[y * W + x] = src[y * W + (x < W / 2 ? x : W - 1 - x)];
  for (int v = 1; v < XD_TTA_VARIANTS; v++) {
    if (strstr(xd_tta_name(v), "shift")) continue;
    xd_tta_apply(v, 1, H, W, sym, dst);
    ok = 1;
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W / 2; x++) ok &= dst[y * W + x] == dst[y * W + W - 1 - x];
    CHECK_MSG(ok, "variant %s breaks mirror symmetry", xd_tta_name(v));
    CHECK_MSG(memcmp(dst, sym, sizeof sym) != 0, "variant %s does nothing", xd_tta_name(v));
  }
  /* constant stays constant (weights sum to 1 exactly), two channels are resampled alike */
  static uint8_t two[2 * H * W], two_out[2 * H * W];
  memset(two, 77, H * W);
  memcpy(two + H * W, src, H * W);
  for (int v = 0; v < XD_TTA_VARIANTS; v++) {
    xd_tta_apply(v, 2, H, W, two, two_out);
    ok = 1;
    for (int i = 0; i < H * W; i++) ok &= two_out[i] == 77;
    CHECK_MSG(ok, "variant %s changes a constant image", xd_tta_name(v));
    xd_tta_apply(v, 1, H, W, src, dst);
    CHECK_MSG(memcmp(two_out + H * W, dst, H * W) == 0, "variant %s: channel 2 differs", xd_tta_name(v));
  }
}

static void test_probabilities(void) {
  const char *text = "input 1x12x12\nconv 3 3x3 relu\nmaxpool 2x2\nflatten\ndense 1 sigmoid\n";
  xd_model m[2];
  xd_workspace w1[2], w5[2];
  xd_err e = {{0}};
  for (int j = 0; j < 2; j++) {
    CHECK_MSG(xd_model_build(&m[j], text, "t", &e) == 0, "%s", e.msg);
    xd_model_init(&m[j], XD_INIT_TORCH, 11 + (uint64_t)j);
    CHECK(xd_workspace_alloc(&w1[j], &m[j], 1, &e) == 0 && xd_workspace_alloc(&w5[j], &m[j], 5, &e) == 0);
  }
  enum { N = 7, PX = 144 };
  static uint8_t img[N * PX];
  for (int i = 0; i < N * PX; i++) img[i] = (uint8_t)((i * 37 + (i / PX) * 91) % 251);
  float a[N], b[N], c[N], d[N], one[N];
  /* TTA: batch 5 (chunks of 5 and 2) vs one image at a time, bitwise */
  CHECK(xd_infer_tta(&m[0], &w5[0], N, img, a, &e) == 0);
  for (int i = 0; i < N; i++) CHECK(xd_infer_tta(&m[0], &w1[0], 1, img + i * PX, &b[i], &e) == 0);
  CHECK(memcmp(a, b, sizeof a) == 0);
  /* TTA is the mean of the variants' probabilities, and differs from the plain one */
  xd_infer(&m[0], &w5[0], N, img, NULL, one, NULL);
  static uint8_t var[PX];
  double acc = 0;
  for (int v = 0; v < XD_TTA_VARIANTS; v++) {
    float p;
    xd_tta_apply(v, 1, 12, 12, img + 3 * PX, var);
    xd_infer(&m[0], &w1[0], 1, var, NULL, &p, NULL);
    acc += p;
  }
  CHECK(a[3] == (float)(acc / XD_TTA_VARIANTS));
  CHECK(a[3] != one[3]);
  /* ensemble of one without TTA: xd_infer bitwise; with TTA: xd_infer_tta bitwise */
  CHECK(xd_infer_ensemble(1, m, w5, N, img, 0, c, &e) == 0 && memcmp(c, one, sizeof c) == 0);
  CHECK(xd_infer_ensemble(1, m, w5, N, img, 1, c, &e) == 0 && memcmp(c, a, sizeof c) == 0);
  /* ensemble of two: the mean of both, the same in any batch */
  xd_infer(&m[1], &w5[1], N, img, NULL, d, NULL);
  CHECK(xd_infer_ensemble(2, m, w5, N, img, 0, c, &e) == 0);
  for (int i = 0; i < N; i++) CHECK(c[i] == (float)(((double)one[i] + d[i]) / 2));
  CHECK(xd_infer_ensemble(2, m, w5, N, img, 1, c, &e) == 0);
  for (int i = 0; i < N; i++) CHECK(xd_infer_ensemble(2, m, w1, 1, img + i * PX, 1, &b[i], &e) == 0);
  CHECK(memcmp(c, b, sizeof c) == 0);
  for (int j = 0; j < 2; j++) {
    xd_workspace_free(&w1[j], &m[j]);
    xd_workspace_free(&w5[j], &m[j]);
    xd_model_free(&m[j]);
  }
}

int main(void) {
  test_geometry();
  test_probabilities();
  return check_done("test_tta");
}
