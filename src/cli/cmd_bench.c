/* xray-dp bench: forward + backward + optimizer steps on random data, like torch_reference.py bench. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "args.h"
#include "cli.h"
#include "isa.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

static const char *HELP =
    "usage: xray-dp bench [--model PRESET|FILE] [--batch 32] [--size 128] [--steps 50] [--warmup 5]\n"
    "                     [--threads T] [--repeats R] [--json] [--mem-limit SIZE]\n"
    "\n"
    "Times training steps (forward, backward, Adam) of a model on random data in one process and prints\n"
    "images/s, ms per step (median of --steps), GFLOP/s (multiply-adds x 2, forward + backward) and peak\n"
    "memory. --repeats R measures R times and prints one line each (with --json, R must be 1: the\n"
    "output is exactly one JSON object). --threads sets the OpenMP threads (default OMP_NUM_THREADS,\n"
    "else all cores). Compare with PyTorch side by side: scripts/bench_vs_torch.sh.\n"
    "The memory of the whole benchmark (model, optimizer state, activations for --batch, the random\n"
    "images) is checked before anything big is allocated:\n"
    ARG_MEM_LIMIT_HELP;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv) {
  const char *cmd = "bench", *model = "keras-seed";
  int64_t batch = 32, size = 128, steps = 50, warmup = 5, threads = 0, repeats = 1;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(HELP, stdout);
      return 0;
    }
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    int64_t *dst = !strcmp(a, "--batch") ? &batch : !strcmp(a, "--size") ? &size : !strcmp(a, "--steps") ? &steps
                 : !strcmp(a, "--warmup") ? &warmup : !strcmp(a, "--threads") ? &threads
                 : !strcmp(a, "--repeats") ? &repeats : NULL;
    if (!strcmp(a, "--mem-limit")) {
      if (!(v = arg_value(cmd, argc, argv, &i)) || arg_mem_limit(cmd, v)) return 2;
      continue;
    }
    if (!dst && strcmp(a, "--model")) {
      fprintf(stderr, "xray-dp bench: unknown option '%s' (see xray-dp bench --help)\n", a);
      return 2;
    }
    if (!(v = arg_value(cmd, argc, argv, &i))) return 2;
    if (!dst) model = v;
    else if (arg_int(cmd, a, v, dst == &warmup ? 0 : 1, 1 << 20, dst)) return 2;
  }
  if (json && repeats != 1) {
    fprintf(stderr, "xray-dp bench: --json prints one object: use --repeats 1\n");
    return 2;
  }
  if (threads > 0) omp_set_num_threads((int)threads);
  xd_err e = {{0}};
  xd_model m;
  if (xd_model_from_arg(&m, model, 1, (int)size, (int)size, &e)) {
    fprintf(stderr, "xray-dp bench: %s\n", e.msg);
    return 1;
  }
  xd_model_init(&m, XD_INIT_TORCH, 0);
  /* everything this benchmark holds, before the workspace and optimizer are allocated */
  if (xd_model_check_train(&m, (int)batch, 0, &e)) {
    fprintf(stderr, "xray-dp bench: %s\n", e.msg);
    xd_model_free(&m);
    return 1;
  }
  xd_workspace ws;
  xd_optimizer opt;
  xd_opt_config oc = xd_opt_defaults(XD_OPT_ADAM, 1e-3f);
  if (xd_workspace_alloc(&ws, &m, (int)batch, &e) || xd_opt_alloc(&opt, &oc, m.nparams, &e)) {
    fprintf(stderr, "xray-dp bench: %s\n", e.msg);
    return 1;
  }
  size_t nin = (size_t)batch * size * size;
  uint8_t *y = malloc((size_t)batch);
  xd_rng r = xd_rng_make(xd_key(0, XD_STREAM_BENCH, 0, 0));
  for (size_t i = 0; i < nin; i++) ws.act[0][i] = xd_rng_uniform(&r);
  for (int i = 0; i < batch; i++) y[i] = (uint8_t)(xd_rng_next(&r) & 1);
  double *t = malloc((size_t)steps * sizeof *t);
  double flops = xd_model_flops_per_image(&m, 1);
  for (int rep = 0; rep < repeats; rep++) {
    for (int64_t s = -warmup; s < steps; s++) {
      double t0 = xd_now();
      xd_step_ctx c = {1, 0, (uint64_t)(s + warmup), 0, batch, NULL};
      const float *z = xd_forward(&m, &ws, (int)batch, &c);
      if (m.loss == XD_LOSS_BCE) xd_loss_bce((int)batch, z, y, NULL, 1.0 / batch, ws.dlast);
      else xd_loss_ce((int)batch, m.nout, z, y, NULL, 1.0 / batch, ws.dlast);
      xd_backward(&m, &ws, (int)batch, &c, -1);
      xd_opt_step(&opt, m.params, m.grads, 1e-3f);
      if (s >= 0) t[s] = xd_now() - t0;
    }
    qsort(t, (size_t)steps, sizeof *t, cmp_double);
    double med = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
    double ips = batch / med;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json)
      printf("{\"images_per_s\": %.2f, \"step_ms\": %.3f, \"gflops\": %.3f, \"threads\": %d, \"batch\": %lld, "
             "\"size\": %lld, \"model\": \"%s\", \"steps\": %lld, \"peak_rss_mb\": %.1f, \"isa\": \"%s\"}\n",
             ips, med * 1e3, ips * flops / 1e9, omp_get_max_threads(), (long long)batch, (long long)size, model,
             (long long)steps, ru.ru_maxrss / 1024.0, xd_isa_name(xd_kernels_active()->isa));
    else
      printf("images_per_s=%.1f step_ms=%.2f gflops=%.2f threads=%d batch=%lld size=%lld model=%s peak_rss_mb=%.1f "
             "isa=%s\n", ips, med * 1e3, ips * flops / 1e9, omp_get_max_threads(), (long long)batch, (long long)size,
             model, ru.ru_maxrss / 1024.0, xd_isa_name(xd_kernels_active()->isa));
    fflush(stdout);
  }
  free(t);
  free(y);
  xd_opt_free(&opt);
  xd_workspace_free(&ws, &m);
  xd_model_free(&m);
  return 0;
}
