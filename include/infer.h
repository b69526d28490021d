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

/* Grad-CAM of the last conv layer for one image: cam[H*W] in [0, 1] at the input resolution, for the
 * positive-class score (the logit). ws must have batch >= 1. Returns -1 if the model has no conv layer. */
int xd_gradcam(xd_model *m, xd_workspace *ws, const uint8_t *image, float *cam, float *prob);

#endif
