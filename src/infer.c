#include "infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"

static void load_input(const xd_model *m, xd_workspace *ws, int nb, const uint8_t *images) {
  size_t n = (size_t)nb * m->in_c * m->in_h * m->in_w;
  for (size_t i = 0; i < n; i++) ws->act[0][i] = images[i] * (1.0f / 255.0f);
}

void xd_infer(xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, const uint8_t *labels, float *prob,
              double *loss_sum) {
  const size_t px = (size_t)m->in_c * m->in_h * m->in_w;
  xd_step_ctx c = {0};
  for (int64_t a = 0; a < n; a += ws->batch) {
    int nb = (int)(n - a < ws->batch ? n - a : ws->batch);
    load_input(m, ws, nb, images + (size_t)a * px);
    const float *z = xd_forward(m, ws, nb, &c);
    if (labels && loss_sum)
      *loss_sum += m->loss == XD_LOSS_BCE ? xd_loss_bce(nb, z, labels + a, NULL, 1.0, NULL)
                                          : xd_loss_ce(nb, m->nout, z, labels + a, NULL, 1.0, NULL);
    float *p = ws->dlast;
    xd_probs(m, nb, z, p);
    for (int i = 0; i < nb; i++) prob[a + i] = m->nout == 1 ? p[i] : p[(size_t)i * m->nout + 1];
  }
}

int xd_gradcam(xd_model *m, xd_workspace *ws, const uint8_t *image, int out_h, int out_w, float *cam, float *prob) {
  return xd_gradcam_class(m, ws, image, 1, out_h, out_w, cam, prob);
}

int xd_gradcam_class(xd_model *m, xd_workspace *ws, const uint8_t *image, int cls, int out_h, int out_w, float *cam,
                     float *prob) {
  int lc = xd_model_cam_layer(m); /* the last feature map before the head (a residual block's sum) */
  if (lc < 0) return -1;
  const xd_layer *L = &m->layers[lc];
  xd_step_ctx c = {0};
  load_input(m, ws, 1, image);
  const float *z = xd_forward(m, ws, 1, &c);
  xd_probs(m, 1, z, ws->dlast); /* dlast is free until the gradient is seeded below */
  *prob = m->nout == 1 ? ws->dlast[0] : ws->dlast[1];
  /* d(score)/d(logits): logit cls; one sigmoid logit z: z for class 1, -z for class 0 */
  for (int k = 0; k < m->nout; k++) ws->dlast[k] = m->nout == 1 ? (cls == 0 ? -1.0f : 1.0f) : k == cls ? 1.0f : 0.0f;
  xd_backward(m, ws, 1, &c, lc);
  const float *A = ws->act[lc + 1], *dA = ws->gradcam_dy;
  const int F = L->out_c, h = L->out_h, w = L->out_w;
  float *map = calloc((size_t)h * w, sizeof *map);
  if (!map) return -1;
  for (int f = 0; f < F; f++) {
    double alpha = 0;
    for (int j = 0; j < h * w; j++) alpha += dA[(size_t)f * h * w + j];
    alpha /= h * w;
    for (int j = 0; j < h * w; j++) map[j] += (float)alpha * A[(size_t)f * h * w + j];
  }
  float mx = 0;
  for (int j = 0; j < h * w; j++) {
    if (map[j] < 0) map[j] = 0;
    if (map[j] > mx) mx = map[j];
  }
  /* bilinear upsampling to the output, aligning pixel centres (the conv's receptive fields are centred);
   * the last conv map spans the input up to the few border pixels lost to valid padding */
  const int H = out_h, W = out_w;
  for (int y = 0; y < H; y++) {
    float sy = ((float)y + 0.5f) * h / H - 0.5f;
    if (sy < 0) sy = 0;
    if (sy > h - 1) sy = (float)(h - 1);
    int y0 = (int)sy, y1 = y0 + 1 < h ? y0 + 1 : y0;
    float fy = sy - y0;
    for (int x = 0; x < W; x++) {
      float sx = ((float)x + 0.5f) * w / W - 0.5f;
      if (sx < 0) sx = 0;
      if (sx > w - 1) sx = (float)(w - 1);
      int x0 = (int)sx, x1 = x0 + 1 < w ? x0 + 1 : x0;
      float fx = sx - x0;
      float v = (1 - fy) * ((1 - fx) * map[y0 * w + x0] + fx * map[y0 * w + x1]) +
                fy * ((1 - fx) * map[y1 * w + x0] + fx * map[y1 * w + x1]);
      cam[y * W + x] = mx > 0 ? v / mx : 0;
    }
  }
  free(map);
  return 0;
}

/* ---- test-time augmentation ---- */

/* Geometry of each variant: content scaled by (sx, sy) about the image centre, then shifted by
 * (tx, ty) times the width/height (positive: right/down). Mild enough to keep the diagnosis, in the
 * range the training augmentation covers; no flips. */
static const struct {
  const char *name;
  double sx, sy, tx, ty;
} TTA[XD_TTA_VARIANTS] = {
    {"original", 1, 1, 0, 0},
    {"zoom in 6%", 1.06, 1.06, 0, 0},
    {"zoom out 6%", 1 / 1.06, 1 / 1.06, 0, 0},
    {"stretch horizontally 6%", 1.06, 1, 0, 0},
    {"squeeze horizontally 6%", 1 / 1.06, 1, 0, 0},
    {"shift right 3%", 1, 1, 0.03, 0},
    {"shift left 3%", 1, 1, -0.03, 0},
    {"shift down 3%", 1, 1, 0, 0.03},
    {"shift up 3%", 1, 1, 0, -0.03},
};

const char *xd_tta_name(int v) { return v >= 0 && v < XD_TTA_VARIANTS ? TTA[v].name : "?"; }

/* Source taps of output index o along an axis of n pixels (pixel centres aligned): i0, i1 clamped to the
 * edge, weight of i1 in 1/256. */
static void tta_axis(int o, int n, double s, double t, int *i0, int *i1, int *w) {
  double u = ((double)o + 0.5 - 0.5 * n - t * n) / s + 0.5 * n - 0.5;
  double f = floor(u);
  int i = (int)f, q = (int)lrint((u - f) * 256.0);
  if (q >= 256) {
    i++;
    q = 0;
  }
  int a = i < 0 ? 0 : i > n - 1 ? n - 1 : i, b = i + 1 < 0 ? 0 : i + 1 > n - 1 ? n - 1 : i + 1;
  *i0 = a;
  *i1 = b;
  *w = q;
}

void xd_tta_apply(int v, int C, int H, int W, const uint8_t *src, uint8_t *dst) {
  if (v <= 0 || v >= XD_TTA_VARIANTS) {
    memcpy(dst, src, (size_t)C * H * W);
    return;
  }
  const double sx = TTA[v].sx, sy = TTA[v].sy, tx = TTA[v].tx, ty = TTA[v].ty;
  for (int c = 0; c < C; c++) {
    const uint8_t *s = src + (size_t)c * H * W;
    uint8_t *d = dst + (size_t)c * H * W;
    for (int y = 0; y < H; y++) {
      int y0, y1, wy;
      tta_axis(y, H, sy, ty, &y0, &y1, &wy);
      const uint8_t *r0 = s + (size_t)y0 * W, *r1 = s + (size_t)y1 * W;
      for (int x = 0; x < W; x++) {
        int x0, x1, wx;
        tta_axis(x, W, sx, tx, &x0, &x1, &wx);
        int32_t top = (256 - wx) * r0[x0] + wx * r0[x1], bot = (256 - wx) * r1[x0] + wx * r1[x1];
        d[(size_t)y * W + x] = (uint8_t)(((256 - wy) * top + wy * bot + 32768) >> 16);
      }
    }
  }
}

int xd_infer_tta(xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, float *prob, xd_err *e) {
  const size_t px = (size_t)m->in_c * m->in_h * m->in_w;
  const int B = ws->batch;
  uint8_t *buf = malloc((size_t)B * px);
  float *p = malloc((size_t)B * sizeof *p);
  double *acc = malloc((size_t)B * sizeof *acc);
  if (!buf || !p || !acc) {
    free(buf);
    free(p);
    free(acc);
    return xd_fail(e, "out of memory for test-time augmentation (%zu bytes)", (size_t)B * (px + 12));
  }
  for (int64_t a = 0; a < n; a += B) {
    int nb = (int)(n - a < B ? n - a : B);
    const uint8_t *in = images + (size_t)a * px;
    for (int i = 0; i < nb; i++) acc[i] = 0;
    for (int v = 0; v < XD_TTA_VARIANTS; v++) {
      const uint8_t *x = in;
      if (v > 0) {
        for (int i = 0; i < nb; i++) xd_tta_apply(v, m->in_c, m->in_h, m->in_w, in + (size_t)i * px, buf + (size_t)i * px);
        x = buf;
      }
      xd_infer(m, ws, nb, x, NULL, p, NULL);
      for (int i = 0; i < nb; i++) acc[i] += p[i];
    }
    for (int i = 0; i < nb; i++) prob[a + i] = (float)(acc[i] / XD_TTA_VARIANTS);
  }
  free(buf);
  free(p);
  free(acc);
  return 0;
}

int xd_infer_ensemble(int k, xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, int tta, float *prob,
                      xd_err *e) {
  if (k == 1) {
    if (tta) return xd_infer_tta(m, ws, n, images, prob, e);
    xd_infer(m, ws, n, images, NULL, prob, NULL);
    return 0;
  }
  float *p = malloc(((size_t)n + 1) * sizeof *p);
  double *acc = calloc((size_t)n + 1, sizeof *acc);
  if (!p || !acc) {
    free(p);
    free(acc);
    return xd_fail(e, "out of memory for the ensemble's probabilities (%lld images)", (long long)n);
  }
  int rc = 0;
  for (int j = 0; j < k && rc == 0; j++) {
    if (tta) rc = xd_infer_tta(&m[j], &ws[j], n, images, p, e);
    else xd_infer(&m[j], &ws[j], n, images, NULL, p, NULL);
    for (int64_t i = 0; rc == 0 && i < n; i++) acc[i] += p[i];
  }
  for (int64_t i = 0; rc == 0 && i < n; i++) prob[i] = (float)(acc[i] / k);
  free(p);
  free(acc);
  return rc;
}
