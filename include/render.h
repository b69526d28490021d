/* Pictures the product draws for people: the Grad-CAM overlay over an X-ray and PNG encoding in memory,
 * shared by `predict --gradcam` (files) and `serve` (?gradcam=1, base64 in JSON), so both show the same
 * colours. No I/O: the caller writes the bytes where they belong. Thread-safe. */
#ifndef XD_RENDER_H
#define XD_RENDER_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Display side of an overlay for a model input of side h: model inputs are small (128) and a heat map
 * over a 128-pixel X-ray is hard to read, so the X-ray is decoded again at >= 384 pixels and the map
 * upsampled to it. */
int xd_gradcam_display_size(int h);

/* A perceptual blue-to-red map (piecewise "turbo"-like), v in [0, 1] -> rgb in [0, 1]. */
void xd_colormap(float v, float rgb[3]);

/* The overlay: gray [h * w] X-ray, cam [h * w] Grad-CAM values (xd_gradcam's, in [0, 1]; anything else,
 * NaN included, is treated as 0 and set to 0 in place) -> rgb [h * w * 3]. No evidence leaves the plain
 * X-ray; strong evidence is mostly colour with the anatomy still visible. */
void xd_gradcam_overlay(const uint8_t *gray, float *cam, int h, int w, uint8_t *rgb);

/* PNG of w x h pixels of `comp` 8-bit channels (1 gray, 3 RGB, 4 RGBA), encoded in memory: *png (malloc'd,
 * the caller frees) and *len. 0, or -1 with "WHAT: out of memory encoding the PNG" (what names the
 * picture in the message). */
int xd_png_encode(const uint8_t *px, int w, int h, int comp, const char *what, unsigned char **png, size_t *len,
                  xd_err *e);

#endif
