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

/* A small residual network (He et al. 2016 basic blocks) for 1-channel X-rays: per-image
 * standardisation, a stem conv W + BN + ReLU + 2x2 max pool, three basic blocks of 2W, 4W, 8W channels
 * with stride 2 (3x3 convs, BN, ReLU; a 1x1 stride-2 conv + BN on the skip path), global average
 * pooling, dropout, one logit. PyTorch-equivalent padding (pad=1); convolutions before a batchnorm have
 * no bias (bias=0, PyTorch's bias=False): the batchnorm removes any per-channel offset, so such a bias
 * has no true gradient, only float noise, which Adam would turn into +-lr steps that differ with the
 * rank count. */
static char *resnet_body(int w) {
  size_t cap = 4096, n = 0;
  char *t = malloc(cap);
  if (!t) return NULL;
#define EMIT(...) n += (size_t)snprintf(t + n, cap - n, __VA_ARGS__)
  EMIT("standardize\n");
  EMIT("conv %d 3x3 pad=1 bias=0\nbatchnorm relu\nmaxpool 2x2 name=stem\n", w);
  const char *prev = "stem";
  static const char *const names[] = {"block1", "block2", "block3"};
  for (int b = 0; b < 3; b++) {
    int c = w << (b + 1);
    EMIT("conv %d 3x3 stride=2 pad=1 bias=0\nbatchnorm relu\nconv %d 3x3 pad=1 bias=0\nbatchnorm name=%s_main\n", c, c,
         names[b]);
    EMIT("conv %d 1x1 stride=2 bias=0 in=%s\nbatchnorm\nadd %s_main relu name=%s\n", c, prev, names[b], names[b]);
    prev = names[b];
  }
  EMIT("globalavgpool\ndropout 0.2\ndense 1 sigmoid\n");
#undef EMIT
  return t;
}

/* The recipe of the default model, chosen by scripts/study.sh (docs/results.md says why). */
#define DEFAULT_PRESET "resnet-s"
static const char *const DEFAULT_RECIPE =
    "--optimizer adamw --lr 2e-3 --weight-decay 5e-4 --warmup 1 --schedule cosine --epochs 20 --batch 32 "
    "--augment shortcut --class-weight balanced --ema 0.998 --sync-bn --monitor last --patience 0";

static const char *alias(const char *name) { return !strcmp(name, "default") ? DEFAULT_PRESET : name; }

/* Body of a preset (malloc'd), or NULL. */
static char *preset_body(const char *name) {
  name = alias(name);
  if (!strcmp(name, "keras-seed")) return xd_strdup(PRESET_KERAS_SEED);
  if (!strcmp(name, "tripathi5")) return xd_strdup(PRESET_TRIPATHI5);
  if (!strcmp(name, "petre-bn")) return xd_strdup(PRESET_PETRE_BN);
  if (!strcmp(name, "resnet-s")) return resnet_body(16);
  if (!strcmp(name, "resnet-m")) return resnet_body(24);
  return NULL;
}

const char *xd_model_preset_names(void) {
  return "keras-seed, tripathi5, petre-bn, resnet-s, resnet-m, default (= " DEFAULT_PRESET " with its recipe)";
}

const char *xd_model_preset_recipe(const char *name) { return !strcmp(name, "default") ? DEFAULT_RECIPE : NULL; }

char *xd_model_preset_text(const char *name, int channels, int height, int width) {
  char *body = preset_body(name);
  if (!body) return NULL;
  size_t n = strlen(body) + 128;
  char *t = malloc(n);
  if (t) snprintf(t, n, "# preset %s\ninput %dx%dx%d\n%s", alias(name), channels, height, width, body);
  free(body);
  return t;
}

int xd_model_cam_layer(const xd_model *m) {
  int best = -1;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    if ((L->kind == XD_L_GAP || L->kind == XD_L_FLATTEN) && L->in0 > 0) best = L->in0 - 1;
  }
  /* a pooled or dropped-out map explains less finely than the map it was made from */
  while (best >= 0) {
    const xd_layer *P = &m->layers[best];
    if ((P->kind == XD_L_MAXPOOL || P->kind == XD_L_AVGPOOL || P->kind == XD_L_DROPOUT) && P->in0 > 0)
      best = P->in0 - 1;
    else
      break;
  }
  if (best < 0) /* no head to explain: the last conv */
    for (int i = 0; i < m->nlayers; i++)
      if (m->layers[i].kind == XD_L_CONV) best = i;
  return best;
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

/* Names a layer may take (and refer to): a letter or '_' then letters, digits, '_', '-', '.'. */
static int valid_name(const char *s) {
  if (!*s || strlen(s) >= XD_NAME_MAX || !(isalpha((unsigned char)*s) || *s == '_')) return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) return 0;
  return 1;
}

/* key=value options after the positional arguments; `in=` and the add's reference are kept as text in
 * refs[] and resolved once the line is known to be well formed. */
static int parse_option(parse_ctx *pc, xd_layer *L, const char *tok, char refs[2][XD_NAME_MAX]) {
  const char *eq = strchr(tok, '=');
  if (!eq) {
    xd_act a;
    if (parse_act(tok, &a) == 0) return PFAIL(pc, "unexpected '%s': the activation comes before key=value options", tok);
    return PFAIL(pc, "unexpected '%s'", tok);
  }
  char key[32];
  size_t kl = (size_t)(eq - tok);
  if (kl >= sizeof key) return PFAIL(pc, "unknown option '%s'", tok);
  memcpy(key, tok, kl);
  key[kl] = 0;
  const char *val = eq + 1;
  if (!strcmp(key, "name") || !strcmp(key, "in")) {
    if (!valid_name(val) || (!strcmp(key, "name") && !strcmp(val, "input")))
      return PFAIL(pc, "bad %s '%s' (a letter or '_', then letters, digits, '_', '-', '.'; at most %d characters%s)",
                   key, val, XD_NAME_MAX - 1, !strcmp(key, "name") ? "; 'input' is reserved" : "");
    snprintf(!strcmp(key, "name") ? L->name : refs[0], XD_NAME_MAX, "%s", val);
    return 0;
  }
  if (L->kind == XD_L_STANDARDIZE && !strcmp(key, "eps")) {
    float v;
    if (parse_float(val, &v) || !(v > 0)) return PFAIL(pc, "bad eps '%s' (a positive number)", val);
    L->p.stdz.eps = v;
    return 0;
  }
  if (L->kind == XD_L_CONV && !strcmp(key, "pad") && isdigit((unsigned char)val[0])) {
    int pv;
    if (!strcmp(val, "0")) pv = 0;
    else if (parse_int(val, &pv)) return PFAIL(pc, "pad must be same, valid or a number of pixels, got '%s'", val);
    L->p.conv.same = 2; /* explicit, symmetric: PyTorch's padding=N */
    L->p.conv.pad_top = L->p.conv.pad_left = pv;
    return 0;
  }
  if (L->kind == XD_L_CONV && !strcmp(key, "bias")) {
    if (strcmp(val, "0") && strcmp(val, "1")) return PFAIL(pc, "bias must be 0 or 1, got '%s'", val);
    L->p.conv.nobias = !strcmp(val, "0"); /* bias=0: PyTorch's bias=False (e.g. before a batchnorm) */
    return 0;
  }
  if (L->kind == XD_L_CONV && !strcmp(key, "stride")) {
    if (parse_int(val, &L->p.conv.stride)) return PFAIL(pc, "stride must be a positive integer, got '%s'", val);
    return 0;
  }
  if (L->kind == XD_L_CONV && !strcmp(key, "pad")) {
    if (!strcmp(val, "same")) L->p.conv.same = 1;
    else if (!strcmp(val, "valid")) L->p.conv.same = 0;
    else return PFAIL(pc, "pad must be same, valid or a number of pixels, got '%s'", val);
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

static int parse_line(parse_ctx *pc, char **tok, int nt, xd_layer *L, int *is_input, int in_dims[3],
                      char refs[2][XD_NAME_MAX]) {
  memset(L, 0, sizeof *L);
  L->line = pc->line;
  L->act = XD_ACT_LINEAR;
  L->in1 = -1;
  refs[0][0] = refs[1][0] = 0;
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
    if (pos < nt && !strchr(tok[pos], '=')) {
      if (parse_act(tok[pos], &L->act)) return PFAIL(pc, "unknown activation '%s'", tok[pos]);
      pos++;
    }
  } else if (!strcmp(k, "add")) {
    L->kind = XD_L_ADD;
    if (nt < 2 || strchr(tok[1], '=') || !valid_name(tok[1]))
      return PFAIL(pc, "expected 'add NAME [ACTIVATION]': the sum of the previous layer's output (or in=) and "
                       "layer NAME's");
    snprintf(refs[1], XD_NAME_MAX, "%s", tok[1]);
    pos = 2;
    if (pos < nt && !strchr(tok[pos], '=')) {
      if (parse_act(tok[pos], &L->act)) return PFAIL(pc, "unknown activation '%s'", tok[pos]);
      pos++;
    }
  } else if (!strcmp(k, "standardize")) {
    L->kind = XD_L_STANDARDIZE;
    L->p.stdz.eps = 1e-3f;
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
    if (pos < nt && !strchr(tok[pos], '=')) {
      if (parse_act(tok[pos], &L->act)) return PFAIL(pc, "unknown activation '%s'", tok[pos]);
      pos++;
    }
  } else if (parse_act(k, &a) == 0) {
    L->kind = XD_L_ACT;
    L->act = a;
  } else {
    return PFAIL(pc, "unknown layer '%s' (layers: conv maxpool avgpool globalavgpool batchnorm dropout flatten "
                     "dense add standardize, or an activation)", k);
  }
  for (; pos < nt; pos++) XD_TRY(parse_option(pc, L, tok[pos], refs));
  return 0;
}

/* Output shape of L given its input; fills L->out_* or fails with a message about impossible shapes. */
static int infer_shape(parse_ctx *pc, xd_layer *L, int flat_in) {
  int C = L->in_c, H = L->in_h, W = L->in_w;
  switch (L->kind) {
    case XD_L_CONV: {
      if (flat_in) return PFAIL(pc, "conv needs a 4-D input, but its input is flat (after flatten/dense)");
      int s = L->p.conv.stride, kh = L->p.conv.kh, kw = L->p.conv.kw;
      if (L->p.conv.same == 2) {
        int p = L->p.conv.pad_top;
        if (kh > H + 2 * p || kw > W + 2 * p)
          return PFAIL(pc, "conv kernel %dx%d is larger than its %dx%d input padded by %d", kh, kw, H, W, p);
        if (p >= kh || p >= kw) return PFAIL(pc, "pad=%d must be smaller than the %dx%d kernel", p, kh, kw);
        L->out_h = (H + 2 * p - kh) / s + 1;
        L->out_w = (W + 2 * p - kw) / s + 1;
      } else if (L->p.conv.same) {
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
    case XD_L_ADD:
    case XD_L_STANDARDIZE:
    case XD_L_BATCHNORM:
    case XD_L_DROPOUT:
    case XD_L_ACT:
      if (L->act == XD_ACT_SOFTMAX && L->kind != XD_L_ACT)
        return PFAIL(pc, "softmax is only supported on dense layers or as its own layer");
      if (L->kind == XD_L_ACT && L->act == XD_ACT_SOFTMAX && !flat_in)
        return PFAIL(pc, "softmax needs a flat input");
      L->out_c = C;
      L->out_h = H;
      L->out_w = W;
      L->flat = flat_in;
      break;
    case XD_L_NKINDS:
      break;
  }
  if (L->out_c <= 0 || L->out_h <= 0 || L->out_w <= 0) return PFAIL(pc, "layer output would be empty");
  if ((int64_t)L->out_c * L->out_h * L->out_w > (int64_t)1 << 30)
    return PFAIL(pc, "layer output of %lld values per image is too large", (long long)L->out_c * L->out_h * L->out_w);
  return 0;
}

static int find_layer(const xd_model *m, const char *name) {
  for (int i = 0; i < m->nlayers; i++)
    if (m->layers[i].name[0] && !strcmp(m->layers[i].name, name)) return i;
  return -1;
}

/* Tensor index of a reference: "input" is 0, a named earlier layer i is i + 1. Names of later lines
 * (which would make a cycle) and unknown names fail. */
static int resolve_ref(parse_ctx *pc, const xd_model *m, const char *name, int *rc) {
  if (!strcmp(name, "input")) return 0;
  int i = find_layer(m, name);
  if (i >= 0) return i + 1;
  char names[256] = "";
  size_t k = 0;
  for (int j = 0; j < m->nlayers && k + XD_NAME_MAX + 3 < sizeof names; j++)
    if (m->layers[j].name[0]) k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "", m->layers[j].name);
  *rc = PFAIL(pc, "unknown layer name '%s': a layer can only take the model input or an EARLIER named layer "
                  "(named so far: %s)", name, k ? names : "none");
  return -1;
}

static void tensor_shape(const xd_model *m, int t, int *c, int *h, int *w, int *flat) {
  if (t == 0) {
    *c = m->in_c, *h = m->in_h, *w = m->in_w, *flat = 0;
    return;
  }
  const xd_layer *L = &m->layers[t - 1];
  *c = L->out_c, *h = L->out_h, *w = L->out_w, *flat = L->flat;
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
    int extra = 0;
    for (char *t = strtok_r(p, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
      if (nt < MAXTOK) tok[nt++] = t;
      else extra = 1;
    }
    p = nl ? nl + 1 : NULL;
    if (nt == 0) continue;
    if (extra) {
      rc = PFAIL(&pc, "more than %d words on one line", MAXTOK);
      break;
    }
    xd_layer L;
    int is_input, dims[3];
    char refs[2][XD_NAME_MAX];
    if ((rc = parse_line(&pc, tok, nt, &L, &is_input, dims, refs))) break;
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
    /* inputs: the previous line's output unless in= names another; add's second operand by name */
    L.in0 = m->nlayers;
    for (int r = 0; r < 2 && rc == 0; r++) {
      if (!refs[r][0]) continue;
      int t = resolve_ref(&pc, m, refs[r], &rc);
      if (rc) break;
      if (r == 0) L.in0 = t;
      else L.in1 = t;
    }
    if (rc) break;
    if (L.name[0] && (!strcmp(L.name, "input") || find_layer(m, L.name) >= 0)) {
      rc = PFAIL(&pc, "layer name '%s' is already used (line %d)", L.name,
                 m->layers[find_layer(m, L.name)].line);
      break;
    }
    tensor_shape(m, L.in0, &L.in_c, &L.in_h, &L.in_w, &flat);
    if (L.kind == XD_L_ADD) {
      int c2, h2, w2, f2;
      tensor_shape(m, L.in1, &c2, &h2, &w2, &f2);
      if (c2 != L.in_c || h2 != L.in_h || w2 != L.in_w) {
        char a[48], b[48];
        snprintf(a, sizeof a, "%dx%dx%d", L.in_c, L.in_h, L.in_w);
        snprintf(b, sizeof b, "%dx%dx%d", c2, h2, w2);
        rc = PFAIL(&pc, "add: shapes differ: %s (%s) vs %s (%s)", a, L.in0 ? "its input" : "the model input", b,
                   refs[1]);
        break;
      }
    }
    if ((rc = infer_shape(&pc, &L, flat))) break;
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
    for (int i = 0; i < m->nlayers; i++) {
      const xd_layer *L = &m->layers[i];
      if (L->in0 > 0) m->layers[L->in0 - 1].consumers++;
      if (L->in1 > 0) m->layers[L->in1 - 1].consumers++;
    }
    for (int i = 0; i + 1 < m->nlayers && rc == 0; i++)
      if (m->layers[i].consumers == 0) {
        pc.line = m->layers[i].line;
        rc = PFAIL(&pc, "the output of this layer%s%s is never used (every layer but the last must feed another)",
                   m->layers[i].name[0] ? " " : "", m->layers[i].name);
      }
  }
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
      L->b_n = L->p.conv.nobias ? 0 : (size_t)L->out_c;
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
  /* an output's gradient is needed when this layer or one upstream of it has parameters: the input
   * gradient of the first parametrised layer (and of parameter-free layers before it) is never used */
  for (int i = 0; i < m->nlayers; i++) {
    xd_layer *L = &m->layers[i];
    int up = (L->in0 > 0 && m->layers[L->in0 - 1].needs_grad) || (L->in1 > 0 && m->layers[L->in1 - 1].needs_grad);
    L->needs_grad = L->w_n + L->b_n > 0 || up;
  }
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
                                  "dense", "activation", "add", "standardize"};
  return n[k];
}

void xd_model_summary(const xd_model *m, FILE *f) {
  fprintf(f, "%-4s %-36s %-14s %10s %12s\n", "#", "layer", "output shape", "params", "MFLOP/image");
  char in[32];
  snprintf(in, sizeof in, "%dx%dx%d", m->in_c, m->in_h, m->in_w);
  fprintf(f, "%-4s %-36s %-14s %10s %12s\n", "", "input", in, "", "");
  size_t total = 0;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    char desc[96], shape[32];
    if (L->kind == XD_L_CONV)
      snprintf(desc, sizeof desc, "conv %dx%d/%d %s%s", L->p.conv.kh, L->p.conv.kw, L->p.conv.stride,
               act_name(L->act), L->p.conv.same == 1 ? " same" : (L->p.conv.same == 2 ? " pad" : ""));
    else if (L->kind == XD_L_DENSE)
      snprintf(desc, sizeof desc, "dense %s", act_name(L->act));
    else if (L->kind == XD_L_ACT)
      snprintf(desc, sizeof desc, "%s", act_name(L->act));
    else if (L->kind == XD_L_ADD)
      snprintf(desc, sizeof desc, "add %s %s", L->in1 ? m->layers[L->in1 - 1].name : "input", act_name(L->act));
    else if (L->kind == XD_L_BATCHNORM && L->act != XD_ACT_LINEAR)
      snprintf(desc, sizeof desc, "batchnorm %s", act_name(L->act));
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
    if (L->name[0] && strlen(desc) + strlen(L->name) + 4 < sizeof desc)
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), " [%s]", L->name);
    if (L->in0 != i && strlen(desc) + 12 < sizeof desc)
      snprintf(desc + strlen(desc), sizeof desc - strlen(desc), L->in0 ? " <- %d" : " <- input", L->in0 - 1);
    if (mf > 0)
      fprintf(f, "%-4d %-36s %-14s %10zu %12.2f\n", i, desc, shape, np, mf);
    else
      fprintf(f, "%-4d %-36s %-14s %10zu %12s\n", i, desc, shape, np, "");
  }
  fprintf(f, "total parameters: %zu; forward %.1f MFLOP/image, training step %.1f MFLOP/image\n", total,
          xd_model_flops_per_image(m, 0) / 1e6, xd_model_flops_per_image(m, 1) / 1e6);
}
