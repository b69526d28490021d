/* Shortcut audit: perturbations that should not change the diagnosis, the prediction changes they
 * cause, and the Grad-CAM mass in the central thorax versus the border (include/audit.h). */
#include "audit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "metrics.h"

static const xd_perturbation PERTURBATIONS[] = {
    {"identity", XD_PT_IDENTITY, 0, 0, "no change (pipeline check: must give flip rate 0)"},
    {"squeeze", XD_PT_SCALE_X, 0.8, 0, "width x0.8, height unchanged, centred (edge columns repeat)"},
    {"stretch", XD_PT_SCALE_X, 1.25, 0, "width x1.25, height unchanged, centred (sides cropped)"},
    {"border-median", XD_PT_BORDER, 0.08, -1, "outer 8% frame set to the image's median"},
    {"border-black", XD_PT_BORDER, 0.08, 0, "outer 8% frame set to black"},
    {"markers", XD_PT_TOP_CORNERS, 0.20, 0.15, "top-left and top-right 20%x15% patches set to the median"},
    {"brighter", XD_PT_TONE, 0.1, 1.0, "brightness +0.1 on [0,1]"},
    {"darker", XD_PT_TONE, -0.1, 1.0, "brightness -0.1 on [0,1]"},
    {"gamma-0.7", XD_PT_TONE, 0, 0.7, "gamma 0.7 (x^0.7: brighter mid-tones)"},
    {"gamma-1.4", XD_PT_TONE, 0, 1.4, "gamma 1.4 (x^1.4: darker mid-tones)"},
    {"nearest-2x", XD_PT_DOWN_NEAREST, 2, 0, "2x2 area-average down, nearest-neighbour back up"},
    {"box-3x3", XD_PT_BOX_BLUR, 1, 0, "3x3 box blur, edge-clamped"},
};
#define NPERT (int)(sizeof PERTURBATIONS / sizeof PERTURBATIONS[0])

const xd_perturbation *xd_perturbations(int *count) {
  *count = NPERT;
  return PERTURBATIONS;
}

const xd_perturbation *xd_perturbation_find(const char *name) {
  for (int i = 0; i < NPERT; i++)
    if (!strcmp(PERTURBATIONS[i].name, name)) return &PERTURBATIONS[i];
  return NULL;
}

static inline uint8_t round_u8(double v) {
  v = floor(v + 0.5);
  return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

static inline int round_int(double v) { return (int)floor(v + 0.5); }

uint8_t xd_image_median(const uint8_t *px, int64_t n) {
  if (n <= 0) return 0;
  int64_t hist[256] = {0};
  for (int64_t i = 0; i < n; i++) hist[px[i]]++;
  int64_t want = (n - 1) / 2, cum = 0;
  for (int v = 0; v < 256; v++) {
    cum += hist[v];
    if (cum > want) return (uint8_t)v;
  }
  return 255;
}

void xd_perturb_scale_x(const uint8_t *src, int h, int w, double sx, uint8_t *dst) {
  for (int x = 0; x < w; x++) {
    double xs = ((double)x + 0.5 - w / 2.0) / sx + w / 2.0 - 0.5;
    if (xs < 0) xs = 0;
    if (xs > w - 1) xs = w - 1;
    int x0 = (int)floor(xs), x1 = x0 + 1 < w ? x0 + 1 : x0;
    double f = xs - x0;
    for (int y = 0; y < h; y++) {
      double a = src[(size_t)y * w + x0], b = src[(size_t)y * w + x1];
      dst[(size_t)y * w + x] = round_u8(a + f * (b - a));
    }
  }
}

void xd_perturb_border(const uint8_t *src, int h, int w, double frac, int value, uint8_t *dst) {
  int bw = round_int(frac * w), bh = round_int(frac * h);
  uint8_t v = value < 0 ? xd_image_median(src, (int64_t)h * w) : (uint8_t)(value > 255 ? 255 : value);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int frame = x < bw || x >= w - bw || y < bh || y >= h - bh;
      dst[(size_t)y * w + x] = frame ? v : src[(size_t)y * w + x];
    }
}

void xd_perturb_top_corners(const uint8_t *src, int h, int w, double fw, double fh, uint8_t *dst) {
  int pw = round_int(fw * w), ph = round_int(fh * h);
  uint8_t v = xd_image_median(src, (int64_t)h * w);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int patch = y < ph && (x < pw || x >= w - pw);
      dst[(size_t)y * w + x] = patch ? v : src[(size_t)y * w + x];
    }
}

void xd_perturb_tone(const uint8_t *src, int h, int w, double brightness, double gamma, uint8_t *dst) {
  uint8_t lut[256];
  for (int v = 0; v < 256; v++) {
    double y = v + brightness * 255.0; /* 0.1 * 255 is exactly 25.5 in double */
    y = y < 0 ? 0 : y > 255 ? 255 : y;
    if (gamma != 1.0) y = 255.0 * pow(y / 255.0, gamma);
    /* ties round in the direction of the shift, so +0.1 and -0.1 move a pixel by the same 26 levels */
    lut[v] = brightness < 0 ? (uint8_t)ceil(y - 0.5) : round_u8(y);
  }
  for (size_t i = 0; i < (size_t)h * w; i++) dst[i] = lut[src[i]];
}

void xd_perturb_down_nearest(const uint8_t *src, int h, int w, int f, uint8_t *dst) {
  if (f < 1) f = 1;
  for (int cy = 0; cy * f < h; cy++)
    for (int cx = 0; cx * f < w; cx++) {
      int y1 = (cy + 1) * f < h ? (cy + 1) * f : h, x1 = (cx + 1) * f < w ? (cx + 1) * f : w;
      int64_t sum = 0, cnt = (int64_t)(y1 - cy * f) * (x1 - cx * f);
      for (int y = cy * f; y < y1; y++)
        for (int x = cx * f; x < x1; x++) sum += src[(size_t)y * w + x];
      uint8_t v = (uint8_t)((2 * sum + cnt) / (2 * cnt)); /* rounded half up */
      for (int y = cy * f; y < y1; y++)
        for (int x = cx * f; x < x1; x++) dst[(size_t)y * w + x] = v;
    }
}

void xd_perturb_box_blur(const uint8_t *src, int h, int w, int r, uint8_t *dst) {
  if (r < 0) r = 0;
  int64_t k = (int64_t)(2 * r + 1) * (2 * r + 1);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int64_t sum = 0;
      for (int dy = -r; dy <= r; dy++) {
        int yy = y + dy < 0 ? 0 : y + dy >= h ? h - 1 : y + dy;
        for (int dx = -r; dx <= r; dx++) {
          int xx = x + dx < 0 ? 0 : x + dx >= w ? w - 1 : x + dx;
          sum += src[(size_t)yy * w + xx];
        }
      }
      dst[(size_t)y * w + x] = (uint8_t)((2 * sum + k) / (2 * k));
    }
}

void xd_perturb_apply(const xd_perturbation *p, const uint8_t *src, int h, int w, uint8_t *dst) {
  switch (p->kind) {
    case XD_PT_IDENTITY: memcpy(dst, src, (size_t)h * w); break;
    case XD_PT_SCALE_X: xd_perturb_scale_x(src, h, w, p->a, dst); break;
    case XD_PT_BORDER: xd_perturb_border(src, h, w, p->a, (int)p->b, dst); break;
    case XD_PT_TOP_CORNERS: xd_perturb_top_corners(src, h, w, p->a, p->b, dst); break;
    case XD_PT_TONE: xd_perturb_tone(src, h, w, p->a, p->b, dst); break;
    case XD_PT_DOWN_NEAREST: xd_perturb_down_nearest(src, h, w, (int)p->a, dst); break;
    case XD_PT_BOX_BLUR: xd_perturb_box_blur(src, h, w, (int)p->a, dst); break;
  }
}

void xd_audit_central_range(int n, double frac, int *lo, int *hi) {
  int m = round_int(n * (1 - frac) / 2);
  if (m < 0) m = 0;
  if (2 * m > n) m = n / 2;
  *lo = m;
  *hi = n - m;
}

int xd_cam_shares(const float *cam, int h, int w, double box_w, double box_h, double frame, double *center,
                  double *border) {
  int x0, x1, y0, y1;
  xd_audit_central_range(w, box_w, &x0, &x1);
  xd_audit_central_range(h, box_h, &y0, &y1);
  int bw = round_int(frame * w), bh = round_int(frame * h);
  double tot = 0, c = 0, b = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      double v = cam[(size_t)y * w + x];
      tot += v;
      if (y >= y0 && y < y1 && x >= x0 && x < x1) c += v;
      if (x < bw || x >= w - bw || y < bh || y >= h - bh) b += v;
    }
  if (!(tot > 0) || !isfinite(tot)) return -1;
  *center = c / tot;
  *border = b / tot;
  return 0;
}

static void region_areas(int h, int w, double *center, double *border) {
  float *ones = malloc((size_t)h * w * sizeof *ones);
  if (!ones) {
    *center = *border = NAN;
    return;
  }
  for (size_t i = 0; i < (size_t)h * w; i++) ones[i] = 1;
  if (xd_cam_shares(ones, h, w, XD_AUDIT_BOX_W, XD_AUDIT_BOX_H, XD_AUDIT_FRAME, center, border)) *center = *border = NAN;
  free(ones);
}

static int predicted(float p, double thr) { return p >= thr; } /* NaN: negative, as in metrics.h */

static int audit_cam(xd_model *m, xd_workspace *ws, xd_dataset *ds, int64_t n, int64_t want, xd_audit_cam *c,
                     xd_err *e) {
  memset(c, 0, sizeof *c);
  c->center_share = c->border_share = c->center_share_pos = c->center_share_neg = NAN;
  const int H = m->in_h, W = m->in_w;
  region_areas(H, W, &c->center_area, &c->border_area);
  int64_t N = want < n ? want : n;
  if (N <= 0) return 0;
  uint8_t *img = xd_alloc((size_t)H * W, "Grad-CAM image", e);
  float *cam = img ? xd_alloc((size_t)H * W * sizeof *cam, "Grad-CAM map", e) : NULL;
  if (!cam) {
    xd_free(img);
    return -1;
  }
  double sc = 0, sb = 0, sp = 0, sn = 0;
  int rc = 0;
  c->available = 1;
  for (int64_t k = 0; k < N && rc == 0; k++) {
    int64_t i = k * n / N; /* evenly spaced: splits are often stored class by class */
    uint8_t lab;
    float prob;
    if ((rc = xd_dataset_read_u8(ds, i, i + 1, img, &lab, e)) != 0) break;
    if (xd_gradcam(m, ws, img, H, W, cam, &prob) != 0) {
      c->available = 0; /* no conv layer (or out of memory): report no Grad-CAM rather than fail */
      break;
    }
    double ce, bo;
    if (xd_cam_shares(cam, H, W, XD_AUDIT_BOX_W, XD_AUDIT_BOX_H, XD_AUDIT_FRAME, &ce, &bo)) {
      c->empty++;
      continue;
    }
    c->images++;
    sc += ce;
    sb += bo;
    if (lab) {
      c->images_pos++;
      sp += ce;
    } else {
      c->images_neg++;
      sn += ce;
    }
  }
  if (!c->available) {
    c->images = c->empty = c->images_pos = c->images_neg = 0;
  } else {
    if (c->images) c->center_share = sc / (double)c->images;
    if (c->images) c->border_share = sb / (double)c->images;
    if (c->images_pos) c->center_share_pos = sp / (double)c->images_pos;
    if (c->images_neg) c->center_share_neg = sn / (double)c->images_neg;
  }
  xd_free(img);
  xd_free(cam);
  return rc;
}

#define CHUNK 256

int xd_audit_run(xd_model *m, xd_dataset *ds, const xd_audit_opts *o, xd_audit_result *r, xd_err *e) {
  memset(r, 0, sizeof *r);
  const xd_dataset_info *info = xd_dataset_get_info(ds);
  const int H = m->in_h, W = m->in_w;
  const size_t px = (size_t)H * W;
  if (info->height != H || info->width != W || m->in_c != 1)
    return xd_fail(e, "images are 1x%dx%d, the model expects %dx%dx%d", info->height, info->width, m->in_c, H, W);
  if (info->nclasses != 2) return xd_fail(e, "the audit needs 2 classes, the dataset has %d", info->nclasses);
  const int64_t n = info->n;
  if (n <= 0) return xd_fail(e, "the split is empty");
  int np = 0;
  const xd_perturbation *list[XD_AUDIT_MAX_ROWS];
  if (o->nperturb > 0) {
    if (o->nperturb > XD_AUDIT_MAX_ROWS) return xd_fail(e, "at most %d perturbations", XD_AUDIT_MAX_ROWS);
    for (np = 0; np < o->nperturb; np++) list[np] = o->perturb[np];
  } else {
    int cnt;
    const xd_perturbation *all = xd_perturbations(&cnt);
    for (int i = 0; i < cnt; i++)
      if (all[i].kind != XD_PT_IDENTITY) list[np++] = &all[i];
  }
  r->n = n;
  r->threshold = o->threshold;
  r->nrows = np;

  /* what is allocated below, before it is: the images of a chunk (twice), labels, probabilities */
  uint64_t need = xd_mul_sat(2 * CHUNK, (uint64_t)px);
  need = xd_add_sat(need, xd_mul_sat((uint64_t)n, 1 + (uint64_t)(np + 1) * sizeof(float)));
  XD_TRY(xd_mem_check(need, "the audit's images and probabilities", e));
  xd_workspace ws;
  if (xd_workspace_alloc(&ws, m, o->batch > 0 ? o->batch : 64, e)) return -1;
  int rc = 0;
  uint8_t *img = xd_alloc(CHUNK * px, "images", e);
  uint8_t *pimg = img ? xd_alloc(CHUNK * px, "perturbed images", e) : NULL;
  uint8_t *lab = pimg ? xd_alloc((size_t)n, "labels", e) : NULL;
  float *prob = lab ? xd_alloc((size_t)(np + 1) * n * sizeof(float), "probabilities", e) : NULL;
  if (!prob) rc = -1;
  for (int64_t a = 0; rc == 0 && a < n; a += CHUNK) {
    int64_t b = a + CHUNK < n ? a + CHUNK : n, nb = b - a;
    if ((rc = xd_dataset_read_u8(ds, a, b, img, lab + a, e)) != 0) break;
    xd_infer(m, &ws, nb, img, NULL, prob + a, NULL);
    for (int p = 0; p < np; p++) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < nb; i++) xd_perturb_apply(list[p], img + (size_t)i * px, H, W, pimg + (size_t)i * px);
      xd_infer(m, &ws, nb, pimg, NULL, prob + (size_t)(p + 1) * n + a, NULL);
    }
  }
  /* a non-finite probability (NaN weights) must be an error naming the image, not "nan" in a table */
  for (int64_t k = 0; rc == 0 && k < (int64_t)(np + 1) * n; k++) {
    if (prob[k] >= 0 && prob[k] <= 1) continue;
    int64_t i = k % n;
    int p = (int)(k / n);
    char path[4096];
    xd_err pe;
    if (xd_dataset_read_path(ds, i, path, sizeof path, &pe)) snprintf(path, sizeof path, "#%lld", (long long)i);
    rc = xd_fail(e, "image %lld (%s)%s%s: the model gives the probability %g, not a number in [0, 1] (non-finite "
                 "weights or activations)", (long long)i, path, p ? " perturbed by " : "", p ? list[p - 1]->name : "",
                 isnan(prob[k]) ? NAN : (double)prob[k]);
  }
  if (rc == 0) {
    xd_binary_metrics mt;
    xd_metrics_binary(n, prob, lab, o->threshold, &mt);
    r->roc_auc = mt.roc_auc;
    r->sensitivity = mt.recall;
    r->specificity = mt.specificity;
    r->positives = mt.confusion[1][0] + mt.confusion[1][1];
    r->positive_rate = (double)(mt.confusion[0][1] + mt.confusion[1][1]) / (double)n;
    for (int p = 0; p < np; p++) {
      const float *q = prob + (size_t)(p + 1) * n;
      xd_audit_row *row = &r->rows[p];
      row->p = list[p];
      xd_metrics_binary(n, q, lab, o->threshold, &mt);
      row->roc_auc = mt.roc_auc;
      row->delta_auc = mt.roc_auc - r->roc_auc;
      row->sensitivity = mt.recall;
      row->specificity = mt.specificity;
      double sum = 0, mx = 0;
      for (int64_t i = 0; i < n; i++) {
        int c0 = predicted(prob[i], o->threshold), c1 = predicted(q[i], o->threshold);
        if (c1 && !c0) row->flips_to_pos++;
        if (c0 && !c1) row->flips_to_neg++;
        double d = fabs((double)q[i] - (double)prob[i]);
        sum += d;
        if (d > mx || isnan(d)) mx = d;
      }
      row->flip_rate = (double)(row->flips_to_pos + row->flips_to_neg) / (double)n;
      row->mean_abs_dprob = sum / (double)n;
      row->max_abs_dprob = mx;
    }
  }
  if (rc == 0) rc = audit_cam(m, &ws, ds, n, o->cam_images, &r->cam, e);
  xd_free(img);
  xd_free(pimg);
  xd_free(lab);
  xd_free(prob);
  xd_workspace_free(&ws, m);
  return rc;
}
