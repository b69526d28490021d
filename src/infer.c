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
  int lc = -1;
  for (int i = 0; i < m->nlayers; i++)
    if (m->layers[i].kind == XD_L_CONV) lc = i;
  if (lc < 0) return -1;
  const xd_layer *L = &m->layers[lc];
  xd_step_ctx c = {0};
  load_input(m, ws, 1, image);
  const float *z = xd_forward(m, ws, 1, &c);
  xd_probs(m, 1, z, ws->dlast); /* dlast is free until the gradient is seeded below */
  *prob = m->nout == 1 ? ws->dlast[0] : ws->dlast[1];
  /* d(score)/d(logits): the positive-class logit */
  for (int k = 0; k < m->nout; k++) ws->dlast[k] = (m->nout == 1 || k == 1) ? 1.0f : 0.0f;
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
