/* `synth`: procedural chest-radiograph phantoms, the built-in default dataset.
 *
 * Each image renders an attenuation map D(x, y) in patient coordinates (torso, lungs, heart, spine, ribs,
 * clavicles, vessels, soft-tissue variation) and exposes it like film: I = fog + 255 * gain * (1 - exp(-k D))
 * plus grain. Anatomy is drawn from the same distribution for both classes; PNEUMONIA only adds patchy
 * opacities confined to the lung fields, a fraction of them faint and small, so the classes overlap in
 * their easy statistics and a classifier has to find the patches. Every image is a pure function of
 * (seed, index), so parallel generation is bitwise reproducible. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_write.h"
#include "pack.h"
#include "rng.h"

#define SYNTH_BLOCK 256
#define MAX_BLOBS 32
#define NRIBS 10

typedef struct {
  float x, y, r, amp;
} blob;

typedef struct {
  /* pose: image (u, v) in [-1, 1]^2 -> patient (x, y) */
  float scale, aspect, dx, dy, cth, sth;
  /* anatomy */
  float body_w, neck_w, lung_w[2], lung_top[2], lung_bot[2], lung_cx[2], dome[2], air;
  float heart_x, heart_y, heart_a, heart_b, heart_c, heart_s, heart_d;
  float rib_y0, rib_gap, rib_w, rib_d, rib_curve, spine_d, clav_d;
  float vessel_d, vessel_phase[2];
  float breast_d, breast_y;
  /* exposure */
  float k, gain, fog, heel_u, heel_v, noise;
  /* pathology: mottled interstitial haze per lung (fraction of the air density) and consolidation blobs */
  float haze[2];
  int nblobs;
  blob b[MAX_BLOBS];
  uint64_t tex_key, grain_key;
} phantom;

static float uni(xd_rng *r, float a, float b) { return a + (b - a) * xd_rng_uniform(r); }

static float smooth01(float t) {
  if (t <= 0) return 0;
  if (t >= 1) return 1;
  return t * t * (3 - 2 * t);
}

/* Lung field membership in [0, 1] for side s (0: image left = patient right, 1: image right). */
static float lung_mask(const phantom *p, int s, float x, float y) {
  float qx = (x - p->lung_cx[s]) / p->lung_w[s];
  if (qx <= -1.0f || qx >= 1.0f) return 0;
  float yc = 0.5f * (p->lung_top[s] + p->lung_bot[s]), hl = 0.5f * (p->lung_bot[s] - p->lung_top[s]);
  float qy = (y - yc) / hl;
  /* round apex above, squarish base below (costophrenic angles) */
  float r = qy < 0 ? qx * qx + qy * qy : sqrtf(qx * qx * qx * qx + qy * qy * qy * qy);
  float m = smooth01((1.0f - r) * 5.0f);
  float dome = p->lung_bot[s] - p->dome[s] * (1.0f - qx * qx); /* diaphragm: highest mid-lung */
  m *= smooth01((dome - y) * 14.0f);
  return m;
}

static float heart_mask(const phantom *p, float x, float y) {
  float hx = x - p->heart_x, hy = y - p->heart_y;
  float a = (p->heart_c * hx + p->heart_s * hy) / p->heart_a, b = (-p->heart_s * hx + p->heart_c * hy) / p->heart_b;
  return smooth01((1.0f - (a * a + b * b)) * 4.0f);
}

static float bump(float t) { /* smooth compact profile on |t| < 1 */
  float q = 1.0f - t * t;
  return q > 0 ? q * q : 0;
}

/* Cheap smooth value noise in [0, 1] on a lattice of spacing 1, keyed. */
static float value_noise(uint64_t key, float x, float y) {
  float fx = floorf(x), fy = floorf(y);
  int64_t ix = (int64_t)fx, iy = (int64_t)fy;
  float tx = x - fx, ty = y - fy;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  float v[4];
  for (int j = 0; j < 4; j++)
    v[j] = xd_rand_uniform(key, (uint64_t)((ix + (j & 1)) * 7919 + (iy + (j >> 1)) * 104729 + (1LL << 40)));
  float a = v[0] + (v[1] - v[0]) * tx, b = v[2] + (v[3] - v[2]) * tx;
  return a + (b - a) * ty;
}

static void draw_anatomy(phantom *p, xd_rng *r) {
  p->scale = uni(r, 0.80f, 1.02f);
  p->aspect = uni(r, 0.90f, 1.10f);
  p->dx = uni(r, -0.07f, 0.07f);
  p->dy = uni(r, -0.06f, 0.08f);
  float th = uni(r, -0.12f, 0.12f);
  p->cth = cosf(th);
  p->sth = sinf(th);
  p->body_w = uni(r, 0.88f, 1.08f);
  p->neck_w = uni(r, 0.24f, 0.32f);
  float lw = uni(r, 0.27f, 0.33f), top = uni(r, -0.78f, -0.66f), bot = uni(r, 0.42f, 0.62f);
  for (int s = 0; s < 2; s++) {
    p->lung_w[s] = lw * uni(r, 0.93f, 1.07f);
    p->lung_top[s] = top + uni(r, -0.03f, 0.03f);
    p->lung_bot[s] = bot + uni(r, -0.03f, 0.03f) + (s == 0 ? -0.04f : 0.0f); /* right dome sits higher */
    p->lung_cx[s] = (s ? 1.0f : -1.0f) * (p->lung_w[s] + uni(r, 0.08f, 0.13f));
    p->dome[s] = uni(r, 0.08f, 0.18f);
  }
  p->air = uni(r, 0.40f, 0.60f);
  p->heart_x = uni(r, 0.12f, 0.20f);
  p->heart_y = bot - uni(r, 0.24f, 0.34f);
  p->heart_a = uni(r, 0.28f, 0.36f);
  p->heart_b = uni(r, 0.19f, 0.25f);
  float ha = uni(r, -0.6f, -0.3f);
  p->heart_c = cosf(ha);
  p->heart_s = sinf(ha);
  p->heart_d = uni(r, 0.02f, 0.08f);
  p->rib_gap = (bot - top) / (NRIBS - 0.5f) * uni(r, 0.95f, 1.05f);
  p->rib_y0 = top - uni(r, 0.02f, 0.08f);
  p->rib_w = uni(r, 0.024f, 0.034f);
  p->rib_d = uni(r, 0.04f, 0.09f);
  p->rib_curve = uni(r, 1.0f, 1.5f);
  p->spine_d = uni(r, 0.15f, 0.30f);
  p->clav_d = uni(r, 0.15f, 0.28f);
  p->vessel_d = uni(r, 0.06f, 0.14f);
  p->vessel_phase[0] = uni(r, 0, 6.283f);
  p->vessel_phase[1] = uni(r, 0, 6.283f);
  p->breast_d = xd_rng_uniform(r) < 0.4f ? uni(r, 0.04f, 0.14f) : 0.0f;
  p->breast_y = bot - uni(r, 0.05f, 0.20f);
  p->k = uni(r, 1.0f, 1.8f);
  p->gain = uni(r, 0.80f, 0.95f);
  p->fog = uni(r, 3.0f, 22.0f);
  p->heel_u = uni(r, -0.07f, 0.07f);
  p->heel_v = uni(r, -0.05f, 0.05f);
  p->noise = uni(r, 2.0f, 7.0f);
}

/* Pneumonia: 1-3 patches, each a cluster of overlapping blobs centred inside a lung field. About a quarter
 * of the patches are faint, and faint or small patches can sit behind ribs or near the heart border. */
static void draw_opacities(phantom *p, xd_rng *r) {
  /* pediatric bronchopneumonia is often diffuse: a mottled haze over one or both lungs, faint in some */
  int side = (int)(xd_rng_next(r) & 1), both = xd_rng_uniform(r) < 0.5f;
  float h = xd_rng_uniform(r) < 0.2f ? uni(r, 0.06f, 0.12f) : uni(r, 0.12f, 0.35f);
  p->haze[side] = h;
  if (both) p->haze[1 - side] = h * uni(r, 0.5f, 1.0f);
  int npatch = 1 + (xd_rng_uniform(r) < 0.45f) + (xd_rng_uniform(r) < 0.2f);
  for (int q = 0; q < npatch; q++) {
    int s = (int)(xd_rng_next(r) & 1);
    float cx = p->lung_cx[s], cy = 0;
    for (int t = 0; t < 64; t++) { /* rejection-sample a point well inside the lung */
      float x = p->lung_cx[s] + p->lung_w[s] * uni(r, -0.9f, 0.9f);
      float y = uni(r, p->lung_top[s], p->lung_bot[s]);
      if (lung_mask(p, s, x, y) * (1.0f - heart_mask(p, x, y)) > 0.8f) {
        cx = x;
        cy = y;
        break;
      }
      cy = 0.5f * (p->lung_top[s] + p->lung_bot[s]);
    }
    float subtle = xd_rng_uniform(r) < 0.25f;
    float R = subtle ? uni(r, 0.08f, 0.16f) : uni(r, 0.15f, 0.30f);
    float amp = p->air * (subtle ? uni(r, 0.15f, 0.30f) : uni(r, 0.45f, 0.85f));
    int nb = 3 + (int)xd_rand_below(r->key, r->counter++, 6);
    for (int i = 0; i < nb && p->nblobs < MAX_BLOBS; i++) {
      blob *b = &p->b[p->nblobs++];
      float ang = uni(r, 0, 6.283f), dist = R * sqrtf(xd_rng_uniform(r));
      b->x = cx + dist * cosf(ang);
      b->y = cy + dist * sinf(ang);
      b->r = R * uni(r, 0.45f, 0.9f);
      b->amp = amp * uni(r, 0.6f, 1.0f);
    }
  }
}

static float density(const phantom *p, float x, float y) {
  /* torso: chord length of an elliptic cylinder, narrowing into shoulders and neck at the top */
  float w = p->neck_w + (p->body_w - p->neck_w) * smooth01((y + 1.08f) / 0.38f);
  float t = 1.0f - (x * x) / (w * w);
  if (t <= 0) return 0;
  float D = 0.95f * sqrtf(t);
  float ax = fabsf(x);
  int s = x > 0;
  float L = lung_mask(p, s, x, y), H = heart_mask(p, x, y);
  L *= 1.0f - H;
  /* mediastinum and spine: vertebral bodies with darker disc spaces */
  float spine = bump(ax / 0.07f);
  if (spine > 0) {
    float ph = (y - p->rib_y0) / p->rib_gap;
    float disc = bump((ph - floorf(ph) - 0.5f) * 8.0f);
    D += p->spine_d * spine * (1.0f - 0.35f * disc);
  }
  D += p->heart_d * H;
  /* ribs: one curve shape shifted down the chest; only the nearest rib matters */
  float xr = ax - 0.06f;
  if (xr > 0 && ax < w && y < p->lung_bot[s] + 0.1f) {
    float f = -0.12f * xr + p->rib_curve * xr * xr;
    float kf = (y - f - p->rib_y0) / p->rib_gap;
    float k = floorf(kf + 0.5f);
    if (k >= 0 && k < NRIBS) {
      float tt = (kf - k) * p->rib_gap / p->rib_w;
      float b = bump(tt);
      D += p->rib_d * (0.7f * b + 0.5f * bump(fabsf(tt) * 1.25f - 0.9f)) * smooth01((w - ax) * 6.0f) * (0.4f + 0.6f * L);
    }
  }
  /* clavicles */
  {
    float x0 = 0.07f, y0 = -0.66f + p->rib_y0 + 0.7f, x1 = 0.58f, y1 = y0 - 0.12f;
    float vx = x1 - x0, vy = y1 - y0, tpar = ((ax - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy);
    if (tpar > 0 && tpar < 1) {
      float dxp = ax - (x0 + tpar * vx), dyp = y - (y0 + tpar * vy);
      D += p->clav_d * bump(sqrtf(dxp * dxp + dyp * dyp) / 0.035f);
    }
  }
  if (L > 0) {
    D -= p->air * L * sqrtf(t);
    /* vascular markings fanning out from the hilum */
    float hx = x - (s ? 0.16f : -0.16f), hy = y + 0.02f, rr = sqrtf(hx * hx + hy * hy);
    float fan = cosf(atan2f(hy, hx) * 13.0f + p->vessel_phase[s] + 4.0f * rr);
    fan = fan > 0 ? fan * fan * fan * fan : 0;
    D += p->vessel_d * L * fan * fmaxf(0.0f, 1.0f - rr / 0.7f);
    /* soft-tissue (breast) shadow over the lower lung fields in some patients */
    if (p->breast_d > 0) D += p->breast_d * L * smooth01((y - p->breast_y + 0.25f) * 3.0f) * smooth01(ax * 3.0f);
    float op = 0;
    for (int i = 0; i < p->nblobs; i++) {
      const blob *b = &p->b[i];
      float ddx = x - b->x, ddy = y - b->y;
      float q = (ddx * ddx + ddy * ddy) / (b->r * b->r);
      if (q < 1) op += b->amp * (1 - q);
    }
    if (p->haze[s] > 0) {
      float mottle = value_noise(p->tex_key, x * 9.0f + 57.0f, y * 9.0f);
      D += p->haze[s] * p->air * L * sqrtf(t) * (0.3f + 0.7f * mottle * mottle);
    }
    if (op > 0) {
      float tex = value_noise(p->tex_key, x * 18.0f, y * 18.0f);
      D += fminf(op, p->air * 0.9f) * L * (0.55f + 0.45f * tex);
    }
  }
  return D;
}

static void render(const phantom *p, int size, uint8_t *out) {
  for (int py = 0; py < size; py++) {
    float v = ((float)py + 0.5f) / (float)size * 2.0f - 1.0f;
    for (int px = 0; px < size; px++) {
      float u = ((float)px + 0.5f) / (float)size * 2.0f - 1.0f;
      float a = u - p->dx, b = v - p->dy;
      float x = (p->cth * a + p->sth * b) / (p->scale * p->aspect), y = (-p->sth * a + p->cth * b) / p->scale;
      float D = density(p, x, y);
      float I = p->fog + 255.0f * p->gain * (1.0f - expf(-p->k * D)) * (1.0f + p->heel_u * u + p->heel_v * v);
      /* grain: Irwin-Hall sum of four 16-bit uniforms, ~N(0, 1/3) scaled */
      uint64_t g = xd_rand_u64(p->grain_key, (uint64_t)py * (uint64_t)size + (uint64_t)px);
      float n = (float)((g & 0xffff) + ((g >> 16) & 0xffff) + ((g >> 32) & 0xffff) + (g >> 48)) * (1.0f / 65536.0f) - 2.0f;
      I += p->noise * 1.7320508f * n;
      out[(size_t)py * size + px] = (uint8_t)(I <= 0 ? 0 : I >= 255 ? 255 : (int)(I + 0.5f));
    }
  }
}

static void synth_one(uint64_t seed, int64_t index, int label, int size, uint8_t *out) {
  phantom p;
  memset(&p, 0, sizeof p);
  xd_rng r = xd_rng_make(xd_key(seed, XD_STREAM_SYNTH, (uint64_t)index, 0));
  draw_anatomy(&p, &r);
  p.tex_key = xd_key(seed, XD_STREAM_SYNTH, (uint64_t)index, 1);
  p.grain_key = xd_key(seed, XD_STREAM_SYNTH, (uint64_t)index, 2);
  if (label == 1) draw_opacities(&p, &r);
  render(&p, size, out);
}

/* Split sizes 70/15/15 and a balanced, seeded label order per split. */
static int synth_split(xd_dsw *w, const xd_synth_opts *o, int split, int64_t first, int64_t n, xd_err *e) {
  static const char *const names[3] = {"train", "val", "test"}, *const cls[2] = {"NORMAL", "PNEUMONIA"};
  int rc = -1;
  size_t hw = (size_t)o->size * (size_t)o->size;
  int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
  uint8_t *labels = malloc((size_t)n), *img = xd_alloc(hw * SYNTH_BLOCK, "synth block", e);
  char (*pathbuf)[64] = malloc(sizeof(*pathbuf) * SYNTH_BLOCK);
  const char **paths = malloc(sizeof(char *) * SYNTH_BLOCK);
  if (!order || !labels || !img || !pathbuf || !paths) {
    xd_fail(e, "out of memory generating %lld images", (long long)n);
    goto done;
  }
  for (int64_t i = 0; i < n; i++) order[i] = i < (n + 1) / 2 ? 0 : 1;
  xd_rng r = xd_rng_make(xd_key(o->seed, XD_STREAM_SYNTH, (uint64_t)split, 0xC1A55));
  xd_shuffle(&r, order, n);
  for (int64_t i = 0; i < n; i++) labels[i] = (uint8_t)order[i];
  if (xd_dsw_begin_split(w, names[split], e) != 0) goto done;
  for (int64_t a = 0; a < n; a += SYNTH_BLOCK) {
    int m = (int)(n - a < SYNTH_BLOCK ? n - a : SYNTH_BLOCK);
#pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < m; i++) synth_one(o->seed, first + a + i, labels[a + i], o->size, img + (size_t)i * hw);
    for (int i = 0; i < m; i++) {
      snprintf(pathbuf[i], sizeof pathbuf[i], "synth/%s/%s/%06lld.png", names[split], cls[labels[a + i]],
               (long long)(a + i));
      paths[i] = pathbuf[i];
    }
    if (xd_dsw_append(w, img, labels + a, paths, m, e) != 0) goto done;
  }
  rc = xd_dsw_end_split(w, NULL, e);
done:
  free(order);
  free(labels);
  xd_free(img);
  free(pathbuf);
  free(paths);
  return rc;
}

int xd_synth(const char *out, const xd_synth_opts *o, xd_err *e) {
  if (o->n < 10 || o->n > 10000000) return xd_fail(e, "invalid --n %d (10 to 10000000)", o->n);
  if (o->size < 16 || o->size > 4096) return xd_fail(e, "invalid --size %d (16 to 4096)", o->size);
  int64_t n = o->n, ntrain = (int64_t)llround(0.70 * (double)n), nval = (int64_t)llround(0.15 * (double)n);
  int64_t counts[3] = {ntrain, nval, n - ntrain - nval};
  char source[128];
  snprintf(source, sizeof source, "synth seed=%llu n=%d", (unsigned long long)o->seed, o->n);
  static const char *const cls[2] = {"NORMAL", "PNEUMONIA"};
  char what[4200];
  snprintf(what, sizeof what, "%s: generating %d images of %dx%d", out, o->n, o->size, o->size);
  uint64_t block = xd_mul_sat((uint64_t)SYNTH_BLOCK, xd_mul_sat((uint64_t)o->size, (uint64_t)o->size));
  XD_TRY(xd_mem_check(xd_add_sat(block, xd_mul_sat((uint64_t)o->n, 9)), what, e));
  xd_dsw *w = NULL;
  XD_TRY(xd_dsw_create(&w, out, o->size, o->size, cls, 2, source, e));
  int64_t first = 0;
  for (int s = 0; s < 3; s++) {
    if (synth_split(w, o, s, first, counts[s], e) != 0) {
      xd_dsw_abort(w);
      return -1;
    }
    first += counts[s];
  }
  return xd_dsw_commit(w, e);
}

/* Exposed for tests and the sample writer: one phantom by global index and label. */
void xd_synth_image(uint64_t seed, int64_t index, int label, int size, uint8_t *out) {
  synth_one(seed, index, label, size, out);
}
