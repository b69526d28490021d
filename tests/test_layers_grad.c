/* Finite-difference gradient checks for every layer and activation.
 *
 * Each check uses the scalar loss L = sum(y * r) for a fixed random r, so the analytic gradient of L with
 * respect to the output is r; the backward kernels' gradients are compared with central differences of L
 * (accumulated in double) at sampled coordinates. Tolerance: |fd - an| <= rtol * (|an| + 0.1 * max|an|). */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "layers.h"
#include "rng.h"

static void fill(float *p, size_t n, uint64_t seed, float lo, float hi) {
  uint64_t key = xd_key(seed, XD_STREAM_BENCH, 1, 0);
  for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * xd_rand_uniform(key, i);
}
static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double dotr(const float *y, const float *r, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
  return s;
}

typedef double (*loss_fn)(void *ctx);

/* Compares grad[i] with the central difference of f in p[i], at up to `nsample` coordinates. */
static void fd_check(const char *what, loss_fn f, void *ctx, float *p, const float *grad, size_t n, size_t nsample,
                     float eps, double rtol) {
  double gmax = 0.0, worst = 0.0;
  for (size_t i = 0; i < n; i++) gmax = fabs(grad[i]) > gmax ? fabs(grad[i]) : gmax;
  size_t step = n <= nsample ? 1 : n / nsample;
  int bad = 0;
  for (size_t i = (step > 1 ? step / 2 : 0); i < n; i += step) {
    float keep = p[i];
    p[i] = keep + eps;
    double lp = f(ctx);
    p[i] = keep - eps;
    double lm = f(ctx);
    p[i] = keep;
    double fd = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
    double tol = rtol * (fabs(grad[i]) + 0.1 * gmax);
    double err = fabs(fd - grad[i]);
    if (err / (tol / rtol) > worst) worst = err / (tol / rtol);
    if (err > tol && bad++ < 3) fprintf(stderr, "  %s[%zu]: fd %.7g analytic %.7g\n", what, i, fd, grad[i]);
  }
  if (getenv("XD_VERBOSE")) printf("%-40s worst scaled err %.3g\n", what, worst);
  CHECK_MSG(bad == 0, "%s: %d coordinates off (worst scaled err %.3g, rtol %g)", what, bad, worst, rtol);
  CHECK_MSG(gmax > 0.0, "%s: gradient is all zero", what);
}

/* ---- conv ---- */
typedef struct {
  xd_conv_dims d;
  float *x, *w, *b, *y, *r, *scr;
} conv_ctx;

static double conv_loss(void *c) {
  conv_ctx *k = c;
  conv2d_forward(&k->d, k->x, k->w, k->b, k->y, k->scr);
  return dotr(k->y, k->r, (size_t)k->d.B * k->d.F * k->d.OH * k->d.OW);
}

static void conv_grad(int B, int C, int H, int W, int F, int KH, int KW, int s, int same) {
  conv_ctx k;
  xd_conv_dims d = {B, C, H, W, F, KH, KW, s, 0, 0, 0, 0};
  if (same) { /* Keras/PyTorch 'same': extra padding at the bottom/right */
    d.OH = (H + s - 1) / s, d.OW = (W + s - 1) / s;
    int th = (d.OH - 1) * s + KH - H, tw = (d.OW - 1) * s + KW - W;
    d.pad_top = th > 0 ? th / 2 : 0, d.pad_left = tw > 0 ? tw / 2 : 0;
  } else {
    d.OH = (H - KH) / s + 1, d.OW = (W - KW) / s + 1;
  }
  k.d = d;
  size_t nx = (size_t)B * C * H * W, nw = (size_t)F * C * KH * KW, ny = (size_t)B * F * d.OH * d.OW;
  k.x = falloc(nx), k.w = falloc(nw), k.b = falloc(F), k.y = falloc(ny), k.r = falloc(ny);
  k.scr = falloc(conv2d_scratch_floats(&d, omp_get_max_threads()));
  float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(F);
  fill(k.x, nx, 1, -1, 1), fill(k.w, nw, 2, -0.5f, 0.5f), fill(k.b, F, 3, -1, 1), fill(k.r, ny, 4, -1, 1);
  conv2d_backward(&d, k.x, k.w, k.r, dx, dw, db, k.scr);
  char name[96];
  const char *pad = same ? "same" : "valid";
  snprintf(name, sizeof name, "conv(%dx%d k%dx%d s%d %s) dx", H, W, KH, KW, s, pad);
  fd_check(name, conv_loss, &k, k.x, dx, nx, 60, 1e-2f, 2e-3);
  snprintf(name, sizeof name, "conv(%dx%d k%dx%d s%d %s) dw", H, W, KH, KW, s, pad);
  fd_check(name, conv_loss, &k, k.w, dw, nw, 80, 1e-2f, 2e-3);
  snprintf(name, sizeof name, "conv(%dx%d k%dx%d s%d %s) db", H, W, KH, KW, s, pad);
  fd_check(name, conv_loss, &k, k.b, db, F, 80, 1e-2f, 2e-3);
  free(k.x), free(k.w), free(k.b), free(k.y), free(k.r), free(k.scr), free(dx), free(dw), free(db);
}

/* ---- pooling ---- */
typedef struct {
  xd_pool_dims d;
  int kind; /* 0 max, 1 avg, 2 global avg */
  float *x, *y, *r;
  int32_t *arg;
} pool_ctx;

static size_t pool_out(const pool_ctx *k) {
  return k->kind == 2 ? (size_t)k->d.B * k->d.C : (size_t)k->d.B * k->d.C * k->d.OH * k->d.OW;
}

static double pool_loss(void *c) {
  pool_ctx *k = c;
  if (k->kind == 0) maxpool_forward(&k->d, k->x, k->y, k->arg);
  if (k->kind == 1) avgpool_forward(&k->d, k->x, k->y);
  if (k->kind == 2) globalavgpool_forward(k->d.B, k->d.C, k->d.H * k->d.W, k->x, k->y);
  return dotr(k->y, k->r, pool_out(k));
}

static void pool_grad(int kind, int B, int C, int H, int W, int KH, int KW, int SH, int SW) {
  pool_ctx k = {{B, C, H, W, KH, KW, SH, SW, (H - KH) / SH + 1, (W - KW) / SW + 1}, kind, 0, 0, 0, 0};
  size_t nx = (size_t)B * C * H * W, ny = pool_out(&k);
  k.x = falloc(nx), k.y = falloc(ny), k.r = falloc(ny), k.arg = calloc(ny, sizeof(int32_t));
  float *dx = falloc(nx);
  /* distinct values 0.01 apart (a permutation), so +-eps never changes which element is the maximum */
  uint64_t key = xd_key(9, XD_STREAM_BENCH, 2, 0);
  for (size_t i = 0; i < nx; i++) k.x[i] = 0.01f * (float)i;
  for (size_t i = nx - 1; i > 0; i--) {
    size_t j = xd_rand_below(key, i, i + 1);
    float t = k.x[i];
    k.x[i] = k.x[j], k.x[j] = t;
  }
  fill(k.r, ny, 5, -1, 1);
  pool_loss(&k);
  fill(dx, nx, 6, -9, 9); /* garbage: backward must overwrite */
  if (kind == 0) maxpool_backward(&k.d, k.r, k.arg, dx);
  if (kind == 1) avgpool_backward(&k.d, k.r, dx);
  if (kind == 2) globalavgpool_backward(B, C, H * W, k.r, dx);
  const char *names[] = {"maxpool dx", "avgpool dx", "globalavgpool dx"};
  fd_check(names[kind], pool_loss, &k, k.x, dx, nx, nx, kind == 0 ? 3e-3f : 1e-2f, 2e-3);
  free(k.x), free(k.y), free(k.r), free(k.arg), free(dx);
}

static void maxpool_ties(void) {
  /* all-equal window: PyTorch picks the first maximum in row-major order */
  xd_pool_dims d = {1, 1, 4, 4, 2, 2, 2, 2, 2, 2};
  float x[16], y[4];
  int32_t arg[4];
  for (int i = 0; i < 16; i++) x[i] = 1.0f;
  x[10] = 2.0f, x[11] = 2.0f, x[14] = 2.0f;
  maxpool_forward(&d, x, y, arg);
  CHECK(arg[0] == 0 && arg[1] == 2 && arg[2] == 8 && arg[3] == 10);
  CHECK(y[3] == 2.0f && y[0] == 1.0f);
}

/* ---- dense ---- */
typedef struct {
  int B, IN, OUT;
  float *x, *w, *b, *y, *r;
} dense_ctx;

static double dense_loss(void *c) {
  dense_ctx *k = c;
  dense_forward(k->B, k->IN, k->OUT, k->x, k->w, k->b, k->y);
  return dotr(k->y, k->r, (size_t)k->B * k->OUT);
}

static void dense_grad(int B, int IN, int OUT) {
  dense_ctx k = {B, IN, OUT, 0, 0, 0, 0, 0};
  size_t nx = (size_t)B * IN, nw = (size_t)OUT * IN, ny = (size_t)B * OUT;
  k.x = falloc(nx), k.w = falloc(nw), k.b = falloc(OUT), k.y = falloc(ny), k.r = falloc(ny);
  float *dx = falloc(nx), *dw = falloc(nw), *db = falloc(OUT);
  fill(k.x, nx, 11, -1, 1), fill(k.w, nw, 12, -1, 1), fill(k.b, OUT, 13, -1, 1), fill(k.r, ny, 14, -1, 1);
  dense_backward(B, IN, OUT, k.x, k.w, k.r, dx, dw, db);
  fd_check("dense dx", dense_loss, &k, k.x, dx, nx, 80, 1e-2f, 2e-3);
  fd_check("dense dw", dense_loss, &k, k.w, dw, nw, 80, 1e-2f, 2e-3);
  fd_check("dense db", dense_loss, &k, k.b, db, OUT, 80, 1e-2f, 2e-3);
  free(k.x), free(k.w), free(k.b), free(k.y), free(k.r), free(dx), free(dw), free(db);
}

/* ---- batchnorm (training mode, phased API) ---- */
typedef struct {
  int B, C, HW;
  float *x, *g, *be, *y, *r, *sm, *si, *rm, *rv;
  double *st;
} bn_ctx;

static double bn_loss(void *c) {
  bn_ctx *k = c;
  batchnorm_stats(k->B, k->C, k->HW, k->x, k->st);
  batchnorm_forward_train(k->B, k->C, k->HW, k->x, k->st, (double)k->B * k->HW, k->g, k->be, 1e-5f, 0.1f, k->y,
                          k->sm, k->si, k->rm, k->rv);
  return dotr(k->y, k->r, (size_t)k->B * k->C * k->HW);
}

static void bn_grad(int B, int C, int HW) {
  bn_ctx k = {B, C, HW, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  size_t nx = (size_t)B * C * HW;
  k.x = falloc(nx), k.y = falloc(nx), k.r = falloc(nx), k.g = falloc(C), k.be = falloc(C);
  k.sm = falloc(C), k.si = falloc(C), k.rm = falloc(C), k.rv = falloc(C);
  k.st = calloc(2 * (size_t)C, sizeof(double));
  double *gst = calloc(2 * (size_t)C, sizeof(double));
  float *dx = falloc(nx), *dg = falloc(C), *db = falloc(C);
  fill(k.x, nx, 21, -1, 3), fill(k.r, nx, 22, -1, 1), fill(k.g, C, 23, 0.5f, 1.5f), fill(k.be, C, 24, -1, 1);
  for (int c = 0; c < C; c++) k.rm[c] = 0.5f, k.rv[c] = 2.0f;
  bn_loss(&k);
  /* running statistics: PyTorch's momentum update with the unbiased variance */
  for (int c = 0; c < C; c++) {
    double s = 0, s2 = 0, n = (double)B * HW;
    for (int b = 0; b < B; b++)
      for (int i = 0; i < HW; i++) s += k.x[((size_t)b * C + c) * HW + i];
    double mean = s / n;
    for (int b = 0; b < B; b++)
      for (int i = 0; i < HW; i++) s2 += pow(k.x[((size_t)b * C + c) * HW + i] - mean, 2);
    CHECK_CLOSE(k.rm[c], 0.9 * 0.5 + 0.1 * mean, 1e-6, 1e-7);
    CHECK_CLOSE(k.rv[c], 0.9 * 2.0 + 0.1 * s2 / (n - 1), 1e-6, 1e-7);
    CHECK_CLOSE(k.sm[c], mean, 1e-6, 1e-7);
    CHECK_CLOSE(k.si[c], 1.0 / sqrt(s2 / n + 1e-5), 1e-5, 0);
    /* eval mode with running stats set to the batch's biased stats reproduces the training output */
  }
  float *rmb = falloc(C), *rvb = falloc(C), *ye = falloc(nx);
  for (int c = 0; c < C; c++) rmb[c] = k.sm[c], rvb[c] = (float)(1.0 / ((double)k.si[c] * k.si[c]) - 1e-5);
  batchnorm_forward_eval(B, C, HW, k.x, k.g, k.be, rmb, rvb, 1e-5f, ye);
  double e = 0;
  for (size_t i = 0; i < nx; i++) e = fmax(e, fabs(ye[i] - k.y[i]));
  CHECK_MSG(e < 1e-4, "batchnorm eval vs train: %g", e);

  batchnorm_backward_stats(B, C, HW, k.x, k.r, k.sm, k.si, gst, dg, db);
  batchnorm_backward(B, C, HW, k.x, k.r, k.sm, k.si, k.g, gst, (double)B * HW, dx);
  char name[64];
  snprintf(name, sizeof name, "batchnorm(B%d C%d HW%d) dx", B, C, HW);
  fd_check(name, bn_loss, &k, k.x, dx, nx, 80, 1e-2f, 2e-3);
  snprintf(name, sizeof name, "batchnorm(B%d C%d HW%d) dgamma", B, C, HW);
  fd_check(name, bn_loss, &k, k.g, dg, C, 80, 1e-2f, 2e-3);
  snprintf(name, sizeof name, "batchnorm(B%d C%d HW%d) dbeta", B, C, HW);
  fd_check(name, bn_loss, &k, k.be, db, C, 80, 1e-2f, 2e-3);
  free(k.x), free(k.y), free(k.r), free(k.g), free(k.be), free(k.sm), free(k.si), free(k.rm), free(k.rv);
  free(k.st), free(gst), free(dx), free(dg), free(db), free(rmb), free(rvb), free(ye);
}

/* ---- activations ---- */
typedef struct {
  xd_act a;
  int rows, cols;
  float *x, *y, *r;
} act_ctx;

static double act_loss(void *c) {
  act_ctx *k = c;
  size_t n = (size_t)k->rows * k->cols;
  memcpy(k->y, k->x, n * sizeof(float));
  act_forward(k->a, k->rows, k->cols, k->y);
  return dotr(k->y, k->r, n);
}

static void act_grad(xd_act a) {
  act_ctx k = {a, 3, 7, 0, 0, 0};
  size_t n = 21;
  k.x = falloc(n), k.y = falloc(n), k.r = falloc(n);
  float *g = falloc(n);
  fill(k.x, n, 31 + a, -2.5f, 2.5f), fill(k.r, n, 41 + a, -1, 1);
  for (size_t i = 0; i < n; i++) /* keep FD points away from the kink at 0 */
    if (fabsf(k.x[i]) < 0.1f) k.x[i] = k.x[i] < 0 ? -0.3f : 0.3f;
  act_loss(&k);
  memcpy(g, k.r, n * sizeof(float));
  act_backward(a, k.rows, k.cols, k.y, g);
  char name[48];
  snprintf(name, sizeof name, "act %s", act_name(a));
  fd_check(name, act_loss, &k, k.x, g, n, n, 1e-2f, 2e-3);
  free(k.x), free(k.y), free(k.r), free(g);
}

static void act_values(void) {
  float v[6] = {-2.0f, -0.5f, 0.0f, 0.5f, 2.0f, 1000.0f};
  float y[6];
  memcpy(y, v, sizeof v);
  act_forward(XD_ACT_LEAKYRELU, 1, 6, y);
  CHECK_CLOSE(y[0], -0.02, 1e-6, 0);
  CHECK_CLOSE(y[4], 2.0, 0, 0);
  memcpy(y, v, sizeof v);
  act_forward(XD_ACT_ELU, 1, 6, y);
  CHECK_CLOSE(y[0], expm1(-2.0), 1e-6, 0);
  CHECK_CLOSE(y[3], 0.5, 0, 0);
  memcpy(y, v, sizeof v);
  act_forward(XD_ACT_SIGMOID, 1, 6, y);
  CHECK_CLOSE(y[0], 1.0 / (1.0 + exp(2.0)), 1e-6, 0);
  CHECK(y[5] == 1.0f);
  memcpy(y, v, sizeof v);
  act_forward(XD_ACT_SOFTMAX, 2, 3, y); /* the 1000 must not overflow */
  CHECK_CLOSE(y[0] + y[1] + y[2], 1.0, 1e-6, 0);
  CHECK_CLOSE(y[5], 1.0, 1e-6, 0);
  CHECK_CLOSE(y[1], exp(1.5) / (exp(0) + exp(1.5) + exp(2.0)), 1e-6, 0);
  CHECK(strcmp(act_name(XD_ACT_LEAKYRELU), "leakyrelu") == 0);
}

/* ---- dropout ---- */
static void dropout_checks(void) {
  const int64_t n = 100000;
  const float rate = 0.3f;
  float *x = falloc(n), *y = falloc(n), *y2 = falloc(n), *dy = falloc(n), *dx = falloc(n);
  fill(x, n, 51, 0.5f, 1.5f), fill(dy, n, 52, -1, 1);
  uint64_t key = xd_key(7, XD_STREAM_DROPOUT, 3, 4);
  dropout_forward(n, rate, key, 500, x, y);
  int64_t dropped = 0, bad = 0;
  for (int64_t i = 0; i < n; i++) {
    int kept = xd_rand_uniform(key, 500 + (uint64_t)i) >= rate;
    dropped += y[i] == 0.0f;
    if (kept ? fabsf(y[i] - x[i] / (1 - rate)) > 1e-6f * y[i] : y[i] != 0.0f) bad++;
  }
  CHECK_MSG(bad == 0, "dropout: %lld values differ from the mask rule", (long long)bad);
  CHECK_MSG(fabs((double)dropped / n - rate) < 0.006, "dropout rate %g", (double)dropped / n);
  /* gradient is mask * scale: dropout is linear, so dL/dx = r * mask / (1 - rate) exactly */
  dropout_backward(n, rate, key, 500, dy, dx);
  bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float want = y[i] != 0.0f ? dy[i] / (1 - rate) : 0.0f;
    if (fabsf(dx[i] - want) > 1e-6f) bad++;
  }
  CHECK_MSG(bad == 0, "dropout backward: %lld wrong", (long long)bad);
  dropout_forward(n, rate, key, 500, x, y2);
  CHECK(memcmp(y, y2, n * sizeof(float)) == 0);
  dropout_forward(n, rate, key, 501, x, y2);
  int64_t diff = 0;
  for (int64_t i = 0; i < n; i++) diff += (y[i] == 0.0f) != (y2[i] == 0.0f);
  CHECK_MSG(diff > n / 3, "offset 501 gives a nearly identical mask (%lld differ)", (long long)diff);
  /* offset shifts the mask: element i at offset 501 is element i+1 at offset 500 */
  diff = 0;
  for (int64_t i = 0; i + 1 < n; i++) diff += (y[i + 1] == 0.0f) != (y2[i] == 0.0f);
  CHECK(diff == 0);
  dropout_forward(n, 0.0f, key, 0, x, y2);
  CHECK(memcmp(x, y2, n * sizeof(float)) == 0);
  free(x), free(y), free(y2), free(dy), free(dx);
}

int main(void) {
  conv_grad(3, 2, 9, 7, 4, 3, 3, 2, 1);  /* non-square, stride 2, same, odd kernel */
  conv_grad(3, 3, 6, 8, 2, 2, 2, 1, 1);  /* even kernel, same: extra pad bottom/right */
  conv_grad(3, 2, 7, 11, 3, 3, 2, 1, 0); /* rectangular kernel, valid */
  conv_grad(3, 2, 10, 9, 3, 4, 4, 2, 1); /* even kernel, stride 2, same */
  conv_grad(3, 4, 5, 6, 3, 1, 1, 1, 0);  /* pointwise */
  pool_grad(0, 3, 2, 7, 9, 2, 2, 2, 2);
  pool_grad(0, 3, 2, 9, 8, 3, 3, 2, 2); /* overlapping windows */
  pool_grad(1, 3, 2, 7, 9, 3, 2, 2, 1);
  pool_grad(2, 3, 2, 5, 7, 1, 1, 1, 1);
  maxpool_ties();
  dense_grad(3, 37, 5);
  dense_grad(3, 200, 1);
  bn_grad(3, 4, 5);
  bn_grad(5, 3, 1);
  for (int a = XD_ACT_LINEAR; a <= XD_ACT_SOFTMAX; a++) act_grad((xd_act)a);
  act_values();
  dropout_checks();
  return check_done("layers_grad");
}
