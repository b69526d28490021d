/* Losses fused with the final activation, stable for large logits. Both return the summed weighted loss
 * times `scale` (1/global batch gives the mean over the global batch), and write dz = d(loss)/d(logits). */
#ifndef XD_LOSS_H
#define XD_LOSS_H
#include <stdint.h>

/* Binary cross-entropy on logits z [B]; cw[2] per-class weights (NULL: 1, 1). */
double xd_loss_bce(int B, const float *z, const uint8_t *y, const float *cw, double scale, float *dz);
/* Categorical cross-entropy with softmax on logits z [B, K]. */
double xd_loss_ce(int B, int K, const float *z, const uint8_t *y, const float *cw, double scale, float *dz);

#endif
