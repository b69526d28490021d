/* FMA-throughput microbenchmark: the machine's single-precision peak, the denominator of the "% of peak"
 * figure in scripts/bench_vs_torch.sh. Compiled by that script with -march=native, so it uses the widest
 * vectors and FMA the CPU has. Each thread runs NACC independent accumulator chains (enough to cover
 * FMA latency x throughput) of vector FMAs; prints GFLOP/s summed over threads (best of 5 runs).
 * usage: peak_flops THREADS */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
#define NACC 12 /* independent chains per thread: c0..c11 below */
typedef float vf __attribute__((vector_size(VL * 4)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float chains(long iters, float seed) {
  const vf a = (vf){0} + 0.999999f, b = (vf){0} + seed * 1e-7f;
  vf c0 = (vf){0} + 0.f, c1 = (vf){0} + 1.f, c2 = (vf){0} + 2.f, c3 = (vf){0} + 3.f, c4 = (vf){0} + 4.f,
     c5 = (vf){0} + 5.f, c6 = (vf){0} + 6.f, c7 = (vf){0} + 7.f, c8 = (vf){0} + 8.f, c9 = (vf){0} + 9.f,
     c10 = (vf){0} + 10.f, c11 = (vf){0} + 11.f;
  for (long n = 0; n < iters; n++) { /* a*x + b is contracted to one FMA (-ffp-contract=fast) */
    c0 = c0 * a + b, c1 = c1 * a + b, c2 = c2 * a + b, c3 = c3 * a + b, c4 = c4 * a + b, c5 = c5 * a + b;
    c6 = c6 * a + b, c7 = c7 * a + b, c8 = c8 * a + b, c9 = c9 * a + b, c10 = c10 * a + b, c11 = c11 * a + b;
  }
  vf t = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
  float s = 0.0f;
  for (int j = 0; j < VL; j++) s += t[j];
  return s;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1) threads = 1;
  omp_set_num_threads(threads);
  volatile long iters_v = 20000000; /* opaque to the optimiser */
  const long iters = iters_v;
  double best = 0.0;
  float sink = 0.0f;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now();
#pragma omp parallel reduction(+ : sink)
    sink += chains(iters, (float)omp_get_thread_num());
    double t = now() - t0, gf = 2.0 * NACC * VL * iters * threads / t / 1e9;
    if (gf > best) best = gf;
  }
  printf("{\"peak_gflops\": %.1f, \"threads\": %d, \"vector_floats\": %d, \"sink\": %g}\n", best, threads, VL,
         (double)sink);
  return 0;
}
