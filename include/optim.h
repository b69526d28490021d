/* Optimizers with PyTorch's exact update rules, over the whole parameter arena in one loop, and
 * learning-rate schedules. */
#ifndef XD_OPTIM_H
#define XD_OPTIM_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef enum { XD_OPT_ADAM = 0, XD_OPT_SGD, XD_OPT_RMSPROP, XD_OPT_ADAGRAD, XD_OPT_ADAMW } xd_opt_kind;

typedef struct xd_opt_config {
  xd_opt_kind kind;
  float lr;
  float beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-8; RMSProp eps 1e-8; AdaGrad eps 1e-10 */
  float momentum;          /* SGD (0.9 by default here), RMSProp (0) */
  int nesterov;            /* SGD */
  float alpha;             /* RMSProp smoothing, 0.99 */
  float weight_decay;      /* L2: g += wd * p, as PyTorch's weight_decay; AdamW: decoupled, p *= 1 - lr*wd */
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
  /* optional EMA of the weights (ema, n floats) and of the model's buffers (ema_buf, nbuf floats) */
  double ema_decay;      /* 0: off */
  float *ema, *ema_buf;
  size_t nbuf;
} xd_optimizer;

/* Starts an EMA at the current weights and buffers (decay in (0, 1), else -1; its memory checked
 * against xd_mem_limit() first). */
int xd_opt_ema_init(xd_optimizer *o, double decay, const float *params, const float *buffers, size_t nbuf, xd_err *e);
/* After xd_opt_step: folds the new weights and buffers into the EMA (no-op when off). */
void xd_opt_ema_step(xd_optimizer *o, const float *params, const float *buffers);

/* Allocates the moments for n parameters (checked against xd_mem_limit() first: "the optimizer state
 * needs ..., above the memory limit"). */
int xd_opt_alloc(xd_optimizer *o, const xd_opt_config *c, size_t n, xd_err *e);
void xd_opt_free(xd_optimizer *o);
/* One update of params with grads at learning rate lr (the schedule's value for this step). */
void xd_opt_step(xd_optimizer *o, float *params, const float *grads, float lr);

/* Exponential moving average of the weights (and batchnorm statistics), the model that is kept:
 * ema = d * ema + (1 - d) * x with d = min(decay, (1 + step) / (10 + step)), step = optimizer steps
 * taken so far (the warm-up of the decay, as in TensorFlow's and timm's EMA). */
void xd_ema_update(float *ema, const float *x, size_t n, double decay, int64_t step);

/* Learning-rate schedules: "constant", "step:EVERY:GAMMA" (x GAMMA every EVERY epochs),
 * "cosine" (to 0 over the run's epochs), "cosine:MIN_FACTOR", "plateau[:FACTOR:PATIENCE]" (ReduceLROnPlateau:
 * the training loop multiplies the lr by FACTOR (gamma) after PATIENCE (every) epochs without improvement of
 * the monitored metric; these functions give it the constant lr). Without warm-up the lr changes once per
 * epoch; with warmup_epochs W > 0 it is computed per step: linear from lr/(W*S) to lr over the first
 * W*S steps (S steps per epoch), then the schedule over the remaining steps (cosine per step). */
typedef struct xd_schedule {
  int kind; /* 0 constant, 1 step, 2 cosine, 3 plateau (gamma: FACTOR, every: PATIENCE) */
  int every;
  double gamma, min_factor;
  int warmup_epochs;
} xd_schedule;
/* 0, or -1 for anything else: EVERY a positive int, 0 < GAMMA <= 1, 0 <= MIN_FACTOR <= 1, plateau's
 * 0 < FACTOR < 1 (default 0.1) and PATIENCE in 1..1000000 (default 2), every number
 * finite and filling its field ("step:1:nan", "cosine:", "step:2:0.5x" are refused). */
int xd_schedule_parse(const char *s, xd_schedule *out);
/* lr for 0-based epoch of `epochs` total */
float xd_schedule_lr(const xd_schedule *s, float base_lr, int epoch, int epochs);
/* lr for 0-based optimizer step `step` with `spe` steps per epoch (handles the warm-up). */
float xd_schedule_lr_step(const xd_schedule *s, float base_lr, int64_t step, int spe, int epochs);

#endif
