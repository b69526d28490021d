/* Activations in place on [rows, cols]; the backward pass is written in terms of the output y so the
 * pre-activation never has to be kept. Element-wise, so any thread split gives identical results. */
#include "layers.h"

#include <math.h>

#define PAR_MIN 32768 /* below this a parallel region costs more than it saves */

const char *act_name(xd_act a) {
  switch (a) {
    case XD_ACT_LINEAR: return "linear";
    case XD_ACT_RELU: return "relu";
    case XD_ACT_LEAKYRELU: return "leakyrelu";
    case XD_ACT_ELU: return "elu";
    case XD_ACT_SIGMOID: return "sigmoid";
    case XD_ACT_TANH: return "tanh";
    case XD_ACT_SOFTMAX: return "softmax";
  }
  return "unknown";
}

static float sigmoidf(float v) {
  if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
  float e = expf(v);
  return e / (1.0f + e);
}

static void softmax_rows(int64_t rows, int64_t cols, float *y) {
#pragma omp parallel for schedule(static) if (rows * cols > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    float *p = y + r * cols;
    float m = p[0];
    for (int64_t j = 1; j < cols; j++) m = p[j] > m ? p[j] : m;
    double s = 0.0;
    for (int64_t j = 0; j < cols; j++) {
      p[j] = expf(p[j] - m);
      s += p[j];
    }
    float inv = (float)(1.0 / s);
    for (int64_t j = 0; j < cols; j++) p[j] *= inv;
  }
}

void act_forward(xd_act a, int64_t rows, int64_t cols, float *y) {
  const int64_t n = rows * cols;
  switch (a) {
    case XD_ACT_LINEAR: return;
    case XD_ACT_SOFTMAX: softmax_rows(rows, cols, y); return;
    case XD_ACT_RELU:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
      return;
    case XD_ACT_LEAKYRELU:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : y[i] * XD_LEAKY_SLOPE;
      return;
    case XD_ACT_ELU:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : XD_ELU_ALPHA * expm1f(y[i]);
      return;
    case XD_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) y[i] = sigmoidf(y[i]);
      return;
    case XD_ACT_TANH:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) y[i] = tanhf(y[i]);
      return;
  }
}

void act_backward(xd_act a, int64_t rows, int64_t cols, const float *y, float *dy) {
  const int64_t n = rows * cols;
  switch (a) {
    case XD_ACT_LINEAR: return;
    case XD_ACT_RELU:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
      return;
    case XD_ACT_LEAKYRELU:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : dy[i] * XD_LEAKY_SLOPE;
      return;
    case XD_ACT_ELU: /* x <= 0: f'(x) = alpha e^x = y + alpha */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : dy[i] * (y[i] + XD_ELU_ALPHA);
      return;
    case XD_ACT_SIGMOID:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) dy[i] = dy[i] * y[i] * (1.0f - y[i]);
      return;
    case XD_ACT_TANH:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t i = 0; i < n; i++) dy[i] = dy[i] * (1.0f - y[i] * y[i]);
      return;
    case XD_ACT_SOFTMAX:
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
      for (int64_t r = 0; r < rows; r++) {
        const float *p = y + r * cols;
        float *g = dy + r * cols;
        double dot = 0.0;
        for (int64_t j = 0; j < cols; j++) dot += (double)g[j] * p[j];
        float d = (float)dot;
        for (int64_t j = 0; j < cols; j++) g[j] = p[j] * (g[j] - d);
      }
      return;
  }
}
