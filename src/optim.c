#include "optim.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

xd_opt_config xd_opt_defaults(xd_opt_kind kind, float lr) {
  xd_opt_config c = {kind, lr, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 0.99f, 0.0f};
  if (kind == XD_OPT_SGD) c.momentum = 0.9f;
  if (kind == XD_OPT_ADAGRAD) c.eps = 1e-10f;
  return c;
}

int xd_opt_parse(const char *s, xd_opt_kind *k) {
  static const char *const n[] = {"adam", "sgd", "rmsprop", "adagrad", "adamw"};
  for (int i = 0; i < 5; i++)
    if (!strcmp(s, n[i])) {
      *k = (xd_opt_kind)i;
      return 0;
    }
  return -1;
}

const char *xd_opt_name(xd_opt_kind k) {
  static const char *const n[] = {"adam", "sgd", "rmsprop", "adagrad", "adamw"};
  return n[k];
}

int xd_opt_alloc(xd_optimizer *o, const xd_opt_config *c, size_t n, xd_err *e) {
  memset(o, 0, sizeof *o);
  o->c = *c;
  o->n = n;
  /* both moment arenas, before allocating either */
  XD_TRY(xd_mem_check(xd_mul_sat(xd_add_sat(xd_mul_sat(n, sizeof(float)), 64), 2), "the optimizer state", e));
  o->m = xd_alloc(n * sizeof(float), "optimizer state", e);
  o->v = o->m ? xd_alloc(n * sizeof(float), "optimizer state", e) : NULL;
  if (!o->v) {
    xd_opt_free(o);
    return -1;
  }
  return 0;
}

void xd_opt_free(xd_optimizer *o) {
  xd_free(o->m);
  xd_free(o->v);
  xd_free(o->ema);
  xd_free(o->ema_buf);
  o->m = o->v = o->ema = o->ema_buf = NULL;
}

int xd_opt_ema_init(xd_optimizer *o, double decay, const float *params, const float *buffers, size_t nbuf, xd_err *e) {
  if (!(decay > 0.0 && decay < 1.0)) return xd_fail(e, "EMA decay %g is not in (0, 1)", decay);
  XD_TRY(xd_mem_check(xd_add_sat(xd_mul_sat(xd_add_sat(o->n, nbuf), sizeof(float)), 256), "the weight EMA", e));
  o->ema_decay = decay;
  o->nbuf = nbuf;
  o->ema = xd_alloc(o->n * sizeof(float) + 64, "weight EMA", e);
  o->ema_buf = o->ema ? xd_alloc(nbuf * sizeof(float) + 64, "weight EMA", e) : NULL;
  if (!o->ema_buf) return -1;
  memcpy(o->ema, params, o->n * sizeof(float));
  if (nbuf) memcpy(o->ema_buf, buffers, nbuf * sizeof(float));
  return 0;
}

void xd_opt_ema_step(xd_optimizer *o, const float *params, const float *buffers) {
  if (!o->ema) return;
  xd_ema_update(o->ema, params, o->n, o->ema_decay, o->step);
  if (o->nbuf) xd_ema_update(o->ema_buf, buffers, o->nbuf, o->ema_decay, o->step);
}

/* Each update mirrors torch.optim's single-tensor CPU path (PyTorch 1.13 / 2.x), operation by
 * operation in float, with Python-side scalars computed in double like PyTorch does. */
void xd_opt_step(xd_optimizer *o, float *p, const float *grad, float lr) {
  const xd_opt_config *c = &o->c;
  const float wd = c->weight_decay;
  const int64_t n = (int64_t)o->n;
  float *m = o->m, *v = o->v;
  o->step++;
  switch (c->kind) {
    case XD_OPT_ADAMW:
    case XD_OPT_ADAM: {
      /* AdamW (torch.optim.AdamW): param.mul_(1 - lr * weight_decay) first, then Adam without L2 */
      const int decoupled = c->kind == XD_OPT_ADAMW;
      const float shrink = (float)(1.0 - (double)lr * (double)wd), l2 = decoupled ? 0.0f : wd;
      double bc1 = 1.0 - pow((double)c->beta1, (double)o->step);
      double bc2 = 1.0 - pow((double)c->beta2, (double)o->step);
      const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
      const float b1 = c->beta1, b2 = c->beta2, omb1 = (float)(1.0 - c->beta1), omb2 = (float)(1.0 - c->beta2);
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; i++) {
        if (decoupled) p[i] = p[i] * shrink;
        float g = grad[i] + l2 * p[i];
        m[i] = m[i] * b1 + g * omb1;
        v[i] = v[i] * b2 + g * g * omb2;
        float denom = sqrtf(v[i]) / bc2_sqrt + c->eps;
        p[i] = p[i] - step_size * (m[i] / denom);
      }
      break;
    }
    case XD_OPT_SGD: {
      const float mu = c->momentum;
      const int first = o->step == 1;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        if (mu != 0.0f) {
          m[i] = first ? g : m[i] * mu + g;
          g = c->nesterov ? g + mu * m[i] : m[i];
        }
        p[i] = p[i] - lr * g;
      }
      break;
    }
    case XD_OPT_RMSPROP: {
      const float a = c->alpha, oma = (float)(1.0 - c->alpha), mu = c->momentum;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        v[i] = v[i] * a + g * g * oma;
        float avg = sqrtf(v[i]) + c->eps;
        if (mu > 0.0f) {
          m[i] = m[i] * mu + g / avg;
          p[i] = p[i] - lr * m[i];
        } else {
          p[i] = p[i] - lr * (g / avg);
        }
      }
      break;
    }
    case XD_OPT_ADAGRAD: {
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        v[i] = v[i] + g * g;
        p[i] = p[i] - lr * (g / (sqrtf(v[i]) + c->eps));
      }
      break;
    }
  }
}

void xd_ema_update(float *ema, const float *x, size_t n, double decay, int64_t step) {
  double d = (1.0 + (double)step) / (10.0 + (double)step);
  if (d > decay) d = decay;
  const float df = (float)d, omd = (float)(1.0 - d);
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) ema[i] = ema[i] * df + x[i] * omd;
}

float xd_schedule_lr_step(const xd_schedule *s, float base_lr, int64_t step, int spe, int epochs) {
  if (s->warmup_epochs <= 0 || spe <= 0) return xd_schedule_lr(s, base_lr, (int)(step / (spe > 0 ? spe : 1)), epochs);
  const int64_t warm = (int64_t)s->warmup_epochs * spe, total = (int64_t)epochs * spe;
  if (step < warm) return (float)(base_lr * (double)(step + 1) / (double)warm);
  if (s->kind == 2) {
    int64_t span = total - warm > 1 ? total - warm : 1;
    double t = (double)(step - warm) / (double)span;
    if (t > 1) t = 1;
    return (float)(base_lr * (s->min_factor + (1 - s->min_factor) * 0.5 * (1 + cos(3.141592653589793 * t))));
  }
  return xd_schedule_lr(s, base_lr, (int)(step / spe), epochs);
}

/* A number that fills the whole of s (no sign games, nothing left over, finite). */
static int parse_num(const char *s, double *out) {
  if (!*s || isspace((unsigned char)*s)) return -1;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno == ERANGE || end == s || *end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

int xd_schedule_parse(const char *s, xd_schedule *out) {
  memset(out, 0, sizeof *out);
  out->gamma = 1;
  if (!strcmp(s, "constant")) return 0;
  if (!strncmp(s, "cosine", 6)) {
    out->kind = 2;
    if (s[6] == 0) return 0;
    if (s[6] != ':') return -1;
    double f;
    if (parse_num(s + 7, &f) || f < 0 || f > 1) return -1;
    out->min_factor = f;
    return 0;
  }
  if (!strncmp(s, "plateau", 7)) {
    out->kind = 3;
    out->gamma = 0.1;
    out->every = 2;
    if (s[7] == 0) return 0;
    if (s[7] != ':') return -1;
    const char *p = s + 8, *colon = strchr(p, ':');
    if (!colon || colon - p > 60) return -1;
    char fbuf[64];
    memcpy(fbuf, p, (size_t)(colon - p));
    fbuf[colon - p] = 0;
    double f;
    if (parse_num(fbuf, &f) || !(f > 0 && f < 1)) return -1;
    if (!isdigit((unsigned char)colon[1])) return -1;
    char *end;
    errno = 0;
    long pat = strtol(colon + 1, &end, 10);
    if (errno || *end || pat < 1 || pat > 1000000) return -1;
    out->gamma = f;
    out->every = (int)pat;
    return 0;
  }
  if (!strncmp(s, "step:", 5)) {
    out->kind = 1;
    const char *p = s + 5;
    if (!isdigit((unsigned char)*p)) return -1;
    char *end;
    errno = 0;
    long every = strtol(p, &end, 10);
    if (errno || *end != ':' || every <= 0 || every > INT_MAX) return -1;
    out->every = (int)every;
    double g;
    /* a decay: 0 < GAMMA <= 1 (a growing lr ends in overflow, and NaN never is a factor) */
    if (parse_num(end + 1, &g) || !(g > 0 && g <= 1)) return -1;
    out->gamma = g;
    return 0;
  }
  return -1;
}

float xd_schedule_lr(const xd_schedule *s, float base_lr, int epoch, int epochs) {
  switch (s->kind) {
    case 1:
      return (float)(base_lr * pow(s->gamma, epoch / s->every));
    case 2: {
      double t = epochs > 0 ? (double)epoch / (double)epochs : 0.0; /* the last epoch keeps a small lr */
      double f = s->min_factor + (1 - s->min_factor) * 0.5 * (1 + cos(3.141592653589793 * t));
      return (float)(base_lr * f);
    }
    default:
      return base_lr;
  }
}
