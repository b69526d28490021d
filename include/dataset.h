/* Reader for the dataset format (SPEC section 2): one split of a packed HDF5 file, opened read-only.
 * Each MPI rank opens its own reader and reads only its shard (hyperslab reads). */
#ifndef XD_DATASET_H
#define XD_DATASET_H
#include <stdint.h>

#include "common.h"

#define XD_MAX_CLASSES 16
#define XD_CLASS_NAME_MAX 64

typedef struct xd_dataset xd_dataset;

typedef struct xd_dataset_info {
  int64_t n;           /* images in the split */
  int height, width, channels;
  int nclasses;
  char class_names[XD_MAX_CLASSES][XD_CLASS_NAME_MAX];
  char source[512];
  int checksummed;     /* images and labels are stored with HDF5's Fletcher-32 filter */
} xd_dataset_info;

/* Opens `split` ("train", "val", "test") of the file and validates it against the format: root attributes,
 * dataset presence, dtype (uint8), rank and shape ([N,H,W] images, [N] labels, N equal), and every label
 * < nclasses. Errors name the file and what is wrong, e.g. "d.h5: /train/labels has 10 rows but
 * /train/images has 12". Files from outside are not trusted (issue 9): a FIFO, directory or device is
 * refused before anything opens it; every object must be a hard link of this file (no soft or external
 * links, no external raw data, no virtual datasets); every dataset must store what its dataspace
 * declares ("d.h5: /train/images declares 10000000000 rows but stores 0 of its 10000000000 chunks"),
 * so a small file declaring a huge split is refused at once; chunk sizes, the labels held in memory and
 * the read buffer are checked against xd_mem_limit() before anything is allocated; strings are never
 * truncated (a class name over 63 bytes is refused). A checksum failure (Fletcher-32 on the data, or
 * checksummed HDF5 metadata) reads "d.h5: checksum mismatch in /train/labels (file corrupted)", here or
 * in the readers below. */
int xd_dataset_open(xd_dataset **out, const char *path, const char *split, xd_err *e);
void xd_dataset_close(xd_dataset *d);
const xd_dataset_info *xd_dataset_get_info(const xd_dataset *d);

/* Lists the splits present in the file (in the order train, val, test). Returns the count or -1. */
int xd_dataset_splits(const char *path, char names[3][8], xd_err *e);
/* Whether the file has this split (0/1), -1 on error (not HDF5, unreadable). */
int xd_dataset_has_split(const char *path, const char *split, xd_err *e);

/* Reads images [a, b) into `images` (uint8, (b-a)*H*W) and their labels into `labels` (may be NULL). */
int xd_dataset_read_u8(xd_dataset *d, int64_t a, int64_t b, uint8_t *images, uint8_t *labels, xd_err *e);
/* Same, as float in [0, 1] (x / 255). */
int xd_dataset_read_f32(xd_dataset *d, int64_t a, int64_t b, float *images, uint8_t *labels, xd_err *e);
/* Source path of image i (relative to the packed SRC), truncated to n bytes. */
int xd_dataset_read_path(xd_dataset *d, int64_t i, char *buf, size_t n, xd_err *e);

/* Balanced contiguous shard of n items for `rank` of `nranks`: [*a, *b), sizes differ by at most 1,
 * the first n % nranks ranks get one more. */
void xd_shard_range(int64_t n, int rank, int nranks, int64_t *a, int64_t *b);

#endif
