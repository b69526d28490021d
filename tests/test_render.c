/* The Grad-CAM picture (include/render.h): display size at the source's aspect ratio, the panel and its
 * colour bar, the opacity floor (no colour where the CAM is below it: the X-ray's own gray), the cap (the
 * anatomy shows through), the negative class's map (the negated logit of a sigmoid model) and the same
 * bytes twice. argv[1]: tests/fixtures (torch_keras-seed.h5, a 32x32 sigmoid CNN). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "image.h"
#include "infer.h"
#include "render.h"

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_image.h>

static const uint8_t *px_at(const uint8_t *rgb, int W, int x, int y) { return rgb + 3 * ((size_t)y * W + x); }

static int colored(const uint8_t *p) { return p[0] != p[1] || p[1] != p[2]; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  xd_err e = {{0}};
  /* display size: longest side 512 (or the model's side), the source's aspect ratio */
  int dw, dh;
  xd_gradcam_display_dims(2000, 1500, 128, &dw, &dh);
  CHECK(dw == 512 && dh == 384);
  xd_gradcam_display_dims(1500, 2000, 128, &dw, &dh);
  CHECK(dw == 384 && dh == 512);
  xd_gradcam_display_dims(0, 0, 128, &dw, &dh);
  CHECK(dw == 512 && dh == 512);
  xd_gradcam_display_dims(100, 100, 600, &dw, &dh);
  CHECK(dw == 600 && dh == 600);

  /* compose: a 300 x 200 picture, CAM 0 on the left half, a ramp 0 -> 1 on the right */
  const int w = 300, h = 200;
  uint8_t *gray = malloc((size_t)w * h);
  float *cam = malloc((size_t)w * h * sizeof *cam);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gray[y * w + x] = (uint8_t)(30 + (x + 2 * y) % 200);
      cam[y * w + x] = x < w / 2 ? 0.0f : (float)(x - w / 2) / (w / 2 - 1);
    }
  cam[5] = NAN; /* sanitised to 0 */
  xd_gradcam_info info = {0.8f, 0.5, "PNEUMONIA", "NORMAL", 1};
  uint8_t *rgb = NULL, *rgb2 = NULL;
  int cw = 0, ch = 0, cw2 = 0, ch2 = 0;
  CHECK(xd_gradcam_compose(gray, cam, w, h, &info, &rgb, &cw, &ch, &e) == 0);
  CHECK(xd_gradcam_compose(gray, cam, w, h, &info, &rgb2, &cw2, &ch2, &e) == 0);
  CHECK(cw == XD_PANEL_MIN_W && ch == h + XD_PANEL_H && cw2 == cw && ch2 == ch);
  CHECK(rgb && rgb2 && memcmp(rgb, rgb2, (size_t)cw * ch * 3) == 0);
  const int ox = (cw - w) / 2;
  int floor_ok = 1, cap_ok = 1, ncol = 0;
  for (int y = 0; rgb && y < h; y++)
    for (int x = 0; x < w; x++) {
      const uint8_t *p = px_at(rgb, cw, ox + x, y), g = gray[y * w + x];
      float v = x < w / 2 || (y == 0 && x == 5) ? 0 : cam[y * w + x];
      if (v < XD_CAM_FLOOR && (p[0] != g || p[1] != g || p[2] != g)) floor_ok = 0;
      for (int k = 0; k < 3; k++) /* at most XD_CAM_ALPHA_MAX of colour: the X-ray shows through */
        if (abs((int)p[k] - g) > (int)(XD_CAM_ALPHA_MAX * 255) + 1) cap_ok = 0;
      ncol += colored(p);
    }
  CHECK_MSG(floor_ok, "a pixel below the CAM floor is not the X-ray's gray");
  CHECK_MSG(cap_ok, "the overlay hides the X-ray (opacity above the cap)");
  CHECK_MSG(ncol > w * h / 4, "only %d coloured pixels", ncol);
  CHECK(cam[5] == 0);
  /* the margins beside a narrow picture and the panel's background */
  CHECK(rgb && px_at(rgb, cw, 0, 0)[0] == XD_PANEL_BG && px_at(rgb, cw, cw - 1, h + 2)[1] == XD_PANEL_BG);
  /* the colour bar: column x shows the blend of mid-gray with the CAM value at that position */
  const int bx0 = XD_BAR_X0, bx1 = cw - XD_BAR_RIGHT;
  int bar_ok = 1;
  for (int x = bx0; rgb && x < bx1; x += 7) {
    uint8_t want[3];
    xd_gradcam_blend(128, ((float)(x - bx0) + 0.5f) / (float)(bx1 - bx0), want);
    for (int y = h + XD_BAR_Y; y < h + XD_BAR_Y + XD_BAR_H; y += 5)
      if (memcmp(px_at(rgb, cw, x, y), want, 3)) bar_ok = 0;
  }
  CHECK_MSG(bar_ok, "the colour bar is not the blend of the colour map");
  const uint8_t *lo = rgb ? px_at(rgb, cw, bx0 + 2, h + XD_BAR_Y + 4) : NULL, *hi = rgb ? px_at(rgb, cw, bx1 - 2, h + XD_BAR_Y + 4) : NULL;
  CHECK(lo && lo[0] == 128 && lo[1] == 128 && lo[2] == 128);  /* weak: no colour */
  CHECK(hi && hi[0] > hi[1] + 40 && hi[0] > hi[2] + 40);       /* strong: red */
  /* text: some light pixels on the first line of the panel (the call) */
  int light = 0;
  for (int y = h + 8; rgb && y < h + 29; y++)
    for (int x = 8; x < 300; x++) light += px_at(rgb, cw, x, y)[0] > 200;
  CHECK_MSG(light > 100, "no text on the panel (%d light pixels)", light);
  free(rgb);
  free(rgb2);

  /* end to end with a model: a 300 x 200 source, the maps of both classes, the same bytes twice. The map
   * of a class can be empty (no positive evidence anywhere); the first fixture where the negative class's
   * is not is used, so the negative call is shown with an overlay. */
  unsigned char *src = NULL;
  size_t slen = 0;
  CHECK(xd_png_encode(gray, w, h, 1, "source", &src, &slen, &e) == 0);
  const char *fx[] = {"torch_keras-seed.h5", "torch_tripathi5.h5", "torch_petre-bn.h5", "torch_graph.h5"};
  int found = 0;
  for (int f = 0; f < 4 && !found; f++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[1], fx[f]);
    xd_model m;
    xd_train_state st;
    xd_workspace ws;
    if (xd_checkpoint_load(path, &m, &st, NULL, &e) != 0) {
      CHECK_MSG(0, "%s", e.msg);
      continue;
    }
    CHECK(xd_workspace_alloc(&ws, &m, 1, &e) == 0);
    uint8_t *in = malloc((size_t)m.in_h * m.in_w);
    xd_image_resize_gray(gray, w, h, in, m.in_w, m.in_h);
    float p = 0, mx[2] = {0, 0};
    xd_infer(&m, &ws, 1, in, NULL, &p, NULL);
    for (int cls = 0; cls < 2; cls++) {
      float *c = malloc(64 * 64 * sizeof *c), p2 = -1;
      CHECK(xd_gradcam_class(&m, &ws, in, cls, 64, 64, c, &p2) == 0 && p2 == p);
      for (int i = 0; i < 64 * 64; i++) mx[cls] = c[i] > mx[cls] ? c[i] : mx[cls];
      free(c);
    }
    /* sigmoid: the two maps are ReLU(+S) and ReLU(-S) of one weighted sum S, so at most one is empty */
    CHECK_MSG(mx[0] > 0.9f || mx[1] > 0.9f, "%s: both maps empty (%g, %g)", fx[f], mx[0], mx[1]);
    found = mx[0] > 0.9f;
    for (int cls = 0; found && cls < 2; cls++) {
      xd_gradcam_info gi = {p, cls ? 0.0 : 1.01, "PNEUMONIA", "NORMAL", -1}; /* the call is cls: map_class -1 */
      unsigned char *png[2] = {NULL, NULL};
      size_t plen[2] = {0, 0};
      for (int k = 0; k < 2; k++)
        CHECK(xd_gradcam_png(&m, &ws, path, in, src, slen, "source.png", &gi, &png[k], &plen[k], &e) == 0);
      CHECK(png[0] && png[1] && plen[0] == plen[1] && memcmp(png[0], png[1], plen[0]) == 0);
      int W2, H2, C2;
      uint8_t *dec = png[0] ? stbi_load_from_memory(png[0], (int)plen[0], &W2, &H2, &C2, 3) : NULL;
      CHECK_MSG(dec && W2 == 512 && H2 == 341 + XD_PANEL_H, "class %d: %d x %d", cls, dec ? W2 : 0, dec ? H2 : 0);
      int n = 0;
      for (int y = 0; dec && y < 341; y++)
        for (int x = 0; x < 512; x++) n += colored(px_at(dec, 512, x, y));
      CHECK_MSG(mx[cls] < 0.9f || n > 512 * 341 / 50, "%s class %d: only %d coloured pixels", fx[f], cls, n);
      stbi_image_free(dec);
      free(png[0]);
      free(png[1]);
    }
    free(in);
    xd_workspace_free(&ws, &m);
    xd_model_free(&m);
  }
  CHECK_MSG(found, "no fixture gives a non-empty map for the negative class");
  free(src);
  free(gray);
  free(cam);
  return check_done("render");
}
