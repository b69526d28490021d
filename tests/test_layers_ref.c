/* Optimised kernels against the plain *_ref versions (and a naive GEMM) on odd shapes, and bitwise
 * identity of every kernel between 1 and 2 OpenMP threads, for every instruction set the CPU supports:
 * without XD_ISA set the test re-runs itself once per supported ISA with XD_ISA=<isa> (include/isa.h). */
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "isa.h"
#include "layers.h"
#include "rng.h"

static void fill(float *p, size_t n, uint64_t seed, float lo, float hi) {
  uint64_t key = xd_key(seed, XD_STREAM_BENCH, 0, 0);
  for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * xd_rand_uniform(key, i);
}

/* max |a-b| relative to max |b|: the error measure that stays meaningful where sums cancel */
static double rel_err(const float *a, const float *b, size_t n) {
  double m = 0.0, e = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > e || d != d) e = d != d ? INFINITY : d;
    if (fabs(b[i]) > m) m = fabs(b[i]);
  }
  return m > 0 ? e / m : e;
}

static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void test_gemm(void) {
  const int shapes[][3] = {{1, 1, 1}, {13, 53, 300}, {100, 7, 5}, {5, 100, 17}, {97, 131, 257}, {8, 48, 256},
                           {33, 1, 40}, {16, 96, 513}, {5, 9, 2500}, {6, 7, 70}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int bi = 0; bi < 2; bi++) {
          int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
          int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
          float beta = bi ? 0.5f : 0.0f;
          float *A = falloc((size_t)(ta ? K : M) * lda), *B = falloc((size_t)(tb ? N : K) * ldb);
          float *C = falloc((size_t)M * ldc), *R = falloc((size_t)M * ldc);
          fill(A, (size_t)(ta ? K : M) * lda, 1 + s, -1, 1);
          fill(B, (size_t)(tb ? N : K) * ldb, 2 + s, -1, 1);
          fill(C, (size_t)M * ldc, 3 + s, -1, 1);
          if (beta == 0.0f) /* C must not be read when beta == 0 */
            for (int i = 0; i < M; i++)
              for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = NAN;
          memcpy(R, C, sizeof(float) * M * ldc);
          for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
              double acc = 0.0;
              for (int k = 0; k < K; k++)
                acc += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                       (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
              R[(size_t)i * ldc + j] = (float)(acc + (beta != 0.0f ? beta * R[(size_t)i * ldc + j] : 0.0));
            }
          xd_sgemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
          double e = rel_err(C, R, (size_t)M * ldc);
          CHECK_MSG(e < 1e-5, "gemm %dx%dx%d ta=%d tb=%d beta=%g: rel err %g", M, N, K, ta, tb, beta, e);
          free(A), free(B), free(C), free(R);
        }
}

static xd_conv_dims conv_dims(int B, int C, int H, int W, int F, int KH, int KW, int s, int same) {
  xd_conv_dims d = {B, C, H, W, F, KH, KW, s, 0, 0, 0, 0};
  if (same) {
    d.OH = (H + s - 1) / s;
    d.OW = (W + s - 1) / s;
    int th = (d.OH - 1) * s + KH - H, tw = (d.OW - 1) * s + KW - W;
    d.pad_top = th > 0 ? th / 2 : 0;
    d.pad_left = tw > 0 ? tw / 2 : 0;
  } else {
    d.OH = (H - KH) / s + 1;
    d.OW = (W - KW) / s + 1;
  }
  return d;
}

static void conv_case(xd_conv_dims d) {
  size_t nx = (size_t)d.B * d.C * d.H * d.W, nw = (size_t)d.F * d.C * d.KH * d.KW;
  size_t ny = (size_t)d.B * d.F * d.OH * d.OW;
  float *x = falloc(nx), *w = falloc(nw), *b = falloc(d.F), *dy = falloc(ny);
  float *y = falloc(ny), *yr = falloc(ny), *dx = falloc(nx), *dxr = falloc(nx), *dw = falloc(nw),
        *dwr = falloc(nw), *db = falloc(d.F), *dbr = falloc(d.F);
  float *scr = falloc(conv2d_scratch_floats(&d, omp_get_max_threads()));
  fill(x, nx, 11, -1, 1), fill(w, nw, 12, -0.5f, 0.5f), fill(b, d.F, 13, -1, 1), fill(dy, ny, 14, -1, 1);
  fill(dx, nx, 15, -9, 9), fill(dw, nw, 16, -9, 9); /* garbage: the kernels must overwrite */
  conv2d_forward(&d, x, w, b, y, scr);
  conv2d_forward_ref(&d, x, w, b, yr);
  conv2d_backward(&d, x, w, dy, dx, dw, db, scr);
  conv2d_backward_ref(&d, x, w, dy, dxr, dwr, dbr);
  double ey = rel_err(y, yr, ny), ex = rel_err(dx, dxr, nx), ew = rel_err(dw, dwr, nw), eb = rel_err(db, dbr, d.F);
  CHECK_MSG(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5,
            "conv B%d C%d %dx%d F%d k%dx%d s%d pad %d,%d -> %dx%d: y %g dx %g dw %g db %g", d.B, d.C, d.H, d.W, d.F,
            d.KH, d.KW, d.stride, d.pad_top, d.pad_left, d.OH, d.OW, ey, ex, ew, eb);
  /* dx == NULL leaves the weight gradients unchanged */
  float *dw2 = falloc(nw);
  conv2d_backward(&d, x, w, dy, NULL, dw2, db, scr);
  CHECK(memcmp(dw, dw2, nw * sizeof(float)) == 0);
  free(x), free(w), free(b), free(dy), free(y), free(yr), free(dx), free(dxr), free(dw), free(dwr), free(db),
      free(dbr), free(scr), free(dw2);
}

static void test_conv(void) {
  conv_case(conv_dims(3, 2, 9, 7, 4, 3, 3, 2, 1));
  conv_case(conv_dims(3, 3, 8, 6, 5, 2, 2, 1, 1));
  conv_case(conv_dims(2, 3, 6, 11, 3, 3, 2, 1, 0));
  conv_case(conv_dims(3, 2, 10, 9, 6, 4, 4, 2, 1));
  conv_case(conv_dims(2, 5, 7, 5, 9, 1, 1, 1, 0)); /* pointwise path */
  conv_case(conv_dims(2, 3, 9, 8, 4, 1, 1, 2, 0)); /* strided 1x1: im2col path */
  conv_case(conv_dims(1, 16, 13, 11, 33, 3, 3, 1, 1));
  conv_case(conv_dims(3, 2, 12, 13, 4, 5, 3, 3, 0)); /* valid, stride 3, uncovered border */
  conv_case(conv_dims(3, 1, 20, 37, 5, 3, 3, 1, 0));  /* one channel: direct kernels, 35-wide rows (tails) */
  conv_case(conv_dims(2, 1, 11, 23, 6, 5, 4, 1, 0));  /* direct kernels, generic taps */
  conv_case(conv_dims(2, 1, 11, 23, 6, 3, 3, 1, 1));  /* one channel, padded: im2col path */
  /* over 512 output pixels: the weight gradient runs in pixel chunks (one boundary mid-row) */
  conv_case(conv_dims(2, 3, 30, 27, 5, 3, 3, 1, 1));
  conv_case(conv_dims(2, 2, 26, 25, 3, 3, 3, 1, 0));
}

/* 2x2 / stride 2 max pooling (its own fast path) against a naive loop, with ties and NaNs. */
static void test_maxpool2(void) {
  xd_pool_dims d = {2, 3, 9, 11, 2, 2, 2, 2, 4, 5};
  size_t nx = (size_t)d.B * d.C * d.H * d.W, ny = (size_t)d.B * d.C * d.OH * d.OW;
  float *x = falloc(nx), *y = falloc(ny);
  int32_t *am = calloc(ny, sizeof *am);
  fill(x, nx, 71, -2, 2);
  for (size_t i = 0; i < nx; i += 7) x[i] = 1.0f; /* ties */
  for (size_t i = 3; i < nx; i += 29) x[i] = NAN;
  maxpool_forward(&d, x, y, am);
  int bad = 0;
  for (int pl = 0; pl < d.B * d.C; pl++)
    for (int oy = 0; oy < d.OH; oy++)
      for (int ox = 0; ox < d.OW; ox++) {
        const float *xp = x + (size_t)pl * d.H * d.W;
        int best = 2 * oy * d.W + 2 * ox;
        for (int k = 1; k < 4; k++) {
          int idx = (2 * oy + k / 2) * d.W + 2 * ox + k % 2;
          if (xp[idx] > xp[best] || (xp[idx] != xp[idx] && xp[best] == xp[best])) best = idx;
        }
        size_t o = ((size_t)pl * d.OH + oy) * d.OW + ox;
        float ya = y[o], yb = xp[best];
        bad += am[o] != best || !(ya == yb || (ya != ya && yb != yb));
      }
  CHECK_MSG(bad == 0, "maxpool 2x2: %d outputs differ from the naive loop", bad);
  free(x), free(y), free(am);
}

static void test_dense(void) {
  const int shapes[][3] = {{3, 37, 5}, {1, 1, 1}, {7, 200, 130}, {32, 97, 1}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    int B = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
    float *x = falloc((size_t)B * IN), *w = falloc((size_t)OUT * IN), *b = falloc(OUT), *dy = falloc((size_t)B * OUT);
    float *y = falloc((size_t)B * OUT), *yr = falloc((size_t)B * OUT), *dx = falloc((size_t)B * IN),
          *dxr = falloc((size_t)B * IN), *dw = falloc((size_t)OUT * IN), *dwr = falloc((size_t)OUT * IN),
          *db = falloc(OUT), *dbr = falloc(OUT);
    fill(x, (size_t)B * IN, 21, -1, 1), fill(w, (size_t)OUT * IN, 22, -1, 1), fill(b, OUT, 23, -1, 1);
    fill(dy, (size_t)B * OUT, 24, -1, 1), fill(dx, (size_t)B * IN, 25, -5, 5), fill(dw, (size_t)OUT * IN, 26, -5, 5);
    dense_forward(B, IN, OUT, x, w, b, y);
    dense_forward_ref(B, IN, OUT, x, w, b, yr);
    dense_backward(B, IN, OUT, x, w, dy, dx, dw, db);
    dense_backward_ref(B, IN, OUT, x, w, dy, dxr, dwr, dbr);
    double ey = rel_err(y, yr, (size_t)B * OUT), ex = rel_err(dx, dxr, (size_t)B * IN),
           ew = rel_err(dw, dwr, (size_t)OUT * IN), eb = rel_err(db, dbr, OUT);
    CHECK_MSG(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5, "dense %d %d %d: y %g dx %g dw %g db %g", B, IN,
              OUT, ey, ex, ew, eb);
    free(x), free(w), free(b), free(dy), free(y), free(yr), free(dx), free(dxr), free(dw), free(dwr), free(db),
        free(dbr);
  }
}

/* ---- 1 vs 2 threads: every kernel, outputs compared bit for bit ---- */

#define NBUF 48
typedef struct {
  float *f[NBUF];
  size_t n[NBUF];
  int32_t *arg;
  size_t narg;
  double st[2][64];
  int nf;
} outs;

static float *keep(outs *o, size_t n) {
  o->n[o->nf] = n;
  return o->f[o->nf++] = falloc(n);
}

static void run_conv(outs *o, xd_conv_dims d) {
  size_t nx = (size_t)d.B * d.C * d.H * d.W, nw = (size_t)d.F * d.C * d.KH * d.KW;
  size_t ny = (size_t)d.B * d.F * d.OH * d.OW;
  float *x = falloc(nx), *w = falloc(nw), *b = falloc(d.F), *dy = falloc(ny);
  float *scr = falloc(conv2d_scratch_floats(&d, 2));
  fill(x, nx, 31, -1, 1), fill(w, nw, 32, -1, 1), fill(b, d.F, 33, -1, 1), fill(dy, ny, 34, -1, 1);
  conv2d_forward(&d, x, w, b, keep(o, ny), scr);
  float *cdx = keep(o, nx), *cdw = keep(o, nw), *cdb = keep(o, d.F);
  conv2d_backward(&d, x, w, dy, cdx, cdw, cdb, scr);
  free(x), free(w), free(b), free(dy), free(scr);
}

static void run_all(outs *o) {
  /* convs big enough that both threads get samples; the second takes the one-channel direct kernels */
  run_conv(o, conv_dims(5, 6, 23, 19, 10, 3, 3, 2, 1));
  run_conv(o, conv_dims(5, 1, 30, 41, 7, 3, 3, 1, 0));
  run_conv(o, conv_dims(4, 3, 26, 25, 6, 3, 3, 1, 0)); /* > 512 pixels: chunked weight gradient */
  float *x, *w, *b, *dy;

  int B = 9, IN = 301, OUT = 200;
  x = falloc((size_t)B * IN), w = falloc((size_t)OUT * IN), b = falloc(OUT), dy = falloc((size_t)B * OUT);
  fill(x, (size_t)B * IN, 41, -1, 1), fill(w, (size_t)OUT * IN, 42, -1, 1), fill(b, OUT, 43, -1, 1);
  fill(dy, (size_t)B * OUT, 44, -1, 1);
  dense_forward(B, IN, OUT, x, w, b, keep(o, (size_t)B * OUT));
  float *ddx = keep(o, (size_t)B * IN), *ddw = keep(o, (size_t)OUT * IN), *ddb = keep(o, OUT);
  dense_backward(B, IN, OUT, x, w, dy, ddx, ddw, ddb);
  free(x), free(w), free(b), free(dy);

  xd_pool_dims p = {4, 5, 17, 15, 3, 3, 2, 2, 0, 0};
  p.OH = (p.H - p.KH) / p.SH + 1, p.OW = (p.W - p.KW) / p.SW + 1;
  size_t npx = (size_t)p.B * p.C * p.H * p.W, npy = (size_t)p.B * p.C * p.OH * p.OW;
  x = falloc(npx), dy = falloc(npy);
  fill(x, npx, 51, -1, 1), fill(dy, npy, 52, -1, 1);
  o->arg = calloc(npy, sizeof(int32_t));
  o->narg = npy;
  maxpool_forward(&p, x, keep(o, npy), o->arg);
  maxpool_backward(&p, dy, o->arg, keep(o, npx));
  avgpool_forward(&p, x, keep(o, npy));
  avgpool_backward(&p, dy, keep(o, npx));
  globalavgpool_forward(p.B, p.C, p.H * p.W, x, keep(o, (size_t)p.B * p.C));
  globalavgpool_backward(p.B, p.C, p.H * p.W, dy, keep(o, npx)); /* dy reused as [B,C] */

  /* batchnorm on the pooled input: [4, 5, 255] */
  int C = p.C, HW = p.H * p.W;
  float g[5], be[5], rm[5] = {0}, rv[5] = {1, 1, 1, 1, 1}, sm[5], si[5], dg[5], dbt[5];
  fill(g, 5, 53, 0.5f, 1.5f), fill(be, 5, 54, -1, 1);
  float *bdy = falloc(npx);
  fill(bdy, npx, 55, -1, 1);
  batchnorm_stats(p.B, C, HW, x, o->st[0]);
  float *by = keep(o, npx);
  batchnorm_forward_train(p.B, C, HW, x, o->st[0], (double)p.B * HW, g, be, 1e-5f, 0.1f, by, sm, si, rm, rv);
  batchnorm_backward_stats(p.B, C, HW, x, bdy, sm, si, o->st[1], dg, dbt);
  batchnorm_backward(p.B, C, HW, x, bdy, sm, si, g, o->st[1], (double)p.B * HW, keep(o, npx));
  float *bs = keep(o, 30);
  memcpy(bs, rm, sizeof rm), memcpy(bs + 5, rv, sizeof rv), memcpy(bs + 10, dg, sizeof dg);
  memcpy(bs + 15, dbt, sizeof dbt), memcpy(bs + 20, sm, sizeof sm), memcpy(bs + 25, si, sizeof si);
  batchnorm_forward_eval(p.B, C, HW, x, g, be, rm, rv, 1e-5f, keep(o, npx));
  free(bdy);

  /* element-wise kernels on a tensor above their parallel thresholds */
  int64_t rows = 300, cols = 257, n = rows * cols;
  float *a = falloc(n), *ady = falloc(n);
  fill(a, n, 61, -3, 3), fill(ady, n, 62, -1, 1);
  for (int k = XD_ACT_LINEAR; k <= XD_ACT_SOFTMAX; k++) {
    float *yy = keep(o, n), *gg = keep(o, n);
    memcpy(yy, a, n * sizeof(float)), memcpy(gg, ady, n * sizeof(float));
    act_forward((xd_act)k, rows, cols, yy);
    act_backward((xd_act)k, rows, cols, yy, gg);
  }
  dropout_forward(n, 0.3f, 77, 1000, a, keep(o, n));
  dropout_backward(n, 0.3f, 77, 1000, ady, keep(o, n));
  free(a), free(ady), free(x), free(dy);
}

static void test_threads(void) {
  outs o1 = {0}, o2 = {0};
  omp_set_num_threads(1);
  run_all(&o1);
  omp_set_num_threads(2);
  run_all(&o2);
  CHECK(o1.nf == o2.nf);
  for (int i = 0; i < o1.nf; i++) {
    CHECK_MSG(memcmp(o1.f[i], o2.f[i], o1.n[i] * sizeof(float)) == 0, "output %d differs between 1 and 2 threads",
              i);
    free(o1.f[i]), free(o2.f[i]);
  }
  CHECK(memcmp(o1.arg, o2.arg, o1.narg * sizeof(int32_t)) == 0);
  CHECK(memcmp(o1.st, o2.st, sizeof o1.st) == 0);
  free(o1.arg), free(o2.arg);
}

/* Every table's GEMM against the naive one, in this process. */
static void test_gemm_all_isas(void) {
  for (int i = 0; i < XD_ISA_COUNT; i++) {
    const xd_kernels *k = xd_kernels_for((xd_isa)i);
    if (!k) continue;
    CHECK(k->isa == (xd_isa)i);
    int M = 37, N = 53, K = 301;
    float *A = falloc((size_t)M * K), *B = falloc((size_t)K * N), *C = falloc((size_t)M * N), *R = falloc((size_t)M * N);
    fill(A, (size_t)M * K, 81, -1, 1), fill(B, (size_t)K * N, 82, -1, 1);
    for (int r = 0; r < M; r++)
      for (int c = 0; c < N; c++) {
        double acc = 0.0;
        for (int j = 0; j < K; j++) acc += (double)A[(size_t)r * K + j] * B[(size_t)j * N + c];
        R[(size_t)r * N + c] = (float)acc;
      }
    k->sgemm(0, 0, M, N, K, A, K, B, N, 0.0f, C, N);
    double e = rel_err(C, R, (size_t)M * N);
    CHECK_MSG(e < 1e-5, "gemm on %s: rel err %g", xd_isa_name((xd_isa)i), e);
    free(A), free(B), free(C), free(R);
  }
}

/* Without XD_ISA: run this test again under each supported ISA; every child must pass. */
static int run_each_isa(char **argv) {
  int ran = 0;
  for (int i = 0; i < XD_ISA_COUNT; i++) {
    if (!xd_isa_supported((xd_isa)i)) continue;
    const char *name = xd_isa_name((xd_isa)i);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
      setenv("XD_ISA", name, 1);
      execv("/proc/self/exe", argv);
      execv(argv[0], argv);
      _exit(127);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "layers_ref under XD_ISA=%s failed", name);
    printf("layers_ref: ran under XD_ISA=%s\n", name);
    ran++;
  }
  CHECK(ran >= 1);
  test_gemm_all_isas();
  return check_done("layers_ref (all ISAs)");
}

int main(int argc, char **argv) {
  const char *want = getenv("XD_ISA");
  if (!want || !*want) return run_each_isa(argv);
  /* the child must really run the ISA it was asked for (the parent only asks for supported ones) */
  CHECK_MSG(!strcmp(xd_isa_name(xd_kernels_active()->isa), want), "XD_ISA=%s but active ISA is %s", want,
            xd_isa_name(xd_kernels_active()->isa));
  test_gemm();
  test_conv();
  test_maxpool2();
  test_dense();
  test_threads();
  return check_done("layers_ref");
}
