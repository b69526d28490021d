/* Optimizers with PyTorch's exact update rules, over the whole parameter arena in one loop, and
 * learning-rate schedules. */
#ifndef XD_OPTIM_H
#define XD_OPTIM_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum { XD_OPT_ADAM = 0, XD_OPT_SGD, XD_OPT_RMSPROP, XD_OPT_ADAGRAD } xd_opt_kind;

typedef struct xd_opt_config {
  xd_opt_kind kind;
  float lr;
  float beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-8; RMSProp eps 1e-8; AdaGrad eps 1e-10 */
  float momentum;          /* SGD (0.9 by default here), RMSProp (0) */
  int nesterov;            /* SGD */
  float alpha;             /* RMSProp smoothing, 0.99 */
  float weight_decay;      /* L2: g += wd * p, as PyTorch's weight_decay */
} xd_opt_config;

/* Defaults for a kind (PyTorch's, except SGD momentum 0.9 which almost everyone sets). */
xd_opt_config xd_opt_defaults(xd_opt_kind kind, float lr);
int xd_opt_parse(const char *s, xd_opt_kind *k);
const char *xd_opt_name(xd_opt_kind k);

typedef struct xd_optimizer {
  xd_opt_config c;
  size_t n;
  float *m, *v; /* first/second moment (Adam), momentum buffer (SGD, RMSProp), square sums (AdaGrad, RMSProp) */
  int64_t step;
} xd_optimizer;

int xd_opt_alloc(xd_optimizer *o, const xd_opt_config *c, size_t n, xd_err *e);
void xd_opt_free(xd_optimizer *o);
/* One update of params with grads at learning rate lr (the schedule's value for this step). */
void xd_opt_step(xd_optimizer *o, float *params, const float *grads, float lr);

/* Learning-rate schedules: "constant", "step:EVERY:GAMMA" (x GAMMA every EVERY epochs),
 * "cosine" (to 0 over the run's epochs), "cosine:MIN_FACTOR". */
typedef struct xd_schedule {
  int kind; /* 0 constant, 1 step, 2 cosine */
  int every;
  double gamma, min_factor;
} xd_schedule;
int xd_schedule_parse(const char *s, xd_schedule *out);
/* lr for 0-based epoch of `epochs` total */
float xd_schedule_lr(const xd_schedule *s, float base_lr, int epoch, int epochs);

#endif
