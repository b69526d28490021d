/* Compares xray-dp with the PyTorch reference fixtures written by scripts/make_fixtures.py:
 * logits and loss (1e-5), every gradient (1e-4), weights after 1 and 3 Adam steps (1e-5), and after 1
 * and 2 steps of SGD-momentum, SGD-Nesterov with weight decay, RMSProp, AdaGrad, Adam with weight decay.
 * The layer-graph fixtures (resnet: the resnet-s preset's structure at width 2; graph: standardize inside
 * the network, identity skips, in=input, overlapping pools, batchnorm with activations on flat tensors)
 * record AdamW (decoupled decay) after 1 and 3 steps and two weight EMAs (decay 0.998: always in the
 * warm-up min(decay, (1+s)/(10+s)); decay 0.2: capped from step 2), checked to the same tolerances.
 * Errors are normwise per tensor: max|ours - torch| / max|torch|. The reference is float64, so this is
 * our float32 error. XD_TORCH_REF_VERBOSE=1 prints every tensor's error.
 *
 * A conv bias followed by batchnorm has a gradient that is zero in exact arithmetic (both sides hold
 * rounding noise): it is measured against the scale of the same layer's weight gradient.
 *
 * Adam and RMSProp normalise each gradient element by its own magnitude, so an element whose true
 * gradient is within 1000x of float32's rounding noise on that tensor (measured: max|our gradient -
 * the float64 one|; e.g. a conv bias that a batchnorm nearly cancels) moves by up to +-lr with a sign
 * and size that rounding decides, in any float32 implementation, PyTorch's included. Those elements
 * are held to the largest step the optimizer can take (their count is printed); every other element
 * to 1e-5. Batchnorm running variances are held to 1e-5 after every step; so are running means after
 * the first step (computed from the initial weights). After s > 1 steps a running mean inherits the
 * noisy biases above: a bias off by up to b(k) = 2 * 3.17 lr k after k steps shifts its channel's batch
 * mean by as much (the activations in between are 1-Lipschitz), and running_mean = sum over steps of
 * 0.1 * 0.9^(s-k) * batch mean(k), so its error is held to 0.1 * sum_k b(k - 1) = 0.1 * 3.17 lr s (s - 1)
 * (1.9e-3 at s = 3; measured: 2.3e-4). An EMA is a convex combination of the weights after steps 0..s
 * and is held to the same bounds as the weights after step s. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "h5util.h"
#include "loss.h"
#include "model.h"
#include "optim.h"

static float *read_ds(hid_t f, const char *path, size_t *n) {
  hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  if (d < 0) return NULL;
  hid_t s = H5Dget_space(d);
  *n = (size_t)H5Sget_simple_extent_npoints(s);
  float *buf = malloc(*n * sizeof(float) + 1);
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  H5Sclose(s);
  H5Dclose(d);
  return buf;
}

static int verbose; /* XD_TORCH_REF_VERBOSE=1: every tensor's error */

/* max|a-b| / max(max|b|, scale) for one tensor; prints and counts a failure if above tol. scale is 0
 * except for a tensor that is zero in exact arithmetic (see zero_grad_scale) */
static double compare_scaled(const char *what, const float *a, const float *b, size_t n, double tol, double scale) {
  double num = 0, den = scale;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  double err = den > 0 ? num / den : num;
  CHECK_MSG(err <= tol, "%s: normwise error %.3g > %.1g", what, err, tol);
  if (verbose)
    printf("\n    %-40s %.3e  (max abs %.3e)%s", what, err, num, scale > 0 ? " (scale: the layer's weight gradient)" : "");
  return err;
}
static double compare(const char *what, const float *a, const float *b, size_t n, double tol) {
  return compare_scaled(what, a, b, n, tol, 0);
}

/* The gradient of a conv bias followed by batchnorm is zero in exact arithmetic (the normalisation
 * removes any per-channel constant): the float64 reference holds rounding noise (~1e-17) and ours float32
 * rounding noise, so a relative error means nothing. Such a tensor (max|ref| below 1e-6 of the same
 * layer's weight gradient) is measured against the scale of the weight gradient instead. */
static double zero_grad_scale(const float *ref, size_t n, double weight_scale) {
  double mx = 0;
  for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
  return mx < 1e-6 * weight_scale ? weight_scale : 0;
}

typedef struct { const char *name; size_t off, n; int buffer; } tref;

/* the tensors of the model in the fixture's naming: "<i>/weight" etc. */
static int list_tensors(const xd_model *m, tref *out, char names[][32]) {
  int k = 0;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    if (L->w_n == 0) continue;
    snprintf(names[k], 32, "%d/weight", i);
    out[k] = (tref){names[k], L->w_off, L->w_n, 0};
    k++;
    snprintf(names[k], 32, "%d/bias", i);
    out[k] = (tref){names[k], L->b_off, L->b_n, 0};
    k++;
    if (L->kind == XD_L_BATCHNORM) {
      snprintf(names[k], 32, "%d/running_mean", i);
      out[k] = (tref){names[k], L->rm_off, (size_t)L->in_c, 1};
      k++;
      snprintf(names[k], 32, "%d/running_var", i);
      out[k] = (tref){names[k], L->rv_off, (size_t)L->in_c, 1};
      k++;
    }
  }
  return k;
}

static double compare_group_step(hid_t f, const char *fixture, const char *group, const xd_model *m,
                                 const float *arena, const float *bufs, int with_buffers, double tol, double bound,
                                 double buf_tol, double buf_abs, const float *grads_ours, const float *p0, double wd,
                                 int *noisy);

/* Optimizer-step comparison: elements whose reference gradient g is well above our gradient's rounding
 * noise are held to tol; the others may differ by at most `bound` (the optimizer's largest total move). */
static double compare_step(const char *what, const float *a, const float *b, const float *g, const float *g_ours,
                           const float *p0, double wd, size_t n, double tol, double bound, int *noisy) {
  double gnoise = 0, den = 0, num = 0;
  for (size_t i = 0; i < n; i++) gnoise = fmax(gnoise, fabs((double)g[i] - g_ours[i])), den = fmax(den, fabs((double)b[i]));
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    /* the optimizer sees g + wd p: an element where the two cancel is as ill-conditioned as a tiny g */
    if (fabs((double)g[i] + wd * p0[i]) <= 1000 * gnoise) {
      (*noisy)++;
      CHECK_MSG(d <= bound, "%s[%zu]: moved %.3g from the reference, beyond the optimizer's largest step %.3g", what, i,
                d, bound);
    } else {
      num = fmax(num, d);
    }
  }
  double err = den > 0 ? num / den : num;
  CHECK_MSG(err <= tol, "%s: normwise error %.3g > %.1g", what, err, tol);
  return err;
}

static double compare_group(hid_t f, const char *fixture, const char *group, const xd_model *m, const float *arena,
                            int with_buffers, double tol) {
  return compare_group_step(f, fixture, group, m, arena, m->buffers, with_buffers, tol, 0, 0, 0, NULL, NULL, 0, NULL);
}

/* arena: the parameters to compare (layout of m->params), bufs: the batchnorm statistics (of m->buffers) */
static double compare_group_step(hid_t f, const char *fixture, const char *group, const xd_model *m,
                                 const float *arena, const float *bufs, int with_buffers, double tol, double bound,
                                 double buf_tol, double buf_abs, const float *grads_ours, const float *p0, double wd,
                                 int *noisy) {
  tref t[256];
  char names[256][32];
  int k = list_tensors(m, t, names);
  double worst = 0, weight_scale = 0; /* max|ref| of the last weight tensor (it precedes its bias) */
  const int is_grads = !strcmp(group, "grads");
  for (int j = 0; j < k; j++) {
    if (t[j].buffer && !with_buffers) continue;
    char path[128], what[256];
    snprintf(path, sizeof path, "/%s/%s", group, t[j].name);
    size_t n = 0;
    float *ref = read_ds(f, path, &n);
    CHECK_MSG(ref && n == t[j].n, "%s: %s missing or wrong size", fixture, path);
    if (!ref || n != t[j].n) {
      free(ref);
      continue;
    }
    snprintf(what, sizeof what, "%s %s", fixture, path);
    const float *mine = (t[j].buffer ? bufs : arena) + t[j].off;
    if (noisy && !t[j].buffer) {
      snprintf(path, sizeof path, "/grads/%s", t[j].name);
      size_t ng = 0;
      float *g = read_ds(f, path, &ng);
      CHECK(g && ng == n);
      if (g && ng == n) worst = fmax(worst, compare_step(what, mine, ref, g, grads_ours + t[j].off, p0 + t[j].off, wd, n, tol,
                                                         bound, noisy));
      free(g);
    } else {
      double scale = 0;
      if (is_grads && strstr(t[j].name, "/weight")) {
        weight_scale = 0;
        for (size_t i = 0; i < n; i++) weight_scale = fmax(weight_scale, fabs((double)ref[i]));
      } else if (is_grads && strstr(t[j].name, "/bias")) {
        scale = zero_grad_scale(ref, n, weight_scale);
      }
      if (t[j].buffer && buf_abs > 0 && strstr(t[j].name, "running_mean")) {
        double num = 0;
        for (size_t i = 0; i < n; i++) num = fmax(num, fabs((double)mine[i] - ref[i]));
        CHECK_MSG(num <= buf_abs, "%s: max abs error %.3g > %.3g, the drift noisy biases can cause", what, num, buf_abs);
        if (verbose) printf("\n    %-40s max abs %.3e (bound %.3e)", what, num, buf_abs);
      } else {
        worst = fmax(worst, compare_scaled(what, mine, ref, n, t[j].buffer && buf_tol > 0 ? buf_tol : tol, scale));
      }
    }
    free(ref);
  }
  return worst;
}

static double step_loss(xd_model *m, xd_workspace *ws, const float *x, const uint8_t *y, int B, const float **logits) {
  size_t in = (size_t)B * m->in_c * m->in_h * m->in_w;
  memcpy(ws->act[0], x, in * sizeof(float));
  xd_step_ctx c = {1, 0, 0, 0, B, NULL};
  const float *z = xd_forward(m, ws, B, &c);
  if (logits) *logits = z;
  double loss = m->loss == XD_LOSS_BCE ? xd_loss_bce(B, z, y, NULL, 1.0 / B, ws->dlast)
                                       : xd_loss_ce(B, m->nout, z, y, NULL, 1.0 / B, ws->dlast);
  xd_backward(m, ws, B, &c, -1);
  return loss;
}

static void run_fixture(const char *path, const char *name) {
  xd_err e = {{0}};
  xd_model m;
  if (xd_checkpoint_load(path, &m, NULL, NULL, &e)) {
    CHECK_MSG(0, "%s", e.msg);
    return;
  }
  hid_t f = xd_h5_open_read(path, NULL); /* the same file-access settings as the checkpoint reader */
  size_t nx = 0, ny = 0, nz = 0;
  float *x = read_ds(f, "/x", &nx);
  hid_t dy = H5Dopen2(f, "/y", H5P_DEFAULT);
  hid_t sy = H5Dget_space(dy);
  ny = (size_t)H5Sget_simple_extent_npoints(sy);
  uint8_t *y = malloc(ny);
  H5Dread(dy, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
  H5Sclose(sy);
  H5Dclose(dy);
  int B = (int)ny;
  double ref_loss = 0;
  hid_t a = H5Aopen(f, "loss", H5P_DEFAULT);
  H5Aread(a, H5T_NATIVE_DOUBLE, &ref_loss);
  H5Aclose(a);

  xd_workspace ws;
  CHECK(xd_workspace_alloc(&ws, &m, B, &e) == 0);
  const float *z;
  double loss = step_loss(&m, &ws, x, y, B, &z);
  float *ref_z = read_ds(f, "/logits", &nz);
  CHECK(nz == (size_t)B * m.nout);
  char what[256];
  snprintf(what, sizeof what, "%s logits", name);
  double ez = compare(what, z, ref_z, nz, 1e-5);
  CHECK_CLOSE(loss, ref_loss, 1e-5, 0);
  double eg = compare_group(f, name, "grads", &m, m.grads, 0, 1e-4);
  printf("%-12s logits %.2e  loss %.2e  grads %.2e", name, ez, fabs(loss - ref_loss) / fabs(ref_loss), eg);

  /* mirrors scripts/make_fixtures.py */
  struct { const char *group; xd_opt_kind kind; float lr, wd; int nesterov; int steps[2]; } opts[] = {
      {"adam", XD_OPT_ADAM, 1e-3f, 0, 0, {1, 3}},     {"sgd", XD_OPT_SGD, 1e-2f, 0, 0, {1, 2}},
      {"sgdn", XD_OPT_SGD, 1e-2f, 1e-2f, 1, {1, 2}},  {"rmsprop", XD_OPT_RMSPROP, 1e-3f, 0, 0, {1, 2}},
      {"adagrad", XD_OPT_ADAGRAD, 1e-2f, 0, 0, {1, 2}}, {"adamwd", XD_OPT_ADAM, 1e-3f, 1e-2f, 0, {1, 2}},
      {"adamw", XD_OPT_ADAMW, 1e-3f, 1e-2f, 0, {1, 3}}};
  const int nopts = (int)(sizeof opts / sizeof opts[0]);
  /* with AdamW, two weight EMAs (make_fixtures.py EMAS): "ema_slow" through the optimizer's own EMA
   * (xd_opt_ema_init / xd_opt_ema_step), "ema_fast" through xd_ema_update on arrays of our own */
  const double ema_slow = 0.998, ema_fast = 0.2;
  for (int o = 0; o < nopts; o++) {
    char g1[32];
    snprintf(g1, sizeof g1, "/%s1", opts[o].group);
    if (H5Lexists(f, g1, H5P_DEFAULT) <= 0) continue;
    CHECK_MSG(xd_checkpoint_load_weights(path, &m, &e) == 0, "%s", e.msg); /* back to the initial state */
    xd_optimizer opt;
    xd_opt_config oc = xd_opt_defaults(opts[o].kind, opts[o].lr);
    oc.weight_decay = opts[o].wd;
    oc.nesterov = opts[o].nesterov;
    CHECK(xd_opt_alloc(&opt, &oc, m.nparams, &e) == 0);
    const int adamw = opts[o].kind == XD_OPT_ADAMW;
    float *fast = NULL, *fast_buf = NULL;
    if (adamw) {
      CHECK_MSG(xd_opt_ema_init(&opt, ema_slow, m.params, m.buffers, m.nbuffers, &e) == 0, "%s", e.msg);
      fast = malloc(m.nparams * sizeof(float));
      fast_buf = malloc((m.nbuffers + 1) * sizeof(float));
      memcpy(fast, m.params, m.nparams * sizeof(float));
      memcpy(fast_buf, m.buffers, m.nbuffers * sizeof(float));
    }
    int last = opts[o].steps[1] ? opts[o].steps[1] : opts[o].steps[0];
    float *gours = malloc(m.nparams * sizeof(float)), *p0 = malloc(m.nparams * sizeof(float));
    memcpy(p0, m.params, m.nparams * sizeof(float));
    for (int s = 1; s <= last; s++) {
      step_loss(&m, &ws, x, y, B, NULL);
      if (s == 1) memcpy(gours, m.grads, m.nparams * sizeof(float));
      xd_opt_step(&opt, m.params, m.grads, opts[o].lr);
      if (adamw) {
        CHECK(opt.step == s);
        xd_opt_ema_step(&opt, m.params, m.buffers);
        xd_ema_update(fast, m.params, m.nparams, ema_fast, opt.step);
        xd_ema_update(fast_buf, m.buffers, m.nbuffers, ema_fast, opt.step);
      }
      if (s == opts[o].steps[0] || s == opts[o].steps[1]) {
        char g[32];
        snprintf(g, sizeof g, "%s%d", opts[o].group, s);
        /* SGD is linear in the gradient: every element strict. Adam moves an element at most lr*(1-b1)/sqrt(1-b2) ~ 3.2 lr per step; RMSProp's first step lr/sqrt(1-alpha) = 10 lr */
        double per_step = opts[o].kind == XD_OPT_RMSPROP                                    ? 10.0
                          : opts[o].kind == XD_OPT_ADAM || opts[o].kind == XD_OPT_ADAMW ? 3.17
                          : opts[o].kind == XD_OPT_ADAGRAD                                  ? 1.0 /* lr * g/sqrt(sum g^2) <= lr */
                                                                                            : 0.0;
        int noisy = 0;
        /* RMSProp's second step divides by sqrt(0.99*0.01 g1^2 + 0.01 g2^2) ~ 0.14|g|: it multiplies the first
         * step's rounding differences about 7x, so that one comparison is held to 1e-4 */
        double tol = opts[o].kind == XD_OPT_RMSPROP && s > 1 ? 1e-4 : 1e-5;
        /* AdamW's decay is decoupled: Adam itself sees the gradient alone, so a tiny g is the ill-conditioned case */
        double wd_seen = adamw ? 0.0 : opts[o].wd, bound = 2.0 * per_step * opts[o].lr * s;
        /* running means after s > 1 steps: see the header */
        double buf_abs = per_step > 0 && s > 1 ? 0.1 * bound * (s - 1) / 2 : 0;
        double ew = compare_group_step(f, name, g, &m, m.params, m.buffers, 1, tol, bound, 1e-5,
                                       buf_abs, gours, p0, wd_seen, per_step > 0 ? &noisy : NULL);
        printf("  %s %.2e (%d noisy)", g, ew, noisy);
        if (adamw) {
          /* an EMA is a convex combination of the weights after steps 0..s: the same tolerances hold */
          struct { const char *group; const float *p, *b; } emas[2] = {{"ema_slow", opt.ema, opt.ema_buf},
                                                                       {"ema_fast", fast, fast_buf}};
          for (int k = 0; k < 2; k++) {
            snprintf(g, sizeof g, "%s%d", emas[k].group, s);
            int nz2 = 0;
            CHECK_MSG(H5Lexists(f, g, H5P_DEFAULT) > 0, "%s: no /%s", name, g);
            double ee = compare_group_step(f, name, g, &m, emas[k].p, emas[k].b, 1, tol, bound, 1e-5,
                                           buf_abs, gours, p0, wd_seen, &nz2);
            printf("  %s %.2e", g, ee);
          }
        }
      }
    }
    free(gours);
    free(p0);
    free(fast);
    free(fast_buf);
    xd_opt_free(&opt);
  }
  printf("\n");
  free(ref_z);
  free(x);
  free(y);
  H5Fclose(f);
  xd_workspace_free(&ws, &m);
  xd_model_free(&m);
}

int main(int argc, char **argv) {
  verbose = getenv("XD_TORCH_REF_VERBOSE") && atoi(getenv("XD_TORCH_REF_VERBOSE")) > 0;
  const char *dir = argc > 1 ? argv[1] : "tests/fixtures";
  const char *names[] = {"keras-seed", "tripathi5", "petre-bn", "mixed", "resnet", "graph"};
  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/torch_%s.h5", dir, names[i]);
    run_fixture(path, names[i]);
  }
  return check_done("torch_ref");
}
