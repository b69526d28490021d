/* Grad-CAM overlay and PNG encoding in memory (include/render.h). */
#include "render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include <stb_image_write.h>

#include "image.h"
#include "infer.h"

/* header-only use of stb_image here: the dimensions of a source image (stbi_info), private to this file */
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <stb_image.h> /* (the diagnostics stay off: gcc reports stb's unused statics at the end of the file) */

int xd_gradcam_display_size(int h) { return h >= 384 ? h : 384; }

void xd_gradcam_display_dims(int src_w, int src_h, int h, int *dw, int *dh) {
  const int L = h > 512 ? h : 512;
  if (src_w <= 0 || src_h <= 0) {
    *dw = *dh = L;
  } else if (src_w >= src_h) {
    *dw = L;
    *dh = (int)lround((double)L * src_h / src_w);
  } else {
    *dh = L;
    *dw = (int)lround((double)L * src_w / src_h);
  }
  if (*dw < 1) *dw = 1;
  if (*dh < 1) *dh = 1;
}

int xd_image_dims_mem(const void *data, size_t len, int *w, int *h) {
  int c;
  *w = *h = 0;
  if (!data || len == 0 || len > 0x7fffffff) return -1;
  if (!stbi_info_from_memory(data, (int)len, w, h, &c) || *w <= 0 || *h <= 0) {
    *w = *h = 0;
    return -1;
  }
  return 0;
}

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

void xd_gradcam_blend(uint8_t g, float v, uint8_t rgb[3]) {
  if (!(v >= 0 && v <= 1)) v = 0;
  if (v < XD_CAM_FLOOR) { /* no colour: the plain X-ray, exactly */
    rgb[0] = rgb[1] = rgb[2] = g;
    return;
  }
  float c[3], gf = g / 255.0f, a = XD_CAM_ALPHA_MAX * (v - XD_CAM_FLOOR) / (1 - XD_CAM_FLOOR);
  xd_colormap(v, c);
  for (int k = 0; k < 3; k++) {
    float x = (1 - a) * gf + a * c[k];
    rgb[k] = (uint8_t)lrintf(255.0f * (x < 0 ? 0 : x > 1 ? 1 : x));
  }
}

void xd_gradcam_overlay(const uint8_t *gray, float *cam, int h, int w, uint8_t *rgb) {
  const size_t n = (size_t)h * w;
  for (size_t i = 0; i < n; i++) {
    if (!(cam[i] >= 0 && cam[i] <= 1)) cam[i] = 0;
    xd_gradcam_blend(gray[i], cam[i], rgb + 3 * i);
  }
}

/* ---- text: a 5x7 bitmap font, upper case, digits and a little punctuation (lower case is drawn as upper
 * case, anything else as '?'). Drawn for this file; each glyph is 7 rows of 5 columns, '#' = ink. ---- */
static const struct {
  char c;
  const char *rows;
} FONT[] = {
    {' ', "..................................."},
    {'A', ".###.#...##...#######...##...##...#"}, {'B', "####.#...##...#####.#...##...#####."},
    {'C', ".###.#...##....#....#....#...#.###."}, {'D', "####.#...##...##...##...##...#####."},
    {'E', "######....#....####.#....#....#####"}, {'F', "######....#....####.#....#....#...."},
    {'G', ".###.#...##....#.####...##...#.####"}, {'H', "#...##...##...#######...##...##...#"},
    {'I', ".###...#....#....#....#....#...###."}, {'J', "..###...#....#....#....#.#..#..##.."},
    {'K', "#...##..#.#.#..##...#.#..#..#.#...#"}, {'L', "#....#....#....#....#....#....#####"},
    {'M', "#...###.###.#.##.#.##...##...##...#"}, {'N', "#...##...###..##.#.##..###...##...#"},
    {'O', ".###.#...##...##...##...##...#.###."}, {'P', "####.#...##...#####.#....#....#...."},
    {'Q', ".###.#...##...##...##.#.##..#..##.#"}, {'R', "####.#...##...#####.#.#..#..#.#...#"},
    {'S', ".#####....#.....###.....#....#####."}, {'T', "#####..#....#....#....#....#....#.."},
    {'U', "#...##...##...##...##...##...#.###."}, {'V', "#...##...##...##...##...#.#.#...#.."},
    {'W', "#...##...##...##.#.##.#.##.#.#.#.#."}, {'X', "#...##...#.#.#...#...#.#.#...##...#"},
    {'Y', "#...##...#.#.#...#....#....#....#.."}, {'Z', "#####....#...#...#...#...#....#####"},
    {'0', ".###.#...##..###.#.###..##...#.###."}, {'1', "..#...##....#....#....#....#...###."},
    {'2', ".###.#...#....#...#...#...#...#####"}, {'3', "#####...#...#.....#.....##...#.###."},
    {'4', "...#...##..#.#.#..#.#####...#....#."}, {'5', "######....####.....#....##...#.###."},
    {'6', "..##..#...#....####.#...##...#.###."}, {'7', "#####....#...#...#...#....#....#..."},
    {'8', ".###.#...##...#.###.#...##...#.###."}, {'9', ".###.#...##...#.####....#...#..##.."},
    {'.', ".........................##...##..."}, {',', "....................##....#...#...."},
    {':', ".....##...##.........##...##......."}, {'=', "..........#####.....#####.........."},
    {'<', "...#...#...#...#.....#.....#.....#."}, {'>', ".#.....#.....#.....#...#...#...#..."},
    {'(', "...#...#...#....#....#.....#.....#."}, {')', ".#.....#.....#....#....#...#...#..."},
    {'-', "...............#####..............."}, {'_', "..............................#####"},
    {'/', "........#...#...#...#...#.........."}, {'\'', "..#....#...#......................."},
    {'%', "##...##..#...#...#...#...#..##...##"}, {'?', ".###.#...#....#...#...#.........#.."},
    {'+', ".......#....#..#####..#....#......."},
};

static const char *glyph(char c) {
  if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
  for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
    if (FONT[i].c == c) return FONT[i].rows;
  return glyph('?');
}

typedef struct {
  uint8_t *px;
  int w, h;
} canvas;

static void fill(canvas *cv, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
  for (int y = y0 < 0 ? 0 : y0; y < y1 && y < cv->h; y++)
    for (int x = x0 < 0 ? 0 : x0; x < x1 && x < cv->w; x++) memcpy(cv->px + 3 * ((size_t)y * cv->w + x), rgb, 3);
}

/* text at (x, y), each font pixel a scale x scale square, 6*scale per character; clipped at the canvas's
 * right edge minus a margin (a long class name is cut, never wrapped over other lines) */
static int text(canvas *cv, int x, int y, int scale, const char *s, const uint8_t rgb[3]) {
  for (; *s; s++, x += 6 * scale) {
    if (x + 5 * scale > cv->w - 6) break;
    const char *g = glyph(*s);
    for (int r = 0; r < 7; r++)
      for (int c = 0; c < 5; c++)
        if (g[r * 5 + c] == '#') fill(cv, x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, rgb);
  }
  return x;
}

int xd_gradcam_compose(const uint8_t *gray, float *cam, int w, int h, const xd_gradcam_info *info, uint8_t **rgb,
                       int *cw, int *ch, xd_err *e) {
  const int W = w > XD_PANEL_MIN_W ? w : XD_PANEL_MIN_W, H = h + XD_PANEL_H;
  canvas cv = {malloc((size_t)W * H * 3), W, H};
  uint8_t *ov = malloc((size_t)w * h * 3);
  if (!cv.px || !ov) {
    free(cv.px);
    free(ov);
    return xd_fail(e, "out of memory for the Grad-CAM picture (%d x %d)", W, H);
  }
  const uint8_t bg[3] = {XD_PANEL_BG, XD_PANEL_BG, XD_PANEL_BG}, fg[3] = {235, 235, 235}, dim[3] = {170, 170, 170};
  fill(&cv, 0, 0, W, H, bg);
  xd_gradcam_overlay(gray, cam, h, w, ov);
  const int ox = (W - w) / 2;
  for (int y = 0; y < h; y++) memcpy(cv.px + 3 * ((size_t)y * W + ox), ov + 3 * (size_t)y * w, 3 * (size_t)w);
  free(ov);
  /* the panel */
  const int y0 = h;
  const int pos = info->prob >= info->threshold;
  const char *call = pos ? info->pos : info->neg, *mapc = info->map_class == 1 ? info->pos : info->neg;
  char line[512];
  snprintf(line, sizeof line, "CALL: %s", call);
  text(&cv, 8, y0 + 8, 3, line, fg);
  snprintf(line, sizeof line, "P(%s) = %.3f, THRESHOLD %.3f", info->pos, (double)info->prob, info->threshold);
  text(&cv, 8, y0 + 40, 2, line, fg);
  float cmax = 0;
  for (size_t i = 0; i < (size_t)w * h; i++) cmax = cam[i] > cmax ? cam[i] : cmax; /* sanitised above */
  if (cmax > 0) snprintf(line, sizeof line, "MAP: EVIDENCE FOR %s", mapc);
  else snprintf(line, sizeof line, "MAP: NO EVIDENCE FOR %s FOUND", mapc); /* an empty map, said so */
  text(&cv, 8, y0 + 64, 2, line, fg);
  text(&cv, 8, y0 + XD_BAR_Y + 1, 2, "WEAK", dim);
  const int bx0 = XD_BAR_X0, bx1 = W - XD_BAR_RIGHT;
  for (int x = bx0; x < bx1; x++) {
    uint8_t c[3];
    xd_gradcam_blend(128, ((float)(x - bx0) + 0.5f) / (float)(bx1 - bx0), c);
    fill(&cv, x, y0 + XD_BAR_Y, x + 1, y0 + XD_BAR_Y + XD_BAR_H, c);
  }
  text(&cv, bx1 + 8, y0 + XD_BAR_Y + 1, 2, "STRONG", dim);
  text(&cv, 8, y0 + XD_BAR_Y + XD_BAR_H + 6, 2, "RELATIVE TO THIS IMAGE'S MAXIMUM", dim);
  *rgb = cv.px;
  *cw = W;
  *ch = H;
  return 0;
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

int xd_gradcam_png(xd_model *m, xd_workspace *ws, const char *ckpt, const uint8_t *px, const void *data, size_t len,
                   const char *name, const xd_gradcam_info *info, unsigned char **png, size_t *plen, xd_err *e) {
  *png = NULL;
  *plen = 0;
  int sw, sh, dw, dh;
  xd_image_dims_mem(data, len, &sw, &sh); /* unknown (a format stb cannot read the header of): a square */
  xd_gradcam_display_dims(sw, sh, m->in_h, &dw, &dh);
  const int L = dw > dh ? dw : dh;
  xd_gradcam_info in = *info;
  if (in.map_class < 0) in.map_class = in.prob >= in.threshold ? 1 : 0;
  float *cam = malloc((size_t)dw * dh * sizeof *cam);
  uint8_t *sq = malloc((size_t)L * L), *gray = malloc((size_t)dw * dh), *rgb = NULL;
  int cw = 0, ch = 0, rc = 0;
  float p2;
  if (!cam || !sq || !gray) rc = xd_fail(e, "%s: out of memory for the Grad-CAM picture", name);
  if (rc == 0 && xd_gradcam_class(m, ws, px, in.map_class, dh, dw, cam, &p2) != 0)
    rc = xd_fail(e, "%s: the model has no conv layer for Grad-CAM", ckpt);
  /* the X-ray decoded again at the display size (the model's square, stretched back to the source's shape) */
  if (rc == 0) rc = xd_image_decode_gray_mem(data, len, name, L, sq, e);
  if (rc == 0) {
    xd_image_resize_gray(sq, L, L, gray, dw, dh);
    rc = xd_gradcam_compose(gray, cam, dw, dh, &in, &rgb, &cw, &ch, e);
  }
  if (rc == 0) rc = xd_png_encode(rgb, cw, ch, 3, name, png, plen, e);
  free(cam);
  free(sq);
  free(gray);
  free(rgb);
  return rc;
}
