/* Layer graphs: finite differences of a whole residual model's loss in every parameter kind (the skip
 * connection's gradient is the sum of both paths), per-image standardisation's backward, and bitwise
 * identical gradients for 1 and 2 threads on the resnet-s preset. */
#include <omp.h>
#include <string.h>

#include "check.h"
#include "loss.h"
#include "model.h"
#include "rng.h"

static void fill(float *p, size_t n, uint64_t seed, float lo, float hi) {
  uint64_t key = xd_key(seed, XD_STREAM_BENCH, 7, 0);
  for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * xd_rand_uniform(key, i);
}

typedef struct {
  xd_model *m;
  xd_workspace *ws;
  int B;
  const float *x, *r;
} gctx;

/* L = sum(logits * r) in training mode (batchnorm on batch statistics, no dropout) */
static double graph_loss(gctx *g) {
  xd_step_ctx c = {1, 1, 0, 0, g->B, NULL};
  size_t px = (size_t)g->m->in_c * g->m->in_h * g->m->in_w;
  memcpy(g->ws->act[0], g->x, (size_t)g->B * px * sizeof(float));
  const float *z = xd_forward(g->m, g->ws, g->B, &c);
  double s = 0;
  for (int i = 0; i < g->B * g->m->nout; i++) s += (double)z[i] * g->r[i];
  return s;
}

static void graph_grad(const char *override) {
  /* every new construct: standardize, pad=1, stride 2, in=, add with an activation, batchnorm with an
   * activation, a tensor read by three layers, globalavgpool. Smooth activations keep the finite
   * differences exact (relu's kink is tested on its own in test_layers_grad) */
  const char *text =
      "input 1x9x8\n"
      "standardize\n"
      "conv 4 3x3 pad=1 name=stem\n"
      "batchnorm elu\n"
      "conv 4 3x3 pad=1\n"
      "add stem tanh name=r1\n"
      "conv 6 3x3 stride=2 pad=1 bias=0\n"
      "batchnorm elu\n"
      "conv 6 3x3 pad=1 name=main\n"
      "conv 6 1x1 stride=2 in=r1\n"
      "add main tanh name=r2\n"
      "conv 6 1x1 stride=2 in=stem name=far\n"
      "add r2 in=far\n"
      "globalavgpool\n"
      "dense 1 sigmoid\n";
  if (override) text = override;
  xd_model m;
  xd_err e = {{0}};
  CHECK_MSG(xd_model_build(&m, text, "graph", &e) == 0, "%s", e.msg);
  if (e.msg[0]) return;
  xd_model_init(&m, XD_INIT_TORCH, 5);
  const int B = 3;
  xd_workspace ws;
  CHECK(xd_workspace_alloc(&ws, &m, B, &e) == 0);
  size_t px = (size_t)m.in_c * m.in_h * m.in_w;
  float *x = calloc((size_t)B * px, sizeof *x), r[3] = {0.7f, -1.3f, 0.4f};
  fill(x, (size_t)B * px, 3, 0, 1);
  gctx g = {&m, &ws, B, x, r};
  graph_loss(&g);
  memcpy(ws.dlast, r, sizeof r);
  xd_step_ctx c = {1, 1, 0, 0, B, NULL};
  xd_backward(&m, &ws, B, &c, -1);
  float *an = malloc(m.nparams * sizeof *an);
  memcpy(an, m.grads, m.nparams * sizeof *an);
  double gmax = 0;
  for (size_t i = 0; i < m.nparams; i++) gmax = fabs(an[i]) > gmax ? fabs(an[i]) : gmax;
  int bad = 0, checked = 0;
  for (int l = 0; l < m.nlayers; l++) {
    const xd_layer *L = &m.layers[l];
    size_t offs[2] = {L->w_off, L->b_off}, ns[2] = {L->w_n, L->b_n};
    for (int t = 0; t < 2; t++)
      for (size_t j = 0; j < ns[t]; j += ns[t] > 12 ? ns[t] / 12 : 1) {
        float *p = m.params + offs[t] + j, keep = *p, eps = 1e-3f;
        *p = keep + eps;
        double lp = graph_loss(&g);
        *p = keep - eps;
        double lm = graph_loss(&g);
        *p = keep;
        double fd = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps)), a = an[offs[t] + j];
        checked++;
        if (fabs(fd - a) > 5e-3 * (fabs(a) + 0.1 * gmax)) {
          if (bad++ < 50) fprintf(stderr, "  layer %d %s[%zu]: fd %.7g analytic %.7g\n", l, t ? "b" : "w", j, fd, a);
        }
      }
  }
  CHECK_MSG(bad == 0, "residual graph: %d of %d coordinates off", bad, checked);
  CHECK(checked > 100 && gmax > 0);
  free(an);
  free(x);
  xd_workspace_free(&ws, &m);
  xd_model_free(&m);
}

/* standardize: gradient w.r.t. the input by finite differences, including a flat (clamped) image */
static void standardize_grad(void) {
  const int B = 3, n = 20;
  float x[60], y[60], r[60], dx[60], inv[3];
  fill(x, 60, 11, 0, 1);
  for (int i = 40; i < 60; i++) x[i] = 0.5f + 1e-5f * (float)(i % 3); /* std < eps: clamped */
  fill(r, 60, 12, -1, 1);
  standardize_forward(B, n, 1e-3f, x, y, inv);
  CHECK(inv[2] < 0 && inv[0] > 0);
  double mean = 0, var = 0;
  for (int i = 0; i < n; i++) mean += y[i];
  for (int i = 0; i < n; i++) var += (double)y[i] * y[i];
  CHECK_CLOSE(mean / n, 0, 0, 1e-6);
  CHECK_CLOSE(var / n, 1, 0, 1e-5);
  standardize_backward(B, n, y, inv, r, dx);
  int bad = 0;
  for (int i = 0; i < 60; i++) {
    float keep = x[i], eps = i >= 40 ? 1e-4f : 1e-3f;
    double l[2];
    for (int s = 0; s < 2; s++) {
      x[i] = keep + (s ? -eps : eps);
      standardize_forward(B, n, 1e-3f, x, y, inv);
      l[s] = 0;
      for (int k = 0; k < 60; k++) l[s] += (double)y[k] * r[k];
    }
    x[i] = keep;
    double fd = (l[0] - l[1]) / ((double)(keep + eps) - (double)(keep - eps));
    if (fabs(fd - dx[i]) > 2e-2 * (fabs(dx[i]) + 0.1)) {
      if (bad++ < 3) fprintf(stderr, "  standardize dx[%d]: fd %.7g analytic %.7g\n", i, fd, dx[i]);
    }
  }
  CHECK_MSG(bad == 0, "standardize: %d coordinates off", bad);
}

/* resnet-s at 32x32: gradients with 1 and 2 threads are bitwise identical */
static void threads_bitwise(void) {
  xd_model m;
  xd_err e = {{0}};
  CHECK(xd_model_from_arg(&m, "resnet-s", 1, 32, 32, &e) == 0);
  xd_model_init(&m, XD_INIT_TORCH, 9);
  const int B = 4;
  float *x = calloc((size_t)B * 32 * 32, sizeof *x), *g1 = malloc(m.nparams * sizeof *g1);
  fill(x, (size_t)B * 32 * 32, 4, 0, 1);
  uint8_t y[4] = {0, 1, 1, 0};
  for (int pass = 0; pass < 2; pass++) {
    omp_set_num_threads(pass + 1);
    xd_workspace ws;
    CHECK(xd_workspace_alloc(&ws, &m, B, &e) == 0);
    memcpy(ws.act[0], x, (size_t)B * 32 * 32 * sizeof *x);
    xd_step_ctx c = {1, 1, 3, 0, B, NULL};
    const float *z = xd_forward(&m, &ws, B, &c);
    xd_loss_bce(B, z, y, NULL, 1.0 / B, ws.dlast);
    xd_backward(&m, &ws, B, &c, -1);
    if (pass == 0) memcpy(g1, m.grads, m.nparams * sizeof *g1);
    else CHECK_MSG(memcmp(g1, m.grads, m.nparams * sizeof *g1) == 0, "resnet-s gradients differ for 1 vs 2 threads");
    xd_workspace_free(&ws, &m);
  }
  free(x);
  free(g1);
  xd_model_free(&m);
}

int main(void) {
  graph_grad(getenv("XD_GRAPH"));
  standardize_grad();
  threads_bitwise();
  return check_done("graph");
}
