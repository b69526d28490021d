/* A model: layers parsed from a plain-text description (SPEC section 3), one parameter arena, one
 * gradient arena of the same layout, and a buffer arena (batchnorm running statistics).
 *
 * Activations and scratch live in an xd_workspace, sized once per (model, batch). */
#ifndef XD_MODEL_H
#define XD_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "layers.h"

typedef enum { XD_L_CONV, XD_L_MAXPOOL, XD_L_AVGPOOL, XD_L_GAP, XD_L_BATCHNORM, XD_L_DROPOUT, XD_L_FLATTEN,
               XD_L_DENSE, XD_L_ACT, XD_L_ADD, XD_L_STANDARDIZE, XD_L_NKINDS } xd_layer_kind;

#define XD_NAME_MAX 32

/* Limits of a model description (SPEC section 3; docs/models.md). Every one is checked while parsing and
 * refused with a "SOURCE:LINE: ..." message, so that no later size computation can overflow an int:
 *  - the text: at most XD_MODEL_TEXT_MAX bytes, lines of at most XD_MODEL_LINE_MAX characters (line
 *    ending excluded), at most XD_MODEL_MAX_WORDS words a line. Outside comments only printable ASCII
 *    and tabs; comments may hold any bytes but control characters (UTF-8 text). No NUL byte (a file
 *    holding one is refused by xd_model_from_arg, naming the line). Line endings: LF or CRLF (a file
 *    edited on Windows is accepted as it is, and so is a UTF-8 byte order mark at its start, which is
 *    dropped); a carriage return anywhere else is refused.
 *  - every integer in the text (filters, units, kernel and window sides, strides, padding, input
 *    sizes) is plain decimal digits, 1..XD_MODEL_INT_MAX (padding 0..); no sign, no trailing characters.
 *  - every tensor (the input included) at most XD_MODEL_TENSOR_MAX values per image;
 *  - at most XD_MODEL_MAX_LAYERS layers and XD_MODEL_PARAMS_MAX parameters (so the arenas stay
 *    addressable by int counts in MPI calls); their memory is also checked against xd_mem_limit().
 *  - every word is understood: the layer word, its positional arguments, at most one activation right
 *    after them, then key=value options the layer takes, each at most once and never empty; numbers are
 *    finite decimals in range (dropout 0 <= RATE < 1, eps > 0, 0 < momentum <= 1). A layer name is not
 *    a layer or activation word (`conv`, `relu`, ...) nor `input`, and a layer never reads itself. */
#define XD_MODEL_TEXT_MAX ((size_t)1 << 20)
#define XD_MODEL_LINE_MAX 1024
#define XD_MODEL_MAX_WORDS 16
#define XD_MODEL_INT_MAX 1000000
#define XD_MODEL_TENSOR_MAX ((int64_t)1 << 30)
#define XD_MODEL_MAX_LAYERS 4096
#define XD_MODEL_PARAMS_MAX ((size_t)500000000) /* 2.0e9 bytes an arena: counts fit an int */

/* Tensors are numbered: 0 is the model input, i + 1 the output of layer i. A layer reads tensor in0
 * (by default the previous line's output; `in=NAME` picks another), `add` also reads in1. */
typedef struct xd_layer {
  xd_layer_kind kind;
  int line;        /* line in the description, for messages */
  char name[XD_NAME_MAX]; /* `name=...`, or "" */
  int in0, in1;    /* input tensors; in1 = -1 unless the layer has two inputs */
  int consumers;   /* layers reading this layer's output (0 only for the last layer) */
  int needs_grad;  /* the gradient w.r.t. this layer's output reaches a parameter (else backward skips it) */
  xd_act act;      /* conv, dense, batchnorm, add, act: the activation applied to the output */
  int in_c, in_h, in_w, out_c, out_h, out_w; /* per-sample shapes; flat tensors have h = w = 1 */
  int flat;        /* output is a flat [features] tensor (after flatten or dense) */
  union {
    struct { int filters, kh, kw, stride, same, pad_top, pad_left, nobias; } conv;
    struct { int kh, kw, sh, sw; } pool;
    struct { int units; } dense;
    struct { float rate; } dropout;
    struct { float eps, momentum; } bn;
    struct { float eps; } stdz;
  } p;
  size_t w_off, w_n, b_off, b_n; /* in floats, into params/grads; n = 0 when absent */
  size_t rm_off, rv_off;         /* batchnorm running mean/var, into buffers */
} xd_layer;

typedef enum { XD_LOSS_BCE, XD_LOSS_CE } xd_loss_kind;

typedef struct xd_model {
  int nlayers;
  xd_layer *layers;
  int in_c, in_h, in_w;
  int nout;              /* outputs of the last layer: 1 (sigmoid/BCE) or K (softmax/CE) */
  xd_loss_kind loss;
  size_t nparams, nbuffers;
  float *params, *grads, *buffers;
  char *text;            /* the description as given (stored in checkpoints) */
  char source[256];      /* where the text came from, for messages ("model.txt", "preset resnet-s") */
} xd_model;

/* Text of a preset for a given input size, or NULL if `name` is not a preset. Caller frees. */
char *xd_model_preset_text(const char *name, int channels, int height, int width);
const char *xd_model_preset_names(void); /* "keras-seed, tripathi5, petre-bn, resnet-s, ..., default" */
/* The training recipe that travels with a preset: train options (as on the command line, e.g.
 * "--optimizer adamw --lr 2e-3 ...") applied before the user's own, or NULL when the preset has none. */
const char *xd_model_preset_recipe(const char *name);
/* Index of the layer whose output Grad-CAM explains: the producer of the last 4-D tensor that feeds a
 * globalavgpool or flatten (the last conv-like feature map), or -1. */
int xd_model_cam_layer(const xd_model *m);

/* Parses and builds. `source` names the text in errors ("model.txt" or "preset keras-seed"):
 * "model.txt:7: dense after a 4-D tensor needs a flatten first". Every word of the text is understood
 * or refused with its line number (limits above). Before allocating, the parameter, gradient and buffer
 * arenas are checked against xd_mem_limit(): "model.txt:7: the model with its gradients (N parameters,
 * M in this layer) needs 12.0 GiB, above the memory limit of 8.0 GiB (--mem-limit)", naming the
 * line of the largest layer. Parameters are zero; call xd_model_init. */
int xd_model_build(xd_model *m, const char *text, const char *source, xd_err *e);
/* Resolves --model: a preset name or a file path; builds for the given input shape (a file's `input`
 * line must match it). A file must be a regular file (a FIFO, directory or device is refused before
 * it is opened) of at most XD_MODEL_TEXT_MAX bytes. */
int xd_model_from_arg(xd_model *m, const char *arg, int channels, int height, int width, xd_err *e);
void xd_model_free(xd_model *m);

typedef enum { XD_INIT_TORCH = 0, XD_INIT_GLOROT, XD_INIT_HE } xd_init_kind;
/* Seeded initialisation; TORCH = PyTorch's defaults (kaiming_uniform(a=sqrt 5): U(+-1/sqrt(fan_in)) for
 * weights and biases), GLOROT = Keras' defaults (glorot_uniform weights, zero biases), HE = he_normal
 * weights, zero biases. Batchnorm: gamma 1, beta 0, running mean 0, var 1. */
void xd_model_init(xd_model *m, xd_init_kind kind, uint64_t seed);
int xd_init_parse(const char *s, xd_init_kind *k);

/* Bytes of the model's own arenas: parameters, gradients, batchnorm buffers. */
uint64_t xd_model_bytes(const xd_model *m);
/* Everything a training process holds for this model, for a check before anything big is allocated:
 * the model's arenas, the optimizer's two moment arenas (every optimizer allocates m and v), with `ema`
 * the weight EMA (parameters and buffers), train's gradient-reduction buffer, and the workspace for
 * `batch` (this rank's share of the global batch). UINT64_MAX when it overflows. */
uint64_t xd_model_train_bytes(const xd_model *m, int batch, int ema);
/* 0, or -1 with "SOURCE: training with batch 32 needs 41.0 GiB, above the memory limit of 8.0 GiB
 * (--mem-limit)". */
int xd_model_check_train(const xd_model *m, int batch, int ema, xd_err *e);

/* Forward multiply-accumulates per image (for GFLOP/s and the summary). */
double xd_model_flops_per_image(const xd_model *m, int training);
/* Keras-like summary: one line per layer with output shape and parameter count. */
void xd_model_summary(const xd_model *m, FILE *f);

/* Reduction hook for --sync-bn: sums `n` doubles across ranks in place (NULL: local only). */
typedef struct xd_reducer {
  void (*sum_doubles)(void *ctx, double *x, int n);
  void *ctx;
  int world; /* ranks whose batches the global batch is made of */
} xd_reducer;

typedef struct xd_workspace {
  int batch;                 /* samples per forward pass on this rank */
  float **act;               /* act[0] input [B,in], act[l+1] output of layer l (flatten aliases) */
  int32_t **argmax;          /* maxpool layers */
  float **bn_mean, **bn_invstd; /* batchnorm: per channel; standardize: per sample (mean unused) */
  float **gpool;             /* backward: gradient buffers (the largest activation each), reused by liveness */
  int ngpool;
  float **grad_of;           /* backward: the gradient buffer of each tensor, nlayers + 1 */
  int *gfree;                /* stack of free gpool indices */
  double *bn_stats;          /* 2 * max channels */
  float *scratch;
  size_t scratch_n;
  float *dlast;              /* gradient w.r.t. the logits [B, nout] */
  const float *gradcam_dy;   /* set by xd_backward when asked to stop at a layer */
} xd_workspace;

/* Bytes a workspace for `batch` samples takes (activations, pooling indices, gradient buffers, scratch
 * for the current OpenMP thread count), computed without allocating anything big; UINT64_MAX when it
 * overflows or batch <= 0. */
uint64_t xd_workspace_bytes(const xd_model *m, int batch);
/* Checks the whole workspace (with the model's arenas) against xd_mem_limit() first: "SOURCE: the
 * workspace for batch 32 (with the model's parameters) needs 41.0 GiB, above the memory limit of ..." */
int xd_workspace_alloc(xd_workspace *w, const xd_model *m, int batch, xd_err *e);
void xd_workspace_free(xd_workspace *w, const xd_model *m);

/* Per-step context of a training forward/backward. */
typedef struct xd_step_ctx {
  int training;
  uint64_t seed, step;       /* dropout keys derive from (seed, step, layer) */
  int64_t first_sample;      /* global index of this rank's first sample in the global batch */
  int64_t global_batch;
  const xd_reducer *sync_bn; /* NULL: batch statistics of the local batch */
} xd_step_ctx;

/* x [B, C, H, W] copied into ws->act[0] by the caller (or pass ws->act[0]). Returns the logits
 * [B, nout] (pointer into the workspace). B <= ws->batch. */
const float *xd_forward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c);
/* Backward from ws->dlast (filled by the loss). Overwrites m->grads entirely.
 * stop_at >= 0: stops once the gradient w.r.t. layer stop_at's output is known, leaving it in
 * ws->gradcam_dy, and does not touch m->grads (used by Grad-CAM). */
void xd_backward(xd_model *m, xd_workspace *ws, int B, const xd_step_ctx *c, int stop_at);
/* Probabilities from logits: sigmoid (nout 1) or softmax rows. out may equal logits. */
void xd_probs(const xd_model *m, int B, const float *logits, float *out);

#endif
