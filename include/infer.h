/* Inference shared by eval and predict: probabilities of the positive class for a batch of uint8
 * images, so both commands give bitwise-identical numbers for the same pixels. */
#ifndef XD_INFER_H
#define XD_INFER_H
#include <stdint.h>

#include "model.h"

/* images uint8 [n, H, W] -> prob[n] (positive class = index 1), logits' mean loss added to *loss_sum
 * when labels is given. Uses ws in chunks of ws->batch. */
void xd_infer(xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, const uint8_t *labels, float *prob,
              double *loss_sum);

/* Grad-CAM of the last conv layer for one image (uint8 [H, W] at the model's input size), for the
 * positive-class score (the logit): cam[out_h * out_w] in [0, 1], bilinearly upsampled to any display
 * size and normalised by its own maximum (so it shows where, not how much). *prob is the same number
 * xd_infer gives. ws must have batch >= 1. Returns -1 if the model has no conv layer or on allocation
 * failure. */
int xd_gradcam(xd_model *m, xd_workspace *ws, const uint8_t *image, int out_h, int out_w, float *cam, float *prob);

#endif
