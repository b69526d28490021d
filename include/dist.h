/* The MPI side: ranks, collectives, and waiting without burning a core. Running without mpirun is a
 * 1-rank job (MPI singleton). */
#ifndef XD_DIST_H
#define XD_DIST_H
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef struct xd_dist {
  MPI_Comm comm;
  int rank, size;
} xd_dist;

/* MPI_Init_thread (FUNNELED: only the main thread calls MPI; OpenMP threads never do). */
int xd_dist_init(xd_dist *d, int *argc, char ***argv);
void xd_dist_finalize(xd_dist *d);
/* Ends every rank of the job: for errors on one rank, so that no other rank hangs in a collective. */
void xd_dist_abort(xd_dist *d, int code);

void xd_dist_sum_floats(xd_dist *d, float *x, size_t n);
void xd_dist_sum_doubles(xd_dist *d, double *x, size_t n);
int64_t xd_dist_max_i64(xd_dist *d, int64_t v);
/* Broadcast from rank 0. Non-root ranks sleep between polls instead of spinning, so a rank-0-only phase
 * (validation, checkpointing) leaves their cores to rank 0's threads. */
void xd_dist_bcast_idle(xd_dist *d, void *buf, int bytes);
/* 1 if every rank holds the same 64-bit value. */
int xd_dist_all_equal_u64(xd_dist *d, uint64_t v);
/* Where the ranks run (collective): "2 hosts: n0 (rank 0), n1 (rank 1)" — each host with its ranks, in
 * rank order of first appearance (MPI_Get_processor_name). Written into buf (truncated to n). 0 or -1. */
int xd_dist_hosts(xd_dist *d, char *buf, size_t n);
/* Adapter for the batchnorm reducer (--sync-bn). */
void xd_dist_sum_doubles_cb(void *ctx, double *x, int n);

#endif
