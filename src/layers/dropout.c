/* Inverted dropout with a counter-based mask: element i is kept iff xd_rand_uniform(key, offset + i) >=
 * rate, so the mask depends on (key, offset) only and the backward pass regenerates it instead of storing it. */
#include "layers.h"
#include "rng.h"

static void dropout_apply(int64_t n, float rate, uint64_t key, uint64_t offset, const float *in, float *out) {
  if (rate <= 0.0f) {
    if (out != in)
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; i++) out[i] = in[i];
    return;
  }
  const float scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; i++)
    out[i] = xd_rand_uniform(key, offset + (uint64_t)i) >= rate ? in[i] * scale : 0.0f;
}

void dropout_forward(int64_t n, float rate, uint64_t key, uint64_t offset, const float *x, float *y) {
  dropout_apply(n, rate, key, offset, x, y);
}

void dropout_backward(int64_t n, float rate, uint64_t key, uint64_t offset, const float *dy, float *dx) {
  dropout_apply(n, rate, key, offset, dy, dx);
}
