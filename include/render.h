/* Pictures the product draws for people: the Grad-CAM overlay over an X-ray and PNG encoding in memory,
 * shared by `predict --gradcam` (files) and `serve` (?gradcam=1, base64 in JSON), so both show the same
 * colours. No I/O: the caller writes the bytes where they belong. Thread-safe. */
#ifndef XD_RENDER_H
#define XD_RENDER_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "model.h"

/* Display side of an overlay for a model input of side h (kept for callers that have no source image):
 * model inputs are small (128) and a heat map over a 128-pixel X-ray is hard to read. */
int xd_gradcam_display_size(int h);

/* Display size of a Grad-CAM picture at the source's aspect ratio: the longest side is 512 (or the model's
 * side h when larger), the other rounded, at least 1. src_w or src_h <= 0 (unknown): a square. */
void xd_gradcam_display_dims(int src_w, int src_h, int h, int *dw, int *dh);

/* Width and height of an encoded image (PNG, JPEG, BMP, GIF, PNM) read from its header, or -1. */
int xd_image_dims_mem(const void *data, size_t len, int *w, int *h);

/* A perceptual blue-to-red map (piecewise "turbo"-like), v in [0, 1] -> rgb in [0, 1]. */
void xd_colormap(float v, float rgb[3]);

/* Overlay opacity: no colour below XD_CAM_FLOOR (the plain X-ray), then alpha rising linearly with the
 * CAM value to XD_CAM_ALPHA_MAX at the strongest evidence, so the anatomy always shows through. */
#define XD_CAM_FLOOR 0.2f
#define XD_CAM_ALPHA_MAX 0.5f

/* One pixel: gray value g over CAM value v (NaN or out of [0, 1]: 0) -> rgb. */
void xd_gradcam_blend(uint8_t g, float v, uint8_t rgb[3]);

/* The overlay: gray [h * w] X-ray, cam [h * w] Grad-CAM values (xd_gradcam's, in [0, 1]; anything else,
 * NaN included, is treated as 0 and set to 0 in place) -> rgb [h * w * 3], xd_gradcam_blend per pixel. */
void xd_gradcam_overlay(const uint8_t *gray, float *cam, int h, int w, uint8_t *rgb);

/* What the panel under the picture says. */
typedef struct {
  float prob;              /* P(positive class), the number predict prints */
  double threshold;        /* the call is positive when prob >= threshold */
  const char *pos, *neg;   /* class names (1 and 0) */
  int map_class;           /* the class whose evidence the map shows: 1 positive, 0 negative */
} xd_gradcam_info;

/* Panel layout (pixels), exposed for tests: the panel is XD_PANEL_H high under the picture; the canvas is
 * at least XD_PANEL_MIN_W wide (a narrower picture is centred on the panel's dark background). The colour
 * bar spans x in [XD_BAR_X0, canvas width - XD_BAR_RIGHT) and y in [XD_BAR_Y, XD_BAR_Y + XD_BAR_H) of the
 * panel; its column x shows xd_gradcam_blend(128, (x - XD_BAR_X0 + 0.5) / bar width). */
#define XD_PANEL_H 132
#define XD_PANEL_MIN_W 512
#define XD_BAR_X0 70
#define XD_BAR_RIGHT 94
#define XD_BAR_Y 90
#define XD_BAR_H 16
#define XD_PANEL_BG 24

/* The whole picture: the overlay of gray/cam (w x h, cam sanitised as above) with the panel under it
 * (the call, P(positive) and the threshold, which class the map is for, and a colour bar labelled weak ->
 * strong "relative to this image's maximum"). *rgb (malloc'd, *cw x *ch x 3). 0, or -1 (out of memory). */
int xd_gradcam_compose(const uint8_t *gray, float *cam, int w, int h, const xd_gradcam_info *info, uint8_t **rgb,
                       int *cw, int *ch, xd_err *e);

/* PNG of w x h pixels of `comp` 8-bit channels (1 gray, 3 RGB, 4 RGBA), encoded in memory: *png (malloc'd,
 * the caller frees) and *len. 0, or -1 with "WHAT: out of memory encoding the PNG" (what names the
 * picture in the message). */
int xd_png_encode(const uint8_t *px, int w, int h, int comp, const char *what, unsigned char **png, size_t *len,
                  xd_err *e);

/* Everything predict --gradcam and serve ?gradcam=1 draw, in one place so the same inputs give the same
 * bytes: px is the model-size image (what the model saw), data/len the source file's bytes (for the
 * aspect ratio and a sharper X-ray), name for messages. info->map_class: 1 or 0, or -1 = the predicted
 * class (prob >= threshold). The Grad-CAM is m's (ws with batch >= 1). Returns 0 with *png, *plen
 * (malloc'd), or -1: "CKPT: the model has no conv layer for Grad-CAM" (ckpt names the model) or a
 * decoding / memory failure naming the image. */
int xd_gradcam_png(xd_model *m, xd_workspace *ws, const char *ckpt, const uint8_t *px, const void *data, size_t len,
                   const char *name, const xd_gradcam_info *info, unsigned char **png, size_t *plen, xd_err *e);

#endif
