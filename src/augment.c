/* Training-time augmentation. Chest films are not mirror-symmetric (heart on the left), so there is no
 * horizontal flip: small rotations, shifts and zooms model patient positioning, and contrast/brightness
 * jitter models exposure. The "shortcut" spec also attacks what this data set lets a CNN cheat with
 * (see docs/results.md): the aspect ratio that survives the square resize as distorted anatomy
 * (independent x/y scaling), acquisition contrast (gamma, contrast, noise), and text markers, tubes
 * and collimation borders (cutout, border blanking). Every draw is a function of (key, sample). */
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
  if (!strcmp(spec, "shortcut")) {
    a->rot_deg = 10;
    a->shift = 0.08f;
    a->aspect = 0.25f;
    a->gamma = 0.3f;
    a->contrast = 0.3f;
    a->brightness = 0.1f;
    a->noise = 0.03f;
    a->erase = 0.5f;
    a->border = 0.5f;
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
    if (*end || end == eq + 1 || v < 0 || !isfinite(v)) return -1;
    if (!strcmp(t, "rot") && v <= 45) a->rot_deg = (float)v;
    else if (!strcmp(t, "shift") && v < 0.5) a->shift = (float)v;
    else if (!strcmp(t, "zoom") && v < 0.5) a->zoom = (float)v;
    else if (!strcmp(t, "contrast") && v < 1) a->contrast = (float)v;
    else if (!strcmp(t, "brightness") && v < 1) a->brightness = (float)v;
    else if (!strcmp(t, "aspect") && v <= 1) a->aspect = (float)v;
    else if (!strcmp(t, "gamma") && v <= 1) a->gamma = (float)v;
    else if (!strcmp(t, "noise") && v <= 0.5) a->noise = (float)v;
    else if (!strcmp(t, "erase") && v <= 1) a->erase = (float)v;
    else if (!strcmp(t, "border") && v <= 1) a->border = (float)v;
    else return -1;
  }
  return 0;
}

void xd_augment_apply(const xd_augment *a, uint64_t key, uint64_t sample, const uint8_t *src, int H, int W,
                      float *dst) {
  xd_rng r = xd_rng_make(xd_rand_u64(key, sample));
  float u[16];
  for (int i = 0; i < 16; i++) u[i] = 2.0f * xd_rng_uniform(&r) - 1.0f; /* [-1, 1) */
  double th = u[0] * a->rot_deg * 3.141592653589793 / 180.0;
  double s = 1.0 + u[1] * a->zoom;
  double tx = u[2] * a->shift * W, ty = u[3] * a->shift * H;
  float ck = 1.0f + u[4] * a->contrast, bk = u[5] * a->brightness;
  double ax = a->aspect > 0 ? exp(u[7] * log(1.0 + a->aspect)) : 1.0;
  double ay = a->aspect > 0 ? exp(u[8] * log(1.0 + a->aspect)) : 1.0;
  float gk = a->gamma > 0 ? (float)exp(u[9] * log(1.0 + a->gamma)) : 1.0f;
  /* intensity first, on the 256 source levels (a table per sample): gamma, then contrast and brightness;
   * bilinear interpolation of the mapped levels follows */
  float lut[256];
  for (int v = 0; v < 256; v++) {
    float f = (float)v * (1.0f / 255.0f);
    if (gk != 1.0f) f = powf(f, gk);
    f = (f - 0.5f) * ck + 0.5f + bk;
    lut[v] = f < 0 ? 0 : (f > 1 ? 1 : f);
  }
  /* inverse map: output pixel -> source coordinate, src = R^-1 S^-1 (dst - c - t) + c; edges are
   * clamped (films have dark borders anyway) */
  double c = cos(th), sn = sin(th), cx = 0.5 * (W - 1), cy = 0.5 * (H - 1);
  double isx = 1.0 / (s * ax), isy = 1.0 / (s * ay);
  /* noise: a sum of two uniforms (triangular, sd = sigma) from the counter-based generator */
  const float sigma = a->noise > 0 ? a->noise * 0.5f * (u[10] + 1.0f) : 0.0f, nk = sigma * 2.449489743f;
  const uint64_t nkey = xd_rand_u64(key ^ 0x6e6f697365ULL, sample);
  for (int y = 0; y < H; y++) {
    for (int x = 0; x < W; x++) {
      double dx = (x - cx - tx) * isx, dy = (y - cy - ty) * isy;
      double sx = c * dx + sn * dy + cx, sy = -sn * dx + c * dy + cy;
      if (sx < 0) sx = 0;
      if (sy < 0) sy = 0;
      if (sx > W - 1) sx = W - 1;
      if (sy > H - 1) sy = H - 1;
      int x0 = (int)sx, y0 = (int)sy;
      int x1 = x0 + 1 < W ? x0 + 1 : x0, y1 = y0 + 1 < H ? y0 + 1 : y0;
      float fx = (float)(sx - x0), fy = (float)(sy - y0);
      float v = (1 - fy) * ((1 - fx) * lut[src[y0 * W + x0]] + fx * lut[src[y0 * W + x1]]) +
                fy * ((1 - fx) * lut[src[y1 * W + x0]] + fx * lut[src[y1 * W + x1]]);
      if (sigma > 0) {
        uint64_t i = (uint64_t)y * (uint64_t)W + (uint64_t)x;
        v += nk * (xd_rand_uniform(nkey, 2 * i) + xd_rand_uniform(nkey, 2 * i + 1) - 1.0f);
      }
      dst[y * W + x] = v < 0 ? 0 : (v > 1 ? 1 : v);
    }
  }
  if (a->erase > 0 && 0.5f * (u[11] + 1.0f) < a->erase) { /* cutout: 10-30% of each side, random grey */
    int eh = (int)(H * (0.2 + 0.1 * u[12])), ew = (int)(W * (0.2 + 0.1 * u[13]));
    int y0 = (int)((H - eh) * 0.5f * (u[14] + 1.0f)), x0 = (int)((W - ew) * 0.5f * (u[15] + 1.0f));
    float fill = xd_rng_uniform(&r);
    for (int y = y0; y < y0 + eh && y < H; y++)
      for (int x = x0; x < x0 + ew && x < W; x++) dst[y * W + x] = fill;
  }
  if (a->border > 0 && xd_rng_uniform(&r) < a->border) { /* a frame of 0-8% per side: black, or any grey */
    int t = (int)(H * 0.08f * xd_rng_uniform(&r)), b = (int)(H * 0.08f * xd_rng_uniform(&r));
    int l = (int)(W * 0.08f * xd_rng_uniform(&r)), rr = (int)(W * 0.08f * xd_rng_uniform(&r));
    float fill = xd_rng_uniform(&r) < 0.5f ? 0.0f : xd_rng_uniform(&r);
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++)
        if (y < t || y >= H - b || x < l || x >= W - rr) dst[y * W + x] = fill;
  }
}
