/* Training-time augmentation. Chest films are not mirror-symmetric (heart on the left), so there is no
 * horizontal flip: small rotations, shifts and zooms model patient positioning, and contrast/brightness
 * jitter models exposure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "train.h"

int xd_augment_parse(const char *spec, xd_augment *a) {
  memset(a, 0, sizeof *a);
  if (!strcmp(spec, "none")) return 0;
  a->on = 1;
  if (!strcmp(spec, "default")) {
    a->rot_deg = 7;
    a->shift = 0.06f;
    a->zoom = 0.08f;
    a->contrast = 0.1f;
    a->brightness = 0.06f;
    return 0;
  }
  char buf[256];
  if (strlen(spec) >= sizeof buf) return -1;
  strcpy(buf, spec);
  char *save = NULL;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(t, '=');
    if (!eq) return -1;
    *eq = 0;
    char *end;
    double v = strtod(eq + 1, &end);
    if (*end || v < 0 || !isfinite(v)) return -1;
    if (!strcmp(t, "rot")) a->rot_deg = (float)v;
    else if (!strcmp(t, "shift") && v < 0.5) a->shift = (float)v;
    else if (!strcmp(t, "zoom") && v < 0.5) a->zoom = (float)v;
    else if (!strcmp(t, "contrast") && v < 1) a->contrast = (float)v;
    else if (!strcmp(t, "brightness") && v < 1) a->brightness = (float)v;
    else return -1;
  }
  return 0;
}

void xd_augment_apply(const xd_augment *a, uint64_t key, uint64_t sample, const uint8_t *src, int H, int W,
                      float *dst) {
  xd_rng r = xd_rng_make(xd_rand_u64(key, sample));
  float u[7];
  for (int i = 0; i < 7; i++) u[i] = 2.0f * xd_rng_uniform(&r) - 1.0f; /* [-1, 1) */
  double th = u[0] * a->rot_deg * 3.141592653589793 / 180.0;
  double s = 1.0 + u[1] * a->zoom;
  double tx = u[2] * a->shift * W, ty = u[3] * a->shift * H;
  float ck = 1.0f + u[4] * a->contrast, bk = u[5] * a->brightness;
  double cs = cos(th) / s, sn = sin(th) / s, cx = 0.5 * (W - 1), cy = 0.5 * (H - 1);
  /* inverse map: output pixel -> source coordinate; edges are clamped (films have dark borders anyway) */
  for (int y = 0; y < H; y++) {
    for (int x = 0; x < W; x++) {
      double dx = x - cx - tx, dy = y - cy - ty;
      double sx = cs * dx + sn * dy + cx, sy = -sn * dx + cs * dy + cy;
      if (sx < 0) sx = 0;
      if (sy < 0) sy = 0;
      if (sx > W - 1) sx = W - 1;
      if (sy > H - 1) sy = H - 1;
      int x0 = (int)sx, y0 = (int)sy;
      int x1 = x0 + 1 < W ? x0 + 1 : x0, y1 = y0 + 1 < H ? y0 + 1 : y0;
      float fx = (float)(sx - x0), fy = (float)(sy - y0);
      float v = (1 - fy) * ((1 - fx) * src[y0 * W + x0] + fx * src[y0 * W + x1]) +
                fy * ((1 - fx) * src[y1 * W + x0] + fx * src[y1 * W + x1]);
      v = (v * (1.0f / 255.0f) - 0.5f) * ck + 0.5f + bk;
      dst[y * W + x] = v < 0 ? 0 : (v > 1 ? 1 : v);
    }
  }
}
