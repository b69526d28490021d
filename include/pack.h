/* Writers of the dataset format: `pack` (a folder of images) and `synth` (procedural phantoms). */
#ifndef XD_PACK_H
#define XD_PACK_H
#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct xd_pack_opts {
  int size;             /* output side, default 128 */
  double val_fraction;  /* default 0.1 */
  uint64_t seed;        /* default 1 */
  int threads;          /* 0 = OpenMP default */
  int progress;         /* 1: progress line on stderr (caller decides: only on a TTY) */
  FILE *log;            /* where per-file skip reasons and the summary go (stderr), may be NULL */
  const char *group_regex; /* carve-out keeps files whose names share this match (capture group 1 if any)
                              in one split, e.g. one patient's images; NULL: byte-identical files only */
} xd_pack_opts;

typedef struct xd_pack_summary {
  int64_t written[3];   /* train, val, test */
  int64_t skipped;
  int64_t per_class[3][16];
  double seconds;
} xd_pack_summary;

int xd_pack(const char *src, const char *out, const xd_pack_opts *o, xd_pack_summary *s, xd_err *e);

typedef struct xd_synth_opts {
  int n;         /* total images over all splits, default 2000 */
  int size;      /* default 128 */
  uint64_t seed; /* default 1 */
} xd_synth_opts;

int xd_synth(const char *out, const xd_synth_opts *o, xd_err *e);
/* One phantom (size x size gray) by global index and label (0 NORMAL, 1 PNEUMONIA): what xd_synth writes
 * for that image. For tests and for looking at samples. */
void xd_synth_image(uint64_t seed, int64_t index, int label, int size, uint8_t *out);

#endif
