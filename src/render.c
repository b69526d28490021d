/* Grad-CAM overlay and PNG encoding in memory (include/render.h). */
#include "render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

int xd_gradcam_display_size(int h) { return h >= 384 ? h : 384; }

void xd_colormap(float v, float rgb[3]) {
  static const float stops[6][3] = {{0.19f, 0.07f, 0.23f}, {0.16f, 0.47f, 0.93f}, {0.10f, 0.83f, 0.62f},
                                    {0.65f, 0.99f, 0.23f}, {0.98f, 0.60f, 0.13f}, {0.80f, 0.10f, 0.05f}};
  if (!(v >= 0)) v = 0;
  if (v > 1) v = 1;
  float t = v * 5;
  int i = (int)t;
  if (i >= 5) i = 4;
  float f = t - i;
  for (int k = 0; k < 3; k++) rgb[k] = stops[i][k] * (1 - f) + stops[i + 1][k] * f;
}

void xd_gradcam_overlay(const uint8_t *gray, float *cam, int h, int w, uint8_t *rgb) {
  const size_t n = (size_t)h * w;
  for (size_t i = 0; i < n; i++) {
    if (!(cam[i] >= 0 && cam[i] <= 1)) cam[i] = 0;
    float c[3], g = gray[i] / 255.0f;
    xd_colormap(cam[i], c);
    /* no evidence: the plain X-ray; strong evidence: mostly colour, the anatomy still visible */
    float t = (cam[i] - 0.15f) / 0.85f, a = t <= 0 ? 0 : 0.7f * sqrtf(t);
    for (int k = 0; k < 3; k++) {
      float v = (1 - a) * g + a * c[k];
      rgb[3 * i + k] = (uint8_t)lrintf(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v));
    }
  }
}

typedef struct {
  unsigned char *data;
  size_t len;
  int bad;
} png_buf;

static void png_collect(void *ctx, void *data, int size) {
  png_buf *b = ctx;
  if (b->bad || size <= 0) return;
  unsigned char *p = realloc(b->data, b->len + (size_t)size);
  if (!p) {
    b->bad = 1;
    return;
  }
  memcpy(p + b->len, data, (size_t)size);
  b->data = p;
  b->len += (size_t)size;
}

int xd_png_encode(const uint8_t *px, int w, int h, int comp, const char *what, unsigned char **png, size_t *len,
                  xd_err *e) {
  png_buf pb = {NULL, 0, 0};
  *png = NULL;
  *len = 0;
  int ok = stbi_write_png_to_func(png_collect, &pb, w, h, comp, px, w * comp);
  if (!ok || pb.bad || !pb.data) {
    free(pb.data);
    return xd_fail(e, "%s: out of memory encoding the PNG", what);
  }
  *png = pb.data;
  *len = pb.len;
  return 0;
}
