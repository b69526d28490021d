/* ckpt_diff A.h5 B.h5 [TOL] [--optim]: compares the weights (and batchnorm statistics) of two xray-dp
 * checkpoints tensor by tensor. TOL 0 (default) demands bitwise equality; otherwise each tensor's
 * normwise error max|a-b|/max|b| must be <= TOL. --optim also compares the optimizer moments.
 * Prints the worst error; exit 0 if within tolerance, 1 if not, 2 on bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

static double worst = 0;
static int bad = 0;

static void cmp(const char *what, const float *a, const float *b, size_t n, double tol) {
  double num = 0, den = 0;
  int differ = memcmp(a, b, n * sizeof(float)) != 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  double err = den > 0 ? num / den : num;
  worst = fmax(worst, err);
  if ((tol == 0 && differ) || err > tol) {
    printf("%s: differs (normwise %.3g)\n", what, err);
    bad = 1;
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ckpt_diff A.h5 B.h5 [TOL] [--optim]\n");
    return 2;
  }
  double tol = 0;
  int optim = 0;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--optim")) optim = 1;
    else tol = atof(argv[i]);
  }
  xd_err e = {{0}};
  xd_model a, b;
  if (xd_checkpoint_load(argv[1], &a, NULL, NULL, &e) || xd_checkpoint_load(argv[2], &b, NULL, NULL, &e)) {
    fprintf(stderr, "ckpt_diff: %s\n", e.msg);
    return 2;
  }
  if (a.nparams != b.nparams || strcmp(a.text, b.text) != 0) {
    fprintf(stderr, "ckpt_diff: the checkpoints hold different models\n");
    return 2;
  }
  cmp("params", a.params, b.params, a.nparams, tol);
  if (a.nbuffers) cmp("batchnorm statistics", a.buffers, b.buffers, a.nbuffers, tol);
  if (optim) {
    xd_optimizer oa, ob;
    xd_opt_kind kind;
    double ema = 0;
    if (xd_checkpoint_optim_info(argv[1], &kind, &ema, &e)) {
      fprintf(stderr, "ckpt_diff: %s\n", e.msg);
      return 2;
    }
    xd_opt_config c = xd_opt_defaults(kind, 1e-3f);
    if (xd_opt_alloc(&oa, &c, a.nparams, &e) || xd_opt_alloc(&ob, &c, b.nparams, &e) ||
        (ema > 0 && (xd_opt_ema_init(&oa, ema, a.params, a.buffers, a.nbuffers, &e) ||
                     xd_opt_ema_init(&ob, ema, b.params, b.buffers, b.nbuffers, &e))) ||
        xd_checkpoint_load_optim(argv[1], &a, &oa, &e) || xd_checkpoint_load_optim(argv[2], &b, &ob, &e)) {
      fprintf(stderr, "ckpt_diff: %s\n", e.msg);
      return 2;
    }
    cmp("optimizer m", oa.m, ob.m, a.nparams, tol);
    cmp("optimizer v", oa.v, ob.v, a.nparams, tol);
    if (ema > 0) {
      cmp("weight EMA", oa.ema, ob.ema, a.nparams, tol);
      if (a.nbuffers) cmp("batchnorm statistics EMA", oa.ema_buf, ob.ema_buf, a.nbuffers, tol);
    }
    if (oa.step != ob.step) {
      printf("optimizer step: %lld vs %lld\n", (long long)oa.step, (long long)ob.step);
      bad = 1;
    }
  }
  printf("ckpt_diff: worst normwise error %.3g (%s)\n", worst, tol == 0 ? "bitwise" : "tolerance");
  return bad;
}
