/* libFuzzer target: the model-description parser (xd_model_build on arbitrary text). A description that
 * builds and is small is also initialised and run forward and backward on a batch of 2 (shape
 * bookkeeping errors show up as out-of-bounds accesses under ASan). Refusals must be one line. */
#include "fuzz_util.h" /* first: it sets _GNU_SOURCE */
#include <omp.h>
#include "model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  xd_mem_limit_set((uint64_t)256 << 20);
  omp_set_num_threads(1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  char *text = malloc(n + 1);
  if (!text) return 0;
  memcpy(text, d, n);
  text[n] = '\0';
  xd_model m;
  memset(&m, 0, sizeof m);
  xd_err e = {{0}};
  if (xd_model_build(&m, text, "fuzz.txt", &e) != 0) {
    fz_check_msg("model", e.msg, 0);
    free(text);
    return 0;
  }
  free(text);
  xd_model_summary(&m, fz_devnull());
  (void)xd_model_cam_layer(&m);
  const int B = 2;
  if (xd_model_flops_per_image(&m, 1) < 2e6 && xd_workspace_bytes(&m, B) < ((uint64_t)32 << 20)) {
    xd_workspace ws;
    memset(&ws, 0, sizeof ws);
    if (xd_workspace_alloc(&ws, &m, B, &e) == 0) {
      xd_model_init(&m, XD_INIT_TORCH, 1);
      size_t in = (size_t)m.in_c * m.in_h * m.in_w;
      for (size_t i = 0; i < (size_t)B * in; i++) ws.act[0][i] = (float)(i % 7) / 7.0f;
      xd_step_ctx c = {1, 1, 0, 0, B, NULL};
      const float *logits = xd_forward(&m, &ws, B, &c);
      for (int i = 0; i < B * m.nout; i++) ws.dlast[i] = logits[i] * 0.0f + 0.5f;
      xd_backward(&m, &ws, B, &c, -1);
      xd_workspace_free(&ws, &m);
    } else {
      fz_check_msg("model workspace", e.msg, 0);
    }
  }
  xd_model_free(&m);
  return 0;
}
