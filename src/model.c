/* Model description parser, shape inference, arenas and initialisation. */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- parsing ----
 * Every word of a line is understood or refused with the line number: positional arguments are strict
 * (plain decimal digits, KHxKW or K exactly), key=value options are checked against the layer kind,
 * given at most once, never empty and within range. Messages quote at most QMAX characters of a word. */

#define QMAX "40"

static const char *const ACT_NAMES[] = {"linear", "relu", "leakyrelu", "elu", "sigmoid", "tanh", "softmax"};
#define NACT ((int)(sizeof ACT_NAMES / sizeof ACT_NAMES[0]))

static int parse_act(const char *s, xd_act *a) {
  for (int i = 0; i < NACT; i++)
    if (!strcmp(s, ACT_NAMES[i])) {
      *a = (xd_act)i;
      return 0;
    }
  return -1;
}

/* Words that are part of the language and so cannot name a layer (`add relu` would read as a name). */
static int reserved_word(const char *s) {
  static const char *const kw[] = {"input", "conv", "maxpool", "avgpool", "globalavgpool", "batchnorm", "dropout",
                                   "flatten", "dense", "add", "standardize"};
  xd_act a;
  for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
    if (!strcmp(s, kw[i])) return 1;
  return parse_act(s, &a) == 0;
}

/* A decimal integer in [lo, hi]: digits only (no sign, spaces, trailing characters), no overflow. */
static int parse_int_range(const char *s, int lo, int hi, int *v) {
  if (!*s) return -1;
  int64_t x = 0;
  for (const char *c = s; *c; c++) {
    if (*c < '0' || *c > '9') return -1;
    x = x * 10 + (*c - '0');
    if (x > hi) return -1;
  }
  if (x < lo) return -1;
  *v = (int)x;
  return 0;
}

/* A finite decimal number ("0.2", "1e-5", ".5"): no hex, inf or nan, nothing after it; also finite and
 * unchanged in sign as a float (1e-50 would become 0, 1e300 infinity). */
static int parse_real(const char *s, float *v) {
  if (!*s || strlen(s) > 64) return -1;
  for (const char *c = s; *c; c++)
    if (!strchr("0123456789.eE+-", *c)) return -1;
  char *end;
  errno = 0;
  double x = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(x)) return -1;
  float f = (float)x;
  if (!isfinite(f) || (x != 0 && f == 0)) return -1;
  *v = f;
  return 0;
}

/* "3x3" -> 3,3 ; with single: "5" -> 5,5 ; "1x128x128" with n = 3. Each part 1..XD_MODEL_INT_MAX; an
 * empty part ("3x", "x3", "3xx3") or anything but digits and 'x' fails. */
static int parse_dims(const char *s, int *out, int n, int single) {
  int k = 0;
  for (const char *p = s;;) {
    const char *x = strchr(p, 'x');
    size_t len = x ? (size_t)(x - p) : strlen(p);
    char part[16];
    if (k >= n || len == 0 || len >= sizeof part) return -1;
    memcpy(part, p, len);
    part[len] = 0;
    if (parse_int_range(part, 1, XD_MODEL_INT_MAX, &out[k])) return -1;
    k++;
    if (!x) break;
    p = x + 1;
  }
  if (k == 1 && single && n == 2) {
    out[1] = out[0];
    k = 2;
  }
  return k == n ? 0 : -1;
}

typedef struct parse_ctx {
  const char *source;
  int line;
  xd_err *e;
} parse_ctx;

#define PFAIL(pc, ...) parse_fail(pc, __VA_ARGS__)
static int parse_fail(parse_ctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int parse_fail(parse_ctx *pc, const char *fmt, ...) {
  char msg[768];
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

/* What each kind of line accepts, for messages and for the option check. */
enum { OPT_NAME = 1, OPT_IN = 2, OPT_STRIDE = 4, OPT_PAD = 8, OPT_BIAS = 16, OPT_EPS = 32, OPT_MOMENTUM = 64 };
static const struct {
  const char *word, *syntax;
  int opts, act; /* option bits; act: takes an optional activation */
} KINDS[XD_L_NKINDS] = {
    [XD_L_CONV] = {"conv", "conv FILTERS KHxKW [ACTIVATION] [stride=S] [pad=valid|same|N] [bias=0|1]",
                   OPT_STRIDE | OPT_PAD | OPT_BIAS, 1},
    [XD_L_MAXPOOL] = {"maxpool", "maxpool KHxKW [stride=S|SHxSW]", OPT_STRIDE, 0},
    [XD_L_AVGPOOL] = {"avgpool", "avgpool KHxKW [stride=S|SHxSW]", OPT_STRIDE, 0},
    [XD_L_GAP] = {"globalavgpool", "globalavgpool", 0, 0},
    [XD_L_BATCHNORM] = {"batchnorm", "batchnorm [ACTIVATION] [eps=E] [momentum=M]", OPT_EPS | OPT_MOMENTUM, 1},
    [XD_L_DROPOUT] = {"dropout", "dropout RATE", 0, 0},
    [XD_L_FLATTEN] = {"flatten", "flatten", 0, 0},
    [XD_L_DENSE] = {"dense", "dense UNITS [ACTIVATION]", 0, 1},
    [XD_L_ACT] = {"activation", "ACTIVATION", 0, 0},
    [XD_L_ADD] = {"add", "add NAME [ACTIVATION]", 0, 1},
    [XD_L_STANDARDIZE] = {"standardize", "standardize [eps=E]", OPT_EPS, 0},
};
static const char *const OPT_KEYS[] = {"name", "in", "stride", "pad", "bias", "eps", "momentum"};
#define NOPT ((int)(sizeof OPT_KEYS / sizeof OPT_KEYS[0]))

static const char *kind_word(const xd_layer *L) {
  return L->kind == XD_L_ACT ? ACT_NAMES[L->act] : KINDS[L->kind].word;
}

/* One key=value option. `seen` collects the keys given so far on the line; `in=` and the add's
 * reference are kept as text in refs[] and resolved once the line is known to be well formed. */
static int parse_option(parse_ctx *pc, xd_layer *L, const char *tok, char refs[2][XD_NAME_MAX], int *seen) {
  const char *eq = strchr(tok, '=');
  int bit = -1;
  for (int i = 0; i < NOPT; i++)
    if (strlen(OPT_KEYS[i]) == (size_t)(eq - tok) && !strncmp(tok, OPT_KEYS[i], (size_t)(eq - tok))) bit = i;
  if (eq == tok) return PFAIL(pc, "bad option '%." QMAX "s': expected key=value", tok);
  int allowed = KINDS[L->kind].opts | OPT_NAME | OPT_IN;
  if (bit < 0 || !(allowed & (1 << bit))) {
    char list[96] = "";
    for (int j = 0; j < NOPT; j++) { /* the kind's own options first, then name and in */
      int i = (j + 2) % NOPT;
      if (allowed & (1 << i))
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s=", list[0] ? ", " : "", OPT_KEYS[i]);
    }
    return PFAIL(pc, "unknown option '%.*s' for this layer (%s takes %s)", (int)(eq - tok < 32 ? eq - tok : 32), tok,
                 kind_word(L), list);
  }
  const char *key = OPT_KEYS[bit], *val = eq + 1;
  if (*seen & (1 << bit)) return PFAIL(pc, "option '%s' given twice", key);
  *seen |= 1 << bit;
  if (!*val) return PFAIL(pc, "option '%s=' has no value", key);
  switch (1 << bit) {
    case OPT_NAME:
    case OPT_IN:
      if (!valid_name(val))
        return PFAIL(pc, "bad %s '%." QMAX "s' (a letter or '_', then letters, digits, '_', '-', '.'; at most %d characters%s)",
                     key, val, XD_NAME_MAX - 1, bit == 0 ? "; 'input' is reserved" : "");
      if (bit == 0 && !strcmp(val, "input"))
        return PFAIL(pc, "bad name 'input' (a letter or '_', then letters, digits, '_', '-', '.'; at most %d "
                         "characters; 'input' is reserved)", XD_NAME_MAX - 1);
      if (bit == 0 && reserved_word(val))
        return PFAIL(pc, "bad name '%s': a layer or activation word cannot name a layer", val);
      if (bit == 1 && strcmp(val, "input") && reserved_word(val))
        return PFAIL(pc, "bad in '%s': a layer or activation word is not a layer name", val);
      snprintf(bit == 0 ? L->name : refs[0], XD_NAME_MAX, "%s", val);
      return 0;
    case OPT_STRIDE:
      if (L->kind == XD_L_CONV) {
        if (parse_int_range(val, 1, XD_MODEL_INT_MAX, &L->p.conv.stride))
          return PFAIL(pc, "stride must be a positive integer up to %d, got '%." QMAX "s'", XD_MODEL_INT_MAX, val);
      } else {
        int s[2];
        if (parse_dims(val, s, 2, 1))
          return PFAIL(pc, "stride must be S or SHxSW (positive integers up to %d), got '%." QMAX "s'",
                       XD_MODEL_INT_MAX, val);
        L->p.pool.sh = s[0];
        L->p.pool.sw = s[1];
      }
      return 0;
    case OPT_PAD:
      if (!strcmp(val, "same")) {
        L->p.conv.same = 1;
      } else if (!strcmp(val, "valid")) {
        L->p.conv.same = 0;
      } else {
        int pv;
        if (parse_int_range(val, 0, XD_MODEL_INT_MAX, &pv))
          return PFAIL(pc, "pad must be same, valid or a number of pixels, got '%." QMAX "s'", val);
        L->p.conv.same = 2; /* explicit, symmetric: PyTorch's padding=N */
        L->p.conv.pad_top = L->p.conv.pad_left = pv;
      }
      return 0;
    case OPT_BIAS:
      if (strcmp(val, "0") && strcmp(val, "1")) return PFAIL(pc, "bias must be 0 or 1, got '%." QMAX "s'", val);
      L->p.conv.nobias = !strcmp(val, "0"); /* bias=0: PyTorch's bias=False (e.g. before a batchnorm) */
      return 0;
    case OPT_EPS: {
      float v;
      if (parse_real(val, &v) || !(v > 0)) return PFAIL(pc, "bad eps '%." QMAX "s' (a positive number)", val);
      if (L->kind == XD_L_STANDARDIZE) L->p.stdz.eps = v;
      else L->p.bn.eps = v;
      return 0;
    }
    case OPT_MOMENTUM: {
      float v;
      if (parse_real(val, &v) || !(v > 0 && v <= 1))
        return PFAIL(pc, "bad momentum '%." QMAX "s' (a number in (0, 1])", val);
      L->p.bn.momentum = v;
      return 0;
    }
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
    if (nt != 2 || parse_dims(tok[1], in_dims, 3, 0))
      return PFAIL(pc, "expected 'input CxHxW' (each from 1 to %d, e.g. input 1x128x128), got '%." QMAX "s'",
                   XD_MODEL_INT_MAX, nt < 2 ? "" : nt > 2 ? tok[2] : tok[1]);
    *is_input = 1;
    return 0;
  } else if (!strcmp(k, "conv")) {
    L->kind = XD_L_CONV;
    L->p.conv.stride = 1;
    int kk[2];
    if (nt < 3) return PFAIL(pc, "expected '%s'", KINDS[XD_L_CONV].syntax);
    if (parse_int_range(tok[1], 1, XD_MODEL_INT_MAX, &L->p.conv.filters))
      return PFAIL(pc, "conv: bad number of filters '%." QMAX "s' (an integer from 1 to %d)", tok[1], XD_MODEL_INT_MAX);
    if (parse_dims(tok[2], kk, 2, 1))
      return PFAIL(pc, "conv: bad kernel size '%." QMAX "s' (KHxKW or K, each from 1 to %d)", tok[2], XD_MODEL_INT_MAX);
    L->p.conv.kh = kk[0];
    L->p.conv.kw = kk[1];
    pos = 3;
  } else if (!strcmp(k, "maxpool") || !strcmp(k, "avgpool")) {
    L->kind = !strcmp(k, "maxpool") ? XD_L_MAXPOOL : XD_L_AVGPOOL;
    int kk[2];
    if (nt < 2) return PFAIL(pc, "expected '%s'", KINDS[L->kind].syntax);
    if (parse_dims(tok[1], kk, 2, 1))
      return PFAIL(pc, "%s: bad window size '%." QMAX "s' (KHxKW or K, each from 1 to %d)", k, tok[1], XD_MODEL_INT_MAX);
    L->p.pool.kh = L->p.pool.sh = kk[0];
    L->p.pool.kw = L->p.pool.sw = kk[1];
    pos = 2;
  } else if (!strcmp(k, "globalavgpool")) {
    L->kind = XD_L_GAP;
  } else if (!strcmp(k, "batchnorm")) {
    L->kind = XD_L_BATCHNORM;
    L->p.bn.eps = 1e-5f;
    L->p.bn.momentum = 0.1f;
  } else if (!strcmp(k, "add")) {
    L->kind = XD_L_ADD;
    if (nt < 2 || strchr(tok[1], '=') || !valid_name(tok[1]))
      return PFAIL(pc, "expected 'add NAME [ACTIVATION]': the sum of the previous layer's output (or in=) and "
                       "layer NAME's");
    if (strcmp(tok[1], "input") && reserved_word(tok[1]))
      return PFAIL(pc, "expected 'add NAME [ACTIVATION]': '%s' is a layer or activation word, not a layer name", tok[1]);
    snprintf(refs[1], XD_NAME_MAX, "%s", tok[1]);
    pos = 2;
  } else if (!strcmp(k, "standardize")) {
    L->kind = XD_L_STANDARDIZE;
    L->p.stdz.eps = 1e-3f;
  } else if (!strcmp(k, "dropout")) {
    L->kind = XD_L_DROPOUT;
    if (nt < 2 || strchr(tok[1], '=') || parse_real(tok[1], &L->p.dropout.rate) || !(L->p.dropout.rate >= 0) ||
        !(L->p.dropout.rate < 1))
      return PFAIL(pc, "expected 'dropout RATE' with 0 <= RATE < 1, got '%." QMAX "s'", nt < 2 ? "" : tok[1]);
    pos = 2;
  } else if (!strcmp(k, "flatten")) {
    L->kind = XD_L_FLATTEN;
  } else if (!strcmp(k, "dense")) {
    L->kind = XD_L_DENSE;
    if (nt < 2 || parse_int_range(tok[1], 1, XD_MODEL_INT_MAX, &L->p.dense.units))
      return PFAIL(pc, "expected 'dense UNITS [ACTIVATION]' with UNITS from 1 to %d, got '%." QMAX "s'",
                   XD_MODEL_INT_MAX, nt < 2 ? "" : tok[1]);
    pos = 2;
  } else if (parse_act(k, &a) == 0) {
    L->kind = XD_L_ACT;
    L->act = a;
  } else {
    return PFAIL(pc, "unknown layer '%." QMAX "s' (layers: conv maxpool avgpool globalavgpool batchnorm dropout "
                     "flatten dense add standardize, or an activation)", k);
  }
  /* the optional activation, right after the positional arguments */
  int have_act = 0;
  if (KINDS[L->kind].act && pos < nt && !strchr(tok[pos], '=')) {
    if (parse_act(tok[pos], &L->act))
      return PFAIL(pc, "unknown activation '%." QMAX "s' (linear relu leakyrelu elu sigmoid tanh softmax)", tok[pos]);
    have_act = 1;
    pos++;
  }
  int seen = 0;
  for (; pos < nt; pos++) {
    const char *t = tok[pos];
    if (strchr(t, '=')) {
      XD_TRY(parse_option(pc, L, t, refs, &seen));
      continue;
    }
    xd_act a2;
    if (parse_act(t, &a2) == 0) {
      if (seen) return PFAIL(pc, "unexpected '%s': the activation comes before key=value options", t);
      if (have_act) return PFAIL(pc, "unexpected '%s': a layer takes one activation", t);
      return PFAIL(pc, "unexpected '%s': %s takes no activation (put it on a line of its own)", t, kind_word(L));
    }
    return PFAIL(pc, "unexpected '%." QMAX "s' (expected '%s [name=NAME] [in=NAME]')", t, KINDS[L->kind].syntax);
  }
  if (L->name[0] && (!strcmp(L->name, refs[0]) || !strcmp(L->name, refs[1])))
    return PFAIL(pc, "layer '%s' cannot read its own output", L->name);
  return 0;
}

/* Output shape of L given its input, computed in 64 bits; fills L->out_* or fails with a message about
 * impossible or too large shapes. */
static int infer_shape(parse_ctx *pc, xd_layer *L, int flat_in) {
  const int64_t C = L->in_c, H = L->in_h, W = L->in_w;
  int64_t oc = C, oh = H, ow = W;
  switch (L->kind) {
    case XD_L_CONV: {
      if (flat_in) return PFAIL(pc, "conv needs a 4-D input, but its input is flat (after flatten/dense)");
      const int64_t s = L->p.conv.stride, kh = L->p.conv.kh, kw = L->p.conv.kw;
      if (L->p.conv.same == 2) {
        const int64_t p = L->p.conv.pad_top;
        if (p >= kh || p >= kw) return PFAIL(pc, "pad=%d must be smaller than the %dx%d kernel", (int)p, (int)kh, (int)kw);
        if (kh > H + 2 * p || kw > W + 2 * p)
          return PFAIL(pc, "conv kernel %dx%d is larger than its %dx%d input padded by %d", (int)kh, (int)kw, (int)H,
                       (int)W, (int)p);
        oh = (H + 2 * p - kh) / s + 1;
        ow = (W + 2 * p - kw) / s + 1;
      } else if (L->p.conv.same) {
        oh = (H + s - 1) / s;
        ow = (W + s - 1) / s;
        int64_t ph = (oh - 1) * s + kh - H, pw = (ow - 1) * s + kw - W;
        if (ph < 0) ph = 0;
        if (pw < 0) pw = 0;
        L->p.conv.pad_top = (int)(ph / 2);
        L->p.conv.pad_left = (int)(pw / 2);
      } else {
        if (kh > H || kw > W)
          return PFAIL(pc, "conv kernel %dx%d is larger than its %dx%d input", (int)kh, (int)kw, (int)H, (int)W);
        oh = (H - kh) / s + 1;
        ow = (W - kw) / s + 1;
      }
      oc = L->p.conv.filters;
      if (L->act == XD_ACT_SOFTMAX) return PFAIL(pc, "softmax is only supported on dense layers");
      break;
    }
    case XD_L_MAXPOOL:
    case XD_L_AVGPOOL:
      if (flat_in) return PFAIL(pc, "pooling needs a 4-D input, but its input is flat");
      if (L->p.pool.kh > H || L->p.pool.kw > W)
        return PFAIL(pc, "pool window %dx%d is larger than its %dx%d input", L->p.pool.kh, L->p.pool.kw, (int)H, (int)W);
      oh = (H - L->p.pool.kh) / L->p.pool.sh + 1;
      ow = (W - L->p.pool.kw) / L->p.pool.sw + 1;
      break;
    case XD_L_GAP:
      if (flat_in) return PFAIL(pc, "globalavgpool needs a 4-D input, but its input is flat");
      oh = ow = 1;
      L->flat = 1;
      break;
    case XD_L_FLATTEN:
      if (flat_in) return PFAIL(pc, "flatten after an already flat tensor");
      oc = C * H * W; /* each tensor holds at most 2^30 values: no overflow */
      oh = ow = 1;
      L->flat = 1;
      break;
    case XD_L_DENSE:
      if (!flat_in)
        return PFAIL(pc, "dense after a 4-D tensor (%dx%dx%d) needs a flatten or globalavgpool first", (int)C, (int)H,
                     (int)W);
      oc = L->p.dense.units;
      oh = ow = 1;
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
      L->flat = flat_in;
      break;
    case XD_L_NKINDS:
      break;
  }
  if (oc <= 0 || oh <= 0 || ow <= 0) return PFAIL(pc, "layer output would be empty");
  if (oc * oh * ow > XD_MODEL_TENSOR_MAX)
    return PFAIL(pc, "layer output of %lld values per image is too large (at most %lld)", (long long)(oc * oh * ow),
                 (long long)XD_MODEL_TENSOR_MAX);
  L->out_c = (int)oc;
  L->out_h = (int)oh;
  L->out_w = (int)ow;
  return 0;
}

/* Parameter counts of a layer whose shapes are known, saturating (checked against XD_MODEL_PARAMS_MAX). */
static void layer_param_counts(xd_layer *L) {
  L->w_n = L->b_n = 0;
  if (L->kind == XD_L_CONV) {
    uint64_t k = xd_mul_sat(xd_mul_sat((uint64_t)L->in_c, (uint64_t)L->p.conv.kh), (uint64_t)L->p.conv.kw);
    L->w_n = (size_t)xd_mul_sat((uint64_t)L->out_c, k);
    L->b_n = L->p.conv.nobias ? 0 : (size_t)L->out_c;
  } else if (L->kind == XD_L_DENSE) {
    L->w_n = (size_t)xd_mul_sat((uint64_t)L->out_c, (uint64_t)L->in_c);
    L->b_n = (size_t)L->out_c;
  } else if (L->kind == XD_L_BATCHNORM) {
    L->w_n = L->b_n = (size_t)L->in_c;
  }
}
/* floats a layer takes in the parameter arena: weights and bias, each padded to 16 floats */
static uint64_t layer_arena_floats(const xd_layer *L) {
  return xd_add_sat(xd_add_sat(L->w_n, 15) & ~(uint64_t)15, xd_add_sat(L->b_n, 15) & ~(uint64_t)15);
}

static void fmt_count(char *buf, size_t n, uint64_t v) {
  if (v == UINT64_MAX) snprintf(buf, n, "more than 2^64");
  else snprintf(buf, n, "%llu", (unsigned long long)v);
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

/* The characters of one line (without its line ending): printable ASCII and tabs, anything but control
 * characters inside a comment; at most XD_MODEL_LINE_MAX of them. */
static int check_line_chars(parse_ctx *pc, const char *p, size_t len) {
  if (len > XD_MODEL_LINE_MAX)
    return PFAIL(pc, "line of %zu characters, longer than the limit of %d", len, XD_MODEL_LINE_MAX);
  int comment = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char u = (unsigned char)p[i];
    if (u == '#') comment = 1;
    if (u == '\t') continue;
    if (u == '\r')
      return PFAIL(pc, "carriage return at column %zu inside the line (line endings are LF or CRLF)", i + 1);
    if (u < 0x20 || u == 0x7f) return PFAIL(pc, "control character 0x%02x at column %zu", u, i + 1);
    if (u >= 0x80 && !comment)
      return PFAIL(pc, "non-ASCII byte 0x%02x at column %zu (outside comments a model description is ASCII)", u, i + 1);
  }
  return 0;
}

int xd_model_build(xd_model *m, const char *text, const char *source, xd_err *e) {
  memset(m, 0, sizeof *m);
  snprintf(m->source, sizeof m->source, "%s", source);
  parse_ctx pc = {source, 0, e};
  if (!strncmp(text, "\xef\xbb\xbf", 3)) text += 3; /* a UTF-8 byte order mark (Windows editors write one) */
  size_t tlen = strlen(text);
  if (tlen > XD_MODEL_TEXT_MAX)
    return xd_fail(e, "%s: model description of %zu bytes, larger than the limit of %zu", source, tlen,
                   (size_t)XD_MODEL_TEXT_MAX);
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
  uint64_t nparams = 0; /* arena floats so far, for the limit */
  /* walk lines by hand: strtok on "\n" would merge blank lines and lose line numbers */
  for (char *p = buf; p && *p && rc == 0;) {
    char *nl = strchr(p, '\n');
    char *end = nl ? nl : p + strlen(p);
    pc.line++;
    if (end > p && end[-1] == '\r') end--; /* CRLF */
    if ((rc = check_line_chars(&pc, p, (size_t)(end - p)))) break;
    *end = 0;
    char *line = p;
    p = nl ? nl + 1 : NULL;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *tok[XD_MODEL_MAX_WORDS];
    int nt = 0, extra = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
      if (nt < XD_MODEL_MAX_WORDS) tok[nt++] = t;
      else extra = 1;
    }
    if (nt == 0) continue;
    if (extra) {
      rc = PFAIL(&pc, "more than %d words on one line", XD_MODEL_MAX_WORDS);
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
      int64_t n = (int64_t)dims[0] * dims[1] * dims[2];
      if (n > XD_MODEL_TENSOR_MAX) {
        rc = PFAIL(&pc, "input %dx%dx%d has %lld values per image, more than %lld", dims[0], dims[1], dims[2],
                   (long long)n, (long long)XD_MODEL_TENSOR_MAX);
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
    if (m->nlayers >= XD_MODEL_MAX_LAYERS) {
      rc = PFAIL(&pc, "more than %d layers", XD_MODEL_MAX_LAYERS);
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
    if (L.name[0] && find_layer(m, L.name) >= 0) {
      rc = PFAIL(&pc, "layer name '%s' is already used (line %d)", L.name, m->layers[find_layer(m, L.name)].line);
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
    layer_param_counts(&L);
    uint64_t lp = layer_arena_floats(&L);
    nparams = xd_add_sat(nparams, lp);
    if (nparams > XD_MODEL_PARAMS_MAX) {
      char a[32], b[32];
      fmt_count(a, sizeof a, xd_add_sat(L.w_n, L.b_n));
      fmt_count(b, sizeof b, nparams);
      rc = PFAIL(&pc, "%s: %s parameters in this layer, %s in the model so far: more than the limit of %llu",
                 kind_word(&L), a, b, (unsigned long long)XD_MODEL_PARAMS_MAX);
      break;
    }
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
  size_t np = 0, nb = 0, total = 0;
  int biggest = 0;
  for (int i = 0; i < m->nlayers; i++) {
    xd_layer *L = &m->layers[i];
    if (L->kind == XD_L_BATCHNORM) {
      L->rm_off = nb;
      L->rv_off = nb + (size_t)L->in_c;
      nb += 2 * (size_t)L->in_c;
    }
    /* 16-float alignment of every tensor keeps vector loads aligned */
    L->w_off = np;
    np += (L->w_n + 15) & ~(size_t)15;
    L->b_off = np;
    np += (L->b_n + 15) & ~(size_t)15;
    total += L->w_n + L->b_n;
    if (L->w_n + L->b_n > m->layers[biggest].w_n + m->layers[biggest].b_n) biggest = i;
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
  /* the memory of the arenas, before allocating them */
  char what[sizeof m->source + 160];
  snprintf(what, sizeof what, "%s:%d: the model with its gradients (%zu parameters, %zu in this layer)", source,
           m->layers[biggest].line, total, m->layers[biggest].w_n + m->layers[biggest].b_n);
  if (xd_mem_check(xd_model_bytes(m), what, e)) {
    xd_model_free(m);
    return -1;
  }
  m->params = xd_alloc(np * sizeof(float), "parameters", e);
  m->grads = m->params ? xd_alloc(np * sizeof(float), "gradients", e) : NULL;
  m->buffers = m->grads ? xd_alloc((nb ? nb : 1) * sizeof(float), "batchnorm statistics", e) : NULL;
  if (!m->buffers) {
    char msg[XD_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", e ? e->msg : "");
    xd_fail(e, "%s: %s", source, msg);
    xd_model_free(m);
    return -1;
  }
  return 0;
}

uint64_t xd_model_bytes(const xd_model *m) {
  /* each arena rounded up to 64 bytes by xd_alloc */
  uint64_t p = xd_add_sat(xd_mul_sat(m->nparams, sizeof(float)), 64);
  uint64_t b = xd_add_sat(xd_mul_sat(m->nbuffers ? m->nbuffers : 1, sizeof(float)), 64);
  return xd_add_sat(xd_mul_sat(p, 2), b);
}

uint64_t xd_model_train_bytes(const xd_model *m, int batch, int ema) {
  uint64_t p = xd_add_sat(xd_mul_sat(m->nparams, sizeof(float)), 128);
  uint64_t b = xd_add_sat(xd_mul_sat(m->nbuffers, sizeof(float)), 128);
  uint64_t t = xd_model_bytes(m);
  t = xd_add_sat(t, xd_mul_sat(p, 2)); /* optimizer moments m, v */
  t = xd_add_sat(t, p);                /* gradient reduction buffer */
  if (ema) t = xd_add_sat(t, xd_add_sat(p, b));
  return xd_add_sat(t, xd_workspace_bytes(m, batch));
}

int xd_model_check_train(const xd_model *m, int batch, int ema, xd_err *e) {
  char what[sizeof m->source + 64];
  snprintf(what, sizeof what, "%s: training with batch %d", m->source, batch);
  return xd_mem_check(xd_model_train_bytes(m, batch, ema), what, e);
}

/* Reads a model file: a regular file (a FIFO would block, a directory or device is never a model) of
 * at most XD_MODEL_TEXT_MAX bytes, without NUL bytes. Returns the text (caller frees) or NULL. */
static char *read_model_file(const char *path, xd_err *e) {
  if (xd_check_regular(path, e)) return NULL;
  /* O_NONBLOCK: should the path have become a FIFO since, open does not wait for a writer */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    xd_fail(e, "%s: cannot open model description: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    xd_fail(e, "%s: not a regular file", path);
    close(fd);
    return NULL;
  }
  if ((uint64_t)st.st_size > XD_MODEL_TEXT_MAX) {
    xd_fail(e, "%s: model description of %lld bytes, larger than the limit of %zu", path, (long long)st.st_size,
            (size_t)XD_MODEL_TEXT_MAX);
    close(fd);
    return NULL;
  }
  size_t cap = (size_t)st.st_size + 2, n = 0;
  char *text = malloc(cap);
  if (!text) {
    xd_fail(e, "out of memory reading %s", path);
    close(fd);
    return NULL;
  }
  for (;;) { /* the file may have grown since fstat: read to the end, up to the limit */
    if (n + 1 == cap) {
      if (cap > XD_MODEL_TEXT_MAX + 1) {
        xd_fail(e, "%s: model description larger than the limit of %zu bytes", path, (size_t)XD_MODEL_TEXT_MAX);
        free(text);
        close(fd);
        return NULL;
      }
      char *t2 = realloc(text, cap = cap * 2 > XD_MODEL_TEXT_MAX + 2 ? XD_MODEL_TEXT_MAX + 2 : cap * 2);
      if (!t2) {
        xd_fail(e, "out of memory reading %s", path);
        free(text);
        close(fd);
        return NULL;
      }
      text = t2;
    }
    ssize_t r = read(fd, text + n, cap - n - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      xd_fail(e, "%s: cannot read model description: %s", path, strerror(errno));
      free(text);
      close(fd);
      return NULL;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  text[n] = 0;
  const char *nul = memchr(text, 0, n);
  if (nul) {
    int line = 1;
    for (const char *c = text; c < nul; c++) line += *c == '\n';
    xd_fail(e, "%s:%d: NUL byte in the model description (a binary file?)", path, line);
    free(text);
    return NULL;
  }
  return text;
}

int xd_model_from_arg(xd_model *m, const char *arg, int channels, int height, int width, xd_err *e) {
  memset(m, 0, sizeof *m);
  char *text = xd_model_preset_text(arg, channels, height, width);
  char source[600];
  if (text) {
    snprintf(source, sizeof source, "preset %s", arg);
  } else {
    struct stat st;
    if (!*arg) return xd_fail(e, "--model: an empty name (a preset: %s; or a model file)", xd_model_preset_names());
    if (stat(arg, &st) != 0) {
      if (errno == ENOENT && !strchr(arg, '/') && !strchr(arg, '.'))
        return xd_fail(e, "%s: not a preset (%s) and no such model file", arg, xd_model_preset_names());
      return xd_fail(e, "%s: cannot open model description: %s", arg, strerror(errno));
    }
    if (!(text = read_model_file(arg, e))) return -1;
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
