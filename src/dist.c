#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int xd_dist_init(xd_dist *d, int *argc, char ***argv) {
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return -1;
  d->comm = MPI_COMM_WORLD;
  /* errors come back as codes we report, instead of MPI aborting with its own message */
  MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(d->comm, &d->rank);
  MPI_Comm_size(d->comm, &d->size);
  return 0;
}

void xd_dist_finalize(xd_dist *d) {
  (void)d;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

void xd_dist_abort(xd_dist *d, int code) { MPI_Abort(d->comm, code); }

void xd_dist_sum_floats(xd_dist *d, float *x, size_t n) {
  if (d->size == 1) return;
  /* MPI counts are int: reduce in chunks for very large arenas */
  const size_t chunk = (size_t)1 << 30;
  for (size_t off = 0; off < n; off += chunk) {
    size_t k = n - off < chunk ? n - off : chunk;
    MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM, d->comm);
  }
}

void xd_dist_sum_doubles(xd_dist *d, double *x, size_t n) {
  if (d->size == 1) return;
  MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, d->comm);
}

void xd_dist_sum_doubles_cb(void *ctx, double *x, int n) { xd_dist_sum_doubles((xd_dist *)ctx, x, (size_t)n); }

int64_t xd_dist_max_i64(xd_dist *d, int64_t v) {
  if (d->size > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT64_T, MPI_MAX, d->comm);
  return v;
}

void xd_dist_bcast_idle(xd_dist *d, void *buf, int bytes) {
  if (d->size == 1) return;
  MPI_Request req;
  MPI_Ibcast(buf, bytes, MPI_BYTE, 0, d->comm, &req);
  int done = 0;
  struct timespec ts = {0, 2000000}; /* 2 ms: negligible next to an epoch, frees the core */
  while (!done) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) nanosleep(&ts, NULL);
  }
}

int xd_dist_all_equal_u64(xd_dist *d, uint64_t v) {
  if (d->size == 1) return 1;
  uint64_t lo = v, hi = v;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, d->comm);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, d->comm);
  return lo == hi;
}

int xd_dist_hosts(xd_dist *d, char *buf, size_t n) {
  enum { W = MPI_MAX_PROCESSOR_NAME };
  char me[W];
  int len = 0;
  memset(me, 0, sizeof me);
  if (MPI_Get_processor_name(me, &len) != MPI_SUCCESS) snprintf(me, sizeof me, "?");
  me[W - 1] = 0;
  char *all = calloc((size_t)d->size, W);
  if (!all) return -1;
  if (MPI_Allgather(me, W, MPI_CHAR, all, W, MPI_CHAR, d->comm) != MPI_SUCCESS) {
    free(all);
    return -1;
  }
  /* hosts in order of their first rank; each with its rank list */
  int nhosts = 0;
  for (int r = 0; r < d->size; r++) {
    int first = 1;
    for (int q = 0; q < r && first; q++)
      if (!strcmp(all + (size_t)q * W, all + (size_t)r * W)) first = 0;
    nhosts += first;
  }
  size_t k = 0;
  int w = snprintf(buf, n, "%d host%s:", nhosts, nhosts == 1 ? "" : "s");
  k = w > 0 && (size_t)w < n ? (size_t)w : n ? n - 1 : 0;
  for (int r = 0; r < d->size && k + 1 < n; r++) {
    int first = 1;
    for (int q = 0; q < r && first; q++)
      if (!strcmp(all + (size_t)q * W, all + (size_t)r * W)) first = 0;
    if (!first) continue;
    int cnt = 0;
    for (int q = r; q < d->size; q++) cnt += !strcmp(all + (size_t)q * W, all + (size_t)r * W);
    w = snprintf(buf + k, n - k, "%s %s (%d rank%s:", r ? "," : "", all + (size_t)r * W, cnt, cnt == 1 ? "" : "s");
    k = w > 0 && (size_t)w < n - k ? k + (size_t)w : n - 1;
    for (int q = r; q < d->size && k + 1 < n; q++) {
      if (strcmp(all + (size_t)q * W, all + (size_t)r * W)) continue;
      w = snprintf(buf + k, n - k, " %d", q);
      k = w > 0 && (size_t)w < n - k ? k + (size_t)w : n - 1;
    }
    if (k + 1 < n) {
      w = snprintf(buf + k, n - k, ")");
      k = w > 0 && (size_t)w < n - k ? k + (size_t)w : n - 1;
    }
  }
  free(all);
  return 0;
}
