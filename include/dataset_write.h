/* Writer of the dataset format (SPEC section 2), shared by `pack` and `synth`. Writes to a temporary
 * name next to the target; commit renames it into place, abort removes it, so a failed run leaves no
 * output file. All calls from one thread (the HDF5 library is not thread-safe). */
#ifndef XD_DATASET_WRITE_H
#define XD_DATASET_WRITE_H
#include <stdint.h>

#include "common.h"

typedef struct xd_dsw xd_dsw;

int xd_dsw_create(xd_dsw **out, const char *path, int height, int width, const char *const *class_names,
                  int nclasses, const char *source, xd_err *e);
/* Splits are written one after the other: begin, append blocks, end. */
int xd_dsw_begin_split(xd_dsw *w, const char *split, xd_err *e);
/* Appends k images (k*H*W bytes), their labels and their source paths. */
int xd_dsw_append(xd_dsw *w, const uint8_t *images, const uint8_t *labels, const char *const *paths, int64_t k,
                  xd_err *e);
/* Closes the split; a split that received no image is removed again. *n gets its image count. */
int xd_dsw_end_split(xd_dsw *w, int64_t *n, xd_err *e);
/* Closes the file and renames it into place; on failure the temporary file is removed. Frees w. */
int xd_dsw_commit(xd_dsw *w, xd_err *e);
/* Closes and removes the temporary file. Frees w. Safe with NULL. */
void xd_dsw_abort(xd_dsw *w);

#endif
