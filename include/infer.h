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

/* Grad-CAM of the last feature map before the head (xd_model_cam_layer: the last conv layer of a chain,
 * the last residual block's output of a resnet) for one image (uint8 [H, W] at the model's input size), for the
 * positive-class score (the logit): cam[out_h * out_w] in [0, 1], bilinearly upsampled to any display
 * size and normalised by its own maximum (so it shows where, not how much). *prob is the same number
 * xd_infer gives. ws must have batch >= 1. Returns -1 if the model has no conv layer or on allocation
 * failure. */
int xd_gradcam(xd_model *m, xd_workspace *ws, const uint8_t *image, int out_h, int out_w, float *cam, float *prob);

/* The same for the score of class cls: for a sigmoid output (one logit z) cls 1 is z and cls 0 is -z (the
 * evidence for the negative class); for a softmax output, logit cls. xd_gradcam is cls 1. */
int xd_gradcam_class(xd_model *m, xd_workspace *ws, const uint8_t *image, int cls, int out_h, int out_w, float *cam,
                     float *prob);

/* ---- test-time augmentation and ensembles (eval/predict --tta, --ckpt A --ckpt B ...) ----
 *
 * TTA averages P(class 1) over the original image and a fixed set of deterministic variants that keep
 * the diagnosis: slight zoom in/out, slight horizontal stretch/squeeze, small shifts. No flips (a chest
 * film is not mirror-symmetric). Variants are made from the uint8 pixels by bilinear resampling about
 * the image centre with edge clamping and 8-bit fixed-point weights (integer arithmetic: the same bytes
 * on every machine), then go through xd_infer like any image, so eval and predict share one code path. */
#define XD_TTA_VARIANTS 9

/* Short name of variant v (0 = "original"), for logs and --help. */
const char *xd_tta_name(int v);
/* Variant v of one image, C planes of H x W uint8: dst must not alias src. v = 0 copies. */
void xd_tta_apply(int v, int C, int H, int W, const uint8_t *src, uint8_t *dst);

/* Mean probability over the XD_TTA_VARIANTS variants of each image (summed in double, variant order,
 * rounded once to float). Per image it depends only on the image's pixels, not on n or ws->batch.
 * Returns 0, or -1 with e filled on allocation failure. */
int xd_infer_tta(xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, float *prob, xd_err *e);

/* Mean probability over k models m[0..k) (each with its own workspace ws[j]; all the same input shape),
 * each scored with xd_infer (tta 0) or xd_infer_tta (tta 1), summed in double in model order and
 * rounded once to float. k = 1 without TTA gives exactly xd_infer's numbers. Returns 0 or -1 (e filled). */
int xd_infer_ensemble(int k, xd_model *m, xd_workspace *ws, int64_t n, const uint8_t *images, int tta, float *prob,
                      xd_err *e);

#endif
