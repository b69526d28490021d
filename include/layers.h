/* Layer kernels: forward and backward passes on float32 NCHW tensors.
 *
 * Every kernel is OpenMP-parallel inside and deterministic: a reduction is never split by thread, so
 * results are bitwise identical for any thread count. Backward kernels OVERWRITE dx, dw, db (the caller
 * zeroes nothing). `*_ref` versions are plain loops kept as the specification the tests compare with. */
#ifndef XD_LAYERS_H
#define XD_LAYERS_H
#include <stddef.h>
#include <stdint.h>

/* ---- activations (applied in place; backward uses the activation's OUTPUT y) ---- */
typedef enum { XD_ACT_LINEAR = 0, XD_ACT_RELU, XD_ACT_LEAKYRELU, XD_ACT_ELU, XD_ACT_SIGMOID, XD_ACT_TANH,
               XD_ACT_SOFTMAX } xd_act;
#define XD_LEAKY_SLOPE 0.01f /* PyTorch's default negative_slope */
#define XD_ELU_ALPHA 1.0f
/* y [rows, cols] in place; softmax normalises each row (max-subtracted). */
void act_forward(xd_act a, int64_t rows, int64_t cols, float *y);
/* dy [rows, cols] <- dy * f'(x), expressed through y = f(x). */
void act_backward(xd_act a, int64_t rows, int64_t cols, const float *y, float *dy);
const char *act_name(xd_act a);

/* ---- matrix multiply (row-major) ----
 * C[M,N] = op(A)[M,K] * op(B)[K,N] + beta * C, op = transpose when trans* != 0.
 * Single-threaded; callers parallelise over independent outputs. Each C element is summed over K in a
 * fixed order. */
void xd_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);

/* ---- conv2d ----  x [B,C,H,W], w [F,C,KH,KW], b [F] -> y [B,F,OH,OW]
 * Output pixel (oy,ox) reads input rows oy*stride - pad_top + ky; out-of-range reads are zero. */
typedef struct xd_conv_dims {
  int B, C, H, W, F, KH, KW, stride, pad_top, pad_left, OH, OW;
} xd_conv_dims;
/* Scratch the optimised kernels need (floats), for up to `nthreads` threads. */
size_t conv2d_scratch_floats(const xd_conv_dims *d, int nthreads);
void conv2d_forward(const xd_conv_dims *d, const float *x, const float *w, const float *b, float *y, float *scratch);
/* dx may be NULL (first layer: no input gradient needed). */
void conv2d_backward(const xd_conv_dims *d, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db, float *scratch);
void conv2d_forward_ref(const xd_conv_dims *d, const float *x, const float *w, const float *b, float *y);
void conv2d_backward_ref(const xd_conv_dims *d, const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db);

/* ---- pooling (no padding; OH = (H-KH)/SH + 1) ----  x [B,C,H,W] -> y [B,C,OH,OW] */
typedef struct xd_pool_dims {
  int B, C, H, W, KH, KW, SH, SW, OH, OW;
} xd_pool_dims;
/* argmax [B,C,OH,OW]: index into the H*W plane of the first maximum (PyTorch's tie rule). */
void maxpool_forward(const xd_pool_dims *d, const float *x, float *y, int32_t *argmax);
void maxpool_backward(const xd_pool_dims *d, const float *dy, const int32_t *argmax, float *dx);
void avgpool_forward(const xd_pool_dims *d, const float *x, float *y);
void avgpool_backward(const xd_pool_dims *d, const float *dy, float *dx);
/* x [B,C,HW] -> y [B,C] */
void globalavgpool_forward(int B, int C, int HW, const float *x, float *y);
void globalavgpool_backward(int B, int C, int HW, const float *dy, float *dx);

/* ---- dense ----  x [B,IN], w [OUT,IN] (PyTorch layout), b [OUT] -> y [B,OUT] */
void dense_forward(int B, int IN, int OUT, const float *x, const float *w, const float *b, float *y);
void dense_backward(int B, int IN, int OUT, const float *x, const float *w, const float *dy, float *dx, float *dw,
                    float *db);
void dense_forward_ref(int B, int IN, int OUT, const float *x, const float *w, const float *b, float *y);
void dense_backward_ref(int B, int IN, int OUT, const float *x, const float *w, const float *dy, float *dx, float *dw,
                        float *db);

/* ---- batch normalisation ----  x [B,C,HW] (HW = 1 after a dense layer), per-channel gamma/beta.
 * Split in phases so that --sync-bn can all-reduce the per-channel sums between them.
 * Training normalises with the biased batch variance and updates running stats like PyTorch:
 * r_mean = (1-m) r_mean + m mean, r_var = (1-m) r_var + m var * N/(N-1), m = momentum (0.1). */
/* stats[2C] = {sum_c x, sum_c x^2} over the local batch, accumulated in double. */
void batchnorm_stats(int B, int C, int HW, const float *x, double *stats);
/* count = number of values per channel the stats cover (B*HW, or the global count with sync-bn).
 * Writes y, save_mean[C], save_invstd[C]; updates running_mean/var in place. */
void batchnorm_forward_train(int B, int C, int HW, const float *x, const double *stats, double count,
                             const float *gamma, const float *beta, float eps, float momentum, float *y,
                             float *save_mean, float *save_invstd, float *running_mean, float *running_var);
void batchnorm_forward_eval(int B, int C, int HW, const float *x, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, float eps, float *y);
/* Backward phase 1: stats[2C] = {sum dy, sum dy*xhat} over the local batch (double); also writes the local
 * dgamma = sum dy*xhat and dbeta = sum dy. */
void batchnorm_backward_stats(int B, int C, int HW, const float *x, const float *dy, const float *save_mean,
                              const float *save_invstd, double *stats, float *dgamma, float *dbeta);
/* Phase 2: dx = gamma*invstd*(dy - stats0/count - xhat*stats1/count). */
void batchnorm_backward(int B, int C, int HW, const float *x, const float *dy, const float *save_mean,
                        const float *save_invstd, const float *gamma, const double *stats, double count, float *dx);

/* ---- dropout (inverted) ----  element i of this tensor is kept iff xd_rand_uniform(key, offset+i) >= rate;
 * kept values are scaled by 1/(1-rate). Backward regenerates the same mask from (key, offset). */
void dropout_forward(int64_t n, float rate, uint64_t key, uint64_t offset, const float *x, float *y);
void dropout_backward(int64_t n, float rate, uint64_t key, uint64_t offset, const float *dy, float *dx);

/* ---- element-wise ---- */
/* y[n] = a + b (y may alias a or b) */
void add_forward(int64_t n, const float *a, const float *b, float *y);
/* Per-image standardisation: x [B, n] -> y = (x - mean) / max(std, eps) per sample (population std).
 * invstd[B] keeps 1/std per sample, negated when std was clamped to eps (the backward needs to know). */
void standardize_forward(int B, int64_t n, float eps, const float *x, float *y, float *invstd);
/* dx from dy and the forward's OUTPUT y. */
void standardize_backward(int B, int64_t n, const float *y, const float *invstd, const float *dy, float *dx);

#endif
