/* Image decoding and resizing shared by `pack` and `predict`, so both see the same pixels. */
#ifndef XD_IMAGE_H
#define XD_IMAGE_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Largest accepted source side and pixel count: anything bigger is rejected before decoding. */
#define XD_IMAGE_MAX_SIDE 16384
#define XD_IMAGE_MAX_PIXELS (1u << 27)

/* Decodes the file at `path` (JPEG with libjpeg-turbo, PNG with libpng, BMP/GIF/binary PGM/PPM with
 * stb_image; the format is told by the file's signature, not its name), converts it to 8-bit grayscale
 * (JPEG: the decoder's luma; others: ITU-R BT.601 luma for RGB; alpha is ignored) and resizes it to
 * size x size: area averaging when shrinking, bilinear when enlarging. Writes size*size bytes to out.
 * On failure returns -1 with a one-line reason of printable ASCII naming the file: not a regular file
 * (a FIFO is refused without opening it), zero-byte, not an image, absurd dimensions or above the memory
 * limit (checked from the header, before decoding), truncated or corrupt (any damage the decoder reports:
 * the file is refused rather than decoded with invented pixels). Thread-safe; the same file always gives
 * the same bytes. */
int xd_image_load_gray(const char *path, int size, uint8_t *out, xd_err *e);

/* The same from the file's bytes in memory; `name` is used in messages only. */
int xd_image_decode_gray_mem(const void *data, size_t len, const char *name, int size, uint8_t *out, xd_err *e);

/* The resize used above, exposed for tests: src is sw x sh gray, dst is dw x dh. */
void xd_image_resize_gray(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

#endif
