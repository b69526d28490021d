/* Model description parser, shape inference, arenas and initialisation. */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

static const char *const PRESET_KERAS_SEED =
    "conv 16 3x3 relu\n"
    "maxpool 2x2\n"
    "conv 32 3x3 relu\n"
    "maxpool 2x2\n"
    "flatten\n"
    "dense 64 relu\n"
    "dropout 0.2\n"
    "dense 1 sigmoid\n";

static const char *const PRESET_TRIPATHI5 =
    "conv 16 3x3 relu\n"
    "maxpool 2x2\n"
    "conv 32 3x3 relu\n"
    "maxpool 2x2\n"
    "conv 64 3x3 relu\n"
    "maxpool 2x2\n"
    "conv 16 3x3 relu\n"
    "maxpool 2x2\n"
    "conv 64 3x3 relu\n"
    "maxpool 2x2\n"
    "flatten\n"
    "dropout 0.2\n"
    "dense 128 relu\n"
    "dense 1 sigmoid\n";

static const char *const PRESET_PETRE_BN =
    "conv 32 3x3 relu pad=same\n"
    "batchnorm\n"
    "conv 32 3x3 relu pad=same\n"
    "batchnorm\n"
    "maxpool 2x2\n"
    "dropout 0.25\n"
    "conv 64 3x3 relu pad=same\n"
    "batchnorm\n"
    "conv 64 3x3 relu pad=same\n"
    "batchnorm\n"
    "maxpool 2x2\n"
    "dropout 0.25\n"
    "flatten\n"
    "dense 64 relu\n"
    "dropout 0.25\n"
    "dense 1 sigmoid\n";

static const char *preset_body(const char *name) {
  if (!strcmp(name, "keras-seed") || !strcmp(name, "default")) return PRESET_KERAS_SEED;
  if (!strcmp(name, "tripathi5")) return PRESET_TRIPATHI5;
  if (!strcmp(name, "petre-bn")) return PRESET_PETRE_BN;
  return NULL;
}

const char *xd_model_preset_names(void) {
  return "keras-seed, tripathi5, petre-bn, default (= keras-seed)";
}

char *xd_model_preset_text(const char *name, int channels, int height, int width) {
  const char *body = preset_body(name);
  if (!body) return NULL;
  size_t n = strlen(body) + 128;
  char *t = malloc(n);
  if (!t) return NULL;
  snprintf(t, n, "# preset %s\ninput %dx%dx%d\n%s", name, channels, height, width, body);
  return t;
}

/* ---- parsing ---- */

static int parse_act(const char *s, xd_act *a) {
  static const char *const names[] = {"linear", "relu", "leakyrelu", "elu", "sigmoid", "tanh", "softmax"};
  for (int i = 0; i < 7; i++)
    if (!strcmp(s, names[i])) {
      *a = (xd_act)i;
      return 0;
    }
  return -1;
}

static int parse_int(const char *s, int *v) {
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (errno || end == s || *end || x <= 0 || x > 1000000) return -1;
  *v = (int)x;
  return 0;
}

static int parse_float(const char *s, float *v) {
  char *end;
  errno = 0;
  double x = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(x)) return -1;
  *v = (float)x;
  return 0;
}

/* "3x3" -> 3,3 ; "5" -> 5,5 ; "1x128x128" with n = 3 */
static int parse_dims(const char *s, int *out, int n) {
  char buf[64];
  if (strlen(s) >= sizeof buf) return -1;
  strcpy(buf, s);
  int k = 0;
  char *save = NULL;
  for (char *tok = strtok_r(buf, "x", &save); tok; tok = strtok_r(NULL, "x", &save)) {
    if (k >= n || parse_int(tok, &out[k])) return -1;
    k++;
  }
  if (k == 1 && n == 2) {
    out[1] = out[0];
    k = 2;
  }
  return k == n ? 0 : -1;
}

#define MAXTOK 16

typedef struct parse_ctx {
  const char *source;
  int line;
  xd_err *e;
} parse_ctx;

#define PFAIL(pc, ...) parse_fail(pc, __VA_ARGS__)
static int parse_fail(parse_ctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int parse_fail(parse_ctx *pc, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return xd_fail(pc->e, "%s:%d: %s", pc->source, pc->line, msg);
}

/* key=value options after the positional arguments */
static int parse_option(parse_ctx *pc, xd_layer *L, const char *tok) {
  const char *eq = strchr(tok, '=');
  if (!eq) return PFAIL(pc, "unexpected '%s'", tok);
  char key[32];
  size_t kl = (size_t)(eq - tok);
  if (kl >= sizeof key) return PFAIL(pc, "unknown option '%s'", tok);
  memcpy(key, tok, kl);
  key[kl] = 0;
  const char *val = eq + 1;
  if (L->kind == XD_L_CONV && !strcmp(key, "stride")) {
    if (parse_int(val, &L->p.conv.stride)) return PFAIL(pc, "stride must be a positive integer, got '%s'", val);
    return 0;
  }
  if (L->kind == XD_L_CONV && !strcmp(key, "pad")) {
    if (!strcmp(val, "same")) L->p.conv.same = 1;
    else if (!strcmp(val, "valid")) L->p.conv.same = 0;
    else return PFAIL(pc, "pad must be same or valid, got '%s'", val);
    return 0;
  }
  if ((L->kind == XD_L_MAXPOOL || L->kind == XD_L_AVGPOOL) && !strcmp(key, "stride")) {
    int s[2];
    if (parse_dims(val, s, 2)) return PFAIL(pc, "stride must be S or SxS, got '%s'", val);
    L->p.pool.sh = s[0];
    L->p.pool.sw = s[1];
    return 0;
  }
  if (L->kind == XD_L_BATCHNORM && (!strcmp(key, "eps") || !strcmp(key, "momentum"))) {
    float v;
    if (parse_float(val, &v) || v <= 0 || (!strcmp(key, "momentum") && v > 1))
      return PFAIL(pc, "bad %s '%s'", key, val);
    if (!strcmp(key, "eps")) L->p.bn.eps = v;
    else L->p.bn.momentum = v;
    return 0;
  }
  return PFAIL(pc, "unknown option '%s' for this layer", key);
}

static int parse_line(parse_ctx *pc, char **tok, int nt, xd_layer *L, int *is_input, int in_dims[3]) {
  memset(L, 0, sizeof *L);
  L->line = pc->line;
  L->act = XD_ACT_LINEAR;
  *is_input = 0;
  const char *k = tok[0];
  int pos = 1; /* next token */
  xd_act a;
  if (!strcmp(k, "input")) {
    if (nt != 2 || parse_dims(tok[1], in_dims, 3)) return PFAIL(pc, "expected 'input CxHxW', e.g. input 1x128x128");
    *is_input = 1;
    return 0;
  } else if (!strcmp(k, "conv")) {
    L->kind = XD_L_CONV;
    L->p.conv.stride = 1;
    int kk[2];
    if (nt < 3 || parse_int(tok[1], &L->p.conv.filters) || parse_dims(tok[2], kk, 2))
      return PFAIL(pc, "expected 'conv FILTERS KHxKW [ACTIVATION] [stride=S] [pad=same|valid]'");
    L->p.conv.kh = kk[0];
    L->p.conv.kw = kk[1];
    pos = 3;
    if (pos < nt && !strchr(tok[pos], '=')) {
      if (parse_act(tok[pos], &L->act)) return PFAIL(pc, "unknown activation '%s'", tok[pos]);
      pos++;
    }
  } else if (!strcmp(k, "maxpool") || !strcmp(k, "avgpool")) {
    L->kind = !strcmp(k, "maxpool") ? XD_L_MAXPOOL : XD_L_AVGPOOL;
    int kk[2];
    if (nt < 2 || parse_dims(tok[1], kk, 2)) return PFAIL(pc, "expected '%s KHxKW [stride=S]'", k);
    L->p.pool.kh = L->p.pool.sh = kk[0];
    L->p.pool.kw = L->p.pool.sw = kk[1];
    pos = 2;
  } else if (!strcmp(k, "globalavgpool")) {
    L->kind = XD_L_GAP;
  } else if (!strcmp(k, "batchnorm")) {
    L->kind = XD_L_BATCHNORM;
    L->p.bn.eps = 1e-5f;
    L->p.bn.momentum = 0.1f;
  } else if (!strcmp(k, "dropout")) {
    L->kind = XD_L_DROPOUT;
    if (nt < 2 || parse_float(tok[1], &L->p.dropout.rate) || L->p.dropout.rate < 0 || L->p.dropout.rate >= 1)
      return PFAIL(pc, "expected 'dropout RATE' with 0 <= RATE < 1");
    pos = 2;
  } else if (!strcmp(k, "flatten")) {
    L->kind = XD_L_FLATTEN;
  } else if (!strcmp(k, "dense")) {
    L->kind = XD_L_DENSE;
    if (nt < 2 || parse_int(tok[1], &L->p.dense.units)) return PFAIL(pc, "expected 'dense UNITS [ACTIVATION]'");
    pos = 2;
    if (pos < nt) {
      if (parse_act(tok[pos], &L->act)) return PFAIL(pc, "unknown activation '%s'", tok[pos]);
      pos++;
    }
  } else if (parse_act(k, &a) == 0) {
    L->kind = XD_L_ACT;
    L->act = a;
  } else {
    return PFAIL(pc, "unknown layer '%s' (layers: conv maxpool avgpool globalavgpool batchnorm dropout flatten "
                     "dense, or an activation)", k);
  }
  for (; pos < nt; pos++) XD_TRY(parse_option(pc, L, tok[pos]));
  return 0;
}

/* Output shape of L given its input; fills L->out_* or fails with a message about impossible shapes. */
static int infer_shape(parse_ctx *pc, xd_layer *L, int flat_in) {
  int C = L->in_c, H = L->in_h, W = L->in_w;
  switch (L->kind) {
    case XD_L_CONV: {
      if (flat_in) return PFAIL(pc, "conv needs a 4-D input, but its input is flat (after flatten/dense)");
      int s = L->p.conv.stride, kh = L->p.conv.kh, kw = L->p.conv.kw;
      if (L->p.conv.same) {
        int oh = (H + s - 1) / s, ow = (W + s - 1) / s;
        int ph = (oh - 1) * s + kh - H, pw = (ow - 1) * s + kw - W;
        if (ph < 0) ph = 0;
        if (pw < 0) pw = 0;
        L->p.conv.pad_top = ph / 2;
        L->p.conv.pad_left = pw / 2;
        L->out_h = oh;
        L->out_w = ow;
      } else {
        if (kh > H || kw > W)
          return PFAIL(pc, "conv kernel %dx%d is larger than its %dx%d input", kh, kw, H, W);
        L->out_h = (H - kh) / s + 1;
        L->out_w = (W - kw) / s + 1;
      }
      L->out_c = L->p.conv.filters;
      if (L->act == XD_ACT_SOFTMAX) return PFAIL(pc, "softmax is only supported on dense layers");
      break;
    }
    case XD_L_MAXPOOL:
    case XD_L_AVGPOOL:
      if (flat_in) return PFAIL(pc, "pooling needs a 4-D input, but its input is flat");
      if (L->p.pool.kh > H || L->p.pool.kw > W)
        return PFAIL(pc, "pool window %dx%d is larger than its %dx%d input", L->p.pool.kh, L->p.pool.kw, H, W);
      L->out_c = C;
      L->out_h = (H - L->p.pool.kh) / L->p.pool.sh + 1;
      L->out_w = (W - L->p.pool.kw) / L->p.pool.sw + 1;
      break;
    case XD_L_GAP:
      if (flat_in) return PFAIL(pc, "globalavgpool needs a 4-D input, but its input is flat");
      L->out_c = C;
      L->out_h = L->out_w = 1;
      L->flat = 1;
      break;
    case XD_L_FLATTEN:
      if (flat_in) return PFAIL(pc, "flatten after an already flat tensor");
      L->out_c = C * H * W;
      L->out_h = L->out_w = 1;
      L->flat = 1;
      break;
    case XD_L_DENSE:
      if (!flat_in) return PFAIL(pc, "dense after a 4-D tensor (%dx%dx%d) needs a flatten or globalavgpool first", C, H, W);
      L->out_c = L->p.dense.units;
      L->out_h = L->out_w = 1;
      L->flat = 1;
      break;
    case XD_L_BATCHNORM:
    case XD_L_DROPOUT:
    case XD_L_ACT:
      if (L->kind == XD_L_ACT && L->act == XD_ACT_SOFTMAX && !flat_in)
        return PFAIL(pc, "softmax needs a flat input");
      L->out_c = C;
      L->out_h = H;
      L->out_w = W;
      L->flat = flat_in;
      break;
  }
  if (L->out_c <= 0 || L->out_h <= 0 || L->out_w <= 0) return PFAIL(pc, "layer output would be empty");
  return 0;
}

int xd_model_build(xd_model *m, const char *text, const char *source, xd_err *e) {
  memset(m, 0, sizeof *m);
  parse_ctx pc = {source, 0, e};
  size_t cap = 16;
  m->layers = calloc(cap, sizeof *m->layers);
  m->text = xd_strdup(text);
  char *buf = xd_strdup(text);
  if (!m->layers || !m->text || !buf) {
    free(buf);
    xd_model_free(m);
    return xd_fail(e, "out of memory parsing %s", source);
  }
  int have_input = 0, flat = 0;
  int rc = 0;
  /* walk lines by hand: strtok on "\n" would merge blank lines and lose line numbers */
  char *p = buf;
  while (p && *p && rc == 0) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = 0;
    pc.line++;
    char *hash = strchr(p, '#');
    if (hash) *hash = 0;
    char *tok[MAXTOK];
    int nt = 0;
    char *save = NULL;
    for (char *t = strtok_r(p, " \t\r", &save); t && nt < MAXTOK; t = strtok_r(NULL, " \t\r", &save)) tok[nt++] = t;
    p = nl ? nl + 1 : NULL;
    if (nt == 0) continue;
    xd_layer L;
    int is_input, dims[3];
    if ((rc = parse_line(&pc, tok, nt, &L, &is_input, dims))) break;
    if (is_input) {
      if (have_input || m->nlayers) {
        rc = PFAIL(&pc, "'input' must come once, before any layer");
        break;
      }
      m->in_c = dims[0];
      m->in_h = dims[1];
      m->in_w = dims[2];
      have_input = 1;
      continue;
    }
    if (!have_input) {
      rc = PFAIL(&pc, "the first line must be 'input CxHxW'");
      break;
    }
    const xd_layer *prev = m->nlayers ? &m->layers[m->nlayers - 1] : NULL;
    L.in_c = prev ? prev->out_c : m->in_c;
    L.in_h = prev ? prev->out_h : m->in_h;
    L.in_w = prev ? prev->out_w : m->in_w;
    if ((rc = infer_shape(&pc, &L, flat))) break;
    flat = L.flat;
    if (m->nlayers == (int)cap) {
      cap *= 2;
      xd_layer *nl2 = realloc(m->layers, cap * sizeof *nl2);
      if (!nl2) {
        rc = xd_fail(e, "out of memory parsing %s", source);
        break;
      }
      m->layers = nl2;
    }
    m->layers[m->nlayers++] = L;
  }
  free(buf);
  if (rc == 0 && !have_input) rc = xd_fail(e, "%s: no 'input CxHxW' line", source);
  if (rc == 0 && m->nlayers == 0) rc = xd_fail(e, "%s: no layers", source);
  if (rc == 0) {
    xd_layer *last = &m->layers[m->nlayers - 1];
    pc.line = last->line;
    if (last->kind == XD_L_DENSE && last->act == XD_ACT_SIGMOID && last->out_c == 1) {
      m->loss = XD_LOSS_BCE;
    } else if (last->kind == XD_L_DENSE && last->act == XD_ACT_SOFTMAX && last->out_c >= 2) {
      m->loss = XD_LOSS_CE;
    } else {
      rc = PFAIL(&pc, "the last layer must be 'dense 1 sigmoid' (binary cross-entropy) or 'dense K softmax' (K >= 2)");
    }
    m->nout = last->out_c;
  }
  if (rc) {
    xd_model_free(m);
    return -1;
  }
  /* arenas: params and grads share one layout */
  size_t np = 0, nb = 0;
  for (int i = 0; i < m->nlayers; i++) {
    xd_layer *L = &m->layers[i];
    if (L->kind == XD_L_CONV) {
      L->w_n = (size_t)L->out_c * L->in_c * L->p.conv.kh * L->p.conv.kw;
      L->b_n = (size_t)L->out_c;
    } else if (L->kind == XD_L_DENSE) {
      L->w_n = (size_t)L->out_c * L->in_c;
      L->b_n = (size_t)L->out_c;
    } else if (L->kind == XD_L_BATCHNORM) {
      L->w_n = L->b_n = (size_t)L->in_c;
      L->rm_off = nb;
      L->rv_off = nb + (size_t)L->in_c;
      nb += 2 * (size_t)L->in_c;
    }
    /* 16-float alignment of every tensor keeps vector loads aligned */
    L->w_off = np;
    np += (L->w_n + 15) & ~(size_t)15;
    L->b_off = np;
    np += (L->b_n + 15) & ~(size_t)15;
  }
  m->nparams = np;
  m->nbuffers = nb;
  m->params = xd_alloc(np * sizeof(float), "parameters", e);
  m->grads = m->params ? xd_alloc(np * sizeof(float), "gradients", e) : NULL;
  m->buffers = m->grads ? xd_alloc((nb ? nb : 1) * sizeof(float), "batchnorm statistics", e) : NULL;
  if (!m->buffers) {
    xd_model_free(m);
    return -1;
  }
  return 0;
}

int xd_model_from_arg(xd_model *m, const char *arg, int channels, int height, int width, xd_err *e) {
  char *text = xd_model_preset_text(arg, channels, height, width);
  char source[600];
  if (text) {
    snprintf(source, sizeof source, "preset %s", arg);
  } else {
    FILE *f = fopen(arg, "rb");
    if (!f) {
      if (!strchr(arg, '/') && !strchr(arg, '.'))
        return xd_fail(e, "%s: not a preset (%s) and no such model file", arg, xd_model_preset_names());
      return xd_fail(e, "%s: cannot open model description: %s", arg, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    text = malloc(cap);
    for (size_t r; text && (r = fread(text + n, 1, cap - n - 1, f)) > 0;) {
      n += r;
      if (n + 1 == cap) {
        if (cap > (1 << 20)) {
          free(text);
          fclose(f);
          return xd_fail(e, "%s: model description larger than 1 MiB", arg);
        }
        char *t2 = realloc(text, cap *= 2);
        if (!t2) free(text);
        text = t2;
      }
    }
    fclose(f);
    if (!text) return xd_fail(e, "out of memory reading %s", arg);
    text[n] = 0;
    snprintf(source, sizeof source, "%s", arg);
  }
  int rc = xd_model_build(m, text, source, e);
  free(text);
  if (rc) return -1;
  if (m->in_c != channels || m->in_h != height || m->in_w != width) {
    int c = m->in_c, h = m->in_h, w = m->in_w;
    xd_model_free(m);
    return xd_fail(e, "%s: model input %dx%dx%d does not match the data's %dx%dx%d", source, c, h, w, channels,
                   height, width);
  }
  return 0;
}

void xd_model_free(xd_model *m) {
  free(m->layers);
  free(m->text);
  xd_free(m->params);
  xd_free(m->grads);
  xd_free(m->buffers);
  memset(m, 0, sizeof *m);
}

int xd_init_parse(const char *s, xd_init_kind *k) {
  if (!strcmp(s, "torch")) *k = XD_INIT_TORCH;
  else if (!strcmp(s, "glorot")) *k = XD_INIT_GLOROT;
  else if (!strcmp(s, "he")) *k = XD_INIT_HE;
  else return -1;
  return 0;
}

void xd_model_init(xd_model *m, xd_init_kind kind, uint64_t seed) {
  memset(m->params, 0, m->nparams * sizeof(float));
  for (int i = 0; i < m->nlayers; i++) {
    xd_layer *L = &m->layers[i];
    float *w = m->params + L->w_off, *b = m->params + L->b_off;
    if (L->kind == XD_L_BATCHNORM) {
      for (size_t j = 0; j < L->w_n; j++) w[j] = 1.0f;
      float *rv = m->buffers + L->rv_off;
      for (int j = 0; j < L->in_c; j++) rv[j] = 1.0f, m->buffers[L->rm_off + j] = 0.0f;
      continue;
    }
    if (L->w_n == 0) continue;
    double fan_in, fan_out;
    if (L->kind == XD_L_CONV) {
      double rf = (double)L->p.conv.kh * L->p.conv.kw;
      fan_in = L->in_c * rf;
      fan_out = L->out_c * rf;
    } else {
      fan_in = L->in_c;
      fan_out = L->out_c;
    }
    xd_rng r = xd_rng_make(xd_key(seed, XD_STREAM_INIT, (uint64_t)i, 0));
    if (kind == XD_INIT_TORCH) {
      float bound = (float)(1.0 / sqrt(fan_in));
      for (size_t j = 0; j < L->w_n; j++) w[j] = (2.0f * xd_rng_uniform(&r) - 1.0f) * bound;
      for (size_t j = 0; j < L->b_n; j++) b[j] = (2.0f * xd_rng_uniform(&r) - 1.0f) * bound;
    } else if (kind == XD_INIT_GLOROT) {
      float bound = (float)sqrt(6.0 / (fan_in + fan_out));
      for (size_t j = 0; j < L->w_n; j++) w[j] = (2.0f * xd_rng_uniform(&r) - 1.0f) * bound;
    } else {
      float sd = (float)sqrt(2.0 / fan_in);
      for (size_t j = 0; j < L->w_n; j++) w[j] = xd_rng_normal(&r) * sd;
    }
  }
}

static double layer_macs(const xd_layer *L) {
  if (L->kind == XD_L_CONV) return (double)L->out_c * L->out_h * L->out_w * L->in_c * L->p.conv.kh * L->p.conv.kw;
  if (L->kind == XD_L_DENSE) return (double)L->out_c * L->in_c;
  return 0;
}

double xd_model_flops_per_image(const xd_model *m, int training) {
  double fwd = 0, bwd = 0;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    double mac = layer_macs(L);
    fwd += 2 * mac;
    /* weight gradient always; input gradient for every layer but the first */
    bwd += 2 * mac * (i == 0 ? 1 : 2);
  }
  return training ? fwd + bwd : fwd;
}

static const char *kind_name(xd_layer_kind k) {
  static const char *const n[] = {"conv", "maxpool", "avgpool", "globalavgpool", "batchnorm", "dropout", "flatten",
                                  "dense", "activation"};
  return n[k];
}

void xd_model_summary(const xd_model *m, FILE *f) {
  fprintf(f, "%-4s %-28s %-14s %10s %12s\n", "#", "layer", "output shape", "params", "MFLOP/image");
  char in[32];
  snprintf(in, sizeof in, "%dx%dx%d", m->in_c, m->in_h, m->in_w);
  fprintf(f, "%-4s %-28s %-14s %10s %12s\n", "", "input", in, "", "");
  size_t total = 0;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    char desc[64], shape[32];
    if (L->kind == XD_L_CONV)
      snprintf(desc, sizeof desc, "conv %dx%d/%d %s%s", L->p.conv.kh, L->p.conv.kw, L->p.conv.stride,
               act_name(L->act), L->p.conv.same ? " same" : "");
    else if (L->kind == XD_L_DENSE)
      snprintf(desc, sizeof desc, "dense %s", act_name(L->act));
    else if (L->kind == XD_L_ACT)
      snprintf(desc, sizeof desc, "%s", act_name(L->act));
    else if (L->kind == XD_L_DROPOUT)
      snprintf(desc, sizeof desc, "dropout %.2f", L->p.dropout.rate);
    else if (L->kind == XD_L_MAXPOOL || L->kind == XD_L_AVGPOOL)
      snprintf(desc, sizeof desc, "%s %dx%d/%d", kind_name(L->kind), L->p.pool.kh, L->p.pool.kw, L->p.pool.sh);
    else
      snprintf(desc, sizeof desc, "%s", kind_name(L->kind));
    if (L->flat)
      snprintf(shape, sizeof shape, "%d", L->out_c);
    else
      snprintf(shape, sizeof shape, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
    size_t np = L->w_n + L->b_n;
    total += np;
    double mf = 2 * layer_macs(L) / 1e6;
    if (mf > 0)
      fprintf(f, "%-4d %-28s %-14s %10zu %12.2f\n", i, desc, shape, np, mf);
    else
      fprintf(f, "%-4d %-28s %-14s %10zu %12s\n", i, desc, shape, np, "");
  }
  fprintf(f, "total parameters: %zu; forward %.1f MFLOP/image, training step %.1f MFLOP/image\n", total,
          xd_model_flops_per_image(m, 0) / 1e6, xd_model_flops_per_image(m, 1) / 1e6);
}
