/* ONNX export: include/onnx_export.h. Every message object is allocated from a small arena (a list of
 * blocks freed together), filled through protobuf-c's generated structs and packed by protobuf-c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "onnx_export.h"

typedef struct arena {
  void **blk;
  size_t n, cap;
  int oom;
} arena;

static void *az(arena *a, size_t bytes) {
  if (a->oom) return NULL;
  if (a->n == a->cap) {
    size_t nc = a->cap ? 2 * a->cap : 256;
    void **nb = realloc(a->blk, nc * sizeof *nb);
    if (!nb) return a->oom = 1, NULL;
    a->blk = nb, a->cap = nc;
  }
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) return a->oom = 1, NULL;
  return a->blk[a->n++] = p;
}

static void arena_free(arena *a) {
  for (size_t i = 0; i < a->n; i++) free(a->blk[i]);
  free(a->blk);
}

static char *astr(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *astr(arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = len >= 0 ? az(a, (size_t)len + 1) : NULL;
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)len + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* growable arrays of message pointers */
typedef struct ptrvec {
  void **v;
  size_t n, cap;
} ptrvec;

static void push(arena *a, ptrvec *pv, void *p) {
  if (!p) return;
  if (pv->n == pv->cap) {
    size_t nc = pv->cap ? 2 * pv->cap : 16;
    void **nv = az(a, nc * sizeof *nv);
    if (!nv) return;
    if (pv->n) memcpy(nv, pv->v, pv->n * sizeof *nv);
    pv->v = nv, pv->cap = nc;
  }
  pv->v[pv->n++] = p;
}

typedef struct ctx {
  arena a;
  ptrvec nodes, inits, meta;
  int nnode;
} ctx;

static Onnx__AttributeProto *attr_i(ctx *c, const char *name, int64_t v) {
  Onnx__AttributeProto *t = az(&c->a, sizeof *t);
  if (!t) return NULL;
  onnx__attribute_proto__init(t);
  t->name = (char *)name;
  t->has_type = 1, t->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  t->has_i = 1, t->i = v;
  return t;
}

static Onnx__AttributeProto *attr_f(ctx *c, const char *name, float v) {
  Onnx__AttributeProto *t = az(&c->a, sizeof *t);
  if (!t) return NULL;
  onnx__attribute_proto__init(t);
  t->name = (char *)name;
  t->has_type = 1, t->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  t->has_f = 1, t->f = v;
  return t;
}

static Onnx__AttributeProto *attr_ints(ctx *c, const char *name, int n, const int64_t *v) {
  Onnx__AttributeProto *t = az(&c->a, sizeof *t);
  int64_t *d = az(&c->a, (size_t)n * sizeof *d);
  if (!t || !d) return NULL;
  onnx__attribute_proto__init(t);
  t->name = (char *)name;
  t->has_type = 1, t->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  memcpy(d, v, (size_t)n * sizeof *d);
  t->n_ints = (size_t)n, t->ints = d;
  return t;
}

/* One node: op(inputs...) -> out, attributes (NULL-terminated list after the inputs' NULL). */
static void node(ctx *c, const char *op, const char *out, const char *const *in, int nin, Onnx__AttributeProto **at,
                 int nat) {
  Onnx__NodeProto *n = az(&c->a, sizeof *n);
  char **ins = az(&c->a, (size_t)nin * sizeof *ins);
  char **outs = az(&c->a, sizeof *outs);
  Onnx__AttributeProto **ats = nat ? az(&c->a, (size_t)nat * sizeof *ats) : NULL;
  if (!n || !ins || !outs || (nat && !ats)) return;
  onnx__node_proto__init(n);
  for (int i = 0; i < nin; i++) ins[i] = (char *)in[i];
  outs[0] = (char *)out;
  for (int i = 0; i < nat; i++) {
    if (!at[i]) return;
    ats[i] = at[i];
  }
  n->n_input = (size_t)nin, n->input = ins;
  n->n_output = 1, n->output = outs;
  n->op_type = (char *)op;
  n->name = astr(&c->a, "%s_%d", op, c->nnode++);
  n->n_attribute = (size_t)nat, n->attribute = ats;
  push(&c->a, &c->nodes, n);
}

#define IN(...) (const char *const[]){__VA_ARGS__}, (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *))

/* A float32 initializer, raw little-endian data (the arena copy is what gets packed). */
static const char *init_f(ctx *c, const char *name, int ndims, const int64_t *dims, const float *v, size_t n) {
  Onnx__TensorProto *t = az(&c->a, sizeof *t);
  int64_t *d = az(&c->a, (size_t)(ndims ? ndims : 1) * sizeof *d);
  uint8_t *raw = az(&c->a, n * sizeof(float));
  if (!t || !d || !raw || !name) return name;
  onnx__tensor_proto__init(t);
  memcpy(d, dims, (size_t)ndims * sizeof *d);
  /* ONNX raw_data is little-endian */
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    raw[4 * i] = (uint8_t)u, raw[4 * i + 1] = (uint8_t)(u >> 8), raw[4 * i + 2] = (uint8_t)(u >> 16),
                 raw[4 * i + 3] = (uint8_t)(u >> 24);
  }
  t->n_dims = (size_t)ndims, t->dims = d;
  t->has_data_type = 1, t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  t->name = (char *)name;
  t->has_raw_data = 1, t->raw_data.len = n * sizeof(float), t->raw_data.data = raw;
  push(&c->a, &c->inits, t);
  return name;
}

static Onnx__ValueInfoProto *value_info(ctx *c, const char *name, int ndims, const int64_t *dims) {
  Onnx__ValueInfoProto *v = az(&c->a, sizeof *v);
  Onnx__TypeProto *tp = az(&c->a, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = az(&c->a, sizeof *tt);
  Onnx__TensorShapeProto *sh = az(&c->a, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dv = az(&c->a, (size_t)ndims * sizeof *dv);
  if (!v || !tp || !tt || !sh || !dv) return NULL;
  onnx__value_info_proto__init(v);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  for (int i = 0; i < ndims; i++) {
    Onnx__TensorShapeProto__Dimension *d = az(&c->a, sizeof *d);
    if (!d) return NULL;
    onnx__tensor_shape_proto__dimension__init(d);
    if (dims[i] < 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = "N";
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i];
    }
    dv[i] = d;
  }
  sh->n_dim = (size_t)ndims, sh->dim = dv;
  tt->has_elem_type = 1, tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sh;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, tp->tensor_type = tt;
  v->name = (char *)name;
  v->type = tp;
  return v;
}

static void meta(ctx *c, const char *key, const char *value) {
  Onnx__StringStringEntryProto *p = az(&c->a, sizeof *p);
  if (!p || !value) return;
  onnx__string_string_entry_proto__init(p);
  p->key = (char *)key, p->value = (char *)value;
  push(&c->a, &c->meta, p);
}

/* JSON string body (quotes and backslashes escaped, control characters as \u00XX) */
static char *json_str(arena *a, const char *s) {
  size_t n = strlen(s);
  char *o = az(a, 6 * n + 3);
  if (!o) return NULL;
  char *p = o;
  *p++ = '"';
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') *p++ = '\\', *p++ = (char)ch;
    else if (ch < 0x20) p += sprintf(p, "\\u%04x", ch);
    else *p++ = (char)ch;
  }
  *p++ = '"';
  *p = 0;
  return o;
}

/* Applies activation a to tensor x; returns the output's name (out when given, else a fresh one). */
static const char *act(ctx *c, xd_act a, const char *x, const char *out, int li) {
  if (a == XD_ACT_LINEAR) return x;
  const char *y = out ? out : astr(&c->a, "layers.%d.%s", li, act_name(a));
  switch (a) {
  case XD_ACT_RELU: node(c, "Relu", y, IN(x), NULL, 0); break;
  case XD_ACT_LEAKYRELU: {
    Onnx__AttributeProto *at[] = {attr_f(c, "alpha", XD_LEAKY_SLOPE)};
    node(c, "LeakyRelu", y, IN(x), at, 1);
    break;
  }
  case XD_ACT_ELU: {
    Onnx__AttributeProto *at[] = {attr_f(c, "alpha", XD_ELU_ALPHA)};
    node(c, "Elu", y, IN(x), at, 1);
    break;
  }
  case XD_ACT_SIGMOID: node(c, "Sigmoid", y, IN(x), NULL, 0); break;
  case XD_ACT_TANH: node(c, "Tanh", y, IN(x), NULL, 0); break;
  case XD_ACT_SOFTMAX: { /* only on flat [N, K] tensors (the parser refuses others) */
    Onnx__AttributeProto *at[] = {attr_i(c, "axis", 1)};
    node(c, "Softmax", y, IN(x), at, 1);
    break;
  }
  default: break;
  }
  return y;
}

static void add_meta(ctx *c, const xd_model *m, const xd_onnx_source *src, int opset) {
  arena *a = &c->a;
  const xd_ckpt_meta *md = src ? src->meta : NULL;
  const xd_train_state *st = src ? src->st : NULL;
  meta(c, "xray_dp.version", XD_VERSION);
  meta(c, "opset", astr(a, "%d", opset));
  meta(c, "input", astr(a, "image: float32 [N, %d, %d, %d] (NCHW), values in [0, 1]", m->in_c, m->in_h, m->in_w));
  meta(c, "output", m->nout == 1 ? "probability: float32 [N, 1], sigmoid of the logit = P(class 1); logits: the "
                                   "tensor before the sigmoid"
                                 : astr(a, "probability: float32 [N, %d], softmax over the classes; logits: the "
                                           "tensor before the softmax", m->nout));
  meta(c, "preprocessing",
       astr(a, "decode the image to 8-bit grayscale (JPEG: the decoder's own luma; PNG/BMP/GIF/PNM: BT.601 luma "
               "(299 R + 587 G + 114 B + 500) / 1000, rounded down; alpha ignored, a gray+alpha image keeps its "
               "gray channel); resize to %dx%d (height x width) by area "
               "averaging when shrinking, bilinear on pixel centres when enlarging, rounded back to uint8; "
               "x = uint8 / 255 as float32, shape [N, 1, %d, %d]. Any normalisation (standardize) is inside "
               "the graph.", m->in_h, m->in_w, m->in_h, m->in_w));
  meta(c, "preprocessing.grayscale", "8-bit; JPEG: the decoder's luma; others: BT.601 luma (299 R + 587 G + 114 B + "
                                     "500) / 1000, rounded down; alpha ignored");
  meta(c, "preprocessing.resize", astr(a, "%dx%d area-average (shrink) / bilinear on pixel centres (enlarge), uint8",
                                       m->in_h, m->in_w));
  meta(c, "preprocessing.scale", "x = uint8 / 255");
  meta(c, "input_height", astr(a, "%d", m->in_h));
  meta(c, "input_width", astr(a, "%d", m->in_w));
  meta(c, "input_channels", astr(a, "%d", m->in_c));
  /* class names as a JSON array */
  int k = m->nout == 1 ? 2 : m->nout;
  size_t cap = 8;
  char *names[XD_MAX_CLASSES + 2];
  for (int i = 0; i < k && i < XD_MAX_CLASSES; i++) {
    names[i] = md && md->nclasses == k ? json_str(a, md->class_names[i]) : astr(a, "\"%d\"", i);
    if (!names[i]) return;
    cap += strlen(names[i]) + 2;
  }
  char *arr = az(a, cap);
  if (!arr) return;
  strcpy(arr, "[");
  for (int i = 0; i < k && i < XD_MAX_CLASSES; i++) {
    if (i) strcat(arr, ", ");
    strcat(arr, names[i]);
  }
  strcat(arr, "]");
  meta(c, "class_names", arr);
  if (m->nout == 1) {
    meta(c, "threshold", astr(a, "%.9g", st ? st->threshold : 0.5));
    meta(c, "decision", "class 1 when probability >= threshold (the operating point chosen on the validation "
                        "split), else class 0");
  }
  if (src && src->ckpt_name) meta(c, "checkpoint", src->ckpt_name);
  if (st) {
    meta(c, "checkpoint.step", astr(a, "%lld", (long long)st->step));
    meta(c, "checkpoint.epoch", astr(a, "%lld", (long long)st->epoch));
    meta(c, "checkpoint.best_epoch", astr(a, "%lld", (long long)st->best_epoch));
    if (st->best_epoch > 0) meta(c, "checkpoint.best_metric", astr(a, "%.9g", st->best_metric));
  }
  if (md) {
    if (md->monitor[0]) meta(c, "checkpoint.monitor", astr(a, "%s", md->monitor));
    if (md->command[0]) meta(c, "checkpoint.command", astr(a, "%s", md->command));
    if (md->data[0]) meta(c, "checkpoint.data", astr(a, "%s", md->data));
    if (md->train_prior > 0) meta(c, "checkpoint.train_prior", astr(a, "%.9g", md->train_prior));
  }
  if (m->text) meta(c, "model", m->text);
}

int xd_onnx_export(const xd_model *m, const xd_onnx_source *src, int opset, uint8_t **buf, size_t *nbytes, xd_err *e) {
  *buf = NULL, *nbytes = 0;
  if (opset < XD_ONNX_OPSET_MIN || opset > XD_ONNX_OPSET_MAX)
    return xd_fail(e, "opset %d is not supported (%d..%d)", opset, XD_ONNX_OPSET_MIN, XD_ONNX_OPSET_MAX);
  if (m->nlayers < 1) return xd_fail(e, "%s: the model has no layers", m->source);
  ctx c;
  memset(&c, 0, sizeof c);
  arena *a = &c.a;
  const char **tn = az(a, (size_t)(m->nlayers + 1) * sizeof *tn); /* tensor names */
  int *flat = az(a, (size_t)(m->nlayers + 1) * sizeof *flat);
  if (!tn || !flat) goto oom;
  tn[0] = "image";
  flat[0] = 0;
  for (int i = 0; i < m->nlayers; i++) {
    const xd_layer *L = &m->layers[i];
    const int last = i == m->nlayers - 1;
    const char *x = tn[L->in0], *y = NULL;
    const float *W = L->w_n ? m->params + L->w_off : NULL, *B = L->b_n ? m->params + L->b_off : NULL;
    char *wn = astr(a, "layers.%d.weight", i), *bn = astr(a, "layers.%d.bias", i);
    char *out = astr(a, "layers.%d.%s", i,
                     (const char *[]){"conv", "maxpool", "avgpool", "globalavgpool", "batchnorm", "dropout", "flatten",
                                      "dense", "act", "add", "standardize"}[L->kind]);
    if (!wn || !bn || !out) goto oom;
    switch (L->kind) {
    case XD_L_CONV: {
      int64_t wd[4] = {L->out_c, L->in_c, L->p.conv.kh, L->p.conv.kw};
      init_f(&c, wn, 4, wd, W, L->w_n);
      int ph = (L->out_h - 1) * L->p.conv.stride + L->p.conv.kh - L->in_h - L->p.conv.pad_top;
      int pw = (L->out_w - 1) * L->p.conv.stride + L->p.conv.kw - L->in_w - L->p.conv.pad_left;
      /* bottom/right: what the last output row/column reads past the input, never negative (a `valid` or
       * pad=N conv whose stride skips the last rows reads less) */
      if (!L->p.conv.same) ph = pw = -1;
      int64_t pads[4] = {L->p.conv.pad_top, L->p.conv.pad_left, ph < 0 ? L->p.conv.pad_top : ph,
                         pw < 0 ? L->p.conv.pad_left : pw};
      int64_t ks[2] = {L->p.conv.kh, L->p.conv.kw}, st[2] = {L->p.conv.stride, L->p.conv.stride};
      Onnx__AttributeProto *at[] = {attr_ints(&c, "kernel_shape", 2, ks), attr_ints(&c, "strides", 2, st),
                                    attr_ints(&c, "pads", 4, pads)};
      if (B) {
        int64_t bd[1] = {L->out_c};
        init_f(&c, bn, 1, bd, B, L->b_n);
        node(&c, "Conv", out, IN(x, wn, bn), at, 3);
      } else {
        node(&c, "Conv", out, IN(x, wn), at, 3);
      }
      y = out;
      break;
    }
    case XD_L_MAXPOOL:
    case XD_L_AVGPOOL: {
      int64_t ks[2] = {L->p.pool.kh, L->p.pool.kw}, st[2] = {L->p.pool.sh, L->p.pool.sw};
      Onnx__AttributeProto *at[] = {attr_ints(&c, "kernel_shape", 2, ks), attr_ints(&c, "strides", 2, st)};
      node(&c, L->kind == XD_L_MAXPOOL ? "MaxPool" : "AveragePool", out, IN(x), at, 2);
      y = out;
      break;
    }
    case XD_L_GAP: {
      char *g = astr(a, "layers.%d.globalavgpool4d", i);
      node(&c, "GlobalAveragePool", g, IN(x), NULL, 0);
      Onnx__AttributeProto *at[] = {attr_i(&c, "axis", 1)};
      node(&c, "Flatten", out, IN(g), at, 1);
      y = out;
      break;
    }
    case XD_L_FLATTEN: {
      Onnx__AttributeProto *at[] = {attr_i(&c, "axis", 1)};
      node(&c, "Flatten", out, IN(x), at, 1);
      y = out;
      break;
    }
    case XD_L_BATCHNORM: {
      int64_t d[1] = {L->in_c};
      char *rm = astr(a, "layers.%d.running_mean", i), *rv = astr(a, "layers.%d.running_var", i);
      if (!rm || !rv) goto oom;
      init_f(&c, wn, 1, d, W, L->w_n);
      init_f(&c, bn, 1, d, B, L->b_n);
      init_f(&c, rm, 1, d, m->buffers + L->rm_off, (size_t)L->in_c);
      init_f(&c, rv, 1, d, m->buffers + L->rv_off, (size_t)L->in_c);
      Onnx__AttributeProto *at[] = {attr_f(&c, "epsilon", L->p.bn.eps)};
      node(&c, "BatchNormalization", out, IN(x, wn, bn, rm, rv), at, 1);
      y = out;
      break;
    }
    case XD_L_DROPOUT: y = x; break; /* inference: the identity */
    case XD_L_DENSE: {
      int64_t wd[2] = {L->out_c, L->in_c * L->in_h * L->in_w}, bd[1] = {L->out_c};
      init_f(&c, wn, 2, wd, W, L->w_n);
      init_f(&c, bn, 1, bd, B, L->b_n);
      Onnx__AttributeProto *at[] = {attr_i(&c, "transB", 1)};
      node(&c, "Gemm", last ? "logits" : out, IN(x, wn, bn), at, 1);
      y = last ? "logits" : out;
      break;
    }
    case XD_L_ACT: y = x; break; /* the activation below */
    case XD_L_ADD:
      node(&c, "Add", out, IN(x, tn[L->in1]), NULL, 0);
      y = out;
      break;
    case XD_L_STANDARDIZE: {
      /* y = (x - mean) / max(sqrt(mean((x - mean)^2)), eps) over each sample's values (population std),
       * as src/layers/elementwise.c computes it (there in double) */
      int64_t ax4[3] = {1, 2, 3}, ax2[1] = {1};
      int fl = flat[L->in0];
      char *mu = astr(a, "layers.%d.mean", i), *d = astr(a, "layers.%d.centred", i), *sq = astr(a, "layers.%d.sq", i),
           *var = astr(a, "layers.%d.var", i), *sd = astr(a, "layers.%d.std", i), *den = astr(a, "layers.%d.den", i),
           *en = astr(a, "layers.%d.eps", i);
      if (!mu || !d || !sq || !var || !sd || !den || !en) goto oom;
      float eps = L->p.stdz.eps;
      init_f(&c, en, 0, NULL, &eps, 1);
      Onnx__AttributeProto *at1[] = {fl ? attr_ints(&c, "axes", 1, ax2) : attr_ints(&c, "axes", 3, ax4),
                                     attr_i(&c, "keepdims", 1)};
      node(&c, "ReduceMean", mu, IN(x), at1, 2);
      node(&c, "Sub", d, IN(x, mu), NULL, 0);
      node(&c, "Mul", sq, IN(d, d), NULL, 0);
      Onnx__AttributeProto *at2[] = {fl ? attr_ints(&c, "axes", 1, ax2) : attr_ints(&c, "axes", 3, ax4),
                                     attr_i(&c, "keepdims", 1)};
      node(&c, "ReduceMean", var, IN(sq), at2, 2);
      node(&c, "Sqrt", sd, IN(var), NULL, 0);
      node(&c, "Max", den, IN(sd, en), NULL, 0);
      node(&c, "Div", out, IN(d, den), NULL, 0);
      y = out;
      break;
    }
    default: return xd_fail(e, "%s:%d: layer kind %d cannot be exported", m->source, L->line, (int)L->kind), arena_free(a), -1;
    }
    if (!y) goto oom;
    if (last) {
      /* the last layer's activation (fused into the loss when training) gives the probabilities */
      if (L->act != XD_ACT_SIGMOID && L->act != XD_ACT_SOFTMAX) {
        arena_free(a);
        return xd_fail(e, "%s:%d: the last layer must end with sigmoid or softmax", m->source, L->line);
      }
      y = act(&c, L->act, y, "probability", i);
    } else {
      y = act(&c, L->act, y, NULL, i);
    }
    tn[i + 1] = y;
    flat[i + 1] = L->flat;
  }
  if (c.a.oom) goto oom;

  Onnx__GraphProto *g = az(a, sizeof *g);
  Onnx__ModelProto *mp = az(a, sizeof *mp);
  Onnx__OperatorSetIdProto *os = az(a, sizeof *os);
  Onnx__OperatorSetIdProto **osv = az(a, sizeof *osv);
  Onnx__ValueInfoProto **gin = az(a, sizeof *gin), **gout = az(a, 2 * sizeof *gout);
  if (!g || !mp || !os || !osv || !gin || !gout) goto oom;
  int64_t ind[4] = {-1, m->in_c, m->in_h, m->in_w}, outd[2] = {-1, m->nout};
  gin[0] = value_info(&c, "image", 4, ind);
  gout[0] = value_info(&c, "probability", 2, outd);
  onnx__graph_proto__init(g);
  g->name = "xray_dp";
  g->doc_string = astr(a, "xray-dp model exported from %s (%s)", src && src->ckpt_name ? src->ckpt_name : "a checkpoint",
                       m->source);
  g->n_node = c.nodes.n, g->node = (Onnx__NodeProto **)c.nodes.v;
  g->n_initializer = c.inits.n, g->initializer = (Onnx__TensorProto **)c.inits.v;
  g->n_input = 1, g->input = gin;
  g->n_output = 1, g->output = gout;
  onnx__operator_set_id_proto__init(os);
  os->domain = "";
  os->has_version = 1, os->version = opset;
  osv[0] = os;
  add_meta(&c, m, src, opset);
  onnx__model_proto__init(mp);
  mp->has_ir_version = 1, mp->ir_version = XD_ONNX_IR_VERSION;
  mp->n_opset_import = 1, mp->opset_import = osv;
  mp->producer_name = "xray-dp";
  mp->producer_version = XD_VERSION;
  mp->domain = "xray-dp";
  mp->has_model_version = 1, mp->model_version = src && src->st ? src->st->step : 0;
  mp->doc_string = "Chest X-ray classifier trained by xray-dp. Input \"image\" [N, 1, H, W] float32 = grayscale "
                   "pixels / 255 resized to the model's size (metadata \"preprocessing\"); output \"probability\".";
  mp->graph = g;
  mp->n_metadata_props = c.meta.n, mp->metadata_props = (Onnx__StringStringEntryProto **)c.meta.v;
  if (c.a.oom || !gin[0] || !gout[0] || !g->doc_string) goto oom;

  size_t n = onnx__model_proto__get_packed_size(mp);
  uint8_t *out = xd_alloc(n ? n : 1, "the ONNX model", e);
  if (!out) {
    arena_free(a);
    return -1;
  }
  size_t w = onnx__model_proto__pack(mp, out);
  arena_free(a);
  if (w != n) {
    xd_free(out);
    return xd_fail(e, "%s: protobuf-c packed %zu bytes of %zu", m->source, w, n);
  }
  *buf = out, *nbytes = n;
  return 0;
oom:
  arena_free(a);
  return xd_fail(e, "%s: out of memory building the ONNX graph", m->source);
}
